"""Collect the per-case metrics and run summaries of one dataset's runs into two tables.

    python -m analysis.aggregate --runs RUN_DIR [RUN_DIR ...] \
        --out-cases results/metrics/<d>.tsv --out-runs results/metrics/<d>_runs.tsv

Each RUN_DIR (`results/runs/<d>/<setting>/<method>/rep<r>`) holds `per_case.tsv`,
`summary.json` and `train_log.tsv`. Every case row gets its run's `status`
(converged | diverged), `data_source` (synthetic | real) and `scale` from `summary.json`, so the
statistics and the replication report know where the numbers come from.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from analysis.common import (
    DataError,
    numeric_column,
    read_json,
    read_table,
    run_cli,
    write_tsv,
)
from analysis.methods import check_label, method_rank, sort_settings

log = logging.getLogger("analysis.aggregate")

KEYS = ("dataset", "setting", "method", "method_label", "rep")
CASE_COLUMNS = (*KEYS, "case_id", "site", "dice", "hd95", "avd", "status")
SUMMARY_KEYS = (*KEYS, "status", "data_source", "scale")
STATUSES = ("converged", "diverged")
DATA_SOURCES = ("synthetic", "real")
RUN_COLUMNS = (*KEYS, "status", "n_test", "n_scored", "mean_dice", "best_iteration", "iterations",
               "logged_iterations", "wall_seconds", "data_source", "scale", "run_dir")


def read_run(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """One run's case rows (with status, data_source and scale) and its summary row."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json", "run summary")
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise DataError(f"{run_dir / 'summary.json'}: missing key(s) {', '.join(missing)}")
    source = run_dir / "summary.json"
    check_label(summary["method"], summary["method_label"], str(source))
    if summary["status"] not in STATUSES:
        raise DataError(f"{source}: status {summary['status']!r} is not one of {', '.join(STATUSES)}")
    if summary["data_source"] not in DATA_SOURCES:
        raise DataError(f"{source}: data_source {summary['data_source']!r} is not one of {', '.join(DATA_SOURCES)}")

    cases_path = run_dir / "per_case.tsv"
    cases = read_table(cases_path, CASE_COLUMNS, "per-case metrics")
    for key in KEYS:
        if (cases[key].astype(str) != str(summary[key])).any():
            raise DataError(f"{cases_path}: column {key!r} disagrees with summary.json ({summary[key]!r})")
    if (cases["status"] != summary["status"]).any():
        raise DataError(f"{cases_path}: status column disagrees with summary.json ({summary['status']!r})")
    if cases["case_id"].duplicated().any():
        raise DataError(f"{cases_path}: case {cases['case_id'][cases['case_id'].duplicated()].iloc[0]!r} twice")
    for column in ("dice", "hd95", "avd"):
        cases[column] = numeric_column(cases, column, cases_path)
    cases = cases[list(CASE_COLUMNS)].assign(data_source=summary["data_source"], scale=summary["scale"])

    run = {key: summary.get(key) for key in RUN_COLUMNS}
    run.update(n_scored=int(cases["dice"].notna().sum()), logged_iterations=_logged_iterations(run_dir),
               run_dir=str(run_dir))
    return cases, run


def _logged_iterations(run_dir: Path) -> float:
    """Last iteration in `train_log.tsv` (NaN without one): shows budget cut short or resumed."""
    path = run_dir / "train_log.tsv"
    if not path.is_file():
        return float("nan")
    log_rows = read_table(path, ("iteration",), "training log")
    return float(numeric_column(log_rows, "iteration", path).max())


def aggregate(run_dirs: list[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(case rows, run rows) of one dataset, sorted by setting, paper row order, rep, case."""
    if not run_dirs:
        raise DataError("no run folders given")
    case_tables, runs = [], []
    for i, run_dir in enumerate(run_dirs, 1):
        cases, run = read_run(run_dir)
        case_tables.append(cases)
        runs.append(run)
        if i % 50 == 0:
            log.info("read %d/%d runs", i, len(run_dirs))
    runs = pd.DataFrame(runs, columns=list(RUN_COLUMNS))
    duplicated = runs.duplicated(["dataset", "setting", "method", "rep"], keep=False)
    if duplicated.any():
        raise DataError(f"the same run twice: {', '.join(runs['run_dir'][duplicated])}")
    for column in ("dataset", "data_source", "scale"):
        values = sorted(runs[column].astype(str).unique())
        if len(values) > 1:
            raise DataError(f"runs mix {column} values {', '.join(values)}; "
                            "aggregate one dataset of one scale at a time")
    return _sorted(pd.concat(case_tables, ignore_index=True), ["case_id"]), _sorted(runs, [])


def _sorted(frame: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    column_order = {s: i for i, s in enumerate(sort_settings(frame["setting"]))}
    keys = pd.DataFrame({"s": frame["setting"].map(column_order), "m": frame["method"].map(method_rank),
                         "r": frame["rep"].astype(int)})
    keys = pd.concat([keys, frame[extra]], axis=1)
    return frame.loc[keys.sort_values(list(keys.columns)).index].reset_index(drop=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help="run folders of one dataset")
    parser.add_argument("--out-cases", required=True, help="TSV of all per-case rows")
    parser.add_argument("--out-runs", required=True, help="TSV with one row per run")
    parser.set_defaults(run=cli)
    return parser


def cli(args: argparse.Namespace) -> int:
    cases, runs = aggregate(args.runs)
    write_tsv(args.out_cases, cases)
    write_tsv(args.out_runs, runs)
    log.info("%d runs (%d diverged), %d case rows -> %s", len(runs), int((runs["status"] == "diverged").sum()),
             len(cases), args.out_cases)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(build_parser()))
