"""One worker process: it measures the steps of one path (project or reference) at the scales
it is given and, for the project path, the machine, its ceiling, loading and inference; it
writes them to a JSON file for `massl bench` to merge."""

from __future__ import annotations

import argparse
import logging
import time

import torch

from massl import allocator
from massl.bench.ceiling import machine_info, matmul_ceiling_gflops
from massl.bench.inference import measure_inference
from massl.bench.loading import measure_loading
from massl.bench.scales import BRATS_VOLUME, PAPER, SCALE_NAMES, SCALES, STRATEGY_METHODS, Scale
from massl.bench.steps import measure_step
from massl.device import pick_device
from massl.io import atomic_write_json

log = logging.getLogger("massl.bench")  # one logger name for the whole bench, also in the worker

# (warm-up, timed) iterations per scale; quick mode on a CPU skips the slowest paper-scale steps.
# Two paper-scale warm-ups: with `glibc-tuned` the first steps still grow the heap (2.7 s against
# a steady 1.8 s for pretraining), which a training run of thousands of steps pays once.
REPEATS = {"demo": (3, 20), "paper": (2, 2)}
QUICK_REPEATS = {"demo": (2, 10), "paper": (2, 1)}
QUICK_CPU_PAPER_STRATEGIES = ("supervised", "pretrain")


def step_plan(quick: bool, device: torch.device, scales: tuple[str, ...] = SCALE_NAMES
              ) -> list[tuple[Scale, str, int, int]]:
    """(scale, strategy, warm-up, timed) of every step measurement at `scales`, in measuring order."""
    repeats = QUICK_REPEATS if quick else REPEATS
    plan = []
    for scale in (s for s in SCALES if s.name in scales):
        for strategy in STRATEGY_METHODS:
            if quick and device.type == "cpu" and scale is PAPER and strategy not in QUICK_CPU_PAPER_STRATEGIES:
                continue
            plan.append((scale, strategy, *repeats[scale.name]))
    return plan


def measure(impl: str, quick: bool = False, device: str = "auto", threads: int | None = None,
            scales: tuple[str, ...] = SCALE_NAMES, extras: bool = True) -> dict:
    """What one worker measures: the steps of `impl` at `scales`; with `extras`, for the project
    path, also the machine, its ceiling, loading and inference."""
    dev = pick_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    plan = step_plan(quick, dev, scales)
    with_extras = impl == "project" and extras
    # The ceiling is a best rate: measured before and after the steps, so that one slow
    # moment of a shared machine does not lower it.
    ceilings = [matmul_ceiling_gflops(dev)] if with_extras else []
    started, steps = time.perf_counter(), []
    for k, (scale, strategy, warmup, repeats) in enumerate(plan, 1):
        steps.append(measure_step(impl, scale, strategy, dev, warmup, repeats))
        log.info("%s [%d/%d] %s %s: %.4g s/iteration (%.0f s elapsed)", impl, k, len(plan), scale.name, strategy,
                 steps[-1]["seconds_per_iteration"], time.perf_counter() - started)
    result = {"impl": impl, "steps": steps, "allocator": allocator.active()}
    if with_extras:
        result["machine"] = {**machine_info(dev), "quick": quick}
        ceilings.append(matmul_ceiling_gflops(dev))
        result["ceiling_gflops"] = max(ceilings)
        log.info("fp32 matmul ceiling: %.1f GFLOP/s (best of %s)", result["ceiling_gflops"],
                 ", ".join(f"{c:.1f}" for c in ceilings))
        result["loading"] = measure_loading(dev)
        result["inference"] = measure_inference(dev, quick)
        log.info("inference of a %s volume: %.1f s", "x".join(map(str, BRATS_VOLUME)), result["inference"]["seconds"])
    return result


def _worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m massl.bench", description="one `massl bench` worker")
    parser.add_argument("role", choices=["worker"])
    parser.add_argument("--impl", choices=["project", "reference"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--scales", default=",".join(SCALE_NAMES), help=f"comma-separated: {', '.join(SCALE_NAMES)}")
    parser.add_argument("--no-extras", action="store_true", help="steps only: no machine, loading or inference")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    atomic_write_json(args.out, measure(args.impl, args.quick, args.device, args.threads,
                                        tuple(args.scales.split(",")), extras=not args.no_extras))
    return 0
