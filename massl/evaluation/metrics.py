"""Per-scan segmentation metrics on binary masks (SPEC section 7). Spacing is in mm, in the
array's axis order; `ignore` marks voxels removed from both masks (WMH label 2)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from massl.data.store import IGNORE_LABEL


def _masks(pred, target, ignore) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        if keep.shape != pred.shape:
            raise ValueError(f"ignore shape {keep.shape} differs from mask shape {pred.shape}")
        pred, target = pred & keep, target & keep
    return pred, target


def dice(pred: np.ndarray, target: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """2|P and T| / (|P| + |T|); NaN when both masks are empty."""
    pred, target = _masks(pred, target, ignore)
    total = int(pred.sum()) + int(target.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(pred & target)) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    # Voxels with a face neighbour outside the mask; the array border counts as outside.
    return mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(mask.ndim, 1))


def _crop_to_union(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to their joint bounding box plus one background voxel: surfaces and
    distances are unchanged, the distance transforms get much cheaper on whole volumes."""
    coords = np.nonzero(pred | target)
    box = tuple(slice(max(int(c.min()) - 1, 0), int(c.max()) + 2) for c in coords)
    return pred[box], target[box]


def _surface_distances(from_mask: np.ndarray, to_mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from each surface voxel of `from_mask` to the nearest surface voxel of `to_mask`."""
    to_surface = ndimage.distance_transform_edt(~_surface(to_mask), sampling=spacing)
    return to_surface[_surface(from_mask)]


def hd95(pred, target, spacing=(1, 1, 1), ignore=None) -> float:
    """95th-percentile Hausdorff distance in mm; NaN if either mask is empty.

    The larger of the two directed 95th percentiles of surface-to-surface distances, as in the
    WMH challenge's evaluation.
    """
    pred, target = _masks(pred, target, ignore)
    if not pred.any() or not target.any():
        return float("nan")
    pred, target = _crop_to_union(pred, target)
    spacing = tuple(float(s) for s in spacing)
    return float(
        max(
            np.percentile(_surface_distances(pred, target, spacing), 95),
            np.percentile(_surface_distances(target, pred, spacing), 95),
        )
    )


def abs_volume_difference(pred, target, spacing=(1, 1, 1), ignore=None) -> float:
    """|V_pred - V_target| in ml (1 ml = 1000 mm^3)."""
    pred, target = _masks(pred, target, ignore)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return abs(int(pred.sum()) - int(target.sum())) * voxel_ml


def case_metrics(prob: np.ndarray, label: np.ndarray, spacing, threshold: float = 0.5) -> dict:
    """Dice, HD95 (mm) and AVD (ml) of `prob >= threshold` against `label` (0/1, 2 = ignore)."""
    prob, label = np.asarray(prob), np.asarray(label)
    if prob.shape != label.shape:
        raise ValueError(f"probability shape {prob.shape} differs from label shape {label.shape}")
    pred, target, ignore = prob >= threshold, label == 1, label == IGNORE_LABEL
    return {
        "dice": dice(pred, target, ignore),
        "hd95": hd95(pred, target, spacing, ignore),
        "avd": abs_volume_difference(pred, target, spacing, ignore),
    }
