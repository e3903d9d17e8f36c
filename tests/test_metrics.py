import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from massl.evaluation.metrics import abs_volume_difference, case_metrics, dice, hd95


def test_dice_hand_computed():
    pred = np.array([1, 1, 0, 0])
    target = np.array([1, 0, 1, 0])
    assert dice(pred, target) == pytest.approx(2 * 1 / (2 + 2))
    # ignoring voxel 2 removes one target voxel: 2 * 1 / (2 + 1)
    assert dice(pred, target, ignore=np.array([0, 0, 1, 0])) == pytest.approx(2 / 3)


def test_dice_nan_when_both_empty_after_ignore():
    assert math.isnan(dice(np.zeros(4), np.zeros(4)))
    assert math.isnan(dice(np.array([1, 0]), np.array([1, 0]), ignore=np.array([1, 0])))
    assert dice(np.zeros(4), np.array([1, 0, 0, 0])) == 0.0


def test_hd95_parallel_planes_with_anisotropic_spacing():
    pred = np.zeros((8, 6, 6), bool)
    target = np.zeros_like(pred)
    pred[2] = True
    target[5] = True
    # every surface voxel is 3 slices of 2 mm from the other plane
    assert hd95(pred, target, spacing=(2.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hd95(pred, pred, spacing=(2.0, 1.0, 1.0)) == 0.0


def test_hd95_takes_the_larger_directed_percentile():
    target = np.ones((1, 1, 21), bool)  # a line of 21 voxels, x = 0..20
    pred = np.zeros_like(target)
    pred[0, 0, 0] = True
    # pred -> target: 0. target -> pred: 0, 1, ..., 20 mm; 95th percentile = 0.95 * 20 = 19
    assert hd95(pred, target) == pytest.approx(19.0)
    assert hd95(target, pred) == pytest.approx(19.0)


def _surface_points(mask, spacing):
    """Brute force: voxels of the mask with a face neighbour outside it, in mm."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1]
    boundary = np.zeros_like(mask)
    for axis in range(3):
        for shift in (-1, 1):
            boundary |= inner & ~np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(boundary) * np.asarray(spacing)


def test_hd95_matches_brute_force_pairwise_distances():
    rng = np.random.default_rng(0)
    spacing = (3.0, 1.0, 0.5)
    pred = np.zeros((14, 16, 18), bool)
    target = np.zeros_like(pred)
    pred[3:10, 4:12, 5:16] = ndimage.gaussian_filter(rng.random((7, 8, 11)), 1) > 0.5
    target[5:12, 2:9, 3:12] = ndimage.gaussian_filter(rng.random((7, 7, 9)), 1) > 0.5
    assert pred.any() and target.any()
    distances = cdist(_surface_points(pred, spacing), _surface_points(target, spacing))
    expected = max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))
    assert hd95(pred, target, spacing) == pytest.approx(expected)


def test_hd95_nan_when_a_mask_is_empty():
    mask = np.zeros((4, 4, 4), bool)
    mask[1, 1, 1] = True
    assert math.isnan(hd95(mask, np.zeros_like(mask)))
    assert math.isnan(hd95(mask, mask, ignore=mask))


def test_abs_volume_difference_in_ml():
    pred = np.zeros((4, 4, 4), bool)
    target = np.zeros_like(pred)
    pred.flat[:10] = True
    target.flat[:4] = True
    # |10 - 4| voxels * (2 * 1.5 * 1) mm^3 / 1000 = 0.018 ml
    assert abs_volume_difference(pred, target, spacing=(2.0, 1.5, 1.0)) == pytest.approx(0.018)
    ignore = np.zeros_like(pred)
    ignore.flat[8:10] = True  # two predicted voxels ignored: |8 - 4| * 3 / 1000
    assert abs_volume_difference(pred, target, (2.0, 1.5, 1.0), ignore) == pytest.approx(0.012)


def test_case_metrics_thresholds_and_ignores_label_2():
    prob = np.zeros((1, 1, 6), np.float32)
    prob[0, 0, :] = [0.9, 0.5, 0.49, 0.0, 0.8, 0.7]
    label = np.array([[[1, 1, 1, 0, 2, 0]]], np.uint8)
    # pred (>= 0.5) = voxels 0, 1, 4, 5; voxel 4 is ignored -> pred {0, 1, 5}, target {0, 1, 2}
    metrics = case_metrics(prob, label, spacing=(1.0, 1.0, 2.0))
    assert metrics["dice"] == pytest.approx(2 * 2 / (3 + 3))
    assert metrics["avd"] == pytest.approx(0.0)
    # voxel 5 (x = 10 mm) is 6 mm from the nearest target voxel 2 (x = 4 mm); voxel 2 is 2 mm
    # from voxel 1. Directed distances: pred -> target [0, 0, 6], target -> pred [0, 0, 2];
    # 95th percentiles (linear interpolation at rank 0.95 * 2 = 1.9): 0.9 * 6 = 5.4 and 0.9 * 2 = 1.8
    assert metrics["hd95"] == pytest.approx(5.4)
