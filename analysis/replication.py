"""Ours against the paper: per-cell comparison, per-column agreement and the claim checklist.

    python -m analysis.replication --config results/config.json \
        --stats results/stats/brats18.tsv results/stats/wmh17.tsv \
        --cases results/metrics/brats18.tsv results/metrics/wmh17.tsv \
        --probe-files results/probe/brats18/50L70U/*/rep*.tsv --paper config/paper_values.tsv \
        --out-dir results/replication

Writes `report.md`, `report.html`, `paper_vs_ours.{png,pdf}` and `checklist.tsv`. The case
tables give the per-repetition means behind each claim's interval, the probe files Table 3 and
its per-repetition R² (`analysis.claims` says how verdicts are reached). From the resolved
config (`massl config` fills every key): the method table (`library`), `replication`
(tolerances), `stats.alpha` (the intervals are at 1 − alpha), `stats.claim_interval`
(`corrected` | `t`) and `probe.variance` (`within` | `pooled`).

A cell is within tolerance when |ours − paper| ≤ max(tolerance_dice, tolerance_se · SE), where
SE is the standard error of our mean (`analysis.stats.standard_error`: sd over repetitions /
√repetitions for Tables 1-2, √(variance / n) for Table 3) and the two tolerances come from the
config key `replication`. Ranks are within a column (1 = highest) over the methods both sides
report; Kendall's τ (scipy.stats.kendalltau) compares the two orderings of a column.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.claims import Evidence, Verdict, check_claims
from analysis.common import ConfigError, DataError, config_value, run_cli
from analysis.methods import method_labels, sort_settings, use_config
from analysis.report import write_report
from analysis.stats import INTERVALS, read_cases, repetition_means, standard_error
from analysis.tables import VARIANCES, probe_rep_means, probe_summary, read_probe_files, read_stats

log = logging.getLogger("analysis.replication")

PAPER_COLUMNS = ("table", "dataset", "setting", "method", "value", "spread", "better_than_cnn")
TABLE_OF_DATASET = {"brats18": "table1", "wmh17": "table2"}
TOLERANCE_KEYS = ("tolerance_dice", "tolerance_se")
# read_options: option -> key of the resolved config
OPTION_KEYS = {"alpha": "stats.alpha", "claim_interval": "stats.claim_interval", "variance": "probe.variance"}


def read_paper_values(path: str | Path) -> pd.DataFrame:
    """The paper's printed values with method ids and, for Table 3, the encoder level.

    The file's last comment line names the columns (`# table<TAB>dataset<TAB>...`)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: paper values not found") from None
    header = [ln for ln in lines if ln.startswith("#") and "\t" in ln]
    if not header or tuple(header[-1].lstrip("# ").split("\t")) != PAPER_COLUMNS:
        raise DataError(f"{path}: expected a header comment '# {chr(9).join(PAPER_COLUMNS)}'")
    rows = [ln.split("\t") for ln in lines if ln.strip() and not ln.startswith("#")]
    if not rows or any(len(r) != len(PAPER_COLUMNS) for r in rows):
        raise DataError(f"{path}: every row needs {len(PAPER_COLUMNS)} tab-separated fields")
    paper = pd.DataFrame(rows, columns=list(PAPER_COLUMNS))
    parts = paper["method"].str.partition("@level")
    label, level = parts[0], parts[2]
    ids = {name: method for method, name in method_labels().items()}
    unknown = sorted(set(label) - set(ids))
    if unknown:
        raise DataError(f"{path}: unknown method label(s) {', '.join(unknown)}")
    try:
        numbers = {column: pd.to_numeric(values.replace("", np.nan))
                   for column, values in (("level", level), ("value", paper["value"]), ("spread", paper["spread"]))}
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from exc
    return paper.assign(method=label.map(ids), star=paper["better_than_cnn"].str.strip() == "*", **numbers)


def read_tolerance(config: dict, config_path: str | Path = "resolved config") -> dict:
    """`replication` {tolerance_dice, tolerance_se} of the resolved config, checked."""
    given = config_value(config, "replication", config_path)
    unknown = sorted(set(given) - set(TOLERANCE_KEYS))
    if unknown:
        raise ConfigError(f"{config_path}: unknown key(s) in 'replication': {', '.join(unknown)}")
    tolerance = {key: config_value(config, f"replication.{key}", config_path) for key in TOLERANCE_KEYS}
    for key, value in tolerance.items():
        if not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{config_path}: replication.{key} must be a number >= 0, got {value!r}")
    return tolerance


def read_options(config: dict, config_path: str | Path = "resolved config") -> dict:
    """{alpha, claim_interval, variance} of the resolved config, checked."""
    options = {option: config_value(config, key, config_path) for option, key in OPTION_KEYS.items()}
    if not isinstance(options["alpha"], (int, float)) or not 0 < options["alpha"] < 1:
        raise ConfigError(f"{config_path}: stats.alpha must be in (0, 1), got {options['alpha']!r}")
    for (section, key), allowed in ((("stats", "claim_interval"), INTERVALS), (("probe", "variance"), VARIANCES)):
        if options[key] not in allowed:
            raise ConfigError(f"{config_path}: {section}.{key} {options[key]!r} is not one of {', '.join(allowed)}")
    return options


def data_origin(stats: list[pd.DataFrame], names: list[str]) -> tuple[str, str]:
    """(data_source, scale) shared by all statistics tables; a mix is an error."""
    for column in ("data_source", "scale"):
        values = {name: sorted(s[column].astype(str).unique()) for name, s in zip(names, stats)}
        distinct = sorted({v for vs in values.values() for v in vs})
        if len(distinct) > 1:
            raise DataError(f"statistics tables mix {column} values: "
                            + "; ".join(f"{n}: {', '.join(v)}" for n, v in values.items()))
    return str(stats[0]["data_source"].iloc[0]), str(stats[0]["scale"].iloc[0])


def our_cells(stats: pd.DataFrame) -> pd.DataFrame:
    """Table 1/2 cells of one statistics table in the claims' layout."""
    dataset = str(stats["dataset"].iloc[0])
    if dataset not in TABLE_OF_DATASET:
        raise DataError(f"dataset {dataset!r} has no table in the paper ({', '.join(TABLE_OF_DATASET)})")
    # 1.0 / 0.0 for significantly better than CNN; NaN when the marks are against another reference
    star = np.where(stats["reference"] == "cnn", stats["mark_ref"] == "*", np.nan)
    return pd.DataFrame({"table": TABLE_OF_DATASET[dataset], "dataset": dataset, "setting": stats["setting"],
                         "method": stats["method"], "value": stats["mean"], "sd": stats["sd"],
                         "n_reps": stats["n_reps"], "n_converged": stats["n_converged"],
                         "se": standard_error(stats["n_converged"], sd=stats["sd"]), "nc": stats["n_diverged"] > 0,
                         "star": star, "mean_final": stats["mean_final"], "n_stop_budget": stats["n_stop_budget"],
                         "n_stop_unknown": stats["n_stop_unknown"], "n_still_improving": stats["n_still_improving"],
                         "still_improving_reps": stats["still_improving_reps"]})


def our_repetitions(cases: pd.DataFrame) -> pd.DataFrame:
    """Converged per-repetition mean Dice of one case table: table, setting, method, rep, value."""
    dataset = str(cases["dataset"].iloc[0])
    reps = repetition_means(cases)
    reps = reps[(reps["status"] == "converged") & reps["mean"].notna()]
    return pd.DataFrame({"table": TABLE_OF_DATASET.get(dataset, dataset), "setting": reps["setting"],
                         "method": reps["method"], "rep": reps["rep"], "value": reps["mean"]})


def paper_cells(paper: pd.DataFrame) -> pd.DataFrame:
    rows = paper[paper["table"].isin(TABLE_OF_DATASET.values())]
    return rows[["table", "dataset", "setting", "method", "value", "star"]].assign(nc=False)


def _rank(values: pd.Series) -> pd.Series:
    return values.rank(ascending=False, method="min")


def compare_cells(ours: pd.DataFrame, paper: pd.DataFrame, tolerance: dict, column: str = "setting") -> pd.DataFrame:
    """Side by side per cell present on both sides (joined on table, `column`, method); `ours`
    carries the standard error `se` of each of its values."""
    both = ours.merge(paper, on=["table", column, "method"], suffixes=("_ours", "_paper"))
    both["diff"] = both["value_ours"] - both["value_paper"]
    both["tolerance"] = np.fmax(tolerance["tolerance_dice"], tolerance["tolerance_se"] * both["se"])
    usable = ~both["nc_ours"] & both["value_ours"].notna()
    both["within"] = np.where(usable, both["diff"].abs() <= both["tolerance"], False)
    both["usable"] = usable
    both["rank_paper"] = both.groupby(["table", column])["value_paper"].transform(_rank)
    both["rank_ours"] = both["value_ours"].where(usable).groupby([both["table"], both[column]]).transform(_rank)
    return both


def column_agreement(compared: pd.DataFrame, column: str = "setting") -> pd.DataFrame:
    """Per column: Kendall's τ of the two orderings and agreement of the `*` marks."""
    rows = []
    for (table, value), here in compared.groupby(["table", column], sort=False):
        usable = here[here["usable"]]
        tau, p = (sps.kendalltau(usable["value_paper"], usable["value_ours"])
                  if len(usable) >= 2 else (np.nan, np.nan))
        row = {"table": table, column: value, "n_methods": len(usable), "kendall_tau": tau, "tau_p": p}
        if "star_ours" in here:
            marked = usable[usable["star_ours"].notna()]
            row["star_agree"] = int((marked["star_ours"].astype(bool) == marked["star_paper"]).sum())
            row["star_n"] = len(marked)
            row["stars_paper"] = int(marked["star_paper"].sum())
            row["stars_ours"] = int(marked["star_ours"].astype(bool).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def our_probe(table: pd.DataFrame) -> pd.DataFrame:
    """Table 3 (`analysis.tables.probe_summary`) in the claims' layout."""
    return pd.DataFrame({"table": "table3", "method": table["method"], "level": table["level"].astype(int),
                         "value": table["mean"], "variance": table["variance"], "n": table["n"],
                         "se": standard_error(table["n"], variance=table["variance"]), "setting": table["setting"],
                         "dataset": table["dataset"], "nc": table["n_diverged"] > 0,
                         "n_diverged": table["n_diverged"], "reason": table["reason"], "score": table["score"],
                         "variance_kind": table["variance_kind"]})


def compare_probe(probe: pd.DataFrame, paper: pd.DataFrame, tolerance: dict) -> pd.DataFrame:
    paper3 = paper[paper["table"] == "table3"].assign(level=lambda f: f["level"].astype(int))
    paper3 = paper3[["table", "level", "method", "value", "spread"]].rename(columns={"spread": "variance"})
    return compare_cells(probe, paper3.assign(nc=False), tolerance, column="level")


def _paper_probe(paper: pd.DataFrame) -> pd.DataFrame:
    return paper[paper["table"] == "table3"].assign(level=lambda f: f["level"].astype(int))


def settings_note(ours: pd.DataFrame, paper: pd.DataFrame, probe: pd.DataFrame | None) -> list[str]:
    """Lines naming settings present on one side only (e.g. a smoke grid's small settings)."""
    lines = []
    paper_probe = sort_settings(paper.loc[paper["table"] == "table3", "setting"])
    if probe is not None and set(probe["setting"]) != set(paper_probe):
        lines.append(f"table3: our probe models come from setting {', '.join(sort_settings(probe['setting']))}, "
                     f"the paper's from {', '.join(paper_probe)}.")
    for table in sorted(set(ours["table"]) | set(paper_cells(paper)["table"])):
        mine = set(ours.loc[ours["table"] == table, "setting"])
        theirs = set(paper.loc[paper["table"] == table, "setting"])
        if mine - theirs:
            lines.append(f"{table}: our setting(s) {', '.join(sort_settings(mine - theirs))} have no paper value.")
        if theirs - mine:
            lines.append(f"{table}: paper setting(s) {', '.join(sort_settings(theirs - mine))} were not run.")
    return lines


@dataclass
class Replication:
    """Everything the report shows; `compared*` and `*agreement` come from `compare_cells` and
    `column_agreement`, the verdicts from `analysis.claims.check_claims`."""

    source: str
    scale: str
    tolerance: dict
    ours: pd.DataFrame
    paper: pd.DataFrame
    compared: pd.DataFrame
    agreement: pd.DataFrame
    probe: pd.DataFrame | None
    compared_probe: pd.DataFrame | None
    probe_agreement: pd.DataFrame | None
    ours_claims: list[Verdict]
    paper_claims: list[Verdict]
    notes: list[str]  # settings present on one side only
    options: dict  # read_options: alpha, claim_interval, variance


def replicate(stats: list[pd.DataFrame], names: list[str], cases: list[pd.DataFrame], paper: pd.DataFrame,
              tolerance: dict, probe_rows: pd.DataFrame | None, options: dict) -> Replication:
    """Compare statistics tables (one per dataset, with the case table of the same dataset) and
    the probe rows (`analysis.tables.read_probe_files`) with the paper's values; `tolerance` and
    `options` as `read_tolerance` and `read_options` give them."""
    source, scale = data_origin(stats, names)
    ours = pd.concat([our_cells(s) for s in stats], ignore_index=True)
    if ours.duplicated(["table", "setting", "method"]).any():
        raise DataError(f"two statistics tables describe the same dataset: {', '.join(names)}")
    datasets = sorted(str(s["dataset"].iloc[0]) for s in stats)
    if sorted(str(c["dataset"].iloc[0]) for c in cases) != datasets:
        raise DataError(f"give one case table per statistics table (datasets {', '.join(datasets)}), "
                        f"got case tables of {', '.join(sorted(str(c['dataset'].iloc[0]) for c in cases))}")
    ratio = {TABLE_OF_DATASET.get(str(s["dataset"].iloc[0])): float(s["test_train_ratio"].iloc[0]) for s in stats}
    probe = probe_reps = None
    if probe_rows is not None:
        probe = our_probe(probe_summary(probe_rows, options["variance"]))
        probe_reps = probe_rep_means(probe_rows)
        ratio["table3"] = ratio.get(TABLE_OF_DATASET.get(str(probe["dataset"].iloc[0])), float("nan"))
    evidence = Evidence(ours, pd.concat([our_repetitions(c) for c in cases], ignore_index=True), probe, probe_reps,
                        ratio, 1 - options["alpha"], options["claim_interval"])
    compared = compare_cells(ours, paper_cells(paper), tolerance)
    compared_probe = compare_probe(probe, paper, tolerance) if probe is not None else None
    return Replication(
        source=source, scale=scale, tolerance=tolerance, ours=ours, paper=paper, compared=compared,
        agreement=column_agreement(compared), probe=probe, compared_probe=compared_probe,
        probe_agreement=column_agreement(compared_probe, "level") if compared_probe is not None else None,
        ours_claims=check_claims(evidence),
        paper_claims=check_claims(Evidence(paper_cells(paper), probe=_paper_probe(paper))),
        notes=settings_note(ours, paper, probe), options=options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.replication", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True,
                        help="resolved config (results/config.json): the method table, replication tolerances, "
                             "stats.alpha, stats.claim_interval, probe.variance")
    parser.add_argument("--stats", nargs="+", required=True, help="statistics TSVs (results/stats/<d>.tsv)")
    parser.add_argument("--cases", nargs="+", required=True,
                        help="aggregated case tables, one per statistics table (results/metrics/<d>.tsv)")
    parser.add_argument("--probe-files", nargs="+", default=None,
                        help="probe TSVs of Table 3 (results/probe/<d>/<s>/<m>/rep<r>.tsv)")
    parser.add_argument("--paper", required=True, help="the paper's values (config/paper_values.tsv)")
    parser.add_argument("--out-dir", required=True, help="folder for report.md/.html, figure and checklist")
    parser.set_defaults(run=cli)
    return parser


def cli(args: argparse.Namespace) -> int:
    config = use_config(args.config)
    tolerance, options = read_tolerance(config, args.config), read_options(config, args.config)
    probe_rows = read_probe_files(args.probe_files) if args.probe_files else None
    result = replicate([read_stats(p) for p in args.stats], args.stats, [read_cases(p) for p in args.cases],
                       read_paper_values(args.paper), tolerance, probe_rows, options)
    paths = write_report(Path(args.out_dir), result)
    log.info("replication report (%s data, scale %s) -> %s", result.source, result.scale,
             ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(build_parser()))
