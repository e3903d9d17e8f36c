"""Faults of long runs on shared machines, injected one at a time into `massl` itself: a training
killed with SIGKILL, damaged checkpoints and model files, a full disk, a read-only results
folder and bad configurations given straight to `massl train` / `massl split`.
The workflow-level faults (a killed Snakemake, divergence in a grid, two Snakemakes on one
folder) are in test_faults_workflow.py; the README's "Failure modes" says what the user does."""

import contextlib
import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_data import run_args, tiny_config, write_dataset

from massl.cli import main
from massl.errors import DataError
from massl.io import atomic_write_json
from massl.model.files import load_checkpoint, load_model, save_checkpoint
from massl.training.loop import Trainer
from massl.evaluation.scoring import write_example

torch.set_num_threads(1)
ITERATIONS = 80  # long enough (a few seconds) for the kill to land mid-run
RUN_ARGS = ("--dataset", "brats18", "--setting", "2L2U", "--rep", "1", "--threads", "1", "--device", "cpu")


def train_args(config, out, method="massl_alter"):
    results = Path(json.loads(Path(config).read_text())["results_dir"])  # the tiny dataset the config is for
    return ["train", "--config", str(config), *RUN_ARGS, *run_args(results), "--method", method, "--out", str(out)]


def write_config(path, results, **training):
    path.write_text(json.dumps(tiny_config(results, max_iterations=ITERATIONS, **training)))
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_dataset(root)
    write_config(root / "config.json", root)
    return root


@pytest.fixture(scope="module")
def reference_run(results):
    """An uninterrupted run: what every interrupted or damaged run must end up as."""
    out = results / "reference"
    assert main(train_args(results / "config.json", out)) == 0
    return out


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def assert_same_run(reference, run):
    """Same weights, test metrics and training log (wall-clock seconds aside)."""
    expected, found = load_model(reference / "model.pt")[0].state_dict(), load_model(run / "model.pt")[0].state_dict()
    assert expected.keys() == found.keys()
    for name in expected:
        assert torch.equal(expected[name], found[name]), name
    assert read_tsv(reference / "per_case.tsv") == read_tsv(run / "per_case.tsv")
    assert untimed(read_tsv(reference / "train_log.tsv")) == untimed(read_tsv(run / "train_log.tsv"))
    summaries = [json.loads((r / "summary.json").read_text()) for r in (reference, run)]
    for key in ("status", "iterations", "best_iteration", "mean_dice", "val_dice"):
        assert summaries[0][key] == summaries[1][key], key


def untimed(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def flip_byte(path, where=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def temporary_files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


# Killed training ------------------------------------------------------------------------------

def kill_after_two_checkpoints(config, out, log_path, timeout=300):
    """Start `massl train` as its own process and SIGKILL it once last.pt and previous.pt exist."""
    checkpoints = [out / "checkpoints" / name for name in ("last.pt", "previous.pt")]
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "massl.cli", *train_args(config, out)],
                                stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in checkpoints):
        if proc.poll() is not None:
            pytest.fail(f"massl train exited ({proc.returncode}) before its second checkpoint:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no second checkpoint after {timeout} s:\n{log_path.read_text()}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before the kill landed; raise ITERATIONS"


def newest_good_iteration(folder):
    """Iteration of the newest checkpoint in `folder` that loads and passes its checksum."""
    for name in ("last.pt", "previous.pt"):
        with contextlib.suppress(DataError):
            return load_checkpoint(folder / name)["iteration"]
    return None


@pytest.mark.parametrize("damage", ["none", "last truncated", "all corrupt"])
def test_sigkilled_training_reruns_to_the_uninterrupted_result(results, reference_run, tmp_path, caplog, damage):
    out = tmp_path / "run"
    kill_after_two_checkpoints(results / "config.json", out, tmp_path / "killed.log")
    # Nothing a rerun (or Snakemake) would take for a finished result.
    for name in ("summary.json", "model.pt", "per_case.tsv"):
        assert not (out / name).exists(), name
    # The kill may land between renaming last.pt to previous.pt and writing the new last.pt.
    saved = [p for p in (out / "checkpoints" / "last.pt", out / "checkpoints" / "previous.pt") if p.exists()]
    if damage == "last truncated":  # e.g. a copy cut short, or a disk that filled mid-write
        saved[0].write_bytes(saved[0].read_bytes()[: saved[0].stat().st_size // 2])
    elif damage == "all corrupt":  # bit rot: no checkpoint passes its checksum
        for path in saved:
            flip_byte(path)
    resume_at = newest_good_iteration(out / "checkpoints")
    assert (resume_at is None) == (damage == "all corrupt")

    with caplog.at_level(logging.INFO):
        assert main(train_args(results / "config.json", out)) == 0
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resumed at iteration")]
    if resume_at is None:
        assert resumed == []  # started over
        assert caplog.text.count("trying an older checkpoint") == len(saved)
    else:
        assert resumed == [f"resumed at iteration {resume_at}/{ITERATIONS} from {out / 'checkpoints'}"]
        assert 0 < resume_at < ITERATIONS
    if damage != "none":
        assert f"{saved[0]}:" in caplog.text and "WARNING" in caplog.text
    assert_same_run(reference_run, out)
    assert not (out / "checkpoints").exists()


def test_corrupt_model_file_is_refused_with_its_name(results, reference_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    flip_byte(run / "model.pt")
    out = tmp_path / "probe.tsv"
    assert main(["probe", "--config", str(results / "config.json"), "--run", str(run), "--out", str(out),
                 *run_args(results), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'model.pt'}:" in err and ("checksum mismatch" in err or "unreadable checkpoint" in err), err
    assert "Traceback" not in err
    assert not out.exists()  # nothing written from a damaged model


# Full disk and read-only folders ----------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(folder, options):
    """A tmpfs of its own mounted on `folder` (full disks and read-only folders even for root, who
    ignores permissions). Skipped where mounting is not allowed, but never in CI."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        reason = "needs root and the mount command"
    else:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                 capture_output=True, text=True)
        reason = None if mounted.returncode == 0 else f"mount failed: {mounted.stderr.strip()}"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI ({reason})")
        pytest.skip(f"cannot mount a tmpfs to simulate the fault ({reason})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # lazy: a failed test may hold a file open


def remount(folder, options):
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)


def fill(folder):
    """Write a filler file until the file system is full."""
    with open(folder / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(bytes(4096))


def write_json(path):
    atomic_write_json(path, {"status": "converged", "padding": "x" * 100_000})


def write_checkpoint(path):
    save_checkpoint(path, {"weights": torch.zeros(100_000)})


def write_npz(path):
    write_example(path, {"image": np.zeros((300, 300), np.float32)})


@pytest.mark.parametrize("writer", [write_json, write_checkpoint, write_npz], ids=["json", "checkpoint", "npz"])
def test_full_disk_names_the_file_and_keeps_its_old_content(tmp_path, writer):
    with tmpfs(tmp_path / "disk", "size=64k") as disk:
        target = disk / "output"
        target.write_bytes(b"the last good version")
        fill(disk)
        with pytest.raises(OSError, match=f"cannot write {target}: No space left on device"):
            writer(target)
        assert target.read_bytes() == b"the last good version"  # not truncated, not replaced
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "output"]  # no temporary left


def test_training_on_a_full_disk_stops_with_the_file_named_and_reruns_once_space_is_freed(
        results, reference_run, tmp_path, capsys):
    with tmpfs(tmp_path / "disk", "size=16k") as disk:  # smaller than one checkpoint
        out = disk / "run"
        assert main(train_args(results / "config.json", out)) == 3
        err = capsys.readouterr().err
        assert f"cannot write {out / 'checkpoints' / 'last.pt'}: No space left on device" in err, err
        assert "Traceback" not in err
        assert not (out / "summary.json").exists() and not (out / "model.pt").exists()
        assert temporary_files(disk) == []
        remount(disk, "size=8m")  # the user frees space and runs the same command again
        assert main(train_args(results / "config.json", out)) == 0
        assert_same_run(reference_run, out)


def test_read_only_results_folder_fails_before_training(tmp_path, capsys, monkeypatch):
    def no_training(self):
        raise AssertionError("training started in a folder it cannot write")

    monkeypatch.setattr(Trainer, "run", no_training)
    with tmpfs(tmp_path / "results", "size=4m") as results:
        write_dataset(results)
        config = write_config(tmp_path / "config.json", results)
        remount(results, "ro")
        out = results / "runs" / "brats18" / "2L2U" / "cnn" / "rep1"
        assert main(train_args(config, out, method="cnn")) == 3
        err = capsys.readouterr().err
        assert f"cannot write to the run folder {out}: Read-only file system" in err, err
        split_config = tiny_config(results)
        split_config["datasets"]["brats18"]["split"] = {"pool": 4, "validation": 2, "test": 2}
        (tmp_path / "split.json").write_text(json.dumps(split_config))
        split = results / "splits" / "brats18" / "rep2.json"
        assert main(["split", "--cases", str(results / "preprocessed" / "brats18" / "cases.tsv"), "--dataset",
                     "brats18", "--rep", "2", "--out", str(split), "--config", str(tmp_path / "split.json")]) == 3
        err = capsys.readouterr().err
        assert f"cannot write {split}: Read-only file system" in err and "Traceback" not in err


# Bad configuration given straight to the library --------------------------------------------------

BAD_RUNS = {
    "wrong type": ({"training": {"batch_size": "four"}}, {}, ("training.batch_size", "'four'", "expected int")),
    "yes for a bool": ({"training": {"augment": "yes"}}, {}, ("training.augment", "expected bool")),
    "number for a list": ({"training": {"patch_size": 32}}, {}, ("training.patch_size", "expected list[int]")),
    "unknown key": ({"training": {"learning_rate": 0.1}}, {}, ("'training'", "learning_rate", "allowed:", "lr_joint")),
    "negative budget": ({"training": {"max_iterations": -5}}, {}, ("training.max_iterations", "> 0", "-5")),
    "negative epochs": ({"training": {"epochs_by_labeled": [[20, -1]]}}, {}, ("training.epochs_by_labeled", "> 0")),
    "bad choice": ({"model": {"downsample": "maxpool"}}, {}, ("model.downsample", "allowed: avgpool, strided")),
    "method typo": ({}, {"--method": "masl_alter"}, ("'masl_alter'", "allowed:", "massl_alter", "cnn")),
    "setting not in the split": ({}, {"--setting": "9L9U"}, ("rep1.json", "'9L9U'", "2L2U, 2L1U")),
}


@pytest.mark.parametrize("case", BAD_RUNS, ids=list(BAD_RUNS))
def test_bad_run_configuration_fails_before_training_naming_key_and_allowed_values(
        results, tmp_path, capsys, case):
    sections, options, expected = BAD_RUNS[case]
    config = tiny_config(results)
    for section, values in sections.items():
        config[section].update(values)
    (tmp_path / "bad.json").write_text(json.dumps(config))
    args = train_args(tmp_path / "bad.json", tmp_path / "run")
    for option, value in options.items():
        args[args.index(option) + 1] = value
    assert main(args) == 2
    err = capsys.readouterr().err
    assert all(part in err for part in expected), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # failed before any work


def test_impossible_split_is_refused_naming_the_setting(results, tmp_path, capsys):
    config = tiny_config(results)
    config["datasets"]["brats18"].update(split={"pool": 4, "validation": 2, "test": 2},
                                         settings={"2L2U": [2, 2], "6L2U": [6, 2]})
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = tmp_path / "rep3.json"
    assert main(["split", "--cases", str(results / "preprocessed" / "brats18" / "cases.tsv"), "--dataset", "brats18",
                 "--rep", "3", "--out", str(out), "--config", str(tmp_path / "config.json")]) == 2
    err = capsys.readouterr().err
    assert "6L2U" in err and "pool of 4" in err, err
    assert not out.exists()
