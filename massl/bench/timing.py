"""The timing harness: FLOP counting, synchronised wall-clock timing and peak memory."""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_gflop(fn: Callable[[], object]) -> float:
    """GFLOP of the convolutions and matrix products `fn()` runs, forward and backward."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def time_calls(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> dict:
    """Median seconds of `repeats` calls of `fn` after `warmup` (>= 1) calls, the first of which
    is FLOP-counted; peak memory over the timed calls."""
    gflop = count_gflop(fn)
    for _ in range(warmup - 1):
        fn()
    _sync(device)
    _reset_peak_memory(device)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        _sync(device)  # CUDA runs asynchronously: without it the clock stops before the work does
        seconds.append(time.perf_counter() - started)
    return {"seconds": statistics.median(seconds), "gflop": gflop, "peak_memory_mb": _peak_memory_mb(device),
            "repeats": repeats}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:  # Linux: "5" resets the resident-set high-water mark (VmHWM) to the current size
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")


def _peak_memory_mb(device: torch.device) -> float | None:
    """CUDA: the caching allocator's peak; CPU: the process's resident high-water mark."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found[1]) / 1024 if found else None
