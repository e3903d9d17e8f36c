"""Check a dataset before any job uses it, and report every problem at once (`massl check-data`).

Each problem names the file and what is wrong with it: a missing image or label file, an
unreadable or truncated `.nii.gz` (truncation only shows when the data is decompressed, so the
data is read, not just the header), image/label shape or affine mismatch, label values outside
the dataset's set, NaN/inf voxels, volumes that are not 3-D, an empty dataset folder, duplicate
case ids, and fewer cases than the split needs.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from tqdm import tqdm

from massl.data.discover import Case, DataFileError, discover, read_nnunet_dataset

log = logging.getLogger(__name__)

LABEL_VALUES = {"brats18": {0, 1, 2, 4}, "wmh17": {0, 1, 2}}
AFFINE_TOLERANCE_MM = 1e-3
EXPECTED_LAYOUT = {
    "brats18": "HGG/Brats18_<site>_<id>_1/ case folders",
    "wmh17": "case folders with wmh.nii.gz and pre/FLAIR.nii.gz",
    "nnunet": "imagesTr/<case>_0000.nii.gz and labelsTr/<case>.nii.gz",
}


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Report:
    fmt: str
    root: Path
    cases: list[Case] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    shapes: Counter = field(default_factory=Counter)  # "240x240x155" (x y z) -> cases
    spacings: Counter = field(default_factory=Counter)  # "1x1x1" (mm, x y z) -> cases
    label_values: set[int] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        sites = Counter(c.site for c in self.cases)
        lines = [f"{self.fmt} dataset at {self.root}: {len(self.cases)} case(s)"]
        if sites:
            lines.append("  sites: " + ", ".join(f"{s} ({n})" for s, n in sorted(sites.items())))
        if self.shapes:
            lines.append("  shapes (x y z): " + _counts(self.shapes))
        if self.spacings:
            lines.append("  spacings (mm, x y z): " + _counts(self.spacings))
        if self.label_values:
            lines.append("  label values: " + " ".join(str(v) for v in sorted(self.label_values)))
        return "\n".join(lines)

    def problem_text(self) -> str:
        return "\n".join(f"  {p}" for p in self.problems)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{key} ({n})" for key, n in counter.most_common())


def read_volume(path: Path, what: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The whole 3-D volume of a NIfTI file as float32 (x, y, z), and its image object.

    Raises DataFileError naming the file for a missing, unreadable or truncated file, a
    volume that is not 3-D, or NaN/inf voxels.
    """
    if not path.is_file():
        raise DataFileError(path, f"missing {what} file")
    try:
        img = nib.load(path)
        data = img.get_fdata(dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError) as exc:
        raise DataFileError(path, f"unreadable or truncated {what} file ({type(exc).__name__}: {exc})") from None
    if data.ndim != 3:
        raise DataFileError(path, f"{data.ndim}-D {what} (shape {_shape(data.shape)}); a 3-D volume is expected")
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise DataFileError(path, f"{n_bad} NaN/inf voxel(s) in the {what}")
    return data, img


def allowed_label_values(fmt: str, root: Path) -> set[int]:
    if fmt == "nnunet":
        return read_nnunet_dataset(root).label_values
    return LABEL_VALUES[fmt]


def check_dataset(
    fmt: str,
    root: str | Path,
    min_cases: int | None = None,
    include_lgg: bool = False,
    channel: str | None = None,
    label_values: Collection[int] | None = None,
    min_cases_reason: str | None = None,
    trusted: Collection[str] = (),
) -> Report:
    """Discover and check every case of the dataset at `root`; the report lists all problems.

    `label_values` overrides the dataset's label set (BraTS {0,1,2,4}, WMH {0,1,2}, nnU-Net: the
    values of dataset.json). `min_cases_reason` explains `min_cases` in the message (e.g.
    "pool 120 + test 50"). Cases in `trusted` were checked before and are unchanged: their files
    are not read again.
    """
    root = Path(root)
    report = Report(fmt, root)
    try:
        report.cases = discover(fmt, root, include_lgg=include_lgg, channel=channel)
        allowed = set(label_values) if label_values is not None else allowed_label_values(fmt, root)
    except DataFileError as exc:
        report.problems.append(Problem(exc.path, exc.problem))
        return report
    if not report.cases:
        report.problems.append(Problem(root, f"no cases found (expected {EXPECTED_LAYOUT[fmt]})"))
        return report

    seen: dict[str, Case] = {}
    for case in report.cases:
        if case.case_id in seen:
            first = seen[case.case_id].image
            report.problems.append(Problem(case.image, f"duplicate case id {case.case_id!r} (also {first})"))
        seen.setdefault(case.case_id, case)
    if min_cases is not None and len(seen) < min_cases:
        reason = f" ({min_cases_reason})" if min_cases_reason else ""
        report.problems.append(Problem(root, f"found {len(seen)} cases in {root}, the split needs {min_cases}{reason}"))

    to_read = [c for c in report.cases if c.case_id not in trusted]
    for case in tqdm(to_read, desc="checking", unit="case", mininterval=10, disable=len(to_read) < 2):
        report.problems.extend(_check_case(case, allowed, report))
    return report


def _check_case(case: Case, allowed: set[int], report: Report) -> list[Problem]:
    problems = []
    try:
        image, image_nii = read_volume(case.image, "image")
    except DataFileError as exc:
        problems.append(Problem(exc.path, exc.problem))
        image_nii = None
    else:
        report.shapes[_shape(image.shape)] += 1
        report.spacings["x".join(f"{z:g}" for z in image_nii.header.get_zooms()[:3])] += 1
    if case.label is None:
        return problems
    try:
        label, label_nii = read_volume(case.label, "label")
    except DataFileError as exc:
        return [*problems, Problem(exc.path, exc.problem)]

    values = np.unique(label)
    not_integer = values[values != np.round(values)]
    if not_integer.size:
        problems.append(Problem(case.label, f"non-integer label values {_list(not_integer)}"))
    ints = {int(v) for v in values[values == np.round(values)]}
    report.label_values |= ints
    if ints - allowed:
        problems.append(Problem(case.label, f"label values {_list(sorted(ints - allowed))} "
                                            f"outside the allowed set {_list(sorted(allowed))}"))
    if image_nii is not None:
        if image_nii.shape != label_nii.shape:
            problems.append(Problem(case.label, f"label shape {_shape(label_nii.shape)} differs from "
                                                f"image shape {_shape(image_nii.shape)} ({case.image})"))
        elif not np.allclose(image_nii.affine, label_nii.affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
            delta = float(np.abs(image_nii.affine - label_nii.affine).max())
            problems.append(Problem(case.label, f"label affine differs from the image's ({case.image}) "
                                                f"by up to {delta:.4g} mm"))
    return problems


def _list(values) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def cli_check_data(args) -> int:
    report = check_dataset(args.format, args.path, min_cases=args.min_cases,
                           include_lgg=args.include_lgg, channel=args.channel)
    print(report.summary())
    if report.ok:
        print("no problems found")
        return 0
    print(f"{len(report.problems)} problem(s):")
    print(report.problem_text())
    return 1
