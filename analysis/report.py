"""The replication report: Markdown, a self-contained HTML page, the ours-vs-paper scatter and
the claim checklist as TSV. The report is built once as a list of blocks and rendered twice, so
both versions say the same thing."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from analysis.claims import FAILS, HOLDS, UNDETERMINED
from analysis.common import NOT_CONVERGED, atomic_write_text, write_tsv
from analysis.figures import STYLED, new_figure, save_figure
from analysis.methods import (
    colour_of,
    label_of,
    method_rank,
    setting_header,
    sort_settings,
)
from analysis.render import fmt, html_table, markdown_table
from analysis.stats import INTERVALS

if TYPE_CHECKING:
    from analysis.replication import Replication

TITLES = {"table1": "Table 1: BraTS 2018 (whole tumor), Dice",
          "table2": "Table 2: WMH 2017, Dice",
          "table3": "Table 3: feature probe R² (BraTS 2018)"}
SHORT_TITLES = {"table1": "Table 1 (BraTS)", "table2": "Table 2 (WMH)", "table3": "Table 3 (probe)"}
MARKERS = {"table1": "o", "table2": "s", "table3": "^"}
CSS = """body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #bbb;padding:.25em .6em}
th{background:#eee}td{text-align:right}td:first-child,td:nth-child(2){text-align:left}
.banner{border:3px solid #CC3311;background:#FFF0EB;padding:1em;font-weight:bold}
.banner.real{border-color:#117733;background:#EEF7F0}img{max-width:100%}"""


def banner(source: str, scale: str) -> str:
    if source == "synthetic":
        return (f"DATA: built-in SYNTHETIC benchmark, scale '{scale}'. These numbers come from synthetic "
                "volumes standing in for BraTS 2018 and WMH 2017. They are NOT a replication of the paper on "
                "real data: they check the pipeline, not the paper's claims.")
    protocol = "the paper's protocol" if scale == "paper" else "not the paper-scale protocol"
    return f"DATA: real BraTS 2018 / WMH 2017 data, scale '{scale}' ({protocol})."


def _cell_rows(compared: pd.DataFrame, column: str) -> list[list[str]]:
    rows = []
    order = compared.assign(_c=compared[column].map(_column_order(compared, column)),
                            _m=compared["method"].map(method_rank)).sort_values(["table", "_c", "_m"])
    digits = 3 if column == "level" else 4
    for _, r in order.iterrows():
        if column == "level":
            ours = (f"– ({r['reason']})" if r["reason"] else
                    f"{fmt(r['value_ours'], 3)} ({fmt(r['variance_ours'], 3)})"
                    + (f" {NOT_CONVERGED}" if r["nc_ours"] else ""))
            paper = f"{fmt(r['value_paper'], 3)} ({fmt(r['variance_paper'], 3)})"
        else:
            ours = f"{fmt(r['value_ours'])} ± {fmt(r['sd'])}" + (f" {NOT_CONVERGED}" if r["nc_ours"] else "")
            paper = fmt(r["value_paper"])
        row = [_column_name(r[column], column), label_of(r["method"]), paper, ours, "–" if pd.isna(r["diff"]) else f"{r['diff']:+.{digits}f}",
               fmt(r["tolerance"], digits),
               ("yes" if r["within"] else "no") if r["usable"] else NOT_CONVERGED if r["nc_ours"] else "–",
               fmt(r["rank_paper"], 0),
               fmt(r["rank_ours"], 0)]
        if column == "setting":
            row += ["*" if r["star_paper"] else "", _star(r["star_ours"])]
        rows.append(row)
    return rows


def _star(value) -> str:
    return "?" if pd.isna(value) else "*" if value else ""


def _column_order(frame: pd.DataFrame, column: str) -> dict:
    values = sort_settings(frame[column]) if column == "setting" else sorted(frame[column].unique())
    return {v: i for i, v in enumerate(values)}


def _column_name(value, column: str) -> str:
    return setting_header(value) if column == "setting" else f"level {int(value)}"


def _agreement_rows(agreement: pd.DataFrame, column: str) -> list[list[str]]:
    rows = []
    for _, r in agreement.sort_values(column, key=lambda c: c.map(_column_order(agreement, column))).iterrows():
        row = [_column_name(r[column], column), str(r["n_methods"]), fmt(r["kendall_tau"], 2), fmt(r["tau_p"], 3)]
        if column == "setting":
            stars = (f"{r['star_agree']}/{r['star_n']} agree (paper {r['stars_paper']}, ours {r['stars_ours']})"
                     if r["star_n"] else "not comparable")
            row += [stars, "not printed in the extracted values"]
        rows.append(row)
    return rows


def _table_section(result: Replication, table: str) -> list:
    column = "level" if table == "table3" else "setting"
    compared = result.compared_probe if table == "table3" else result.compared
    agreement = result.probe_agreement if table == "table3" else result.agreement
    blocks = [("h2", TITLES[table])]
    blocks += [("p", n) for n in result.notes if n.startswith(table)]
    if compared is None or compared[compared["table"] == table].empty:
        return blocks + [("p", "No cell of ours matches a cell of this table in the paper.")]
    here = compared[compared["table"] == table]
    within = int(here["within"].sum())
    blocks.append(("p", f"{within} of {len(here)} cells within tolerance."))
    values = ["Paper", "Ours (mean ± sd)"] if column == "setting" else ["Paper mean (var)", "Ours mean (var)"]
    header = ["Column", "Method", *values, "Diff", "Tolerance", "Within", "Rank paper", "Rank ours"]
    if column == "setting":
        header += ["* paper", "* ours"]
    blocks.append(("table", header, _cell_rows(here, column), 2))
    agreement_header = ["Column", "Methods", "Kendall τ", "τ p-value"]
    if column == "setting":
        agreement_header += ["* marks", "† marks"]
    blocks.append(("table", agreement_header, _agreement_rows(agreement[agreement["table"] == table], column), 1))
    return blocks


def _effect(verdict) -> str:
    if np.isnan(verdict.effect):
        return "–"
    if np.isnan(verdict.low):
        return f"{verdict.effect:+.4f}"
    return f"{verdict.effect:+.4f} [{verdict.low:+.4f}, {verdict.high:+.4f}]"


def _claim_blocks(result: Replication) -> list:
    pairs = list(zip(result.ours_claims, result.paper_claims))
    level = f"{100 * (1 - result.options['alpha']):g} %"
    rows = [[o.claim, o.verdict, _effect(o), o.comparison or "–", p.verdict, _effect(p)] for o, p in pairs]
    blocks = [("p", (f"Each comparison's effect is the subject's mean Dice (R² for Table 3) minus the rival's, per "
                     f"repetition, averaged over the repetitions where both converged, with a {level} interval: "
                     f"{INTERVALS[result.options['claim_interval']]}. A comparison holds when its interval lies "
                     "above 0, does not hold when it lies below 0, and is undetermined when it contains 0: a "
                     "difference smaller than its uncertainty never counts as holding. A claim over several "
                     "comparisons holds only if all hold, does not hold if any does not, and is undetermined "
                     "otherwise; the effect shown is its deciding comparison's (the smallest effect among those "
                     "with the claim's verdict). A method that did not converge fails as subject and counts as "
                     "beaten as rival. The paper prints single numbers without repetitions: its verdicts are "
                     "point verdicts (effect > 0), with no interval.")),
              ("table", ["Claim", "Ours", f"Effect [{level} interval]", "Deciding comparison",
                         "Paper's numbers (point verdict)", "Paper's effect"], rows, 4),
              ("h3", "Evidence")]
    for ours, paper in pairs:
        blocks.append(("list", ours.claim, [f"Ours: {ours.verdict}; {ours.detail}",
                                            f"Paper's numbers (point verdict): {paper.verdict}; {paper.detail}"]))
    return blocks


def improving_rows(ours: pd.DataFrame) -> list[list[str]]:
    """Cells with runs that ended at their budget while still improving."""
    rows = []
    order = ours.assign(_c=ours["setting"].map(_column_order(ours, "setting")), _m=ours["method"].map(method_rank))
    for _, r in order.sort_values(["table", "_c", "_m"]).iterrows():
        if r["n_still_improving"] > 0:
            rows.append([SHORT_TITLES[r["table"]], setting_header(r["setting"]), label_of(r["method"]),
                         f"{int(r['n_still_improving'])}/{int(r['n_reps'])}", r["still_improving_reps"]])
    return rows


def _improving_blocks(result: Replication) -> list:
    ours = result.ours
    blocks = [("h2", "Runs still improving at their budget"),
              ("p", "Runs that ended at their iteration budget while their best validation Dice was among their "
                    "last validations: longer training would probably change their numbers.")]
    unknown = int((ours["n_stop_unknown"] >= ours["n_reps"]).sum())
    if unknown:
        blocks.append(("p", f"{unknown} of {len(ours)} cells come from runs that did not record how they stopped "
                            "(trained before the stopping rule existed): unknown."))
    rows = improving_rows(ours)
    if rows:
        blocks.append(("table", ["Table", "Column", "Method", "Still improving", "Repetitions"], rows, 3))
    elif unknown < len(ours):
        blocks.append(("p", "None: every run that recorded its ending stopped on the plateau rule, diverged, or "
                            "stopped improving before its budget."))
    return blocks


def report_blocks(result: Replication, figure: str) -> list:
    verdicts = [v.verdict for v in result.ours_claims]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in (HOLDS, FAILS, UNDETERMINED))
    tol = result.tolerance
    blocks = [
        ("h1", "Replication report: MASSL (Chen et al., MICCAI 2019)"),
        ("banner", banner(result.source, result.scale), result.source == "synthetic"),
        ("p", (f"Claims (our numbers): {counts}. A cell is within tolerance when |ours − paper| ≤ "
               f"max({tol['tolerance_dice']:g}, {tol['tolerance_se']:g} × standard error of our mean). Ranks are "
               "within a column (1 = highest). Kendall's τ compares the paper's and our method orderings per "
               "column. Significance marks: * = significantly better than CNN; the paper's † marks are not "
               "printed in the extracted values, so only * marks are compared.")),
        ("h2", "The paper's claims"),
        *_claim_blocks(result),
        *_improving_blocks(result),
    ]
    for table in ("table1", "table2", "table3"):
        blocks += _table_section(result, table)
    blocks += [("h2", "Ours against the paper"), ("img", figure, "Our mean against the paper's value per cell")]
    return blocks


def _md(text: str) -> str:
    return text.replace("*", r"\*")  # a significance mark, never emphasis


def render_markdown(blocks: list) -> str:
    out = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {content[0]}\n")
        elif kind == "p":
            out.append(f"{_md(content[0])}\n")
        elif kind == "banner":
            out.append(f"> **{content[0]}**\n")
        elif kind == "table":
            out.append(markdown_table(*content))
        elif kind == "list":
            out.append(f"- **{_md(content[0])}**\n" + "".join(f"  - {_md(item)}\n" for item in content[1]))
        elif kind == "img":
            out.append(f"![{content[1]}]({content[0]})\n")
    return "\n".join(out)


def render_html(blocks: list, figure_path: Path) -> str:
    """A self-contained page: the figure is embedded, so the file can be moved on its own."""
    body = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{html.escape(content[0])}</{kind}>")
        elif kind == "banner":
            css = "banner" if content[1] else "banner real"
            body.append(f'<div class="{css}">{html.escape(content[0])}</div>')
        elif kind == "table":
            body.append(html_table(content[0], content[1]))
        elif kind == "list":
            items = "".join(f"<li>{html.escape(item)}</li>" for item in content[1])
            body.append(f"<ul><li><b>{html.escape(content[0])}</b><ul>{items}</ul></li></ul>")
        elif kind == "img":
            data = base64.b64encode(figure_path.read_bytes()).decode()
            body.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(content[1])}">')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>MASSL replication report</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


@STYLED
def scatter_figure(result: Replication):
    """Our mean (± sd) against the paper's value per cell, identity line, one colour per method;
    Table 3's R² in a second panel when a probe table was given."""
    panels = [("Dice (Tables 1-2)", result.compared, "sd")]
    if result.compared_probe is not None and not result.compared_probe.empty:
        panels.append(("probe R² (Table 3)", result.compared_probe, "variance_ours"))
    fig, axes = new_figure(1, len(panels), (4.6 * len(panels) + 1.4, 4.2))
    for ax, (title, compared, spread) in zip(axes[0], panels):
        usable = compared[compared["usable"]]
        for (method, table), mine in sorted(usable.groupby(["method", "table"]), key=lambda g: method_rank(g[0][0])):
            err = np.sqrt(mine[spread]) if spread == "variance_ours" else mine[spread]
            ax.errorbar(mine["value_paper"], mine["value_ours"], yerr=err, fmt=MARKERS[table], ms=4, capsize=2,
                        color=colour_of(method), label=label_of(method))
        values = pd.concat([usable["value_paper"], usable["value_ours"]]).dropna()
        lo, hi = (values.min() - 0.05, values.max() + 0.05) if len(values) else (0, 1)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="identity")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel("paper")
        ax.set_ylabel("ours (mean ± sd over repetitions)")
        ax.set_title(title if len(usable) else f"{title}: no cell in common")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    for table in sorted(set(result.compared["table"]) | set(panels[-1][1]["table"])):
        handles[SHORT_TITLES[table]] = Line2D([], [], marker=MARKERS[table], color="grey", ls="")
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"Ours vs paper ({result.source} data, scale {result.scale})")
    fig.tight_layout()
    return fig


CHECKLIST_COLUMNS = ("claim_id", "claim", "verdict", "effect", "ci_low", "ci_high", "confidence", "interval",
                     "comparison", "detail", "paper_point_verdict", "paper_effect", "paper_detail", "data_source",
                     "scale")


def checklist(result: Replication) -> pd.DataFrame:
    """One row per claim: our verdict with its effect and interval (`analysis.claims`), and the
    paper's point verdict on its printed numbers."""
    return pd.DataFrame([{"claim_id": o.claim_id, "claim": o.claim, "verdict": o.verdict, "effect": o.effect,
                          "ci_low": o.low, "ci_high": o.high, "confidence": 1 - result.options["alpha"],
                          "interval": result.options["claim_interval"], "comparison": o.comparison,
                          "detail": o.detail, "paper_point_verdict": p.verdict, "paper_effect": p.effect,
                          "paper_detail": p.detail, "data_source": result.source, "scale": result.scale}
                         for o, p in zip(result.ours_claims, result.paper_claims)], columns=list(CHECKLIST_COLUMNS))


def write_report(out_dir: Path, result: Replication) -> list[Path]:
    """report.md, report.html, paper_vs_ours.{png,pdf} and checklist.tsv in `out_dir`."""
    figure_paths = save_figure(scatter_figure(result), out_dir / "paper_vs_ours")
    blocks = report_blocks(result, figure_paths[0].name)
    atomic_write_text(out_dir / "report.md", render_markdown(blocks))
    atomic_write_text(out_dir / "report.html", render_html(blocks, figure_paths[0]))
    write_tsv(out_dir / "checklist.tsv", checklist(result))
    return [out_dir / "report.md", out_dir / "report.html", *figure_paths, out_dir / "checklist.tsv"]
