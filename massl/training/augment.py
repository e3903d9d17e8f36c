"""Batch augmentation on the training device (SPEC section 4): random in-plane rotation,
scaling and left-right flip, one affine warp per sample applied identically to image and label.

The random draws come from a CPU `torch.Generator`, so a seed gives the same augmentation on
CPU and GPU and the generator's state can be checkpointed for an exact resume.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from massl.config import TrainConfig


def affine_theta(angle: Tensor, scale: Tensor, flip: Tensor, spatial_shape: tuple[int, ...]) -> Tensor:
    """`affine_grid` matrices (N, D, D+1) that rotate by `angle` (radians) in the (y, x) plane,
    zoom by `scale` (> 1 enlarges the content) and mirror x where `flip` is true, about the centre.

    The warp is built in voxel units and then converted to `affine_grid`'s normalised [-1, 1]
    coordinates, so rotations stay rigid on non-square patches.
    """
    n, dims = angle.shape[0], len(spatial_shape)
    cos, sin = torch.cos(angle), torch.sin(angle)
    mirror = 1.0 - 2.0 * flip.to(angle.dtype)
    # Output voxel -> input voxel, axes ordered (x, y[, z]) as affine_grid expects.
    warp = torch.zeros(n, dims, dims, dtype=angle.dtype)
    warp[:, 0, 0], warp[:, 0, 1] = cos * mirror, -sin
    warp[:, 1, 0], warp[:, 1, 1] = sin * mirror, cos
    if dims == 3:
        warp[:, 2, 2] = 1.0
    warp = warp / scale.view(n, 1, 1)
    half = torch.tensor([s / 2.0 for s in reversed(spatial_shape)], dtype=angle.dtype)
    normalised = warp * half.view(1, 1, dims) / half.view(1, dims, 1)
    return torch.cat([normalised, torch.zeros(n, dims, 1, dtype=angle.dtype)], dim=2)


def warp_batch(image: Tensor, label: Tensor | None, theta: Tensor) -> tuple[Tensor, Tensor | None]:
    """Resample `image` (bilinear) and `label` (nearest, values kept) with the same matrices.
    Voxels warped in from outside the patch are 0 (background)."""
    theta = theta.to(device=image.device, dtype=torch.float32)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    warped = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if label is None:
        return warped, None
    warped_label = F.grid_sample(label.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return warped, warped_label.round().to(label.dtype)


def augment_batch(
    image: Tensor, label: Tensor | None, cfg: TrainConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor | None]:
    """Random rotation in [-rotate_degrees, rotate_degrees], scale in `scale_range` and a
    left-right flip with probability 1/2, drawn per sample from `generator`."""
    n = image.shape[0]
    max_angle = math.radians(cfg.rotate_degrees)
    angle = (2.0 * torch.rand(n, generator=generator, dtype=torch.float64) - 1.0) * max_angle
    low, high = cfg.scale_range
    scale = low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)
    flip = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
    return warp_batch(image, label, affine_theta(angle, scale, flip, tuple(image.shape[2:])))
