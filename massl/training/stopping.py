"""When a run stops (issue 13, item 1): the paper's fixed budget, or a validation plateau.

`StoppingRule` watches the validation scores. A validation *improves* when it beats the score of
the last improving validation by more than `min_delta` (Dice points; for the autoencoder's MSE,
lower is better and `min_delta` is a fraction of that MSE, which has no fixed scale). After
`patience` validations in a row without improvement the run has *plateaued*: under
`stopping: plateau` it stops there (never before `min_iterations`); under `stopping: budget`
(the paper) it trains on to its budget, which caps both modes.

The rule's reference score is not the best checkpoint: the loop keeps the best validation
weights as before (any gain counts), the rule only decides when to stop. With `min_delta` 0 both
coincide. Its counters are plain values, checkpointed for an exact resume.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from massl.config import TrainConfig


@dataclass
class StoppingRule:
    mode: str = "budget"  # budget | plateau
    patience: int = 5
    min_delta: float = 0.0
    min_iterations: int = 0
    higher_is_better: bool = True  # Dice; False for the autoencoder's MSE
    # state
    reference: float | None = None  # score of the last improving validation
    last_improvement: int | None = None  # its iteration
    stale: int = 0  # validations since then
    n_validations: int = 0
    last_validation: int | None = None  # iteration of the latest validation

    @classmethod
    def from_config(cls, cfg: TrainConfig, metric: str) -> StoppingRule:
        return cls(mode=cfg.stopping, patience=cfg.patience_validations, min_delta=cfg.min_delta,
                   min_iterations=cfg.min_iterations, higher_is_better=metric == "dice")

    def improves(self, score: float) -> bool:
        if math.isnan(score):  # no scan could be scored: no evidence of progress
            return False
        if self.reference is None:
            return True
        if self.higher_is_better:
            return score > self.reference + self.min_delta
        return score < self.reference * (1.0 - self.min_delta)

    def update(self, iteration: int, score: float) -> None:
        """Record the validation at `iteration`."""
        self.n_validations, self.last_validation = self.n_validations + 1, iteration
        if self.improves(score):
            self.reference, self.last_improvement, self.stale = float(score), iteration, 0
        else:
            self.stale += 1

    @property
    def plateaued(self) -> bool:
        # A Dice that never rose above 0 is the all-background state, not a plateau: such a run
        # trains on to its budget (in the demo a frozen pretrained encoder stopped there at 0).
        stuck_at_zero = self.higher_is_better and not self.reference
        return self.stale >= self.patience and not stuck_at_zero

    def should_stop(self, iteration: int) -> bool:
        return self.mode == "plateau" and self.plateaued and iteration >= self.min_iterations

    def still_improving(self, stop_reason: str) -> bool:
        """Ended at its budget while one of its last `patience` validations still improved (the
        plateau rule had not fired); false for plateau and diverged stops and for a run that
        never validated."""
        return stop_reason == "budget" and self.n_validations > 0 and not self.plateaued

    # checkpoint state: only the counters, the settings come from the (fingerprinted) config
    def state(self) -> dict:
        keys = ("reference", "last_improvement", "stale", "n_validations", "last_validation")
        return {k: v for k, v in asdict(self).items() if k in keys}

    def load_state(self, state: dict) -> None:
        for key in self.state():
            setattr(self, key, state[key])
