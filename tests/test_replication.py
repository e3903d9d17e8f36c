"""The replication report on hand-made result tables whose answers are known."""

import math
from pathlib import Path

import pandas as pd
import pytest
from analysis_fixtures import (
    IDEAL_MEANS,
    LIBRARY,
    OPTIONS,
    STATS,
    cases_like,
    ideal_stats,
    installed_method_table,
    probe_rows,
    resolved_config,
    stats_frame,
    write_config,
    write_probe,
)

from analysis import replication
from analysis.claims import FAILS, HOLDS, UNDETERMINED
from analysis.common import ConfigError, DataError, run_cli

pytestmark = pytest.mark.usefixtures("method_table")

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "config" / "paper_values.tsv"
TOLERANCE = {"tolerance_dice": 0.02, "tolerance_se": 2.0}


@pytest.fixture(scope="module")
def paper():
    with installed_method_table():  # module-scoped: before the tests' own method_table
        return replication.read_paper_values(PAPER)


def verdicts(result, side="ours"):
    claims = result.ours_claims if side == "ours" else result.paper_claims
    return {c.claim_id: c for c in claims}


def run(stats, paper, probe=None, tolerance=TOLERANCE, cases=None, options=OPTIONS):
    """The report's numbers; the case tables default to ones with each cell's mean and sd."""
    cases = [cases_like(s) for s in stats] if cases is None else cases
    return replication.replicate(stats, [f"stats{i}" for i in range(len(stats))], cases, paper, tolerance, probe,
                                 options)


def paper_stats(paper, dataset, shift=0.0, sd=0.01, **kwargs):
    """Our statistics = the paper's Table 1/2 values + `shift`, with the paper's * marks."""
    rows = paper[paper["dataset"] == dataset]
    rows = rows[rows["table"] != "table3"]
    means = {(r.setting, r.method): r.value + shift for r in rows.itertuples()}
    stars = {(r.setting, r.method) for r in rows.itertuples() if r.star}
    return stats_frame(means, dataset, stars=stars, sd=sd, **kwargs)


def test_paper_values_are_read_with_ids_levels_and_marks(paper):
    results = paper[paper["table"] != "table3"]
    assert len(results) == 54 and len(paper[paper["table"] == "table3"]) == 15
    assert results.groupby("table")["star"].sum().to_dict() == {"table1": 8, "table2": 3}
    cell = paper[(paper["table"] == "table1") & (paper["setting"] == "20L100U") & (paper["method"] == "massl_alter")]
    assert cell["value"].item() == 0.7553 and bool(cell["star"].item())
    probe = paper[(paper["table"] == "table3") & (paper["method"] == "massl_alter") & (paper["level"] == 5)]
    assert (probe["value"].item(), probe["spread"].item()) == (0.535, 0.03)


def test_all_claims_hold_on_an_ideal_result_table_with_little_noise(paper):
    result = run([ideal_stats("brats18", sd=0.002), ideal_stats("wmh17", sd=0.002)], paper, probe_rows())
    assert {cid: v.verdict for cid, v in verdicts(result).items()} == {
        "best": HOLDS, "fewest_labels": HOLDS, "alternating": HOLDS, "attention": HOLDS, "pretrain_dec": HOLDS,
        "probe": HOLDS}
    best = verdicts(result)["best"]
    assert best.detail.startswith("48 comparison(s): 48 holds.")
    # deciding comparison: the smallest margin, MASSL(alter) over MSSL(alter) (0.04)
    assert best.effect == pytest.approx(0.04) and 0 < best.low < 0.04 < best.high
    assert best.comparison == "table1 20L100U: MASSL(alter) − MSSL(alter)"


def test_the_same_table_with_repetition_noise_is_undetermined(paper):
    """The same means, but each method's repetition means spread by 0.03: differences of 0.01-0.04
    are within their uncertainty, so no claim holds and none is refuted."""
    result = run([ideal_stats("brats18", sd=0.03), ideal_stats("wmh17", sd=0.03)], paper,
                 probe_rows(spread=0.1))
    v = verdicts(result)
    assert {cid: c.verdict for cid, c in v.items()} == {
        "best": UNDETERMINED, "fewest_labels": HOLDS, "alternating": UNDETERMINED, "attention": UNDETERMINED,
        "pretrain_dec": UNDETERMINED, "probe": UNDETERMINED}
    assert v["attention"].low < 0 < v["attention"].high


def test_specific_claims_fail_and_name_the_column(paper):
    brats = ideal_stats("brats18", sd=0.002, stars={("50L70U", "massl_alter"), ("120L120U", "massl_alter"),
                                                    ("50L70U", "pretrain_dec")})
    wmh = ideal_stats("wmh17", sd=0.002)
    brats.loc[(brats["setting"] == "50L70U") & (brats["method"] == "pretrain_dec"), "mean"] = 0.65
    wmh.loc[(wmh["setting"] == "30L30U") & (wmh["method"] == "pretrain_cnn"), "mean"] = 0.80
    brats.loc[(brats["setting"] == "120L120U") & (brats["method"] == "massl_l09"), "mean"] = 0.75
    result = run([brats, wmh], paper, probe_rows({"cnn": 0.45, "mssl_alter": 0.47, "massl_alter": 0.40}))
    v = verdicts(result)

    assert v["best"].verdict == FAILS
    assert "table2 30L30U: MASSL(alter) − Pretrain(CNN): -0.1000 [" in v["best"].detail
    assert "table1 120L120U: MASSL(alter) − MASSL(λ=0.9): -0.0500 [" in v["best"].detail
    assert v["best"].comparison == "table2 30L30U: MASSL(alter) − Pretrain(CNN)" and v["best"].high < 0
    # ours use the interval, not the paired per-scan test behind the * mark; the mark is named
    assert v["fewest_labels"].verdict == HOLDS and "not marked *" in v["fewest_labels"].detail
    assert v["alternating"].verdict == FAILS
    assert "24 comparison(s): 23 holds, 1 does not hold" in v["alternating"].detail
    assert v["attention"].verdict == HOLDS
    assert v["pretrain_dec"].verdict == FAILS
    assert "table1 50L70U: CNN − Pretrain(Dec): -0.0400 [" in v["pretrain_dec"].detail
    assert v["probe"].verdict == FAILS and v["probe"].effect == pytest.approx(-0.05) and v["probe"].high < 0


def test_untestable_and_unconverged_claims(paper):
    brats = ideal_stats("brats18", sd=0.002, diverged={("20L100U", "massl_alter"), ("50L70U", "mssl_l07")})
    no_joint = ideal_stats("wmh17", sd=0.002)
    no_joint = no_joint[~no_joint["method"].isin(["mssl_l07", "mssl_l09"])]
    v = verdicts(run([brats, no_joint], paper, None))
    assert v["probe"].verdict == UNDETERMINED and v["probe"].detail.endswith("table3: no probe table")
    assert v["best"].verdict == FAILS and "table1 20L100U: MASSL(alter) − CNN: MASSL(alter) did not converge" \
        in v["best"].detail
    assert v["fewest_labels"].verdict == FAILS
    assert v["alternating"].verdict == FAILS  # MASSL(alter) failing 20L100U outweighs the missing joint MSSL
    assert "table2 10L20U: MSSL: no joint MSSL run" in v["alternating"].detail
    assert "MSSL(λ=0.7) n.c. (counts as beaten)" in v["alternating"].detail

    converged = ideal_stats("brats18", sd=0.002, diverged={("50L70U", "mssl_l07")})
    v = verdicts(run([converged, no_joint], paper, probe_rows()))
    assert v["alternating"].verdict == UNDETERMINED and v["best"].verdict == HOLDS


def test_paper_numbers_fail_only_the_strict_alternating_claim(paper):
    v = verdicts(run([ideal_stats("brats18")], paper, None), side="paper")
    assert {cid: c.verdict for cid, c in v.items()} == {
        "best": HOLDS, "fewest_labels": HOLDS, "alternating": FAILS, "attention": HOLDS, "pretrain_dec": HOLDS,
        "probe": HOLDS}
    # point verdicts: MSSL(alter) is below MSSL(λ=0.9) in three printed columns; no interval
    detail = v["alternating"].detail
    for column in ("table1 50L70U: MSSL(alter) − MSSL(λ=0.9): -0.0004",
                   "table1 120L120U: MSSL(alter) − MSSL(λ=0.9): -0.0107",
                   "table2 30L30U: MSSL(alter) − MSSL(λ=0.9): -0.0026"):
        assert column in detail
    assert "24 comparison(s): 21 holds, 3 does not hold" in detail
    assert v["alternating"].effect == pytest.approx(-0.0107) and math.isnan(v["alternating"].low)


def test_tolerance_is_the_larger_of_dice_points_and_standard_errors(paper):
    cases = [(0.03, 0.01, False),   # 2 SE = 2 * 0.01 / sqrt(5) = 0.0089 < 0.02: tolerance 0.02
             (0.03, 0.10, True),    # 2 SE = 0.0894 > 0.03
             (0.015, 0.01, True)]   # within 0.02
    for shift, sd, within in cases:
        compared = run([paper_stats(paper, "wmh17", shift=shift, sd=sd)], paper).compared
        assert len(compared) == 27
        assert compared["diff"].to_numpy() == pytest.approx([shift] * 27)
        expected_tolerance = max(0.02, 2 * sd / math.sqrt(5))
        assert compared["tolerance"].to_numpy() == pytest.approx([expected_tolerance] * 27)
        assert compared["within"].all() == within and compared["within"].any() == within


def test_rank_agreement_and_star_marks(paper):
    same = run([paper_stats(paper, "brats18", shift=-0.1)], paper)
    assert same.agreement["kendall_tau"].to_numpy() == pytest.approx([1.0, 1.0, 1.0])
    assert (same.agreement["star_agree"] == same.agreement["star_n"]).all()
    assert (same.compared["rank_paper"] == same.compared["rank_ours"]).all()

    flipped = paper_stats(paper, "brats18")
    flipped["mean"] = 1.5 - flipped["mean"]  # reverses every column's ordering
    flipped["mark_ref"] = ""
    result = run([flipped], paper)
    assert result.agreement["kendall_tau"].to_numpy() == pytest.approx([-1.0, -1.0, -1.0])
    twenty = result.agreement.set_index("setting").loc["20L100U"]
    assert (twenty["star_agree"], twenty["star_n"], twenty["stars_paper"]) == (7, 9, 2)


def test_origin_must_be_one_source_and_scale(paper):
    with pytest.raises(DataError, match="data_source"):
        run([ideal_stats("brats18"), ideal_stats("wmh17", data_source="real")], paper)
    with pytest.raises(DataError, match="scale"):
        run([ideal_stats("brats18"), ideal_stats("wmh17", scale="paper")], paper)
    with pytest.raises(DataError, match="same dataset"):
        run([ideal_stats("brats18"), ideal_stats("brats18")], paper)


def test_tolerance_and_options_come_from_the_resolved_config():
    assert replication.read_tolerance(resolved_config()) == TOLERANCE
    given = resolved_config(replication={"tolerance_dice": 0.05, "tolerance_se": 3})
    assert replication.read_tolerance(given) == {"tolerance_dice": 0.05, "tolerance_se": 3}
    with pytest.raises(ConfigError, match="unknown key.*tolerance"):
        replication.read_tolerance(resolved_config(replication={**TOLERANCE, "tolerance": 0.05}))
    with pytest.raises(DataError, match="config key 'replication.tolerance_se' is missing"):
        replication.read_tolerance(resolved_config(replication={"tolerance_dice": 0.05}), "c.json")
    assert replication.read_options(resolved_config()) == OPTIONS
    with pytest.raises(DataError, match="config key 'stats.claim_interval' is missing"):
        replication.read_options(resolved_config(stats={"alpha": 0.05}))
    with pytest.raises(ConfigError, match="stats.claim_interval 'bootstrap' is not one of corrected, t"):
        replication.read_options(resolved_config(stats={**STATS, "claim_interval": "bootstrap"}))


def test_paper_labels_map_to_the_ids_of_the_method_table():
    rows = [{**row, "label": "U-Net"} if row["id"] == "cnn" else row for row in LIBRARY["method_table"]]
    with installed_method_table(resolved_config(library={**LIBRARY, "method_table": rows})):
        with pytest.raises(DataError, match="unknown method label.*CNN"):
            replication.read_paper_values(PAPER)


def test_report_command_writes_all_outputs(tmp_path):
    stats, cases = [], []
    for dataset in ("brats18", "wmh17"):
        stats.append(tmp_path / f"{dataset}.tsv")
        cases.append(tmp_path / f"{dataset}_cases.tsv")
        ideal_stats(dataset, sd=0.002).to_csv(stats[-1], sep="\t", index=False)
        cases_like(ideal_stats(dataset, sd=0.002)).to_csv(cases[-1], sep="\t", index=False)
    rows = probe_rows()
    probe = [write_probe(tmp_path, "brats18", "50L70U", method, rep,
                         {lv: list(g["r2"]) for lv, g in here.groupby("level")}, score="held_out")
             for (method, rep), here in rows.groupby(["method", "rep"])]
    config = write_config(tmp_path / "config.json")
    out = tmp_path / "replication"
    code = run_cli(replication.build_parser(), ["--stats", *map(str, stats), "--cases", *map(str, cases),
                                                "--probe-files", *map(str, probe), "--paper", str(PAPER),
                                                "--config", str(config), "--out-dir", str(out)])
    assert code == 0
    md = (out / "report.md").read_text()
    assert "SYNTHETIC benchmark, scale 'smoke'" in md and "NOT a replication" in md
    for title in ("Table 1", "Table 2", "Table 3", "Kendall τ", "not printed in the extracted values"):
        assert title in md
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'class="banner"' in html and "<table>" in html
    assert (out / "paper_vs_ours.png").stat().st_size > 5000 and (out / "paper_vs_ours.pdf").stat().st_size > 1000
    checklist = pd.read_csv(out / "checklist.tsv", sep="\t")
    assert list(checklist["claim_id"]) == ["best", "fewest_labels", "alternating", "attention", "pretrain_dec",
                                           "probe"]
    assert set(checklist["verdict"]) == {HOLDS}
    assert (checklist["ci_low"] > 0).all() and (checklist["ci_low"] < checklist["effect"]).all()
    assert set(checklist["confidence"]) == {0.95} and set(checklist["interval"]) == {"corrected"}
    assert list(checklist["paper_point_verdict"]).count(FAILS) == 1 and checklist["paper_effect"].notna().all()
    assert "Runs still improving at their budget" in md and "Nadeau & Bengio" in md


def test_report_on_real_data_and_unmatched_settings(tmp_path, paper):
    means = {(s, m): v for s in ("4L8U", "20L100U") for m, v in IDEAL_MEANS.items()}
    stats = stats_frame(means, "brats18", stars={("4L8U", "massl_alter"), ("20L100U", "massl_alter")},
                        data_source="real", scale="paper")
    result = run([stats], paper, None)
    assert "table1: our setting(s) 4L8U have no paper value." in result.notes
    assert "table1: paper setting(s) 50L70U, 120L120U were not run." in result.notes
    assert set(result.compared["setting"]) == {"20L100U"}
    assert "table1 4L8U: MASSL(alter) − CNN: +0.0800 [" in verdicts(result)["fewest_labels"].detail
    from analysis.report import write_report
    write_report(tmp_path, result)
    md = (tmp_path / "report.md").read_text()
    assert "real BraTS 2018 / WMH 2017 data" in md and "SYNTHETIC" not in md
    assert "No cell of ours matches a cell of this table in the paper." in md  # Table 2 was not run
