"""Errors, atomic output, table reading and the command-line runner shared by `analysis/`.

`analysis/` must not import `massl` (it reads result files only), so the few helpers it shares
with the library in spirit are restated here: the same error classes and exit codes, the same
write-to-temporary-then-rename contract.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

# Vocabulary of the run summaries (`massl train`), read by aggregate, stats and tables.
STATUSES = ("converged", "diverged")
STOP_REASONS = ("plateau", "budget", "diverged")  # how a run ended; "" (empty) = not recorded
# What the tables, figures and report print for a cell with a diverged repetition.
NOT_CONVERGED = "n.c."


class AnalysisError(Exception):
    """A problem the user can fix (bad or missing result file, bad option)."""


class DataError(AnalysisError, ValueError):
    """A result file is missing, unreadable or inconsistent. The message names it."""


class ConfigError(AnalysisError, ValueError):
    """A configuration value or command-line option is missing or out of range."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, so a
    crash never leaves a half-written output that a rerun would trust. (analysis/ imports
    nothing of massl, so this mirrors massl.io.atomic_path.)"""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from exc
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; outputs are ordinary files
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # full disk, quota: say which output could not be written
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_tsv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a tab-separated table atomically; NaN is written as an empty field."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, na_rep="", float_format="%.10g")


def read_table(path: str | Path, required: Iterable[str], what: str = "table", sep: str = "\t") -> pd.DataFrame:
    """Read a TSV (or `sep`-separated) result file; check the `required` columns and >= 1 row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        frame = pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
    if frame.empty:
        raise DataError(f"{path}: {what} has no rows")
    return frame


def read_json(path: str | Path, what: str = "JSON file") -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from exc


def config_value(config: dict, key: str, source: str | Path):
    """`config[a][b]` for `key` "a.b" of a resolved config (every key present: `massl config`
    fills the defaults); a DataError naming the key when it is absent."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"{source}: config key '{key}' is missing (a config not resolved by `massl config`?)")
        value = value[part]
    return value


def numeric_column(frame: pd.DataFrame, column: str, source: str | Path) -> pd.Series:
    """`frame[column]` as floats (empty fields = NaN); anything non-numeric is a DataError."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna() & (frame[column].astype(str).str.strip() != "")
    if bad.any():
        raise DataError(f"{source}: column {column!r} has non-numeric value {frame[column][bad].iloc[0]!r}")
    return values.astype(float)


def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse `argv`, run the chosen handler (`args.run`) and turn user errors into exit codes:
    2 for bad input (one line, no traceback), 3 for OS errors (full disk, missing folder)."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return int(args.run(args) or 0)
    except AnalysisError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 3

