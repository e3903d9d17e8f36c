"""Method ids, the paper's labels and row order, setting names, and one colour per method.

The ids and labels restate `massl/methods.py` (analysis never imports `massl`); a test checks
that the two agree. Result files carry `method_label` too: `check_label` insists they agree.
"""

from __future__ import annotations

import re

from analysis.common import DataError

# The paper's row order of Tables 1-2.
METHOD_LABELS: dict[str, str] = {
    "cnn": "CNN",
    "pretrain_dec": "Pretrain(Dec)",
    "pretrain_cnn": "Pretrain(CNN)",
    "mssl_l07": "MSSL(λ=0.7)",
    "mssl_l09": "MSSL(λ=0.9)",
    "mssl_alter": "MSSL(alter)",
    "massl_l07": "MASSL(λ=0.7)",
    "massl_l09": "MASSL(λ=0.9)",
    "massl_alter": "MASSL(alter)",
}
METHOD_IDS = {label: method for method, label in METHOD_LABELS.items()}
# Table 3 rows.
PROBE_METHODS = ("cnn", "mssl_alter", "massl_alter")

# Paul Tol's "muted" scheme: nine colours distinguishable under the common colour-vision
# deficiencies, one per method in every figure.
_MUTED = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499")
METHOD_COLOURS: dict[str, str] = dict(zip(METHOD_LABELS, _MUTED))

_SETTING = re.compile(r"^(\d+)L(\d+)U$")


def label_of(method: str) -> str:
    try:
        return METHOD_LABELS[method]
    except KeyError:
        raise DataError(f"unknown method id {method!r}; known: {', '.join(METHOD_LABELS)}") from None


def check_label(method: str, label: str, source: str) -> str:
    """Return the file's label for `method` after checking it is the paper's label."""
    expected = label_of(method)
    if label != expected:
        raise DataError(f"{source}: method {method!r} is labelled {label!r}, expected {expected!r}")
    return label


def method_rank(method: str) -> int:
    """Position of `method` in the paper's row order (for sorting)."""
    label_of(method)
    return list(METHOD_LABELS).index(method)


def setting_counts(setting: str) -> tuple[int, int]:
    """(labeled, unlabeled) counts encoded in a setting name such as `50L70U`."""
    match = _SETTING.match(str(setting))
    if not match:
        raise DataError(f"setting {setting!r} is not of the form <L>L<U>U (e.g. 50L70U)")
    return int(match.group(1)), int(match.group(2))


def sort_settings(settings) -> list[str]:
    """Settings in the paper's column order: by labeled count, then unlabeled count."""
    return sorted(set(settings), key=setting_counts)


def setting_header(setting: str) -> str:
    """The paper's column header, `20 (100)` for `20L100U`."""
    labeled, unlabeled = setting_counts(setting)
    return f"{labeled} ({unlabeled})"
