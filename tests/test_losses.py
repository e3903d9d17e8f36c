import math

import pytest
import torch

from massl.model.losses import (
    attention_reconstruction_loss,
    binary_cross_entropy,
    attention_targets,
    reconstruction_mse,
    segmentation_for_attention,
    soft_dice_loss,
)
from massl.model.network import MASSLNet

torch.set_num_threads(1)


def t(*rows):
    """(N, 1, V) float64 tensor from per-sample voxel lists."""
    return torch.tensor(rows, dtype=torch.float64).unsqueeze(1)


def test_soft_dice_per_sample_then_batch_mean():
    prob = t([0.5, 1.0, 0.0, 0.25], [0.0, 0.0, 0.0, 0.0])
    target = t([1, 1, 0, 0], [0, 0, 0, 0])
    # sample 1: sum(y*p) = 0.5 + 1.0 = 1.5, sum(y) = 2, sum(p) = 1.75
    first = 1 - 2 * 1.5 / (2 + 1.75 + 1e-4)
    # sample 2: both empty -> 1 - 0 / (0 + 0 + 1e-4) = 1
    second = 1.0
    assert soft_dice_loss(prob, target).item() == pytest.approx((first + second) / 2, abs=1e-12)


def test_soft_dice_over_the_batch_pools_the_sums():
    prob = t([0.5, 1.0, 0.0, 0.25], [0.0, 0.0, 0.5, 0.0])
    target = t([1, 1, 0, 0], [0, 0, 0, 0])
    # pooled: sum(y*p) = 1.5, sum(y) = 2, sum(p) = 1.75 + 0.5
    expected = 1 - 2 * 1.5 / (2 + 2.25 + 1e-4)
    assert soft_dice_loss(prob, target, over="batch").item() == pytest.approx(expected, abs=1e-12)
    # the empty second sample still gets gradient against its false positive (per sample it gets none)
    for over, has_gradient in (("sample", False), ("batch", True)):
        p = prob.clone().requires_grad_()
        soft_dice_loss(p, target, over=over).backward()
        assert bool(p.grad[1].abs().sum() > 0) is has_gradient
    with pytest.raises(ValueError, match="over"):
        soft_dice_loss(prob, target, over="image")


def test_binary_cross_entropy_counts_only_unmasked_voxels():
    prob, target, mask = t([0.5, 0.9, 0.2, 0.7]), t([1, 1, 0, 0]), t([1, 1, 1, 0])
    expected = -(math.log(0.5) + math.log(0.9) + math.log(0.8)) / 3
    assert binary_cross_entropy(prob, target, mask=mask).item() == pytest.approx(expected, abs=1e-12)
    assert binary_cross_entropy(prob, target).item() == pytest.approx((3 * expected - math.log(0.3)) / 4, abs=1e-12)


def test_soft_dice_mask_removes_voxels_from_every_sum():
    prob = t([0.5, 1.0, 0.0, 0.25])
    target = t([1, 1, 0, 1])
    mask = t([1, 1, 1, 0])  # last voxel (p 0.25, y 1) ignored
    # sum(y*p) = 1.5, sum(y) = 2, sum(p) = 1.5
    expected = 1 - 2 * 1.5 / (2 + 1.5 + 1e-4)
    assert soft_dice_loss(prob, target, mask=mask).item() == pytest.approx(expected, abs=1e-12)
    assert soft_dice_loss(prob, target, eps=0.5, mask=mask).item() == pytest.approx(1 - 3 / 4.0, abs=1e-12)


def test_soft_dice_rejects_broadcasting():
    with pytest.raises(ValueError, match="shapes differ"):
        soft_dice_loss(torch.rand(2, 1, 4), torch.rand(1, 1, 4))


def test_reconstruction_mse():
    # ((0.5 - 0)^2 + (1 - 0.5)^2 + (0 - 0)^2 + (0.25 - 1)^2) / 4 = (0.25 + 0.25 + 0 + 0.5625) / 4
    rec, image = t([0.5, 1.0], [0.0, 0.25]), t([0.0, 0.5], [0.0, 1.0])
    assert reconstruction_mse(rec, image).item() == pytest.approx(1.0625 / 4, abs=1e-12)


def test_attention_targets_split_the_image():
    image, seg = t([1.0, 0.5]), t([0.75, 0.0])
    background, foreground = attention_targets(seg, image)
    assert background.flatten().tolist() == [0.25, 0.5]
    assert foreground.flatten().tolist() == [0.75, 0.0]


def test_attention_loss_weights_each_sample_by_its_own_volume_fractions():
    image = t([1.0, 0.5], [1.0, 1.0])
    seg = t([0.75, 0.0], [0.0, 0.0])
    rec = torch.tensor(
        [[[0.0, 0.5], [0.25, 0.5]], [[1.0, 1.0], [1.0, 1.0]]], dtype=torch.float64
    )  # (N=2, C=2: background, foreground, V=2)
    # sample 1: (1-S)X = [0.25, 0.5], R_b - it = [-0.25, 0] -> MSE 0.03125, mean(1-S) = 0.625
    #           S X = [0.75, 0],      R_f - it = [-0.5, 0.5] -> MSE 0.25,    mean(S) = 0.375
    first = 0.625 * 0.03125 + 0.375 * 0.25
    # sample 2: S = 0: background target = X = R_b -> 0; foreground weight mean(S) = 0 -> 0
    second = 0.0
    assert attention_reconstruction_loss(rec, image, seg).item() == pytest.approx((first + second) / 2, abs=1e-12)


def test_attention_loss_needs_two_channels():
    with pytest.raises(ValueError, match="2 channels"):
        attention_reconstruction_loss(t([0.5, 0.5]), t([1.0, 1.0]), t([0.5, 0.5]))


def _attention_step(attention_grad):
    """One attention loss backward on a tiny 2D model; returns (model, S, encoder grads)."""
    torch.manual_seed(0)
    model = MASSLNet(2, channels=(4, 8, 16), rec_channels=2)
    x = torch.rand(2, 1, 8, 8)
    feats = model.encode(x)
    seg = segmentation_for_attention(model, feats, attention_grad)
    attention_reconstruction_loss(model.reconstruct(feats), x, seg).backward()
    grads = [p.grad.clone() for p in model.encoder.parameters()]
    return model, seg, grads


def _reference_encoder_grads():
    """Encoder gradients when S is a constant: only the reconstruction path contributes."""
    torch.manual_seed(0)
    model = MASSLNet(2, channels=(4, 8, 16), rec_channels=2)
    x = torch.rand(2, 1, 8, 8)
    feats = model.encode(x)
    seg = torch.sigmoid(model.segment(feats)).detach()
    attention_reconstruction_loss(model.reconstruct(feats), x, seg).backward()
    return [p.grad.clone() for p in model.encoder.parameters()]


def test_detach_blocks_all_gradient_through_segmentation():
    model, seg, grads = _attention_step("detach")
    assert not seg.requires_grad
    assert all(p.grad is None for p in model.seg_decoder.parameters())
    for got, want in zip(grads, _reference_encoder_grads()):
        assert torch.equal(got, want)


def test_encoder_mode_reaches_encoder_but_not_segmentation_decoder():
    model, seg, grads = _attention_step("encoder")
    _, detached_seg, _ = _attention_step("detach")
    assert seg.requires_grad
    assert torch.allclose(seg, detached_seg)  # same S, only the gradient differs
    assert all(p.grad is None or not p.grad.any() for p in model.seg_decoder.parameters())
    differs = [not torch.allclose(got, want) for got, want in zip(grads, _reference_encoder_grads())]
    assert any(differs)  # the extra gradient through S reached the encoder


def test_unknown_attention_grad():
    model = MASSLNet(2, channels=(4, 8), rec_channels=2)
    with pytest.raises(ValueError, match="attention_grad"):
        segmentation_for_attention(model, model.encode(torch.rand(1, 1, 4, 4)), "both")
