"""config/paper_check.yaml end to end (issue 14): the paper profile at full size on a CPU.

The 3D network, whole-volume validation and sliding-window testing on the real grids, all nine
methods, the probe, Tables 1-3 and the report, through the DAG with the real library. About 30
minutes on 2 cores (README, "Scale profiles"), so it is `slow`: CI runs it after the default run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from test_workflow import REPO, check_probe_table, check_results_table, read_table

PAPER_CHECK = REPO / "config" / "paper_check.yaml"
# After preprocessing (crop to 200x200 in-plane): BraTS 155 slices; the WMH sites 48, 48 and 83.
FULL_SIZE_DEPTHS = {"brats18": {155}, "wmh17": {48, 83}}


@pytest.mark.slow
def test_paper_check_profile_end_to_end(tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(PAPER_CHECK), "--profile", str(REPO / "workflow" / "profiles" / "default"),
           "--cores", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=3 * 3600)
    assert result.returncode == 0, result.stderr[-5000:]
    check_paper_check_results(tmp_path / "results")


def check_paper_check_results(results) -> None:
    config = json.loads((results / "config.json").read_text())
    assert config["scale"] == "paper_check"
    assert config["model"]["spatial_dims"] == 3  # patches, batch and rates: the library defaults (the paper)

    for dataset, depths in FULL_SIZE_DEPTHS.items():
        shapes = {np.load(p, mmap_mode="r").shape for p in (results / "preprocessed" / dataset).glob("*.image.npy")}
        assert {s[0] for s in shapes} == depths and {s[1:] for s in shapes} == {(200, 200)}, (dataset, shapes)

    n_runs = 0
    for summary_path in sorted((results / "runs").glob("*/*/*/rep*/summary.json")):
        summary = json.loads(summary_path.read_text())
        if summary["method"] == "autoencoder":
            continue
        n_runs += 1
        assert summary["final_iteration"] == 3 and summary["n_validations"] == 1, summary_path
        assert summary["n_test"] == 1 and summary["status"] in ("converged", "diverged"), summary_path
    datasets = yaml.safe_load(PAPER_CHECK.read_text())["datasets"]
    assert n_runs == sum(len(d["settings"]) for d in datasets.values()) * len(config["methods"]) * config["repetitions"]

    tables = results / "tables"
    check_results_table(read_table(tables / "table1.csv"), config, "brats18")
    check_results_table(read_table(tables / "table2.csv"), config, "wmh17")
    check_probe_table(read_table(tables / "table3.csv"), config)
    for name in ("report.md", "report.html", "checklist.tsv"):
        assert (results / "replication" / name).is_file()
    costs = read_table(results / "benchmarks" / "summary.tsv", delimiter="\t")
    assert costs and all(float(row["s"]) > 0 and float(row["max_rss"]) > 0 for row in costs)
