"""The machine: what it is, and its fp32 matrix-multiply ceiling, the rate the steps'
GFLOP/s are measured against."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import time
from pathlib import Path

import torch

from massl.bench.timing import _sync


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):  # Linux names the CPU model; elsewhere keep platform's word
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = names[0].strip() if names else cpu
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "torch": torch.__version__,
        "hostname": platform.node(),
    }


def matmul_ceiling_gflops(device: torch.device, sizes: tuple[int, ...] | None = None, seconds: float = 0.5,
                          rounds: int = 3) -> float:
    """The best fp32 matrix-multiply rate (GFLOP/s) over `sizes` and `rounds` of ~`seconds`:
    what this device's kernels reach on the friendliest workload, the ceiling for the steps."""
    sizes = sizes or ((4096, 8192) if device.type == "cuda" else (1024, 2048))
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        out = torch.mm(a, b)  # also the warm-up: the timed calls write into it, allocating nothing
        for _ in range(rounds):
            _sync(device)
            calls, started = 0, time.perf_counter()
            while True:
                torch.mm(a, b, out=out)
                calls += 1
                _sync(device)
                elapsed = time.perf_counter() - started
                if elapsed >= seconds:
                    break
            best = max(best, 2 * n**3 * calls / elapsed / 1e9)
    return best
