"""Typed configuration of the library. Defaults are the paper scale (SPEC sections 1-4).

The workflow's YAML has `model:` and `training:` sections that map one-to-one onto these
dataclasses; unknown keys and wrong values are rejected with a message naming them.
"""

from __future__ import annotations

import json
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from massl.errors import ConfigError


@dataclass
class ModelConfig:
    spatial_dims: int = 3  # 3 = the paper's network; 2 = the same network with 2D ops (fast demo)
    in_channels: int = 1
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    downsample: str = "avgpool"  # SPEC option: avgpool (paper text) | strided (released code)

    def validate(self) -> None:
        _choice("model.spatial_dims", self.spatial_dims, (2, 3))
        _choice("model.downsample", self.downsample, ("avgpool", "strided"))
        if len(self.channels) < 2 or any(int(c) <= 0 for c in self.channels):
            raise ConfigError(f"model.channels must be >= 2 positive integers, got {self.channels}")


STOPPING = ("budget", "plateau")  # massl.training.stopping
CASE_SAMPLING = ("without_replacement", "with_replacement")  # massl.data.sampling


@dataclass
class TrainConfig:
    # Patch (z, y, x) in 3D or (y, x) in 2D; 2D patches are crops of single slices.
    patch_size: list[int] = field(default_factory=lambda: [32, 128, 128])
    batch_size: int = 1  # labeled samples per step; joint/alternating draw as many unlabeled
    lr_joint: float = 1e-3  # joint (Eq. 2); not given by the paper
    lr_segmentation: float = 1e-2  # supervised, fine-tuning and the alternating seg step
    lr_reconstruction: float = 1e-3  # autoencoder and the alternating rec step
    lr_step_iterations: int = 500  # StepLR period
    lr_gamma: float = 0.5
    # Epoch budget by number of labeled cases, as released: first row whose bound >= n_labeled.
    epochs_by_labeled: list[list[int]] = field(default_factory=lambda: [[20, 252], [50, 152], [120, 52]])
    max_iterations: int | None = None  # optional hard cap on total iterations
    validate_every_epochs: int = 20
    validate_every_iterations: int | None = None  # overrides validate_every_epochs when set
    max_validation_cases: int | None = None  # None = all validation cases
    # Stopping (massl.training.stopping): the budget above is always the hard cap.
    stopping: str = "budget"  # budget (paper: fixed budget) | plateau (stop when validation stops improving)
    patience_validations: int = 5  # plateau: consecutive validations without improvement before stopping
    min_delta: float = 0.0  # improvement threshold: Dice points, or a fraction of the best MSE (autoencoder)
    min_iterations: int = 0  # plateau: never stop before this iteration
    case_sampling: str = "without_replacement"  # paper: every case once per pass | with_replacement
    attention_grad: str = "detach"  # SPEC option: detach (paper) | encoder (released code)
    foreground_fraction: float = 0.0  # labeled patches forced to hold target (0 = paper's uniform crop)
    seg_loss: str = "dice"  # dice (paper) | dice_bce (+ binary cross-entropy: no all-background plateau)
    dice_over: str = "sample"  # sample (paper: per image) | batch (one Dice over the 2D batch)
    augment: bool = True  # rotation, scaling, left-right flip (paper)
    rotate_degrees: float = 10.0
    scale_range: list[float] = field(default_factory=lambda: [0.9, 1.1])
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | off | bf16
    cpu_conv3d: str = "onednn"  # onednn (massl.cpu_conv) | torch (PyTorch's own kernel choice)
    checkpoint_every_iterations: int = 200
    seed: int = 0  # base seed; a run's seed is derived from it and the repetition
    threshold: float = 0.5
    inference_overlap: float = 0.5
    inference_batch: int = 8  # sliding-window patches per forward pass

    def validate(self) -> None:
        _choice("training.attention_grad", self.attention_grad, ("detach", "encoder"))
        _choice("training.amp", self.amp, ("auto", "off", "bf16"))
        _choice("training.cpu_conv3d", self.cpu_conv3d, ("onednn", "torch"))
        _choice("training.dice_over", self.dice_over, ("sample", "batch"))
        _choice("training.seg_loss", self.seg_loss, ("dice", "dice_bce"))
        _choice("training.stopping", self.stopping, STOPPING)
        _choice("training.case_sampling", self.case_sampling, CASE_SAMPLING)
        for name in ("batch_size", "lr_step_iterations", "validate_every_epochs", "checkpoint_every_iterations",
                     "patience_validations"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"training.{name} must be > 0, got {getattr(self, name)}")
        for name in ("lr_joint", "lr_segmentation", "lr_reconstruction", "lr_gamma"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"training.{name} must be > 0, got {getattr(self, name)}")
        if self.validate_every_iterations is not None and self.validate_every_iterations <= 0:
            raise ConfigError(f"training.validate_every_iterations must be > 0 or null, got {self.validate_every_iterations}")
        if self.max_iterations is not None and self.max_iterations <= 0:
            raise ConfigError(f"training.max_iterations must be > 0 or null, got {self.max_iterations}")
        for row in self.epochs_by_labeled:
            if len(row) != 2 or row[0] <= 0 or row[1] <= 0:
                raise ConfigError(f"training.epochs_by_labeled rows are [max_labeled, epochs] > 0, got {row}")
        if not 0 <= self.min_delta < 1:  # 1 Dice point or 100 % of the MSE: nothing could ever improve
            raise ConfigError(f"training.min_delta must be in [0, 1), got {self.min_delta}")
        if self.min_iterations < 0:
            raise ConfigError(f"training.min_iterations must be >= 0, got {self.min_iterations}")
        if not 0 <= self.foreground_fraction <= 1:
            raise ConfigError(f"training.foreground_fraction must be in [0, 1], got {self.foreground_fraction}")
        if not 0 <= self.inference_overlap < 1:
            raise ConfigError(f"training.inference_overlap must be in [0, 1), got {self.inference_overlap}")

    def epochs_for(self, n_labeled: int) -> int:
        for bound, epochs in sorted(self.epochs_by_labeled):
            if n_labeled <= bound:
                return int(epochs)
        return int(sorted(self.epochs_by_labeled)[-1][1])


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} = {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _from_dict(cls, data: dict | None, section: str):
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in '{section}': {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    hints = get_type_hints(cls)
    for name, value in data.items():
        if not _has_type(value, hints[name]):
            raise ConfigError(f"{section}.{name} = {value!r} has the wrong type; expected {_type_name(hints[name])}")
    obj = cls(**data)
    obj.validate()
    return obj


def _has_type(value: Any, hint) -> bool:
    """isinstance for the annotations used here (int, float, bool, str, list[...], X | None).
    bool is not an int here (YAML `yes` for a batch size), but an int is a float."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_has_type(value, option) for option in get_args(hint))
    if origin is list:
        return isinstance(value, list) and all(_has_type(v, get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if hint is float else hint)


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("None", "null")


def model_config(data: dict | None) -> ModelConfig:
    return _from_dict(ModelConfig, data, "model")


def train_config(data: dict | None) -> TrainConfig:
    cfg = _from_dict(TrainConfig, data, "training")
    return cfg


def load_config(path: str | Path) -> dict:
    """Read a resolved workflow config (JSON or YAML) as a plain dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    if path.suffix == ".json":
        return json.loads(text)
    import yaml

    return yaml.safe_load(text) or {}


def as_dict(obj) -> dict:
    return asdict(obj)
