"""Collect the per-case metrics and run summaries of one dataset's runs into one table.

    python -m analysis.aggregate --config results/config.json --runs RUN_DIR [RUN_DIR ...] \
        --out-cases results/metrics/<d>.tsv

Each RUN_DIR (`results/runs/<d>/<setting>/<method>/rep<r>`) holds `per_case.tsv`,
`summary.json` and `train_log.tsv`, and (runs trained since issue 13) `per_case_final.tsv`.
Every case row gets its run's `status` (converged | diverged), `data_source` (synthetic | real),
`scale`, `stop_reason` (plateau | budget | diverged; empty = not recorded) and `still_improving`
(True | False; empty = not recorded) from `summary.json`, and `dice_final`, the same scan's Dice
with the run's final weights (empty without `per_case_final.tsv`). Folders written before these
fields existed are read as "unknown", never refused. The method table (labels, row order) and
the setting pattern come from the resolved config (`--config`). `aggregate` also returns one row
per run (`RUN_COLUMNS`), which the command checks and logs but does not write.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from analysis.common import (
    STATUSES,
    STOP_REASONS,
    DataError,
    numeric_column,
    read_json,
    read_table,
    run_cli,
    write_tsv,
)
from analysis.methods import check_label, method_rank, sort_settings, use_config

log = logging.getLogger("analysis.aggregate")

KEYS = ("dataset", "setting", "method", "method_label", "rep")
CASE_COLUMNS = (*KEYS, "case_id", "site", "dice", "hd95", "avd", "status")
SUMMARY_KEYS = (*KEYS, "status", "data_source", "scale")
DATA_SOURCES = ("synthetic", "real")
# Per-run facts of the stopping rule, copied onto every case row (empty = not recorded).
RUN_FACTS = ("stop_reason", "still_improving")
RUN_COLUMNS = (*KEYS, "status", "n_test", "n_scored", "mean_dice", "n_scored_final", "mean_dice_final",
               "best_iteration", "iterations", "final_iteration", "last_validation_iteration", "n_validations",
               "stop_reason", "still_improving", "logged_iterations", "wall_seconds", "data_source", "scale",
               "run_dir")


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
    facts = run_facts(summary, source)
    cases = cases[list(CASE_COLUMNS)].assign(data_source=summary["data_source"], scale=summary["scale"], **facts)
    cases["dice_final"] = final_dice(run_dir, cases)

    run = {key: summary.get(key) for key in RUN_COLUMNS}
    run.update(facts, n_scored=int(cases["dice"].notna().sum()), n_scored_final=int(cases["dice_final"].notna().sum()),
               mean_dice_final=cases["dice_final"].mean(), logged_iterations=_logged_iterations(run_dir),
               run_dir=str(run_dir))
    return cases, run


def run_facts(summary: dict, source: Path) -> dict:
    """`stop_reason` and `still_improving` of a summary, checked; "" where not recorded."""
    reason, improving = summary.get("stop_reason"), summary.get("still_improving")
    if reason is not None and reason not in STOP_REASONS:
        raise DataError(f"{source}: stop_reason {reason!r} is not one of {', '.join(STOP_REASONS)}")
    if improving is not None and not isinstance(improving, bool):
        raise DataError(f"{source}: still_improving must be true or false, got {improving!r}")
    return {"stop_reason": reason or "", "still_improving": "" if improving is None else improving}


def final_dice(run_dir: Path, cases: pd.DataFrame) -> pd.Series:
    """Dice of each case row with the run's final weights (`per_case_final.tsv`); NaN without the file."""
    path = run_dir / "per_case_final.tsv"
    if not path.is_file():
        return pd.Series(float("nan"), index=cases.index)
    final = read_table(path, ("case_id", "dice"), "per-case metrics of the final weights")
    if set(final["case_id"].astype(str)) != set(cases["case_id"].astype(str)) or final["case_id"].duplicated().any():
        raise DataError(f"{path}: its cases differ from per_case.tsv's; rerun the run's training or delete the file")
    dice = numeric_column(final, "dice", path)
    return cases["case_id"].astype(str).map(dict(zip(final["case_id"].astype(str), dice)))


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
    parser.add_argument("--config", required=True, help="resolved config (results/config.json): the method table")
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help="run folders of one dataset")
    parser.add_argument("--out-cases", required=True, help="TSV of all per-case rows")
    parser.set_defaults(run=cli)
    return parser


def cli(args: argparse.Namespace) -> int:
    use_config(args.config)
    cases, runs = aggregate(args.runs)
    write_tsv(args.out_cases, cases)
    log.info("%d runs (%d diverged), %d case rows -> %s", len(runs), int((runs["status"] == "diverged").sum()),
             len(cases), args.out_cases)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(build_parser()))
