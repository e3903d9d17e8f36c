"""Figures as PNG (150 dpi) and PDF, one colour per method throughout (`analysis.methods.colour_of`).

    python -m analysis.figures dice --config C --cases results/metrics/<d>.tsv --out results/figures/dice_<d>
    python -m analysis.figures curves --config C --runs RUN_DIR ... --out results/figures/curves_<d>
    python -m analysis.figures examples --config C --runs RUN_DIR ... --out results/figures/examples_<d> \
        --methods ID,ID,...
    python -m analysis.figures reconstructions --config C --runs RUN_DIR ... \
        --out results/figures/reconstructions_<d>
    python -m analysis.figures probe --config C --table results/tables/table3.csv --out results/figures/probe_r2

`C` is the resolved config (results/config.json): the method table (labels, row order, colours,
which methods reconstruct with attention) and the setting pattern. `--out` is a path without
suffix; `<out>.png` and `<out>.pdf` are written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.common import (
    NOT_CONVERGED,
    DataError,
    atomic_path,
    numeric_column,
    read_json,
    read_table,
    run_cli,
)
from analysis.methods import (
    check_label,
    colour_of,
    id_of,
    label_of,
    method_rank,
    methods_with_reconstruction,
    setting_header,
    sort_settings,
    use_config,
)
from analysis.stats import read_cases
from analysis.tables import score_text

log = logging.getLogger("analysis.figures")

TRUTH_COLOUR, PREDICTION_COLOUR = "#DDCC77", "#EE3377"  # Tol palette: sand (truth), magenta (prediction)
STYLED = matplotlib.rc_context({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8})


def new_figure(nrows: int, ncols: int, figsize: tuple[float, float], sharey: bool = False):
    """A figure and its 2D array of axes; no pyplot, so no global state and no display needed."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)


def save_figure(fig, out: str | Path) -> list[Path]:
    """Write `<out>.png` (150 dpi) and `<out>.pdf` atomically."""
    out = Path(out)
    paths = []
    for suffix in ("png", "pdf"):
        path = out.with_name(out.name + "." + suffix)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


@STYLED
def dice_figure(cases: pd.DataFrame):
    """Per-scan Dice of converged runs (pooled over repetitions): box + jittered points per method,
    one panel per setting; diverged repetitions are counted above the box."""
    settings = sort_settings(cases["setting"])
    methods = sorted(cases["method"].unique(), key=method_rank)
    fig, axes = new_figure(1, len(settings), (0.55 * len(methods) * len(settings) + 1.5, 3.6), sharey=True)
    rng = np.random.default_rng(0)  # jitter only; fixed so reruns give identical files
    for ax, setting in zip(axes[0], settings):
        here = cases[cases["setting"] == setting]
        for x, method in enumerate(methods):
            mine = here[here["method"] == method]
            ok = mine.loc[mine["status"] == "converged", "dice"].dropna().to_numpy()
            if len(ok):
                ax.boxplot(ok, positions=[x], widths=0.6, showfliers=False, medianprops={"color": "black"})
                ax.scatter(x + rng.uniform(-0.2, 0.2, len(ok)), ok, s=8, alpha=0.7, color=colour_of(method),
                           linewidths=0, zorder=3)
            diverged = mine.loc[mine["status"] == "diverged", "rep"].nunique()
            if diverged:
                ax.text(x, 1.02, f"{NOT_CONVERGED}\n{diverged}/{mine['rep'].nunique()}", ha="center", va="bottom",
                        fontsize=7)
        ax.set_xticks(range(len(methods)), [label_of(m) for m in methods], rotation=60, ha="right")
        ax.set_xlim(-0.7, len(methods) - 0.3)
        ax.set_title(f"{setting_header(setting)} labeled (unlabeled)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("Dice per test scan")
    axes[0][0].set_ylim(0, 1.12)
    fig.suptitle(f"{cases['dataset'].iloc[0]}: Dice per method and setting (all repetitions)")
    return fig


def run_info(run_dir: str | Path) -> dict:
    """A run's summary.json, checked for the keys the figures use."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json", "run summary")
    missing = [k for k in ("setting", "method", "method_label", "rep", "status") if k not in summary]
    if missing:
        raise DataError(f"{run_dir / 'summary.json'}: missing key(s) {', '.join(missing)}")
    check_label(summary["method"], summary["method_label"], str(run_dir / "summary.json"))
    return {**summary, "run_dir": run_dir}


def read_train_log(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "train_log.tsv"
    frame = read_table(path, ("iteration", "loss", "val_dice"), "training log")
    for column in ("iteration", "loss", "val_dice"):
        frame[column] = numeric_column(frame, column, path)
    return frame.replace([np.inf, -np.inf], np.nan)


@STYLED
def curves_figure(run_dirs: list[str | Path]):
    """Training loss and validation Dice against iteration, mean over repetitions, one row per
    setting and one line per method. The loss is smoothed with a moving average."""
    runs = [run_info(r) for r in run_dirs]
    logs = pd.concat([read_train_log(r["run_dir"]).assign(setting=r["setting"], method=r["method"], rep=r["rep"])
                      for r in runs], ignore_index=True)
    settings = sort_settings(logs["setting"])
    fig, axes = new_figure(len(settings), 2, (9, 2.6 * len(settings)))
    for row, setting in zip(axes, settings):
        here = logs[logs["setting"] == setting]
        for method in sorted(here["method"].unique(), key=method_rank):
            mine = here[here["method"] == method]
            loss = mine.groupby("iteration")["loss"].mean()
            window = max(1, len(loss) // 50)
            row[0].plot(loss.index, loss.rolling(window, min_periods=1).mean(), color=colour_of(method),
                        label=label_of(method), lw=1)
            val = mine.dropna(subset=["val_dice"]).groupby("iteration")["val_dice"].mean()
            row[1].plot(val.index, val.to_numpy(), marker="o", ms=3, color=colour_of(method), lw=1)
        row[0].set_ylabel(f"{setting_header(setting)}\ntraining loss")
        row[1].set_ylabel("validation Dice")
        for ax in row:
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
    axes[0][0].set_title("training loss (moving average, mean over repetitions)")
    axes[0][1].set_title("validation Dice (mean over repetitions)")
    handles = {}  # label -> line, over all settings: a method may be run in some settings only
    for ax in axes[:, 0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    ordered = sorted(handles, key=lambda label: method_rank(id_of(label)))
    fig.legend([handles[label] for label in ordered], ordered, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def read_example(run_dir: Path, need_rec: bool = False) -> dict:
    path = run_dir / "examples.npz"
    try:
        with np.load(path) as data:
            example = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise DataError(f"{path}: example slice not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read example slice ({exc})") from exc
    keys = ("image", "label", "prob", "rec") if need_rec else ("image", "label", "prob")
    missing = [k for k in keys if k not in example]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
    shape = example["image"].shape
    if len(shape) != 2 or example["label"].shape != shape or example["prob"].shape != shape:
        raise DataError(f"{path}: image, label and prob must be 2D arrays of one shape")
    if need_rec and (example["rec"].ndim != 3 or example["rec"].shape[1:] != shape):
        raise DataError(f"{path}: rec must be (channels, {shape[0]}, {shape[1]})")
    return example


def _first_rep_per_cell(runs: list[dict]) -> dict:
    """(setting, method) -> the converged run of the lowest repetition."""
    chosen = {}
    for run in sorted(runs, key=lambda r: int(r["rep"])):
        if run["status"] == "converged":
            chosen.setdefault((run["setting"], run["method"]), run)
    return chosen


@STYLED
def examples_figure(run_dirs: list[str | Path], methods: list[str]):
    """Image with ground-truth and predicted (prob ≥ 0.5) contours: rows = settings, columns =
    methods, the lowest converged repetition of each."""
    chosen = _first_rep_per_cell([run_info(r) for r in run_dirs])
    methods = [m for m in sorted(methods, key=method_rank) if any(k[1] == m for k in chosen)]
    if not methods:
        raise DataError("no converged run of the requested methods among --runs")
    settings = sort_settings(s for s, _ in chosen)
    fig, axes = new_figure(len(settings), len(methods), (2.3 * len(methods), 2.4 * len(settings)))
    for row, setting in zip(axes, settings):
        for ax, method in zip(row, methods):
            run = chosen.get((setting, method))
            if run is None:
                ax.axis("off")
                continue
            ex = read_example(run["run_dir"])
            ax.imshow(ex["image"], cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label_of(method)}, rep {run['rep']}")
            outlines = ((ex["label"] == 1, TRUTH_COLOUR, "-"), (ex["prob"] >= 0.5, PREDICTION_COLOUR, "--"))
            for mask, colour, style in outlines:
                if mask.any():  # an empty mask has no contour
                    ax.contour(mask, levels=[0.5], colors=colour, linewidths=1, linestyles=style)
        row[0].set_ylabel(f"{setting_header(setting)}")
    handles = [Line2D([], [], color=TRUTH_COLOUR, label="ground truth"),
               Line2D([], [], color=PREDICTION_COLOUR, ls="--", label="prediction (p ≥ 0.5)")]
    fig.legend(handles=handles, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


@STYLED
def reconstructions_figure(run_dirs: list[str | Path]):
    """Attention reconstructions (MASSL, the method table's rows with reconstruction `attention`):
    image X, the targets (1−S)X and SX built from the soft segmentation S, and reconstruction
    channels 0 (background) and 1 (foreground)."""
    attention = methods_with_reconstruction("attention")
    chosen = _first_rep_per_cell([r for r in map(run_info, run_dirs) if r["method"] in attention])
    if not chosen:
        raise DataError(f"no converged run of an attention-reconstruction method "
                        f"({', '.join(map(label_of, attention)) or 'none in the method table'}) among --runs")
    settings = sort_settings(s for s, _ in chosen)
    keys = sorted(chosen, key=lambda k: (settings.index(k[0]), method_rank(k[1])))
    titles = ("image X", "target (1−S)·X", "target S·X", "reconstruction ch 0", "reconstruction ch 1")
    fig, axes = new_figure(len(keys), 5, (10.5, 2.2 * len(keys)))
    for row, key in zip(axes, keys):
        run = chosen[key]
        ex = read_example(run["run_dir"], need_rec=True)
        if ex["rec"].shape[0] != 2:
            raise DataError(f"{run['run_dir'] / 'examples.npz'}: an attention reconstruction has 2 channels, "
                            f"found {ex['rec'].shape[0]}")
        image, s = ex["image"], np.clip(ex["prob"], 0, 1)
        vmax = float(np.nanmax(image)) or 1.0
        for ax, panel in zip(row, (image, (1 - s) * image, s * image, ex["rec"][0], ex["rec"][1])):
            ax.imshow(panel, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{label_of(key[1])}\n{setting_header(key[0])}, rep {run['rep']}")
    for ax, title in zip(axes[0], titles):
        ax.set_title(title)
    fig.tight_layout()
    return fig


@STYLED
def probe_figure(table: pd.DataFrame):
    """Probe R² by encoder level, mean ± sd (sqrt of the table's variance), one line per method; a
    refused level (NaN mean, reason in Table 3) leaves a gap."""
    methods = sorted(table["method"].unique(), key=method_rank)
    fig, axes = new_figure(1, 1, (4.8, 3.2))
    ax = axes[0][0]
    for i, method in enumerate(methods):
        mine = table[table["method"] == method].sort_values("level")
        offset = (i - (len(methods) - 1) / 2) * 0.06  # side by side so error bars do not overlap
        ax.errorbar(mine["level"] + offset, mine["mean"], yerr=np.sqrt(mine["variance"]), marker="o", ms=4,
                    capsize=3, color=colour_of(method), label=label_of(method))
    ax.set_xticks(sorted(table["level"].unique()))
    ax.set_xlabel("encoder level")
    scores = table["score"].dropna().unique() if "score" in table else []  # none in tables before issue 13
    ax.set_ylabel("R² of linear probe" + (f" ({score_text(str(scores[0]))})" if len(scores) == 1 else ""))
    ax.set_title(f"Feature probe ({table['dataset'].iloc[0]}, {table['setting'].iloc[0]})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def read_probe_table(path) -> pd.DataFrame:
    """Table 3's tidy CSV (`analysis.tables probe`)."""
    table = read_table(path, ("dataset", "setting", "method", "method_label", "level", "mean", "variance"),
                       "probe table", sep=",")
    for column in ("level", "mean", "variance"):
        table[column] = numeric_column(table, column, path)
    for method, label in table[["method", "method_label"]].drop_duplicates().itertuples(index=False):
        check_label(method, label, str(path))
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.figures", description="Write the suite's figures.")
    sub = parser.add_subparsers(dest="figure", required=True)
    p = sub.add_parser("dice", help="Dice per method and setting (box + points)")
    p.add_argument("--cases", required=True, help="results/metrics/<d>.tsv")
    p.set_defaults(run=_run, draw=lambda a: _save(dice_figure(read_cases(a.cases)), a.out))
    p = sub.add_parser("curves", help="training loss and validation Dice against iteration")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR")
    p.set_defaults(run=_run, draw=lambda a: _save(curves_figure(a.runs), a.out))
    p = sub.add_parser("examples", help="example segmentations with truth and prediction contours")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR")
    p.add_argument("--methods", required=True, help="comma-separated method ids (the columns)")
    p.set_defaults(run=_run, draw=lambda a: _save(examples_figure(a.runs, a.methods.split(",")), a.out))
    p = sub.add_parser("reconstructions", help="attention (MASSL) background/foreground reconstructions and their "
                                               "targets")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR")
    p.set_defaults(run=_run, draw=lambda a: _save(reconstructions_figure(a.runs), a.out))
    p = sub.add_parser("probe", help="probe R² by encoder level (from Table 3's CSV)")
    p.add_argument("--table", required=True, help="results/tables/table3.csv")
    p.set_defaults(run=_run, draw=lambda a: _save(probe_figure(read_probe_table(a.table)), a.out))
    for p in sub.choices.values():
        p.add_argument("--config", required=True,
                       help="resolved config (results/config.json): the method table and the setting pattern")
        p.add_argument("--out", required=True, help="output path without suffix (.png and .pdf are written)")
    return parser


def _run(args: argparse.Namespace) -> int:
    """Install the config's method table, then draw the chosen figure (`args.draw`)."""
    use_config(args.config)
    return args.draw(args)


def _save(fig, out) -> int:
    paths = save_figure(fig, out)
    log.info("wrote %s", ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(build_parser()))
