"""Test-set scoring of a trained model: per-scan Dice / HD95 / AVD by sliding-window inference
(`per_case.tsv`), the figure example (`examples.npz`) and the TSV format of the run tables."""

from __future__ import annotations

import csv
import io
import logging
import math
import time

import numpy as np

from massl.data.store import CaseStore
from massl.evaluation.inference import sliding_window_predict
from massl.evaluation.metrics import case_metrics
from massl.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

CASE_COLUMNS = ("dataset", "setting", "method", "method_label", "rep", "case_id", "site",
                "dice", "hd95", "avd", "status")
METRICS = ("dice", "hd95", "avd")


def score_test_cases(model, store: CaseStore, case_ids: list[str], spec, device, amp_dtype,
                     status: str, with_example: bool = True) -> tuple[list[dict], dict]:
    """Per-scan Dice/HD95/AVD of the model on `case_ids` (NaN rows when the run diverged), and
    (with `with_example`) the figure example: a mid-lesion slice of the first test scan with foreground.
    `spec` is the run (`massl.training.run.RunSpec`: its training section and identity columns); the
    model is scored as it is (device, `training.cpu_conv3d` layers and mode already set)."""
    cfg = spec.training
    with_foreground = (c for c in case_ids if np.any(np.asarray(store.label(c)) == 1))
    example_case = next(with_foreground, case_ids[0] if case_ids else None) if with_example else None
    rows, example = [], {}
    started = time.perf_counter()
    for k, case in enumerate(case_ids, 1):
        metrics = dict.fromkeys(METRICS, float("nan"))
        if status != "diverged" or case == example_case:
            image, label = np.asarray(store.image(case)), np.asarray(store.label(case))
            predicted = sliding_window_predict(model, image, cfg.patch_size, cfg.inference_overlap,
                                               cfg.inference_batch, device, amp_dtype,
                                               return_reconstruction=case == example_case)
            prob, rec = predicted if case == example_case else (predicted, None)  # only the figure needs rec
            if status != "diverged":
                metrics = case_metrics(prob, label, store.spacing(case), cfg.threshold)
            if case == example_case:
                example = _example_slice(case, image, label, prob, rec)
        rows.append({**spec.identity, "case_id": case, "site": store.site(case), **metrics, "status": status})
        if k == len(case_ids) or k % max(1, len(case_ids) // 10) == 0:
            log.info("tested %d/%d scans (%.1f s)", k, len(case_ids), time.perf_counter() - started)
    return rows, example


def _example_slice(case: str, image, label, prob, rec) -> dict:
    """The foreground slice halfway through the lesion's z extent (the middle slice without one)."""
    fg_slices = np.nonzero((label == 1).any(axis=(1, 2)))[0]
    z = int(fg_slices[len(fg_slices) // 2]) if len(fg_slices) else image.shape[0] // 2
    example = {"case_id": np.array(case), "slice_index": np.array(z), "image": image[z].astype(np.float32),
               "label": label[z].astype(np.uint8), "prob": prob[z].astype(np.float32)}
    if rec is not None:
        example["rec"] = rec[:, z].astype(np.float32)
    return example


def write_case_table(path, rows: list[dict]) -> None:
    write_tsv(path, CASE_COLUMNS, rows)


def write_tsv(path, columns, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_cell(row[c]) for c in columns] for row in rows])
    atomic_write_text(path, buffer.getvalue())


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_example(path, example: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: savez adds no suffix
        np.savez_compressed(fh, **example)
