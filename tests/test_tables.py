"""Tables 1-3: shape, paper order and labels, marks, n.c., and the CSV/Markdown/LaTeX renderings."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import (
    SETTINGS,
    cases_frame,
    ideal_stats,
    stats_frame,
    write_probe,
    write_run,
)

from analysis import aggregate, methods, tables
from analysis.common import DataError, run_cli
from analysis.stats import compute_stats

PAPER_ROWS = ["CNN", "Pretrain(Dec)", "Pretrain(CNN)", "MSSL(λ=0.7)", "MSSL(λ=0.9)", "MSSL(alter)",
              "MASSL(λ=0.7)", "MASSL(λ=0.9)", "MASSL(alter)"]


def _cli(*args) -> int:
    return run_cli(tables.build_parser(), list(map(str, args)))


def test_method_mapping_agrees_with_the_library():
    massl_methods = pytest.importorskip("massl.methods")
    assert methods.METHOD_LABELS == {m.id: m.label for m in massl_methods.METHODS.values()}
    assert list(methods.METHOD_LABELS.values()) == PAPER_ROWS
    assert len(set(methods.METHOD_COLOURS.values())) == 9


def test_settings_sort_by_labeled_count_and_print_as_in_the_paper():
    assert methods.sort_settings(["120L120U", "20L100U", "50L70U"]) == ["20L100U", "50L70U", "120L120U"]
    assert methods.setting_header("10L20U") == "10 (20)"
    with pytest.raises(DataError, match="<L>L<U>U"):
        methods.setting_counts("fifty")


def test_results_table_shape_order_and_marks():
    stats = ideal_stats("brats18", daggers={("50L70U", "cnn")}).sample(frac=1, random_state=1)
    table = tables.results_table(stats)
    assert table.shape == (10, 3)
    assert list(table.index) == [*PAPER_ROWS, tables.SD_ROW]
    assert list(table.loc[tables.SD_ROW]) == ["0.0100"] * 3
    assert list(table.columns) == ["20 (100)", "50 (70)", "120 (120)"]
    assert table.loc["MASSL(alter)", "20 (100)"] == "0.6800*"
    assert table.loc["CNN", "50 (70)"] == "0.6100†"
    assert table.loc["MSSL(alter)", "120 (120)"] == "0.6600"


def test_diverged_repetition_prints_nc_and_extended_table_counts_converged():
    rng = np.random.default_rng(0)
    cells = {(s, m): [list(0.6 + rng.normal(0, 0.02, 6)) for _ in range(3)]
             for s in SETTINGS["brats18"] for m in ("cnn", "massl_l07", "massl_alter")}
    stats = compute_stats(cases_frame(cells, diverged={("20L100U", "massl_l07", 3)}), 0.4)
    table = tables.results_table(stats)
    assert table.loc["MASSL(λ=0.7)", "20 (100)"] == "n.c."
    assert table.loc["MASSL(λ=0.7)", "50 (70)"] != "n.c."
    extended = tables.extended_table(stats)
    row = extended[(extended["setting"] == "20L100U") & (extended["method"] == "massl_l07")].iloc[0]
    assert (row["n_converged"], row["n_reps"], row["cell"]) == (2, 3, "n.c.")
    header, rows = tables._extended_rows(extended, "cnn", "massl_alter")
    assert header[7] == "p vs CNN" and header[-1] == "p vs MASSL(alter) corr. Holm"
    printed = next(r for r in rows if r[0] == "20 (100)" and r[1] == "MASSL(λ=0.7)")
    assert printed[2].startswith("n.c. (") and printed[4] == "2/3"


def test_results_command_writes_csv_markdown_and_latex(tmp_path):
    stats_tsv = tmp_path / "stats.tsv"
    ideal_stats("wmh17").to_csv(stats_tsv, sep="\t", index=False)
    done = _cli("results", "--stats", stats_tsv, "--out-prefix", tmp_path / "t" / "table2",
                "--caption", "WMH17 results: Dice & 5% of_it")
    assert done == 0

    csv = pd.read_csv(tmp_path / "t" / "table2.csv", index_col=0)
    assert csv.shape == (10, 3) and list(csv.index) == [*PAPER_ROWS, tables.SD_ROW]
    assert csv.loc["MASSL(alter)", "10 (20)"] == "0.6800*"

    md = (tmp_path / "t" / "table2.md").read_text().splitlines()
    pipe = [line for line in md if line.startswith("|")]
    assert len(pipe) == 2 + 10 and pipe[0] == "| Labeled (unlabeled) | 10 (20) | 20 (10) | 30 (30) |"
    assert pipe[-1] == f"| {tables.SD_ROW} | 0.0100 | 0.0100 | 0.0100 |"
    assert any("†: significantly worse than MASSL(alter)" in line for line in md)

    tex = (tmp_path / "t" / "table2.tex").read_text()
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{WMH17 results: Dice \& 5\% of\_it}",
                  r"MSSL($\lambda$=0.7)", r"0.6800$^*$", r"\begin{tabular}{lccc}"):
        assert token in tex
    assert "λ" not in tex and "†" not in tex and "±" not in tex
    assert tex.count(r"\\") == 1 + 10

    extended = pd.read_csv(tmp_path / "t" / "table2_extended.csv")
    assert len(extended) == 27 and {"sd", "p_ref_corrected", "p_ref_holm", "n_converged"} <= set(extended.columns)
    assert r"$\pm$" in (tmp_path / "t" / "table2_extended.tex").read_text()


def test_results_command_selects_and_rejects_methods_and_settings(tmp_path, capsys):
    stats_tsv = tmp_path / "stats.tsv"
    ideal_stats("brats18").to_csv(stats_tsv, sep="\t", index=False)
    done = _cli("results", "--stats", stats_tsv, "--out-prefix", tmp_path / "sel", "--caption", "c",
                "--methods", "massl_alter,cnn", "--settings", "120L120U,20L100U")
    assert done == 0
    csv = pd.read_csv(tmp_path / "sel.csv", index_col=0)
    assert list(csv.index) == ["MASSL(alter)", "CNN", tables.SD_ROW]
    assert list(csv.columns) == ["120 (120)", "20 (100)"]
    done = _cli("results", "--stats", stats_tsv, "--out-prefix", tmp_path / "bad", "--caption", "c",
                "--methods", "cnn,unet")
    assert done == 2 and "unet" in capsys.readouterr().err and not (tmp_path / "bad.csv").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_tables_compile(tmp_path):
    stats = stats_frame({(s, m): 0.6 for s in SETTINGS["brats18"] for m in methods.METHOD_LABELS}, "brats18",
                        stars={("20L100U", "massl_alter")}, daggers={("20L100U", "cnn")},
                        diverged={("50L70U", "mssl_l07")})
    stats.to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    assert _cli("results", "--stats", tmp_path / "s.tsv", "--out-prefix", tmp_path / "table1",
                "--caption", "BraTS18 results (λ, *, †, 50%)") == 0
    document = (r"\documentclass{article}\usepackage{booktabs}\usepackage[margin=1cm,landscape]{geometry}"
                r"\begin{document}\input{table1.tex}\input{table1_extended.tex}\end{document}")
    (tmp_path / "doc.tex").write_text(document)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_probe_table_mean_and_variance_by_hand(tmp_path):
    files = []
    for method in ("massl_alter", "cnn", "mssl_alter"):
        for rep, draws in ((1, [0.2, 0.4]), (2, [0.3, 0.5])):
            files.append(write_probe(tmp_path, "brats18", "50L70U", method, rep,
                                     {level: [d + 0.01 * level for d in draws] for level in range(1, 6)}))
    probe = tables.read_probe_files(files)
    pooled = tables.probe_summary(probe, "pooled")
    assert len(pooled) == 15 and list(pooled["method"].unique()) == ["cnn", "mssl_alter", "massl_alter"]
    level1 = pooled[(pooled["method"] == "cnn") & (pooled["level"] == 1)].iloc[0]
    # R² 0.21, 0.41, 0.31, 0.51: mean 0.36; squared deviations .0225 + .0025 + .0025 + .0225 over 3
    assert level1["mean"] == pytest.approx(0.36)
    assert level1["variance"] == pytest.approx(0.05 / 3)
    assert (level1["n"], level1["n_reps"]) == (4, 2)
    within = tables.probe_summary(probe)  # the default: the paper's reading
    assert within["variance"].to_numpy() == pytest.approx(np.full(15, 0.02))  # var of (a, a + 0.2) = 0.02

    header, rows = tables.probe_rows(pooled)
    assert header == ["Level", "1", "2", "3", "4", "5"] and len(rows) == 3
    assert [r[0] for r in rows] == ["CNN", "MSSL(alter)", "MASSL(alter)"]
    assert rows[0][1] == "0.360 (0.017)"

    assert _cli("probe", "--probe-files", *files, "--out-prefix", tmp_path / "table3", "--caption", "Probe") == 0
    csv = pd.read_csv(tmp_path / "table3.csv")
    assert list(csv.columns[:8]) == ["dataset", "setting", "method", "method_label", "level", "mean", "variance", "n"]
    assert r"R$^2$" in (tmp_path / "table3.tex").read_text()


def test_probe_files_must_name_one_setting_and_known_methods(tmp_path):
    a = write_probe(tmp_path, "brats18", "50L70U", "cnn", 1, {1: [0.3]})
    b = write_probe(tmp_path, "brats18", "20L100U", "cnn", 1, {1: [0.3]})
    with pytest.raises(DataError, match="mix setting"):
        tables.read_probe_files([a, b])
    c = write_probe(tmp_path, "brats18", "50L70U", "unet", 1, {1: [0.3]})
    with pytest.raises(DataError, match="unet"):
        tables.read_probe_files([a, c])
    odd = tmp_path / "r1.tsv"
    odd.write_text("level\tdraw\tr2\tn_voxels\n1\t0\t0.3\t10\n")
    with pytest.raises(DataError, match="rep<r>.tsv"):
        tables.read_probe_files([odd])


def test_sd_row_is_the_median_over_converged_methods_of_the_sd_of_repetition_means():
    # repetition means per method (3 reps): sd 0.01, 0.02, 0.04; the diverged cell's 0.5 is left out
    reps = {"cnn": [0.60, 0.61, 0.62], "mssl_alter": [0.60, 0.62, 0.64], "massl_alter": [0.60, 0.64, 0.68],
            "massl_l07": [0.1, 0.6, 1.1]}
    offsets = np.array([-0.1, 0.1])
    cells = {("20L100U", m): [list(r + offsets) for r in means] for m, means in reps.items()}
    stats = compute_stats(cases_frame(cells, diverged={("20L100U", "massl_l07", 2)}), 0.4)
    assert stats.set_index("method").loc["massl_alter", "sd"] == pytest.approx(0.04)
    table = tables.results_table(stats)
    assert table.loc[tables.SD_ROW, "20 (100)"] == "0.0200"
    assert table.loc["MASSL(λ=0.7)", "20 (100)"] == "n.c."


def _stop(reason, improving):
    return {"stop_reason": reason, "still_improving": improving, "last_validation_iteration": 40,
            "n_validations": 4, "final_iteration": 40, "mean_dice_final": None, "n_test_final": 3}


def test_extended_table_shows_final_weights_stop_reasons_and_still_improving_runs(tmp_path):
    endings = {1: _stop("budget", True), 2: _stop("plateau", False), 3: _stop("budget", True)}
    runs = []
    for method, base in (("cnn", 0.6), ("massl_alter", 0.7)):
        for rep, stop in endings.items():
            runs.append(write_run(tmp_path, "brats18", "50L70U", method, rep, [base, base + 0.1], stop=stop,
                                  final_dice=[base - 0.1, base]))
    cases, run_rows = aggregate.aggregate(runs)
    assert run_rows["mean_dice_final"].tolist() == pytest.approx([0.55] * 3 + [0.65] * 3)
    stats = compute_stats(cases, 0.4).set_index("method")
    row = stats.loc["massl_alter"]
    assert row["mean"] == pytest.approx(0.75) and row["mean_final"] == pytest.approx(0.65)
    assert (row["n_final"], row["n_stop_budget"], row["n_stop_plateau"], row["n_stop_unknown"]) == (3, 2, 1, 0)
    assert (row["n_still_improving"], row["still_improving_reps"]) == (2, "1,3")

    stats_tsv = tmp_path / "s.tsv"
    stats.reset_index().to_csv(stats_tsv, sep="\t", index=False)
    assert _cli("results", "--stats", stats_tsv, "--out-prefix", tmp_path / "t1", "--caption", "c") == 0
    extended = pd.read_csv(tmp_path / "t1_extended.csv")
    assert extended["n_still_improving"].tolist() == [2, 2]
    md = (tmp_path / "t1_extended.md").read_text()
    assert "| 50 (70) | MASSL(alter) | 0.7500 ± 0.0000* | 0.6500 ± 0.0000 | 3/3 | 1/2/0 | 2/3 (rep 1,3) |" in md


def test_runs_from_before_the_stopping_rule_read_as_not_recorded(tmp_path):
    runs = [write_run(tmp_path, "brats18", "50L70U", "cnn", rep, [0.6, 0.7]) for rep in (1, 2)]
    cases, run_rows = aggregate.aggregate(runs)
    assert cases["dice_final"].isna().all() and set(cases["stop_reason"]) == {""}
    assert run_rows["mean_dice_final"].isna().all()
    stats = compute_stats(cases, 0.4)
    row = stats.iloc[0]
    assert (row["n_final"], row["n_stop_unknown"], row["n_still_improving"]) == (0, 2, 0)
    header, rows = tables._extended_rows(tables.extended_table(stats), "cnn", "massl_alter")
    assert rows[0][3:7] == ["not recorded", "2/2", "not recorded", "not recorded"]
    # a statistics table written before the run-ending columns existed still renders
    old = stats.drop(columns=["mean_final", "sd_final", "n_final", "n_stop_plateau", "n_stop_budget",
                              "n_stop_diverged", "n_stop_unknown", "n_still_improving", "still_improving_reps"])
    path = tmp_path / "old.tsv"
    old.to_csv(path, sep="\t", index=False)
    assert tables.read_stats(path)["n_stop_unknown"].tolist() == [2]


def test_bad_stop_reason_is_refused_with_the_file_named(tmp_path):
    run = write_run(tmp_path, "brats18", "50L70U", "cnn", 1, [0.6], stop=_stop("patience", False))
    with pytest.raises(DataError, match=r"summary.json: stop_reason 'patience' is not one of plateau, budget"):
        aggregate.read_run(run)


def _probe_files(tmp_path, reasons=None, score="held_out", diverged=()):
    files = []
    for method in ("cnn", "mssl_alter", "massl_alter"):
        for rep in (1, 2):
            if (method, rep) in diverged:
                r = {level: [np.nan, np.nan] for level in range(1, 6)}
                files.append(write_probe(tmp_path, "brats18", "50L70U", method, rep, r,
                                         reasons={lv: "diverged" for lv in range(1, 6)}, score=score))
                continue
            r = {level: [0.3 + 0.01 * level, 0.32 + 0.01 * level] for level in range(1, 6)}
            files.append(write_probe(tmp_path, "brats18", "50L70U", method, rep, r, reasons=reasons, score=score))
    return files


def test_probe_level_with_a_reason_prints_a_dash_and_the_reason_never_a_number(tmp_path):
    reason = "under-determined: 64 samples for 256 features (< 10 per feature)"
    files = _probe_files(tmp_path, reasons={5: reason})
    summary = tables.probe_summary(tables.read_probe_files(files))
    level5 = summary[summary["level"] == 5]
    assert level5["mean"].isna().all() and level5["variance"].isna().all() and set(level5["reason"]) == {reason}
    assert set(summary["score"]) == {"held_out"} and set(summary["variance_kind"]) == {"within"}
    header, rows = tables.probe_rows(summary)
    assert [r[5] for r in rows] == ["–"] * 3 and rows[0][1] == "0.320 (0.000)"
    notes = tables.probe_notes(summary)
    assert f"–: level 5 gives no R² ({reason}; CNN, MSSL(alter), MASSL(alter))." in notes
    assert notes.startswith("Held-out R²")
    assert _cli("probe", "--probe-files", *files, "--out-prefix", tmp_path / "table3", "--caption", "Probe") == 0
    md = (tmp_path / "table3.md").read_text()
    assert "| MASSL(alter) | 0.320 (0.000) | 0.330 (0.000) | 0.340 (0.000) | 0.350 (0.000) | – |" in md
    assert reason in md


def test_probe_counts_a_diverged_model_as_in_tables_1_2(tmp_path):
    files = _probe_files(tmp_path, diverged={("mssl_alter", 2)})
    summary = tables.probe_summary(tables.read_probe_files(files), "pooled")
    mssl = summary[summary["method"] == "mssl_alter"]
    assert set(mssl["n_diverged"]) == {1} and set(mssl["n"]) == {2} and set(mssl["n_reps"]) == {2}
    assert mssl["mean"].to_numpy() == pytest.approx([0.31 + 0.01 * lv for lv in range(1, 6)])  # draws 0.30 and 0.32
    header, rows = tables.probe_rows(summary)
    assert rows[1][1:] == ["n.c."] * 5 and rows[0][1] != "n.c."
    assert "n.c.: a repetition's model diverged (MSSL(alter) 1 repetition(s))" in tables.probe_notes(summary)


def test_old_probe_files_read_as_in_sample_with_nan_for_diverged_models(tmp_path):
    files = [write_probe(tmp_path, "brats18", "50L70U", "cnn", 1, {1: [0.3, 0.5], 2: [0.4, 0.6]}),
             write_probe(tmp_path, "brats18", "50L70U", "cnn", 2, {1: [np.nan, np.nan], 2: [np.nan, np.nan]})]
    probe = tables.read_probe_files(files)
    assert set(probe["score"]) == {"in_sample"} and set(probe.loc[probe["rep"] == 2, "reason"]) == {"diverged"}
    summary = tables.probe_summary(probe)
    assert summary["mean"].to_numpy() == pytest.approx([0.4, 0.5]) and set(summary["n_diverged"]) == {1}
    assert tables.probe_notes(summary).startswith("In-sample R²")
    mixed = write_probe(tmp_path / "new", "brats18", "50L70U", "cnn", 3, {1: [0.3]}, score="held_out")
    with pytest.raises(DataError, match="mix score"):
        tables.read_probe_files([files[0], mixed])
