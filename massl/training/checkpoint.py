"""Checkpoint files that detect their own corruption, the resume chain, and model.pt.

Every file is a torch file holding `{"format", "sha256", "payload"}`, where `payload` is the
`torch.save` bytes of the state and `sha256` their digest: a truncated or altered file fails
loudly instead of resuming from garbage. Files are written atomically and loaded with
`weights_only=True` (tensors and plain Python values only), so loading never runs code.

A run folder keeps `checkpoints/last.pt` and `checkpoints/previous.pt`; resuming falls back to
the previous one when the last is missing or corrupt.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from massl.errors import DataError
from massl.io import atomic_path
from massl.model import MASSLNet

log = logging.getLogger(__name__)

FORMAT = "massl-checkpoint/1"
LAST, PREVIOUS = "last.pt", "previous.pt"


def save_checkpoint(path: str | Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    wrapper = {"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:  # through a Python file, so that a full disk raises an OSError torch can only wrap
            torch.save(wrapper, fh)
        except RuntimeError as exc:  # torch's zip writer reports it as "unexpected pos ..."
            cause = exc.__context__
            if isinstance(cause, OSError):
                raise OSError(cause.errno, cause.strerror) from exc
            raise


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The state saved by `save_checkpoint`; DataError naming the file if it is missing,
    unreadable, not a massl checkpoint or fails its checksum."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        wrapper = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbled zip files
        raise DataError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(wrapper, dict) or wrapper.get("format") != FORMAT:
        raise DataError(f"{path}: not a massl checkpoint (expected format {FORMAT})")
    payload = wrapper["payload"]
    if hashlib.sha256(payload).hexdigest() != wrapper["sha256"]:
        raise DataError(f"{path}: checksum mismatch, the file is corrupt")
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)


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


def save_model(path: str | Path, model: torch.nn.Module, meta: dict) -> None:
    """model.pt: weights plus `meta` (dataset, setting, method, rep, config, model_kwargs, ...)."""
    weights = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    save_checkpoint(path, {"state_dict": weights, "meta": meta})


def load_model(path: str | Path, device="cpu"):
    """(MASSLNet with the saved weights on `device`, meta) from a run's model.pt."""
    state = load_checkpoint(path)
    meta = state.get("meta")
    if not isinstance(meta, dict) or "state_dict" not in state:
        raise DataError(f"{path}: not a model file (expected a run's model.pt, not a resume checkpoint)")
    try:
        model = MASSLNet(**meta["model_kwargs"])
        model.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise DataError(f"{path}: weights do not match the saved model description ({exc})") from exc
    return model.to(device), meta
