"""Read access to a preprocessed dataset folder (written by `massl preprocess`).

Layout (docs/architecture.md): `cases.tsv` plus `<case_id>.image.npy` (float32, z y x),
`<case_id>.label.npy` (uint8: 0 background, 1 target, 2 ignore) and `<case_id>.json` (meta).
Arrays are memory-mapped so training never re-reads NIfTI and never copies whole volumes.
"""

from __future__ import annotations

import csv
import json
from functools import cached_property
from pathlib import Path

import numpy as np

from massl.errors import DataError

CASES_COLUMNS = ("case_id", "site", "shape_zyx", "spacing_zyx", "image", "label", "meta", "n_foreground")
IGNORE_LABEL = 2


CASES_TABLE = "cases.tsv"


class CaseStore:
    def __init__(self, path: str | Path):
        """`path`: a preprocessed folder, or its case table (`cases.tsv`, the arrays beside it)."""
        path = Path(path)
        if path.suffix == ".tsv":
            self.folder, self.table_path = path.parent, path
        else:
            self.folder, self.table_path = path, path / CASES_TABLE
        if not self.table_path.is_file():
            raise DataError(f"{self.table_path}: preprocessed case table not found (run `massl preprocess`)")
        with open(self.table_path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows:
            raise DataError(f"{self.table_path}: no cases")
        missing = [c for c in CASES_COLUMNS if c not in rows[0]]
        if missing:
            raise DataError(f"{self.table_path}: missing column(s) {', '.join(missing)}")
        self.rows = {row["case_id"]: row for row in rows}

    @property
    def case_ids(self) -> list[str]:
        return list(self.rows)

    def site(self, case_id: str) -> str:
        return self._row(case_id)["site"]

    def image(self, case_id: str) -> np.ndarray:
        return self._array(case_id, "image")

    def label(self, case_id: str) -> np.ndarray:
        return self._array(case_id, "label")

    def meta(self, case_id: str) -> dict:
        return json.loads((self.folder / self._row(case_id)["meta"]).read_text())

    def spacing(self, case_id: str) -> tuple[float, float, float]:
        return tuple(float(v) for v in self._row(case_id)["spacing_zyx"].split("x"))

    @cached_property
    def _arrays(self) -> dict:
        return {}

    def _row(self, case_id: str) -> dict:
        try:
            return self.rows[case_id]
        except KeyError:
            raise DataError(f"{self.table_path}: no case {case_id!r}") from None

    def _array(self, case_id: str, kind: str) -> np.ndarray:
        key = (case_id, kind)
        if key not in self._arrays:
            path = self.folder / self._row(case_id)[kind]
            try:
                self._arrays[key] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot read preprocessed array ({exc})") from exc
        return self._arrays[key]
