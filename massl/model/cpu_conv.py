"""3x3x3 convolutions on the CPU through oneDNN whatever the batch size (issue 6).

PyTorch picks a CPU convolution kernel by a heuristic made for 2D: a batch-1 fp32 input with
N*C*D*H <= 20480 goes to the im2col path (`slow_conv3d`), 3-7x slower than oneDNN for the
paper's deeper levels, forward and backward. Separately, oneDNN's weight-gradient kernel is
slow on the thin full-resolution layers. `conv3d` here computes the same convolution:

    forward        oneDNN (`aten.mkldnn_convolution`)
    input grad     the forward kernel on the output gradient with the flipped, transposed
                   weights (stride 1, padding 1: the adjoint of a 3x3x3 correlation)
    weight grad    the depth axis cut into two halves with a one-voxel halo, stacked on the
                   batch axis: a batch >= 2 backward, which oneDNN runs on cache-sized slabs

Same sums in another order, so results differ by float rounding only. Measured on a 2-core
AMD EPYC (Zen 3), torch 2.13: the convolutions of one paper-scale forward + backward 1.7x
faster at batch 1, 1.5x at batch 2 (README, "What makes it fast").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from massl.config import CHOICES

aten = torch.ops.aten
_ONES, _ZEROS = [1, 1, 1], [0, 0, 0]


def applies(x: Tensor, conv: nn.Conv3d) -> bool:
    """True for the convolutions `conv3d` covers: fp32 on the CPU, no autocast, 3x3x3, stride 1,
    zero padding 1, no dilation or groups, oneDNN built in and enabled."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and x.dim() == 5
        and conv.kernel_size == (3, 3, 3)
        and conv.stride == (1, 1, 1)
        and conv.padding == (1, 1, 1)
        and conv.dilation == (1, 1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


class _OneDNNConv3d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        return aten.mkldnn_convolution(x.contiguous(), weight.contiguous(), bias, _ONES, _ONES, _ONES, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = None
        if ctx.needs_input_grad[0]:
            adjoint = weight.flip(2, 3, 4).transpose(0, 1).contiguous()
            grad_x = aten.mkldnn_convolution(grad, adjoint, None, _ONES, _ONES, _ONES, 1)
        grad_w = grad_b = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            mask = [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]]  # False for a None bias
            grad_w, grad_b = _weight_grad(grad, x, weight, mask)
        return grad_x, grad_w, grad_b


def _weight_grad(grad: Tensor, x: Tensor, weight: Tensor, mask: list[bool]) -> tuple[Tensor | None, Tensor | None]:
    """Weight and bias gradients from the two depth halves of `x` (each with its one-slice
    halo, zero outside the volume) stacked on the batch axis; an odd depth takes one pass."""
    bias_sizes = [weight.shape[0]]
    depth = x.shape[2]
    if depth % 2:
        _, grad_w, grad_b = aten.convolution_backward(grad, x.contiguous(), weight, bias_sizes, _ONES, _ONES, _ONES,
                                                      False, _ZEROS, 1, mask)
        return grad_w, grad_b
    half = depth // 2
    n, c, _, h, w = x.shape
    slabs = x.new_zeros(2 * n, c, half + 2, h + 2, w + 2)
    slabs[:n, :, 1:, 1:-1, 1:-1] = x[:, :, : half + 1]
    slabs[n:, :, :-1, 1:-1, 1:-1] = x[:, :, half - 1 :]
    grads = torch.cat([grad[:, :, :half], grad[:, :, half:]])
    _, grad_w, grad_b = aten.convolution_backward(grads, slabs, weight, bias_sizes, _ONES, _ZEROS, _ONES,
                                                  False, _ZEROS, 1, mask)
    return grad_w, grad_b


def conv3d(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """`F.conv3d(x, weight, bias, padding=1)` through oneDNN; only where `applies` holds."""
    return _OneDNNConv3d.apply(x, weight, bias)


class Conv3d(nn.Conv3d):
    """`nn.Conv3d` (same parameters and state dict) that takes `conv3d` where it applies.
    `set_cpu_conv3d` turns a model's `nn.Conv3d` layers into these and back."""

    def forward(self, x: Tensor) -> Tensor:
        if applies(x, self):
            return conv3d(x, self.weight, self.bias)
        return super().forward(x)


def set_cpu_conv3d(model: nn.Module, mode: str) -> nn.Module:
    """Apply `training.cpu_conv3d` to every 3D convolution of `model`, in place: "onednn" makes
    each `nn.Conv3d` a `Conv3d` (`conv3d` where it applies), "torch" makes them plain
    `nn.Conv3d` again (PyTorch's own kernel choice). Parameters, buffers and the state dict
    stay as they are: only the layers' class changes."""
    allowed = CHOICES["training"]["cpu_conv3d"]
    if mode not in allowed:
        raise ValueError(f"cpu_conv3d must be one of {', '.join(allowed)}, got {mode!r}")
    cls = Conv3d if mode == "onednn" else nn.Conv3d
    for module in model.modules():
        if type(module) in (nn.Conv3d, Conv3d):
            module.__class__ = cls
    return model


@register_flop_formula(aten.mkldnn_convolution)
def _mkldnn_convolution_flop(x_shape, w_shape, _bias, *args, out_shape=None, **kwargs) -> int:
    """FlopCounterMode knows `aten.convolution` but not the oneDNN op `conv3d` calls directly."""
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)
