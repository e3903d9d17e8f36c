"""`massl bench`'s measuring: it starts one worker process per path and round, each with its
own allocator, and merges what they write into the report."""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from massl import allocator
from massl.bench.report import merge_results
from massl.errors import MasslError

log = logging.getLogger("massl.bench")

# The worker's entry: glibc's malloc is tuned before `massl.bench` imports torch.
WORKER_BOOT = ("import sys; from massl import allocator; allocator.apply(); "
               "from massl.bench import _worker_main; sys.exit(_worker_main())")
# Demo steps last tens of milliseconds and a shared machine's speed drifts over seconds: the two
# paths measure them in alternating rounds, and a step's time is the median over the rounds.
DEMO_ROUNDS, QUICK_DEMO_ROUNDS = 5, 3


def run_bench(quick: bool = False, device: str = "auto", threads: int | None = None) -> dict:
    """Measure both paths, each in worker processes of its own: the demo scale in alternating
    rounds, then the paper scale (and, with the project path, the machine, loading, inference)."""
    choice = allocator.requested()
    envs = {"project": allocator.child_env(dict(os.environ), choice),
            "reference": allocator.child_env(dict(os.environ), "default")}
    log.info("allocator: %s for the project path (%s=%s), default for the reference", envs["project"][allocator.ENV],
             allocator.ENV, choice)
    rounds = QUICK_DEMO_ROUNDS if quick else DEMO_ROUNDS
    schedule = [(impl, "demo", f"demo scale, round {k}/{rounds}") for k in range(1, rounds + 1)
                for impl in ("project", "reference")]
    schedule += [(impl, "paper", "paper scale") for impl in ("project", "reference")]
    results = {"project": {"steps": []}, "reference": {"steps": []}}
    for impl, scale, what in schedule:
        log.info("measuring the %s path (%s)", impl, what)
        measured = _run_worker(impl, scale, quick, device, threads, envs[impl])
        results[impl]["steps"] += measured.pop("steps")
        results[impl].update(measured)
    for impl, result in results.items():
        result["steps"] = combine_rounds(result["steps"])
        if result["allocator"] != envs[impl][allocator.ENV]:  # e.g. glibc-tuned off glibc: say what ran
            log.warning("the %s path ran with allocator %s, not %s", impl, result["allocator"], envs[impl][allocator.ENV])
    return merge_results(results["project"], results["reference"])


def _run_worker(impl: str, scale: str, quick: bool, device: str, threads: int | None, env: dict) -> dict:
    """What one worker measured at `scale`; the machine, loading and inference come with the
    paper scale only, so they are measured once."""
    with tempfile.TemporaryDirectory(prefix="massl-bench-") as tmp:
        out = Path(tmp) / f"{impl}.json"
        argv = [sys.executable, "-c", WORKER_BOOT, "worker", "--impl", impl, "--out", str(out), "--device", device,
                "--scales", scale]
        argv += ["--quick"] if quick else []
        argv += ["--threads", str(threads)] if threads is not None else []
        argv += [] if scale == "paper" else ["--no-extras"]
        code = subprocess.run(argv, env=env, check=False).returncode
        if code != 0:
            raise MasslError(f"the {impl} benchmark worker failed (exit code {code}); its messages are above")
        return json.loads(out.read_text())


def combine_rounds(steps: list[dict]) -> list[dict]:
    """One entry per (scale, strategy), in first-measured order: the median of the rounds'
    step times (each itself a median), the highest peak memory, all timed repeats."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for step in steps:
        grouped.setdefault((step["scale"], step["strategy"]), []).append(step)
    combined = []
    for rounds in grouped.values():
        seconds = [r["seconds_per_iteration"] for r in rounds]
        peaks = [r["peak_memory_mb"] for r in rounds if r["peak_memory_mb"] is not None]
        combined.append({**rounds[0], "seconds_per_iteration": statistics.median(seconds),
                         "round_seconds_per_iteration": seconds, "peak_memory_mb": max(peaks) if peaks else None,
                         "repeats": sum(r["repeats"] for r in rounds)})
    return combined
