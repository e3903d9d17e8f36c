"""massl-bench: multi-task attention-based semi-supervised segmentation (Chen et al., MICCAI 2019)."""

__version__ = "0.1.0"
