"""Preprocess a dataset once into memory-mappable arrays (`massl preprocess`, SPEC section 5).

Per case, in this order: NIfTI (x, y, z) is transposed to (z, y, x) without reorienting;
intensities below `clip_below` are set to 0; the volume is normalised; then it is centre-cropped
or padded in-plane to `crop_xy` (x, y) voxels (padding takes the darkest value, 0 after the
max and percentile normalisations). The crop/pad box, the original shape and
the affine go to `<case_id>.json`, so `to_original_space` puts a prediction back on the scan's
own grid. Labels become uint8: `target_labels` -> 1, `ignore_labels` -> 2 (left out of
evaluation), everything else 0. Scans are read by `massl.data.validate.read_volume` (a 4-D file
of shape x y z 1 is its 3-D volume; a constant image is refused), and a scan that preprocessing
leaves constant (every voxel below `clip_below`: another intensity scale) is refused by name.

Options (config `datasets.<key>.preprocess`; defaults per format in
`massl.config.PREPROCESS_DEFAULTS`, checked by `massl.config.preprocess_options`):
- `clip_below`: intensities below this become 0 (BraTS as released: 30), null = off.
- `crop_xy`: in-plane size [x, y] after centre crop / zero pad (real data: [200, 200]); null = keep.
- `crop_center`: `image` (the grid centre, as released) or `brain` (the centre of the head
  region, for WMH scans whose head is off-centre in a larger field of view).
- `normalize`: `max` (divide by the volume maximum, as released for BraTS), `percentile` /
  `brain_percentile` (map the `percentiles` [lo, hi] of all voxels / of the head region to
  [0, 1] and clip), `zscore` / `brain_zscore` (mean 0, sd 1 over all voxels / the head region),
  or `none`. The reconstruction decoders end in a sigmoid, so the [0, 1] methods suit MASSL
  best; WMH uses `brain_percentile` with [1, 99.9] so the bright lesions (about 1 % of the brain)
  keep their contrast, and nnU-Net data `percentile` [0.5, 99.5].
- `brain_threshold`: the head region is voxels above p2 + t * (p98 - p2) (t = 0.1, the initial
  threshold of FSL BET), largest connected component, holes filled. WMH scans are not
  skull-stripped, so this region is the head rather than the brain; it only sets intensity
  statistics and the crop centre.
- `target_labels`, `ignore_labels`: label values mapped to 1 and to 2. BraTS: whole tumour
  {1, 2, 4}; WMH: WMH = 1, other pathology = 2 ignored; nnU-Net: value 1, and the label named
  `ignore` in dataset.json if there is one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from massl.config import load_config, preprocess_options, resolved
from massl.data.discover import Case, DataFileError, discover
from massl.data.store import CASES_COLUMNS, CASES_TABLE, IGNORE_LABEL
from massl.data.validate import allowed_label_values, check_dataset, read_volume
from massl.errors import ConfigError, DataError
from massl.io import atomic_path, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

def brain_region(volume: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Head mask: voxels above p2 + threshold * (p98 - p2), largest component, holes filled."""
    lo, hi = np.percentile(volume, [2, 98])
    mask = volume > lo + threshold * (hi - lo)
    components, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        mask = components == sizes.argmax()
    return ndimage.binary_fill_holes(mask)


def normalize(volume: np.ndarray, method: str, percentiles, region: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """(volume - offset) / scale, clipped to [0, 1] for the percentile methods; the statistics
    come from `region` for the brain_* methods. A zero scale (a constant volume) is taken as 1."""
    values = volume[region] if method.startswith("brain_") else volume
    clip = None
    if method == "none":
        offset, scale = 0.0, 1.0
    elif method == "max":
        offset, scale = 0.0, float(values.max())
    elif method.endswith("percentile"):
        lo, hi = np.percentile(values, percentiles)
        offset, scale, clip = float(lo), float(hi - lo), [0.0, 1.0]
    else:  # zscore, brain_zscore
        offset, scale = float(values.mean()), float(values.std())
    scale = scale if scale > 0 else 1.0
    out = (volume - np.float32(offset)) / np.float32(scale)
    if clip is not None:
        np.clip(out, *clip, out=out)
    return out.astype(np.float32, copy=False), {"method": method, "offset": offset, "scale": scale, "clip": clip}


def crop_box(shape_zyx, crop_xy, center_mask: np.ndarray | None = None) -> tuple[list[list[int]], list[int]]:
    """Where the original grid goes in the preprocessed one, and the preprocessed shape.

    Box rows (z, y, x) are [src_start, src_stop, dst_start, dst_stop]: preprocessed
    [dst_start:dst_stop] = original [src_start:src_stop]. z is never cropped; y and x are cut
    around the grid centre (or `center_mask`'s bounding-box centre) or zero-padded evenly.
    """
    shape = [int(shape_zyx[0])] + ([int(s) for s in shape_zyx[1:]] if crop_xy is None else [crop_xy[1], crop_xy[0]])
    box = []
    for axis, (n, target) in enumerate(zip(shape_zyx, shape)):
        if n >= target:
            start = (n - target) // 2
            if center_mask is not None and center_mask.any():
                hits = np.flatnonzero(center_mask.any(axis=tuple(a for a in range(3) if a != axis)))
                start = min(max((hits[0] + hits[-1] + 1) // 2 - target // 2, 0), n - target)
            box.append([int(start), int(start + target), 0, int(target)])
        else:
            before = (target - n) // 2
            box.append([0, int(n), int(before), int(before + n)])
    return box, shape


def place(array_zyx: np.ndarray, box, shape, fill=0) -> np.ndarray:
    """Crop/pad an original-grid (z, y, x) array into the preprocessed grid."""
    out = np.full(shape, fill, dtype=array_zyx.dtype)
    out[tuple(slice(b[2], b[3]) for b in box)] = array_zyx[tuple(slice(b[0], b[1]) for b in box)]
    return out


def to_original_space(array_zyx: np.ndarray, meta: dict) -> np.ndarray:
    """Undo `place` and the transpose: a (z, y, x) array on the preprocessed grid (a mask or a
    probability map) as an (x, y, z) array on the scan's own grid; cropped-away voxels are 0."""
    array_zyx = np.asarray(array_zyx)
    if list(array_zyx.shape) != list(meta["shape_zyx"]):
        raise ValueError(f"array shape {array_zyx.shape} is not the preprocessed shape {tuple(meta['shape_zyx'])}")
    box = meta["box_zyx"]
    out = np.zeros(meta["original_shape_xyz"][::-1], dtype=array_zyx.dtype)
    out[tuple(slice(b[0], b[1]) for b in box)] = array_zyx[tuple(slice(b[2], b[3]) for b in box)]
    return out.transpose(2, 1, 0)


def preprocess_volume(fmt: str, image_xyz: np.ndarray, affine: np.ndarray,
                      options: dict | None) -> tuple[np.ndarray, dict]:
    """One scan as the network sees it: float32 (z, y, x), and the meta that maps it back."""
    opts = preprocess_options(fmt, options)
    volume = np.asarray(image_xyz, dtype=np.float32).transpose(2, 1, 0)
    if opts["clip_below"] is not None:
        volume = np.where(volume < opts["clip_below"], np.float32(0), volume)
    region = None
    if opts["normalize"].startswith("brain_") or opts["crop_center"] == "brain":
        region = brain_region(volume, opts["brain_threshold"])
        if not region.any():
            log.warning("no head region found (a constant volume?); statistics use all voxels")
            region = np.ones(volume.shape, bool)
    volume, norm = normalize(volume, opts["normalize"], opts["percentiles"], region)
    box, shape = crop_box(volume.shape, opts["crop_xy"], region if opts["crop_center"] == "brain" else None)
    # Padding takes the darkest value: 0 (background) for the max and percentile methods.
    out = place(volume, box, shape, fill=volume.min())
    meta = {
        "format": fmt,
        "options": opts,
        "original_shape_xyz": [int(s) for s in image_xyz.shape],
        "affine": np.asarray(affine, dtype=float).tolist(),
        "spacing_zyx": [float(s) for s in nib.affines.voxel_sizes(affine)[::-1]],
        "shape_zyx": shape,
        "box_zyx": box,
        "normalization": norm,
        "region_voxels": None if region is None else int(region.sum()),
    }
    return out, meta


def refuse_blank(path: Path, image_xyz: np.ndarray, volume: np.ndarray, opts: dict) -> None:
    """Raise DataFileError when preprocessing left a (non-constant) scan constant; the usual
    cause is a scan on another intensity scale than `clip_below` expects (e.g. 0..1)."""
    if volume.min() != volume.max():
        return
    clip = opts["clip_below"]
    if clip is not None and float(image_xyz.max()) < clip:
        why = (f"every voxel is below clip_below {clip:g} (the image maximum is {float(image_xyz.max()):g}); "
               "set preprocess.clip_below lower or to null for data on this intensity scale")
    else:
        why = "check the preprocess options (crop_xy, normalize)"
    raise DataFileError(path, f"blank after preprocessing: {why}")


def preprocess_label(label_xyz: np.ndarray, meta: dict) -> np.ndarray:
    """uint8 (z, y, x) on the preprocessed grid: target_labels -> 1, ignore_labels -> 2, else 0."""
    label = np.asarray(label_xyz).transpose(2, 1, 0)
    out = np.zeros(label.shape, np.uint8)
    out[np.isin(label, meta["options"]["ignore_labels"])] = IGNORE_LABEL
    out[np.isin(label, meta["options"]["target_labels"])] = 1
    return place(out, meta["box_zyx"], meta["shape_zyx"])


def split_min_cases(split: dict) -> tuple[int, str]:
    """Cases a split config needs, and why: pool + validation (when fixed) + test."""
    parts = [(name, int(split[name])) for name in ("pool", "validation", "test") if split.get(name) is not None]
    return sum(n for _, n in parts), " + ".join(f"{name} {n}" for name, n in parts)


def preprocess_dataset(
    fmt: str,
    root: str | Path,
    out: str | Path,
    options: dict | None = None,
    include_lgg: bool = False,
    channel: str | None = None,
    min_cases: int | None = None,
    min_cases_reason: str | None = None,
    section: str = "preprocess",
) -> Path:
    """Check the dataset, then write each case's arrays and meta and finally `cases.tsv`.

    Any problem stops everything before a file is written (DataError listing them all).
    Cases whose source files and options are unchanged since their last preprocessing are
    neither re-read nor rewritten, so a rerun on unchanged data writes nothing.
    """
    root, out = Path(root), Path(out)
    opts = preprocess_options(fmt, options, section, root=root)
    try:
        cases = discover(fmt, root, include_lgg=include_lgg, channel=channel)
    except DataFileError:
        cases = []  # check_dataset reports it
    current = {}
    for case in cases:
        meta = _current_meta(fmt, case, out, opts)
        if meta is not None:
            current[case.case_id] = meta
    report = check_dataset(fmt, root, min_cases=min_cases, include_lgg=include_lgg, channel=channel,
                           min_cases_reason=min_cases_reason, trusted=current)
    if not report.ok:
        raise DataError(f"{root}: {len(report.problems)} problem(s), nothing was written "
                        f"(see `massl check-data {fmt} {root}`):\n{report.problem_text()}")
    for warning in report.warnings:
        log.warning("%s", warning)
    if report.squeezed:
        log.info("%d file(s) of shape x y z 1 read as 3-D, e.g. %s", len(report.squeezed), report.squeezed[0])
    unknown = set(opts["target_labels"] + opts["ignore_labels"]) - allowed_label_values(fmt, root)
    if unknown:
        raise ConfigError(f"{section}: label value(s) {sorted(unknown)} are not labels of this {fmt} dataset")

    stale = [case for case in report.cases if case.case_id not in current]
    log.info("%s: %d case(s) up to date, %d to preprocess into %s", fmt, len(current), len(stale), out)
    metas = dict(current)
    for case in tqdm(stale, desc="preprocessing", unit="case", mininterval=10, disable=len(stale) < 2):
        metas[case.case_id] = _preprocess_case(fmt, case, out, opts)

    table_path = out / CASES_TABLE
    table = _table_text(report.cases, metas)
    if table_path.is_file() and table_path.read_text() == table:
        log.info("%s is up to date", table_path)
    else:
        atomic_write_text(table_path, table)
    return table_path


def _file_names(case_id: str) -> dict[str, str]:
    return {"image": f"{case_id}.image.npy", "label": f"{case_id}.label.npy", "meta": f"{case_id}.json"}


def _fingerprint(case: Case) -> dict:
    """Identity of the source files: a changed path, size or modification time means redo."""
    stats = {}
    for kind, path in (("image", case.image), ("label", case.label)):
        st = path.stat()
        stats[kind] = [str(path.resolve()), st.st_size, st.st_mtime_ns]
    return stats


def _current_meta(fmt: str, case: Case, out: Path, opts: dict) -> dict | None:
    names = _file_names(case.case_id)
    try:
        meta = json.loads((out / names["meta"]).read_text())
        fingerprint = _fingerprint(case)
    except (OSError, ValueError):
        return None
    if (meta.get("format"), meta.get("source"), meta.get("options")) != (fmt, fingerprint, opts):
        return None
    if not ((out / names["image"]).is_file() and (out / names["label"]).is_file()):
        return None
    return meta


def _preprocess_case(fmt: str, case: Case, out: Path, opts: dict) -> dict:
    image, image_nii = read_volume(case.image, "image")
    label, _ = read_volume(case.label, "label")
    volume, meta = preprocess_volume(fmt, image, image_nii.affine, opts)
    refuse_blank(case.image, image, volume, opts)
    target = preprocess_label(label, meta)
    n_target = int(np.isin(label, opts["target_labels"]).sum())
    meta.update(
        case_id=case.case_id,
        site=case.site,
        source=_fingerprint(case),
        n_foreground=int(np.count_nonzero(target == 1)),
        n_ignore=int(np.count_nonzero(target == IGNORE_LABEL)),
    )
    if meta["n_foreground"] < n_target:
        log.warning("%s: crop_xy %s cuts off %d of %d target voxels", case.case_id, opts["crop_xy"],
                    n_target - meta["n_foreground"], n_target)
    names = _file_names(case.case_id)
    _save_array(out / names["image"], volume)
    _save_array(out / names["label"], target)
    atomic_write_json(out / names["meta"], meta)  # last: it marks the case as done
    return meta


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def _table_text(cases: list[Case], metas: dict[str, dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(CASES_COLUMNS)
    for case in cases:
        meta, names = metas[case.case_id], _file_names(case.case_id)
        writer.writerow([
            case.case_id, case.site,
            "x".join(map(str, meta["shape_zyx"])), "x".join(f"{s:g}" for s in meta["spacing_zyx"]),
            names["image"], names["label"], names["meta"], meta["n_foreground"],
        ])
    return buffer.getvalue()


def cli_preprocess(args) -> int:
    dataset = {}
    key = args.dataset or args.format
    if args.config:
        dataset = resolved(load_config(args.config))["datasets"].get(key)
        if dataset is None:
            raise ConfigError(f"{args.config}: no dataset {key!r} under 'datasets' (choose one with --dataset)")
        if dataset["format"] != args.format:
            raise ConfigError(f"{args.config}: datasets.{key}.format is {dataset['format']!r}, not {args.format!r}")
    min_cases, reason = args.min_cases, None
    if min_cases is None and dataset.get("split"):
        min_cases, reason = split_min_cases(dataset["split"])
    preprocess_dataset(
        args.format, args.path, args.out, dataset.get("preprocess") or {},
        include_lgg=args.include_lgg or bool(dataset.get("include_lgg", False)),
        channel=args.channel or dataset.get("channel"),
        min_cases=min_cases, min_cases_reason=reason, section=f"datasets.{key}.preprocess",
    )
    return 0
