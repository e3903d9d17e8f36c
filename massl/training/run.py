"""`massl train`: one run folder per (dataset, setting, method, repetition).

A run reads the resolved config, the split file and the preprocessed cases, trains with the
method's strategy (resuming from `<out>/checkpoints/` when present), tests the best checkpoint
(per_case.tsv, the paper) and the final weights (per_case_final.tsv) on the split's test scans
and writes the run folder of docs/architecture.md. `summary.json` and `model.pt` are written
last: together they mark a finished run.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from massl.config import (
    ModelConfig,
    TrainConfig,
    as_dict,
    dataset_entry,
    load_config,
    model_config,
    resolved,
    train_config,
)
from massl.data.sampling import PatchSampler
from massl.data.splits import load_split
from massl.data.store import CaseStore
from massl.device import autocast_dtype, cpu_isa_record, device_name, pick_device, pin_cpu_isa
from massl.errors import ConfigError, DataError
from massl.evaluation.scoring import score_test_cases, write_case_table, write_example, write_tsv
from massl.io import atomic_write_json, provenance
from massl.methods import Method, get_method
from massl.model.cpu_conv import set_cpu_conv3d
from massl.model.files import load_model, save_model
from massl.model.network import MASSLNet, build_model
from massl.training.loop import (
    LOG_COLUMNS,
    TrainData,
    Trainer,
    TrainResult,
    Validator,
    run_fingerprint,
    training_schedule,
)
from massl.training.parallel import train_all
from massl.training.strategies import make_strategy, strategy_class

log = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """Everything a run is defined by, resolved from the config and the command line."""

    config: dict  # resolved (massl.config.resolve_config)
    dataset: str
    setting: str
    method: Method
    rep: int
    out: Path
    training: TrainConfig
    model: ModelConfig
    split_path: Path  # the split JSON
    store_path: Path  # the preprocessed dataset's cases.tsv (its arrays beside it)
    autoencoder: Path | None = None

    @property
    def seed(self) -> int:
        """Same for every method of a repetition, so methods are compared on paired draws."""
        return self.training.seed + 1000 * self.rep

    @property
    def identity(self) -> dict:
        return {"dataset": self.dataset, "setting": self.setting, "method": self.method.id,
                "method_label": self.method.label, "rep": self.rep}

    @property
    def data_source(self) -> str:
        return "synthetic" if self.config["datasets"][self.dataset]["root"] is None else "real"


def resolve_run(config: dict, dataset: str, setting: str, method_id: str, rep: int, out, *, split, cases,
                autoencoder=None) -> RunSpec:
    """The run of `method_id` on `dataset`/`setting`/`rep`, trained on the split file `split`
    and the preprocessed cases `cases` (their cases.tsv); `config` is resolved first unless it
    is already. Its training and model sections are the dataset's effective ones."""
    try:
        method = get_method(method_id)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    config = resolved(config)
    entry = dataset_entry(config, dataset)
    training, model = train_config(entry["training"]), model_config(entry["model"])
    if method.strategy == "autoencoder":
        training = training.for_autoencoder()
    if method.needs_autoencoder and autoencoder is None:
        raise ConfigError(f"method {method.id} needs --autoencoder (the run folder of `--method autoencoder`)")
    return RunSpec(config=config, dataset=dataset, setting=setting, method=method, rep=int(rep), out=Path(out),
                   training=training, model=model, split_path=Path(split), store_path=Path(cases),
                   autoencoder=Path(autoencoder) if autoencoder is not None and method.needs_autoencoder else None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_pretrained_encoder(model: MASSLNet, spec: RunSpec) -> dict:
    """Copy the encoder of the run's autoencoder into `model`; returns the autoencoder's meta."""
    path = spec.autoencoder / "model.pt"
    autoencoder, meta = load_model(path)
    if meta.get("method") != "autoencoder":
        raise ConfigError(f"{path}: --autoencoder must be an autoencoder run, this is {meta.get('method')!r}")
    expected = {k: getattr(spec, k) for k in ("dataset", "setting", "rep")}
    found = {k: meta.get(k) for k in expected}
    if found != expected:  # another split's autoencoder may have seen this run's test scans
        raise ConfigError(f"{path}: autoencoder was trained for {found}, this run is {expected}")
    try:
        model.encoder.load_state_dict(autoencoder.encoder.state_dict())
    except RuntimeError as exc:
        raise ConfigError(f"{path}: autoencoder encoder does not fit this model config ({exc})") from None
    if meta.get("status") == "diverged":
        log.warning("%s: the autoencoder run diverged; using its last finite weights", path)
    return meta


def train_run(spec: RunSpec, device: str = "auto", on_iteration=None) -> dict:
    """Train (or resume), test the best and the final weights and write the run folder; returns
    the summary."""
    started = time.perf_counter()
    dev = pick_device(device)
    amp_dtype = autocast_dtype(spec.training.amp, dev)
    split, store = load_split(spec.split_path), CaseStore(spec.store_path)
    trainer, kwargs, autoencoder_meta = build_trainer(spec, split, store, dev, amp_dtype, on_iteration)
    check_writable(spec.out)  # after the inputs are checked: a bad input leaves no run folder
    for marker in ("summary.json", "model.pt"):  # a rerun must not look finished before it is
        (spec.out / marker).unlink(missing_ok=True)
    result = trainer.run()

    model = trainer.model
    model.load_state_dict(result.best_weights)
    model.eval()
    write_train_log(spec.out / "train_log.tsv", result.log)
    eval_started = time.perf_counter()
    summary = {**spec.identity, "status": result.status, "iterations": result.iterations,
               "planned_iterations": result.planned_iterations, "best_iteration": result.best_iteration,
               **stop_fields(result), "data_source": spec.data_source, "scale": spec.config.get("scale"),
               "seed": spec.seed, "device": str(dev), "divergence": result.divergence}
    if spec.method.strategy == "autoencoder":  # model selection only: no test scoring
        summary.update(n_test=0, mean_dice=None, val_mse=result.best_score, n_test_final=0, mean_dice_final=None)
    else:
        rows, example = score_test_cases(model, store, split["test"], spec, dev, amp_dtype, result.status)
        write_case_table(spec.out / "per_case.tsv", rows)
        write_example(spec.out / "examples.npz", example)
        final_rows = score_final_weights(model, result, rows, store, split["test"], spec, dev, amp_dtype)
        write_case_table(spec.out / "per_case_final.tsv", final_rows)
        summary.update(n_test=len(rows), mean_dice=_nanmean([r["dice"] for r in rows]), val_dice=result.best_score,
                       n_test_final=len(final_rows), mean_dice_final=_nanmean([r["dice"] for r in final_rows]))
    summary["wall_seconds"] = round(result.train_seconds + time.perf_counter() - eval_started, 3)

    atomic_write_json(spec.out / "provenance.json", provenance(
        seed=spec.seed, device=str(dev), device_name=device_name(dev), torch_threads=torch.get_num_threads(),
        **cpu_isa_record(spec.training.cpu_isa),
        config=spec.config, wall_seconds=round(time.perf_counter() - started, 3),
        train_seconds=round(result.train_seconds, 3)))
    atomic_write_json(spec.out / "summary.json", _json_safe(summary))
    save_model(spec.out / "model.pt", model, _model_meta(spec, kwargs, result, autoencoder_meta))
    shutil.rmtree(spec.out / "checkpoints", ignore_errors=True)  # model.pt now holds what matters
    log.info("%s: %s, mean test Dice %s, %.0f s", spec.out, result.status,
             _fmt(summary["mean_dice"]), summary["wall_seconds"])
    return summary


def stop_fields(result: TrainResult) -> dict:
    """Why and when training ended (summary.json; massl.training.stopping)."""
    return {"stop_reason": result.stop_reason, "final_iteration": result.iterations,
            "last_validation_iteration": result.last_validation_iteration, "n_validations": result.n_validations,
            "still_improving": result.still_improving}


def score_final_weights(model, result: TrainResult, best_rows: list[dict], store: CaseStore, case_ids: list[str],
                        spec: RunSpec, device, amp_dtype) -> list[dict]:
    """per_case.tsv rows of the final weights (issue 13, item 7: best-checkpoint reporting can
    overstate a method). A copy of the best rows when the final weights are the best ones or the
    run diverged (NaN rows either way); otherwise the final weights are scored and `model` is
    given back its best weights (those model.pt stores)."""
    if result.final_is_best or result.status == "diverged":
        return [dict(row) for row in best_rows]
    model.load_state_dict(result.final_weights)
    try:
        rows, _ = score_test_cases(model, store, case_ids, spec, device, amp_dtype, result.status, with_example=False)
    finally:
        model.load_state_dict(result.best_weights)
    return rows


def check_writable(folder: Path) -> None:
    """Fail now, not at the first checkpoint minutes into training, when the run folder cannot
    be written (a read-only or unmounted results folder, no permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write to the run folder {folder}: {exc.strerror}") from exc


def build_trainer(spec: RunSpec, split: dict, store: CaseStore, device: torch.device,
                  amp_dtype: torch.dtype | None, on_iteration=None) -> tuple[Trainer, dict, dict | None]:
    """The seeded model, strategy, samplers and validator of a run, as a Trainer; also the
    model's MASSLNet arguments and, for the pretraining rows, the autoencoder's meta."""
    settings = split["settings"]
    if spec.setting not in settings:
        raise DataError(f"{spec.split_path}: no setting {spec.setting!r}; found {', '.join(settings) or 'none'}")
    labeled, unlabeled = list(settings[spec.setting]["labeled"]), list(settings[spec.setting]["unlabeled"])
    _check_cases(spec, labeled, unlabeled)

    seed_everything(spec.seed)
    model = set_cpu_conv3d(build_model(spec.model, spec.method), spec.training.cpu_conv3d)
    kwargs = model.kwargs
    autoencoder_meta = load_pretrained_encoder(model, spec) if spec.method.needs_autoencoder else None
    model.to(device).train()
    schedule = training_schedule(spec.training, len(labeled), len(unlabeled))

    def new_network():  # a further network of the run's architecture (CPS), seeded by the run's stream
        return set_cpu_conv3d(build_model(spec.model, spec.method), spec.training.cpu_conv3d).to(device).train()

    strategy = make_strategy(model, spec.method, spec.training, amp_dtype, planned_iterations=schedule.iterations,
                             new_network=new_network)

    data = train_data(spec, store, labeled, unlabeled, strategy.uses_labeled, strategy.uses_unlabeled)
    metric = "mse" if spec.method.strategy == "autoencoder" else "dice"
    validator = Validator(store, split["validation"], spec.training, device, amp_dtype, metric)
    if not validator.case_ids:
        if spec.training.stopping == "plateau":
            raise ConfigError(f"training.stopping = plateau needs validation scans, and {spec.split_path} has none; "
                              f"use stopping: budget or a split with validation cases")
        log.warning("%s: no validation cases; the final weights will be tested", spec.split_path)
    fingerprint = run_fingerprint(spec.method.id, spec.seed, spec.training, kwargs,
                                  {"labeled": labeled, "unlabeled": unlabeled, "validation": validator.case_ids})
    log.info("%s %s %s rep%d: %d iterations (%d per epoch), seed %d, device %s, %d torch threads",
             spec.dataset, spec.setting, spec.method.id, spec.rep, schedule.iterations, schedule.epoch_length,
             spec.seed, device, torch.get_num_threads())
    trainer = Trainer(strategy, data, spec.training, schedule, validator, device, fingerprint,
                      checkpoint_dir=spec.out / "checkpoints", on_iteration=on_iteration)
    return trainer, kwargs, autoencoder_meta


def train_data(spec: RunSpec, store: CaseStore, labeled: list[str], unlabeled: list[str],
               uses_labeled: bool, uses_unlabeled: bool) -> TrainData:
    """Patch samplers and augmentation generators of a run, each seeded from its own child of
    the run's seed: a method's labeled stream does not depend on whether it also draws unlabeled
    batches, so CNN and MASSL of one seed see the same labeled batches."""
    cfg, dims = spec.training, spec.model.spatial_dims
    seeds = np.random.SeedSequence(spec.seed).spawn(4)  # labeled / unlabeled patches, then augmentations

    def sampler(cases, seed, foreground_fraction=0.0):
        return PatchSampler(store, cases, cfg.patch_size, dims, np.random.default_rng(seed), foreground_fraction,
                            case_sampling=cfg.case_sampling)

    def generator(seed):
        return torch.Generator().manual_seed(int(seed.generate_state(1)[0]))

    return TrainData(
        labeled=sampler(labeled, seeds[0], cfg.foreground_fraction) if uses_labeled else None,
        unlabeled=sampler(unlabeled, seeds[1]) if uses_unlabeled else None,
        augment_labeled=generator(seeds[2]),
        augment_unlabeled=generator(seeds[3]) if uses_unlabeled else None)


def _check_cases(spec: RunSpec, labeled: list, unlabeled: list) -> None:
    if not labeled:
        raise DataError(f"{spec.split_path}: setting {spec.setting} has no labeled cases")
    if strategy_class(spec.method.strategy).uses_unlabeled and not unlabeled:
        raise DataError(f"{spec.split_path}: setting {spec.setting} has no unlabeled cases, "
                        f"which method {spec.method.id} needs")


def _model_meta(spec: RunSpec, kwargs: dict, result: TrainResult, autoencoder_meta: dict | None) -> dict:
    paths = {"split": str(spec.split_path), "preprocessed": str(spec.store_path.parent), "cases": str(spec.store_path),
             "autoencoder": str(spec.autoencoder) if spec.autoencoder is not None else None}
    return {**spec.identity, "status": result.status, "seed": spec.seed, "best_iteration": result.best_iteration,
            "iterations": result.iterations, "model_kwargs": kwargs, "training": as_dict(spec.training),
            "model": as_dict(spec.model), "config": spec.config, "paths": paths,
            "format": spec.config["datasets"][spec.dataset]["format"],
            "data_source": spec.data_source, "scale": spec.config.get("scale"),
            "autoencoder_best_iteration": autoencoder_meta.get("best_iteration") if autoencoder_meta else None}


# Files -----------------------------------------------------------------------------------------

def write_train_log(path, rows: list[dict]) -> None:
    write_tsv(path, LOG_COLUMNS, rows)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _json_safe(obj: dict) -> dict:
    """NaN is not JSON: store it as null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in obj.items()}


# CLI -------------------------------------------------------------------------------------------

def cli_train(args) -> int:
    config = resolved(load_config(args.config))
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    if len(methods) > 1 and "{method}" not in args.out:
        raise ConfigError(f"--out {args.out!r} must contain {{method}} when --method lists several methods")
    # resolve every run first, so a typo in the last method fails before the first one trains
    specs = [resolve_run(config, args.dataset, args.setting, method, args.rep, args.out.replace("{method}", method),
                         split=args.split, cases=args.cases, autoencoder=args.autoencoder) for method in methods]
    pin_cpu_isa(specs[0].training.cpu_isa)  # before any kernel runs; one dataset, one training section
    train_all(specs, device=args.device, job_threads=args.threads)
    return 0
