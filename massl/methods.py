"""The methods of Tables 1-2: the paper's nine rows (SPEC section 3) and two later
semi-supervised baselines beyond the paper (Mean Teacher, cross pseudo supervision), each one
training loop configured by strategy and reconstruction mode."""

from __future__ import annotations

from dataclasses import dataclass

# Names of the grid's settings: <labeled>L<unlabeled>U (e.g. 50L70U).
SETTING_PATTERN = r"^(\d+)L(\d+)U$"


@dataclass(frozen=True)
class Method:
    id: str
    label: str
    strategy: str
    reconstruction: str
    lam: float | None = None  # weight of the segmentation loss in joint training (Eq. 2)
    paper: bool = True  # a row of the paper's Tables 1-2; False: a baseline beyond the paper (table*_plus)

    @property
    def needs_autoencoder(self) -> bool:
        return self.strategy in ("pretrain_decoder", "pretrain_finetune")

    @property
    def rec_channels(self) -> int:
        """Output channels of the reconstruction decoder (0 = no reconstruction decoder)."""
        return {"none": 0, "plain": 1, "attention": 2}[self.reconstruction]

    @property
    def trains_reconstruction(self) -> bool:
        """Whether this method's own training updates a reconstruction decoder; the pretraining
        rows' decoder belongs to their autoencoder run (and would stay untrained here)."""
        return self.strategy in ("autoencoder", "joint", "alternating")

    def as_row(self) -> dict:
        return {"id": self.id, "label": self.label, "strategy": self.strategy,
                "reconstruction": self.reconstruction, "lam": self.lam,
                "needs_autoencoder": self.needs_autoencoder, "paper": self.paper}


METHODS: dict[str, Method] = {
    m.id: m
    for m in (
        Method("cnn", "CNN", "supervised", "none"),
        Method("pretrain_dec", "Pretrain(Dec)", "pretrain_decoder", "plain"),
        Method("pretrain_cnn", "Pretrain(CNN)", "pretrain_finetune", "plain"),
        Method("mssl_l07", "MSSL(λ=0.7)", "joint", "plain", 0.7),
        Method("mssl_l09", "MSSL(λ=0.9)", "joint", "plain", 0.9),
        Method("mssl_alter", "MSSL(alter)", "alternating", "plain"),
        Method("massl_l07", "MASSL(λ=0.7)", "joint", "attention", 0.7),
        Method("massl_l09", "MASSL(λ=0.9)", "joint", "attention", 0.9),
        Method("massl_alter", "MASSL(alter)", "alternating", "attention"),
        # Beyond the paper (issue 17): not in the default grid, rows of table1_plus/table2_plus.
        Method("mean_teacher", "Mean Teacher", "mean_teacher", "none", paper=False),  # Tarvainen & Valpola 2017
        Method("cps", "CPS", "cross_pseudo", "none", paper=False),  # Chen et al., CVPR 2021
    )
}
# The rows of the paper's Tables 1-2, in its order: the default `methods:` of a grid.
PAPER_METHODS: tuple[str, ...] = tuple(m.id for m in METHODS.values() if m.paper)
# The shared autoencoder behind both pretraining rows (not a table row of its own).
AUTOENCODER = Method("autoencoder", "Autoencoder", "autoencoder", "plain")


def get_method(method_id: str) -> Method:
    if method_id == AUTOENCODER.id:
        return AUTOENCODER
    try:
        return METHODS[method_id]
    except KeyError:
        raise ValueError(
            f"unknown method {method_id!r}; allowed: {', '.join([*METHODS, AUTOENCODER.id])}"
        ) from None


def describe() -> dict:
    """The library's facts that the workflow and `analysis/` read (through `massl describe
    --json` and the `library` key of the resolved config), so that they keep no copy: the
    method table (the paper's nine rows in its order, then the baselines beyond the paper), the
    shared autoencoder, the setting-name pattern."""
    return {"method_table": [m.as_row() for m in METHODS.values()], "autoencoder": AUTOENCODER.as_row(),
            "setting_pattern": SETTING_PATTERN}


def describe_text() -> str:
    """The method table as aligned text: the rows in order, then the shared autoencoder."""
    rows = [m.as_row() for m in (*METHODS.values(), AUTOENCODER)]
    columns = ("id", "label", "strategy", "reconstruction", "lam", "needs_autoencoder", "paper")
    cells = [[("" if row[c] is None else str(row[c])) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines) + f"\nsetting names: {SETTING_PATTERN}\n"


def cli_describe(args) -> int:
    import json
    import sys

    sys.stdout.write(json.dumps(describe(), indent=2) + "\n" if args.json else describe_text())
    return 0
