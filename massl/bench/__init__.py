"""`massl bench`: training and inference speed on this machine, against its own fp32
matrix-multiply ceiling and against a plain reference implementation (issue 6).

Worker processes measure the two paths from identical weights and batches:

    project     what `massl train` runs: the strategies of `massl.training` (each image
                encoded once per update, the attention map taken from that same pass), the
                precision `training.amp` picks, `massl.model.cpu_conv`, fused Adam, the allocator
                MASSL_ALLOCATOR picks (auto: tcmalloc if installed, else glibc's malloc tuned)
    reference   the straightforward implementation: full `model(x)` passes whose unused
                outputs are computed anyway, the unlabeled batch segmented by a pass of its own
                before the training pass, eager fp32, PyTorch's own convolution kernels and
                Adam, the default allocator

Separate processes are what let the allocator differ; each worker applies its own
(`massl.allocator.apply`) before it imports torch, and the report's `allocator` and
`reference_allocator` say which ran. A step time is the median of timed
iterations after warm-up; at the demo scale, whose steps are short enough for a shared
machine's drift to favour whichever path runs first, the median over rounds in which the two
paths alternate. FLOPs (convolutions and matrix products, forward and backward) come from
`torch.utils.flop_counter` on the first warm-up iteration.

    python -c "$WORKER_BOOT" worker --impl project --out FILE.json [--scales demo,paper] [--no-extras]
                                    [--quick] [--device D] [--threads N]

is the worker (`WORKER_BOOT`: the allocator, then `_worker_main`); `massl bench` starts it per
path and round and merges what they write.

Modules, one job each:

    scales      the measured scales (paper, demo), the strategy each method stands for
    timing      the harness: FLOP counting, timed calls, peak memory
    ceiling     the machine and its fp32 matrix-multiply ceiling
    steps       the project's and the reference training step, one step's measurement
    loading     drawing augmented batches from memory-mapped volumes
    inference   sliding-window inference of a whole volume
    grid        the paper grid's device-hours
    worker      inside a worker process: the plan and the measurements
    runner      starting the workers per path and round, combining the rounds
    report      the merged report and its text

Every name below is importable from `massl.bench`.
"""

from __future__ import annotations

import logging

from massl.bench.ceiling import machine_info, matmul_ceiling_gflops
from massl.bench.grid import GRID_STRATEGY, PAPER_GRID, PAPER_REPETITIONS, PAPER_VOLUMES, grid_runs, paper_grid_hours
from massl.bench.inference import count_windows, measure_inference
from massl.bench.loading import LOADING_DRAWS, measure_loading, write_synthetic_store
from massl.bench.report import format_report, merge_results
from massl.bench.runner import DEMO_ROUNDS, QUICK_DEMO_ROUNDS, WORKER_BOOT, combine_rounds, run_bench
from massl.bench.scales import BRATS_VOLUME, DEMO, PAPER, SCALE_NAMES, SCALES, STRATEGY_METHODS, Scale
from massl.bench.steps import ReferenceStep, amp_name, make_step, measure_step, synthetic_batch
from massl.bench.timing import count_gflop, time_calls
from massl.bench.worker import QUICK_CPU_PAPER_STRATEGIES, QUICK_REPEATS, REPEATS, _worker_main, measure, step_plan
from massl.errors import ConfigError
from massl.device import pick_device
from massl.io import atomic_write_json

log = logging.getLogger("massl.bench")

__all__ = [
    "BRATS_VOLUME", "DEMO", "DEMO_ROUNDS", "GRID_STRATEGY", "LOADING_DRAWS", "PAPER", "PAPER_GRID",
    "PAPER_REPETITIONS", "PAPER_VOLUMES", "QUICK_CPU_PAPER_STRATEGIES", "QUICK_DEMO_ROUNDS", "QUICK_REPEATS",
    "REPEATS", "SCALES", "SCALE_NAMES", "STRATEGY_METHODS", "WORKER_BOOT", "ReferenceStep", "Scale", "amp_name",
    "cli_bench", "combine_rounds", "count_gflop", "count_windows", "format_report", "grid_runs", "machine_info",
    "make_step", "matmul_ceiling_gflops", "measure", "measure_inference", "measure_loading", "measure_step",
    "merge_results", "paper_grid_hours", "run_bench", "step_plan", "synthetic_batch", "time_calls",
    "write_synthetic_store",
]


def cli_bench(args) -> int:
    if args.threads is not None and args.threads <= 0:
        raise ConfigError(f"--threads must be > 0, got {args.threads}")
    pick_device(args.device)  # a wrong device fails here, before any worker starts
    report = run_bench(quick=args.quick, device=args.device, threads=args.threads)
    print(format_report(report))
    if args.out:
        atomic_write_json(args.out, report)
        log.info("wrote %s", args.out)
    return 0
