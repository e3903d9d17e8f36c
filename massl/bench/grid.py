"""The paper grid's cost on this device, from the measured paper-scale step times and the
inference time per window. The grid's split sizes and settings are the library's paper
protocol (`massl.data.splits.DEFAULT_PROTOCOL`), its iterations and validations the schedule
`massl train` follows (`massl.training.loop.training_schedule`) under `TrainConfig`'s defaults."""

from __future__ import annotations

import math
import statistics

from massl.bench.inference import count_windows
from massl.bench.scales import BRATS_VOLUME, PAPER
from massl.config import TrainConfig
from massl.data.splits import DEFAULT_PROTOCOL
from massl.data.synthetic import DEFAULT_N_CASES
from massl.methods import AUTOENCODER, METHODS, PAPER_METHODS
from massl.training.loop import training_schedule

# Preprocessed volume shapes (z, y, x) of each dataset; WMH: one per site (equal scans per site).
PAPER_VOLUMES = {"brats18": [BRATS_VOLUME], "wmh17": [(48, 200, 200), (48, 200, 200), (83, 200, 200)]}
PAPER_REPETITIONS = 5  # SPEC section 6; the workflow's `repetitions`, which the library does not hold
# Timed strategy of each training strategy of the grid (fine-tuning steps cost a supervised one).
GRID_STRATEGY = {"supervised": "supervised", "pretrain_decoder": "supervised", "pretrain_finetune": "supervised",
                 "joint": "joint", "alternating": "alternating", "autoencoder": "pretrain"}


def _paper_dataset(name: str) -> dict:
    """One dataset of the grid: settings (labeled, unlabeled), validation and test scans, volumes.
    A null validation size is "the rest" of the dataset, whose scans the synthetic benchmark
    counts as the real one has them (210 BraTS 2018 HGG, 60 WMH 2017)."""
    split, settings = DEFAULT_PROTOCOL[name]["split"], DEFAULT_PROTOCOL[name]["settings"]
    validation = split["validation"]
    if validation is None:
        validation = DEFAULT_N_CASES[name] - split["pool"] - split["test"]
    return {"settings": [tuple(s) for s in settings.values()], "validation": validation, "test": split["test"],
            "volumes": PAPER_VOLUMES[name]}


PAPER_GRID = {name: _paper_dataset(name) for name in DEFAULT_PROTOCOL}


def grid_runs(grid: dict = PAPER_GRID, repetitions: int = PAPER_REPETITIONS) -> tuple[int, int]:
    """(trainings, autoencoders) of the grid: the paper's nine methods and one autoencoder per
    setting and repetition."""
    settings = sum(len(dataset["settings"]) for dataset in grid.values()) * repetitions
    return settings * len(PAPER_METHODS), settings


def paper_grid_hours(steps: list[dict], seconds_per_window: float, grid: dict = PAPER_GRID,
                     repetitions: int = PAPER_REPETITIONS, cfg: TrainConfig | None = None) -> float | None:
    """Device-hours of the paper's grid from the paper-scale step times: every run's
    iterations, its validations (every `validate_every_epochs` and at the end) and its test
    scans (the autoencoder has none), one process at a time. None if a strategy is missing."""
    cfg = cfg or TrainConfig()
    per_step = {s["strategy"]: s["seconds_per_iteration"] for s in steps if s["scale"] == PAPER.name}
    runs = [*(METHODS[m] for m in PAPER_METHODS), AUTOENCODER]
    if any(GRID_STRATEGY[m.strategy] not in per_step for m in runs):
        return None

    def volume_seconds(shapes, overlap: float) -> float:
        return seconds_per_window * statistics.mean(count_windows(s, cfg.patch_size, overlap) for s in shapes)

    seconds = 0.0
    for dataset in grid.values():
        segmentation = volume_seconds(dataset["volumes"], cfg.inference_overlap)
        reconstruction = volume_seconds(dataset["volumes"], 0.0)  # the autoencoder's validation tiles without overlap
        for labeled, unlabeled in dataset["settings"]:
            for method in runs:
                # the budget `massl train` runs
                schedule = training_schedule(cfg.for_autoencoder() if method is AUTOENCODER else cfg, labeled, unlabeled)
                iterations = schedule.iterations
                validations = math.ceil(iterations / schedule.validate_every)  # and one at the end
                seconds += iterations * per_step[GRID_STRATEGY[method.strategy]]
                if method is AUTOENCODER:
                    seconds += validations * dataset["validation"] * reconstruction
                else:
                    seconds += (validations * dataset["validation"] + dataset["test"]) * segmentation
    return seconds * repetitions / 3600
