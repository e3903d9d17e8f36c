"""Tiny NIfTI datasets in the real folder layouts (BraTS 2018, both WMH 2017 releases, nnU-Net
raw), for the discovery, validation, preprocessing and prediction tests."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

BRATS_HGG = ("Brats18_2013_10_1", "Brats18_CBICA_AAB_1", "Brats18_TCIA08_167_1")
BRATS_LGG = ("Brats18_2013_0_1", "Brats18_TCIA10_103_1", "Brats18_TCIA13_615_1")
BRATS_SHAPE = (24, 24, 8)  # x y z
# Per-site grids differ as in the real WMH data (x y z), scaled down.
WMH_SHAPES = {"Utrecht": (24, 24, 6), "Singapore": (26, 22, 6), "GE3T": (14, 26, 9), "Site A.v2": (20, 20, 5)}


def affine_for(spacing=(1.0, 1.0, 1.0), origin=(-10.0, -12.0, 4.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine_for() if affine is None else affine), path)
    return path


def scan(shape, seed: int, label_values=(1,)) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) in (x, y, z): a bright ellipsoid head on low noise with a brighter lesion
    whose voxels carry `label_values` in nested shells (first value outermost)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid ** 2).sum(0))
    image = rng.uniform(0, 5, shape) + np.where(radius < 0.9, 150 + rng.normal(0, 10, shape), 0)
    centre = rng.uniform(-0.2, 0.2, 3)[:, None, None, None]
    lesion = np.sqrt(((grid - centre) ** 2).sum(0))
    label = np.zeros(shape, np.int16)
    for k, value in enumerate(label_values):
        label[lesion < 0.45 - 0.12 * k] = value
    image = image + 200 * (label > 0)
    return image.astype(np.float32), label


BRATS_OTHER_MODALITIES = ("t1", "t1ce", "t2")


def make_brats(parent: Path, hgg=BRATS_HGG, lgg=BRATS_LGG, shape=BRATS_SHAPE, all_modalities: bool = False) -> Path:
    """`MICCAI_BraTS_2018_Data_Training/{HGG,LGG}/<case>/<case>_{flair,seg}.nii.gz`; with
    `all_modalities` also `_t1`, `_t1ce`, `_t2`, as in the real download."""
    root = parent / "MICCAI_BraTS_2018_Data_Training"
    for grade, names in (("HGG", hgg), ("LGG", lgg)):
        for seed, name in enumerate(names):
            image, label = scan(shape, seed, label_values=(2, 1, 4))
            write_nifti(root / grade / name / f"{name}_flair.nii.gz", image)
            write_nifti(root / grade / name / f"{name}_seg.nii.gz", label)
            for k, modality in enumerate(BRATS_OTHER_MODALITIES if all_modalities else ()):
                write_nifti(root / grade / name / f"{name}_{modality}.nii.gz", image * (k + 2))
    return root


def write_wmh_case(folder: Path, shape, seed: int, spacing=(1.0, 1.0, 3.0), t1: bool = False) -> None:
    """`<folder>/{wmh.nii.gz, pre/FLAIR.nii.gz}` (and `pre/T1.nii.gz`, as in the real data)."""
    image, label = scan(shape, seed, label_values=(1, 2))
    write_nifti(folder / "pre" / "FLAIR.nii.gz", image, affine_for(spacing))
    write_nifti(folder / "wmh.nii.gz", label, affine_for(spacing))
    if t1:
        write_nifti(folder / "pre" / "T1.nii.gz", image * 2, affine_for(spacing))


def make_wmh2017(parent: Path, per_site: int = 2) -> Path:
    """The 2017 zip: `<site>/<id>/{wmh.nii.gz, pre/FLAIR.nii.gz}`."""
    root = parent / "wmh2017"
    for s, site in enumerate(("Utrecht", "Singapore", "GE3T")):
        for i in range(per_site):
            write_wmh_case(root / site / str(s * 50 + i), WMH_SHAPES[site], seed=10 * s + i)
    return root


def make_wmh2022(parent: Path) -> Path:
    """The 2022 release: `training/{Utrecht,Singapore,Amsterdam/GE3T}/<id>/` plus a site
    folder named with a space and dots, and a `test/` folder that must not be used."""
    root = parent / "wmh2022"
    sites = {"Utrecht": "Utrecht", "Singapore": "Singapore", "GE3T": "Amsterdam/GE3T", "Site A.v2": "Site A.v2"}
    for s, (site, folder) in enumerate(sites.items()):
        for i in range(2):
            write_wmh_case(root / "training" / folder / str(100 * s + i), WMH_SHAPES[site], seed=10 * s + i)
    write_wmh_case(root / "test" / "Amsterdam" / "GE1T5" / "7", WMH_SHAPES["Utrecht"], seed=99)
    return root


def make_nnunet(parent: Path, n_cases: int = 3, channels=("T1", "FLAIR"), v2: bool = True,
                shape=(20, 18, 6)) -> Path:
    """An nnU-Net raw folder with labels background 0, lesion 1 and (v2) ignore 2."""
    root = parent / "Dataset501_Lesions"
    if v2:
        spec = {"channel_names": {str(i): n for i, n in enumerate(channels)},
                "labels": {"background": 0, "lesion": 1, "ignore": 2}, "numTraining": n_cases, "file_ending": ".nii.gz"}
    else:
        spec = {"modality": {str(i): n for i, n in enumerate(channels)},
                "labels": {"0": "background", "1": "lesion"}, "numTraining": n_cases}
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(spec))
    for k in range(n_cases):
        image, label = scan(shape, seed=k, label_values=(1, 2) if v2 else (1,))
        for c in range(len(channels)):
            write_nifti(root / "imagesTr" / f"lesion_{k:03d}_{c:04d}.nii.gz", image * (c + 1))
        write_nifti(root / "labelsTr" / f"lesion_{k:03d}.nii.gz", label)
    return root
