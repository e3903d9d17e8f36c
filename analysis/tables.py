"""The paper's tables as CSV, Markdown and LaTeX.

    python -m analysis.tables results --config results/config.json --stats results/stats/<d>.tsv \
        --out-prefix results/tables/table1 --caption "..." [--methods ID,ID,...] [--settings 20L100U,...]
    python -m analysis.tables probe --config results/config.json \
        --probe-files results/probe/<d>/<s>/<m>/rep<r>.tsv ... --out-prefix results/tables/table3 \
        [--caption "..."] [--variance within|pooled]

Both read the method table (labels, row order) and the setting pattern from the resolved config.

Tables 1-2 (`results`): methods as rows in the paper's order, settings as columns, mean Dice with
4 decimals and the marks of `analysis.stats`; `n.c.` where a repetition diverged; a bottom row
`SD_ROW`: per column, the median over the methods (converged cells) of the standard deviation of
each method's repetition means, the noise a difference between two rows must clear.
`<prefix>.csv` is the printed table (first column `method` holds the paper's labels, the last
row is `SD_ROW`); `<prefix>_extended.*` adds per cell the sd, the mean with the final weights,
converged repetitions, how the runs stopped, the runs still improving at their budget and all
p-values (one row per cell).

Table 3 (`probe`): rows the probed methods (the paper's: CNN, MSSL(alter), MASSL(alter)),
columns encoder levels 1..5, cells `mean (variance)` of the probe R² (held-out or in-sample, as
`massl probe` scored it). The bracket is the config's `probe.variance` (or `--variance`):
`within` (the paper's reading: the variance over the draws of each repetition's model, averaged
over repetitions) or `pooled` (over all draws of all repetitions). The caption is built from the
config's `probe` section and `repetitions` (`probe_caption`) unless `--caption` is given. A
level whose probe rows give a `reason` (e.g. under-determined) prints `–` and the reason in the
notes, never a number; a cell with a diverged model prints `n.c.` as in Tables 1-2 (its mean is
over the other repetitions). `<prefix>.csv` is tidy: `PROBE_SUMMARY_COLUMNS`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import pandas as pd

from analysis.common import (
    NOT_CONVERGED,
    STOP_REASONS,
    ConfigError,
    DataError,
    atomic_path,
    atomic_write_text,
    config_value,
    numeric_column,
    read_table,
    run_cli,
)
from analysis.methods import (
    check_label,
    label_of,
    method_rank,
    setting_header,
    sort_settings,
    use_config,
)
from analysis.render import fmt, fmt_p, latex_table, markdown_table
from analysis.stats import MARK_TESTS, P_COLUMNS, RUN_COLUMNS, STATS_COLUMNS

log = logging.getLogger("analysis.tables")

SD_ROW = "SD of repetition means (median over methods)"
PROBE_COLUMNS = ("level", "draw", "r2", "n_voxels")
# Columns `massl probe` writes since issue 13; older files lack them (in-sample R², no reasons).
PROBE_OPTIONAL = {"n_features": float("nan"), "score": "in_sample", "reason": ""}
PROBE_SCORES = {"held_out": "Held-out R² (fitted on all but one drawn image, scored on the held-out one, rotated)",
                "in_sample": "In-sample R² (fitted and scored on the same voxels, the paper's reading)"}
DIVERGED = "diverged"
PROBE_PATH = re.compile(r"^rep(\d+)\.tsv$")
# Table 3's bracket (`probe.variance`) -> how its caption and its notes name it (the two
# wordings have always differed by a word; both are kept as printed).
VARIANCES = {"within": {"caption": "over the draws within a repetition, averaged over repetitions",
                        "notes": "variance over the draws within each repetition, averaged over repetitions"},
             "pooled": {"caption": "over all draws of all repetitions",
                        "notes": "variance over all draws of all repetitions"}}
PROBE_SUMMARY_COLUMNS = ("dataset", "setting", "method", "method_label", "level", "mean", "variance", "n", "n_reps",
                         "n_diverged", "reason", "score", "variance_kind")


def read_stats(path) -> pd.DataFrame:
    """A statistics TSV of `analysis.stats`; one written before the run-ending columns existed
    reads with them empty (unknown)."""
    stats = read_table(path, [c for c in STATS_COLUMNS if c not in RUN_COLUMNS], "statistics table")
    unknown = {"mean_final": float("nan"), "sd_final": float("nan"), "n_final": 0, "n_stop_plateau": 0,
               "n_stop_budget": 0, "n_stop_diverged": 0, "n_stop_unknown": stats["n_reps"], "n_still_improving": 0,
               "still_improving_reps": ""}
    stats = stats.assign(**{c: v for c, v in unknown.items() if c not in stats.columns})
    # "2" alone reads as a number (2.0 beside empty fields): back to the text "2"
    stats["still_improving_reps"] = ["" if pd.isna(v) else str(int(v)) if isinstance(v, float) else str(v)
                                     for v in stats["still_improving_reps"]]
    for column in ("mean", "sd", "alpha", "mean_final", "sd_final", *P_COLUMNS):
        stats[column] = numeric_column(stats, column, path)
    for column in ("mark_ref", "mark_best"):  # an all-empty mark column reads as NaN floats
        stats[column] = ["" if pd.isna(v) else str(v) for v in stats[column]]
    for method, label in stats[["method", "method_label"]].itertuples(index=False):
        check_label(method, label, str(path))
    for column in ("dataset", "reference", "best", "mark_test", "data_source", "scale"):
        if stats[column].nunique() != 1:
            raise DataError(f"{path}: column {column!r} must hold one value, found {stats[column].nunique()}")
    if stats["mark_test"].iloc[0] not in MARK_TESTS:
        raise DataError(f"{path}: unknown mark_test {stats['mark_test'].iloc[0]!r}")
    return stats


def _select(values: str | None, present, kind: str, source) -> list[str] | None:
    if values is None:
        return None
    chosen = [v.strip() for v in values.split(",") if v.strip()]
    missing = [v for v in chosen if v not in set(present)]
    if missing:
        raise ConfigError(f"--{kind}: {', '.join(missing)} not in {source}")
    return chosen


def results_table(stats: pd.DataFrame, methods: list[str] | None = None,
                  settings: list[str] | None = None) -> pd.DataFrame:
    """The printed Table 1/2: index = method labels, columns = paper headers, cells = strings."""
    methods = methods or sorted(stats["method"].unique(), key=method_rank)
    settings = settings or sort_settings(stats["setting"])
    cells = stats.set_index(["method", "setting"])
    table = pd.DataFrame(index=[label_of(m) for m in methods], columns=[setting_header(s) for s in settings],
                         dtype=object)
    for method in methods:
        for setting in settings:
            row = cells.loc[(method, setting)] if (method, setting) in cells.index else None
            table.loc[label_of(method), setting_header(setting)] = _cell(row)
    table.loc[SD_ROW] = [fmt(v) for v in column_sd(stats, methods, settings)]
    table.index.name = "method"
    return table


def column_sd(stats: pd.DataFrame, methods: list[str], settings: list[str]) -> list[float]:
    """Per setting: the median over `methods` of the sd of the repetition means, over the cells
    without a diverged repetition (NaN when no cell has >= 2 repetitions)."""
    ok = stats[stats["method"].isin(methods) & (stats["n_diverged"] == 0)]
    return [ok.loc[ok["setting"] == s, "sd"].median() for s in settings]


def _cell(row) -> str:
    if row is None:
        return "–"
    if row["n_diverged"] > 0:
        return NOT_CONVERGED
    return fmt(row["mean"]) + row["mark_ref"] + row["mark_best"]


def extended_table(stats: pd.DataFrame, methods: list[str] | None = None,
                   settings: list[str] | None = None) -> pd.DataFrame:
    """One row per cell: mean ± sd, converged repetitions, naive / corrected / Holm p-values."""
    methods = methods or sorted(stats["method"].unique(), key=method_rank)
    settings = settings or sort_settings(stats["setting"])
    rows = stats[stats["method"].isin(methods) & stats["setting"].isin(settings)].copy()
    rows["_s"] = rows["setting"].map(settings.index)
    rows["_m"] = rows["method"].map(methods.index)
    rows = rows.sort_values(["_s", "_m"]).drop(columns=["_s", "_m"])
    rows["cell"] = [_cell(r) for _, r in rows.iterrows()]
    keep = ["setting", "method", "method_label", "cell", "mean", "sd", "n_reps", "n_converged", "n_diverged",
            "n_cases", *RUN_COLUMNS, *P_COLUMNS, "mark_ref", "mark_best"]
    return rows[keep].reset_index(drop=True)


def stop_text(row) -> str:
    """`plateau/budget/diverged` counts of a cell, e.g. `3/2/0`; `not recorded` for old runs."""
    if row["n_stop_unknown"] >= row["n_reps"]:
        return "not recorded"
    counts = "/".join(str(int(row[f"n_stop_{r}"])) for r in STOP_REASONS)
    return counts + (f" (+{int(row['n_stop_unknown'])} not recorded)" if row["n_stop_unknown"] else "")


def improving_text(row) -> str:
    """Runs that ended at their budget while still improving, e.g. `2/5 (rep 1,3)`."""
    if row["n_stop_unknown"] >= row["n_reps"]:
        return "not recorded"
    reps = f" (rep {row['still_improving_reps']})" if row["n_still_improving"] else ""
    return f"{int(row['n_still_improving'])}/{int(row['n_reps'])}{reps}"


def _extended_rows(extended: pd.DataFrame, reference: str, best: str) -> tuple[list[str], list[list[str]]]:
    header = ["Setting", "Method", "Dice mean ± sd", "Final weights mean ± sd", "Converged",
              "Stop plateau/budget/diverged", "Still improving"]
    for method in (reference, best):
        header += [f"p vs {label_of(method)}{kind}" for kind in ("", " corr.", " Holm", " corr. Holm")]
    rows = []
    for _, r in extended.iterrows():
        dice = f"{fmt(r['mean'])} ± {fmt(r['sd'])}" + r["mark_ref"] + r["mark_best"]
        if r["n_diverged"] > 0:
            dice = f"{NOT_CONVERGED} ({dice})"
        final = f"{fmt(r['mean_final'])} ± {fmt(r['sd_final'])}" if r["n_final"] else "not recorded"
        rows.append([setting_header(r["setting"]), r["method_label"], dice, final,
                     f"{r['n_converged']}/{r['n_reps']}", stop_text(r), improving_text(r),
                     *(fmt_p(r[c]) for c in P_COLUMNS)])
    return header, rows


def results_notes(stats: pd.DataFrame) -> str:
    """Footnote: what the marks and n.c. mean, the test used, and where the data come from."""
    first = stats.iloc[0]
    test = {"paired": "paired two-sided t-test over per-scan Dice pooled across repetitions",
            "paired_holm": "paired two-sided t-test over per-scan Dice pooled across repetitions, Holm-adjusted "
                           "within each column",
            "corrected": "corrected resampled t-test over repetition means (Nadeau & Bengio 2003)",
            "corrected_holm": "corrected resampled t-test over repetition means (Nadeau & Bengio 2003), "
                              "Holm-adjusted within each column"}[first["mark_test"]]
    n_reps = int(stats["n_reps"].max())
    return (f"Dice over the test scans, averaged over {n_reps} repetition(s), with the best-validation "
            f"checkpoint of each run. {SD_ROW}: per column, the median over the methods of the standard "
            "deviation of a method's mean Dice per repetition (the extended table gives each cell's). "
            f"*: significantly better than {label_of(first['reference'])}; "
            f"†: significantly worse than {label_of(first['best'])} (p < {first['alpha']:g}, {test}). "
            f"{NOT_CONVERGED}: not converged (at least one repetition diverged; the extended table gives "
            f"the converged count). Data: {data_banner(first['data_source'], first['scale'])}.")


def data_banner(source: str, scale: str) -> str:
    what = {"synthetic": "built-in synthetic benchmark (not BraTS/WMH)", "real": "real data"}.get(source, source)
    return f"{what}, scale '{scale}'"


def write_all(prefix: str | Path, table: pd.DataFrame, header: list[str], rows: list[list[str]],
              caption: str, notes: str, text_columns: int = 1) -> None:
    """`<prefix>.csv` from `table` (no index), `.md` and `.tex` from header/rows."""
    prefix = Path(prefix)
    with atomic_path(prefix.with_name(prefix.name + ".csv")) as tmp:
        table.to_csv(tmp, index=False, na_rep="", float_format="%.10g")
    md = f"**{caption}**\n\n{markdown_table(header, rows, text_columns)}\n{notes}\n"
    atomic_write_text(prefix.with_name(prefix.name + ".md"), md)
    label = "tab:" + re.sub(r"[^A-Za-z0-9_-]", "", prefix.name)
    atomic_write_text(prefix.with_name(prefix.name + ".tex"), latex_table(header, rows, caption, label, notes))


def cli_results(args: argparse.Namespace) -> int:
    use_config(args.config)
    stats = read_stats(args.stats)
    methods = _select(args.methods, stats["method"], "methods", args.stats)
    settings = _select(args.settings, stats["setting"], "settings", args.stats)
    table = results_table(stats, methods, settings)
    notes = results_notes(stats)
    header = ["Labeled (unlabeled)", *table.columns]
    rows = [[label, *cells] for label, cells in zip(table.index, table.values.tolist())]
    write_all(args.out_prefix, table.reset_index(), header, rows, args.caption, notes)
    extended = extended_table(stats, methods, settings)
    ext_header, ext_rows = _extended_rows(extended, stats["reference"].iloc[0], stats["best"].iloc[0])
    ext_notes = notes + (" Final weights: the same runs scored with their weights at the end of training. "
                         "Stop: runs that stopped on the validation plateau / at their iteration budget / "
                         "diverged. Still improving: runs that ended at their budget while their best validation "
                         "was among their last ones (longer training would likely change them). "
                         "p: paired t-test over per-scan Dice; corr.: corrected resampled t-test over "
                         "repetition means; Holm: adjusted over the methods of the setting.")
    with_ext = Path(args.out_prefix).with_name(Path(args.out_prefix).name + "_extended")
    write_all(with_ext, extended, ext_header, ext_rows, args.caption + " (extended)", ext_notes, text_columns=2)
    log.info("table of %d methods x %d settings -> %s.{csv,md,tex}", *table.shape, args.out_prefix)
    return 0


def read_probe_files(paths: list[str | Path]) -> pd.DataFrame:
    """Concatenate probe TSVs; dataset, setting, method and rep come from the path
    `.../<dataset>/<setting>/<method>/rep<r>.tsv`. Files from before issue 13 lack `n_features`,
    `score` and `reason`: they were in-sample, and a NaN R² there marks a diverged model."""
    if not paths:
        raise DataError("no probe files given")
    frames = []
    for path in map(Path, paths):
        match = PROBE_PATH.match(path.name)
        if not match or len(path.parts) < 4:
            raise DataError(f"{path}: probe file path must end in <dataset>/<setting>/<method>/rep<r>.tsv")
        dataset, setting, method = path.parts[-4:-1]
        label_of(method)
        frame = read_table(path, PROBE_COLUMNS, "probe table")
        old_format = "reason" not in frame.columns
        frame = frame.assign(**{c: v for c, v in PROBE_OPTIONAL.items() if c not in frame.columns})
        for column in (*PROBE_COLUMNS, "n_features"):
            frame[column] = numeric_column(frame, column, path)
        frame["reason"] = frame["reason"].astype(object).fillna("").astype(str).str.strip()
        if old_format:
            frame.loc[frame["r2"].isna(), "reason"] = DIVERGED
        frame.loc[frame["r2"].isna() & (frame["reason"] == ""), "reason"] = "no R² recorded"
        frame.loc[frame["reason"] != "", "r2"] = float("nan")  # a refused level is never a number
        bad = sorted(set(frame["score"].astype(str)) - set(PROBE_SCORES))
        if bad:
            raise DataError(f"{path}: score {bad[0]!r} is not one of {', '.join(PROBE_SCORES)}")
        frames.append(frame.assign(dataset=dataset, setting=setting, method=method, rep=int(match.group(1))))
    probe = pd.concat(frames, ignore_index=True)
    for column in ("dataset", "setting", "score"):
        if probe[column].nunique() > 1:
            raise DataError(f"probe files mix {column} values {', '.join(sorted(probe[column].unique()))}; "
                            "rerun the probe of every model with one configuration")
    if probe.duplicated(["method", "rep", "level", "draw"]).any():
        raise DataError("probe files repeat a (method, rep, level, draw); pass each run's file once")
    return probe


def probe_summary(probe: pd.DataFrame, variance: str = "within") -> pd.DataFrame:
    """Tidy Table 3 (`PROBE_SUMMARY_COLUMNS`): per (method, level) the mean R² over the valid
    draws of the converged models and the bracket's variance (ddof 1, `VARIANCES`).

    `reason`: the distinct reasons of the level's refused rows (diverged models aside); when
    set, mean and variance are NaN. `n_diverged`: repetitions whose model diverged.
    """
    if variance not in VARIANCES:
        raise ConfigError(f"variance {variance!r} is not one of {', '.join(VARIANCES)}")
    rows = []
    for (method, level), cell in probe.groupby(["method", "level"]):
        diverged = cell.loc[cell["reason"] == DIVERGED, "rep"].unique()
        valid = cell[~cell["rep"].isin(diverged) & cell["r2"].notna()]
        reasons = sorted(set(cell["reason"]) - {"", DIVERGED})
        if reasons:
            valid = valid.iloc[:0]
        spread = (valid["r2"].var(ddof=1) if variance == "pooled"
                  else valid.groupby("rep")["r2"].var(ddof=1).mean())
        rows.append({"method": method, "level": int(level), "mean": valid["r2"].mean(), "variance": spread,
                     "n": len(valid), "n_reps": cell["rep"].nunique(), "n_diverged": len(diverged),
                     "reason": "; ".join(reasons)})
    table = pd.DataFrame(rows)
    table = table.assign(method_label=table["method"].map(label_of), dataset=probe["dataset"].iloc[0],
                         setting=probe["setting"].iloc[0], score=probe["score"].iloc[0], variance_kind=variance,
                         rank=table["method"].map(method_rank))
    return table.sort_values(["rank", "level"])[list(PROBE_SUMMARY_COLUMNS)].reset_index(drop=True)


def probe_rep_means(probe: pd.DataFrame) -> pd.DataFrame:
    """Mean R² over the valid draws per (method, level, rep): the repetition values behind the
    probe claim's interval. Refused levels and diverged models give no row."""
    valid = probe[(probe["reason"] == "") & probe["r2"].notna()]
    return valid.groupby(["method", "level", "rep"], as_index=False)["r2"].mean().rename(columns={"r2": "value"})


def probe_cell(row) -> str:
    """`mean (variance)`; `–` for a refused level, `n.c.` when a repetition's model diverged."""
    if row["reason"]:
        return "–"
    if row["n_diverged"] > 0:
        return NOT_CONVERGED
    return f"{fmt(row['mean'], 3)} ({fmt(row['variance'], 3)})"


def probe_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    levels = sorted(summary["level"].unique())
    header = ["Level", *map(str, levels)]
    rows = []
    for method in sorted(summary["method"].unique(), key=method_rank):
        cells = summary[summary["method"] == method].set_index("level")
        rows.append([label_of(method), *(probe_cell(cells.loc[lv]) if lv in cells.index else "–" for lv in levels)])
    return header, rows


def probe_notes(summary: pd.DataFrame) -> str:
    """What the cells mean: the score, the bracket, the refused levels with their reasons, n.c."""
    first = summary.iloc[0]
    refused = summary[summary["reason"] != ""]
    by_level = refused.groupby("level").agg(reason=("reason", lambda r: "; ".join(sorted(set(r)))),
                                            methods=("method", lambda m: ", ".join(map(label_of, m))))
    dashes = " ".join(f"–: level {lv} gives no R² ({r.reason}; {r.methods})." for lv, r in by_level.iterrows())
    diverged = summary.groupby("method")["n_diverged"].max()
    counts = ", ".join(f"{label_of(m)} {n}" for m, n in diverged[diverged > 0].items())
    nc = (f" {NOT_CONVERGED}: a repetition's model diverged ({counts} repetition(s)); the CSV's mean is over the "
          "others." if counts else "")
    return (f"{PROBE_SCORES[first['score']]} of a linear regression from each encoder level's "
            f"features to the average-pooled ground truth; mean ({VARIANCES[first['variance_kind']]['notes']}), "
            f"{int(summary['n_reps'].max())} repetition(s), dataset {first['dataset']}, setting {first['setting']}. "
            f"Compare within a column only. {dashes}{nc}").strip()


def score_text(score: str) -> str:
    """A probe score as printed in captions and axis labels: `held-out`, `in-sample`."""
    return score.replace("_", "-")


def probe_caption(config: dict, variance: str, source: str | Path = "resolved config") -> str:
    """Table 3's caption from the resolved config: its `probe` section (`probe.setting` is the
    setting actually probed) and `repetitions`."""
    probe = {key: config_value(config, f"probe.{key}", source)
             for key in ("score", "dataset", "setting", "n_draws", "n_images")}
    repetitions = config_value(config, "repetitions", source)
    return (f"R² ({score_text(probe['score'])}) of a linear regression from each encoder level's features to the "
            f"down-sampled ground truth ({probe['dataset']}, {probe['setting']}): mean over {probe['n_draws']} "
            f"draws of {probe['n_images']} test images and {repetitions} repetitions (variance: "
            f"{VARIANCES[variance]['caption']})")


def probe_variance(config: dict, given: str | None, source: str | Path) -> str:
    """`--variance` if given, else the config's `probe.variance`, checked."""
    variance = config_value(config, "probe.variance", source) if given is None else given
    if variance not in VARIANCES:
        raise ConfigError(f"{source}: probe.variance {variance!r} is not one of {', '.join(VARIANCES)}")
    return variance


def cli_probe(args: argparse.Namespace) -> int:
    config = use_config(args.config)
    variance = probe_variance(config, args.variance, args.config)
    probe = read_probe_files(args.probe_files)
    caption = args.caption
    if caption is None:
        for key in ("dataset", "setting"):
            wanted = config_value(config, f"probe.{key}", args.config)
            if probe[key].iloc[0] != wanted:
                raise DataError(f"the probe files are of {key} {probe[key].iloc[0]!r}, the config's probe.{key} is "
                                f"{wanted!r}; pass the probe files of the config (or a --caption of your own)")
        caption = probe_caption(config, variance, args.config)
    summary = probe_summary(probe, variance)
    header, rows = probe_rows(summary)
    write_all(args.out_prefix, summary, header, rows, caption, probe_notes(summary))
    log.info("probe table of %d methods x %d levels -> %s.{csv,md,tex}", len(rows), len(header) - 1, args.out_prefix)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.tables", description="Write the paper's Tables 1-3.")
    sub = parser.add_subparsers(dest="table", required=True)
    p = sub.add_parser("results", help="Table 1/2 from a statistics TSV of analysis.stats")
    p.add_argument("--config", required=True, help="resolved config (results/config.json): the method table")
    p.add_argument("--stats", required=True, help="results/stats/<d>.tsv")
    p.add_argument("--out-prefix", required=True, help="writes <prefix>.{csv,md,tex} and <prefix>_extended.*")
    p.add_argument("--caption", required=True)
    p.add_argument("--methods", default=None, help="comma-separated method ids (default: all, paper order)")
    p.add_argument("--settings", default=None, help="comma-separated settings (default: all, by labeled count)")
    p.set_defaults(run=cli_results)
    p = sub.add_parser("probe", help="Table 3 from probe TSVs of `massl probe`")
    p.add_argument("--config", required=True,
                   help="resolved config (results/config.json): the method table, the probe section, repetitions")
    p.add_argument("--probe-files", nargs="+", required=True, help=".../<dataset>/<setting>/<method>/rep<r>.tsv")
    p.add_argument("--out-prefix", required=True, help="writes <prefix>.{csv,md,tex}")
    p.add_argument("--caption", default=None, help="default: built from the config's probe section")
    p.add_argument("--variance", choices=list(VARIANCES), default=None,
                   help="the bracket, overriding the config's probe.variance: "
                        + "; ".join(f"{kind}: {text['caption']}" for kind, text in VARIANCES.items()))
    p.set_defaults(run=cli_probe)
    return parser


if __name__ == "__main__":
    sys.exit(run_cli(build_parser()))
