"""Linear-regression probe of the encoder levels (SPEC section 7, the paper's Table 3).

Each voxel of a level's last-layer feature maps is one sample, its regressors the feature
channels, its target the ground truth average-pooled to that level's grid.

`probe.score` says where R^2 is measured. `held_out` (default): within a draw of images, fit on
all but one image, predict the held-out one, rotate over the images, and score the pooled
out-of-fold predictions. `in_sample`: on the voxels the regression was fitted on, as the paper
reports it; with few samples per feature that is high for any features (256 random features on
320 voxels score about 0.8), so a level with fewer than `min_samples_per_feature` fitted
samples per feature is refused (R^2 NaN, with the reason) under either score.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict

from massl.config import CHOICES, PROBE_ANALYSIS_KEYS, PROBE_DEFAULTS, load_config, model_training, resolved
from massl.data.store import CaseStore
from massl.errors import DataError
from massl.device import pick_device, pin_cpu_isa, set_threads
from massl.io import atomic_write_text

log = logging.getLogger(__name__)

TSV_COLUMNS = ("level", "draw", "r2", "n_voxels", "n_features", "score", "reason")
DIVERGED = "diverged"


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@torch.no_grad()
def encoder_features(model, volume: np.ndarray, device="cpu", slice_batch: int = 16) -> list[np.ndarray]:
    """Last-layer features of every encoder level for a whole (z, y, x) volume.

    The volume is zero-padded to a multiple of the network's size multiple and each level is
    cropped back to ceil(size / 2**level). 3D models return (C_l, z_l, y_l, x_l); 2D models run
    `slice_batch` slices at a time and return (C_l, z, y_l, x_l).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"volume must be (z, y, x), got shape {volume.shape}")
    device = torch.device(device)
    pooled_axes = (0, 1, 2) if model.spatial_dims == 3 else (1, 2)
    padded_shape = tuple(
        _ceil_div(s, model.size_multiple) * model.size_multiple if axis in pooled_axes else s
        for axis, s in enumerate(volume.shape)
    )
    padded = np.zeros(padded_shape, np.float32)
    padded[tuple(slice(0, s) for s in volume.shape)] = volume

    if model.spatial_dims == 3:
        levels = [f[0].float().cpu().numpy() for f in model.encode(torch.from_numpy(padded)[None, None].to(device))]
    else:
        chunks = []
        for z in range(0, padded_shape[0], slice_batch):
            x = torch.from_numpy(padded[z:z + slice_batch]).unsqueeze(1).to(device)
            chunks.append([f.float().cpu().numpy() for f in model.encode(x)])
        # (z, C, y, x) per level -> (C, z, y, x)
        levels = [np.concatenate(per_level).transpose(1, 0, 2, 3) for per_level in zip(*chunks)]

    cropped = []
    for level, feats in enumerate(levels):
        factor = 2**level
        box = tuple(
            slice(0, _ceil_div(s, factor) if axis in pooled_axes else s) for axis, s in enumerate(volume.shape)
        )
        cropped.append(np.ascontiguousarray(feats[(slice(None), *box)]))
    return cropped


def level_channels(model) -> list[int]:
    """Feature channels of each encoder level: its last convolution's output channels."""
    convolutions = (torch.nn.Conv2d, torch.nn.Conv3d)
    return [[m.out_channels for m in level.modules() if isinstance(m, convolutions)][-1]
            for level in model.encoder.levels]


def _pool_factor(size: int, pooled: int) -> int:
    """The power of two f with ceil(size / f) == pooled (the smallest one when pooled == 1)."""
    factor = 1
    while _ceil_div(size, factor) > pooled:
        factor *= 2
    if _ceil_div(size, factor) != pooled:
        raise ValueError(f"an axis of {size} voxels cannot be pooled by a power of two to {pooled}")
    return factor


def pooled_target(label: np.ndarray, shape) -> np.ndarray:
    """Foreground fraction of each cell of a level's grid `shape` (label 1 = foreground; 0 and
    the ignore label 2 = background).

    The pooling factor per axis is the power of two that maps the label grid onto `shape`
    (1 on a 2D model's z axis). Border cells that reach into the encoder's zero padding average
    over their real voxels only.
    """
    label = np.asarray(label)
    shape = tuple(int(s) for s in shape)
    if len(shape) != label.ndim:
        raise ValueError(f"label of shape {label.shape} cannot pool to {shape}")
    factors = [_pool_factor(s, p) for s, p in zip(label.shape, shape)]
    pad = [(0, p * f - s) for s, p, f in zip(label.shape, shape, factors)]
    blocks = [n for p, f in zip(shape, factors) for n in (p, f)]  # (p0, f0, p1, f1, ...)
    block_axes = tuple(range(1, 2 * len(shape), 2))
    foreground = np.pad((label == 1).astype(np.float64), pad).reshape(blocks).sum(axis=block_axes)
    real = np.pad(np.ones(label.shape), pad).reshape(blocks).sum(axis=block_axes)
    return (foreground / real).astype(np.float32)


def _samples(features, targets, max_voxels: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, image index) of the pooled voxels of all images; above `max_voxels` a uniform
    random subset (rng `seed`)."""
    if len(features) != len(targets) or not features:
        raise ValueError(f"need one target per feature array, got {len(features)} and {len(targets)}")
    for feats, target in zip(features, targets):
        if feats.shape[1:] != target.shape:
            raise ValueError(f"features of shape {feats.shape} do not match target of shape {target.shape}")
    offsets = np.cumsum([0] + [t.size for t in targets])
    n_total = int(offsets[-1])
    if n_total > max_voxels:
        chosen = np.sort(np.random.default_rng(seed).choice(n_total, size=max_voxels, replace=False))
    else:
        chosen = np.arange(n_total)
    x_parts, y_parts, group_parts = [], [], []
    for i, (feats, target) in enumerate(zip(features, targets)):
        idx = chosen[(chosen >= offsets[i]) & (chosen < offsets[i + 1])] - offsets[i]
        x_parts.append(feats.reshape(feats.shape[0], -1)[:, idx].T)
        y_parts.append(target.reshape(-1)[idx])
        group_parts.append(np.full(idx.size, i))
    x = np.concatenate(x_parts).astype(np.float64)
    return x, np.concatenate(y_parts).astype(np.float64), np.concatenate(group_parts)


def probe_level(features: list[np.ndarray], targets: list[np.ndarray], score: str = PROBE_DEFAULTS["score"],
                max_voxels: int = PROBE_DEFAULTS["max_voxels"], seed: int = PROBE_DEFAULTS["seed"],
                min_samples_per_feature: float = PROBE_DEFAULTS["min_samples_per_feature"]) -> dict:
    """R^2 of a linear regression from the voxels' feature vectors to their targets.

    `features[i]` is (C, *grid) and `targets[i]` is (*grid) for image i; the voxels of all
    images are pooled (subsampled to `max_voxels`, rng `seed`). `score` is "held_out"
    (leave one image out, R^2 of the pooled out-of-fold predictions) or "in_sample".
    Returns {"r2", "n_voxels" (samples fitted; the smallest fold's when held out),
    "n_features", "reason"}: r2 is NaN and `reason` says why when the level has fewer than
    `min_samples_per_feature` samples per feature, held_out has a single image, or the target
    is constant (R^2 undefined); `reason` is "" when scored.
    """
    if score not in CHOICES["probe"]["score"]:
        raise ValueError(f"score must be one of {', '.join(CHOICES['probe']['score'])}, got {score!r}")
    x, y, groups = _samples(features, targets, max_voxels, seed)
    n_features = x.shape[1]
    if score == "in_sample":
        n_fit = len(y)
    else:
        n_fit = len(y) - int(np.bincount(groups).max())  # the fold that holds out the largest image
    row = {"r2": float("nan"), "n_voxels": n_fit, "n_features": n_features, "reason": ""}
    if score == "held_out" and len(np.unique(groups)) < 2:
        return {**row, "reason": "held-out score needs at least 2 images with sampled voxels"}
    if n_fit < min_samples_per_feature * n_features:
        return {**row, "reason": f"under-determined: {n_fit} samples for {n_features} features "
                                 f"(< {min_samples_per_feature:g} per feature)"}
    if np.ptp(y) == 0:
        return {**row, "reason": "constant target (R^2 undefined)"}
    if score == "in_sample":
        row["r2"] = float(LinearRegression().fit(x, y).score(x, y))
    else:
        predicted = cross_val_predict(LinearRegression(), x, y, groups=groups, cv=LeaveOneGroupOut())
        row["r2"] = float(r2_score(y, predicted))
    return row


def draw_cases(test_cases, n_images: int, draw: int, seed: int = 0) -> list[str]:
    """The images of one draw: `n_images` of the sorted test cases, chosen with rng(seed + draw),
    so every model of a repetition is probed on the same images."""
    cases = sorted(test_cases)
    picked = np.random.default_rng(seed + draw).choice(len(cases), size=min(n_images, len(cases)), replace=False)
    return [cases[i] for i in sorted(picked)]


def run_probe(
    model,
    store: CaseStore,
    test_cases,
    n_images: int = PROBE_DEFAULTS["n_images"],
    n_draws: int = PROBE_DEFAULTS["n_draws"],
    seed: int = PROBE_DEFAULTS["seed"],
    device="cpu",
    max_voxels: int = PROBE_DEFAULTS["max_voxels"],
    score: str = PROBE_DEFAULTS["score"],
    min_samples_per_feature: float = PROBE_DEFAULTS["min_samples_per_feature"],
) -> list[dict]:
    """Probe every encoder level on `n_draws` random draws of `n_images` test cases.

    Returns rows {"level" (1 = shallowest), "draw" (0-based), "score", and the fields of
    `probe_level`}.
    """
    if n_images > len(test_cases):
        log.warning("probe: %d images requested, only %d test cases; using all", n_images, len(test_cases))
    rows, started = [], time.monotonic()
    for draw in range(n_draws):
        cases = draw_cases(test_cases, n_images, draw, seed)
        per_level_feats: list[list[np.ndarray]] = []
        per_level_targets: list[list[np.ndarray]] = []
        for case in cases:
            feats = encoder_features(model, store.image(case), device)
            if not per_level_feats:
                per_level_feats = [[] for _ in feats]
                per_level_targets = [[] for _ in feats]
            label = store.label(case)
            for level, f in enumerate(feats):
                per_level_feats[level].append(f)
                per_level_targets[level].append(pooled_target(label, f.shape[1:]))
        for level, (feats, targets) in enumerate(zip(per_level_feats, per_level_targets), start=1):
            scored = probe_level(feats, targets, score, max_voxels=max_voxels, seed=seed + draw,
                                 min_samples_per_feature=min_samples_per_feature)
            if scored["reason"]:
                log.warning("probe draw %d, level %d: no R^2 (%s)", draw, level, scored["reason"])
            rows.append({"level": level, "draw": draw, "score": score, **scored})
        elapsed = time.monotonic() - started
        log.info(
            "probe draw %d/%d (%s): %.0f s, ETA %.0f s",
            draw + 1, n_draws, ", ".join(cases), elapsed, elapsed / (draw + 1) * (n_draws - draw - 1),
        )
    return rows


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc})") from exc


def write_probe_tsv(path, rows: list[dict]) -> None:
    """One row per (draw, level); r2 "nan" with a `reason` when the level was not scored."""
    lines = ["\t".join(TSV_COLUMNS)]
    for r in rows:
        lines.append("\t".join([str(r["level"]), str(r["draw"]), f"{r['r2']:.6f}", str(r["n_voxels"]),
                                str(r["n_features"]), r["score"], r["reason"]]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def cli_probe(args) -> int:
    from massl.model.cpu_conv import set_cpu_conv3d
    from massl.model.files import load_model

    set_threads(args.threads)
    options = resolved(load_config(args.config))["probe"]
    run_options = {k: options[k] for k in PROBE_DEFAULTS if k not in PROBE_ANALYSIS_KEYS}
    run = Path(args.run)
    model_path = run / "model.pt"
    if not model_path.is_file():
        raise DataError(f"{model_path}: no trained model (is the run finished?)")
    summary = _read_json(run / "summary.json") if (run / "summary.json").is_file() else {}
    device = pick_device(args.device)
    model, meta = load_model(model_path, device)
    training = model_training(meta)
    pin_cpu_isa(training.cpu_isa)  # the run's CPU kernels, before the first forward pass
    set_cpu_conv3d(model, training.cpu_conv3d)
    model.eval()

    if meta.get("status", summary.get("status")) == "diverged":
        log.warning("%s: run diverged; writing NaN probe rows", run)
        rows = [
            {"level": level, "draw": draw, "r2": float("nan"), "n_voxels": 0, "n_features": n_features,
             "score": options["score"], "reason": DIVERGED}
            for draw in range(options["n_draws"])
            for level, n_features in enumerate(level_channels(model), start=1)
        ]
    else:
        split_path = Path(args.split)
        split = _read_json(split_path)
        for key in ("dataset", "rep"):  # another split's test scans may have been the run's training scans
            trained, given = meta.get(key, summary.get(key)), split.get(key)
            if trained is not None and given is not None and trained != given:
                raise DataError(f"{split_path}: a split of {key} {given!r}, but the run was trained on {trained!r}")
        test_cases = split.get("test")
        if not test_cases:
            raise DataError(f"{split_path}: no test cases")
        rows = run_probe(model, CaseStore(args.cases), test_cases, device=device, **run_options)
    write_probe_tsv(args.out, rows)
    return 0
