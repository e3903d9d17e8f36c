"""Tables 1-3: shape, paper order and labels, marks, n.c., and the CSV/Markdown/LaTeX renderings."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import (
    LIBRARY,
    MARKS,
    METHOD_LABELS,
    PROBE,
    SETTINGS,
    cases_frame,
    ideal_stats,
    installed_method_table,
    resolved_config,
    stats_frame,
    write_config,
    write_probe,
    write_run,
)

from analysis import aggregate, methods, tables
from analysis.common import DataError, run_cli
from analysis.stats import compute_stats

pytestmark = pytest.mark.usefixtures("method_table")

PAPER_ROWS = ["CNN", "Pretrain(Dec)", "Pretrain(CNN)", "MSSL(λ=0.7)", "MSSL(λ=0.9)", "MSSL(alter)",
              "MASSL(λ=0.7)", "MASSL(λ=0.9)", "MASSL(alter)"]
# The colour of each method before the method table came from the config: kept, by row position.
COLOURS = {"cnn": "#332288", "pretrain_dec": "#88CCEE", "pretrain_cnn": "#44AA99", "mssl_l07": "#117733",
           "mssl_l09": "#999933", "mssl_alter": "#DDCC77", "massl_l07": "#CC6677", "massl_l09": "#882255",
           "massl_alter": "#AA4499", "mean_teacher": "#000000", "cps": "#888888"}


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "config.json")


def _cli(config, sub, *args) -> int:
    return run_cli(tables.build_parser(), [sub, "--config", str(config), *map(str, args)])


def test_method_table_comes_from_the_config_library_section(tmp_path):
    table = methods.load_library(write_config(tmp_path / "config.json"))
    assert table.labels == {row["id"]: row["label"] for row in LIBRARY["method_table"]}
    assert list(table.labels.values()) == [*PAPER_ROWS, "Mean Teacher", "CPS"]  # the baselines beyond the paper last
    with installed_method_table():
        assert list(methods.method_labels().items())[:9] == list(METHOD_LABELS.items())
        assert methods.method_ids() == list(COLOURS)
        assert {m: methods.colour_of(m) for m in COLOURS} == COLOURS
        assert methods.methods_with_reconstruction("attention") == ["massl_l07", "massl_l09", "massl_alter"]
        assert methods.id_of("MASSL(alter)") == "massl_alter" and methods.method_rank("mssl_l07") == 3
        with pytest.raises(DataError, match="unknown method id 'unet'"):
            methods.label_of("unet")


def test_a_twelfth_method_reuses_the_first_colour_and_other_tables_are_followed():
    rows = [{**row, "id": f"m{i}", "label": f"M{i}"} for i, row in enumerate(LIBRARY["method_table"] * 2)][:12]
    library = {**LIBRARY, "method_table": rows[::-1], "setting_pattern": r"^L(\d+)_U(\d+)$"}
    with installed_method_table(resolved_config(library=library)) as table:
        assert methods.method_ids() == [f"m{i}" for i in range(11, -1, -1)]
        assert table.colours["m11"] == table.colours["m0"] == COLOURS["cnn"]
        assert len({table.colours[f"m{i}"] for i in range(11)}) == 11
        assert methods.sort_settings(["L20_U5", "L3_U9"]) == ["L3_U9", "L20_U5"]
        assert methods.setting_header("L3_U9") == "3 (9)"


def test_lookups_without_a_method_table_name_the_missing_config(tmp_path, capsys):
    previous = methods.install(None)
    try:
        for lookup in (lambda: methods.label_of("cnn"), lambda: methods.sort_settings(["50L70U"]),
                       methods.method_ids):
            with pytest.raises(DataError, match="no method table loaded: pass --config"):
                lookup()
    finally:
        methods.install(previous)
    bare = tmp_path / "old_config.json"
    bare.write_text('{"scale": "smoke"}')
    with pytest.raises(DataError, match="no 'library' section"):
        methods.load_library(bare)
    broken = write_config(tmp_path / "broken.json", library={**LIBRARY, "method_table": [{"id": "cnn"}]})
    with pytest.raises(DataError, match="row 1 lacks label"):
        methods.load_library(broken)
    stats_tsv = tmp_path / "stats.tsv"
    ideal_stats("wmh17").to_csv(stats_tsv, sep="\t", index=False)
    assert _cli(bare, "results", "--stats", stats_tsv, "--out-prefix", tmp_path / "t", "--caption", "c") == 2
    assert "no 'library' section" in capsys.readouterr().err


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
    stats = compute_stats(cases_frame(cells, diverged={("20L100U", "massl_l07", 3)}), 0.4, **MARKS)
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


def test_results_command_writes_csv_markdown_and_latex(tmp_path, config):
    stats_tsv = tmp_path / "stats.tsv"
    ideal_stats("wmh17").to_csv(stats_tsv, sep="\t", index=False)
    done = _cli(config, "results", "--stats", stats_tsv, "--out-prefix", tmp_path / "t" / "table2",
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


def test_results_command_selects_and_rejects_methods_and_settings(tmp_path, config, capsys):
    stats_tsv = tmp_path / "stats.tsv"
    ideal_stats("brats18").to_csv(stats_tsv, sep="\t", index=False)
    done = _cli(config, "results", "--stats", stats_tsv, "--out-prefix", tmp_path / "sel", "--caption", "c",
                "--methods", "massl_alter,cnn", "--settings", "120L120U,20L100U")
    assert done == 0
    csv = pd.read_csv(tmp_path / "sel.csv", index_col=0)
    assert list(csv.index) == ["MASSL(alter)", "CNN", tables.SD_ROW]
    assert list(csv.columns) == ["120 (120)", "20 (100)"]
    done = _cli(config, "results", "--stats", stats_tsv, "--out-prefix", tmp_path / "bad", "--caption", "c",
                "--methods", "cnn,unet")
    assert done == 2 and "unet" in capsys.readouterr().err and not (tmp_path / "bad.csv").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_tables_compile(tmp_path, config):
    stats = stats_frame({(s, m): 0.6 for s in SETTINGS["brats18"] for m in METHOD_LABELS}, "brats18",
                        stars={("20L100U", "massl_alter")}, daggers={("20L100U", "cnn")},
                        diverged={("50L70U", "mssl_l07")})
    stats.to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    assert _cli(config, "results", "--stats", tmp_path / "s.tsv", "--out-prefix", tmp_path / "table1",
                "--caption", "BraTS18 results (λ, *, †, 50%)") == 0
    document = (r"\documentclass{article}\usepackage{booktabs}\usepackage[margin=1cm,landscape]{geometry}"
                r"\begin{document}\input{table1.tex}\input{table1_extended.tex}\end{document}")
    (tmp_path / "doc.tex").write_text(document)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_probe_table_mean_and_variance_by_hand(tmp_path, config):
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

    assert _cli(config, "probe", "--probe-files", *files, "--out-prefix", tmp_path / "table3",
                "--caption", "Probe") == 0
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
    stats = compute_stats(cases_frame(cells, diverged={("20L100U", "massl_l07", 2)}), 0.4, **MARKS)
    assert stats.set_index("method").loc["massl_alter", "sd"] == pytest.approx(0.04)
    table = tables.results_table(stats)
    assert table.loc[tables.SD_ROW, "20 (100)"] == "0.0200"
    assert table.loc["MASSL(λ=0.7)", "20 (100)"] == "n.c."


def _stop(reason, improving):
    return {"stop_reason": reason, "still_improving": improving, "last_validation_iteration": 40,
            "n_validations": 4, "final_iteration": 40, "mean_dice_final": None, "n_test_final": 3}


def test_extended_table_shows_final_weights_stop_reasons_and_still_improving_runs(tmp_path, config):
    endings = {1: _stop("budget", True), 2: _stop("plateau", False), 3: _stop("budget", True)}
    runs = []
    for method, base in (("cnn", 0.6), ("massl_alter", 0.7)):
        for rep, stop in endings.items():
            runs.append(write_run(tmp_path, "brats18", "50L70U", method, rep, [base, base + 0.1], stop=stop,
                                  final_dice=[base - 0.1, base]))
    cases, run_rows = aggregate.aggregate(runs)
    assert run_rows["mean_dice_final"].tolist() == pytest.approx([0.55] * 3 + [0.65] * 3)
    stats = compute_stats(cases, 0.4, **MARKS).set_index("method")
    row = stats.loc["massl_alter"]
    assert row["mean"] == pytest.approx(0.75) and row["mean_final"] == pytest.approx(0.65)
    assert (row["n_final"], row["n_stop_budget"], row["n_stop_plateau"], row["n_stop_unknown"]) == (3, 2, 1, 0)
    assert (row["n_still_improving"], row["still_improving_reps"]) == (2, "1,3")

    stats_tsv = tmp_path / "s.tsv"
    stats.reset_index().to_csv(stats_tsv, sep="\t", index=False)
    assert _cli(config, "results", "--stats", stats_tsv, "--out-prefix", tmp_path / "t1", "--caption", "c") == 0
    extended = pd.read_csv(tmp_path / "t1_extended.csv")
    assert extended["n_still_improving"].tolist() == [2, 2]
    md = (tmp_path / "t1_extended.md").read_text()
    assert "| 50 (70) | MASSL(alter) | 0.7500 ± 0.0000* | 0.6500 ± 0.0000 | 3/3 | 1/2/0 | 2/3 (rep 1,3) |" in md


def test_runs_from_before_the_stopping_rule_read_as_not_recorded(tmp_path):
    runs = [write_run(tmp_path, "brats18", "50L70U", "cnn", rep, [0.6, 0.7]) for rep in (1, 2)]
    cases, run_rows = aggregate.aggregate(runs)
    assert cases["dice_final"].isna().all() and set(cases["stop_reason"]) == {""}
    assert run_rows["mean_dice_final"].isna().all()
    stats = compute_stats(cases, 0.4, **MARKS)
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


def test_probe_level_with_a_reason_prints_a_dash_and_the_reason_never_a_number(tmp_path, config):
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
    assert _cli(config, "probe", "--probe-files", *files, "--out-prefix", tmp_path / "table3",
                "--caption", "Probe") == 0
    md = (tmp_path / "table3.md").read_text()
    assert "| MASSL(alter) | 0.320 (0.000) | 0.330 (0.000) | 0.340 (0.000) | 0.350 (0.000) | – |" in md
    assert reason in md


def test_probe_caption_is_built_from_the_config_probe_section(tmp_path):
    files = _probe_files(tmp_path)
    config = write_config(tmp_path / "config.json", repetitions=2,
                          probe={**PROBE, "n_draws": 3, "n_images": 4, "variance": "pooled"})
    assert _cli(config, "probe", "--probe-files", *files, "--out-prefix", tmp_path / "table3") == 0
    # the caption workflow/rules/common.smk passed with --caption before issue 16, byte for byte
    caption = ("R² (held-out) of a linear regression from each encoder level's features to the down-sampled "
               "ground truth (brats18, 50L70U): mean over 3 draws of 4 test images and 2 repetitions (variance: "
               "over all draws of all repetitions)")
    md = (tmp_path / "table3.md").read_text()
    assert md.startswith(f"**{caption}**\n") and "mean (variance over all draws of all repetitions)" in md
    assert set(pd.read_csv(tmp_path / "table3.csv")["variance_kind"]) == {"pooled"}
    within = caption.replace("over all draws of all repetitions)",
                             "over the draws within a repetition, averaged over repetitions)")
    assert tables.probe_caption(resolved_config(repetitions=2, probe={**PROBE, "n_draws": 3, "n_images": 4}),
                                "within") == within
    # --variance overrides the config's, in the caption as in the notes; --caption overrides the caption
    assert _cli(config, "probe", "--probe-files", *files, "--out-prefix", tmp_path / "t3", "--variance", "within") == 0
    md = (tmp_path / "t3.md").read_text()
    assert md.startswith(f"**{within}**\n") and "mean (variance over the draws within each repetition, " in md
    assert _cli(config, "probe", "--probe-files", *files, "--out-prefix", tmp_path / "t3", "--caption", "Mine") == 0
    assert (tmp_path / "t3.md").read_text().startswith("**Mine**\n")


def test_probe_caption_refuses_probe_files_of_another_setting_and_an_incomplete_probe_section(tmp_path, capsys):
    files = _probe_files(tmp_path)
    other = write_config(tmp_path / "other.json", probe={**PROBE, "setting": "20L100U"})
    assert _cli(other, "probe", "--probe-files", *files, "--out-prefix", tmp_path / "table3") == 2
    assert "the config's probe.setting is '20L100U'" in capsys.readouterr().err
    assert not (tmp_path / "table3.md").exists()
    partial = write_config(tmp_path / "partial.json", probe={k: v for k, v in PROBE.items() if k != "n_draws"})
    assert _cli(partial, "probe", "--probe-files", *files, "--out-prefix", tmp_path / "table3") == 2
    assert "config key 'probe.n_draws' is missing" in capsys.readouterr().err


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
