"""The cost of the grid: Snakemake's per-job benchmark files as one table.

    python -m analysis.costs --jobs results/benchmarks/train/<dataset>/<setting>/<method>/rep<r>.tsv ... \
        --out results/benchmarks/summary.tsv

One row per job (stage, dataset, setting, method, rep + Snakemake's benchmark columns: wall
seconds, peak memory, CPU time), e.g. to estimate the grid's GPU-hours. The job's identity is
read from its file's path, which the workflow builds as above.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from analysis.common import DataError, atomic_path, run_cli

log = logging.getLogger(__name__)
KEYS = ["stage", "dataset", "setting", "method", "rep"]


def job_costs(paths) -> pd.DataFrame:
    rows = []
    for path in map(Path, paths):
        parts = path.with_suffix("").parts[-5:]
        if len(parts) < 5 or not parts[-1].startswith("rep"):
            raise DataError(f"{path}: not a benchmark file of the form <stage>/<dataset>/<setting>/<method>/rep<r>.tsv")
        stage, name, setting, method, rep = parts
        row = pd.read_csv(path, sep="\t").iloc[[-1]]  # the last attempt's timing
        rows.append(row.assign(stage=stage, dataset=name, setting=setting, method=method, rep=rep[3:]))
    table = pd.concat(rows, ignore_index=True)
    return table[KEYS + [c for c in table.columns if c not in KEYS]]


def cli(args: argparse.Namespace) -> int:
    with atomic_path(args.out) as tmp:
        job_costs(args.jobs).to_csv(tmp, sep="\t", index=False)
    log.info("%d job timings -> %s", len(args.jobs), args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.costs", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", nargs="+", required=True, help="Snakemake benchmark files, one per job")
    parser.add_argument("--out", required=True, help="summary TSV to write")
    parser.set_defaults(run=cli)
    return parser


if __name__ == "__main__":
    sys.exit(run_cli(build_parser()))
