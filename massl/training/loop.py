"""The one training loop behind all methods (SPEC sections 2-4).

Each iteration draws the batches the strategy needs, augments them on the device and calls
`strategy.step`. The loop validates on a schedule and keeps the best weights, writes resume
checkpoints, stops at its budget, on a validation plateau (`training.stopping`) or cleanly on a
non-finite loss, and logs progress with an ETA.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from massl.config import TrainConfig, as_dict
from massl.data.sampling import PatchSampler
from massl.data.store import IGNORE_LABEL, CaseStore
from massl.errors import ConfigError
from massl.device import autocast
from massl.evaluation.inference import sliding_window_predict, window_starts
from massl.evaluation.metrics import dice
from massl.training.augment import augment_batch
from massl.training.checkpoint import (
    load_resume_state,
    restore_rng_state,
    rng_state,
    save_resume_state,
)
from massl.training.stopping import StoppingRule
from massl.training.strategies import Batch, NonFiniteLoss, Strategy

log = logging.getLogger(__name__)

LOSS_KEYS = ("loss", "loss_seg", "loss_rec", "loss_unsup")  # loss_unsup: the baselines' unlabeled term
LOG_COLUMNS = ("iteration", "epoch", "loss", "loss_seg", "loss_rec", "lr_seg", "lr_rec", "val_dice", "seconds",
               "val_mse", "loss_unsup")
MAX_LOG_ROWS = 500  # loss rows per run (plus validation rows); each averages the iterations since the last
PROGRESS_SECONDS = 30.0


@dataclass(frozen=True)
class Schedule:
    iterations: int
    epoch_length: int  # iterations per epoch = min(|L|, |U|), |L| without unlabeled data
    validate_every: int  # iterations
    checkpoint_every: int
    log_every: int

    def validates_at(self, iteration: int) -> bool:
        return iteration % self.validate_every == 0 or iteration == self.iterations

    def logs_at(self, iteration: int) -> bool:
        return iteration % self.log_every == 0 or self.validates_at(iteration)

    def checkpoints_at(self, iteration: int) -> bool:
        return iteration % self.checkpoint_every == 0 or iteration == self.iterations


def training_schedule(cfg: TrainConfig, n_labeled: int, n_unlabeled: int) -> Schedule:
    """The released budget: epochs_for(|L|) epochs of min(|L|, |U|) iterations, capped by
    max_iterations; validation every validate_every_epochs epochs (or validate_every_iterations
    iterations, when set) and at the end."""
    epoch_length = min(n_labeled, n_unlabeled) if n_unlabeled else n_labeled
    if epoch_length <= 0:
        raise ConfigError(f"no training cases: {n_labeled} labeled, {n_unlabeled} unlabeled")
    iterations = cfg.epochs_for(n_labeled) * epoch_length
    if cfg.max_iterations is not None:
        iterations = min(iterations, cfg.max_iterations)
    return Schedule(
        iterations=iterations,
        epoch_length=epoch_length,
        validate_every=cfg.validate_every_iterations or cfg.validate_every_epochs * epoch_length,
        checkpoint_every=cfg.checkpoint_every_iterations,
        log_every=max(1, math.ceil(iterations / MAX_LOG_ROWS)),
    )


class Validator:
    """Model-selection score on validation scans by sliding-window inference: mean Dice (higher
    is better) or, for the autoencoder, the mean reconstruction MSE of patches tiling each scan
    (lower is better)."""

    def __init__(self, store: CaseStore, case_ids: list[str], cfg: TrainConfig, device: torch.device,
                 amp_dtype: torch.dtype | None, metric: str = "dice"):
        if metric not in ("dice", "mse"):
            raise ValueError(f"metric must be 'dice' or 'mse', got {metric!r}")
        self.store, self.case_ids = store, list(case_ids)[: cfg.max_validation_cases]  # None = all
        self.cfg, self.device, self.amp_dtype, self.metric = cfg, device, amp_dtype, metric

    def __call__(self, model: torch.nn.Module) -> float:
        if not self.case_ids:
            return float("nan")
        model.eval()
        try:
            scores = [self._score(model, case) for case in self.case_ids]
        finally:
            model.train()
        scores = [s for s in scores if not math.isnan(s)]  # empty-vs-empty scans have no Dice
        return float(np.mean(scores)) if scores else float("nan")

    def improves(self, score: float, best: float | None) -> bool:
        if math.isnan(score):
            return False
        if best is None or math.isnan(best):
            return True
        return score > best if self.metric == "dice" else score < best

    def _score(self, model, case: str) -> float:
        image = self.store.image(case)
        if self.metric == "mse":
            return reconstruction_error(model, image, self.cfg.patch_size, self.cfg.inference_batch,
                                        self.device, self.amp_dtype)
        prob = sliding_window_predict(model, image, self.cfg.patch_size, self.cfg.inference_overlap,
                                      self.cfg.inference_batch, self.device, self.amp_dtype)
        label = np.asarray(self.store.label(case))
        return dice(prob >= self.cfg.threshold, label == 1, label == IGNORE_LABEL)


@torch.no_grad()
def reconstruction_error(model, volume: np.ndarray, patch_size, batch_size: int, device, amp_dtype) -> float:
    """Mean MSE of the model's reconstructions of windows tiling `volume` (z, y, x) without
    overlap (the last window along an axis is flush with the end); 2D models see slice crops."""
    window = tuple(patch_size) if model.spatial_dims == 3 else (1, *patch_size)
    padded = np.zeros([max(s, w) for s, w in zip(volume.shape, window)], np.float32)
    padded[tuple(slice(0, s) for s in volume.shape)] = volume
    starts = [window_starts(s, w, 0.0) for s, w in zip(padded.shape, window)]
    boxes = [tuple(slice(c, c + w) for c, w in zip(corner, window)) for corner in itertools.product(*starts)]
    errors = []
    for first in range(0, len(boxes), batch_size):
        x = torch.from_numpy(np.stack([padded[box] for box in boxes[first:first + batch_size]])).to(device)
        x = x.unsqueeze(1) if model.spatial_dims == 3 else x  # 2D: the depth-1 axis is the channel
        with autocast(device, amp_dtype):
            rec = model.reconstruct(model.encode(x)).float()
        errors.append(((rec - x) ** 2).flatten(1).mean(dim=1).cpu())
    return float(torch.cat(errors).mean())


@dataclass
class Averager:
    """Running mean of the loss values since the last reset (the NaN placeholders stay NaN)."""

    sums: dict = field(default_factory=lambda: dict.fromkeys(LOSS_KEYS, 0.0))
    count: int = 0

    def add(self, losses: dict[str, float]) -> None:
        for key in LOSS_KEYS:  # a strategy leaves out the terms it has not (NaN)
            self.sums[key] += losses.get(key, float("nan"))
        self.count += 1

    def mean(self) -> dict[str, float]:
        return {k: (v / self.count if self.count else float("nan")) for k, v in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.count = dict.fromkeys(LOSS_KEYS, 0.0), 0


@dataclass
class TrainResult:
    status: str  # converged | diverged
    stop_reason: str  # plateau | budget | diverged (massl.training.stopping)
    iterations: int  # completed; the final weights are those of this iteration
    planned_iterations: int
    best_iteration: int | None
    best_score: float  # validation Dice, or MSE for the autoencoder; NaN if never validated
    best_weights: dict  # CPU state dict: the best validated weights, else the final ones
    final_weights: dict  # CPU state dict at the end (a diverged run: its last finite weights)
    log: list[dict]
    train_seconds: float
    n_validations: int
    last_validation_iteration: int | None
    still_improving: bool
    divergence: str | None = None

    @property
    def final_is_best(self) -> bool:
        """The tested best weights are the final ones (best at the last iteration, or never validated)."""
        return self.best_iteration is None or self.best_iteration == self.iterations


@dataclass
class TrainData:
    """Where batches come from: patch samplers of the labeled and unlabeled cases (those the
    strategy needs) and one augmentation generator for each, so that the labeled batches of a
    seed are the same whether or not a method also draws unlabeled ones (CNN vs MASSL). All
    random states are checkpointed so a resumed run draws the same batches."""

    labeled: PatchSampler | None
    unlabeled: PatchSampler | None
    augment_labeled: torch.Generator
    augment_unlabeled: torch.Generator | None = None

    @property
    def samplers(self) -> dict[str, PatchSampler]:
        return {name: s for name, s in (("labeled", self.labeled), ("unlabeled", self.unlabeled)) if s is not None}

    @property
    def generators(self) -> dict[str, torch.Generator]:
        pairs = (("augment_labeled", self.augment_labeled), ("augment_unlabeled", self.augment_unlabeled))
        return {name: g for name, g in pairs if g is not None}


def draw_batch(data: TrainData, cfg: TrainConfig, device: torch.device, labeled: bool, unlabeled: bool) -> Batch:
    """One iteration's batches on `device`: `cfg.batch_size` labeled patches (image, foreground
    target, ignore mask) and/or as many unlabeled images, augmented when `cfg.augment`."""
    n, batch = cfg.batch_size, Batch()
    if labeled:
        image, label = _to_device(device, *data.labeled.sample(n))
        if cfg.augment:
            image, label = augment_batch(image, label, cfg, data.augment_labeled)
        batch.image, batch.target, batch.mask = image, (label == 1).float(), (label != IGNORE_LABEL).float()
    if unlabeled:
        image, _ = _to_device(device, data.unlabeled.sample(n)[0], None)
        if cfg.augment:
            image, _ = augment_batch(image, None, cfg, data.augment_unlabeled)
        batch.unlabeled = image
    return batch


def _to_device(device: torch.device, image: np.ndarray, label: np.ndarray | None):
    image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device, non_blocking=True)
    if label is not None:
        label = torch.from_numpy(np.ascontiguousarray(label)).to(device, non_blocking=True)
    return image, label


class Trainer:
    def __init__(self, strategy: Strategy, data: TrainData, cfg: TrainConfig, schedule: Schedule,
                 validator: Validator, device: torch.device, fingerprint: dict,
                 checkpoint_dir=None, on_iteration: Callable[[int], None] | None = None):
        """`fingerprint` identifies the run (method, seed, config); a resume state with another
        fingerprint is ignored. `on_iteration(k)` is called after iteration k is complete and
        checkpointed (used by tests to interrupt a run). `self.model` is the strategy's
        `eval_model`: the network validated, kept and tested."""
        self.strategy, self.model, self.data = strategy, strategy.eval_model, data
        self.cfg, self.schedule, self.validator, self.device = cfg, schedule, validator, device
        self.fingerprint = fingerprint
        self.checkpoint_dir, self.on_iteration = checkpoint_dir, on_iteration
        self.iteration, self.status, self.divergence = 0, "converged", None
        self.stop_reason: str | None = None  # set when the run ends: plateau | budget | diverged
        self.stopping = StoppingRule.from_config(cfg, validator.metric)
        self.best_score, self.best_iteration, self.best_weights = None, None, None
        self.rows: list[dict] = []
        self.window = Averager()
        self.elapsed = 0.0

    def run(self) -> TrainResult:
        self._resume()
        total = self.schedule.iterations
        started, elapsed_before = time.perf_counter(), self.elapsed
        progress = _Progress(total, self.iteration)
        while self.iteration < total and self.stop_reason is None:
            batch = draw_batch(self.data, self.cfg, self.device, self.strategy.uses_labeled,
                               self.strategy.uses_unlabeled)
            try:
                losses = self.strategy.step(batch)
            except NonFiniteLoss as exc:
                self.elapsed = elapsed_before + time.perf_counter() - started
                self._diverged(exc)
                self._save()  # a retry of a diverged run goes straight to testing
                break
            self.iteration += 1
            self.window.add(losses)
            progress.add(losses)
            val = self._validate() if self.schedule.validates_at(self.iteration) else None
            self.elapsed = elapsed_before + time.perf_counter() - started  # this iteration's validation included
            if val is not None and self.stopping.should_stop(self.iteration):
                self._stop_on_plateau()
            if self.schedule.logs_at(self.iteration):
                self._log_row(val)
            if self.schedule.checkpoints_at(self.iteration) or self.stop_reason is not None:
                self._save()  # a stopped run's retry goes straight to testing
            progress.report(self.iteration)
            if self.on_iteration is not None:
                self.on_iteration(self.iteration)
        if self.stop_reason is None and self.iteration >= total:
            self.stop_reason = "budget"
        return self._result()

    # Validation, stopping, divergence, log ---------------------------------------------------

    def _validate(self) -> float:
        score = self.validator(self.model)
        if self.validator.improves(score, self.best_score):
            self.best_score, self.best_iteration = score, self.iteration
            self.best_weights = _cpu_copy(self.model.state_dict())
        self.stopping.update(self.iteration, score)
        log.info("validation at iteration %d: %s %.4f (best %.4f at %s)", self.iteration,
                 self.validator.metric, score, _nan(self.best_score), self.best_iteration)
        return score

    def _stop_on_plateau(self) -> None:
        self.stop_reason = "plateau"
        rule = self.stopping
        by = f" by more than {rule.min_delta:g}" if rule.min_delta else ""
        log.info("stopping at iteration %d: no validation improvement%s for %d validations; best %s %.4f at %s",
                 self.iteration, by, rule.stale, self.validator.metric, _nan(self.best_score), self.best_iteration)

    def _diverged(self, exc: NonFiniteLoss) -> None:
        self.status, self.stop_reason = "diverged", "diverged"
        self.divergence = f"iteration {self.iteration + 1}: {exc}"
        log.warning("training diverged at %s; stopping", self.divergence)
        self.window.add({**dict.fromkeys(LOSS_KEYS, float("nan")), "loss": exc.value})
        self._log_row(None, iteration=self.iteration + 1)  # the failed iteration made no update

    def _log_row(self, val: float | None, iteration: int | None = None) -> None:
        iteration = self.iteration if iteration is None else iteration
        rates = self.strategy.learning_rates()
        metric = self.validator.metric
        self.rows.append({
            "iteration": iteration,
            "epoch": round(iteration / self.schedule.epoch_length, 4),
            **self.window.mean(),
            **rates,
            "val_dice": val if metric == "dice" and val is not None else float("nan"),
            "seconds": round(self.elapsed, 3),
            "val_mse": val if metric == "mse" and val is not None else float("nan"),
        })
        self.window.reset()

    # Checkpoints -----------------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "iteration": self.iteration,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "stopping": self.stopping.state(),
            "divergence": self.divergence,
            "model": self.model.state_dict(),
            "strategy": self.strategy.state_dict(),
            "best": {"score": self.best_score, "iteration": self.best_iteration, "weights": self.best_weights},
            "rows": self.rows,
            "window": {"sums": self.window.sums, "count": self.window.count},
            "elapsed": self.elapsed,
            "rng": rng_state(self.data.generators),
            "samplers": {name: sampler.state() for name, sampler in self.data.samplers.items()},
        }

    def _save(self) -> None:
        if self.checkpoint_dir is not None:
            save_resume_state(self.checkpoint_dir, self._state())

    def _resume(self) -> None:
        state = load_resume_state(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        if state is None:
            return
        if state["fingerprint"] != self.fingerprint:
            log.warning("%s: checkpoint belongs to another configuration; starting from scratch", self.checkpoint_dir)
            return
        self.model.load_state_dict(state["model"])
        self.strategy.load_state_dict(state["strategy"])
        restore_rng_state(state["rng"], self.data.generators)
        for name, sampler in self.data.samplers.items():
            sampler.set_state(state["samplers"][name])
        self.iteration, self.status, self.divergence = state["iteration"], state["status"], state["divergence"]
        self.stop_reason = state["stop_reason"]
        self.stopping.load_state(state["stopping"])
        best = state["best"]
        self.best_score, self.best_iteration, self.best_weights = best["score"], best["iteration"], best["weights"]
        self.rows, self.elapsed = state["rows"], state["elapsed"]
        self.window = Averager(dict(state["window"]["sums"]), state["window"]["count"])
        log.info("resumed at iteration %d/%d from %s", self.iteration, self.schedule.iterations, self.checkpoint_dir)

    def _result(self) -> TrainResult:
        final = _cpu_copy(self.model.state_dict())
        return TrainResult(
            status=self.status,
            stop_reason=self.stop_reason,
            iterations=self.iteration,
            planned_iterations=self.schedule.iterations,
            best_iteration=self.best_iteration,
            best_score=_nan(self.best_score),
            best_weights=self.best_weights if self.best_weights is not None else final,
            final_weights=final,
            log=list(self.rows),
            train_seconds=self.elapsed,
            n_validations=self.stopping.n_validations,
            last_validation_iteration=self.stopping.last_validation,
            still_improving=self.stopping.still_improving(self.stop_reason),
            divergence=self.divergence,
        )


def run_fingerprint(method_id: str, seed: int, cfg: TrainConfig, model_kwargs: dict, cases: dict) -> dict:
    """What must match for a checkpoint to be resumed: method, seed, config, network, data."""
    return {"method": method_id, "seed": seed, "training": as_dict(cfg), "model": model_kwargs, "cases": cases}


class _Progress:
    """A log line every ~10 % of the run or every PROGRESS_SECONDS, with speed and ETA."""

    def __init__(self, total: int, start: int):
        self.total, self.start = total, start
        self.every = max(1, total // 10)
        self.t0 = self.last = time.perf_counter()
        self.window = Averager()

    def add(self, losses: dict) -> None:
        self.window.add(losses)

    def report(self, iteration: int) -> None:
        now = time.perf_counter()
        if iteration % self.every and now - self.last < PROGRESS_SECONDS and iteration != self.total:
            return
        speed = (iteration - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - iteration) / speed if speed > 0 else float("inf")
        losses = self.window.mean()
        log.info("iteration %d/%d  loss %.4f (seg %.4f, rec %.4f)  %.2f it/s  ETA %s", iteration, self.total,
                 losses["loss"], losses["loss_seg"], losses["loss_rec"], speed, _duration(eta))
        self.window.reset()
        self.last = now


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def _cpu_copy(state: dict) -> dict:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)
