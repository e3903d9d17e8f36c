"""massl.model.cpu_conv: the oneDNN 3x3x3 convolution equals PyTorch's, forward and backward."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from massl.config import ModelConfig
from massl.model.cpu_conv import Conv3d, applies, conv3d, set_cpu_conv3d
from massl.methods import METHODS
from massl.model.network import build_model


def _grads(fn, *tensors):
    for t in tensors:
        t.grad = None
    out = fn()
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
    return out.detach(), [None if t.grad is None else t.grad.clone() for t in tensors]


@pytest.mark.parametrize("batch, depth", [(1, 8), (2, 6), (1, 5), (3, 2)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv3d_matches_torch_forward_and_backward(batch, depth, with_bias):
    generator = torch.Generator().manual_seed(batch * 10 + depth)
    x = torch.randn(batch, 3, depth, 6, 5, generator=generator, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, 3, generator=generator, requires_grad=True)
    bias = torch.randn(4, generator=generator, requires_grad=True) if with_bias else None
    params = [x, weight] + ([bias] if with_bias else [])
    want, want_grads = _grads(lambda: F.conv3d(x, weight, bias, padding=1), *params)
    got, got_grads = _grads(lambda: conv3d(x, weight, bias), *params)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-4)


def test_conv3d_skips_the_input_gradient_of_a_leaf_input():
    x = torch.randn(1, 1, 4, 4, 4)
    weight = torch.randn(2, 1, 3, 3, 3, requires_grad=True)
    conv3d(x, weight, None).sum().backward()
    assert x.grad is None and weight.grad is not None


def test_applies_only_to_cpu_fp32_3x3x3_stride_1():
    x = torch.randn(1, 2, 4, 4, 4)
    assert applies(x, Conv3d(2, 2, 3, padding=1))
    assert not applies(x, Conv3d(2, 2, 3, padding=1, stride=2))
    assert not applies(x, Conv3d(2, 2, 1))
    assert not applies(x.double(), Conv3d(2, 2, 3, padding=1).double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not applies(x, Conv3d(2, 2, 3, padding=1))


def test_model_step_and_flop_count_equal_with_and_without_onednn():
    """One forward + backward of the 3D MASSL network: same outputs, gradients and FLOP count."""
    cfg = ModelConfig(channels=[4, 8, 16])
    x = torch.rand(1, 1, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    results = []
    for mode in ("torch", "onednn"):
        torch.manual_seed(0)
        model = set_cpu_conv3d(build_model(cfg, METHODS["massl_l07"]), mode)
        counter = FlopCounterMode(display=False)
        with counter:
            seg, rec = model(x)
            (seg.square().mean() + rec.mean()).backward()
        results.append((seg.detach(), rec.detach(), [p.grad for p in model.parameters()], counter.get_total_flops()))
    (seg0, rec0, grads0, flops0), (seg1, rec1, grads1, flops1) = results
    torch.testing.assert_close(seg1, seg0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rec1, rec0, rtol=1e-4, atol=1e-5)
    for g1, g0 in zip(grads1, grads0):
        torch.testing.assert_close(g1, g0, rtol=1e-3, atol=1e-5)
    assert flops1 == flops0 > 0


def test_set_cpu_conv3d_switches_every_3d_convolution():
    model = build_model(ModelConfig(channels=[4, 8]), METHODS["cnn"])
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert layers and all(type(m) is torch.nn.Conv3d for m in layers)  # the network is plain torch.nn
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert set_cpu_conv3d(model, "onednn") is model
    assert all(type(m) is Conv3d for m in layers)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # same parameters
    set_cpu_conv3d(model, "torch")
    assert all(type(m) is torch.nn.Conv3d for m in layers)
    with pytest.raises(ValueError, match="cpu_conv3d"):
        set_cpu_conv3d(model, "mkl")
