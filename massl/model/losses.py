"""Losses of SPEC section 2. Tensors are (N, C, *spatial); sums and means run per sample over
channels and voxels, then the per-sample losses are averaged over the batch."""

from __future__ import annotations

import torch
from torch import Tensor

from massl.config import CHOICES


def _per_sample_sum(x: Tensor) -> Tensor:
    return x.flatten(1).sum(dim=1)


def _per_sample_mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(dim=1)


def _same_shape(name: str, a: Tensor, b: Tensor) -> None:
    # Broadcasting would silently compute a different loss.
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")



def soft_dice_loss(
    prob: Tensor, target: Tensor, eps: float = 1e-4, mask: Tensor | None = None, over: str = "sample"
) -> Tensor:
    """`1 - 2*sum(y*p) / (sum(y) + sum(p) + eps)` per sample, mean over the batch.

    `eps` sits in the denominator only (as in the paper), so an empty target with an empty
    prediction costs 1. `mask` (same shape, 1 = count, 0 = ignore) removes voxels from all
    three sums (WMH label 2). `over="batch"` takes the sums over the whole batch instead (one
    Dice per step): a 2D slice without foreground then still gets gradient against false
    positives, where its per-sample Dice is a constant 1 whatever the prediction.
    """
    if over not in CHOICES["training"]["dice_over"]:
        raise ValueError(f"soft_dice_loss: over must be one of {CHOICES['training']['dice_over']}, got {over!r}")
    _same_shape("soft_dice_loss", prob, target)
    target = target.to(prob.dtype)
    if mask is not None:
        _same_shape("soft_dice_loss mask", prob, mask)
        mask = mask.to(prob.dtype)
        prob, target = prob * mask, target * mask
    reduce = _per_sample_sum if over == "sample" else torch.sum
    overlap = reduce(prob * target)
    total = reduce(target) + reduce(prob)
    return (1 - 2 * overlap / (total + eps)).mean()


def binary_cross_entropy(prob: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean BCE of sigmoid probabilities over the counted voxels (`mask` as in soft_dice_loss)."""
    _same_shape("binary_cross_entropy", prob, target)
    losses = torch.nn.functional.binary_cross_entropy(prob, target.to(prob.dtype), reduction="none")
    if mask is None:
        return losses.mean()
    mask = mask.to(prob.dtype)
    return (losses * mask).sum() / mask.sum().clamp_min(1)


def reconstruction_mse(rec: Tensor, image: Tensor) -> Tensor:
    """`mean((R - X)^2)` over all voxels of the batch (MSSL, autoencoder)."""
    _same_shape("reconstruction_mse", rec, image)
    return torch.mean((rec - image.to(rec.dtype)) ** 2)


def attention_targets(seg_prob: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
    """Background and foreground reconstruction targets `((1-S)*X, S*X)`, each (N, 1, ...)."""
    _same_shape("attention_targets", seg_prob, image)
    return (1 - seg_prob) * image, seg_prob * image


def attention_reconstruction_loss(rec: Tensor, image: Tensor, seg_prob: Tensor) -> Tensor:
    """Eq. 1: `mean(1-S) * MSE(R_b, (1-S)*X) + mean(S) * MSE(R_f, S*X)`.

    `rec` is (N, 2, ...) with channel 0 = background R_b, channel 1 = foreground R_f; `image`
    and `seg_prob` are (N, 1, ...). The volume-fraction weights and the MSEs are computed per
    sample (the paper's N is the voxel count of one image), then averaged over the batch.
    Whether gradient flows through S is decided by the caller (`segmentation_for_attention`).
    """
    if rec.shape[1] != 2:
        raise ValueError(f"attention_reconstruction_loss: rec needs 2 channels, got {rec.shape[1]}")
    background, foreground = attention_targets(seg_prob, image.to(rec.dtype))
    _same_shape("attention_reconstruction_loss", rec[:, :1], background)
    mse_b = _per_sample_mean((rec[:, :1] - background) ** 2)
    mse_f = _per_sample_mean((rec[:, 1:] - foreground) ** 2)
    return (_per_sample_mean(1 - seg_prob) * mse_b + _per_sample_mean(seg_prob) * mse_f).mean()


def segmentation_for_attention(model, feats: list[Tensor], attention_grad: str = "detach") -> Tensor:
    """S = sigmoid(segmentation logits) of `feats`, for the attention targets.

    "detach" (paper): S carries no gradient, so neither the segmentation decoder nor the
    encoder learns through it. "encoder" (released code): the segmentation decoder runs with
    detached copies of its parameters, so they get no gradient, but the gradient through S
    still reaches the encoder features.
    """
    if attention_grad == "detach":
        with torch.no_grad():
            return torch.sigmoid(model.segment(feats))
    if attention_grad == "encoder":
        frozen = {name: p.detach() for name, p in model.seg_decoder.named_parameters()}
        return torch.sigmoid(torch.func.functional_call(model.seg_decoder, frozen, (feats,)))
    raise ValueError(f"attention_grad must be one of {CHOICES['training']['attention_grad']}, got {attention_grad!r}")
