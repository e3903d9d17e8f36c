"""The two training steps `massl bench` compares, from identical weights and batches: the
project's (`massl.training.strategies`, as `massl train` runs them) and a reference written the
straightforward way; and the measurement of one step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Adam
from torch.optim.lr_scheduler import StepLR

from massl.bench.scales import STRATEGY_METHODS, Scale
from massl.bench.timing import time_calls
from massl.config import ModelConfig, TrainConfig
from massl.model.cpu_conv import set_cpu_conv3d
from massl.device import autocast_dtype
from massl.model.losses import attention_reconstruction_loss, reconstruction_mse, soft_dice_loss
from massl.methods import Method, get_method
from massl.model.network import build_model
from massl.training.strategies import Batch, make_strategy


def amp_name(dtype: torch.dtype | None) -> str:
    """The report's word for an autocast precision: "off", "bfloat16", ..."""
    return "off" if dtype is None else str(dtype).split(".")[-1]


def synthetic_batch(scale: Scale, device: torch.device, seed: int = 0) -> Batch:
    """Random images, a sparse random target, no ignored voxels: the step costs the same
    whatever the data."""
    generator = torch.Generator().manual_seed(seed)
    shape = (scale.batch_size, 1, *scale.patch)
    image, unlabeled = torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)
    target = (torch.rand(shape, generator=generator) < 0.1).float()
    return Batch(image=image.to(device), target=target.to(device), mask=torch.ones_like(target).to(device),
                 unlabeled=unlabeled.to(device))


class ReferenceStep:
    """The training step written the straightforward way, with the same losses and updates as
    the project's strategies: every forward pass is `model(x)` (both decoders, whatever is
    used), labeled and unlabeled images pass separately, an unlabeled batch is segmented by a
    no-grad pass before its training pass, eager fp32."""

    def __init__(self, model: torch.nn.Module, method: Method, cfg: TrainConfig):
        self.model, self.method, self.cfg = model, method, cfg
        groups = make_strategy(model, method, cfg).parameter_groups()  # which parameters each Adam owns
        self.optimizers = {name: Adam(params, lr=lr) for name, (params, lr) in groups.items()}
        self.schedulers = {name: StepLR(opt, cfg.lr_step_iterations, cfg.lr_gamma)
                           for name, opt in self.optimizers.items()}

    def __call__(self, batch: Batch) -> float:
        strategy = self.method.strategy
        if strategy == "autoencoder":
            return self._update("rec", self._rec_loss(batch.unlabeled))
        if strategy == "alternating":
            return self._update("seg", self._seg_loss(batch)) + self._update("rec", self._rec_loss(batch.unlabeled))
        if strategy == "joint":
            seg, rec = self.model(batch.image)
            prob = torch.sigmoid(seg)
            seg_loss = soft_dice_loss(prob, batch.target, mask=batch.mask)
            rec_loss = (self._rec_loss(batch.image, rec, prob.detach()) + self._rec_loss(batch.unlabeled)) / 2
            return self._update("joint", self.method.lam * seg_loss + (1 - self.method.lam) * rec_loss)
        return self._update("seg", self._seg_loss(batch))

    def _seg_loss(self, batch: Batch) -> torch.Tensor:
        seg, _ = self.model(batch.image)
        return soft_dice_loss(torch.sigmoid(seg), batch.target, mask=batch.mask)

    def _rec_loss(self, image: torch.Tensor, rec: torch.Tensor | None = None, seg_prob: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """Reconstruction loss of `image`; `rec` and the attention map `seg_prob` are computed
        here when not given. Equal batch sizes make the mean of two such losses the loss of
        the joined batch."""
        attention = self.method.reconstruction == "attention"
        if attention and seg_prob is None:
            with torch.no_grad():
                seg_prob = torch.sigmoid(self.model(image)[0])
        rec = self.model(image)[1] if rec is None else rec
        return attention_reconstruction_loss(rec, image, seg_prob) if attention else reconstruction_mse(rec, image)

    def _update(self, name: str, loss: torch.Tensor) -> float:
        self.optimizers[name].zero_grad()
        loss.backward()
        self.optimizers[name].step()
        self.schedulers[name].step()
        return float(loss.detach())


def make_step(impl: str, scale: Scale, method: Method, device: torch.device, seed: int = 0
              ) -> tuple[Callable[[], float], dict]:
    """A no-argument training step of `impl` ("project" or "reference") on a fixed synthetic
    batch, from weights seeded by `seed`; also the step's description (precision)."""
    cfg = TrainConfig(patch_size=list(scale.patch), batch_size=scale.batch_size)
    torch.manual_seed(seed)
    model = build_model(ModelConfig(spatial_dims=scale.spatial_dims, channels=list(scale.channels)), method)
    model.to(device).train()
    batch = synthetic_batch(scale, device, seed)
    if impl == "reference":
        set_cpu_conv3d(model, "torch")
        step = ReferenceStep(model, method, cfg)
        return lambda: step(batch), {"amp": "off"}
    if impl != "project":
        raise ValueError(f"impl must be 'project' or 'reference', got {impl!r}")
    amp_dtype = autocast_dtype(cfg.amp, device)
    set_cpu_conv3d(model, cfg.cpu_conv3d)
    strategy = make_strategy(model, method, cfg, amp_dtype)
    return lambda: strategy.step(batch)["loss"], {"amp": amp_name(amp_dtype)}


def measure_step(impl: str, scale: Scale, strategy: str, device: torch.device, warmup: int, repeats: int) -> dict:
    fn, info = make_step(impl, scale, get_method(STRATEGY_METHODS[strategy]), device)
    timing = time_calls(fn, warmup, repeats, device)
    return {"strategy": strategy, "scale": scale.name, "method": STRATEGY_METHODS[strategy],
            "seconds_per_iteration": timing["seconds"], "gflop_per_iteration": timing["gflop"],
            "peak_memory_mb": timing["peak_memory_mb"], "repeats": repeats, **info}
