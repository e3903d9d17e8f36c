"""Segment NIfTI scans with a trained model (`massl predict`).

Each scan (a file, a folder of scans, one case folder or a dataset folder: `find_scans`) is
preprocessed as the model's training data was, segmented by sliding windows,
thresholded, and mapped back onto the scan's own grid: `<out>/<name>_mask.nii.gz` is uint8 with
the scan's shape, affine and header, so it opens next to the scan in any viewer.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from massl.config import TrainConfig, model_training
from massl.data.discover import NIFTI_ENDINGS, NOT_FLAIR, DataFileError, case_folder, discover, nifti_stem
from massl.data.preprocess import preprocess_volume, refuse_blank, to_original_space
from massl.data.validate import nearly_empty, read_volume
from massl.errors import ConfigError, DataError
from massl.io import atomic_path

log = logging.getLogger(__name__)


def model_settings(meta: dict, fmt: str | None, model_path: Path) -> tuple[str, dict, TrainConfig]:
    """The format and preprocessing options the model was trained with (a different `fmt`
    uses that format's defaults) and its effective training config (patch, overlap, ...)."""
    config = meta.get("config") or {}
    dataset = (config.get("datasets") or {}).get(meta.get("dataset"), {})
    trained_fmt = meta.get("format") or dataset.get("format")
    fmt = fmt or trained_fmt
    if fmt is None:
        raise ConfigError(f"{model_path}: the model does not record its data format; pass --format")
    if trained_fmt and fmt != trained_fmt:
        log.warning("model trained on %s data; preprocessing as %s with that format's defaults", trained_fmt, fmt)
    options = (dataset.get("preprocess") or {}) if fmt == trained_fmt else {}
    return fmt, options, model_training(meta)


def find_scans(source: Path, fmt: str) -> list[tuple[str, Path]]:
    """(name, path) of each scan to segment, from
    - a file: that file, named by its stem;
    - a BraTS or WMH case folder: its FLAIR, named by case id as the dataset readers name it;
    - a folder of NIfTI files: each one but the labels and other modalities of the two layouts
      (`NOT_FLAIR`: `*_seg`, `wmh`, `*_t1`, `*_t1ce`, `*_t2`, `T1`), named by stem;
    - a dataset folder in `fmt`'s layout: the images of its cases, named by case id.
    Skipped files are logged."""
    if source.is_file():
        return [(nifti_stem(source), source)]
    if not source.is_dir():
        raise DataError(f"{source}: input file or folder not found")
    files = _nifti_files(source)
    case = case_folder(source)
    others = [] if case is None else sorted(set(files + _nifti_files(case.image.parent)) - {case.image})
    if case is not None and all(NOT_FLAIR.search(nifti_stem(p)) for p in others):
        _log_skipped(source, others)
        return [(case.case_id, case.image)]
    if not files:
        scans = _dataset_scans(source, fmt)
    else:
        skipped = [p for p in files if NOT_FLAIR.search(nifti_stem(p))]
        _log_skipped(source, skipped)
        scans = [(nifti_stem(p), p) for p in files if p not in skipped]
        if not scans:
            raise DataError(f"{source}: only labels and other modalities here ({_names(skipped)}), no FLAIR "
                            "scan: give the FLAIR files")
    names = [name for name, _ in scans]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise DataError(f"{source}: several scans would write the same mask: {', '.join(clashes)}")
    return scans


def _nifti_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name.endswith(NIFTI_ENDINGS) and not p.name.startswith("."))


def _names(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")


def _log_skipped(source: Path, skipped: list[Path]) -> None:
    if skipped:
        log.info("%s: skipped %d file(s) that are labels or other modalities, not the FLAIR: %s",
                 source, len(skipped), _names(skipped))


def _dataset_scans(source: Path, fmt: str) -> list[tuple[str, Path]]:
    """The case images of a dataset folder; a folder that is none says what to pass instead."""
    try:
        return [(case.case_id, case.image) for case in discover(fmt, source)]
    except DataFileError as exc:
        other = getattr(exc, "looks_like", None)
        why = exc.problem if exc.path == source else str(exc)
        if other:
            hint = f"the model reads {fmt} data; to read this folder as {other}, pass --format {other}"
        else:
            hint = (f"give a FLAIR file, a folder of them, a case folder or a {fmt} dataset folder "
                    "(data in another layout: pass --format)")
        raise DataError(f"{source}: no NIfTI scans (*.nii.gz, *.nii) and no {fmt} dataset ({why}); {hint}") from None


def predict_scan(path: Path, predict_volume: Callable[[np.ndarray], np.ndarray], fmt: str, options: dict,
                 threshold: float = 0.5) -> nib.Nifti1Image:
    """The binary mask of one scan, on its own grid with its affine and header.

    `predict_volume` maps a preprocessed (z, y, x) volume to foreground probabilities.
    """
    image, scan = read_volume(path, "image")
    warning = nearly_empty(image)
    if warning:
        log.warning("%s: %s", path, warning)
    if len(scan.shape) > image.ndim:
        log.info("%s: shape %s read as 3-D; the mask keeps the scan's shape", path, scan.shape)
    volume, meta = preprocess_volume(fmt, image, scan.affine, options)
    refuse_blank(path, image, volume, meta["options"])
    prob = np.asarray(predict_volume(volume))
    mask = to_original_space((prob >= threshold).astype(np.uint8), meta).reshape(scan.shape)
    header = scan.header.copy()
    header.set_data_dtype(np.uint8)
    out = type(scan)(mask, scan.affine, header)
    out.header.set_slope_inter(1, 0)
    out.header["cal_min"], out.header["cal_max"] = 0, 1
    return out


def write_mask(path: Path, mask: nib.Nifti1Image) -> None:
    """Atomic .nii.gz; a fixed gzip timestamp so equal masks give equal files."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(mask.to_bytes(), compresslevel=6, mtime=0))


def cli_predict(args) -> int:
    from massl.device import autocast_dtype, pick_device, pin_cpu_isa, set_threads
    from massl.evaluation.inference import sliding_window_predict
    from massl.model.cpu_conv import set_cpu_conv3d
    from massl.model.files import load_model

    set_threads(args.threads)
    device = pick_device(args.device)
    model_path = Path(args.model)
    model, meta = load_model(model_path, device)
    model.eval()
    fmt, options, train = model_settings(meta, args.format, model_path)
    pin_cpu_isa(train.cpu_isa)  # the run's CPU kernels, before the first forward pass
    set_cpu_conv3d(model, train.cpu_conv3d)
    amp = autocast_dtype(train.amp, device)
    scans = find_scans(Path(args.input), fmt)

    def predict_volume(volume: np.ndarray) -> np.ndarray:
        return sliding_window_predict(model, volume, train.patch_size, train.inference_overlap,
                                      train.inference_batch, device, amp)

    out, failed = Path(args.out), []
    for name, path in tqdm(scans, desc="predicting", unit="scan", mininterval=10, disable=len(scans) < 2):
        try:
            mask = predict_scan(path, predict_volume, fmt, options, train.threshold)
        except DataFileError as exc:  # one bad scan must not cost the others their masks
            log.error("%s", exc)
            failed.append(str(exc))
            continue
        target = out / f"{name}_mask.nii.gz"
        write_mask(target, mask)
        log.info("%s: %d foreground voxels -> %s", path, int(np.asarray(mask.dataobj).sum()), target)
    if failed:
        raise DataError(f"{len(failed)} of {len(scans)} scan(s) could not be segmented:\n  " + "\n  ".join(failed))
    return 0
