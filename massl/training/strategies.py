"""What one training iteration does for each method (SPEC sections 2-3).

The loop (`massl.training.loop`) draws the batches and calls `strategy.step(batch)`; a strategy
owns its optimizers and StepLR schedulers and decides which losses update which parameters:

    supervised         Dice on labeled, Adam(lr_segmentation) over encoder + seg decoder (CNN,
                       and Pretrain(CNN) after loading the autoencoder's encoder)
    pretrain_decoder   the same with the encoder frozen: only the seg decoder learns
    autoencoder        MSE on unlabeled images, Adam(lr_reconstruction) over encoder + rec decoder
    joint              Eq. 2, one Adam(lr_joint) over everything, labeled + unlabeled batch
    alternating        Eq. 3, a labeled Dice step with Adam #1, then an unlabeled
                       reconstruction step with Adam #2
    mean_teacher,      baselines beyond the paper (massl.training.baselines)
    cross_pseudo

The reconstruction mode of the method picks plain MSE or the attention loss of Eq. 1. The loop
validates, keeps and tests `strategy.eval_model` (the trained network itself, except for Mean
Teacher's teacher); whatever else a strategy trains is in its `state_dict()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.optim import Adam
from torch.optim.lr_scheduler import StepLR

from massl.config import TrainConfig
from massl.device import autocast
from massl.model.losses import (
    attention_reconstruction_loss,
    binary_cross_entropy,
    reconstruction_mse,
    segmentation_for_attention,
    soft_dice_loss,
)
from massl.methods import Method

NAN = float("nan")


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; raised before the optimizer step, so the weights stay finite."""

    def __init__(self, name: str, value: float):
        super().__init__(f"{name} loss is {value}")
        self.name, self.value = name, value


@dataclass
class Batch:
    """One iteration's data on the training device; the fields a strategy does not use are None."""

    image: Tensor | None = None  # labeled images (N, 1, *patch)
    target: Tensor | None = None  # 1 = foreground, float
    mask: Tensor | None = None  # 0 = ignored voxel (WMH label 2), float
    unlabeled: Tensor | None = None  # unlabeled images (N, 1, *patch); their labels are never read


class Strategy:
    uses_labeled = True
    uses_unlabeled = False

    def __init__(self, model: nn.Module, method: Method, cfg: TrainConfig, amp_dtype: torch.dtype | None = None,
                 *, planned_iterations: int | None = None, new_network: Callable[[], nn.Module] | None = None):
        """`planned_iterations` (the run's budget) and `new_network` (a fresh network of the
        run's architecture, on its device) are for the strategies that need them."""
        self.model, self.method, self.cfg = model, method, cfg
        self.amp_dtype = amp_dtype
        self.planned_iterations, self.new_network = planned_iterations, new_network
        self.setup()
        self.attention = method.reconstruction == "attention"
        # fused: one kernel per step instead of a loop over parameters (6x faster on CPU here,
        # same update up to float rounding)
        self.optimizers = {name: Adam(params, lr=lr, fused=True) for name, (params, lr) in self.parameter_groups().items()}
        self.schedulers = {
            name: StepLR(opt, step_size=cfg.lr_step_iterations, gamma=cfg.lr_gamma)
            for name, opt in self.optimizers.items()
        }

    def setup(self) -> None:
        """Networks and state a strategy adds before its optimizers are built."""

    @property
    def eval_model(self) -> nn.Module:
        """The network that is validated, kept as the best/final weights and tested."""
        return self.model

    def networks(self) -> tuple[nn.Module, ...]:
        """The networks whose gradients an update clears."""
        return (self.model,)

    def extra_state(self) -> dict:
        """What a resume needs beyond `eval_model` and the optimizers (other networks, counters)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def parameter_groups(self) -> dict[str, tuple[list[nn.Parameter], float]]:
        """Optimizer name -> (parameters, initial learning rate)."""
        raise NotImplementedError

    def step(self, batch: Batch) -> dict[str, float]:
        """One iteration; returns the losses (`loss`, `loss_seg`, `loss_rec`, NaN where unused)."""
        raise NotImplementedError

    def learning_rates(self) -> dict[str, float]:
        """Current rates for the log: lr_seg / lr_rec (the joint rate fills both)."""
        rates = {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}
        joint = rates.get("joint", float("nan"))
        return {"lr_seg": rates.get("seg", joint), "lr_rec": rates.get("rec", joint)}

    def state_dict(self) -> dict:
        return {
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: sched.state_dict() for name, sched in self.schedulers.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        self.load_extra_state(state.get("extra", {}))

    # Shared pieces -----------------------------------------------------------------------------

    def _autocast(self):
        return autocast(next(self.model.parameters()).device, self.amp_dtype)

    def _params(self, *modules: nn.Module) -> list[nn.Parameter]:
        return [p for module in modules for p in module.parameters()]

    def _update(self, optimizer: str, name: str, loss: Tensor) -> float:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(name, value)
        for network in self.networks():
            network.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers[optimizer].step()
        self.schedulers[optimizer].step()
        return value

    def _segmentation_loss(self, feats: list[Tensor], batch: Batch) -> tuple[Tensor, Tensor]:
        prob = torch.sigmoid(self.model.segment(feats).float())
        return self._supervised_loss(prob, batch), prob

    def _supervised_loss(self, prob: Tensor, batch: Batch) -> Tensor:
        """`training.seg_loss` of the labeled batch's foreground probabilities."""
        loss = soft_dice_loss(prob, batch.target, mask=batch.mask, over=self.cfg.dice_over)
        if self.cfg.seg_loss == "dice_bce":
            loss = loss + binary_cross_entropy(prob, batch.target, mask=batch.mask)
        return loss

    def _attention_map(self, feats: list[Tensor]) -> Tensor:
        """S for Eq. 1, with the gradient the `attention_grad` option allows."""
        return segmentation_for_attention(self.model, feats, self.cfg.attention_grad).float()

    def _reconstruction_loss(self, feats: list[Tensor], image: Tensor, seg_prob: Tensor | None = None) -> Tensor:
        rec = self.model.reconstruct(feats).float()
        if not self.attention:
            return reconstruction_mse(rec, image)
        if seg_prob is None:
            seg_prob = self._attention_map(feats)
        return attention_reconstruction_loss(rec, image, seg_prob)


class Supervised(Strategy):
    def parameter_groups(self):
        return {"seg": (self._params(self.model.encoder, self.model.seg_decoder), self.cfg.lr_segmentation)}

    def step(self, batch):
        with self._autocast():
            loss, _ = self._segmentation_loss(self.model.encode(batch.image), batch)
        value = self._update("seg", "segmentation", loss)
        return {"loss": value, "loss_seg": value, "loss_rec": NAN}


class FrozenEncoder(Supervised):
    """Pretrain(Dec): the encoder keeps the autoencoder's weights; only the seg decoder learns."""

    def __init__(self, model, method, cfg, amp_dtype=None, **options):
        model.encoder.requires_grad_(False)  # instance norms keep no statistics: no eval() needed
        super().__init__(model, method, cfg, amp_dtype, **options)

    def parameter_groups(self):
        return {"seg": (self._params(self.model.seg_decoder), self.cfg.lr_segmentation)}

    def step(self, batch):
        with self._autocast():
            with torch.no_grad():
                feats = self.model.encode(batch.image)
            loss, _ = self._segmentation_loss(feats, batch)
        value = self._update("seg", "segmentation", loss)
        return {"loss": value, "loss_seg": value, "loss_rec": NAN}


class Autoencoder(Strategy):
    uses_labeled = False
    uses_unlabeled = True

    def parameter_groups(self):
        return {"rec": (self._params(self.model.encoder, self.model.rec_decoder), self.cfg.lr_reconstruction)}

    def step(self, batch):
        with self._autocast():
            rec = self.model.reconstruct(self.model.encode(batch.unlabeled)).float()
            loss = reconstruction_mse(rec, batch.unlabeled)
        value = self._update("rec", "reconstruction", loss)
        return {"loss": value, "loss_seg": NAN, "loss_rec": value}


class Joint(Strategy):
    """Eq. 2: `L = lam * L_seg(labeled) + (1 - lam) * L_rec(labeled + unlabeled)`.

    Labeled and unlabeled images go through the encoder as one batch (instance norm is per
    sample, so this equals two passes); the features feed the segmentation, S and the
    reconstruction, so every image is encoded once per step.
    """

    uses_unlabeled = True

    def parameter_groups(self):
        return {"joint": (list(self.model.parameters()), self.cfg.lr_joint)}

    def step(self, batch):
        n_labeled = batch.image.shape[0]
        images = torch.cat([batch.image, batch.unlabeled])
        with self._autocast():
            feats = self.model.encode(images)
            labeled_feats = [f[:n_labeled] for f in feats]
            loss_seg, prob = self._segmentation_loss(labeled_feats, batch)
            seg_prob = None
            if self.attention and self.cfg.attention_grad == "detach":
                # S of the labeled images is their segmentation above, without gradient.
                seg_prob = torch.cat([prob.detach(), self._attention_map([f[n_labeled:] for f in feats])])
            elif self.attention:  # S carries gradient to the encoder only: its own decoder pass
                seg_prob = self._attention_map(feats)
            loss_rec = self._reconstruction_loss(feats, images, seg_prob)
            lam = self.method.lam
            loss = lam * loss_seg + (1 - lam) * loss_rec
        value = self._update("joint", "joint", loss)
        return {"loss": value, "loss_seg": float(loss_seg.detach()), "loss_rec": float(loss_rec.detach())}


class Alternating(Strategy):
    """Eq. 3: a Dice step on a labeled batch (Adam #1: encoder + seg decoder, lr_segmentation),
    then a reconstruction step on an unlabeled batch (Adam #2: encoder + rec decoder,
    lr_reconstruction). The attention targets of the unlabeled step come from the unlabeled
    images' own forward pass (the released code used the labeled batch's, SPEC section 8)."""

    uses_unlabeled = True

    def parameter_groups(self):
        m = self.model
        return {
            "seg": (self._params(m.encoder, m.seg_decoder), self.cfg.lr_segmentation),
            "rec": (self._params(m.encoder, m.rec_decoder), self.cfg.lr_reconstruction),
        }

    def step(self, batch):
        with self._autocast():
            loss_seg, _ = self._segmentation_loss(self.model.encode(batch.image), batch)
        seg = self._update("seg", "segmentation", loss_seg)
        with self._autocast():
            loss_rec = self._reconstruction_loss(self.model.encode(batch.unlabeled), batch.unlabeled)
        rec = self._update("rec", "reconstruction", loss_rec)
        return {"loss": seg + rec, "loss_seg": seg, "loss_rec": rec}


STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    "supervised": Supervised,
    "pretrain_finetune": Supervised,
    "pretrain_decoder": FrozenEncoder,
    "autoencoder": Autoencoder,
    "joint": Joint,
    "alternating": Alternating,
}


def strategy_class(name: str) -> type[Strategy]:
    # The baselines build on the classes above, so they register themselves from their module.
    import massl.training.baselines  # noqa: F401

    return STRATEGY_CLASSES[name]


def make_strategy(model: nn.Module, method: Method, cfg: TrainConfig, amp_dtype: torch.dtype | None = None,
                  **options) -> Strategy:
    """The method's strategy; `options` are Strategy's keyword arguments."""
    return strategy_class(method.strategy)(model, method, cfg, amp_dtype, **options)
