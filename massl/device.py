"""Where and in which precision torch runs, for training and evaluation alike: the device
(`pick_device`, `device_name`), the mixed-precision dtype of `training.amp` (`autocast_dtype`)
and its context (`autocast`), and the number of CPU threads (`set_threads`)."""

from __future__ import annotations

import contextlib

import torch

from massl.config import CHOICES
from massl.errors import ConfigError


def pick_device(device: str = "auto") -> torch.device:
    """`auto`: the first CUDA GPU if there is one, else the CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not valid; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return dev


def device_name(device: torch.device) -> str:
    """The GPU's name, or "cpu"."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def autocast_dtype(amp: str, device) -> torch.dtype | None:
    """Mixed-precision dtype for `torch.autocast`: `auto` = bf16 on CUDA and full precision on
    the CPU (where bf16 is rarely faster), `bf16` = always bf16, `off` = full precision."""
    if amp == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "off":
        return None
    raise ConfigError(f"training.amp = {amp!r} is not allowed; allowed: {', '.join(CHOICES['training']['amp'])}")


def autocast(device, amp_dtype: torch.dtype | None):
    """`torch.autocast` on `device`'s type with `amp_dtype`; full precision (no context) for None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype)


def set_threads(threads: int | None) -> None:
    """`--threads`: torch's CPU threads (None = torch's choice)."""
    if threads is not None:
        if threads <= 0:
            raise ConfigError(f"--threads must be > 0, got {threads}")
        torch.set_num_threads(threads)
