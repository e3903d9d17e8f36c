"""Check a dataset before any job uses it, and report every problem at once (`massl check-data`).

Each problem names the file and what is wrong with it: a missing image or label file, an
unreadable or truncated `.nii.gz` (truncation only shows when the data is decompressed, so the
data is read, not just the header), image/label shape or affine mismatch, label values outside
the dataset's set, NaN/inf voxels, volumes that are not 3-D, a constant (blank) image, an empty
case folder or one whose files carry another prefix, duplicate case ids, and fewer cases than
the split needs. A folder that is no dataset of the format at all (not found, a file, the folder
above, another layout) is one fatal problem saying what to point at (`massl.data.discover`).

Not problems: a nearly empty image (fewer than `NEARLY_EMPTY` of its voxels above its minimum)
is a warning; a 4-D file whose 4th axis has length 1 (x, y, z, 1, as many converters write) is
read as the 3-D volume it holds, and the summary counts such files.
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

from massl.data.discover import NIFTI_ENDINGS, Case, DataFileError, discover, nifti_stem, read_nnunet_dataset
from massl.errors import EXIT_OK, EXIT_PROBLEMS, DataError

log = logging.getLogger(__name__)

LABEL_VALUES = {"brats18": {0, 1, 2, 4}, "wmh17": {0, 1, 2}}
AFFINE_TOLERANCE_MM = 1e-3
# A real FLAIR has 10-60 % of its voxels above the background; a failed conversion can leave a
# handful. Below this fraction the image is reported as nearly empty (a warning, not a problem).
NEARLY_EMPTY = 1e-3


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
    warnings: list[Problem] = field(default_factory=list)
    fatal: bool = False  # the folder is no dataset of the format: no case could be checked
    squeezed: list[Path] = field(default_factory=list)  # (x, y, z, 1) files read as 3-D
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
        if self.squeezed:
            lines.append(f"  {len(self.squeezed)} file(s) of shape x y z 1 read as 3-D (the axis of length 1 "
                         f"dropped), e.g. {self.squeezed[0]}")
        return "\n".join(lines)

    def problem_text(self) -> str:
        return "\n".join(f"  {p}" for p in self.problems)

    def warning_text(self) -> str:
        return "\n".join(f"  {p}" for p in self.warnings)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{key} ({n})" for key, n in counter.most_common())


def read_volume(path: Path, what: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The whole 3-D volume of a NIfTI file as float32 (x, y, z), and its image object.

    `what` is "image" or "label". Trailing axes of length 1 are dropped (`len(img.shape)` then
    exceeds `data.ndim`). Raises DataFileError naming the file for a missing, unreadable or
    truncated file, a volume that is not 3-D, NaN/inf voxels, or a constant image (a blank scan;
    a label may be all background).
    """
    if not path.is_file():
        raise DataFileError(path, f"missing {what} file")
    try:
        img = nib.load(path)
        data = img.get_fdata(dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError) as exc:
        raise DataFileError(path, f"unreadable or truncated {what} file ({type(exc).__name__}: {exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        n = int(np.prod(data.shape[3:]))
        raise DataFileError(path, f"{data.ndim}-D {what} with {n} volumes in one file (shape {_shape(img.shape)}): "
                                  "give one 3-D volume per file (e.g. split it with fslsplit)")
    if data.ndim != 3:
        raise DataFileError(path, f"{data.ndim}-D {what} (shape {_shape(data.shape)}); a 3-D volume is expected")
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise DataFileError(path, f"{n_bad} NaN/inf voxel(s) in the {what}")
    if what == "image" and data.min() == data.max():
        raise DataFileError(path, f"constant image (every voxel is {data.min():g}): a blank scan, e.g. from a "
                                  "failed conversion; convert it again or leave the case out")
    return data, img


def nearly_empty(image: np.ndarray) -> str | None:
    """A warning when fewer than `NEARLY_EMPTY` of the voxels lie above the background (the minimum)."""
    background = float(image.min())
    n = int(np.count_nonzero(image > background))
    if n >= NEARLY_EMPTY * image.size:
        return None
    return (f"nearly empty image: {n} of {image.size} voxels ({100 * n / image.size:.2g} %) above the "
            f"background value {background:g}; look at it in a viewer (a failed conversion?)")


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
        other = getattr(exc, "looks_like", None)
        hint = f" try `massl check-data {other} {exc.at}`" if other else ""
        report.problems.append(Problem(exc.path, exc.problem + hint))
        report.fatal = True
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


def _case_folder_problem(case: Case) -> Problem | None:
    """One problem for a case folder that explains why both its files are missing: it is empty,
    or its files carry another prefix than its name (BraTS names files after their folder)."""
    folder = case.image.parent
    if (case.label is None or case.label.parent != folder or not folder.is_dir()
            or case.image.exists() or case.label.exists()):
        return None
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if not entries:
        return Problem(folder, "case folder is empty: copy its files in again or remove the folder")
    stem = nifti_stem(case.image)
    suffix = stem[len(folder.name):]  # "_flair"
    if not stem.startswith(folder.name) or not suffix:
        return None
    prefixes = sorted({nifti_stem(p)[: -len(suffix)] for p in entries
                       if p.name.endswith(NIFTI_ENDINGS) and nifti_stem(p).endswith(suffix)})
    if not prefixes:
        return None
    return Problem(folder, f"holds {prefixes[0]}_* files, not {folder.name}_*: the folder name and the file "
                           "prefix must match (rename the folder or the files)")


def _read(path: Path, what: str, report: Report, problems: list[Problem]):
    """read_volume, with its problem added to `problems` (then None) and a squeeze counted."""
    try:
        data, nii = read_volume(path, what)
    except DataFileError as exc:
        problems.append(Problem(exc.path, exc.problem))
        return None, None
    if len(nii.shape) > data.ndim:
        report.squeezed.append(path)
    return data, nii


def _check_case(case: Case, allowed: set[int], report: Report) -> list[Problem]:
    folder_problem = _case_folder_problem(case)
    if folder_problem is not None:
        return [folder_problem]
    problems: list[Problem] = []
    image, image_nii = _read(case.image, "image", report, problems)
    if image is not None:
        report.shapes[_shape(image.shape)] += 1
        report.spacings["x".join(f"{z:g}" for z in image_nii.header.get_zooms()[:3])] += 1
        warning = nearly_empty(image)
        if warning:
            report.warnings.append(Problem(case.image, warning))
    if case.label is None:
        return problems
    label, label_nii = _read(case.label, "label", report, problems)
    if label is None:
        return problems

    values = np.unique(label)
    not_integer = values[values != np.round(values)]
    if not_integer.size:
        problems.append(Problem(case.label, f"non-integer label values {_list(not_integer)}"))
    ints = {int(v) for v in values[values == np.round(values)]}
    report.label_values |= ints
    if ints - allowed:
        problems.append(Problem(case.label, f"label values {_list(sorted(ints - allowed))} "
                                            f"outside the allowed set {_list(sorted(allowed))}"))
    if image is not None:
        if image.shape != label.shape:
            problems.append(Problem(case.label, f"label shape {_shape(label.shape)} differs from "
                                                f"image shape {_shape(image.shape)} ({case.image})"))
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
    """Exit EXIT_OK or EXIT_PROBLEMS (the report on stdout); a folder that is no dataset of the
    format raises DataError (exit 2, like any bad input)."""
    report = check_dataset(args.format, args.path, min_cases=args.min_cases,
                           include_lgg=args.include_lgg, channel=args.channel)
    if report.fatal:
        raise DataError(str(report.problems[0]))
    print(report.summary())
    if report.warnings:
        print(f"{len(report.warnings)} warning(s):")
        print(report.warning_text())
    if report.ok:
        print("no problems found")
        return EXIT_OK
    print(f"{len(report.problems)} problem(s):")
    print(report.problem_text())
    return EXIT_PROBLEMS
