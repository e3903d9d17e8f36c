"""`massl bench`: training and inference speed on this machine, against its own fp32
matrix-multiply ceiling and against a plain reference implementation (issue 6).

Worker processes measure the two paths from identical weights and batches:

    project     what `massl train` runs: the strategies of `massl.training` (each image
                encoded once per update, the attention map taken from that same pass), the
                precision `training.amp` picks, `massl.cpu_conv`, fused Adam, the allocator
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
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim import Adam
from torch.optim.lr_scheduler import StepLR
from torch.utils.flop_counter import FlopCounterMode

from massl import allocator
from massl.config import ModelConfig, TrainConfig
from massl.cpu_conv import set_cpu_conv3d
from massl.data.sampling import PatchSampler
from massl.data.store import CASES_COLUMNS, CaseStore
from massl.errors import ConfigError, MasslError
from massl.inference import (
    autocast_dtype,
    pick_device,
    sliding_window_predict,
    window_starts,
)
from massl.io import atomic_write_json, atomic_write_text
from massl.losses import (
    attention_reconstruction_loss,
    reconstruction_mse,
    soft_dice_loss,
)
from massl.methods import AUTOENCODER, METHODS, Method, get_method
from massl.model import build_model
from massl.training.loop import TrainData, draw_batch
from massl.training.strategies import Batch, make_strategy

log = logging.getLogger("massl.bench")  # also when run as the worker, __main__


@dataclass(frozen=True)
class Scale:
    name: str
    spatial_dims: int
    patch: tuple[int, ...]
    batch_size: int  # labeled samples per step (as many unlabeled where the strategy uses them)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)


PAPER = Scale("paper", 3, (32, 128, 128), 1)  # SPEC section 1
DEMO = Scale("demo", 2, (32, 32), 4)  # the demo grid, config/config.yaml
SCALES = (DEMO, PAPER)
SCALE_NAMES = tuple(s.name for s in SCALES)
# The method whose step stands for each strategy, in measuring order: growing memory, so that
# memory an allocator kept from one measurement never counts as the next one's peak.
STRATEGY_METHODS = {"supervised": "cnn", "pretrain": "autoencoder", "alternating": "massl_alter", "joint": "massl_l07"}
# (warm-up, timed) iterations per scale; quick mode on a CPU skips the slowest paper-scale steps.
# Two paper-scale warm-ups: with `glibc-tuned` the first steps still grow the heap (2.7 s against
# a steady 1.8 s for pretraining), which a training run of thousands of steps pays once.
REPEATS = {"demo": (3, 20), "paper": (2, 2)}
QUICK_REPEATS = {"demo": (2, 10), "paper": (2, 1)}
# Demo steps last tens of milliseconds and a shared machine's speed drifts over seconds: the two
# paths measure them in alternating rounds, and a step's time is the median over the rounds.
DEMO_ROUNDS, QUICK_DEMO_ROUNDS = 5, 3
QUICK_CPU_PAPER_STRATEGIES = ("supervised", "pretrain")
BRATS_VOLUME = (155, 200, 200)  # a preprocessed BraTS scan (z, y, x)
# The worker's entry: glibc's malloc is tuned before `massl.bench` imports torch.
WORKER_BOOT = ("import sys; from massl import allocator; allocator.apply(); "
               "from massl.bench import _worker_main; sys.exit(_worker_main())")
LOADING_DRAWS = 20

# The paper's grid (SPEC sections 4-6): settings (labeled, unlabeled), validation and test
# scans, and the preprocessed volume shapes (WMH: one per site).
PAPER_GRID = {
    "brats18": {"settings": [(20, 100), (50, 70), (120, 120)], "validation": 40, "test": 50,
                "volumes": [BRATS_VOLUME]},
    "wmh17": {"settings": [(10, 20), (20, 10), (30, 30)], "validation": 10, "test": 20,
              "volumes": [(48, 200, 200), (48, 200, 200), (83, 200, 200)]},
}
PAPER_REPETITIONS = 5
# Timed strategy of each training strategy of the grid (fine-tuning steps cost a supervised one).
GRID_STRATEGY = {"supervised": "supervised", "pretrain_decoder": "supervised", "pretrain_finetune": "supervised",
                 "joint": "joint", "alternating": "alternating", "autoencoder": "pretrain"}


# Machine ----------------------------------------------------------------------------------------

def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
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
        out = torch.mm(a, b)
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


# Steps ------------------------------------------------------------------------------------------

def count_gflop(fn: Callable[[], object]) -> float:
    """GFLOP of the convolutions and matrix products `fn()` runs, forward and backward."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


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
    return lambda: strategy.step(batch)["loss"], {"amp": "off" if amp_dtype is None else str(amp_dtype).split(".")[-1]}


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
        _sync(device)
        seconds.append(time.perf_counter() - started)
    return {"seconds": statistics.median(seconds), "gflop": gflop, "peak_memory_mb": _peak_memory_mb(device),
            "repeats": repeats}


def measure_step(impl: str, scale: Scale, strategy: str, device: torch.device, warmup: int, repeats: int) -> dict:
    fn, info = make_step(impl, scale, get_method(STRATEGY_METHODS[strategy]), device)
    timing = time_calls(fn, warmup, repeats, device)
    return {"strategy": strategy, "scale": scale.name, "method": STRATEGY_METHODS[strategy],
            "seconds_per_iteration": timing["seconds"], "gflop_per_iteration": timing["gflop"],
            "peak_memory_mb": timing["peak_memory_mb"], "repeats": repeats, **info}


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


# Loading and inference --------------------------------------------------------------------------

def write_synthetic_store(folder: str | Path, shape: tuple[int, int, int], n_cases: int = 2, seed: int = 0) -> CaseStore:
    """A preprocessed case folder (the layout `massl preprocess` writes) of random volumes."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    rows = ["\t".join(CASES_COLUMNS)]
    for k in range(n_cases):
        case = f"case{k}"
        label = np.zeros(shape, np.uint8)
        label[tuple(slice(s // 4, s // 2) for s in shape)] = 1
        np.save(folder / f"{case}.image.npy", rng.random(shape, dtype=np.float32))
        np.save(folder / f"{case}.label.npy", label)
        atomic_write_json(folder / f"{case}.json", {"case_id": case})
        rows.append("\t".join([case, "bench", "x".join(map(str, shape)), "1x1x1", f"{case}.image.npy",
                               f"{case}.label.npy", f"{case}.json", str(int(label.sum()))]))
    atomic_write_text(folder / "cases.tsv", "\n".join(rows) + "\n")
    return CaseStore(folder)


def measure_loading(device: torch.device, scales=SCALES, shape=BRATS_VOLUME, draws: int = LOADING_DRAWS) -> list[dict]:
    """Seconds to draw one augmented labeled batch on `device` from memory-mapped volumes of
    `shape`, as the training loop does before each step."""
    results = []
    with tempfile.TemporaryDirectory(prefix="massl-bench-") as tmp:
        store = write_synthetic_store(tmp, shape)
        for scale in scales:
            cfg = TrainConfig(patch_size=list(scale.patch), batch_size=scale.batch_size)
            sampler = PatchSampler(store, store.case_ids, cfg.patch_size, scale.spatial_dims, np.random.default_rng(0))
            data = TrainData(labeled=sampler, unlabeled=None, augment_labeled=torch.Generator().manual_seed(0))
            draw = functools.partial(draw_batch, data, cfg, device, labeled=True, unlabeled=False)
            timing = time_calls(draw, warmup=2, repeats=draws, device=device)
            results.append({"scale": scale.name, "seconds_per_batch": timing["seconds"],
                            "batches_per_second": 1 / timing["seconds"]})
    return results


def count_windows(shape, patch, overlap: float) -> int:
    return math.prod(len(window_starts(max(s, p), p, overlap)) for s, p in zip(shape, patch))


def measure_inference(device: torch.device, quick: bool, volume_shape=BRATS_VOLUME) -> dict:
    """Sliding-window segmentation of a `volume_shape` volume by the paper-scale network with
    the library's defaults (window = training patch, 50 % overlap, batched windows). Quick mode
    times one window-deep slab and scales by the number of windows."""
    cfg = TrainConfig()
    torch.manual_seed(0)
    model = build_model(ModelConfig(), METHODS["cnn"]).to(device).eval()
    amp_dtype = autocast_dtype(cfg.amp, device)
    volume = np.random.default_rng(0).random(volume_shape, dtype=np.float32)
    timed = volume[: cfg.patch_size[0]] if quick else volume

    def predict(volume_part: np.ndarray) -> None:
        sliding_window_predict(model, volume_part, cfg.patch_size, cfg.inference_overlap, cfg.inference_batch,
                               device, amp_dtype)

    predict(volume[: cfg.patch_size[0], : cfg.patch_size[1], : cfg.patch_size[2]])  # warm-up: one window
    _sync(device)
    started = time.perf_counter()
    predict(timed)
    _sync(device)
    elapsed = time.perf_counter() - started
    windows = count_windows(volume_shape, cfg.patch_size, cfg.inference_overlap)
    timed_windows = count_windows(timed.shape, cfg.patch_size, cfg.inference_overlap)
    return {"volume_shape": list(volume_shape), "patch": cfg.patch_size, "overlap": cfg.inference_overlap,
            "windows_per_batch": cfg.inference_batch, "windows": windows, "windows_timed": timed_windows,
            "seconds": elapsed * windows / timed_windows, "seconds_per_window": elapsed / timed_windows,
            "extrapolated": timed_windows != windows,
            "amp": "off" if amp_dtype is None else str(amp_dtype).split(".")[-1]}


# Worker and report ------------------------------------------------------------------------------

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


def merge_results(project: dict, reference: dict) -> dict:
    """The report: project steps beside the reference ones (speed-up = reference time / project
    time), FLOP rates against the ceiling, loading as a share of the lightest step."""
    ceiling = project["ceiling_gflops"]
    ref = {(s["scale"], s["strategy"]): s for s in reference["steps"]}
    steps = []
    for step in project["steps"]:
        other = ref.get((step["scale"], step["strategy"]))
        gflops = step["gflop_per_iteration"] / step["seconds_per_iteration"]
        steps.append({
            **step,
            "gflops": gflops,
            "fraction_of_ceiling": gflops / ceiling,
            "reference_seconds_per_iteration": other["seconds_per_iteration"] if other else None,
            "reference_gflop_per_iteration": other["gflop_per_iteration"] if other else None,
            "reference_peak_memory_mb": other["peak_memory_mb"] if other else None,
            "reference_round_seconds_per_iteration": other.get("round_seconds_per_iteration") if other else None,
            "speedup_vs_reference": other["seconds_per_iteration"] / step["seconds_per_iteration"] if other else None,
        })
    supervised = {s["scale"]: s["seconds_per_iteration"] for s in steps if s["strategy"] == "supervised"}
    loading = [{**row, "step_seconds": supervised.get(row["scale"]),
                "fraction_of_step": row["seconds_per_batch"] / supervised[row["scale"]]
                if row["scale"] in supervised else None}
               for row in project["loading"]]
    report = {"machine": project["machine"], "allocator": project["allocator"],
              "reference_allocator": reference["allocator"], "ceiling_gflops": ceiling, "steps": steps,
              "loading": loading, "inference": project["inference"]}
    report["paper_grid_hours"] = paper_grid_hours(steps, project["inference"]["seconds_per_window"])
    return report


def paper_grid_hours(steps: list[dict], seconds_per_window: float, grid: dict = PAPER_GRID,
                     repetitions: int = PAPER_REPETITIONS, cfg: TrainConfig | None = None) -> float | None:
    """Device-hours of the paper's grid from the paper-scale step times: every run's
    iterations, its validations (every `validate_every_epochs` and at the end) and its test
    scans (the autoencoder has none), one process at a time. None if a strategy is missing."""
    cfg = cfg or TrainConfig()
    per_step = {s["strategy"]: s["seconds_per_iteration"] for s in steps if s["scale"] == PAPER.name}
    runs = [*METHODS.values(), AUTOENCODER]
    if any(GRID_STRATEGY[m.strategy] not in per_step for m in runs):
        return None
    def volume_seconds(shapes, overlap: float) -> float:
        return seconds_per_window * statistics.mean(count_windows(s, cfg.patch_size, overlap) for s in shapes)

    seconds = 0.0
    for dataset in grid.values():
        segmentation = volume_seconds(dataset["volumes"], cfg.inference_overlap)
        reconstruction = volume_seconds(dataset["volumes"], 0.0)  # the autoencoder's validation tiles without overlap
        for labeled, unlabeled in dataset["settings"]:
            epoch = min(labeled, unlabeled)
            iterations = cfg.epochs_for(labeled) * epoch
            validations = math.ceil(iterations / (cfg.validate_every_epochs * epoch))
            for method in runs:
                seconds += iterations * per_step[GRID_STRATEGY[method.strategy]]
                if method is AUTOENCODER:
                    seconds += validations * dataset["validation"] * reconstruction
                else:
                    seconds += (validations * dataset["validation"] + dataset["test"]) * segmentation
    return seconds * repetitions / 3600


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
        with tempfile.TemporaryDirectory(prefix="massl-bench-") as tmp:
            out = Path(tmp) / f"{impl}.json"
            argv = [sys.executable, "-c", WORKER_BOOT, "worker", "--impl", impl, "--out", str(out), "--device", device,
                    "--scales", scale]
            argv += ["--quick"] if quick else []
            argv += ["--threads", str(threads)] if threads is not None else []
            argv += [] if scale == "paper" else ["--no-extras"]
            log.info("measuring the %s path (%s)", impl, what)
            code = subprocess.run(argv, env=envs[impl], check=False).returncode
            if code != 0:
                raise MasslError(f"the {impl} benchmark worker failed (exit code {code}); its messages are above")
            measured = json.loads(out.read_text())
        results[impl]["steps"] += measured.pop("steps")
        results[impl].update(measured)
    for impl, result in results.items():
        result["steps"] = combine_rounds(result["steps"])
        if result["allocator"] != envs[impl][allocator.ENV]:  # e.g. glibc-tuned off glibc: say what ran
            log.warning("the %s path ran with allocator %s, not %s", impl, result["allocator"], envs[impl][allocator.ENV])
    return merge_results(results["project"], results["reference"])


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


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [(f"machine: {m['cpu']} ({m['cpu_cores']} cores), device {m['device']} ({m['device_name']}), "
              f"{m['torch_threads']} torch threads, torch {m['torch']}"),
             f"allocator: {report['allocator']} (reference: {report['reference_allocator']})",
             f"fp32 matmul ceiling: {report['ceiling_gflops']:.1f} GFLOP/s", "",
             (f"{'scale':<6} {'strategy':<12} {'s/it':>9} {'GFLOP/it':>9} {'GFLOP/s':>8} {'ceiling':>8} "
              f"{'peak MB':>8} {'ref s/it':>9} {'speed-up':>8}")]
    for s in report["steps"]:
        lines.append(f"{s['scale']:<6} {s['strategy']:<12} {s['seconds_per_iteration']:>9.4g} "
                     f"{s['gflop_per_iteration']:>9.4g} {s['gflops']:>8.1f} {100 * s['fraction_of_ceiling']:>7.1f}% "
                     f"{_num(s['peak_memory_mb'], '.0f'):>8} {_num(s['reference_seconds_per_iteration'], '.4g'):>9} "
                     f"{_num(s['speedup_vs_reference'], '.2f'):>7}x")
    lines.append("")
    for row in report["loading"]:
        lines.append(f"loading ({row['scale']}): {1000 * row['seconds_per_batch']:.2f} ms per augmented batch, "
                     f"{_num(_percent(row['fraction_of_step']), '.2f')} % of a supervised step")
    inf = report["inference"]
    extrapolated = f", extrapolated from {inf['windows_timed']}" if inf["extrapolated"] else ""
    lines.append(f"inference of one {'x'.join(map(str, inf['volume_shape']))} volume: {inf['seconds']:.1f} s "
                 f"({inf['windows']} windows of {'x'.join(map(str, inf['patch']))}, {inf['windows_per_batch']} per "
                 f"batch{extrapolated})")
    hours = report["paper_grid_hours"]
    lines.append(f"paper grid (270 trainings + 30 autoencoders) on this device, one run at a time: "
                 f"{_num(hours, '.0f')} hours" + ("" if hours is not None else " (run without --quick)"))
    return "\n".join(lines)


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _percent(value):
    return None if value is None else 100 * value


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


if __name__ == "__main__":  # without WORKER_BOOT: the allocator is applied after torch is imported
    allocator.apply()
    sys.exit(_worker_main())
