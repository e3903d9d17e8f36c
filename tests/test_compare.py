"""analysis.compare on hand-made results folders whose answer is known."""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_fixtures import write_config

from analysis import compare
from analysis.stats import STATS_COLUMNS

pytestmark = pytest.mark.usefixtures("method_table")


def write_results(root, means, sds, n, verdicts):
    """A results folder with one full statistics table (`analysis.stats` columns) and a checklist."""
    (root / "stats").mkdir(parents=True)
    (root / "replication").mkdir()
    cells = pd.DataFrame({"setting": ["20L100U", "20L100U", "50L70U"], "method": ["cnn", "massl_alter", "cnn"],
                          "method_label": ["CNN", "MASSL(alter)", "CNN"], "mean": means, "sd": sds, "n_converged": n})
    constant = {"dataset": "brats18", "n_diverged": 0, "n_cases": 10, "reference": "cnn", "best": "massl_alter",
                "mark_ref": "", "mark_best": "", "mark_test": "paired", "alpha": 0.05, "test_train_ratio": 0.4,
                "data_source": "synthetic", "scale": "demo"}
    stats = cells.assign(n_reps=cells["n_converged"], **constant)
    stats = stats.reindex(columns=STATS_COLUMNS)  # the rest (final weights, stops, p-values): empty
    stats.to_csv(root / "stats" / "brats18.tsv", sep="\t", index=False)
    pd.DataFrame({"claim_id": ["best", "attention", "probe"], "claim": ["b", "a", "p"],
                  "verdict": verdicts}).to_csv(root / "replication" / "checklist.tsv", sep="\t", index=False)
    return root


def test_cells_move_at_the_standard_error_and_verdicts_flip_only_between_holds_and_not(tmp_path, capsys):
    # SE of the reference = sd / sqrt(4) = 0.01 in every cell with an sd
    ref = write_results(tmp_path / "a", [0.80, 0.85, 0.90], [0.02, 0.02, None], [4, 4, 1],
                        ["holds", "holds", "undetermined"])
    rerun = write_results(tmp_path / "b", [0.805, 0.835, 0.70], [0.02, 0.02, None], [4, 4, 1],
                          ["holds", "does not hold", "holds"])
    cells = compare.compare_cells(compare.read_stats(ref), compare.read_stats(rerun))
    assert list(cells["moved"].astype(object)) == [False, True, pd.NA]  # 0.005 < 0.01 <= 0.015; no SE
    assert cells["difference"].round(6).tolist() == [0.005, -0.015, -0.2]
    claims = compare.compare_claims(ref, rerun)
    assert claims.set_index("claim_id")["flipped"].to_dict() == {"best": False, "attention": True, "probe": False}

    out = tmp_path / "compare.md"
    config = write_config(tmp_path / "config.json")
    assert compare.run_cli(compare.build_parser(), ["--config", str(config), "--reference", str(ref),
                                                    "--rerun", str(rerun), "--out", str(out)]) == 0
    text = out.read_text()
    assert "**Cells:** 1 of 2 moved" in text and "**Claims:** 1 of 3 flipped" in text and "2 changed at all" in text
    assert text == capsys.readouterr().out


def test_a_folder_without_statistics_is_refused_by_name(tmp_path, capsys):
    ref = write_results(tmp_path / "a", [0.8, 0.8, 0.8], [0.1, 0.1, 0.1], [2, 2, 2], ["holds"] * 3)
    (tmp_path / "empty").mkdir()
    config = write_config(tmp_path / "config.json")
    code = compare.run_cli(compare.build_parser(), ["--config", str(config), "--reference", str(ref),
                                                    "--rerun", str(tmp_path / "empty")])
    assert code == 2
    assert f"{tmp_path / 'empty' / 'stats'}: no statistics TSVs" in capsys.readouterr().err
