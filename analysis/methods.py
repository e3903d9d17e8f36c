"""Method ids, the paper's labels and row order, setting names, and one colour per method.

`analysis/` never imports `massl`, and keeps no copy of its method table: the table (ids, labels,
row order, strategy, reconstruction, λ) and the setting-name pattern come from the `library`
section of the resolved `results/config.json` (`massl config` writes it from
`massl.methods.describe()`). Each CLI's `cli` calls `use_config(args.config)`, which installs
the table for the process; every lookup below then reads it, and fails with a DataError naming
`--config` when none was installed. Result files carry `method_label` too: `check_label` insists
they agree with the table.
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Iterable
from pathlib import Path

from analysis.common import DataError, read_json

ROW_KEYS = ("id", "label", "strategy", "reconstruction", "lam", "needs_autoencoder", "paper")
# Method tables written before the baselines beyond the paper lack `paper`: all their rows are the paper's.
ROW_DEFAULTS = {"paper": True}
# Paul Tol's "muted" scheme: nine colours distinguishable under the common colour-vision
# deficiencies, given to the table's rows by position (row 1 = CNN gets indigo, ...), the same
# colour for a method in every figure; rows 10 and 11 (the baselines beyond the paper) get black
# and mid grey, which differ from all nine in lightness. A longer table starts again from row 1's.
PALETTE = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499",
           "#000000", "#888888")


# One row of the library's method table, with the keys of `massl.methods.describe()`.
Method = namedtuple("Method", ROW_KEYS)


class MethodTable:
    """The library's method table in the paper's row order, with the setting-name pattern."""

    def __init__(self, rows: Iterable[Method], setting_pattern: str, source: str = "method table"):
        self.rows = tuple(rows)
        self.source = source
        if not self.rows:
            raise DataError(f"{source}: the method table has no rows")
        self.labels = {m.id: m.label for m in self.rows}
        self.ids = {m.label: m.id for m in self.rows}
        if len(self.labels) != len(self.rows) or len(self.ids) != len(self.rows):
            raise DataError(f"{source}: the method table repeats an id or a label")
        self.colours = {m.id: PALETTE[i % len(PALETTE)] for i, m in enumerate(self.rows)}
        self._rank = {m.id: i for i, m in enumerate(self.rows)}
        try:
            self.setting_pattern = re.compile(setting_pattern)
        except (re.error, TypeError) as exc:
            raise DataError(f"{source}: setting_pattern {setting_pattern!r} is not a regular expression ({exc})") \
                from None
        if self.setting_pattern.groups != 2:
            raise DataError(f"{source}: setting_pattern {setting_pattern!r} must have two groups "
                            "(labeled count, unlabeled count)")

    @classmethod
    def from_config(cls, config: dict, source: str = "resolved config") -> MethodTable:
        """The table of a resolved config's `library` section (`massl.methods.describe()`)."""
        library = config.get("library") if isinstance(config, dict) else None
        if not isinstance(library, dict):
            raise DataError(f"{source}: no 'library' section (the library's method table); "
                            "write the config with `massl config`")
        table, pattern = library.get("method_table"), library.get("setting_pattern")
        if not isinstance(table, list) or not all(isinstance(r, dict) for r in table):
            raise DataError(f"{source}: library.method_table must be a list of rows")
        rows = []
        for i, row in enumerate(table):
            row = {**ROW_DEFAULTS, **row}
            missing = [k for k in ROW_KEYS if k not in row]
            if missing:
                raise DataError(f"{source}: library.method_table row {i + 1} lacks {', '.join(missing)}")
            if not isinstance(row["id"], str) or not isinstance(row["label"], str):
                raise DataError(f"{source}: library.method_table row {i + 1}: id and label must be strings")
            rows.append(Method(*(row[k] for k in ROW_KEYS)))
        if not isinstance(pattern, str):
            raise DataError(f"{source}: library.setting_pattern must be a string")
        return cls(rows, pattern, source)

    def label_of(self, method: str) -> str:
        try:
            return self.labels[method]
        except (KeyError, TypeError):
            raise DataError(f"unknown method id {method!r}; known: {', '.join(self.labels)}") from None

    def rank(self, method: str) -> int:
        self.label_of(method)
        return self._rank[method]

    def id_of(self, label: str) -> str:
        try:
            return self.ids[label]
        except (KeyError, TypeError):
            raise DataError(f"unknown method label {label!r}; known: {', '.join(self.ids)}") from None


_installed: MethodTable | None = None


def load_library(config_path: str | Path) -> MethodTable:
    """The method table of the resolved config at `config_path` (not installed)."""
    return MethodTable.from_config(read_json(config_path, "resolved config"), str(config_path))


def install(table: MethodTable | None) -> MethodTable | None:
    """Make `table` the process's method table (None uninstalls it); returns the previous one."""
    global _installed
    previous, _installed = _installed, table
    return previous


def use_config(config_path: str | Path) -> dict:
    """Read the resolved config, install its method table, return the config (for a CLI's `cli`)."""
    config = read_json(config_path, "resolved config")
    install(MethodTable.from_config(config, str(config_path)))
    return config


def table() -> MethodTable:
    """The installed method table; a DataError when none was installed."""
    if _installed is None:
        raise DataError("no method table loaded: pass --config results/config.json (the resolved config, "
                        "whose 'library' section holds the library's method table)")
    return _installed


def method_ids() -> list[str]:
    """Method ids in the paper's row order."""
    return [m.id for m in table().rows]


def method_labels() -> dict[str, str]:
    """{method id: paper label} in the paper's row order."""
    return dict(table().labels)


def label_of(method: str) -> str:
    return table().label_of(method)


def id_of(label: str) -> str:
    """The method id of a paper label (e.g. `MASSL(alter)` -> `massl_alter`)."""
    return table().id_of(label)


def colour_of(method: str) -> str:
    label_of(method)
    return table().colours[method]


def methods_with_reconstruction(kind: str) -> list[str]:
    """Ids of the rows whose reconstruction mode is `kind` (none | plain | attention), row order."""
    return [m.id for m in table().rows if m.reconstruction == kind]


def check_label(method: str, label: str, source: str) -> str:
    """Return the file's label for `method` after checking it is the paper's label."""
    expected = label_of(method)
    if label != expected:
        raise DataError(f"{source}: method {method!r} is labelled {label!r}, expected {expected!r}")
    return label


def method_rank(method: str) -> int:
    """Position of `method` in the paper's row order (for sorting)."""
    return table().rank(method)


def setting_counts(setting: str) -> tuple[int, int]:
    """(labeled, unlabeled) counts encoded in a setting name such as `50L70U`."""
    pattern = table().setting_pattern
    match = pattern.match(str(setting))
    if not match:
        raise DataError(f"setting {setting!r} is not of the form <L>L<U>U (e.g. 50L70U; the library's "
                        f"setting pattern is {pattern.pattern})")
    return int(match.group(1)), int(match.group(2))


def sort_settings(settings) -> list[str]:
    """Settings in the paper's column order: by labeled count, then unlabeled count."""
    return sorted(set(settings), key=setting_counts)


def setting_header(setting: str) -> str:
    """The paper's column header, `20 (100)` for `20L100U`."""
    labeled, unlabeled = setting_counts(setting)
    return f"{labeled} ({unlabeled})"
