"""The stopping rule on top of the budget (issue 13, item 1), the stop fields of summary.json and
the test of the final weights beside the best checkpoint (item 7).

The rule is tested on scripted score sequences, so the right answer is known; whole runs on the
tiny dataset of tiny_data.py get a fake validator that replays a script (the weights, the
training log and the test scores are real)."""

import csv
import json
import logging
import math

import pytest
import torch
from tiny_data import run_inputs, tiny_config, write_dataset
from test_training import Interrupted, interrupt_at

from massl.config import train_config
from massl.errors import ConfigError
from massl.training import loop, strategies
from massl.model.files import load_checkpoint, load_model
from massl.training.run import resolve_run, train_run
from massl.training.stopping import StoppingRule

torch.set_num_threads(1)


# The rule on scripted sequences ----------------------------------------------------------------

def replay(scores, every=10, **settings):
    """Feed `scores` (one validation each `every` iterations) to a rule; returns the rule and
    the iteration at which it would stop (None = never)."""
    rule = StoppingRule(**settings)
    for k, score in enumerate(scores, 1):
        rule.update(k * every, score)
        if rule.should_stop(k * every):
            return rule, k * every
    return rule, None


def test_plateau_stops_after_patience_validations_without_improvement_and_not_before():
    # improvements at validations 1, 2 and 4; then 5, 6, 7 do not beat 0.62
    scores = [0.5, 0.6, 0.6, 0.62, 0.61, 0.62, 0.3, 0.9]
    rule, stop = replay(scores, mode="plateau", patience=3)
    assert stop == 70
    assert (rule.reference, rule.last_improvement, rule.stale, rule.n_validations) == (0.62, 40, 3, 7)
    assert replay(scores, mode="plateau", patience=4)[1] is None  # the 0.9 at 80 comes in time
    assert replay(scores[:3], mode="plateau", patience=1)[1] == 30


def test_min_delta_counts_only_real_improvements_from_the_last_improving_score():
    # +0.005 steps: none beats the previous by 0.01, but 0.511 beats 0.5 (the reference) by more
    rule, stop = replay([0.5, 0.505, 0.511, 0.515, 0.52], mode="plateau", patience=2, min_delta=0.01)
    assert stop == 50 and rule.last_improvement == 30
    assert replay([0.5, 0.505, 0.511], mode="plateau", patience=2)[0].last_improvement == 30


def test_autoencoder_mse_is_lower_is_better_and_min_delta_is_relative():
    # min_delta 0.05: an MSE must fall below 95 % of the reference
    rule, stop = replay([0.010, 0.0099, 0.0089, 0.0086, 0.0087], mode="plateau", patience=2, min_delta=0.05,
                        higher_is_better=False)
    assert (rule.last_improvement, stop) == (30, 50)
    assert replay([0.010, 0.011, 0.012], mode="plateau", patience=2, higher_is_better=False)[1] == 30


def test_min_iterations_delays_the_stop():
    flat = [0.5] * 8
    assert replay(flat, mode="plateau", patience=2)[1] == 30
    assert replay(flat, mode="plateau", patience=2, min_iterations=55)[1] == 60
    assert replay(flat, mode="plateau", patience=2, min_iterations=81)[1] is None  # the budget ends first


def test_a_dice_stuck_at_zero_is_no_plateau():
    # all background: the run trains on to its budget instead of stopping as "converged"
    rule, stop = replay([0.0] * 6, mode="plateau", patience=3)
    assert stop is None and not rule.plateaued and rule.still_improving("budget")
    assert replay([0.0, 0.0, 0.3, 0.3, 0.3, 0.3], mode="plateau", patience=3)[1] == 60  # it left 0: plateau
    assert replay([0.02, 0.02, 0.02, 0.02], mode="plateau", patience=3)[1] == 40  # above 0 is a score
    # the autoencoder's MSE has no such state
    assert replay([0.0] * 4, mode="plateau", patience=3, higher_is_better=False)[1] == 40


def test_budget_mode_never_stops_and_nan_is_no_improvement():
    rule, stop = replay([0.5, float("nan"), 0.4], mode="budget", patience=2)
    assert stop is None and rule.plateaued and rule.stale == 2


@pytest.mark.parametrize("scores,reason,expected", [
    ([0.5, 0.6, 0.55, 0.58], "budget", True),  # best at one of the last 3 validations
    ([0.5, 0.6, 0.55, 0.58, 0.59], "budget", False),  # 3 validations without improvement
    ([0.5], "budget", True),
    ([], "budget", False),  # never validated: no evidence either way
    ([0.5, 0.6], "plateau", False),
    ([0.5, 0.6], "diverged", False),
])
def test_still_improving(scores, reason, expected):
    assert replay(scores, patience=3)[0].still_improving(reason) is expected


def test_rule_state_round_trips():
    rule, _ = replay([0.5, 0.7, 0.6], patience=5)
    other = StoppingRule(patience=5)
    other.load_state(json.loads(json.dumps(rule.state())))
    assert other == rule


def test_bad_stopping_settings_are_named():
    for bad, match in (({"stopping": "early"}, "training.stopping"), ({"min_delta": 1.0}, "training.min_delta"),
                       ({"patience_validations": 0}, "training.patience_validations"),
                       ({"min_iterations": -1}, "training.min_iterations"),
                       ({"case_sampling": "bootstrap"}, "training.case_sampling")):
        with pytest.raises(ConfigError, match=match):
            train_config(bad)


# Whole runs ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_dataset(root)
    return root


@pytest.fixture
def scripted(monkeypatch):
    """`scripted(scores)`: validations return `scores` in turn (the last one repeats); a single
    number is returned at every validation, which a resumed run replays alike."""
    def install(scores):
        scores = [scores] if isinstance(scores, float) else list(scores)
        calls = iter(range(10**6))
        monkeypatch.setattr(loop.Validator, "__call__", lambda self, model: scores[min(next(calls), len(scores) - 1)])
    return install


# validation every 2 iterations, a budget of 30
def run(results, out, method="cnn", on_iteration=None, **training):
    config = tiny_config(results, validate_every_iterations=2, **training)
    return train_run(resolve_run(config, "brats18", "2L2U", method, 1, out, **run_inputs(results)), device="cpu",
                     on_iteration=on_iteration)


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def dice_of(rows):
    return [float(r["dice"]) for r in rows]


def test_plateau_run_stops_says_why_and_tests_best_and_final(results, tmp_path, scripted, caplog):
    scripted([0.5, 0.6, 0.6, 0.6])  # best at iteration 4, then 2 validations without improvement
    with caplog.at_level(logging.INFO):
        summary = run(results, tmp_path / "plateau", stopping="plateau", patience_validations=2)
    assert "stopping at iteration 8: no validation improvement for 2 validations; best dice 0.6000 at 4" in caplog.text
    assert {k: summary[k] for k in ("status", "stop_reason", "iterations", "planned_iterations", "best_iteration",
                                    "final_iteration", "last_validation_iteration", "n_validations",
                                    "still_improving")} == {
        "status": "converged", "stop_reason": "plateau", "iterations": 8, "planned_iterations": 30,
        "best_iteration": 4, "final_iteration": 8, "last_validation_iteration": 8, "n_validations": 4,
        "still_improving": False}
    out = tmp_path / "plateau"
    assert [int(r["iteration"]) for r in read_tsv(out / "train_log.tsv")][-1] == 8
    best, final = read_tsv(out / "per_case.tsv"), read_tsv(out / "per_case_final.tsv")
    assert [r["case_id"] for r in best] == [r["case_id"] for r in final] == ["case06", "case07"]
    assert best[0].keys() == final[0].keys()
    assert dice_of(best) != dice_of(final)  # the weights of iterations 4 and 8 differ
    assert summary["mean_dice_final"] == pytest.approx(sum(dice_of(final)) / 2)
    assert summary["n_test_final"] == 2 and summary["mean_dice"] == pytest.approx(sum(dice_of(best)) / 2)
    assert load_model(out / "model.pt")[1]["best_iteration"] == 4  # model.pt stays the best checkpoint

    # The same 8 iterations with the best at the last one: per_case.tsv is what the final weights
    # score, per_case_final.tsv its copy; both equal the plateau run's final scores.
    scripted([0.1, 0.2, 0.3, 0.4])
    summary = run(results, tmp_path / "rising", max_iterations=8)
    assert (summary["stop_reason"], summary["best_iteration"], summary["still_improving"]) == ("budget", 8, True)
    rising = tmp_path / "rising"
    assert read_tsv(rising / "per_case_final.tsv") == read_tsv(rising / "per_case.tsv") == final
    assert (rising / "per_case_final.tsv").read_bytes() == (rising / "per_case.tsv").read_bytes()
    assert summary["mean_dice_final"] == summary["mean_dice"]


def test_min_iterations_and_the_budget_cap(results, tmp_path, scripted):
    scripted(0.5)  # never improves after the first validation
    summary = run(results, tmp_path / "late", stopping="plateau", patience_validations=2, min_iterations=11)
    assert (summary["stop_reason"], summary["iterations"], summary["n_validations"]) == ("plateau", 12, 6)
    scripted([k / 100 for k in range(1, 20)])  # always improving: the budget ends the run
    summary = run(results, tmp_path / "capped", stopping="plateau", patience_validations=2)
    assert (summary["stop_reason"], summary["iterations"], summary["still_improving"]) == ("budget", 30, True)
    assert (summary["best_iteration"], summary["last_validation_iteration"], summary["n_validations"]) == (30, 30, 15)


def test_budget_mode_trains_on_through_a_plateau(results, tmp_path, scripted):
    scripted(0.5)
    summary = run(results, tmp_path / "budget", patience_validations=2)
    assert (summary["stop_reason"], summary["iterations"], summary["best_iteration"]) == ("budget", 30, 2)
    assert summary["still_improving"] is False
    assert dice_of(read_tsv(tmp_path / "budget" / "per_case.tsv")) != dice_of(
        read_tsv(tmp_path / "budget" / "per_case_final.tsv"))


def test_diverged_run_has_the_same_nan_rows_for_best_and_final(results, tmp_path, monkeypatch, scripted):
    scripted([0.5, 0.4, 0.3])  # best at iteration 2; the last finite weights are those of 6
    calls = {"n": 0}
    dice = strategies.soft_dice_loss

    def nan_on_seventh_call(prob, target, **kwargs):
        calls["n"] += 1
        return dice(prob, target, **kwargs) * (float("nan") if calls["n"] == 7 else 1.0)

    monkeypatch.setattr(strategies, "soft_dice_loss", nan_on_seventh_call)
    summary = run(results, tmp_path / "diverged", stopping="plateau")
    assert (summary["status"], summary["stop_reason"], summary["still_improving"]) == ("diverged", "diverged", False)
    assert (summary["final_iteration"], summary["best_iteration"], summary["n_validations"]) == (6, 2, 3)
    out = tmp_path / "diverged"
    saved = json.loads((out / "summary.json").read_text())
    assert saved["mean_dice"] is None and saved["mean_dice_final"] is None and saved["n_test_final"] == 2
    final = read_tsv(out / "per_case_final.tsv")
    assert final == read_tsv(out / "per_case.tsv")
    assert all(r["status"] == "diverged" and r["dice"] == "NaN" for r in final)


def test_autoencoder_stops_on_its_validation_mse(results, tmp_path, scripted):
    scripted([0.5, 0.4, 0.45, 0.41])  # lower is better: best at iteration 4
    summary = run(results, tmp_path / "autoencoder", method="autoencoder", stopping="plateau", patience_validations=2)
    assert (summary["stop_reason"], summary["iterations"], summary["best_iteration"]) == ("plateau", 8, 4)
    assert (summary["val_mse"], summary["still_improving"], summary["n_validations"]) == (0.4, False, 4)
    assert summary["n_test_final"] == 0 and summary["mean_dice_final"] is None
    assert not (tmp_path / "autoencoder" / "per_case_final.tsv").exists()


def test_plateau_needs_validation_scans(results, tmp_path):
    split = json.loads((results / "splits" / "brats18" / "rep1.json").read_text())
    (results / "splits" / "brats18" / "rep2.json").write_text(json.dumps({**split, "rep": 2, "validation": []}))
    config = tiny_config(results, stopping="plateau")
    with pytest.raises(ConfigError, match="rep2.json has none"):
        train_run(resolve_run(config, "brats18", "2L2U", "cnn", 2, tmp_path / "x", **run_inputs(results, rep=2)),
                  device="cpu")


def run_files(out):
    summary = json.loads((out / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k != "wall_seconds"}
    log = [{k: v for k, v in row.items() if k != "seconds"} for row in read_tsv(out / "train_log.tsv")]
    return summary, log, read_tsv(out / "per_case.tsv"), read_tsv(out / "per_case_final.tsv")


@pytest.mark.parametrize("interrupt", [7, 8])
def test_interrupted_plateau_run_resumes_exactly(results, tmp_path, scripted, interrupt):
    """Killed mid-plateau (7: resumes from the checkpoint of iteration 5 with one stale
    validation counted) or right after stopping (8: goes straight to testing)."""
    scripted(0.5)  # the same score at every validation, before and after the resume
    settings = {"method": "massl_alter", "stopping": "plateau", "patience_validations": 3}
    run(results, tmp_path / "reference", **settings)
    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        run(results, out, on_iteration=interrupt_at(interrupt), **settings)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    if interrupt == 7:
        assert state["iteration"] == 5 and state["stop_reason"] is None and state["stopping"]["stale"] == 1
    else:
        assert state["iteration"] == 8 and state["stop_reason"] == "plateau"
    run(results, out, **settings)
    reference = run_files(tmp_path / "reference")
    assert reference[0]["stop_reason"] == "plateau" and reference[0]["iterations"] == 8
    assert run_files(out) == reference
    a, b = load_model(tmp_path / "reference" / "model.pt")[0].state_dict(), load_model(out / "model.pt")[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not math.isnan(reference[0]["mean_dice_final"])
