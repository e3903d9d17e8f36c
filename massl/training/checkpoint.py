"""The resume chain of a training run and the random state it carries.

A run folder keeps `checkpoints/last.pt` and `checkpoints/previous.pt` (files of
`massl.model.files`, which detect their own corruption); resuming falls back to the previous
one when the last is missing or corrupt. `rng_state` / `restore_rng_state` carry the global
random streams so a resumed run continues them exactly.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from massl.errors import DataError
from massl.model.files import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

LAST, PREVIOUS = "last.pt", "previous.pt"


def save_resume_state(folder: str | Path, state: dict) -> None:
    """Write `state` as last.pt; the former last.pt becomes previous.pt."""
    folder = Path(folder)
    last = folder / LAST
    if last.exists():
        os.replace(last, folder / PREVIOUS)
    save_checkpoint(last, state)


def load_resume_state(folder: str | Path) -> dict | None:
    """The newest good resume state in `folder`, or None to start from scratch."""
    folder = Path(folder)
    for name in (LAST, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path)
        except DataError as exc:
            log.warning("%s; trying an older checkpoint", exc)
            continue
        if name == PREVIOUS:
            log.warning("resuming from %s (the last checkpoint was missing or corrupt)", path)
        return state
    return None


def rng_state(torch_generators: dict[str, torch.Generator]) -> dict:
    """The global random streams (python, numpy, torch, CUDA) and `torch_generators`, so a
    resumed run continues them exactly. Patch samplers checkpoint their own generators."""
    legacy = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy_global": {**legacy, "state": {"key": legacy["state"]["key"].tolist(), "pos": legacy["state"]["pos"]}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "torch_generators": {name: gen.get_state() for name, gen in torch_generators.items()},
    }


def restore_rng_state(state: dict, torch_generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    legacy = state["numpy_global"]
    np.random.set_state({**legacy, "state": {"key": np.asarray(legacy["state"]["key"], np.uint32),
                                             "pos": legacy["state"]["pos"]}})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in torch_generators.items():
        gen.set_state(state["torch_generators"][name])
