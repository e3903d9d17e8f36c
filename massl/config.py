"""The configuration of the library: its sections, their defaults and allowed values, and the
one resolution of a workflow config (`resolve_config`, the `massl config` command).

Defaults are the paper scale (SPEC sections 1-4). The workflow's YAML has `model:` and
`training:` sections that map one-to-one onto the dataclasses below; unknown keys and wrong
values are rejected with a message naming them. `resolve_config` fills every library section
(training, model, preprocessing, split, probe) and runs every feasibility check of the grid, so
that every reader of the resolved config (`massl train`, `probe`, `preprocess`, `split`, the
workflow, `analysis/` through results/config.json) does plain lookups and nothing fills a
default a second time. `CHOICES` is the only list of each option's allowed values;
`schema_facts()` hands them and the defaults to the test that compares them with the schema.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import types
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from massl.errors import ConfigError
from massl.methods import METHODS, PAPER_METHODS, SETTING_PATTERN, describe

FORMATS = ("brats18", "wmh17", "nnunet")
# Allowed values of every option that is a choice, by section (the schema's enums).
CHOICES: dict[str, dict[str, tuple]] = {
    "model": {
        "spatial_dims": (2, 3),
        "downsample": ("avgpool", "strided"),  # avgpool = paper text, strided = released code
    },
    "training": {
        "attention_grad": ("detach", "encoder"),  # detach = paper, encoder = released code
        "dice_over": ("sample", "batch"),
        "seg_loss": ("dice", "dice_bce"),
        "amp": ("auto", "off", "bf16"),
        "cpu_conv3d": ("onednn", "torch"),  # massl.model.cpu_conv | PyTorch's own kernel choice
        "cpu_isa": ("native", "avx2"),  # massl.device.pin_cpu_isa
        "stopping": ("budget", "plateau"),  # massl.training.stopping
        "case_sampling": ("without_replacement", "with_replacement"),  # massl.data.sampling
    },
    "probe": {
        "score": ("held_out", "in_sample"),
        "variance": ("within", "pooled"),
    },
    "preprocess": {
        "crop_center": ("image", "brain"),
        "normalize": ("max", "percentile", "brain_percentile", "zscore", "brain_zscore", "none"),
    },
    "split": {"balance_by": (None, "site")},
    "dataset": {"format": FORMATS},
}


@dataclass
class ModelConfig:
    spatial_dims: int = 3  # 3 = the paper's network; 2 = the same network with 2D ops (fast demo)
    in_channels: int = 1
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    downsample: str = "avgpool"  # SPEC option: avgpool (paper text) | strided (released code)

    def validate(self) -> None:
        for name in CHOICES["model"]:
            _choice(f"model.{name}", getattr(self, name), CHOICES["model"][name])
        if len(self.channels) < 2 or any(int(c) <= 0 for c in self.channels):
            raise ConfigError(f"model.channels must be >= 2 positive integers, got {self.channels}")


@dataclass
class TrainConfig:
    # Patch (z, y, x) in 3D or (y, x) in 2D; 2D patches are crops of single slices.
    patch_size: list[int] = field(default_factory=lambda: [32, 128, 128])
    batch_size: int = 1  # labeled samples per step; joint/alternating draw as many unlabeled
    lr_joint: float = 1e-3  # joint (Eq. 2); not given by the paper
    lr_segmentation: float = 1e-2  # supervised, fine-tuning and the alternating seg step
    lr_reconstruction: float = 1e-3  # autoencoder and the alternating rec step
    lr_autoencoder: float | None = None  # the autoencoder alone (not given by the paper); null = lr_reconstruction
    lr_step_iterations: int = 500  # StepLR period
    lr_gamma: float = 0.5
    # Epoch budget by number of labeled cases, as released: first row whose bound >= n_labeled.
    epochs_by_labeled: list[list[int]] = field(default_factory=lambda: [[20, 252], [50, 152], [120, 52]])
    max_iterations: int | None = None  # optional hard cap on total iterations
    autoencoder_max_iterations: int | None = None  # the autoencoder's cap instead; null = max_iterations
    validate_every_epochs: int = 20
    validate_every_iterations: int | None = None  # overrides validate_every_epochs when set
    max_validation_cases: int | None = None  # None = all validation cases
    # Stopping (massl.training.stopping): the budget above is always the hard cap.
    stopping: str = "budget"  # budget (paper: fixed budget) | plateau (stop when validation stops improving)
    patience_validations: int = 5  # plateau: consecutive validations without improvement before stopping
    min_delta: float = 0.0  # improvement threshold: Dice points, or a fraction of the best MSE (autoencoder)
    min_iterations: int = 0  # plateau: never stop before this iteration
    case_sampling: str = "without_replacement"  # paper: every case once per pass | with_replacement
    attention_grad: str = "detach"  # SPEC option: detach (paper) | encoder (released code)
    foreground_fraction: float = 0.0  # labeled patches forced to hold target (0 = paper's uniform crop)
    seg_loss: str = "dice"  # dice (paper) | dice_bce (+ binary cross-entropy: no all-background plateau)
    dice_over: str = "sample"  # sample (paper: per image) | batch (one Dice over the 2D batch)
    augment: bool = True  # rotation, scaling, left-right flip (paper)
    rotate_degrees: float = 10.0
    scale_range: list[float] = field(default_factory=lambda: [0.9, 1.1])
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | off | bf16
    cpu_conv3d: str = "onednn"  # onednn (massl.model.cpu_conv) | torch (PyTorch's own kernel choice)
    # Float order (README, "Reproducibility"): the CPU kernels' instruction set, native | avx2
    # (massl.device.pin_cpu_isa), and the torch threads of one run: null = all of the job's
    # threads; n = n each, with a job's threads training several runs side by side
    # (massl.training.parallel), so that the job's thread count does not change a result.
    cpu_isa: str = "native"
    threads_per_run: int | None = None
    checkpoint_every_iterations: int = 200
    seed: int = 0  # base seed; a run's seed is derived from it and the repetition
    threshold: float = 0.5
    inference_overlap: float = 0.5
    inference_batch: int = 8  # sliding-window patches per forward pass
    # Baselines beyond the paper (massl.training.baselines), their published defaults:
    ema_decay: float = 0.99  # Mean Teacher: teacher = ema_decay * teacher + (1 - ema_decay) * student
    consistency_weight: float = 0.1  # Mean Teacher: weight of the student-teacher MSE (SSL4MIS's default)
    consistency_noise_std: float = 0.1  # Mean Teacher: Gaussian input noise, clipped to +-2 std
    cps_weight: float = 1.5  # CPS: weight of the cross pseudo supervision (the paper's PASCAL VOC value)
    rampup_fraction: float = 0.25  # sigmoid ramp-up of both weights over this share of the planned iterations

    def validate(self) -> None:
        for name in ("attention_grad", "amp", "cpu_conv3d", "cpu_isa", "dice_over", "seg_loss", "stopping", "case_sampling"):
            _choice(f"training.{name}", getattr(self, name), CHOICES["training"][name])
        for name in ("batch_size", "lr_step_iterations", "validate_every_epochs", "checkpoint_every_iterations",
                     "patience_validations"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"training.{name} must be > 0, got {getattr(self, name)}")
        for name in ("lr_joint", "lr_segmentation", "lr_reconstruction", "lr_gamma"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"training.{name} must be > 0, got {getattr(self, name)}")
        if self.validate_every_iterations is not None and self.validate_every_iterations <= 0:
            raise ConfigError(f"training.validate_every_iterations must be > 0 or null, got {self.validate_every_iterations}")
        if self.threads_per_run is not None and self.threads_per_run <= 0:
            raise ConfigError(f"training.threads_per_run must be > 0 or null, got {self.threads_per_run}")
        for name in ("max_iterations", "autoencoder_max_iterations"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"training.{name} must be > 0 or null, got {getattr(self, name)}")
        if self.lr_autoencoder is not None and not float(self.lr_autoencoder) > 0:
            raise ConfigError(f"training.lr_autoencoder must be > 0 or null, got {self.lr_autoencoder}")
        for row in self.epochs_by_labeled:
            if len(row) != 2 or row[0] <= 0 or row[1] <= 0:
                raise ConfigError(f"training.epochs_by_labeled rows are [max_labeled, epochs] > 0, got {row}")
        if not 0 <= self.min_delta < 1:  # 1 Dice point or 100 % of the MSE: nothing could ever improve
            raise ConfigError(f"training.min_delta must be in [0, 1), got {self.min_delta}")
        if self.min_iterations < 0:
            raise ConfigError(f"training.min_iterations must be >= 0, got {self.min_iterations}")
        if not 0 <= self.foreground_fraction <= 1:
            raise ConfigError(f"training.foreground_fraction must be in [0, 1], got {self.foreground_fraction}")
        for name in ("ema_decay", "rampup_fraction"):
            if not 0 <= float(getattr(self, name)) <= 1:
                raise ConfigError(f"training.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("consistency_weight", "consistency_noise_std", "cps_weight"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigError(f"training.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.inference_overlap < 1:
            raise ConfigError(f"training.inference_overlap must be in [0, 1), got {self.inference_overlap}")

    def epochs_for(self, n_labeled: int) -> int:
        for bound, epochs in sorted(self.epochs_by_labeled):
            if n_labeled <= bound:
                return int(epochs)
        return int(sorted(self.epochs_by_labeled)[-1][1])

    def for_autoencoder(self) -> TrainConfig:
        """The settings the autoencoder pretraining trains with: its own learning rate and
        iteration cap where they are set (the alternating runs' reconstruction step keeps
        lr_reconstruction)."""
        return replace(self,
                       lr_reconstruction=self.lr_reconstruction if self.lr_autoencoder is None else self.lr_autoencoder,
                       max_iterations=self.max_iterations if self.autoencoder_max_iterations is None
                       else self.autoencoder_max_iterations)


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} = {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _from_dict(cls, data: dict | None, section: str):
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in '{section}': {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    hints = get_type_hints(cls)
    for name, value in data.items():
        if not _has_type(value, hints[name]):
            raise ConfigError(f"{section}.{name} = {value!r} has the wrong type; expected {_type_name(hints[name])}")
    obj = cls(**data)
    obj.validate()
    return obj


def _has_type(value: Any, hint) -> bool:
    """isinstance for the annotations used here (int, float, bool, str, list[...], X | None).
    bool is not an int here (YAML `yes` for a batch size), but an int is a float."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_has_type(value, option) for option in get_args(hint))
    if origin is list:
        return isinstance(value, list) and all(_has_type(v, get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if hint is float else hint)


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("None", "null")


def model_config(data: dict | None) -> ModelConfig:
    return _from_dict(ModelConfig, data, "model")


def train_config(data: dict | None) -> TrainConfig:
    return _from_dict(TrainConfig, data, "training")


def check_geometry(training: TrainConfig, model: ModelConfig) -> None:
    """The patch fits the network (one size per spatial axis, each divisible by the network's
    size multiple) and the augmentation ranges make sense."""
    multiple = 2 ** (len(model.channels) - 1)
    if len(training.patch_size) != model.spatial_dims or any(p % multiple for p in training.patch_size):
        raise ConfigError(
            f"training.patch_size {training.patch_size} must have {model.spatial_dims} sizes (model.spatial_dims) "
            f"divisible by {multiple} (2 ** (levels - 1) for {len(model.channels)} levels)")
    low, high = training.scale_range
    if not 0 < low <= high or training.rotate_degrees < 0:
        raise ConfigError(f"training.scale_range must be [low, high] with 0 < low <= high and rotate_degrees >= 0, "
                          f"got {training.scale_range} and {training.rotate_degrees}")


def as_dict(obj) -> dict:
    return asdict(obj)


def model_training(meta: dict) -> TrainConfig:
    """The effective training section a model.pt records (patch, overlap, amp, cpu_conv3d, ...);
    older or hand-made files only the config, whose global section the dataset's overrides update."""
    if meta.get("training"):
        return train_config(meta["training"])
    config = meta.get("config") or {}
    dataset = (config.get("datasets") or {}).get(meta.get("dataset")) or {}
    return train_config({**(config.get("training") or {}), **(dataset.get("training") or {})})


# Preprocessing options (massl.data.preprocess) -------------------------------------------------

PREPROCESS_DEFAULTS = {
    "brats18": {"clip_below": 30.0, "crop_xy": [200, 200], "crop_center": "image", "normalize": "max",
                "percentiles": [1.0, 99.9], "brain_threshold": 0.1, "target_labels": [1, 2, 4], "ignore_labels": []},
    "wmh17": {"clip_below": None, "crop_xy": [200, 200], "crop_center": "brain", "normalize": "brain_percentile",
              "percentiles": [1.0, 99.9], "brain_threshold": 0.1, "target_labels": [1], "ignore_labels": [2]},
    "nnunet": {"clip_below": None, "crop_xy": None, "crop_center": "image", "normalize": "percentile",
               "percentiles": [0.5, 99.5], "brain_threshold": 0.1, "target_labels": [1], "ignore_labels": []},
}


def preprocess_options(fmt: str, options: dict | None, section: str = "preprocess", root=None) -> dict:
    """The format's defaults updated with `options`, checked; JSON-native values only, so the
    result compares equal to the copy stored in a case's meta file. nnU-Net data whose
    `ignore_labels` are not given, with a `root`: the label named `ignore` in its dataset.json."""
    if fmt not in PREPROCESS_DEFAULTS:
        raise ConfigError(f"unknown dataset format {fmt!r}; allowed: {', '.join(PREPROCESS_DEFAULTS)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(PREPROCESS_DEFAULTS[fmt]))
    if unknown:
        raise ConfigError(f"unknown key(s) in {section}: {', '.join(unknown)}; "
                          f"allowed: {', '.join(PREPROCESS_DEFAULTS[fmt])}")
    if fmt == "nnunet" and "ignore_labels" not in options and root is not None:
        from massl.data.discover import DataFileError, read_nnunet_dataset

        try:
            ignore = read_nnunet_dataset(root).ignore_value
        except DataFileError:  # not an nnU-Net folder: the dataset check says what it is instead
            ignore = None
        options["ignore_labels"] = [] if ignore is None else [ignore]
    opts = {**PREPROCESS_DEFAULTS[fmt], **options}
    try:
        opts["clip_below"] = None if opts["clip_below"] is None else float(opts["clip_below"])
        opts["crop_xy"] = None if opts["crop_xy"] is None else [int(v) for v in opts["crop_xy"]]
        opts["percentiles"] = [float(v) for v in opts["percentiles"]]
        opts["brain_threshold"] = float(opts["brain_threshold"])
        opts["target_labels"] = sorted(int(v) for v in opts["target_labels"])
        opts["ignore_labels"] = sorted(int(v) for v in opts["ignore_labels"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}: malformed value ({exc})") from None
    if opts["crop_xy"] is not None and (len(opts["crop_xy"]) != 2 or min(opts["crop_xy"]) <= 0):
        raise ConfigError(f"{section}.crop_xy must be null or two positive sizes [x, y], got {opts['crop_xy']}")
    for key in ("crop_center", "normalize"):
        allowed = CHOICES["preprocess"][key]
        if opts[key] not in allowed:
            raise ConfigError(f"{section}.{key} = {opts[key]!r}; allowed: {', '.join(allowed)}")
    lo_hi = opts["percentiles"]
    if len(lo_hi) != 2 or not 0 <= lo_hi[0] < lo_hi[1] <= 100:
        raise ConfigError(f"{section}.percentiles must be [lo, hi] with 0 <= lo < hi <= 100, got {lo_hi}")
    if not 0 < opts["brain_threshold"] < 1:
        raise ConfigError(f"{section}.brain_threshold must be in (0, 1), got {opts['brain_threshold']}")
    if not opts["target_labels"] or set(opts["target_labels"]) & set(opts["ignore_labels"]):
        raise ConfigError(f"{section}: target_labels must be non-empty and disjoint from ignore_labels")
    return opts


# Split sizes (massl.data.splits; the paper's are its DEFAULT_PROTOCOL) --------------------------

SPLIT_DEFAULTS = {"validation": None, "balance_by": None}  # null validation = every case left over


def split_section(entry: dict, dataset: str) -> dict:
    """`datasets.<dataset>.split` with `validation` and `balance_by` filled, checked."""
    for key in ("split", "settings"):
        if not isinstance(entry.get(key), dict):
            raise ConfigError(f"datasets.{dataset}.{key} is missing or not a mapping")
    split = entry["split"]
    unknown = sorted(set(split) - {"pool", "test", *SPLIT_DEFAULTS})
    if unknown:
        raise ConfigError(f"datasets.{dataset}.split: unknown key(s) {', '.join(unknown)}")
    for key in ("pool", "test"):
        if not isinstance(split.get(key), int) or isinstance(split.get(key), bool):
            raise ConfigError(f"datasets.{dataset}.split.{key} must be an integer, found {split.get(key)!r}")
    split = {**SPLIT_DEFAULTS, **split}
    if split["validation"] is not None and (not isinstance(split["validation"], int)
                                            or isinstance(split["validation"], bool)):
        raise ConfigError(f"datasets.{dataset}.split.validation must be an integer or null")
    if split["balance_by"] not in CHOICES["split"]["balance_by"]:
        raise ConfigError(f"datasets.{dataset}.split.balance_by must be 'site' or null, "
                          f"found {split['balance_by']!r}")
    return split


# Probe options (massl.evaluation.probe) ----------------------------------------------------------

# Which runs the workflow probes ...
PROBE_SELECTION_DEFAULTS = {"dataset": "brats18", "setting": "50L70U", "methods": ["cnn", "mssl_alter", "massl_alter"]}
# ... and how `massl probe` probes them (`variance` only the analysis reads: Table 3's bracket).
PROBE_DEFAULTS = {"n_images": 5, "n_draws": 5, "max_voxels": 200_000, "seed": 0,
                  "score": "held_out", "min_samples_per_feature": 10, "variance": "within"}
PROBE_ANALYSIS_KEYS = ("variance",)


def probe_options(section: dict | None) -> dict:
    """The options of the config's `probe` section (all but the run selection) with defaults
    filled in and values checked."""
    options = dict(PROBE_DEFAULTS)
    section = {k: v for k, v in (section or {}).items() if k not in PROBE_SELECTION_DEFAULTS}
    unknown = sorted(set(section) - set(PROBE_DEFAULTS))
    if unknown:
        allowed = [*PROBE_SELECTION_DEFAULTS, *PROBE_DEFAULTS]
        raise ConfigError(f"unknown key(s) in 'probe': {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    options.update(section)
    for key, value in options.items():
        if key in CHOICES["probe"]:
            if value not in CHOICES["probe"][key]:
                raise ConfigError(f"probe.{key} must be one of {', '.join(CHOICES['probe'][key])}, got {value!r}")
            continue
        minimum = 0 if key in ("seed", "min_samples_per_feature") else 1
        number = (int, float) if key == "min_samples_per_feature" else int
        if not isinstance(value, number) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"probe.{key} must be {'a number' if number != int else 'an integer'} >= {minimum}, "
                              f"got {value!r}")
    if options["score"] == "held_out" and options["n_images"] < 2:
        raise ConfigError("probe.n_images must be >= 2 with probe.score: held_out (one image is held out of "
                          f"each fit), got {options['n_images']}; use more images or probe.score: in_sample")
    return options


def probe_section(section: dict | None) -> dict:
    """The whole `probe` section: the run selection and the options, every key filled."""
    section = dict(section or {})
    options = probe_options(section)
    selection = {**copy.deepcopy(PROBE_SELECTION_DEFAULTS),
                 **{k: v for k, v in section.items() if k in PROBE_SELECTION_DEFAULTS}}
    if not isinstance(selection["dataset"], str):
        raise ConfigError(f"probe.dataset must be a dataset key, got {selection['dataset']!r}")
    if not isinstance(selection["setting"], str) or not SETTING_NAME.match(selection["setting"]):
        raise ConfigError(f"probe.setting must read <labeled>L<unlabeled>U, got {selection['setting']!r}")
    if not isinstance(selection["methods"], list) or not selection["methods"]:
        raise ConfigError(f"probe.methods must be a non-empty list of method ids, got {selection['methods']!r}")
    return {**selection, **options}


# The grid: the workflow config's feasibility checks --------------------------------------------

SETTING_NAME = re.compile(SETTING_PATTERN)
# Synthetic data (`massl synth`) exists for these formats only.
SYNTHETIC_FORMATS = ("brats18", "wmh17")
# Keys of a dataset entry the library reads, with their defaults (the sections come on top).
DATASET_DEFAULTS = {"root": None, "include_lgg": False, "channel": None}


def apply_data_dirs(cfg: dict) -> None:
    """`--config brats18_dir=PATH wmh17_dir=PATH` select the real data of those datasets."""
    for key in ("brats18", "wmh17"):
        path = cfg.get(f"{key}_dir")
        if path is None:
            continue
        if key not in cfg["datasets"]:
            raise ConfigError(f"config key '{key}_dir' is set but 'datasets' has no '{key}' entry")
        cfg["datasets"][key]["root"] = str(path)


def setting_counts(dataset: str, name: str, counts) -> list:
    match = SETTING_NAME.match(str(name))
    if match is None:
        raise ConfigError(f"config key 'datasets.{dataset}.settings.{name}': the name must read "
                          f"<labeled>L<unlabeled>U, e.g. 20L100U")
    if not isinstance(counts, (list, tuple)) or [int(match[1]), int(match[2])] != list(counts):
        raise ConfigError(
            f"config key 'datasets.{dataset}.settings.{name}': counts {list(counts) if isinstance(counts, (list, tuple)) else counts} "
            f"do not match the name (expected [{match[1]}, {match[2]}])"
        )
    return counts


def n_split_cases(split: dict) -> int:
    """Cases a split needs: pool + test + validation (at least one validation scan)."""
    return split["pool"] + split["test"] + (split["validation"] or 1)


def check_dataset(name: str, ds: dict) -> None:
    key = f"datasets.{name}"
    if ds["root"] is not None and not Path(ds["root"]).is_dir():
        raise ConfigError(f"config key '{key}.root': folder {ds['root']} not found")
    synthetic = ds.get("synthetic") or {}
    if ds["root"] is None:
        if ds["format"] not in SYNTHETIC_FORMATS:
            raise ConfigError(f"config key '{key}.root': format {ds['format']} has no synthetic data; give a folder")
        for field_name in ("n_cases", "shape"):
            if field_name not in synthetic:
                raise ConfigError(f"config key '{key}.synthetic.{field_name}' is required for synthetic data "
                                  "(root: null)")
    split = ds["split"]
    for setting, counts in ds["settings"].items():
        labeled, unlabeled = setting_counts(name, setting, counts)
        if max(labeled, unlabeled) > split["pool"]:
            raise ConfigError(
                f"config key '{key}.settings.{setting}': {labeled} labeled / {unlabeled} unlabeled "
                f"cannot be drawn from a training pool of {split['pool']} ('{key}.split.pool')"
            )
    if ds["root"] is None and n_split_cases(split) > synthetic["n_cases"]:
        raise ConfigError(
            f"config key '{key}.split': pool {split['pool']} + test {split['test']} + validation "
            f"{split['validation'] or 1} needs {n_split_cases(split)} cases, but "
            f"'{key}.synthetic.n_cases' is {synthetic['n_cases']}"
        )


def check_grid(cfg: dict) -> None:
    """Every dataset, the statistics' reference rows and the probe can be run as configured.
    `methods` left out means the paper's nine; `stats` left out is not checked (the workflow's)."""
    for name, ds in cfg["datasets"].items():
        check_dataset(name, ds)
    methods = cfg.get("methods") or list(PAPER_METHODS)
    for role in ("reference", "best"):
        if role in (cfg.get("stats") or {}) and cfg["stats"][role] not in methods:
            raise ConfigError(f"config key 'stats.{role}': {cfg['stats'][role]} is not one of 'methods'")
    probe = cfg["probe"]
    if probe["dataset"] not in cfg["datasets"]:
        raise ConfigError(f"config key 'probe.dataset': no dataset {probe['dataset']!r} in 'datasets'")
    missing = sorted(set(probe["methods"]) - set(methods))
    if missing:
        raise ConfigError(f"config key 'probe.methods': {', '.join(missing)} not in 'methods'")
    test = cfg["datasets"][probe["dataset"]]["split"]["test"]
    if probe["n_images"] > test:
        raise ConfigError(f"config key 'probe.n_images': {probe['n_images']} > the {test} test scans of {probe['dataset']}")


def probe_setting(cfg: dict) -> str:
    """probe.setting if the probe dataset has it, else the setting with the nearest labeled count."""
    wanted = cfg["probe"]["setting"]
    names = list(cfg["datasets"][cfg["probe"]["dataset"]]["settings"])
    if wanted in names:
        return wanted
    labeled = int(SETTING_NAME.match(wanted)[1])
    return min(names, key=lambda s: abs(int(SETTING_NAME.match(s)[1]) - labeled))


# The resolution --------------------------------------------------------------------------------

def _section(path: str, build, *args):
    """`build(*args)`, with a ConfigError's message led by the config key it is about."""
    try:
        return build(*args)
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("config key"):
            raise
        raise ConfigError(f"config key '{path}': {message}") from None


def _check_methods(cfg: dict) -> None:
    methods = cfg.get("methods")
    if methods is not None and (not isinstance(methods, list) or not methods):
        raise ConfigError(f"config key 'methods': a non-empty list of method ids, got {methods!r}")
    for where, listed in (("methods", methods or []), ("probe.methods", cfg["probe"]["methods"])):
        unknown = [m for m in listed if m not in METHODS]
        if unknown:
            raise ConfigError(f"config key '{where}': unknown method(s) {', '.join(map(repr, unknown))}; "
                              f"allowed: {', '.join(METHODS)}")


def resolve_config(raw: dict) -> dict:
    """The workflow config as every reader uses it (`massl config`; docs: the issue-16 contract).

    `brats18_dir` / `wmh17_dir` set the datasets' roots; top-level `training` and `model` become
    the full sections and each dataset's `training` / `model` the full effective ones (global
    values updated with its overrides), checked together; each dataset gets its full
    `preprocess` options, `split` (validation and balance_by filled) and the library's dataset
    keys (root, include_lgg, channel); `probe` gets every key, its `setting` replaced by the one
    actually probed; every feasibility check of the grid runs; `library` holds
    `massl.methods.describe()`. Keys the workflow owns (results_dir, resources, stats, ...) are
    kept as given. Idempotent: resolving a resolved config returns it unchanged.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '(top level)': a config is a mapping, got {type(raw).__name__}")
    cfg = copy.deepcopy(raw)
    datasets = cfg.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError("config key 'datasets': required, a mapping of at least one dataset")
    for name, ds in datasets.items():
        if not isinstance(ds, dict):
            raise ConfigError(f"config key 'datasets.{name}': a mapping, got {ds!r}")
        for key in ("format", "split", "settings"):
            if key not in ds:
                raise ConfigError(f"config key 'datasets.{name}.{key}' is required")
        if ds["format"] not in FORMATS:
            raise ConfigError(f"config key 'datasets.{name}.format': {ds['format']!r} is not a format; "
                              f"allowed: {', '.join(FORMATS)}")
        for key, default in DATASET_DEFAULTS.items():
            ds.setdefault(key, default)
    apply_data_dirs(cfg)

    training = _section("training", lambda: as_dict(train_config(cfg.get("training"))))
    model = _section("model", lambda: as_dict(model_config(cfg.get("model"))))
    cfg["training"], cfg["model"] = training, model
    for name, ds in datasets.items():
        where = f"datasets.{name}"
        ds["split"] = _section(f"{where}.split", split_section, ds, name)
        check_dataset(name, ds)
        ds["preprocess"] = _section(f"{where}.preprocess", preprocess_options, ds["format"], ds.get("preprocess"),
                                    f"{where}.preprocess", ds["root"])
        ds_training = _section(f"{where}.training", lambda: train_config({**training, **(ds.get("training") or {})}))
        ds_model = _section(f"{where}.model", lambda: model_config({**model, **(ds.get("model") or {})}))
        _section(f"{where}.training", check_geometry, ds_training, ds_model)
        ds["training"], ds["model"] = as_dict(ds_training), as_dict(ds_model)

    cfg["probe"] = _section("probe", probe_section, cfg.get("probe"))
    _check_methods(cfg)
    check_grid(cfg)
    cfg["probe"]["setting"] = probe_setting(cfg)
    cfg["library"] = describe()
    return cfg


def is_resolved(cfg: dict) -> bool:
    """Whether `cfg` came out of `resolve_config` (which adds the `library` key)."""
    return isinstance(cfg, dict) and "library" in cfg


def resolved(cfg: dict) -> dict:
    """`cfg` if it is resolved already (results/config.json), else `resolve_config(cfg)`."""
    return cfg if is_resolved(cfg) else resolve_config(cfg)


def dataset_entry(cfg: dict, dataset: str) -> dict:
    """`datasets.<dataset>` of a resolved config; ConfigError naming the configured ones."""
    datasets = cfg.get("datasets") or {}
    if dataset not in datasets:
        raise ConfigError(f"dataset {dataset!r} is not in the config; configured: {', '.join(datasets) or 'none'}")
    return datasets[dataset]


def schema_facts() -> dict:
    """The library's side of workflow/schemas/config.schema.yaml, for the test that compares the
    two: every choice's allowed values and every section's defaults (JSON-native)."""
    return {
        "choices": {section: {key: list(values) for key, values in options.items()}
                    for section, options in CHOICES.items()},
        "defaults": {
            "model": asdict(ModelConfig()),
            "training": asdict(TrainConfig()),
            "preprocess": copy.deepcopy(PREPROCESS_DEFAULTS),
            "split": dict(SPLIT_DEFAULTS),
            "probe": {**copy.deepcopy(PROBE_SELECTION_DEFAULTS), **PROBE_DEFAULTS},
            "dataset": dict(DATASET_DEFAULTS),
        },
    }


# Files and the `massl config` command ----------------------------------------------------------

def parse_config_text(text: str, where: str) -> dict:
    """A config from JSON or YAML text; ConfigError naming `where` when it is neither."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: neither JSON nor YAML ({exc})") from None
    return {} if data is None else data


def load_config(path: str | Path) -> dict:
    """Read a workflow config (JSON or YAML) as a plain dict; `-` reads standard input."""
    if str(path) == "-":
        return parse_config_text(sys.stdin.read(), "standard input")
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    return parse_config_text(text, str(path))


def config_json(cfg: dict) -> str:
    """A resolved config as JSON text, its mappings in the order given: the order of the
    datasets and settings is the order of the tables' columns."""
    return json.dumps(cfg, indent=2) + "\n"


def cli_config(args) -> int:
    """`massl config --in FILE|- [--out FILE]`: resolve and check a workflow config; print it as
    JSON, or write it to FILE (atomically, and only when its content changes: the file's age
    says when the config last changed)."""
    cfg = resolve_config(load_config(args.input))
    if args.out is None:
        sys.stdout.write(config_json(cfg))
        return 0
    from massl.io import atomic_write_json

    out = Path(args.out)
    try:
        if json.loads(out.read_text()) == cfg:
            return 0
    except (OSError, ValueError):
        pass  # absent or damaged: (re)write it
    atomic_write_json(out, cfg)
    return 0
