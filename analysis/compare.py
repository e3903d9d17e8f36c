"""Did a rerun reproduce? Two results folders of the same grid, cell by cell and claim by claim.

    python -m analysis.compare --config results/config.json --reference results --rerun other/results \
        [--out compare.md]

For every cell (dataset, setting, method) of Tables 1-2 in both folders (`stats/<d>.tsv`): the
two means, their difference and the reference cell's standard error over repetitions
(`analysis.stats.standard_error`: sd / sqrt(n_converged)); a cell *moved* when |difference| >=
that standard error. For every claim of the replication checklists (`replication/checklist.tsv`)
the two verdicts; a claim *flipped* when one says `holds` and the other `does not hold` (a move
to or from `undetermined` is reported but is not a flip). Prints a Markdown summary (and writes
it to `--out`); the exit code is 0 whatever the answer, 2 for missing or unreadable inputs. Use
it to check that a change of thread count, instruction set or machine leaves the tables alone
(README, "Reproducibility"). `--config` is a resolved config holding the method table (the
reference's `results/config.json`, say) that the statistics tables are checked against.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from analysis.common import DataError, atomic_write_text, read_table, run_cli
from analysis.methods import use_config
from analysis.stats import standard_error
from analysis.tables import read_stats as read_stats_table

log = logging.getLogger(__name__)

CELL = ["dataset", "setting", "method"]
FLIPS = {frozenset({"holds", "does not hold"})}


def read_stats(results: Path) -> pd.DataFrame:
    """Every statistics table of a results folder (`analysis.tables.read_stats` checks each)."""
    files = sorted((results / "stats").glob("*.tsv"))
    if not files:
        raise DataError(f"{results / 'stats'}: no statistics TSVs (is {results} a results folder of a finished grid?)")
    return pd.concat([read_stats_table(path)[[*CELL, "method_label", "mean", "sd", "n_converged"]] for path in files],
                     ignore_index=True)


def compare_cells(reference: pd.DataFrame, rerun: pd.DataFrame) -> pd.DataFrame:
    """One row per cell present in both: means, difference, the reference's SE, `moved`."""
    both = reference.merge(rerun, on=CELL, suffixes=("_reference", "_rerun"))
    if both.empty:
        raise DataError("the two results folders share no (dataset, setting, method) cell")
    both["difference"] = both["mean_rerun"] - both["mean_reference"]
    both["se_reference"] = standard_error(both["n_converged_reference"], sd=both["sd_reference"])
    # no SE (one repetition) or no mean (all diverged): moved is undefined, left empty
    defined = both["se_reference"].notna() & both["difference"].notna()
    both["moved"] = pd.Series(pd.NA, index=both.index, dtype="boolean")
    both.loc[defined, "moved"] = both.loc[defined, "difference"].abs() >= both.loc[defined, "se_reference"]
    return both[[*CELL, "method_label_reference", "mean_reference", "mean_rerun", "difference", "se_reference",
                 "moved"]].rename(columns={"method_label_reference": "method_label"})


def compare_claims(reference: Path, rerun: Path) -> pd.DataFrame:
    frames = [read_table(path / "replication" / "checklist.tsv", ["claim_id", "claim", "verdict"], "claim checklist")
              for path in (reference, rerun)]
    both = frames[0][["claim_id", "claim", "verdict"]].merge(
        frames[1][["claim_id", "verdict"]], on="claim_id", suffixes=("_reference", "_rerun"))
    both["flipped"] = [frozenset({a, b}) in FLIPS for a, b in zip(both["verdict_reference"], both["verdict_rerun"])]
    return both


def summary_markdown(cells: pd.DataFrame, claims: pd.DataFrame, reference: Path, rerun: Path) -> str:
    moved = cells[cells["moved"].fillna(False).astype(bool)]
    n_defined = int(cells["moved"].notna().sum())
    lines = [f"# {rerun} against {reference}", "",
             f"**Cells:** {len(moved)} of {n_defined} moved by at least the reference's standard error over "
             f"repetitions (largest |difference| {cells['difference'].abs().max():.4f}; "
             f"{len(cells) - n_defined} cell(s) without a standard error).",
             f"**Claims:** {int(claims['flipped'].sum())} of {len(claims)} flipped between `holds` and "
             f"`does not hold`; {int((claims['verdict_reference'] != claims['verdict_rerun']).sum())} changed at all.",
             "", "| dataset | setting | method | reference | rerun | difference | SE | moved |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for row in cells.itertuples():
        flag = "–" if pd.isna(row.moved) else ("**yes**" if row.moved else "no")
        numbers = [_fmt(row.mean_reference, ".4f"), _fmt(row.mean_rerun, ".4f"), _fmt(row.difference, "+.4f"),
                   _fmt(row.se_reference, ".4f")]
        lines.append(f"| {row.dataset} | {row.setting} | {row.method_label} | {' | '.join(numbers)} | {flag} |")
    lines += ["", "| claim | reference | rerun | flipped |", "|---|---|---|---|"]
    for row in claims.itertuples():
        lines.append(f"| {row.claim_id} | {row.verdict_reference} | {row.verdict_rerun} | "
                     f"{'**yes**' if row.flipped else 'no'} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float, spec: str) -> str:
    return "–" if pd.isna(value) else format(value, spec)


def cli(args: argparse.Namespace) -> int:
    use_config(args.config)
    reference, rerun = Path(args.reference), Path(args.rerun)
    cells = compare_cells(read_stats(reference), read_stats(rerun))
    claims = compare_claims(reference, rerun)
    text = summary_markdown(cells, claims, reference, rerun)
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
        log.info("comparison written to %s", args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.compare",
                                     description="Compare the tables and claim verdicts of two results folders.")
    parser.add_argument("--config", required=True,
                        help="resolved config with the method table (e.g. the reference's results/config.json)")
    parser.add_argument("--reference", required=True, help="results folder of the reference grid")
    parser.add_argument("--rerun", required=True, help="results folder of the rerun")
    parser.add_argument("--out", default=None, help="also write the Markdown summary here")
    parser.set_defaults(run=cli)
    return parser


if __name__ == "__main__":
    sys.exit(run_cli(build_parser()))
