"""Torch files that detect their own corruption, and a run's model.pt.

Every file is a torch file holding `{"format", "sha256", "payload"}`, where `payload` is the
`torch.save` bytes of the state and `sha256` their digest: a truncated or altered file fails
loudly instead of loading garbage. Files are written atomically and loaded with
`weights_only=True` (tensors and plain Python values only), so loading never runs code.
Training's resume checkpoints (`massl.training.checkpoint`) are such files too.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from massl.errors import DataError
from massl.io import atomic_path
from massl.model.network import MASSLNet

FORMAT = "massl-checkpoint/1"


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
