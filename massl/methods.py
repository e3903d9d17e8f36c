"""The nine methods of the paper's Tables 1-2: one training loop, configured by strategy and
reconstruction mode (SPEC section 3)."""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("supervised", "pretrain_decoder", "pretrain_finetune", "joint", "alternating", "autoencoder")
RECONSTRUCTIONS = ("none", "plain", "attention")


@dataclass(frozen=True)
class Method:
    id: str
    label: str
    strategy: str
    reconstruction: str
    lam: float | None = None  # weight of the segmentation loss in joint training (Eq. 2)

    @property
    def needs_autoencoder(self) -> bool:
        return self.strategy in ("pretrain_decoder", "pretrain_finetune")

    @property
    def rec_channels(self) -> int:
        """Output channels of the reconstruction decoder (0 = no reconstruction decoder)."""
        return {"none": 0, "plain": 1, "attention": 2}[self.reconstruction]


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
    )
}
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
