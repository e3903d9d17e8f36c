"""Per (setting, method) Dice statistics and the significance tests behind the table marks.

    python -m analysis.stats --config results/config.json --cases results/metrics/<d>.tsv \
        --out results/stats/<d>.tsv --test-train-ratio FLOAT [--alpha A] [--reference ID] [--best ID]

`--alpha`, `--reference` and `--best` default to the resolved config's `stats` section, which
also holds the method table (`library`).

A cell of Tables 1-2 is the mean Dice over the test scans of a repetition (NaN = both masks
empty, left out), averaged over the converged repetitions; `sd` is over the repetition means.
Two tests compare each method with the reference (`stats.reference`, the paper's CNN, mark `*`)
and with the best method (`stats.best`, the paper's MASSL(alter), mark `†`), within each column
(setting):

- `p_ref`, `p_best`: the paper's test, a paired two-sided t-test over per-scan Dice pooled
  across repetitions (pairs = same repetition and case; both runs converged, both Dice finite).
  The same scans appear in every repetition's comparison, so this test is optimistic.
- `p_*_corrected`: the corrected resampled t-test of Nadeau & Bengio (2003) over the
  per-repetition differences of means, d_j (j = 1..J):
  t = mean(d) / sqrt((1/J + n_test/n_train) · var(d)), df = J - 1.
- `p_*_holm`, `p_*_corrected_holm`: the same p-values Holm-adjusted over the methods of the
  column (`--methods`: the paper's nine for Tables 1-2, with the baselines beyond the paper for
  table1_plus / table2_plus).

`mark_ref` is `*` when the method is significantly better than the reference (p < alpha and a
higher mean); `mark_best` is `†` when significantly worse than the best method. The p-value
used for the marks is `--mark-test` (default `paired`, as in the paper). Cells with a diverged
repetition (`n_diverged` > 0) get no marks: the tables print them as `n.c.`.
`n_cases` counts the finite per-scan Dice values pooled over the converged repetitions.

Beside the best-checkpoint numbers (the paper's protocol) each cell carries `mean_final`,
`sd_final` and `n_final`: the same statistics with the runs' final weights (`dice_final`, over
the converged repetitions that have it), and how its runs ended: `n_stop_plateau`,
`n_stop_budget`, `n_stop_diverged`, `n_stop_unknown` (no `stop_reason` recorded: runs from
before the stopping rule), `n_still_improving` (ended at the budget with the best validation
among the last ones) and `still_improving_reps` (their repetition numbers, `2,4`).

`effect_interval` is the confidence interval that matches the corrected test (it excludes 0
exactly when that test's p < 1 - confidence); the replication report's claims use it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from analysis.common import (
    STATUSES,
    STOP_REASONS,
    ConfigError,
    DataError,
    config_value,
    numeric_column,
    read_table,
    run_cli,
    write_tsv,
)
from analysis.methods import check_label, method_ids, method_rank, sort_settings, use_config

log = logging.getLogger("analysis.stats")

CASE_COLUMNS = ("dataset", "setting", "method", "method_label", "rep", "case_id", "dice", "status",
                "data_source", "scale")
COMPARISONS = ("ref", "best")
# --mark-test choice -> suffix of the p-value column the marks use.
MARK_TESTS = {"paired": "", "paired_holm": "_holm", "corrected": "_corrected", "corrected_holm": "_corrected_holm"}
P_COLUMNS = tuple(f"p_{c}{s}" for c in COMPARISONS for s in ("", "_corrected", "_holm", "_corrected_holm"))
STOP_COLUMNS = (*(f"n_stop_{r}" for r in STOP_REASONS), "n_stop_unknown")
RUN_COLUMNS = ("mean_final", "sd_final", "n_final", *STOP_COLUMNS, "n_still_improving", "still_improving_reps")
STATS_COLUMNS = ("dataset", "setting", "method", "method_label", "mean", "sd", "n_reps", "n_converged",
                 "n_diverged", "n_cases", *RUN_COLUMNS, "reference", "best", *P_COLUMNS, "mark_ref", "mark_best",
                 "mark_test", "alpha", "test_train_ratio", "data_source", "scale")
# Columns of the case table that runs from before issue 13 lack: filled as "not recorded".
OPTIONAL_CASE_COLUMNS = {"dice_final": float("nan"), "stop_reason": "", "still_improving": ""}
# Kinds of `effect_interval` -> what the replication report says of them.
INTERVALS = {"corrected": "the corrected resampled t interval of Nadeau & Bengio (2003) over the per-repetition "
                          "differences (variance factor 1/J + n_test/n_train: the repetitions' training sets "
                          "overlap, so a plain t interval would be too narrow)",
             "t": "a plain t interval over the per-repetition differences (no correction for the overlap of "
                  "the repetitions' training sets: too narrow)"}


def standard_error(n, *, sd=None, variance=None):
    """Standard error of a mean of `n` values: sd / √n, or √(variance / n) from a variance
    (the same number up to rounding; each form as its callers have always computed it).
    Works on numbers and on pandas/numpy arrays alike."""
    if (sd is None) == (variance is None):
        raise TypeError("give exactly one of sd and variance")
    return sd / np.sqrt(n) if variance is None else np.sqrt(variance / n)


def paired_t_test(a, b) -> float:
    """Two-sided paired t-test p-value of `a` vs `b`; NaN with fewer than 2 pairs or no spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical samples: p is NaN, said above
        return float(sps.ttest_rel(a, b).pvalue)


def corrected_resampled_t_test(differences, test_train_ratio: float) -> float:
    """Two-sided p-value of the Nadeau & Bengio (2003) corrected resampled t-test.

    `differences` are the per-repetition differences of mean scores of two methods evaluated on
    the same J random train/test splits. The variance factor 1/J + n_test/n_train accounts for
    the overlap of the training sets across repetitions. NaN when J < 2 or the differences are
    all zero.
    """
    d = np.asarray(differences, float)
    if len(d) < 2:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        t = d.mean() / np.sqrt((1 / len(d) + test_train_ratio) * d.var(ddof=1))
    return float(2 * sps.t.sf(abs(t), df=len(d) - 1)) if not np.isnan(t) else float("nan")


def effect_interval(differences, test_train_ratio: float, confidence: float = 0.95,
                    kind: str = "corrected") -> tuple[float, float, float]:
    """(mean, low, high) of per-repetition differences with a two-sided t interval.

    `corrected`: the variance factor of the corrected resampled t-test, 1/J + n_test/n_train
    (Nadeau & Bengio 2003), so the interval excludes 0 exactly when that test rejects at
    1 - confidence. `t`: the plain one-sample t interval (factor 1/J), too narrow when the
    repetitions' training sets overlap. NaN bounds with fewer than 2 finite differences.
    """
    if kind not in INTERVALS:
        raise ConfigError(f"interval {kind!r} is not one of {', '.join(INTERVALS)}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    d = np.asarray(differences, float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(d.mean())
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    factor = 1 / len(d) + (test_train_ratio if kind == "corrected" else 0.0)
    half = sps.t.ppf(0.5 + confidence / 2, df=len(d) - 1) * np.sqrt(factor * d.var(ddof=1))
    return mean, mean - float(half), mean + float(half)


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries stay NaN and are not counted in the family."""
    p = np.asarray(pvalues, float)
    adjusted = np.full_like(p, np.nan)
    finite = ~np.isnan(p)
    if finite.any():
        adjusted[finite] = multipletests(p[finite], method="holm")[1]
    return adjusted


def with_run_facts(cases: pd.DataFrame) -> pd.DataFrame:
    """`cases` with the optional columns present (`OPTIONAL_CASE_COLUMNS`, not recorded = empty)."""
    missing = {k: v for k, v in OPTIONAL_CASE_COLUMNS.items() if k not in cases.columns}
    cases = cases.assign(**missing)
    cases["stop_reason"] = cases["stop_reason"].fillna("").astype(str)
    cases["still_improving"] = [flag(v) for v in cases["still_improving"]]
    return cases


def flag(value):
    """True / False from a bool or its text; NaN when not recorded (empty, NaN)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = "" if pd.isna(value) else str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    if text == "":
        return float("nan")
    raise DataError(f"still_improving value {value!r} is not true or false")


def repetition_means(cases: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per (setting, method, rep) over finite per-scan Dice (`mean`; `mean_final` with
    the final weights), with the run's status, stop_reason and still_improving."""
    cases = with_run_facts(cases)
    grouped = cases.groupby(["setting", "method", "rep"], sort=False)
    return grouped.agg(mean=("dice", "mean"), mean_final=("dice_final", "mean"), status=("status", "first"),
                       stop_reason=("stop_reason", "first"), still_improving=("still_improving", "first")) \
        .reset_index()


def compute_stats(cases: pd.DataFrame, test_train_ratio: float, alpha: float = 0.05, *, reference: str,
                  best: str, mark_test: str = "paired") -> pd.DataFrame:
    """The statistics table (columns `STATS_COLUMNS`) for the case rows of one dataset; `*` marks
    against method `reference`, `†` against `best` (the config's `stats.reference`, `stats.best`)."""
    if mark_test not in MARK_TESTS:
        raise ConfigError(f"mark test {mark_test!r} is not one of {', '.join(MARK_TESTS)}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    for name, method in (("reference", reference), ("best", best)):
        if method not in method_ids():
            raise ConfigError(f"{name} method {method!r} is not one of {', '.join(method_ids())}")
    if not test_train_ratio > 0:
        raise ConfigError(f"test/train ratio must be > 0, got {test_train_ratio}")
    _check_single(cases, ("dataset", "data_source", "scale"))
    rep_means = repetition_means(cases)
    columns = [_column_stats(cases[cases["setting"] == s], rep_means[rep_means["setting"] == s],
                             test_train_ratio, reference, best) for s in sort_settings(cases["setting"])]
    table = pd.concat(columns, ignore_index=True)
    suffix = MARK_TESTS[mark_test]
    eligible = table["n_diverged"] == 0
    means = table.set_index(["setting", "method"])["mean"]
    ref_mean = np.array([means.get((s, reference), np.nan) for s in table["setting"]])
    best_mean = np.array([means.get((s, best), np.nan) for s in table["setting"]])
    better = eligible & (table[f"p_ref{suffix}"] < alpha) & (table["mean"] > ref_mean)
    worse = eligible & (table[f"p_best{suffix}"] < alpha) & (table["mean"] < best_mean)
    first = cases.iloc[0]
    table = table.assign(mark_ref=np.where(better, "*", ""), mark_best=np.where(worse, "†", ""),
                         reference=reference, best=best, mark_test=mark_test, alpha=alpha,
                         test_train_ratio=test_train_ratio, dataset=first["dataset"],
                         data_source=first["data_source"], scale=first["scale"])
    return table[list(STATS_COLUMNS)]


def _check_single(cases: pd.DataFrame, columns) -> None:
    for column in columns:
        values = sorted(cases[column].astype(str).unique())
        if len(values) > 1:
            raise DataError(f"case table mixes {column} values {', '.join(values)}")


def _column_stats(cases: pd.DataFrame, rep_means: pd.DataFrame, ratio: float, reference: str,
                  best: str) -> pd.DataFrame:
    """One setting: descriptive statistics and raw + Holm p-values for each method."""
    converged = rep_means[rep_means["status"] == "converged"].dropna(subset=["mean"])
    rows = []
    for method in sorted(cases["method"].unique(), key=method_rank):
        mine = rep_means[rep_means["method"] == method]
        my_converged = converged[converged["method"] == method]["mean"]
        my_cases = cases[(cases["method"] == method) & (cases["status"] == "converged")]
        row = {"setting": cases["setting"].iloc[0], "method": method,
               "method_label": cases.loc[cases["method"] == method, "method_label"].iloc[0],
               "mean": my_converged.mean(), "sd": my_converged.std(ddof=1),
               "n_reps": len(mine), "n_converged": int((mine["status"] == "converged").sum()),
               "n_diverged": int((mine["status"] == "diverged").sum()),
               "n_cases": int(my_cases["dice"].notna().sum()), **_run_endings(mine)}
        for name, other in (("ref", reference), ("best", best)):
            row[f"p_{name}"], row[f"p_{name}_corrected"] = _compare(cases, converged, method, other, ratio)
        rows.append(row)
    table = pd.DataFrame(rows)
    for name in COMPARISONS:
        table[f"p_{name}_holm"] = holm(table[f"p_{name}"])
        table[f"p_{name}_corrected_holm"] = holm(table[f"p_{name}_corrected"])
    return table


def _run_endings(reps: pd.DataFrame) -> dict:
    """Final-weights statistics and stop counts of one cell's repetitions."""
    final = reps.loc[reps["status"] == "converged", "mean_final"].dropna()
    reason = reps["stop_reason"]
    improving = sorted(int(r) for r, v in zip(reps["rep"], reps["still_improving"])
                       if isinstance(v, (bool, np.bool_)) and v)
    return {"mean_final": final.mean(), "sd_final": final.std(ddof=1), "n_final": len(final),
            **{f"n_stop_{r}": int((reason == r).sum()) for r in STOP_REASONS},
            "n_stop_unknown": int((reason == "").sum()), "n_still_improving": len(improving),
            "still_improving_reps": ",".join(map(str, improving))}


def _compare(cases: pd.DataFrame, converged: pd.DataFrame, method: str, other: str, ratio: float):
    """(paired per-scan p, corrected resampled p) of `method` vs `other`; NaN vs itself/absent."""
    if method == other or other not in set(cases["method"]):
        return float("nan"), float("nan")
    ok = cases[cases["status"] == "converged"]
    pairs = ok[ok["method"] == method].merge(ok[ok["method"] == other], on=["rep", "case_id"])
    pairs = pairs.dropna(subset=["dice_x", "dice_y"])
    means = converged[converged["method"] == method].merge(converged[converged["method"] == other], on="rep")
    return (paired_t_test(pairs["dice_x"], pairs["dice_y"]),
            corrected_resampled_t_test(means["mean_x"] - means["mean_y"], ratio))


def read_cases(path) -> pd.DataFrame:
    """The aggregated case table, checked: known methods, paper labels, known statuses."""
    cases = read_table(path, CASE_COLUMNS, "case table")
    cases["dice"] = numeric_column(cases, "dice", path)
    cases["rep"] = numeric_column(cases, "rep", path).astype(int)
    if "dice_final" in cases.columns:
        cases["dice_final"] = numeric_column(cases, "dice_final", path)
    try:
        cases = with_run_facts(cases)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    unknown_reasons = set(cases["stop_reason"]) - {"", *STOP_REASONS}
    if unknown_reasons:
        raise DataError(f"{path}: unknown stop_reason value(s) {', '.join(sorted(unknown_reasons))}")
    for method, label in cases[["method", "method_label"]].drop_duplicates().itertuples(index=False):
        check_label(method, label, str(path))
    unknown = set(cases["status"]) - set(STATUSES)
    if unknown:
        raise DataError(f"{path}: unknown status value(s) {', '.join(map(str, unknown))}")
    return cases


def select_methods(cases: pd.DataFrame, methods: str | None, source) -> pd.DataFrame:
    """The case rows of the comma-separated `methods` (all when None); each must have rows."""
    if methods is None:
        return cases
    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    missing = [m for m in wanted if m not in set(cases["method"])]
    if missing:
        raise DataError(f"{source}: no case rows for method(s) {', '.join(missing)} (--methods)")
    return cases[cases["method"].isin(wanted)].reset_index(drop=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True,
                        help="resolved config (results/config.json): the method table and the stats defaults")
    parser.add_argument("--cases", required=True, help="aggregated case table (results/metrics/<d>.tsv)")
    parser.add_argument("--out", required=True, help="statistics TSV to write")
    parser.add_argument("--test-train-ratio", type=float, required=True,
                        help="n_test / n_train of the splits, for the corrected resampled t-test")
    parser.add_argument("--alpha", type=float, default=None, help="significance level of the marks "
                        "(default: the config's stats.alpha)")
    parser.add_argument("--reference", default=None, help="method marked against with * "
                        "(default: the config's stats.reference)")
    parser.add_argument("--best", default=None,
                        help="method marked against with † (default: the config's stats.best)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated method ids: the rows (and the Holm family) of this table; "
                             "default: every method of the case table")
    parser.add_argument("--mark-test", choices=list(MARK_TESTS), default="paired",
                        help="p-value behind the marks (default: paired, the paper's test)")
    parser.set_defaults(run=cli)
    return parser


def cli(args: argparse.Namespace) -> int:
    config = use_config(args.config)
    alpha, reference, best = (config_value(config, f"stats.{key}", args.config) if given is None else given
                              for key, given in (("alpha", args.alpha), ("reference", args.reference),
                                                 ("best", args.best)))
    cases = select_methods(read_cases(args.cases), args.methods, args.cases)
    table = compute_stats(cases, args.test_train_ratio, alpha, reference=reference, best=best,
                          mark_test=args.mark_test)
    write_tsv(args.out, table)
    log.info("%d cells, %d marked *, %d marked † -> %s", len(table), int((table["mark_ref"] == "*").sum()),
             int((table["mark_best"] == "†").sum()), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(build_parser()))
