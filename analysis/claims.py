"""The paper's claims as a checklist, each with a verdict computed from a table of numbers.

The same checks run on our numbers and on the paper's printed values, so the report also shows
which claims the paper's own tables support under the stated criterion.

Input `cells`: one row per (table, setting, method) of Tables 1-2 with `value` (mean Dice),
`star` (significantly better than CNN: True/False, NaN when unknown) and `nc` (a repetition
diverged). Input `probe`: one row per (method, level) of Table 3 with `value` (mean R²), or None.

Rules shared by the checks: a claim's subject that did not converge fails the column; a rival
that did not converge counts as beaten (the paper reports non-convergence as a failure of that
method) and is named in the detail; a missing subject or rival makes the column NOT TESTABLE.
A claim is FAIL if any column fails, otherwise NOT TESTABLE if any column is, otherwise PASS.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.methods import label_of, setting_counts, sort_settings

PASS, FAIL, NOT_TESTABLE = "PASS", "FAIL", "NOT TESTABLE"


@dataclass
class Verdict:
    claim_id: str
    claim: str
    verdict: str
    detail: str


def _combine(outcomes: list[tuple[str, str]]) -> tuple[str, str]:
    """(verdict, detail) from per-column (verdict, text), failing columns listed first."""
    if not outcomes:
        return NOT_TESTABLE, "no column to test"
    verdicts = [v for v, _ in outcomes]
    verdict = FAIL if FAIL in verdicts else NOT_TESTABLE if NOT_TESTABLE in verdicts else PASS
    order = {FAIL: 0, NOT_TESTABLE: 1, PASS: 2}
    details = "; ".join(text for v, text in sorted(outcomes, key=lambda o: order[o[0]]))
    return verdict, f"holds in {verdicts.count(PASS)} of {len(verdicts)} comparisons: {details}"


def _columns(cells: pd.DataFrame):
    for table in sorted(cells["table"].unique()):
        here = cells[cells["table"] == table]
        for setting in sort_settings(here["setting"]):
            yield f"{table} {setting}", here[here["setting"] == setting].set_index("method")


def _beats(column: pd.DataFrame, name: str, subject: str, rivals: list[str]) -> tuple[str, str]:
    """Does `subject` have a higher mean than every rival of this column?"""
    missing = [m for m in [subject, *rivals] if m not in column.index]
    if missing:
        return NOT_TESTABLE, f"{name}: {', '.join(map(label_of, missing))} missing"
    if column.loc[subject, "nc"]:
        return FAIL, f"{name}: {label_of(subject)} did not converge"
    converged = [m for m in rivals if not column.loc[m, "nc"]]
    unconverged = [label_of(m) for m in rivals if column.loc[m, "nc"]]
    note = f" ({', '.join(unconverged)} n.c.)" if unconverged else ""
    mine = column.loc[subject, "value"]
    if not converged:
        return PASS, f"{name}: every rival n.c.{note}"
    top = column.loc[converged, "value"].idxmax()
    top_value = column.loc[top, "value"]
    ok = mine > top_value
    return (PASS if ok else FAIL), (f"{name}: {label_of(subject)} {mine:.4f} {'>' if ok else '≤'} "
                                    f"{label_of(top)} {top_value:.4f}{note}")


def best_in_every_column(cells: pd.DataFrame) -> tuple[str, str]:
    return _combine([_beats(col, name, "massl_alter", [m for m in col.index if m != "massl_alter"])
                     for name, col in _columns(cells)])


def beats_cnn_at_fewest_labels(cells: pd.DataFrame) -> tuple[str, str]:
    """Higher mean and significant (`*`) in the column with the fewest labeled scans of each table."""
    outcomes = []
    for table in sorted(cells["table"].unique()):
        here = cells[cells["table"] == table]
        setting = min(here["setting"].unique(), key=setting_counts)
        column = here[here["setting"] == setting].set_index("method")
        name = f"{table} {setting}"
        verdict, text = _beats(column, name, "massl_alter", ["cnn"])
        if verdict == PASS and column.loc["cnn", "nc"]:
            verdict, text = NOT_TESTABLE, f"{name}: CNN did not converge"
        elif verdict == PASS:
            star = column.loc["massl_alter", "star"]
            if pd.isna(star):
                verdict, text = NOT_TESTABLE, text + ", significance vs CNN unknown"
            elif not star:
                verdict, text = FAIL, text + ", but not significant (no *)"
            else:
                text += ", significant (*)"
        outcomes.append((verdict, text))
    return _combine(outcomes)


def alternating_beats_joint(cells: pd.DataFrame) -> tuple[str, str]:
    outcomes = []
    for name, col in _columns(cells):
        for family in ("mssl", "massl"):
            joint = [m for m in (f"{family}_l07", f"{family}_l09") if m in col.index]
            if not joint:
                outcomes.append((NOT_TESTABLE, f"{name}: no joint {family.upper()} run"))
                continue
            outcomes.append(_beats(col, name, f"{family}_alter", joint))
    return _combine(outcomes)


def attention_helps(cells: pd.DataFrame) -> tuple[str, str]:
    return _combine([_beats(col, name, "massl_alter", ["mssl_alter"]) for name, col in _columns(cells)])


def pretraining_decoder_does_not_beat_cnn(cells: pd.DataFrame) -> tuple[str, str]:
    """No column where Pretrain(Dec) is significantly better than CNN."""
    outcomes = []
    for name, col in _columns(cells):
        if "pretrain_dec" not in col.index or "cnn" not in col.index:
            outcomes.append((NOT_TESTABLE, f"{name}: Pretrain(Dec) or CNN missing"))
            continue
        row = col.loc["pretrain_dec"]
        if row["nc"]:
            outcomes.append((PASS, f"{name}: Pretrain(Dec) did not converge"))
        elif pd.isna(row["star"]):
            outcomes.append((NOT_TESTABLE, f"{name}: significance vs CNN unknown"))
        else:
            relation = f"{row['value']:.4f} vs CNN {col.loc['cnn', 'value']:.4f}"
            outcomes.append((FAIL, f"{name}: significantly better ({relation})") if row["star"]
                            else (PASS, f"{name}: not significantly better ({relation})"))
    return _combine(outcomes)


def deep_features_more_discriminative(probe: pd.DataFrame | None) -> tuple[str, str]:
    """MASSL(alter) has a higher mean probe R² than CNN at the deepest encoder level."""
    if probe is None or probe.empty:
        return NOT_TESTABLE, "no probe table"
    deepest = int(probe["level"].max())
    level = probe[probe["level"] == deepest].set_index("method")
    missing = [label_of(m) for m in ("massl_alter", "cnn") if m not in level.index]
    if missing:
        return NOT_TESTABLE, f"level {deepest}: {', '.join(missing)} missing"
    mine, cnn = level.loc["massl_alter", "value"], level.loc["cnn", "value"]
    extra = f"; MSSL(alter) {level.loc['mssl_alter', 'value']:.3f}" if "mssl_alter" in level.index else ""
    ok = mine > cnn
    return (PASS if ok else FAIL), (f"level {deepest}: MASSL(alter) R² {mine:.3f} {'>' if ok else '≤'} "
                                    f"CNN {cnn:.3f}{extra}")


CLAIMS = (
    ("best", "MASSL(alter) has the highest mean Dice in every column of Tables 1-2", best_in_every_column),
    ("fewest_labels", "MASSL(alter) is significantly better than CNN (*) with the fewest labeled scans",
     beats_cnn_at_fewest_labels),
    ("alternating", "Alternating training beats joint training (both λ) for MSSL and for MASSL in every column",
     alternating_beats_joint),
    ("attention", "Attention helps: MASSL(alter) beats MSSL(alter) in every column", attention_helps),
    ("pretrain_dec", "Pretraining the decoder alone (Pretrain(Dec)) is never significantly better than CNN",
     pretraining_decoder_does_not_beat_cnn),
)
PROBE_CLAIM = ("probe", ("Deeper encoder levels are more discriminative for MASSL(alter) than for CNN "
                         "(Table 3, deepest level)"))


def check_claims(cells: pd.DataFrame, probe: pd.DataFrame | None) -> list[Verdict]:
    verdicts = [Verdict(cid, text, *check(cells)) for cid, text, check in CLAIMS]
    verdicts.append(Verdict(*PROBE_CLAIM, *deep_features_more_discriminative(probe)))
    return verdicts
