"""Inference: sliding-window segmentation of a whole volume by the paper-scale network, and
the number of windows a volume takes."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from massl.bench.scales import BRATS_VOLUME
from massl.bench.steps import amp_name
from massl.bench.timing import _sync
from massl.config import ModelConfig, TrainConfig
from massl.device import autocast_dtype
from massl.evaluation.inference import sliding_window_predict, window_starts
from massl.methods import METHODS
from massl.model.cpu_conv import set_cpu_conv3d
from massl.model.network import build_model


def count_windows(shape, patch, overlap: float) -> int:
    # An axis shorter than the window is padded up to one window, as sliding_window_predict does.
    return math.prod(len(window_starts(max(s, p), p, overlap)) for s, p in zip(shape, patch))


def measure_inference(device: torch.device, quick: bool, volume_shape=BRATS_VOLUME) -> dict:
    """Sliding-window segmentation of a `volume_shape` volume by the paper-scale network with
    the library's defaults (window = training patch, 50 % overlap, batched windows). Quick mode
    times one window-deep slab and scales by the number of windows."""
    cfg = TrainConfig()
    torch.manual_seed(0)
    model = set_cpu_conv3d(build_model(ModelConfig(), METHODS["cnn"]), cfg.cpu_conv3d).to(device).eval()
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
            "extrapolated": timed_windows != windows, "amp": amp_name(amp_dtype)}
