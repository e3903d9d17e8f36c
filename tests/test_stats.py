"""Aggregation of run folders and the statistics behind the table marks, on hand-made numbers."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import MARKS, STATS, cases_frame, write_config, write_run
from scipy import stats as sps

from analysis import aggregate, stats
from analysis.common import DataError, atomic_path

pytestmark = pytest.mark.usefixtures("method_table")

ROOT = Path(__file__).resolve().parent.parent
S = "50L70U"
OFFSETS = np.array([-0.05, 0.05, -0.02, 0.02, 0.0, -0.04, 0.04, -0.01, 0.01, 0.0])  # mean 0: rep mean = base


def two_sided_t_p(t: float, df: int) -> float:
    return float(2 * sps.t.sf(abs(t), df))


def test_paired_t_test_against_hand_formula():
    a = np.array([0.7, 0.8, 0.9, 0.6])
    b = np.array([0.6, 0.6, 0.6, 0.4])
    # d = 0.1, 0.2, 0.3, 0.2: mean 0.2, sd = sqrt((0.01 + 0 + 0.01 + 0) / 3), t = 0.2 / (sd / 2)
    t = 0.2 / (math.sqrt(0.02 / 3) / 2)
    assert stats.paired_t_test(a, b) == pytest.approx(two_sided_t_p(t, 3), rel=1e-9)
    assert math.isnan(stats.paired_t_test(a, a))  # a tie has no test
    assert math.isnan(stats.paired_t_test([0.5], [0.4]))


def test_corrected_resampled_t_test_against_hand_computation():
    d = [0.02, 0.04, 0.03, 0.05, 0.01]
    # mean 0.03; var (ddof 1) = (1 + 1 + 0 + 4 + 4)e-4 / 4 = 2.5e-4; factor 1/5 + 50/120
    t = 0.03 / math.sqrt((0.2 + 50 / 120) * 2.5e-4)
    p = stats.corrected_resampled_t_test(d, 50 / 120)
    assert p == pytest.approx(two_sided_t_p(t, 4), rel=1e-9)
    naive = stats.corrected_resampled_t_test(d, 0.0)  # no correction = plain one-sample t-test
    assert naive == pytest.approx(two_sided_t_p(0.03 / math.sqrt(0.2 * 2.5e-4), 4), rel=1e-9)
    assert p > naive
    assert math.isnan(stats.corrected_resampled_t_test([0.0, 0.0, 0.0], 0.4))
    assert math.isnan(stats.corrected_resampled_t_test([0.1], 0.4))


def test_holm_against_hand_computation():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(1 * 0.04, 0.06); NaN is not in the family
    adjusted = stats.holm([0.01, 0.04, np.nan, 0.03])
    np.testing.assert_allclose(adjusted[[0, 1, 3]], [0.03, 0.06, 0.06])
    assert math.isnan(adjusted[2])


def _rep_cells(rep_means: dict, offsets=OFFSETS) -> dict:
    """{(setting, method): per-rep case Dice} with the given repetition means (offsets average 0)."""
    return {(S, m): [list(mean + offsets) for mean in means] for m, means in rep_means.items()}


def test_marks_follow_significance_and_direction():
    rng = np.random.default_rng(3)
    base = [0.6, 0.62, 0.58]
    cells = _rep_cells({"cnn": base, "mssl_alter": base})  # mssl_alter ties with CNN
    cells[(S, "massl_alter")] = [list(np.array(c) + 0.1 + rng.normal(0, 0.01, 10)) for c in cells[(S, "cnn")]]
    cells[(S, "pretrain_dec")] = [list(np.array(c) - 0.1 + rng.normal(0, 0.01, 10)) for c in cells[(S, "cnn")]]
    table = stats.compute_stats(cases_frame(cells), test_train_ratio=0.4, **MARKS).set_index("method")

    assert table.loc["massl_alter", "mark_ref"] == "*" and table.loc["massl_alter", "mark_best"] == ""
    assert table.loc["mssl_alter", "mark_ref"] == "" and math.isnan(table.loc["mssl_alter", "p_ref"])
    assert table.loc["pretrain_dec", "mark_ref"] == ""  # significant, but worse than CNN
    assert table.loc["pretrain_dec", "p_ref"] < 1e-6
    for method in ("cnn", "mssl_alter", "pretrain_dec"):
        assert table.loc[method, "mark_best"] == "†"
    assert math.isnan(table.loc["cnn", "p_ref"]) and math.isnan(table.loc["massl_alter", "p_best"])
    assert list(table.index) == ["cnn", "pretrain_dec", "mssl_alter", "massl_alter"]  # paper row order
    # a cell = mean over repetitions of the per-repetition means; sd over repetition means
    assert table.loc["cnn", "mean"] == pytest.approx(0.6)
    assert table.loc["cnn", "sd"] == pytest.approx(0.02)
    assert table.loc["cnn", "n_cases"] == 30 and table.loc["cnn", "n_reps"] == 3


def test_paired_test_pairs_by_repetition_and_case_not_row_order():
    cells = {(S, "cnn"): [[0.5, 0.6, 0.7, 0.4], [0.55, 0.65, 0.5, 0.45]],
             (S, "massl_alter"): [[0.6, 0.8, 0.9, 0.5], [0.6, 0.75, 0.6, 0.5]]}
    cases = cases_frame(cells)
    shuffled = cases.sample(frac=1, random_state=0).reset_index(drop=True)
    p = stats.compute_stats(shuffled, 0.4, **MARKS).set_index("method").loc["massl_alter", "p_ref"]
    d = np.array([0.1, 0.2, 0.2, 0.1, 0.05, 0.1, 0.1, 0.05])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert p == pytest.approx(two_sided_t_p(t, 7), rel=1e-9)


def test_corrected_p_and_holm_in_the_table():
    d = np.array([0.02, 0.04, 0.03, 0.05, 0.01])
    cnn = np.array([0.60, 0.62, 0.61, 0.63, 0.64])
    cells = _rep_cells({"cnn": cnn, "massl_alter": cnn + d, "mssl_alter": cnn + d / 2, "massl_l09": cnn - d})
    table = stats.compute_stats(cases_frame(cells), test_train_ratio=50 / 120, **MARKS).set_index("method")
    t = 0.03 / math.sqrt((0.2 + 50 / 120) * 2.5e-4)  # as in the hand computation above
    assert table.loc["massl_alter", "p_ref_corrected"] == pytest.approx(two_sided_t_p(t, 4), rel=1e-6)
    column = table.loc[["mssl_alter", "massl_l09", "massl_alter"], "p_ref"].to_numpy()
    expected = stats.holm(column)
    np.testing.assert_allclose(table.loc[["mssl_alter", "massl_l09", "massl_alter"], "p_ref_holm"], expected)
    # every per-scan difference equals its repetition's d: the pooled paired test is far more
    # confident than the corrected one, so the two mark tests disagree
    assert table.loc["massl_alter", "mark_ref"] == "*"
    corrected = stats.compute_stats(cases_frame(cells), 50 / 120, mark_test="corrected", **MARKS)
    corrected = corrected.set_index("method")
    assert corrected.loc["massl_alter", "p_ref_corrected"] > 0.05
    assert corrected.loc["massl_alter", "mark_ref"] == ""


def test_methods_option_chooses_the_rows_and_the_holm_family():
    """stats/<d>.tsv holds the paper's rows, stats/<d>_plus.tsv all of the grid's: the same
    unadjusted tests, Holm adjusted over each table's own rows."""
    d = np.array([0.02, 0.04, 0.03, 0.05, 0.01])
    cnn = np.array([0.60, 0.62, 0.61, 0.63, 0.64])
    cases = cases_frame(_rep_cells({"cnn": cnn, "massl_alter": cnn + d, "mssl_alter": cnn + d / 2,
                                    "massl_l09": cnn - d}))
    every = stats.compute_stats(cases, 50 / 120, **MARKS).set_index("method")
    chosen = stats.select_methods(cases, "cnn, massl_alter,mssl_alter", "metrics.tsv")
    assert sorted(chosen["method"].unique()) == ["cnn", "massl_alter", "mssl_alter"]
    fewer = stats.compute_stats(chosen, 50 / 120, **MARKS).set_index("method")
    assert fewer.loc["mssl_alter", "p_ref"] == every.loc["mssl_alter", "p_ref"]
    assert fewer.loc["mssl_alter", "p_ref_holm"] < every.loc["mssl_alter", "p_ref_holm"]
    assert stats.select_methods(cases, None, "metrics.tsv") is cases
    with pytest.raises(DataError, match="metrics.tsv: no case rows for method.*pretrain_dec"):
        stats.select_methods(cases, "cnn,pretrain_dec", "metrics.tsv")


def test_nan_dice_is_left_out_of_means():
    cells = {(S, "cnn"): [[0.5, 0.7, np.nan], [0.4, 0.6, 0.8]]}
    row = stats.compute_stats(cases_frame(cells), 0.4, **MARKS).iloc[0]
    assert row["mean"] == pytest.approx(0.6)  # rep means 0.6 and 0.6
    assert row["sd"] == pytest.approx(0.0)
    assert row["n_cases"] == 5


def test_diverged_repetition_gets_no_mark():
    rng = np.random.default_rng(0)
    base = [list(0.6 + rng.normal(0, 0.02, 10)) for _ in range(3)]
    cells = {(S, "cnn"): base, (S, "massl_alter"): [list(np.array(b) + 0.2) for b in base]}
    table = stats.compute_stats(cases_frame(cells, diverged={(S, "massl_alter", 2)}), 0.4, **MARKS)
    table = table.set_index("method")
    row = table.loc["massl_alter"]
    assert (row["n_reps"], row["n_converged"], row["n_diverged"], row["n_cases"]) == (3, 2, 1, 20)
    assert row["mean"] == pytest.approx((np.mean(base[0]) + np.mean(base[2])) / 2 + 0.2)
    assert row["p_ref"] < 1e-6 and row["mark_ref"] == ""


def test_bad_options_are_rejected():
    cases = cases_frame({(S, "cnn"): [[0.5, 0.6]]})
    with pytest.raises(stats.ConfigError, match="reference"):
        stats.compute_stats(cases, 0.4, reference="unet", best="massl_alter")
    with pytest.raises(stats.ConfigError, match="ratio"):
        stats.compute_stats(cases, 0.0, **MARKS)
    mixed = pd.concat([cases, cases_frame({(S, "massl_alter"): [[0.5, 0.6]]}, data_source="real")])
    with pytest.raises(DataError, match="data_source"):
        stats.compute_stats(mixed, 0.4, **MARKS)


def _runs(tmp_path, **kwargs):
    return [write_run(tmp_path, "brats18", setting, method, rep, [0.5 + 0.1 * rep, 0.6, 0.7], **kwargs)
            for setting in ("120L120U", "20L100U") for method in ("massl_alter", "cnn") for rep in (2, 1)]


def test_aggregate_keeps_status_source_and_sorts_in_paper_order(tmp_path):
    runs = _runs(tmp_path)
    runs.append(write_run(tmp_path, "brats18", "20L100U", "mssl_l07", 1, [0.5, 0.6, 0.7], status="diverged"))
    cases, run_rows = aggregate.aggregate(runs)
    assert len(cases) == 3 * 9 and len(run_rows) == 9
    assert list(run_rows["setting"].unique()) == ["20L100U", "120L120U"]
    assert list(run_rows["method"][:5]) == ["cnn", "cnn", "mssl_l07", "massl_alter", "massl_alter"]
    assert list(run_rows["rep"][:2]) == [1, 2]
    assert set(cases["data_source"]) == {"synthetic"} and set(cases["scale"]) == {"smoke"}
    diverged = cases[cases["method"] == "mssl_l07"]
    assert set(diverged["status"]) == {"diverged"} and diverged["dice"].isna().all()
    assert set(run_rows["logged_iterations"]) == {40.0}
    assert run_rows.set_index(["method", "setting", "rep"]).loc[("cnn", "20L100U", 2), "n_scored"] == 3


def test_aggregate_rejects_inconsistent_runs(tmp_path):
    run = write_run(tmp_path, "brats18", S, "cnn", 1, [0.5, 0.6])
    other = write_run(tmp_path / "b", "brats18", S, "cnn", 1, [0.5, 0.6])
    with pytest.raises(DataError, match="same run twice"):
        aggregate.aggregate([run, other])
    real = write_run(tmp_path / "c", "brats18", S, "cnn", 2, [0.5, 0.6], data_source="real")
    with pytest.raises(DataError, match="data_source"):
        aggregate.aggregate([run, real])
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "method_label": "U-Net"}))
    with pytest.raises(DataError, match="labelled 'U-Net'"):
        aggregate.read_run(run)
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "per_case.tsv").unlink()
    with pytest.raises(DataError, match="per_case.tsv"):
        aggregate.read_run(run)


def _cli(module, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_aggregate_and_stats_command_lines(tmp_path):
    runs = _runs(tmp_path)
    config = write_config(tmp_path / "config.json")
    cases_tsv, stats_tsv = tmp_path / "m" / "b.tsv", tmp_path / "s.tsv"
    done = _cli("analysis.aggregate", "--config", config, "--runs", *runs, "--out-cases", cases_tsv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in cases_tsv.parent.iterdir()) == ["b.tsv"]  # no per-run table any more
    done = _cli("analysis.stats", "--config", config, "--cases", cases_tsv, "--out", stats_tsv,
                "--test-train-ratio", 0.4, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(stats_tsv, sep="\t")
    assert list(table.columns) == list(stats.STATS_COLUMNS) and len(table) == 4
    assert set(table["reference"]) == {"cnn"} and set(table["alpha"]) == {0.05}  # the config's stats section
    assert not list(tmp_path.glob("**/.*.tmp"))  # atomic writes leave no temporary files

    done = _cli("analysis.aggregate", "--runs", *runs, "--out-cases", cases_tsv, cwd=tmp_path)
    assert done.returncode == 2 and "--config" in done.stderr
    (runs[0] / "summary.json").write_text("{not json")
    done = _cli("analysis.aggregate", "--config", config, "--runs", *runs, "--out-cases", cases_tsv, cwd=tmp_path)
    assert done.returncode == 2 and "summary.json" in done.stderr and "Traceback" not in done.stderr


def test_stats_marks_default_to_the_config_and_the_options_override_it(tmp_path):
    rng = np.random.default_rng(1)
    base = [list(0.6 + rng.normal(0, 0.02, 10)) for _ in range(3)]
    cells = {(S, "cnn"): base, **{(S, m): [list(np.array(b) + shift + rng.normal(0, 0.01, 10)) for b in base]
                                  for m, shift in (("mssl_alter", 0.1), ("massl_alter", 0.2))}}
    cases_tsv = tmp_path / "cases.tsv"
    cases_frame(cells).to_csv(cases_tsv, sep="\t", index=False)
    config = write_config(tmp_path / "config.json", stats={**STATS, "reference": "mssl_alter", "alpha": 0.01})
    args = ["--config", str(config), "--cases", str(cases_tsv), "--test-train-ratio", "0.4"]
    assert stats.run_cli(stats.build_parser(), [*args, "--out", str(tmp_path / "a.tsv")]) == 0
    table = pd.read_csv(tmp_path / "a.tsv", sep="\t").set_index("method")
    assert set(table["reference"]) == {"mssl_alter"} and set(table["alpha"]) == {0.01}
    assert table.loc["massl_alter", "mark_ref"] == "*" and pd.isna(table.loc["cnn", "mark_ref"])
    assert stats.run_cli(stats.build_parser(), [*args, "--out", str(tmp_path / "b.tsv"), "--reference", "cnn",
                                                "--alpha", "0.05"]) == 0
    table = pd.read_csv(tmp_path / "b.tsv", sep="\t").set_index("method")
    assert set(table["reference"]) == {"cnn"} and set(table["alpha"]) == {0.05}
    assert table.loc["mssl_alter", "mark_ref"] == "*"


def test_standard_error_from_sd_or_variance():
    assert stats.standard_error(4, sd=0.02) == pytest.approx(0.01)
    assert stats.standard_error(4, variance=0.0004) == pytest.approx(0.01)
    sd, n = pd.Series([0.02, np.nan]), pd.Series([4, 1])
    assert stats.standard_error(n, sd=sd).tolist()[0] == pytest.approx(0.01)
    with pytest.raises(TypeError):
        stats.standard_error(4)


def test_analysis_never_imports_training_code():
    code = ("import analysis.aggregate, analysis.stats, analysis.tables, analysis.figures, analysis.replication, "
            "analysis.report, analysis.compare, analysis.costs, sys; "
            "bad = [m for m in ('torch', 'massl') if m in sys.modules]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "stats.tsv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_final_weights_file_must_score_the_same_cases(tmp_path):
    run = write_run(tmp_path, "brats18", S, "cnn", 1, [0.5, 0.6], final_dice=[0.4, 0.5])
    cases, row = aggregate.read_run(run)
    assert cases["dice_final"].tolist() == pytest.approx([0.4, 0.5]) and row["mean_dice_final"] == pytest.approx(0.45)
    final = pd.read_csv(run / "per_case_final.tsv", sep="\t")
    final.iloc[:1].to_csv(run / "per_case_final.tsv", sep="\t", index=False)
    with pytest.raises(DataError, match="per_case_final.tsv: its cases differ"):
        aggregate.read_run(run)


def test_case_table_from_before_the_stopping_rule_is_read(tmp_path):
    cases = cases_frame({(S, "cnn"): [[0.5, 0.7], [0.4, 0.6]]})
    path = tmp_path / "old.tsv"
    cases.to_csv(path, sep="\t", index=False)  # no dice_final, stop_reason, still_improving columns
    row = stats.compute_stats(stats.read_cases(path), 0.4, **MARKS).iloc[0]
    assert row["mean"] == pytest.approx(0.55) and math.isnan(row["mean_final"])
    assert (row["n_final"], row["n_stop_unknown"], row["n_still_improving"], row["still_improving_reps"]) == \
        (0, 2, 0, "")
