"""Faults of a replication grid run by Snakemake, injected one at a time: Snakemake interrupted
(SIGINT, SIGKILL) mid-way, a joint run that diverges, a second Snakemake on the same folder, a
read-only results folder and bad configurations.

The interruption and divergence tests run the real library on the smoke grid cut down to one
setting, one repetition and three methods (slow: about a minute each on 2 cores); the others use
the stand-in `massl` of test_workflow.py and take seconds. the README's "Failure modes" says what the
user does in each case.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import remount, tmpfs
from test_workflow import REPO, SMOKE, TARGETS, fake_massl, job_counts, snakemake, write_config  # noqa: F401

from massl.methods import METHODS as METHOD_TABLE

PROFILE = ("--profile", str(REPO / "workflow" / "profiles" / "default"), "--cores", "2")
TABLE = "results/tables/table1.csv"
METHODS = ["cnn", "massl_l07", "massl_alter"]
DIVERGING = "massl_l07"  # the joint method: lr_joint = 1e30 overflows its weights at step 1
RUNS = [f"results/runs/brats18/4L8U/{method}/rep1" for method in METHODS]
COMPARED = [f"results/tables/table1{suffix}.{ext}" for suffix in ("", "_extended") for ext in ("csv", "md", "tex")] + [
    "results/stats/brats18.tsv", "results/metrics/brats18.tsv"]


def fault_grid(config: dict) -> None:
    """The smoke grid cut to brats18 4L8U, one repetition and three methods; the joint one diverges."""
    config.update(repetitions=1, methods=METHODS)
    config["datasets"] = {"brats18": {**config["datasets"]["brats18"], "settings": {"4L8U": [4, 8]}}}
    config["training"]["lr_joint"] = 1e30
    # long enough (seconds) that the interrupt lands while the converging runs still train: the
    # diverging run stops at its first step and is the first to finish
    config["training"].update(epochs_by_labeled=[[4, 100]], max_iterations=300)
    config["probe"].update(setting="4L8U", methods=["cnn"])


def snakemake_command(workdir: Path, configfile: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--configfile", str(configfile), *args]


@pytest.fixture(scope="module")
def grid_config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("config") / "faults.yaml", fault_grid)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, grid_config):
    """A working folder with data and splits made; each test trains in a copy of it."""
    work = tmp_path_factory.mktemp("prepared")
    result = snakemake(work, *PROFILE, "results/splits/brats18/rep1.json", configfile=grid_config)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def copy_of(prepared: Path, work: Path) -> Path:
    shutil.copytree(prepared, work, symlinks=True)  # keeps mtimes and Snakemake's records
    return work


@pytest.fixture(scope="module")
def reference(prepared, grid_config, tmp_path_factory):
    """The working folder of the grid run without interruption (Snakemake exited 0)."""
    work = copy_of(prepared, tmp_path_factory.mktemp("reference") / "work")
    result = snakemake(work, *PROFILE, TABLE, configfile=grid_config)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def read_csv(path: Path, delimiter: str = ",") -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


# Divergence ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_diverged_joint_run_is_recorded_and_the_grid_goes_on(reference):
    work = reference  # the grid went on to the tables: Snakemake exited 0
    for run, method in zip(RUNS, METHODS):
        summary = json.loads((work / run / "summary.json").read_text())
        assert summary["status"] == ("diverged" if method == DIVERGING else "converged"), run
        cases = read_csv(work / run / "per_case.tsv", "\t")
        assert {c["status"] for c in cases} == {summary["status"]}
        if method == DIVERGING:
            assert re.search(r"loss is (nan|inf)", summary["divergence"]) and summary["mean_dice"] is None
            assert {c["dice"] for c in cases} == {"NaN"}
    cells = {row["method"]: row["4 (8)"] for row in read_csv(work / TABLE)}
    assert list(cells) == [METHOD_TABLE[m].label for m in METHODS] + ["SD of repetition means (median over methods)"]
    for method in METHODS:
        if method == DIVERGING:
            assert cells[METHOD_TABLE[method].label] == "n.c."
        else:
            assert re.fullmatch(r"[01]\.\d{4}\*?†?", cells[METHOD_TABLE[method].label]), cells
    extended = {row["method"]: row for row in read_csv(work / "results/tables/table1_extended.csv")}
    assert (extended[DIVERGING]["n_converged"], extended[DIVERGING]["n_diverged"]) == ("0", "1")


# Snakemake interrupted --------------------------------------------------------------------------

# A job's entry: "rule train:" (or "localrule train:") and its indented fields, jobid before wildcards.
TRAIN_JOB = re.compile(r"^(?:local)?rule train:\n(?:[ \t]+.*\n)*?[ \t]+jobid: (\d+)\n"
                       r"(?:[ \t]+.*\n)*?[ \t]+wildcards: (.*)\n", re.MULTILINE)


def train_jobs(output: str) -> dict[str, str]:
    """{jobid: run folder} of the `train` jobs a Snakemake log announces (complete entries only:
    the log may be read while it is written)."""
    jobs = {}
    for jobid, wildcards in TRAIN_JOB.findall(output):
        jobs[jobid] = "results/runs/{dataset}/{setting}/{method}/rep{rep}".format(
            **dict(re.findall(r"(\w+)=(\w+)", wildcards)))
    return jobs


def finished_trainings(output: str) -> set[str]:
    """Run folders Snakemake recorded as finished (it logs this after storing the job's metadata)."""
    jobs = train_jobs(output)
    return {jobs[jobid] for jobid in re.findall(r"Finished jobid: (\d+) \(Rule: train\)", output) if jobid in jobs}


def interrupt_after_first_training(command: list[str], log: Path, sig: int, timeout: float = 600) -> None:
    """Run `command` in a process group of its own and send `sig` to the whole group (Snakemake
    and its jobs, as Ctrl-C or a crashed node would) once one training has finished."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not finished_trainings(log.read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no training finished in time or before Snakemake ended:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):  # no straggler may go on writing into the folder
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_workflow_restarts_redoing_only_unfinished_jobs(prepared, reference, grid_config, tmp_path, sig):
    work = copy_of(prepared, tmp_path / "work")
    command = snakemake_command(work, grid_config, *PROFILE, TABLE)
    interrupt_after_first_training(command, tmp_path / "interrupted.log", sig)
    interrupted = (tmp_path / "interrupted.log").read_text()
    finished = finished_trainings(interrupted)
    unfinished = [run for run in RUNS if not (work / run / "summary.json").exists()]
    assert finished and unfinished, f"not interrupted mid-way: finished {finished}, unfinished {unfinished}\n" \
        + interrupted[-3000:]
    mtimes = {run: (work / run / "summary.json").stat().st_mtime_ns for run in finished}

    restart = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if sig == signal.SIGKILL:  # Snakemake could not remove its lock: the user is told to --unlock
        assert restart.returncode != 0
        assert "Directory cannot be locked" in restart.stderr and "--unlock" in restart.stderr, restart.stderr[-2000:]
        unlock = subprocess.run([*command, "--unlock"], capture_output=True, text=True, timeout=300)
        assert unlock.returncode == 0, unlock.stderr[-2000:]
        restart = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert restart.returncode == 0, restart.stderr[-3000:]

    output = restart.stdout + restart.stderr
    rerun = set(train_jobs(output).values())
    assert not rerun & finished and set(unfinished) <= rerun, \
        f"finished {finished}, unfinished {unfinished}, rerun {rerun}\n{interrupted[-3000:]}\n{output[-3000:]}"
    assert job_counts(output)["train"] == len(rerun)
    assert {run: (work / run / "summary.json").stat().st_mtime_ns for run in finished} == mtimes
    for path in COMPARED:
        assert (work / path).read_bytes() == (reference / path).read_bytes(), path


# Two Snakemakes on one folder --------------------------------------------------------------------

def test_second_snakemake_on_the_same_folder_is_refused_and_the_first_finishes(tmp_path, fake_massl):
    work = tmp_path / "work"
    env = {**fake_massl, "FAKE_MASSL_SECONDS": "20"}  # long enough for a second Snakemake to start, under load too
    calls = Path(fake_massl["FAKE_MASSL_CALLS"])
    command = snakemake_command(work, SMOKE, "--cores", "1", *TARGETS)
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (calls.exists() and "train" in calls.read_text()):  # first holds the lock, mid-training
            assert first.poll() is None and time.monotonic() < deadline, "the first Snakemake ended before training"
            time.sleep(0.1)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the second Snakemake was checked after the first had finished"
        first_output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode != 0
    assert "Directory cannot be locked" in second.stderr and "--unlock" in second.stderr, second.stderr[-2000:]
    assert first.returncode == 0, first_output[-3000:]
    trainings = [line for line in calls.read_text().splitlines() if line.startswith("train ")]
    assert len(trainings) == len(set(trainings)) == 3  # autoencoder, cnn, pretrain_dec: each once
    for target in TARGETS:
        assert (work / target).read_text() == "summary.json"
    again = snakemake(work, "-n", *TARGETS, env=env)
    assert "Nothing to be done" in again.stdout + again.stderr


# Read-only results folder -----------------------------------------------------------------------

def test_read_only_results_folder_stops_the_workflow_before_any_job(tmp_path, fake_massl):
    with tmpfs(tmp_path / "mnt", "size=1m") as mount:
        remount(mount, "ro")
        config = write_config(tmp_path / "ro.yaml", lambda c: c.update(results_dir=str(mount / "results")))
        result = snakemake(tmp_path / "work", "--cores", "1", configfile=config, env=fake_massl)
    assert result.returncode != 0
    assert f"cannot write {mount / 'results' / 'config.json'}: Read-only file system" in result.stderr, \
        result.stderr[-2000:]
    assert not Path(fake_massl["FAKE_MASSL_CALLS"]).exists()  # no job started


# Bad configuration ------------------------------------------------------------------------------

BAD_GRIDS = {
    "unknown key": (lambda c: c["training"].update(learning_rate=0.1),
                    ("'training'", "'learning_rate'", "lr_joint", "max_iterations")),
    "wrong type": (lambda c: c["training"].update(batch_size="four"),
                   ("'training.batch_size'", "'four'", "integer")),
    "more labeled than the pool": (lambda c: c["datasets"]["brats18"]["settings"].update({"20L8U": [20, 8]}),
                                   ("'datasets.brats18.settings.20L8U'", "pool of 12")),
    "method typo": (lambda c: c.update(methods=["cnn", "masl_alter"]),
                    ("'methods.1'", "'masl_alter'", "'massl_alter'", "'pretrain_dec'")),
    "negative budget": (lambda c: c["training"].update(max_iterations=-5),
                        ("'training.max_iterations'", "-5", "minimum of 1")),
}


@pytest.mark.parametrize("case", BAD_GRIDS, ids=list(BAD_GRIDS))
def test_bad_config_stops_a_real_run_before_any_job_naming_key_and_allowed_values(tmp_path, fake_massl, case):
    edit, expected = BAD_GRIDS[case]
    config = write_config(tmp_path / "bad.yaml", edit)
    result = snakemake(tmp_path / "work", "--cores", "1", configfile=config, env=fake_massl)
    assert result.returncode != 0
    assert all(part in result.stderr for part in expected), result.stderr[-2000:]
    assert not Path(fake_massl["FAKE_MASSL_CALLS"]).exists()  # no job started
    assert not (tmp_path / "work" / "results").exists()
