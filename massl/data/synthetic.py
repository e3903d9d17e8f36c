"""The built-in synthetic benchmark: FLAIR-like brain MRI with gliomas (stands in for BraTS 2018)
and with white-matter hyperintensities (stands in for WMH 2017), written as NIfTI in the real
datasets' folder layouts (SPEC section 5) so the same readers, preprocessing and workflow run on
it without a download.

Each case is a random deformation of the MNI152 template (`massl.data.anatomy`) with
tissue-dependent intensities, per-case (and for WMH per-site) contrast, a smooth bias field and
noise. Case i depends only on (seed, dataset, i): fewer cases give a prefix of the full set.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from massl.data import anatomy
from massl.data.anatomy import Grid
from massl.errors import ConfigError
from massl.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

DATASETS = ("brats18", "wmh17")
DEFAULT_N_CASES = {"brats18": 210, "wmh17": 60}
MANIFEST = "synthetic_manifest.json"  # lists the files written; "complete": true is written last
GENERATOR_VERSION = 1  # bump whenever the images change, so existing outputs are regenerated
_STREAM = {"brats18": 18, "wmh17": 17}  # keeps the two datasets' random streams apart

BRATS_ROOT = Path("MICCAI_BraTS_2018_Data_Training") / "HGG"
BRATS_FOV_MM = (240.0, 240.0, 155.0)  # real grid 240 x 240 x 155 at 1 mm, (x, y, z)
BRATS_DEMO_SHAPE = (64, 64, 32)  # (x, y, z)
WMH_DEMO_FACTOR = 4  # demo grids: the real ones divided by 4 along every axis


@dataclass(frozen=True)
class Site:
    """A WMH 2017 scanner: its real grid and FLAIR appearance (intensities relative to white matter)."""

    name: str
    real_shape: tuple[int, int, int]  # (x, y, z)
    real_spacing: tuple[float, float, float]  # mm
    first_id: int  # case ids as in the release: Utrecht 0, 2, ...; Singapore 50, 52, ...; GE3T 100, 101, ...
    id_step: int
    white: float
    grey: float
    csf: float
    skull: float
    scalp: float
    lesion: float  # multiplies the per-case lesion contrast
    noise: float  # noise SD as a fraction of white matter
    bias: float  # SD of the log bias field

    def grid(self, utrecht_shape_xyz: tuple[int, int, int] | None = None) -> Grid:
        """This site's real field of view on its real grid scaled by `utrecht_shape_xyz` / the real
        Utrecht grid (default: the demo grids, 1/4 of the real ones along every axis)."""
        utrecht = WMH_SITES[0].real_shape
        if utrecht_shape_xyz is None:
            utrecht_shape_xyz = tuple(max(1, round(n / WMH_DEMO_FACTOR)) for n in utrecht)
        shape = np.maximum(1, np.round(np.multiply(self.real_shape, np.divide(utrecht_shape_xyz, utrecht))))
        fov = np.multiply(self.real_shape, self.real_spacing)
        return Grid(tuple(int(n) for n in shape), tuple(float(s) for s in fov / shape))


WMH_SITES = (
    Site("Utrecht", (240, 240, 48), (0.96, 0.95, 3.0), 0, 2,
         white=250.0, grey=1.25, csf=0.25, skull=0.12, scalp=1.4, lesion=1.0, noise=0.05, bias=0.12),
    Site("Singapore", (256, 232, 48), (1.0, 1.0, 3.0), 50, 2,
         white=450.0, grey=1.15, csf=0.20, skull=0.10, scalp=1.7, lesion=0.9, noise=0.07, bias=0.20),
    Site("GE3T", (132, 256, 83), (1.2, 0.98, 3.0), 100, 1,
         white=1200.0, grey=1.35, csf=0.35, skull=0.15, scalp=1.0, lesion=1.1, noise=0.04, bias=0.08),
)


@dataclass
class SyntheticCase:
    case_id: str
    site: str
    grid: Grid
    image: np.ndarray  # (x, y, z) FLAIR
    label: np.ndarray  # (x, y, z) uint8
    brain: np.ndarray  # (x, y, z) bool: where the brain is (lesions and tumour lie inside it)


# ---------------------------------------------------------------------------- tumour task
def brats_grid(shape_zyx: tuple[int, int, int] | None = None) -> Grid:
    """The BraTS field of view (240 x 240 x 155 mm) on a coarser grid: the brain fills the
    in-plane grid as in the real data, inside the 200/240 centre crop of the preprocessing."""
    shape = BRATS_DEMO_SHAPE if shape_zyx is None else tuple(int(n) for n in reversed(shape_zyx))
    return Grid(shape, tuple(f / n for f, n in zip(BRATS_FOV_MM, shape)))


def tumor_case(seed: int, index: int, grid: Grid) -> SyntheticCase:
    """One glioma case: whole tumour = oedema (2) around a core of enhancing tumour (4) with
    optional necrosis (1), irregular, spreading along white matter, with mass effect."""
    rng = np.random.default_rng([seed, _STREAM["brats18"], index])
    coords = anatomy.random_warp(rng, grid)
    centre = _pick_centre(rng, coords, grid)
    # whole tumour (oedema included), mm: about 10-270 ml, the range of BraTS 2018 HGG cases
    radius = float(np.exp(rng.uniform(np.log(14.0), np.log(40.0))))
    coords = anatomy.push_from(coords, grid, centre, radius_mm=1.3 * radius,
                               strength=rng.uniform(0.1, 0.35) * min(1.0, radius / 20.0))
    maps = anatomy.sample(coords, grid, ("gm", "wm", "brain"))
    brain = maps["brain"] > 0.5

    offsets = grid.offsets_mm(centre) / (radius * rng.uniform(0.75, 1.25, 3))[:, None, None, None]
    distance = np.sqrt(np.sum(offsets**2, axis=0))
    outline = np.clip(anatomy.smooth_field(rng, grid, 12.0), -1.5, 1.5)
    whole = _soft(1.0 - distance + 0.25 * outline + 0.3 * (maps["wm"] - 0.5))  # oedema follows WM
    core_ratio = rng.uniform(0.35, 0.7)
    core = np.minimum(whole, _soft(1.0 - distance / core_ratio + 0.15 * outline))
    necrosis = np.zeros_like(core)
    if rng.random() < 0.75:
        necrosis = np.minimum(core, _soft(1.0 - distance / (core_ratio * rng.uniform(0.3, 0.7))))

    white = rng.uniform(180.0, 350.0)  # real BraTS FLAIR: background 0, brain in the hundreds
    ratio = {"grey": rng.uniform(1.1, 1.35), "csf": rng.uniform(0.15, 0.35), "oedema": rng.uniform(1.5, 2.2),
             "enhancing": rng.uniform(1.2, 1.8), "necrosis": rng.uniform(0.5, 1.2)}
    normal = _tissue(maps, white, ratio["grey"], ratio["csf"])
    texture = 1.0 + 0.08 * anatomy.smooth_field(rng, grid, 8.0)
    lesion = white * texture * ((whole - core) * ratio["oedema"] + (core - necrosis) * ratio["enhancing"]
                                + necrosis * ratio["necrosis"])
    image = (normal * (1.0 - whole) + maps["brain"] * lesion) * _bias(rng, grid, rng.uniform(0.05, 0.2))
    image += rng.normal(0.0, rng.uniform(0.03, 0.08) * white, grid.shape)
    image = np.where(brain, np.clip(np.round(image), 1, None), 0).astype(np.int16)  # skull-stripped

    label = np.zeros(grid.shape, np.uint8)
    label[whole > 0.5] = 2
    label[core > 0.5] = 4
    label[necrosis > 0.5] = 1
    label[~brain] = 0
    return SyntheticCase(f"Brats18_SYN_{index + 1:04d}_1", "SYN", grid, image, label, brain)


def _pick_centre(rng: np.random.Generator, coords: np.ndarray, grid: Grid) -> np.ndarray:
    """A white-matter voxel above the lower third of the grid (gliomas are mostly supratentorial);
    only a few hundred candidate voxels are resampled, not the whole volume."""
    lo = np.array([0.2, 0.2, 0.35]) * grid.shape
    candidates = rng.uniform(lo, np.array(grid.shape) - lo, (400, 3)).astype(int)
    wm = ndimage.map_coordinates(anatomy.template().maps["wm"], coords[:, candidates[:, 0], candidates[:, 1],
                                                                       candidates[:, 2]], order=1)
    weights = np.clip(wm - 0.5, 0, None) + 1e-6
    return candidates[rng.choice(len(candidates), p=weights / weights.sum())].astype(float)


# ---------------------------------------------------------------------------- WMH task
def wmh_case(seed: int, index: int, grid: Grid, site: Site, case_id: str) -> SyntheticCase:
    """One WMH case, not skull-stripped: small hyperintense lesions (1) in periventricular and deep
    white matter with a per-case lesion load, and in about 1 case in 4 an infarct (2)."""
    rng = np.random.default_rng([seed, _STREAM["wmh17"], index])
    maps = anatomy.sample(anatomy.random_warp(rng, grid), grid, anatomy.CHANNELS)
    brain = maps["brain"] > 0.5

    # Lesion centres favour deep white matter next to the ventricles, where WMH are most common.
    weights = np.where(brain, maps["wm"] ** 2 * (0.15 + maps["periventricular"]), 0.0).ravel()
    n_lesions = round(np.exp(rng.uniform(np.log(3), np.log(45))))
    lesions = np.zeros(grid.shape, np.float32)
    for flat in rng.choice(weights.size, n_lesions, p=weights / weights.sum()):
        voxel = np.unravel_index(flat, grid.shape)
        radius = rng.uniform(1.5, 4.0) + 7.0 * maps["periventricular"][voxel] * rng.random()  # confluent caps
        _add_blob(lesions, grid, voxel, radius * rng.uniform(0.6, 1.5, 3), rng)
    lesions *= maps["brain"]

    infarct = np.zeros(grid.shape, np.float32)
    if rng.random() < 0.25:
        candidates = np.flatnonzero((maps["gm"] + maps["wm"]).ravel() > 0.6)
        voxel = np.unravel_index(rng.choice(candidates), grid.shape)
        _add_blob(infarct, grid, voxel, rng.uniform(5.0, 14.0) * rng.uniform(0.7, 1.3, 3), rng)
        infarct *= maps["brain"]

    jitter = rng.uniform(0.93, 1.07, 4)
    white = site.white * jitter[0]
    image = _tissue(maps, white, site.grey * jitter[1], site.csf * jitter[2])
    skull = np.clip(maps["head"] - maps["brain"] - maps["scalp"], 0, None)
    image += white * (skull * site.skull + maps["scalp"] * site.scalp * jitter[3])
    lesion_value = white * site.lesion * rng.uniform(1.45, 2.0)
    image = image * (1.0 - lesions) + lesions * lesion_value
    infarct_value = white * (rng.uniform(0.2, 0.5) if rng.random() < 0.6 else rng.uniform(1.4, 1.9))
    image = image * (1.0 - infarct) + infarct * infarct_value
    image *= _bias(rng, grid, site.bias)
    sd = site.noise * white
    image = np.hypot(image + rng.normal(0, sd, grid.shape), rng.normal(0, sd, grid.shape))  # Rician

    label = np.zeros(grid.shape, np.uint8)
    # As in the release: "other pathology" dilated by one voxel in-plane; WMH wins where they meet.
    label[ndimage.binary_dilation(infarct > 0.5, np.ones((3, 3, 1), bool)) & brain] = 2
    label[(lesions > 0.5) & brain] = 1
    return SyntheticCase(case_id, site.name, grid, image.astype(np.float32), label, brain)


def _add_blob(volume: np.ndarray, grid: Grid, voxel, radii_mm: np.ndarray, rng: np.random.Generator) -> None:
    """Max-composite a soft ellipsoid into `volume` around `voxel`, drawn in a local box only. The
    centre is jittered by less than 0.3 radius per axis, so the centre voxel is always inside."""
    spacing = np.array(grid.spacing)
    centre = np.array(voxel) + rng.uniform(-0.3, 0.3, 3) * radii_mm / spacing
    half = np.ceil(radii_mm / spacing).astype(int) + 1
    lo = np.maximum(np.array(voxel) - half, 0)
    hi = np.minimum(np.array(voxel) + half + 1, grid.shape)
    axes = [(np.arange(a, b) - c) * s / r for a, b, c, s, r in zip(lo, hi, centre, spacing, radii_mm)]
    distance = np.sqrt(sum(np.square(a) for a in np.meshgrid(*axes, indexing="ij", sparse=True)))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    np.maximum(volume[box], _soft(1.0 - distance), out=volume[box])


def wmh_layout(n_cases: int, shape_zyx: tuple[int, int, int] | None = None) -> list[tuple[int, Site, str, Grid]]:
    """(global index, site, case id, grid) per case; sites take turns, so every prefix is balanced.
    Ids follow the release (Utrecht 0, 2, ...; Singapore 50, ...; GE3T 100, ...) and stay unique
    above 25 cases per site by widening the id blocks."""
    per_site = -(-n_cases // len(WMH_SITES))
    block = 50 * max(1, -(-2 * per_site // 50))
    utrecht_xyz = None if shape_zyx is None else tuple(reversed(shape_zyx))
    grids = {site.name: site.grid(utrecht_xyz) for site in WMH_SITES}
    layout = []
    for index in range(n_cases):
        site = WMH_SITES[index % len(WMH_SITES)]
        number = site.first_id // 50 * block + site.id_step * (index // len(WMH_SITES))
        layout.append((index, site, str(number), grids[site.name]))
    return layout


# ---------------------------------------------------------------------------- shared appearance
def _soft(level: np.ndarray, width: float = 0.08) -> np.ndarray:
    """Membership in [0, 1] from a level function (> 0 inside): partial-volume edges."""
    return (0.5 * (1.0 + np.tanh(level / width))).astype(np.float32)


def _tissue(maps: dict, white: float, grey: float, csf: float) -> np.ndarray:
    """FLAIR of normal brain: grey matter brighter than white, CSF suppressed (dark)."""
    csf_fraction = np.clip(maps["brain"] - maps["gm"] - maps["wm"], 0, None)
    return white * (maps["wm"] + grey * maps["gm"] + csf * csf_fraction)


def _bias(rng: np.random.Generator, grid: Grid, sd: float) -> np.ndarray:
    """Smooth multiplicative bias field (coil inhomogeneity)."""
    return np.exp(sd * anatomy.smooth_field(rng, grid, 80.0))


# ---------------------------------------------------------------------------- writing
def _plan(dataset: str, n_cases: int, shape_zyx) -> list[dict]:
    """Every case to write: its index, id, site, grid and output paths relative to `out`."""
    if dataset == "brats18":
        grid = brats_grid(shape_zyx)
        ids = [f"Brats18_SYN_{index + 1:04d}_1" for index in range(n_cases)]
        return [{"index": index, "case_id": case_id, "site": "SYN", "grid": grid,
                 "image": BRATS_ROOT / case_id / f"{case_id}_flair.nii.gz",
                 "label": BRATS_ROOT / case_id / f"{case_id}_seg.nii.gz"}
                for index, case_id in enumerate(ids)]
    return [{"index": index, "case_id": case_id, "site": site.name, "grid": grid,
             "image": Path(site.name) / case_id / "pre" / "FLAIR.nii.gz",
             "label": Path(site.name) / case_id / "wmh.nii.gz"}
            for index, site, case_id, grid in wmh_layout(n_cases, shape_zyx)]


def make_case(dataset: str, seed: int, entry: dict) -> SyntheticCase:
    """The case of one `_plan` entry, in memory."""
    if dataset == "brats18":
        return tumor_case(seed, entry["index"], entry["grid"])
    site = next(s for s in WMH_SITES if s.name == entry["site"])
    return wmh_case(seed, entry["index"], entry["grid"], site, entry["case_id"])


def generate(dataset: str, out: str | Path, n_cases: int | None = None, seed: int = 0,
             shape: tuple[int, int, int] | list[int] | None = None) -> list[Path]:
    """Write the synthetic `dataset` under `out` in its real layout; return the case folders.

    `shape` is a grid (z, y, x): the tumour volumes' grid, or for WMH the Utrecht grid (the other
    sites keep their grid ratios to it); None = the demo grids. Nothing is rewritten when `out`
    already holds the complete output of the same parameters; an earlier output with other
    parameters is replaced (only the files its manifest lists are removed)."""
    if dataset not in DATASETS:
        raise ConfigError(f"synthetic dataset {dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
    n_cases = DEFAULT_N_CASES[dataset] if n_cases is None else int(n_cases)
    if n_cases < 1:
        raise ConfigError(f"synthetic {dataset}: n_cases must be >= 1, got {n_cases}")
    if shape is not None:
        shape = [int(n) for n in shape]
        if len(shape) != 3 or min(shape) < 4:
            raise ConfigError(f"synthetic {dataset}: shape must be 3 integers (z y x) >= 4, got {shape}")
    out = Path(out)
    plan = _plan(dataset, n_cases, None if shape is None else tuple(shape))
    folders = [out / entry["label"].parent for entry in plan]
    manifest = {"generator": __name__, "version": GENERATOR_VERSION, "dataset": dataset,
                "n_cases": n_cases, "seed": int(seed), "shape_zyx": shape,
                "cases": [{"case_id": e["case_id"], "site": e["site"], "image": e["image"].as_posix(),
                           "label": e["label"].as_posix(), "shape_xyz": list(e["grid"].shape),
                           "spacing_mm_xyz": [round(s, 6) for s in e["grid"].spacing]} for e in plan]}
    if _read_manifest(out) == {**manifest, "complete": True} and all(
            (out / e[key]).is_file() for e in plan for key in ("image", "label")):
        log.info("synthetic %s: %s already holds these %d cases, nothing to do", dataset, out, n_cases)
        return folders
    _remove_previous(out)
    # Listing the files before writing them lets an interrupted run be cleaned up by the next one.
    atomic_write_json(out / MANIFEST, {**manifest, "complete": False})

    log.info("synthetic %s: writing %d cases to %s", dataset, n_cases, out)
    start = last_log = time.monotonic()
    for done, entry in enumerate(plan, 1):
        case = make_case(dataset, seed, entry)
        _save_nifti(case.image, case.grid, out / entry["image"])
        _save_nifti(case.label, case.grid, out / entry["label"])
        now = time.monotonic()
        if now - last_log > 10 or done == len(plan):
            log.info("synthetic %s: %d/%d cases, %.0f s, ETA %.0f s", dataset, done, len(plan),
                     now - start, (now - start) / done * (len(plan) - done))
            last_log = now
    atomic_write_json(out / MANIFEST, {**manifest, "complete": True})
    return folders


def _read_manifest(out: Path) -> dict | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _remove_previous(out: Path) -> None:
    """Remove the files an earlier (complete or interrupted) output lists in its manifest, then
    their emptied folders and the manifest itself. Files it did not write are left alone."""
    previous = _read_manifest(out)
    for case in (previous or {}).get("cases", []):
        for key in ("image", "label"):
            path = out / case[key]
            path.unlink(missing_ok=True)
            for folder in path.parents:
                if folder == out or not folder.is_relative_to(out):
                    break
                try:
                    folder.rmdir()
                except OSError:  # not empty, or already gone
                    break
    (out / MANIFEST).unlink(missing_ok=True)


def _save_nifti(array: np.ndarray, grid: Grid, path: Path) -> None:
    """Atomic .nii.gz write; gzip with a fixed timestamp so equal arrays give equal bytes."""
    image = nib.Nifti1Image(array, grid.affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(grid.affine, code=1)
    image.set_sform(grid.affine, code=1)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))


# ---------------------------------------------------------------------------- preview and CLI
_LEGEND = {"brats18": {1: ("necrosis", "#e41a1c"), 2: ("oedema", "#ffd92f"), 4: ("enhancing", "#377eb8")},
           "wmh17": {1: ("WMH", "#e41a1c"), 2: ("other pathology", "#4dd0e1")}}


def write_preview(dataset: str, out: str | Path, png: str | Path) -> None:
    """PNG of example axial slices (each case's slice with the most foreground), read back from
    the written NIfTI files: FLAIR above, FLAIR with the label overlay below. Tumour: 4 cases
    spread over the set; WMH: the first 6 (two per site)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    out = Path(out)
    manifest = _read_manifest(out)
    if manifest is None or manifest.get("dataset") != dataset or not manifest.get("complete"):
        raise ConfigError(f"{out / MANIFEST}: no complete synthetic {dataset} output to preview")
    cases = manifest["cases"]
    if dataset == "brats18":
        cases = [cases[i] for i in np.unique(np.linspace(0, len(cases) - 1, 4).round().astype(int))]
    else:
        cases = cases[:6]
    legend = _LEGEND[dataset]
    values = sorted(legend)
    cmap = ListedColormap([legend[v][1] for v in values])

    fig = Figure(figsize=(2.6 * len(cases), 5.8), layout="constrained")
    axes = fig.subplots(2, len(cases), squeeze=False)
    for column, case in enumerate(cases):
        image = nib.load(out / case["image"])
        flair = np.asarray(image.dataobj, dtype=np.float32)
        label = np.asarray(nib.load(out / case["label"]).dataobj).astype(np.uint8)
        z = int(np.argmax((label > 0).sum(axis=(0, 1))))
        aspect = float(image.header.get_zooms()[1] / image.header.get_zooms()[0])
        colour_index = np.ma.masked_where(label[:, :, z] == 0, np.searchsorted(values, label[:, :, z]))
        for row in range(2):
            axes[row, column].imshow(flair[:, :, z].T, cmap="gray", origin="lower", aspect=aspect)
            axes[row, column].set_axis_off()
        axes[1, column].imshow(colour_index.T, cmap=cmap, vmin=0, vmax=len(values) - 1, origin="lower",
                               aspect=aspect, alpha=0.6, interpolation="nearest")
        axes[0, column].set_title(f"{case['site']} {case['case_id']}  z={z}", fontsize=8)
    fig.legend(handles=[Patch(color=legend[v][1], label=f"{v} {legend[v][0]}") for v in values],
               loc="outside lower center", ncols=len(values), fontsize=8)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def cli_synth(args) -> int:
    generate(args.dataset, args.out, n_cases=args.n_cases, seed=args.seed, shape=args.shape)
    if args.preview:
        write_preview(args.dataset, args.out, args.preview)
        log.info("preview written to %s", args.preview)
    return 0
