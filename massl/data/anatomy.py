"""Brain anatomy for the synthetic benchmark: the MNI152 2009a tissue templates that ship inside
the nilearn wheel (no download), randomly warped and resampled onto a case's scanner grid.

Arrays are in NIfTI order (x, y, z) = (left-right, posterior-anterior, inferior-superior), like
the template and the real BraTS/WMH files.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from massl.errors import DataError

TEMPLATE_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_MM = 2.0  # working resolution: the 1 mm template block-averaged by 2 (fast, blurred anyway)
PAD_MM = 24.0  # room around the brain for the skull and scalp
SCALP_OUTER_MM, SCALP_INNER_MM = 15.0, 9.0  # scalp band, mm outside the brain surface (skull inside it)
CHANNELS = ("gm", "wm", "brain", "head", "scalp", "periventricular")


@dataclass(frozen=True)
class Grid:
    """A scanner grid: array shape and voxel size (mm), both (x, y, z)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """Diagonal voxel-to-mm affine with the grid centre at the origin."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = -(np.array(self.shape) - 1) / 2 * np.array(self.spacing)
        return affine

    def offsets_mm(self, centre_voxel) -> np.ndarray:
        """(3, x, y, z) float32: each voxel's position in mm relative to `centre_voxel`."""
        axes = [(np.arange(n, dtype=np.float32) - c) * s
                for n, c, s in zip(self.shape, centre_voxel, self.spacing)]
        return np.stack(np.meshgrid(*axes, indexing="ij"))


@dataclass(frozen=True)
class Template:
    maps: dict[str, np.ndarray]  # channel -> (x, y, z) float32 in [0, 1] at TEMPLATE_MM
    centre: np.ndarray  # voxel coordinates of the brain's bounding-box centre


def template_folder() -> Path:
    """nilearn's bundled data folder, located without importing nilearn (a slow import)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the synthetic benchmark needs nilearn (its bundled MNI152 template): pip install nilearn")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


@lru_cache(maxsize=1)
def template() -> Template:
    """Tissue probability maps at TEMPLATE_MM: grey matter, white matter, brain mask, head (brain +
    skull + scalp), scalp band and a periventricular weight (high next to the lateral ventricles,
    where white-matter hyperintensities are most common)."""
    folder = template_folder()
    volumes = {}
    for name in ("t1", "gm", "wm"):
        path = folder / TEMPLATE_FILE.format(name)
        try:
            volumes[name] = np.asarray(nib.load(path).dataobj, dtype=np.float32) / 255.0
        except (OSError, nib.filebasedimages.ImageFileError) as exc:
            raise DataError(f"{path}: cannot read the MNI152 template shipped with nilearn ({exc})") from exc
    # The template T1 is brain-extracted: non-zero exactly inside the brain.
    volumes["brain"] = (volumes.pop("t1") > 0).astype(np.float32)
    pad = int(PAD_MM / TEMPLATE_MM)
    maps = {name: np.pad(_block_mean(vol), pad) for name, vol in volumes.items()}

    inside = maps["brain"] >= 0.5
    outside_mm = ndimage.distance_transform_edt(~inside, sampling=TEMPLATE_MM).astype(np.float32)
    depth_mm = ndimage.distance_transform_edt(inside, sampling=TEMPLATE_MM).astype(np.float32)
    maps["head"] = _ramp(SCALP_OUTER_MM - outside_mm)
    maps["scalp"] = maps["head"] * _ramp(outside_mm - SCALP_INNER_MM)
    csf = np.clip(maps["brain"] - maps["gm"] - maps["wm"], 0, 1)
    ventricles = (csf > 0.5) & (depth_mm > 12.0)  # deep CSF = ventricles, not sulci
    to_ventricles_mm = ndimage.distance_transform_edt(~ventricles, sampling=TEMPLATE_MM)
    maps["periventricular"] = np.exp(-to_ventricles_mm / 8.0).astype(np.float32)

    lo, hi = (np.array([np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))[[0, -1]]
                        for axis in range(3)]).T)
    return Template(maps=maps, centre=(lo + hi) / 2.0)


def _block_mean(volume: np.ndarray, factor: int = int(TEMPLATE_MM)) -> np.ndarray:
    trimmed = volume[tuple(slice(0, n - n % factor) for n in volume.shape)]
    shape = [v for n in trimmed.shape for v in (n // factor, factor)]
    return trimmed.reshape(shape).mean(axis=(1, 3, 5), dtype=np.float32)


def _ramp(x: np.ndarray, width_mm: float = 2.0) -> np.ndarray:
    """Soft step from 0 to 1 around x = 0, `width_mm` wide (partial-volume edges)."""
    return np.clip(x / width_mm + 0.5, 0, 1).astype(np.float32)


@lru_cache(maxsize=8)
def _prefiltered(spacing: tuple[float, float, float], channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Template channels low-pass filtered for a grid of `spacing` mm: coarse voxels average the
    anatomy they cover instead of aliasing it (thick WMH slices blur in z)."""
    sigma = [0.4 * s / TEMPLATE_MM if s > 1.5 * TEMPLATE_MM else 0.0 for s in spacing]
    return {name: ndimage.gaussian_filter(template().maps[name], sigma) for name in channels}


def smooth_field(rng: np.random.Generator, grid: Grid, feature_mm: float) -> np.ndarray:
    """Random field on `grid`, zero mean and unit SD, varying on a scale of about `feature_mm`:
    Gaussian noise on a coarse control grid, interpolated with a separable Gaussian kernel
    (three small matrix products instead of a full-resolution filter)."""
    kernels = []
    for n, s in zip(grid.shape, grid.spacing):
        n_control = max(2, int(np.ceil(n * s / feature_mm)) + 1)
        position = np.linspace(0, n_control - 1, n)[:, None]  # voxel centres in control units
        kernels.append(np.exp(-0.5 * ((position - np.arange(n_control)) / 0.6) ** 2))
    control = rng.standard_normal([k.shape[1] for k in kernels])
    field = np.einsum("ia,jb,kc,abc->ijk", *kernels, control, optimize=True).astype(np.float32)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def random_warp(rng: np.random.Generator, grid: Grid, *, scale_sd: float = 0.06,
                rotate_deg: tuple[float, float, float] = (5.0, 4.0, 10.0), shift_mm: float = 6.0,
                elastic_mm: float = 3.0, elastic_feature_mm: float = 60.0) -> np.ndarray:
    """Template voxel coordinates (3, x, y, z) sampled by each voxel of `grid`: a random anisotropic
    scaling (head size), small rotation (head position), shift and smooth elastic deformation
    (individual anatomy), with the brain centred in the grid."""
    offsets = grid.offsets_mm((np.array(grid.shape) - 1) / 2.0)
    offsets += np.stack([smooth_field(rng, grid, elastic_feature_mm) for _ in range(3)]) * elastic_mm
    angles = np.deg2rad(rng.uniform(-1, 1, 3) * np.array(rotate_deg))
    scale = np.exp(rng.normal(np.log(rng.uniform(0.92, 1.08)), scale_sd, 3))  # global size x per axis
    matrix = Rotation.from_euler("xyz", angles).as_matrix() @ np.diag(1.0 / scale)  # output mm -> template mm
    shift = rng.uniform(-1, 1, 3) * shift_mm
    template_mm = np.einsum("ij,j...->i...", matrix.astype(np.float32), offsets)
    centre = template().centre + shift / TEMPLATE_MM
    return template_mm / TEMPLATE_MM + centre.astype(np.float32)[:, None, None, None]


def push_from(coords: np.ndarray, grid: Grid, centre_voxel, radius_mm: float, strength: float) -> np.ndarray:
    """Mass effect: voxels within about `radius_mm` of `centre_voxel` sample template points closer
    to it, so the surrounding anatomy appears pushed outward. `strength` in [0, 1) keeps the map
    monotone (no folding)."""
    offsets = grid.offsets_mm(centre_voxel)
    factor = 1.0 - strength * np.exp(-np.sum(offsets**2, axis=0) / radius_mm**2)
    anchor = coords[(slice(None), *np.round(centre_voxel).astype(int))][:, None, None, None]
    return anchor + (coords - anchor) * factor


def sample(coords: np.ndarray, grid: Grid, channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Resample template channels at `coords` (from `random_warp`) onto `grid`; zero outside."""
    maps = _prefiltered(tuple(float(s) for s in grid.spacing), tuple(channels))
    return {name: ndimage.map_coordinates(maps[name], coords, order=1, mode="constant", cval=0.0,
                                          prefilter=False, output=np.float32)
            for name in channels}

