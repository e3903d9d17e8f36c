"""Where and in which precision torch runs, for training and evaluation alike: the device
(`pick_device`, `device_name`), the mixed-precision dtype of `training.amp` (`autocast_dtype`)
and its context (`autocast`), the number of CPU threads (`set_threads`) and the instruction set
of the CPU kernels (`pin_cpu_isa`)."""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from massl.config import CHOICES
from massl.errors import ConfigError

log = logging.getLogger(__name__)

# `training.cpu_isa`: the environment variables that cap the instruction set of oneDNN's kernels
# (the convolutions) and of ATen's vectorised ones, by choice. oneDNN reads its variable when it
# first creates a kernel and ATen its own at its first dispatch, so setting them at the start of
# a command, before any tensor operation, is enough. `native` leaves both to the CPU (and to the
# environment).
CPU_ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


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


def pin_cpu_isa(choice: str) -> dict:
    """Cap the CPU kernels at `choice`'s instruction set (`training.cpu_isa`) in this process and
    the processes it starts, and return what provenance.json records about it. The float order
    of a convolution depends on the kernel's vector width: a run under AVX-512 kernels ends at
    another Dice than the same run under AVX2 ones (README, "Reproducibility"), so `avx2` makes
    every x86 CPU with AVX2 run the same kernels. The config wins over a different value in
    the environment, with a warning."""
    if choice not in CHOICES["training"]["cpu_isa"]:
        raise ConfigError(f"training.cpu_isa = {choice!r} is not allowed; allowed: {', '.join(CHOICES['training']['cpu_isa'])}")
    for name, value in CPU_ISA_ENV.get(choice, {}).items():
        if os.environ.get(name, value).lower() != value.lower():
            log.warning("training.cpu_isa = %s: replacing %s=%s from the environment by %s", choice, name,
                        os.environ[name], value)
        os.environ[name] = value
    record = cpu_isa_record(choice)
    if choice != "native" and record["aten_cpu_capability"].lower() != choice:
        log.warning("training.cpu_isa = %s, but this CPU runs ATen's %s kernels: its results will differ from "
                    "those of a CPU with %s", choice, record["aten_cpu_capability"], choice.upper())
    return record


def cpu_isa_record(choice: str) -> dict:
    """`training.cpu_isa`, the caps in the environment and the kernels ATen dispatches to."""
    return {"cpu_isa": choice, "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()}
