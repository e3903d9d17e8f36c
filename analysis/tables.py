"""The paper's tables as CSV, Markdown and LaTeX.

    python -m analysis.tables results --stats results/stats/<d>.tsv --out-prefix results/tables/table1 \
        --caption "..." [--methods cnn,pretrain_dec,...] [--settings 20L100U,50L70U,120L120U]
    python -m analysis.tables probe --probe-files results/probe/<d>/<s>/<m>/rep<r>.tsv ... \
        --out-prefix results/tables/table3 --caption "..." [--variance pooled|within_rep]

Tables 1-2 (`results`): methods as rows in the paper's order, settings as columns, mean Dice with
4 decimals and the marks of `analysis.stats`; `n.c.` where a repetition diverged.
`<prefix>.csv` is the printed table (first column `method` holds the paper's labels);
`<prefix>_extended.*` adds sd, converged repetitions and all p-values (one row per cell).

Table 3 (`probe`): rows CNN, MSSL(alter), MASSL(alter), columns encoder levels 1..5, cells
`mean (variance)` of the probe R² over repetitions × draws. `<prefix>.csv` is tidy:
dataset, setting, method, method_label, level, mean, variance, n, n_reps.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import pandas as pd

from analysis.common import (
    ConfigError,
    DataError,
    atomic_path,
    atomic_write_text,
    numeric_column,
    read_table,
    run_cli,
)
from analysis.methods import (
    METHOD_LABELS,
    check_label,
    label_of,
    method_rank,
    setting_header,
    sort_settings,
)
from analysis.render import fmt, fmt_p, latex_table, markdown_table
from analysis.stats import MARK_TESTS, P_COLUMNS, STATS_COLUMNS

log = logging.getLogger("analysis.tables")

NOT_CONVERGED = "n.c."
PROBE_COLUMNS = ("level", "draw", "r2", "n_voxels")
PROBE_PATH = re.compile(r"^rep(\d+)\.tsv$")
VARIANCES = ("pooled", "within_rep")


def read_stats(path) -> pd.DataFrame:
    stats = read_table(path, STATS_COLUMNS, "statistics table")
    for column in ("mean", "sd", "alpha", *P_COLUMNS):
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
    table.index.name = "method"
    return table


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
            "n_cases", *P_COLUMNS, "mark_ref", "mark_best"]
    return rows[keep].reset_index(drop=True)


def _extended_rows(extended: pd.DataFrame, reference: str, best: str) -> tuple[list[str], list[list[str]]]:
    header = ["Setting", "Method", "Dice mean ± sd", "Converged"]
    for method in (reference, best):
        header += [f"p vs {label_of(method)}{kind}" for kind in ("", " corr.", " Holm", " corr. Holm")]
    rows = []
    for _, r in extended.iterrows():
        dice = f"{fmt(r['mean'])} ± {fmt(r['sd'])}" + r["mark_ref"] + r["mark_best"]
        if r["n_diverged"] > 0:
            dice = f"{NOT_CONVERGED} ({dice})"
        rows.append([setting_header(r["setting"]), r["method_label"], dice, f"{r['n_converged']}/{r['n_reps']}",
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
    return (f"Dice over the test scans, averaged over {n_reps} repetition(s). "
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
    ext_notes = notes + (" p: paired t-test over per-scan Dice; corr.: corrected resampled t-test over "
                         "repetition means; Holm: adjusted over the methods of the setting.")
    with_ext = Path(args.out_prefix).with_name(Path(args.out_prefix).name + "_extended")
    write_all(with_ext, extended, ext_header, ext_rows, args.caption + " (extended)", ext_notes, text_columns=2)
    log.info("table of %d methods x %d settings -> %s.{csv,md,tex}", *table.shape, args.out_prefix)
    return 0


def read_probe_files(paths: list[str | Path]) -> pd.DataFrame:
    """Concatenate probe TSVs; dataset, setting, method and rep come from the path
    `.../<dataset>/<setting>/<method>/rep<r>.tsv`."""
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
        for column in PROBE_COLUMNS:
            frame[column] = numeric_column(frame, column, path)
        frames.append(frame.assign(dataset=dataset, setting=setting, method=method, rep=int(match.group(1))))
    probe = pd.concat(frames, ignore_index=True)
    for column in ("dataset", "setting"):
        if probe[column].nunique() > 1:
            raise DataError(f"probe files mix {column} values {', '.join(sorted(probe[column].unique()))}")
    if probe.duplicated(["method", "rep", "level", "draw"]).any():
        raise DataError("probe files repeat a (method, rep, level, draw); pass each run's file once")
    return probe


def probe_summary(probe: pd.DataFrame, variance: str = "pooled") -> pd.DataFrame:
    """Tidy Table 3: mean and variance (ddof 1) of R² per (method, level).

    `pooled`: variance over all repetitions × draws. `within_rep`: the variance over the draws of
    each repetition's model, averaged over repetitions (another reading of the paper's caption).
    """
    if variance not in VARIANCES:
        raise ConfigError(f"variance {variance!r} is not one of {', '.join(VARIANCES)}")
    groups = probe.groupby(["method", "level"])
    table = groups["r2"].agg(mean="mean", n="count").reset_index()
    if variance == "pooled":
        table["variance"] = groups["r2"].var(ddof=1).to_numpy()
    else:
        per_rep = probe.groupby(["method", "level", "rep"])["r2"].var(ddof=1)
        table["variance"] = per_rep.groupby(["method", "level"]).mean().to_numpy()
    table["n_reps"] = groups["rep"].nunique().to_numpy()
    table["method_label"] = table["method"].map(METHOD_LABELS)
    table = table.assign(dataset=probe["dataset"].iloc[0], setting=probe["setting"].iloc[0])
    table["level"] = table["level"].astype(int)
    table = table.assign(rank=table["method"].map(method_rank)).sort_values(["rank", "level"])
    return table[["dataset", "setting", "method", "method_label", "level", "mean", "variance", "n", "n_reps"]] \
        .reset_index(drop=True)


def probe_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    levels = sorted(summary["level"].unique())
    header = ["Level", *map(str, levels)]
    rows = []
    for method in sorted(summary["method"].unique(), key=method_rank):
        cells = summary[summary["method"] == method].set_index("level")
        rows.append([label_of(method), *(f"{fmt(cells.loc[lv, 'mean'], 3)} ({fmt(cells.loc[lv, 'variance'], 3)})"
                                         if lv in cells.index else "–" for lv in levels)])
    return header, rows


def cli_probe(args: argparse.Namespace) -> int:
    summary = probe_summary(read_probe_files(args.probe_files), args.variance)
    header, rows = probe_rows(summary)
    first = summary.iloc[0]
    spread = {"pooled": "variance over repetitions × draws",
              "within_rep": "variance over draws within each repetition, averaged over repetitions"}[args.variance]
    notes = (f"R² of a linear regression from each encoder level's features to the average-pooled ground truth; "
             f"mean ({spread}), {int(summary['n_reps'].max())} repetition(s), dataset {first['dataset']}, "
             f"setting {first['setting']}. Compare within a column only.")
    write_all(args.out_prefix, summary, header, rows, args.caption, notes)
    log.info("probe table of %d methods x %d levels -> %s.{csv,md,tex}", len(rows), len(header) - 1, args.out_prefix)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.tables", description="Write the paper's Tables 1-3.")
    sub = parser.add_subparsers(dest="table", required=True)
    p = sub.add_parser("results", help="Table 1/2 from a statistics TSV of analysis.stats")
    p.add_argument("--stats", required=True, help="results/stats/<d>.tsv")
    p.add_argument("--out-prefix", required=True, help="writes <prefix>.{csv,md,tex} and <prefix>_extended.*")
    p.add_argument("--caption", required=True)
    p.add_argument("--methods", default=None, help="comma-separated method ids (default: all, paper order)")
    p.add_argument("--settings", default=None, help="comma-separated settings (default: all, by labeled count)")
    p.set_defaults(run=cli_results)
    p = sub.add_parser("probe", help="Table 3 from probe TSVs of `massl probe`")
    p.add_argument("--probe-files", nargs="+", required=True, help=".../<dataset>/<setting>/<method>/rep<r>.tsv")
    p.add_argument("--out-prefix", required=True, help="writes <prefix>.{csv,md,tex}")
    p.add_argument("--caption", required=True)
    p.add_argument("--variance", choices=VARIANCES, default="pooled",
                   help="pooled: over repetitions x draws (default); within_rep: over draws, averaged over reps")
    p.set_defaults(run=cli_probe)
    return parser


if __name__ == "__main__":
    sys.exit(run_cli(build_parser()))
