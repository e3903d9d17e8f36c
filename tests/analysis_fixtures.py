"""Hand-made result files for the analysis tests (a plain module the test files import).

Every number here is chosen by hand, so each test knows its answer. The layouts follow
docs/architecture.md: run folders (`per_case.tsv`, `summary.json`, `train_log.tsv`,
`examples.npz`), probe TSVs and the statistics table of `analysis.stats`. The method table is
the library's own (`massl.methods.describe()`), as `massl config` writes it into the resolved
config that every analysis CLI reads (`--config`); `resolved_config` / `write_config` build one.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
from massl.methods import describe

from analysis import methods
from analysis.stats import STATS_COLUMNS

LIBRARY = describe()
# The paper's nine rows in its order: the methods of the fixtures' grid (the default `methods:`).
METHOD_LABELS = {row["id"]: row["label"] for row in LIBRARY["method_table"] if row["paper"]}
# The probe section as `massl config` resolves it (every key present; `setting` = the one probed).
PROBE = {"dataset": "brats18", "setting": "50L70U", "methods": ["cnn", "mssl_alter", "massl_alter"], "n_images": 5,
         "n_draws": 5, "max_voxels": 200_000, "seed": 0, "score": "held_out", "min_samples_per_feature": 10,
         "variance": "within"}
STATS = {"alpha": 0.05, "reference": "cnn", "best": "massl_alter", "claim_interval": "corrected"}
# compute_stats' marks as the resolved config's `stats` section gives them
MARKS = {"reference": STATS["reference"], "best": STATS["best"]}
# analysis.replication.read_options of the resolved config above
OPTIONS = {"alpha": STATS["alpha"], "claim_interval": STATS["claim_interval"], "variance": PROBE["variance"]}


def resolved_config(**sections) -> dict:
    """The keys of a resolved config.json that analysis/ reads; `sections` replace top-level keys
    (a section given as None is left out)."""
    config = {"scale": "smoke", "repetitions": 5, "methods": list(METHOD_LABELS), "stats": dict(STATS),
              "replication": {"tolerance_dice": 0.02, "tolerance_se": 2}, "probe": dict(PROBE),
              "library": copy.deepcopy(LIBRARY)}
    config.update(sections)
    return {k: v for k, v in config.items() if v is not None}


def write_config(path: Path, **sections) -> Path:
    """`resolved_config(**sections)` written as JSON to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(resolved_config(**sections), indent=2))
    return path


@contextlib.contextmanager
def installed_method_table(config: dict | None = None):
    """The method table of `config` (default: the library's) installed for the block, as an analysis
    CLI's `--config` installs it; the previous table is restored afterwards."""
    table = methods.MethodTable.from_config(config or resolved_config())
    previous = methods.install(table)
    try:
        yield table
    finally:
        methods.install(previous)

SETTINGS = {"brats18": ("20L100U", "50L70U", "120L120U"), "wmh17": ("10L20U", "20L10U", "30L30U")}


def case_rows(dataset: str, setting: str, method: str, rep: int, dice, status: str = "converged",
              data_source: str = "synthetic", scale: str = "smoke") -> list[dict]:
    """Rows of an aggregated case table; case i is `case{i:03d}` and NaN Dice stays NaN."""
    return [{"dataset": dataset, "setting": setting, "method": method, "method_label": METHOD_LABELS[method],
             "rep": rep, "case_id": f"case{i:03d}", "site": "siteA", "dice": float(d), "hd95": 1.0, "avd": 0.5,
             "status": status, "data_source": data_source, "scale": scale} for i, d in enumerate(dice)]


def cases_frame(cells: dict, dataset: str = "brats18", diverged=(), **origin) -> pd.DataFrame:
    """Case table from {(setting, method): [dice of rep 1, dice of rep 2, ...]}; a
    (setting, method, rep) in `diverged` gets NaN Dice and status diverged."""
    rows = []
    for (setting, method), reps in cells.items():
        for rep, dice in enumerate(reps, 1):
            if (setting, method, rep) in diverged:
                rows += case_rows(dataset, setting, method, rep, [np.nan] * len(dice), "diverged", **origin)
            else:
                rows += case_rows(dataset, setting, method, rep, dice, **origin)
    return pd.DataFrame(rows)


def write_run(results: Path, dataset: str, setting: str, method: str, rep: int, dice, status: str = "converged",
              data_source: str = "synthetic", scale: str = "smoke", iterations: int = 40,
              rec_channels: int = 0, stop: dict | None = None, final_dice=None) -> Path:
    """A finished run folder with the files `massl train` writes (no model). Without `stop` and
    `final_dice` it is a run from before issue 13 (no stop fields, no per_case_final.tsv);
    `stop` adds summary fields (stop_reason, still_improving, ...), `final_dice` the final
    weights' per_case_final.tsv."""
    run = Path(results) / "runs" / dataset / setting / method / f"rep{rep}"
    run.mkdir(parents=True)
    dice = [np.nan] * len(dice) if status == "diverged" else list(dice)
    rows = pd.DataFrame(case_rows(dataset, setting, method, rep, dice, status)).drop(columns=["data_source", "scale"])
    rows.to_csv(run / "per_case.tsv", sep="\t", index=False, na_rep="")
    summary = {"dataset": dataset, "setting": setting, "method": method, "method_label": METHOD_LABELS[method],
               "rep": rep, "status": status, "n_test": len(dice), "mean_dice": float(np.nanmean(dice)) if
               status == "converged" else None, "best_iteration": iterations // 2, "iterations": iterations,
               "wall_seconds": 12.5, "data_source": data_source, "scale": scale, **(stop or {})}
    (run / "summary.json").write_text(json.dumps(summary))
    if final_dice is not None:
        final = rows.assign(dice=[np.nan] * len(dice) if status == "diverged" else list(final_dice))
        final.to_csv(run / "per_case_final.tsv", sep="\t", index=False, na_rep="")
    it = np.arange(1, iterations + 1)
    log = pd.DataFrame({"iteration": it, "epoch": (it - 1) // 10, "loss": 1.0 / it, "loss_seg": 0.5 / it,
                        "loss_rec": 0.5 / it, "lr_seg": 0.01, "lr_rec": 0.001,
                        "val_dice": np.where(it % 10 == 0, 0.5 + it / (4 * iterations), np.nan),
                        "seconds": 0.1 * it})
    log.to_csv(run / "train_log.tsv", sep="\t", index=False, na_rep="")
    np.savez(run / "examples.npz", **example_slice(rec_channels))
    return run


def example_slice(rec_channels: int = 0, size: int = 24) -> dict:
    """A bright disc (label) on a dim background, a slightly shifted soft prediction."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2
    image = (0.2 + 0.6 * disc).astype(np.float32)
    prob = np.clip(1.2 - np.sqrt((yy - size / 2 - 1) ** 2 + (xx - size / 2) ** 2) / (size / 5), 0, 1)
    arrays = {"image": image, "label": disc.astype(np.uint8), "prob": prob.astype(np.float32)}
    if rec_channels:
        arrays["rec"] = np.stack([(1 - prob) * image, prob * image][:rec_channels]).astype(np.float32)
    return arrays


def write_probe(results: Path, dataset: str, setting: str, method: str, rep: int, r2: dict,
                reasons: dict | None = None, score: str | None = None) -> Path:
    """A probe TSV from {level: [R² of draw 0, draw 1, ...]}. Without `score` it has the old
    columns (level draw r2 n_voxels); with it the issue-13 ones, a level in `reasons`
    ({level: reason}) getting NaN R² and that reason."""
    path = Path(results) / "probe" / dataset / setting / method / f"rep{rep}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    reasons = reasons or {}
    rows = [{"level": level, "draw": draw, "r2": np.nan if level in reasons else value, "n_voxels": 1000 // level,
             "n_features": 8 * 2 ** level, "score": score, "reason": reasons.get(level, "")}
            for level, values in r2.items() for draw, value in enumerate(values)]
    frame = pd.DataFrame(rows)
    if score is None:
        frame = frame[["level", "draw", "r2", "n_voxels"]]
    frame.to_csv(path, sep="\t", index=False, na_rep="")
    return path


def stats_frame(means: dict, dataset: str, stars=(), daggers=(), diverged=(), sd: float = 0.01, n_reps: int = 5,
                data_source: str = "synthetic", scale: str = "smoke") -> pd.DataFrame:
    """A statistics table as `analysis.stats` writes it, from {(setting, method): mean}; p-values
    are left empty (the replication report reads the marks)."""
    rows = []
    for (setting, method), mean in means.items():
        n_diverged = 1 if (setting, method) in diverged else 0
        rows.append({"dataset": dataset, "setting": setting, "method": method, "method_label": METHOD_LABELS[method],
                     "mean": mean, "sd": sd, "n_reps": n_reps, "n_converged": n_reps - n_diverged,
                     "n_diverged": n_diverged, "n_cases": 10 * n_reps, "reference": "cnn", "best": "massl_alter",
                     "mark_ref": "*" if (setting, method) in stars else "",
                     "mark_best": "†" if (setting, method) in daggers else "", "mark_test": "paired",
                     "alpha": 0.05, "test_train_ratio": 0.4, "data_source": data_source, "scale": scale,
                     "mean_final": mean, "sd_final": sd, "n_final": n_reps - n_diverged, "n_stop_plateau": 0,
                     "n_stop_budget": 0, "n_stop_diverged": 0, "n_stop_unknown": n_reps, "n_still_improving": 0,
                     "still_improving_reps": ""})
    return pd.DataFrame(rows).reindex(columns=list(STATS_COLUMNS))


CASE_OFFSETS = np.array([-0.05, 0.05, -0.02, 0.02])  # mean 0: a repetition's mean is its set value


def cases_like(stats: pd.DataFrame, n_reps: int = 5) -> pd.DataFrame:
    """A case table whose repetition means have each cell's `mean` and `sd`: mean + sd · z, with
    z a standardised pattern permuted per method, so two methods' per-repetition differences
    vary (as two models' do). A cell with `n_diverged` > 0 diverged in repetition 1."""
    base = np.arange(n_reps) - (n_reps - 1) / 2
    base = base / base.std(ddof=1)
    cells, diverged = {}, set()
    for row in stats.itertuples():
        # seeds 1..9: nine distinct 5-repetition patterns (seed 0 repeats seed 2's)
        z = np.random.default_rng(1 + list(METHOD_LABELS).index(row.method)).permutation(base)
        cells[(row.setting, row.method)] = [list(row.mean + row.sd * zr + CASE_OFFSETS) for zr in z]
        if row.n_diverged > 0:
            diverged.add((row.setting, row.method, 1))
    first = stats.iloc[0]
    return cases_frame(cells, str(first["dataset"]), diverged, data_source=first["data_source"], scale=first["scale"])


# Method means in which every claim of the paper holds: MASSL(alter) on top, alternating above
# joint, MASSL above MSSL, Pretrain(Dec) below CNN.
IDEAL_MEANS = {"cnn": 0.60, "pretrain_dec": 0.58, "pretrain_cnn": 0.62, "mssl_l07": 0.61, "mssl_l09": 0.62,
               "mssl_alter": 0.64, "massl_l07": 0.62, "massl_l09": 0.63, "massl_alter": 0.68}


def ideal_stats(dataset: str, **kwargs) -> pd.DataFrame:
    """All nine methods in the paper's three settings of `dataset`, MASSL(alter) marked * everywhere."""
    means = {(s, m): v + 0.01 * i for i, s in enumerate(SETTINGS[dataset]) for m, v in IDEAL_MEANS.items()}
    stars = {(s, "massl_alter") for s in SETTINGS[dataset]}
    return stats_frame(means, dataset, stars=kwargs.pop("stars", stars), **kwargs)


def probe_table(level5: dict | None = None) -> pd.DataFrame:
    """Table 3's tidy CSV content for CNN, MSSL(alter), MASSL(alter) at levels 1-5."""
    level5 = level5 or {"cnn": 0.45, "mssl_alter": 0.47, "massl_alter": 0.52}
    rows = [{"dataset": "brats18", "setting": "50L70U", "method": m, "method_label": METHOD_LABELS[m],
             "level": level, "mean": level5[m] if level == 5 else 0.3 + 0.04 * level, "variance": 0.01, "n": 25,
             "n_reps": 5} for m in ("cnn", "mssl_alter", "massl_alter") for level in range(1, 6)]
    return pd.DataFrame(rows)


def probe_rows(level5: dict | None = None, n_reps: int = 5, n_draws: int = 5, spread: float = 0.005,
               reasons: dict | None = None, score: str = "held_out") -> pd.DataFrame:
    """Probe rows as `analysis.tables.read_probe_files` returns them for CNN, MSSL(alter) and
    MASSL(alter) at levels 1-5 (level 5 means from `level5`, the others 0.3 + 0.04 · level),
    repetition r shifted by spread · z_r (a method-specific pattern), draws around it; a level
    in `reasons` ({level: reason}) is refused (NaN R², that reason)."""
    level5 = level5 or {"cnn": 0.45, "mssl_alter": 0.47, "massl_alter": 0.52}
    reasons = reasons or {}
    base = np.arange(n_reps) - (n_reps - 1) / 2
    base = base / base.std(ddof=1)
    draws = np.linspace(-0.01, 0.01, n_draws)
    rows = []
    for k, method in enumerate(("cnn", "mssl_alter", "massl_alter")):
        for rep, z in enumerate(np.roll(base, 2 * k), 1):
            for level in range(1, 6):
                mean = level5[method] if level == 5 else 0.3 + 0.04 * level
                for draw, offset in enumerate(draws):
                    rows.append({"level": level, "draw": draw, "r2": np.nan if level in reasons else
                                 mean + spread * z + offset, "n_voxels": 1000 // level, "n_features": 8 * 2 ** level,
                                 "score": score, "reason": reasons.get(level, ""), "dataset": "brats18",
                                 "setting": "50L70U", "method": method, "rep": rep})
    return pd.DataFrame(rows)
