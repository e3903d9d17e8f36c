"""Whole-volume prediction by sliding windows (SPEC section 7)."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
from tqdm import tqdm

from massl.device import autocast

log = logging.getLogger(__name__)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Window offsets along one axis: a step of window*(1-overlap), the last window flush with
    the end so every voxel is covered. A size below the window gives one (padded) window."""
    if size <= window:
        return [0]
    step = max(1, int(round(window * (1 - overlap))))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


@torch.no_grad()
def sliding_window_predict(
    model,
    volume: np.ndarray,
    patch_size,
    overlap: float = 0.5,
    batch_size: int = 8,
    device="cpu",
    amp_dtype: torch.dtype | None = None,
    return_reconstruction: bool = False,
    progress: bool = False,
):
    """Foreground probability of a (z, y, x) volume, averaged over overlapping windows.

    A 3D model sees windows of `patch_size` (z, y, x); a 2D model sees (y, x) crops of each z
    slice (`patch_size` = (y, x)). Axes shorter than the window are zero-padded, and the result
    is cropped back. Each window's sigmoid output counts with the same weight. The model must
    already be on `device` and in the mode the caller wants.

    Returns prob (float32, volume's shape); with `return_reconstruction` the tuple
    (prob, rec) where rec is the averaged reconstruction (C, z, y, x), or None without a
    reconstruction decoder.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"volume must be (z, y, x), got shape {volume.shape}")
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != model.spatial_dims:
        raise ValueError(f"a {model.spatial_dims}D model needs a {model.spatial_dims}D patch, got {patch}")
    # A 2D window is a (1, y, x) block: stacked, its depth axis becomes the channel axis.
    window = patch if model.spatial_dims == 3 else (1, *patch)
    padded_shape = tuple(max(s, w) for s, w in zip(volume.shape, window))
    padded = np.zeros(padded_shape, np.float32)
    padded[tuple(slice(0, s) for s in volume.shape)] = volume

    corners = list(itertools.product(*(window_starts(s, w, overlap) for s, w in zip(padded_shape, window))))
    want_rec = return_reconstruction and model.rec_decoder is not None
    prob_sum = np.zeros(padded_shape, np.float32)
    count = np.zeros(padded_shape, np.float32)
    rec_sum = None
    device = torch.device(device)
    log.debug("sliding window: %d windows of %s over %s", len(corners), window, volume.shape)

    batches = range(0, len(corners), batch_size)
    for first in tqdm(batches, desc="windows", unit="batch", disable=not progress, leave=False):
        boxes = [tuple(slice(c, c + w) for c, w in zip(corner, window)) for corner in corners[first:first + batch_size]]
        x = torch.from_numpy(np.stack([padded[box] for box in boxes])).to(device)
        if model.spatial_dims == 3:
            x = x.unsqueeze(1)
        with autocast(device, amp_dtype):
            feats = model.encode(x)
            prob = torch.sigmoid(model.segment(feats).float())
            rec = model.reconstruct(feats).float() if want_rec else None
        prob = prob.cpu().numpy().reshape(len(boxes), *window)
        if rec is not None:
            rec = rec.cpu().numpy().reshape(len(boxes), rec.shape[1], *window)
            if rec_sum is None:
                rec_sum = np.zeros((rec.shape[1], *padded_shape), np.float32)
        for i, box in enumerate(boxes):
            prob_sum[box] += prob[i]
            count[box] += 1
            if rec is not None:
                rec_sum[(slice(None), *box)] += rec[i]

    crop = tuple(slice(0, s) for s in volume.shape)
    prob = (prob_sum / count)[crop]
    if not return_reconstruction:
        return prob
    rec = None if rec_sum is None else (rec_sum / count)[(slice(None), *crop)]
    return prob, rec
