"""Data loading: the time to draw one augmented batch from memory-mapped volumes, as the
training loop does before each step."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch

from massl.bench.scales import BRATS_VOLUME, SCALES
from massl.bench.timing import time_calls
from massl.config import TrainConfig
from massl.data.sampling import PatchSampler
from massl.data.store import CASES_COLUMNS, CaseStore
from massl.io import atomic_write_json, atomic_write_text
from massl.training.loop import TrainData, draw_batch

LOADING_DRAWS = 20


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
