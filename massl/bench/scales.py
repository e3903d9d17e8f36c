"""What `massl bench` measures: the two network scales, the strategies standing for the
training strategies, and the size of a preprocessed BraTS scan."""

from __future__ import annotations

from dataclasses import dataclass

from massl.config import ModelConfig, TrainConfig

_PAPER_MODEL, _PAPER_TRAINING = ModelConfig(), TrainConfig()  # the library's defaults are the paper's


@dataclass(frozen=True)
class Scale:
    name: str
    spatial_dims: int
    patch: tuple[int, ...]
    batch_size: int  # labeled samples per step (as many unlabeled where the strategy uses them)
    channels: tuple[int, ...] = tuple(_PAPER_MODEL.channels)


PAPER = Scale("paper", _PAPER_MODEL.spatial_dims, tuple(_PAPER_TRAINING.patch_size), _PAPER_TRAINING.batch_size)
DEMO = Scale("demo", 2, (32, 32), 4)  # the demo grid, config/config.yaml (the library holds no demo scale)
SCALES = (DEMO, PAPER)
SCALE_NAMES = tuple(s.name for s in SCALES)
# The method whose step stands for each strategy, in measuring order: growing memory, so that
# memory an allocator kept from one measurement never counts as the next one's peak.
STRATEGY_METHODS = {"supervised": "cnn", "pretrain": "autoencoder", "alternating": "massl_alter", "joint": "massl_l07"}
BRATS_VOLUME = (155, 200, 200)  # a preprocessed BraTS scan (z, y, x): 155 slices, cropped to 200 x 200
