"""The paper's claims as a checklist, each with an effect, its interval and a verdict.

Every claim is a set of comparisons "subject beats rival" in named columns (Tables 1-2) or at an
encoder level (Table 3). A comparison's effect is subject − rival in the claimed direction, so a
positive effect supports the claim.

On our numbers (`Evidence` with per-repetition values) the effect is the mean over repetitions of
the per-repetition difference of the two methods' mean Dice (repetitions where both converged),
with a two-sided interval at `confidence` from `analysis.stats.effect_interval` (by default the
Nadeau-Bengio corrected one: the repetitions' training sets overlap, so a plain t interval over
repetitions is too narrow). The verdict is `holds` when the interval lies above 0, `does not
hold` when it lies below 0, and `undetermined` when it contains 0 (or cannot be computed, e.g.
one repetition): a difference smaller than its uncertainty never counts as holding.

On the paper's printed values (`Evidence` without repetitions) there is no interval: each
comparison gets a point verdict, `holds` when the effect is > 0, else `does not hold`, and
`fewest_labels` also needs the paper's `*`.

Shared rules: a subject that did not converge (a diverged repetition, `n.c.`) does not hold in
that column; a rival that did not converge counts as beaten (the paper reports non-convergence as
a failure of that method) and is named; a missing subject or rival leaves the comparison
undetermined. A claim over several comparisons does not hold if any comparison does not hold,
else is undetermined if any is, else holds (every comparison must hold); its reported effect and
interval are those of the deciding comparison, the one with the smallest effect among those with
the claim's verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.common import NOT_CONVERGED
from analysis.methods import label_of, setting_counts, sort_settings
from analysis.stats import effect_interval

HOLDS, FAILS, UNDETERMINED = "holds", "does not hold", "undetermined"
VERDICTS = (HOLDS, FAILS, UNDETERMINED)
NAN = float("nan")


@dataclass
class Evidence:
    """What the claims are checked on.

    `cells`: one row per (table, setting, method) with `value` (mean Dice), `nc` (a repetition
    diverged) and `star` (significantly better than CNN; NaN when unknown). `reps`: one row per
    (table, setting, method, rep) of converged repetitions with `value`; None for point values.
    `probe`: Table 3 per (method, level) with `value`, `reason` (non-empty = no valid R²) and
    `n_diverged`; `probe_reps` its per-repetition values. `ratio`: n_test / n_train per table
    (and "table3") for the corrected interval.
    """

    cells: pd.DataFrame
    reps: pd.DataFrame | None = None
    probe: pd.DataFrame | None = None
    probe_reps: pd.DataFrame | None = None
    ratio: dict = field(default_factory=dict)
    confidence: float = 0.95
    interval: str = "corrected"

    @property
    def point(self) -> bool:
        return self.reps is None


@dataclass
class Comparison:
    name: str
    verdict: str
    effect: float = NAN
    low: float = NAN
    high: float = NAN
    n: int = 0
    note: str = ""

    def text(self) -> str:
        if math.isnan(self.effect):
            return f"{self.name}: {self.note}"
        bounds = "" if math.isnan(self.low) else f" [{self.low:+.4f}, {self.high:+.4f}], {self.n} reps"
        note = f", {self.note}" if self.note else ""
        return f"{self.name}: {self.effect:+.4f}{bounds}{note}"


@dataclass
class Verdict:
    claim_id: str
    claim: str
    verdict: str
    detail: str
    effect: float = NAN
    low: float = NAN
    high: float = NAN
    comparison: str = ""


def interval_verdict(low: float, high: float) -> str:
    if low > 0:
        return HOLDS
    if high < 0:
        return FAILS
    return UNDETERMINED  # contains 0, or NaN bounds


def _difference(evidence: Evidence, name: str, here: pd.DataFrame, subject: str, rival: str,
                ratio: float, what: str = "") -> Comparison:
    """The comparison of two rows of `here` (indexed by method, columns value [, nc]), with the
    per-repetition values `reps` of that column (index rep, columns = methods)."""
    label = f"{name}: {label_of(subject)} − {label_of(rival)}{what}"
    effect = here.loc[subject, "value"] - here.loc[rival, "value"]
    if evidence.point:
        return Comparison(label, HOLDS if effect > 0 else FAILS, effect)
    reps = here.attrs["reps"]
    both = reps[[subject, rival]].dropna() if {subject, rival} <= set(reps.columns) else reps.iloc[:0, :0]
    if both.empty:
        return Comparison(label, UNDETERMINED, note="no repetition with both values")
    d = both[subject] - both[rival]
    mean, low, high = effect_interval(d, ratio, evidence.confidence, evidence.interval)
    note = "" if len(d) >= 2 else "one repetition: no interval"
    return Comparison(label, interval_verdict(low, high), mean, low, high, len(d), note)


def _beats(evidence: Evidence, name: str, column: pd.DataFrame, subject: str, rival: str, ratio: float) -> Comparison:
    """`subject` beats `rival` in this column (Tables 1-2), with the n.c. and missing rules."""
    missing = [m for m in (subject, rival) if m not in column.index]
    label = f"{name}: {label_of(subject)} − {label_of(rival)}"
    if missing:
        return Comparison(label, UNDETERMINED, note=f"{', '.join(map(label_of, missing))} missing")
    if column.loc[subject, "nc"]:
        return Comparison(label, FAILS, note=f"{label_of(subject)} did not converge")
    if column.loc[rival, "nc"]:
        return Comparison(label, HOLDS, note=f"{label_of(rival)} {NOT_CONVERGED} (counts as beaten)")
    return _difference(evidence, name, column, subject, rival, ratio)


def _columns(evidence: Evidence):
    """(name, column rows indexed by method, ratio) per column of Tables 1-2; the column's
    per-repetition values (index rep, columns method) ride along in `.attrs["reps"]`."""
    cells = evidence.cells
    for table in sorted(cells["table"].unique()):
        here = cells[cells["table"] == table]
        for setting in sort_settings(here["setting"]):
            yield _column(evidence, table, setting)


def _column(evidence: Evidence, table: str, setting: str):
    cells = evidence.cells
    column = cells[(cells["table"] == table) & (cells["setting"] == setting)].set_index("method")
    if not evidence.point:
        reps = evidence.reps[(evidence.reps["table"] == table) & (evidence.reps["setting"] == setting)]
        column.attrs["reps"] = reps.pivot_table(index="rep", columns="method", values="value")
    return f"{table} {setting}", column, evidence.ratio.get(table, NAN)


def combine(comparisons: list[Comparison]) -> tuple[str, str, Comparison | None]:
    """(verdict, detail, deciding comparison) of a claim from its comparisons."""
    if not comparisons:
        return UNDETERMINED, "no comparison to make", None
    verdicts = [c.verdict for c in comparisons]
    verdict = FAILS if FAILS in verdicts else UNDETERMINED if UNDETERMINED in verdicts else HOLDS
    deciding = [c for c in comparisons if c.verdict == verdict]
    decider = min(deciding, key=lambda c: (math.isnan(c.effect), 0.0 if math.isnan(c.effect) else c.effect))
    order = {FAILS: 0, UNDETERMINED: 1, HOLDS: 2}
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in VERDICTS if v in verdicts)
    details = "; ".join(c.text() + ("" if c.verdict == verdict else f" ({c.verdict})")
                        for c in sorted(comparisons, key=lambda c: order[c.verdict]))
    return verdict, f"{len(comparisons)} comparison(s): {counts}. {details}", decider


def best_in_every_column(evidence: Evidence) -> list[Comparison]:
    return [_beats(evidence, name, col, "massl_alter", rival, ratio)
            for name, col, ratio in _columns(evidence) for rival in col.index if rival != "massl_alter"]


def beats_cnn_at_fewest_labels(evidence: Evidence) -> list[Comparison]:
    """MASSL(alter) − CNN in the column with the fewest labeled scans of each table. Point
    values (the paper) also need the printed `*`; ours use the interval (the `*` is named)."""
    out = []
    for table in sorted(evidence.cells["table"].unique()):
        here = evidence.cells[evidence.cells["table"] == table]
        name, column, ratio = _column(evidence, table, min(here["setting"].unique(), key=setting_counts))
        comparison = _beats(evidence, name, column, "massl_alter", "cnn", ratio)
        if "massl_alter" in column.index and not math.isnan(comparison.effect):
            star = column.loc["massl_alter", "star"]
            mark = "significance vs CNN unknown" if pd.isna(star) else "marked *" if star else "not marked *"
            comparison.note = ", ".join(filter(None, [comparison.note, mark]))
            if evidence.point and comparison.verdict == HOLDS and not star:
                comparison.verdict = FAILS
        out.append(comparison)
    return out


def alternating_beats_joint(evidence: Evidence) -> list[Comparison]:
    out = []
    for name, col, ratio in _columns(evidence):
        for family in ("mssl", "massl"):
            joint = [m for m in (f"{family}_l07", f"{family}_l09") if m in col.index]
            if not joint:
                out.append(Comparison(f"{name}: {family.upper()}", UNDETERMINED, note=f"no joint {family.upper()} run"))
            out += [_beats(evidence, name, col, f"{family}_alter", rival, ratio) for rival in joint]
    return out


def attention_helps(evidence: Evidence) -> list[Comparison]:
    return [_beats(evidence, name, col, "massl_alter", "mssl_alter", ratio) for name, col, ratio in _columns(evidence)]


def pretraining_decoder_below_cnn(evidence: Evidence) -> list[Comparison]:
    """CNN − Pretrain(Dec) > 0 in every column. On point values (the paper) the column holds
    unless Pretrain(Dec) is marked * (the paper's reading: never significantly better)."""
    out = []
    for name, col, ratio in _columns(evidence):
        if evidence.point and {"cnn", "pretrain_dec"} <= set(col.index) and not col.loc["pretrain_dec", "nc"]:
            star = col.loc["pretrain_dec", "star"]
            effect = col.loc["cnn", "value"] - col.loc["pretrain_dec", "value"]
            out.append(Comparison(f"{name}: CNN − Pretrain(Dec)", FAILS if star else HOLDS, effect,
                                  note="Pretrain(Dec) marked *" if star else "Pretrain(Dec) not marked *"))
        else:
            out.append(_beats(evidence, name, col, "cnn", "pretrain_dec", ratio))
    return out


def deep_features_more_discriminative(evidence: Evidence) -> list[Comparison]:
    """MASSL(alter) − CNN probe R² at the deepest level where both have a valid R² (point values:
    the deepest level). Levels refused for a reason are skipped and named."""
    probe = evidence.probe
    if probe is None or probe.empty:
        return [Comparison("table3", UNDETERMINED, note="no probe table")]
    pair = probe[probe["method"].isin(["massl_alter", "cnn"])]
    if pair["method"].nunique() < 2:
        missing = {"massl_alter", "cnn"} - set(pair["method"])
        return [Comparison("table3", UNDETERMINED, note=f"{', '.join(map(label_of, sorted(missing)))} missing")]
    pair = pair.assign(reason=pair["reason"].fillna("") if "reason" in pair else "")  # the paper gives none
    refused = pair[pair["reason"] != ""].groupby("level")["reason"].first()
    valid_levels = sorted(set(pair.loc[pair["reason"] == "", "level"]) - set(refused.index))
    deepest = max(valid_levels, default=0)
    skipped = "; ".join(f"level {int(lv)} skipped ({r})" for lv, r in refused.items() if lv > deepest)
    if not valid_levels:
        return [Comparison("table3", UNDETERMINED, note=f"no level with a valid R²: {skipped}")]
    level = int(valid_levels[-1])
    here = pair[pair["level"] == level].set_index("method")
    name = f"table3 level {level}"
    if not evidence.point:
        reps = evidence.probe_reps
        reps = reps[reps["level"] == level]
        here.attrs["reps"] = reps.pivot_table(index="rep", columns="method", values="value")
    comparison = _difference(evidence, name, here, "massl_alter", "cnn", evidence.ratio.get("table3", NAN), " (R²)")
    diverged = [f"{label_of(m)} {int(n)}" for m, n in here.get("n_diverged", pd.Series(dtype=float)).items() if n > 0]
    extra = [skipped, f"diverged repetitions left out: {', '.join(diverged)}" if diverged else ""]
    comparison.note = ", ".join(filter(None, [comparison.note, *extra]))
    return [comparison]


CLAIMS = (
    ("best", "MASSL(alter) has the highest mean Dice in every column of Tables 1-2", best_in_every_column),
    ("fewest_labels", "MASSL(alter) is better than CNN with the fewest labeled scans (the paper: significantly, *)",
     beats_cnn_at_fewest_labels),
    ("alternating", "Alternating training beats joint training (both λ) for MSSL and for MASSL in every column",
     alternating_beats_joint),
    ("attention", "Attention helps: MASSL(alter) beats MSSL(alter) in every column", attention_helps),
    ("pretrain_dec", "Pretraining the decoder alone (Pretrain(Dec)) does not beat CNN in any column "
                     "(ours: CNN − Pretrain(Dec) > 0; the paper's numbers: never marked *)",
     pretraining_decoder_below_cnn),
    ("probe", "Deeper encoder levels are more discriminative for MASSL(alter) than for CNN (Table 3, deepest "
              "level with a valid R²)", deep_features_more_discriminative),
)


def check_claims(evidence: Evidence) -> list[Verdict]:
    verdicts = []
    for claim_id, text, comparisons in CLAIMS:
        verdict, detail, decider = combine(comparisons(evidence))
        bounds = (decider.effect, decider.low, decider.high, decider.name) if decider else (NAN, NAN, NAN, "")
        verdicts.append(Verdict(claim_id, text, verdict, detail, *bounds))
    return verdicts
