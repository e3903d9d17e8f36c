"""Claim verdicts from repetitions: effect, interval and holds / does not hold / undetermined on
hand-made per-repetition values whose answer is known."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import claims
from analysis.claims import FAILS, HOLDS, UNDETERMINED, Evidence
from analysis.common import ConfigError
from analysis.stats import corrected_resampled_t_test, effect_interval

pytestmark = pytest.mark.usefixtures("method_table")

RATIO = 50 / 120  # n_test / n_train of the BraTS splits
D = [0.02, 0.04, 0.03, 0.05, 0.01]  # mean 0.03, var (ddof 1) 2.5e-4


def evidence(columns: dict, nc=(), ratio=RATIO, probe=None, probe_reps=None) -> Evidence:
    """Evidence from {(table, setting): {method: [value of rep 1, rep 2, ...]}}; a (table, setting,
    method) in `nc` did not converge."""
    cells, reps = [], []
    for (table, setting), methods in columns.items():
        for method, values in methods.items():
            cells.append({"table": table, "setting": setting, "method": method, "value": float(np.mean(values)),
                          "nc": (table, setting, method) in nc, "star": np.nan})
            reps += [{"table": table, "setting": setting, "method": method, "rep": r, "value": v}
                     for r, v in enumerate(values, 1)]
    return Evidence(pd.DataFrame(cells), pd.DataFrame(reps), probe, probe_reps,
                    {"table1": ratio, "table2": ratio, "table3": ratio})


def test_interval_by_hand_and_its_agreement_with_the_corrected_test():
    half = sps.t.ppf(0.975, 4) * math.sqrt((1 / 5 + RATIO) * 2.5e-4)
    mean, low, high = effect_interval(D, RATIO)
    assert (mean, low, high) == pytest.approx((0.03, 0.03 - half, 0.03 + half))
    assert low < 0 < high and corrected_resampled_t_test(D, RATIO) > 0.05  # contains 0 <=> not significant
    naive = effect_interval(D, RATIO, kind="t")  # ignores the overlap of training sets: narrower
    assert naive[1:] == pytest.approx((0.03 - sps.t.ppf(0.975, 4) * math.sqrt(0.2 * 2.5e-4),
                                       0.03 + sps.t.ppf(0.975, 4) * math.sqrt(0.2 * 2.5e-4)))
    assert naive[1] > 0
    shifted = np.array(D) + 0.03  # now significant: the interval excludes 0
    assert effect_interval(shifted, RATIO)[1] > 0 and corrected_resampled_t_test(shifted, RATIO) < 0.05
    assert math.isnan(effect_interval([0.05], RATIO)[1])  # one repetition: no interval
    with pytest.raises(ConfigError, match="interval"):
        effect_interval(D, RATIO, kind="bootstrap")


def _attention(subject, rival):
    return claims.combine(claims.attention_helps(evidence({("table1", "50L70U"): {"massl_alter": subject,
                                                                                  "mssl_alter": rival}})))


def test_clear_effect_holds_clear_opposite_does_not_small_noisy_one_is_undetermined():
    rival = [0.60, 0.62, 0.58, 0.61, 0.59]
    verdict, _, decider = _attention(list(np.array(rival) + 0.05 + np.array([0, 0.005, -0.005, 0.002, -0.002])),
                                     rival)
    assert verdict == HOLDS and decider.effect == pytest.approx(0.05) and decider.low > 0 and decider.n == 5
    verdict, _, decider = _attention(list(np.array(rival) - 0.05 + np.array([0, 0.005, -0.005, 0.002, -0.002])),
                                     rival)
    assert verdict == FAILS and decider.high < 0
    # a mean advantage of 0.01 with a spread of 0.05 between repetitions: within its uncertainty
    noisy = list(np.array(rival) + 0.01 + np.array([0.06, -0.05, 0.04, -0.06, 0.01]))
    verdict, detail, decider = _attention(noisy, rival)
    assert verdict == UNDETERMINED and decider.effect == pytest.approx(0.01) and decider.low < 0 < decider.high
    assert "1 undetermined" in detail


def test_the_corrected_interval_is_the_default_and_the_plain_t_one_is_an_option():
    rival = [0.6] * 5
    ev = evidence({("table1", "50L70U"): {"massl_alter": list(0.6 + np.array(D)), "mssl_alter": rival}})
    assert claims.combine(claims.attention_helps(ev))[0] == UNDETERMINED
    ev.interval = "t"
    assert claims.combine(claims.attention_helps(ev))[0] == HOLDS


def test_claims_over_several_columns_need_every_column():
    good = {"massl_alter": [0.70, 0.71, 0.69, 0.70, 0.70], "mssl_alter": [0.60, 0.61, 0.60, 0.59, 0.60]}
    tie = {"massl_alter": [0.70, 0.60, 0.65, 0.72, 0.58], "mssl_alter": [0.64, 0.66, 0.62, 0.65, 0.63]}
    bad = {"massl_alter": [0.50, 0.51, 0.49, 0.50, 0.50], "mssl_alter": [0.60, 0.61, 0.60, 0.59, 0.60]}
    both = evidence({("table1", "20L100U"): good, ("table1", "50L70U"): tie})
    verdict, detail, decider = claims.combine(claims.attention_helps(both))
    assert verdict == UNDETERMINED and decider.name == "table1 50L70U: MASSL(alter) − MSSL(alter)"
    assert detail.startswith("2 comparison(s): 1 holds, 1 undetermined.")
    three = evidence({("table1", "20L100U"): good, ("table1", "50L70U"): tie, ("table1", "120L120U"): bad})
    verdict, _, decider = claims.combine(claims.attention_helps(three))
    assert verdict == FAILS and decider.name.startswith("table1 120L120U") and decider.effect == pytest.approx(-0.1)


def test_non_convergence_and_missing_methods():
    values = {"massl_alter": [0.7] * 3, "mssl_alter": [0.6] * 3}
    subject_nc = evidence({("table1", "50L70U"): values}, nc={("table1", "50L70U", "massl_alter")})
    assert claims.attention_helps(subject_nc)[0].verdict == FAILS
    rival_nc = evidence({("table1", "50L70U"): values}, nc={("table1", "50L70U", "mssl_alter")})
    comparison = claims.attention_helps(rival_nc)[0]
    assert comparison.verdict == HOLDS and "counts as beaten" in comparison.note
    missing = evidence({("table1", "50L70U"): {"massl_alter": [0.7] * 3}})
    assert claims.attention_helps(missing)[0].verdict == UNDETERMINED
    one_rep = evidence({("table1", "50L70U"): {"massl_alter": [0.9], "mssl_alter": [0.1]}})
    comparison = claims.attention_helps(one_rep)[0]
    assert comparison.verdict == UNDETERMINED and "one repetition" in comparison.note


def test_pretrain_claim_holds_only_when_cnn_is_clearly_better():
    cnn = [0.60, 0.61, 0.59, 0.60, 0.60]
    below = evidence({("table1", "50L70U"): {"cnn": cnn, "pretrain_dec": list(np.array(cnn) - 0.05)}})
    assert claims.combine(claims.pretraining_decoder_below_cnn(below))[0] == HOLDS
    same = evidence({("table1", "50L70U"): {"cnn": cnn, "pretrain_dec": [0.61, 0.58, 0.60, 0.62, 0.59]}})
    assert claims.combine(claims.pretraining_decoder_below_cnn(same))[0] == UNDETERMINED  # no difference shown
    above = evidence({("table1", "50L70U"): {"cnn": cnn, "pretrain_dec": list(np.array(cnn) + 0.05)}})
    assert claims.combine(claims.pretraining_decoder_below_cnn(above))[0] == FAILS


def _probe(level_values: dict, reasons=None):
    """Probe summary and per-repetition rows from {(method, level): [R² of rep 1, ...]}."""
    reasons = reasons or {}
    summary = pd.DataFrame([{"method": m, "level": lv, "value": np.nan if lv in reasons else np.mean(v),
                             "reason": reasons.get(lv, ""), "n_diverged": 0} for (m, lv), v in level_values.items()])
    reps = pd.DataFrame([{"method": m, "level": lv, "rep": r, "value": x} for (m, lv), v in level_values.items()
                         if lv not in reasons for r, x in enumerate(v, 1)])
    return summary, reps


def test_probe_claim_uses_intervals_and_skips_refused_levels():
    # the demo: 0.949 against 0.947 at the deepest level, repetitions spread by ~0.01
    summary, reps = _probe({("massl_alter", 5): [0.955, 0.940, 0.960, 0.945, 0.945],
                            ("cnn", 5): [0.950, 0.935, 0.945, 0.955, 0.950]})
    (comparison,) = claims.deep_features_more_discriminative(evidence({}, probe=summary, probe_reps=reps))
    assert comparison.verdict == UNDETERMINED and comparison.effect == pytest.approx(0.002)

    reason = "under-determined: 64 samples for 256 features (< 10 per feature)"
    summary, reps = _probe({("massl_alter", 4): [0.55, 0.56, 0.54, 0.55, 0.55],
                            ("cnn", 4): [0.45, 0.46, 0.44, 0.45, 0.45],
                            ("massl_alter", 5): [0.9] * 5, ("cnn", 5): [0.9] * 5}, reasons={5: reason})
    (comparison,) = claims.deep_features_more_discriminative(evidence({}, probe=summary, probe_reps=reps))
    assert comparison.verdict == HOLDS and comparison.name == "table3 level 4: MASSL(alter) − CNN (R²)"
    assert f"level 5 skipped ({reason})" in comparison.note

    summary, reps = _probe({("massl_alter", 5): [0.9] * 5, ("cnn", 5): [0.9] * 5}, reasons={5: reason})
    (comparison,) = claims.deep_features_more_discriminative(evidence({}, probe=summary, probe_reps=reps))
    assert comparison.verdict == UNDETERMINED and "no level with a valid R²" in comparison.note


def test_point_values_get_point_verdicts_without_an_interval():
    cells = pd.DataFrame([{"table": "table1", "setting": "50L70U", "method": m, "value": v, "nc": False,
                           "star": np.nan} for m, v in (("massl_alter", 0.7710), ("mssl_alter", 0.7462))])
    (comparison,) = claims.attention_helps(Evidence(cells))
    assert comparison.verdict == HOLDS and comparison.effect == pytest.approx(0.0248) and math.isnan(comparison.low)
