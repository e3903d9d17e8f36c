"""The cluster path: the workflow through `--profile workflow/profiles/slurm` on a real SLURM.

CI starts a single-node SLURM with `.ci/slurm.sh start` (it has no job accounting, hence the
extra plugin flags below) and runs `pytest -m slurm`. Without a SLURM that answers, the tests
fail with the reason when CI is set, and are skipped (with the reason) otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_workflow import (FAKE_MASSL, REPO, SMOKE, check_probe_table, check_results_table, read_table,
                           write_config)

pytestmark = pytest.mark.slurm

PROFILE = REPO / "workflow" / "profiles" / "slurm"
# A SLURM without accounting: job states from squeue, no account; check status after 1 s.
NO_ACCOUNTING = ("--slurm-status-command", "squeue", "--slurm-no-account",
                 "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs")
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def not_ready(reason: str):
    """In CI a missing SLURM is a failure, never a silent skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; `.ci/slurm.sh start` installs and starts a single-node SLURM")
    pytest.skip(f"{reason} (CI is not set)")


@pytest.fixture(scope="module")
def slurm():
    if shutil.which("sbatch") is None:
        not_ready("SLURM is not installed")
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0 or not {"idle", "mixed"} & set(result.stdout.split()):
        not_ready(f"SLURM has no idle node (sinfo: {(result.stdout + result.stderr).strip() or 'no answer'})")


def run_on_slurm(workdir: Path, *args: str, configfile: Path = SMOKE, env: dict | None = None):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(configfile), "--profile", str(PROFILE), *NO_ACCOUNTING, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3000)
    return result, result.stdout + result.stderr


def submitted_jobs(output: str) -> dict[str, list[str]]:
    """{rule: [SLURM job ids]} from the executor's log lines."""
    jobs: dict[str, list[str]] = {}
    for job_id, log in SUBMITTED.findall(output):
        rule = re.search(r"rule_(\w+)/", log)[1]
        jobs.setdefault(rule, []).append(job_id)
    return jobs


def slurm_job(job_id: str) -> dict[str, str]:
    """`scontrol show job` fields (finished jobs stay visible for MinJobAge seconds)."""
    text = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def test_smoke_profile_runs_its_trainings_through_sbatch(slurm, tmp_path):
    result, output = run_on_slurm(tmp_path, "all_tables")
    assert result.returncode == 0, output[-5000:]
    config = json.loads((tmp_path / "results" / "config.json").read_text())  # defaults filled in

    jobs = submitted_jobs(output)
    n_settings = sum(len(d["settings"]) for d in config["datasets"].values())
    assert len(jobs["train"]) == n_settings * len(config["methods"]) * config["repetitions"]
    assert len(jobs["train_autoencoder"]) == n_settings * config["repetitions"]
    assert set(jobs) <= {"preprocess", "train", "train_autoencoder", "probe"}  # the rest is local
    all_ids = [i for ids in jobs.values() for i in ids]
    assert len(set(all_ids)) == len(all_ids)
    for job_id in jobs["train"]:
        fields = slurm_job(job_id)
        assert fields["JobState"] == "COMPLETED", fields
        assert fields["NumCPUs"] == str(config["resources"]["train"]["threads"])

    tables = tmp_path / "results" / "tables"
    check_results_table(read_table(tables / "table1.csv"), config, "brats18")
    check_results_table(read_table(tables / "table2.csv"), config, "wmh17")
    check_probe_table(read_table(tables / "table3.csv"), config)


def test_gpu_request_and_resume_after_a_killed_job(slurm, tmp_path):
    """A training asking for a GPU gets one from SLURM; killed once, it is resubmitted with twice
    the time limit and resumes from its checkpoint. (`massl` is the stand-in of test_workflow.)"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "massl").write_text(FAKE_MASSL.format(python=sys.executable))
    (bin_dir / "massl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FAKE_MASSL_CALLS": str(tmp_path / "calls.log"), "FAKE_MASSL_KILL": "1"}
    cfg = write_config(tmp_path / "gpu.yaml", lambda c: c["resources"]["train"].update(gpu=1, gpu_model="fake"))
    run = "results/runs/brats18/4L8U/cnn/rep1"
    result, output = run_on_slurm(tmp_path / "work", f"{run}/summary.json", configfile=cfg, env=env)
    assert result.returncode == 0, output[-5000:]

    attempts = submitted_jobs(output)["train"]
    assert len(attempts) == 2
    first, second = (slurm_job(job_id) for job_id in attempts)
    assert first["JobState"] == "FAILED" and second["JobState"] == "COMPLETED"
    runtime = yaml.safe_load(cfg.read_text())["resources"]["train"]["runtime"]
    assert first["TimeLimit"] == f"00:{runtime:02d}:00"
    assert second["TimeLimit"] == f"00:{2 * runtime:02d}:00"
    assert "gpu:fake:1" in second["TresPerJob"]
    assert (tmp_path / "work" / run / "attempts.txt").read_text().split() == ["started", "resumed"]
    assert "--device cuda" in (tmp_path / "calls.log").read_text()
