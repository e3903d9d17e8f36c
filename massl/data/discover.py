"""Find the cases of a dataset folder in one of the supported layouts (SPEC section 5).

- `brats18`: `MICCAI_BraTS_2018_Data_Training/` (or its `HGG/` folder) with case folders
  `Brats18_<site>_<id>_1/` holding `<case>_flair.nii.gz` and `<case>_seg.nii.gz`. HGG only by
  default; `include_lgg` adds `LGG/`. Site = the `<site>` part (`2013`, `CBICA`, `TCIA08`, ...).
- `wmh17`: every folder holding `wmh.nii.gz` is a case, its image `pre/FLAIR.nii.gz`, its site the
  folder above it. This covers the 2017 zip (`Utrecht/0/`, `Singapore/50/`, `GE3T/100/`) and the
  2022 release (`training/Amsterdam/GE3T/100/`); when a `training/` folder exists only it is
  searched, so the 2022 `test/` cases never leak in. Case id = `<site>_<id>`.
- `nnunet`: an nnU-Net raw folder (`dataset.json`, `imagesTr/<case>_<XXXX>.nii.gz`,
  `labelsTr/<case>.nii.gz`), v1 or v2 `dataset.json`; the input channel is picked by name.

Discovery only lists where files should be; `massl.data.validate` checks that they are there
and sound. Every case keeps its expected paths even when a file is missing, so the check can
name it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from massl.errors import DataError

log = logging.getLogger(__name__)

FORMATS = ("brats18", "wmh17", "nnunet")
NIFTI_ENDINGS = (".nii.gz", ".nii")
_BRATS_CASE = re.compile(r"^Brats\d*_(?P<site>.+)_(?P<id>[^_]+)_\d+$")


class DataFileError(DataError):
    """A problem with one file or folder; `path` and `problem` stay apart for reports."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Case:
    case_id: str
    site: str
    image: Path
    label: Path | None  # None: a scan without a label (e.g. a loose file given to `massl predict`)


@dataclass(frozen=True)
class NnunetDataset:
    """What `dataset.json` says: channel index -> name, label name -> values, file ending."""

    channels: dict[int, str]
    labels: dict[str, list[int]]
    file_ending: str

    @property
    def label_values(self) -> set[int]:
        return {v for values in self.labels.values() for v in values}

    @property
    def ignore_value(self) -> int | None:
        values = self.labels.get("ignore")
        return values[0] if values else None


def discover(fmt: str, root: str | Path, include_lgg: bool = False, channel: str | None = None) -> list[Case]:
    """All cases of the dataset at `root`, sorted by case id (duplicates kept for the check).

    Raises DataFileError when the folder is not a dataset of that format at all (missing root,
    no `dataset.json`, an unknown channel); an existing folder without cases gives `[]`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFileError(root, "dataset folder not found")
    if fmt == "brats18":
        cases = _brats(root, include_lgg)
    elif fmt == "wmh17":
        cases = _wmh(root)
    elif fmt == "nnunet":
        cases = _nnunet(root, channel)
    else:
        raise DataError(f"unknown dataset format {fmt!r}; allowed: {', '.join(FORMATS)}")
    log.debug("%s: found %d case(s) in %s", fmt, len(cases), root)
    return sorted(cases, key=lambda c: (c.case_id, str(c.image)))


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _nifti(folder: Path, stem: str) -> Path:
    """`<stem>.nii.gz`, or `<stem>.nii` when only that exists (the expected path when neither)."""
    for ending in NIFTI_ENDINGS:
        if (folder / f"{stem}{ending}").is_file():
            return folder / f"{stem}{ending}"
    return folder / f"{stem}{NIFTI_ENDINGS[0]}"


def _brats(root: Path, include_lgg: bool) -> list[Case]:
    if (root / "HGG").is_dir():
        grades = [root / "HGG"]
        if include_lgg:
            if not (root / "LGG").is_dir():
                raise DataFileError(root / "LGG", "LGG folder not found (LGG cases were asked for)")
            grades.append(root / "LGG")
    else:  # the HGG (or LGG) folder itself, or a folder with no cases at all
        if include_lgg:
            raise DataFileError(root, "no HGG/ folder here: to include LGG, give the folder holding HGG/ and LGG/")
        grades = [root]
    cases = []
    for grade in grades:
        for folder in _visible_dirs(grade):
            match = _BRATS_CASE.match(folder.name)
            site = match["site"] if match else grade.name
            cases.append(Case(folder.name, site, _nifti(folder, f"{folder.name}_flair"),
                              _nifti(folder, f"{folder.name}_seg")))
    return cases


def _wmh(root: Path) -> list[Case]:
    search = root / "training" if (root / "training").is_dir() else root
    if search != root:
        log.info("wmh17: searching %s only (the 2022 release's test/ cases are not used)", search)
    cases = []
    for label in sorted(search.rglob("wmh.nii.gz")):
        folder = label.parent
        site = folder.parent.name
        cases.append(Case(f"{site}_{folder.name}", site, _nifti(folder / "pre", "FLAIR"), label))
    return cases


def read_nnunet_dataset(root: str | Path) -> NnunetDataset:
    """Parse `dataset.json` of nnU-Net v2 (`channel_names`, labels name -> value) or v1
    (`modality`, labels value -> name). Region-based v2 labels (name -> list) give all values."""
    path = Path(root) / "dataset.json"
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataFileError(path, "dataset.json not found (an nnU-Net raw folder needs it)") from None
    except (OSError, ValueError) as exc:
        raise DataFileError(path, f"cannot read dataset.json ({exc})") from None
    channels = spec.get("channel_names", spec.get("modality"))
    labels = spec.get("labels")
    if not isinstance(channels, dict) or not channels:
        raise DataFileError(path, "no 'channel_names' (v2) or 'modality' (v1) entry")
    if not isinstance(labels, dict) or not labels:
        raise DataFileError(path, "no 'labels' entry")
    try:
        channels = {int(k): str(v) for k, v in channels.items()}
        if all(str(k).lstrip("-").isdigit() for k in labels):  # v1: "1": "tumor"
            label_map = {str(name): [int(value)] for value, name in labels.items()}
        else:  # v2: "tumor": 1 or "whole tumor": [1, 2, 3]
            label_map = {str(name): [int(v) for v in (value if isinstance(value, list) else [value])]
                         for name, value in labels.items()}
    except (TypeError, ValueError) as exc:
        raise DataFileError(path, f"malformed channel or label entry ({exc})") from None
    ending = str(spec.get("file_ending", ".nii.gz"))
    if ending not in NIFTI_ENDINGS:
        raise DataFileError(path, f"file_ending {ending!r} is not supported; use .nii.gz or .nii")
    return NnunetDataset(channels, label_map, ending)


def pick_channel(dataset: NnunetDataset, channel: str | None, where: Path) -> int:
    """Index of the channel named `channel` (case-insensitive, or its index); the only channel
    when `channel` is None."""
    names = ", ".join(f"{i}={n}" for i, n in sorted(dataset.channels.items()))
    if channel is None:
        if len(dataset.channels) == 1:
            return next(iter(dataset.channels))
        raise DataFileError(where, f"{len(dataset.channels)} input channels ({names}); choose one with --channel NAME")
    for index, name in dataset.channels.items():
        if channel.lower() == name.lower() or channel == str(index):
            return index
    raise DataFileError(where, f"no channel {channel!r}; channels: {names}")


def _nnunet(root: Path, channel: str | None) -> list[Case]:
    dataset = read_nnunet_dataset(root)
    index = pick_channel(dataset, channel, root / "dataset.json")
    images_dir, labels_dir, ending = root / "imagesTr", root / "labelsTr", dataset.file_ending
    suffix = f"_{index:04d}{ending}"
    images = {p.name[: -len(suffix)] for p in _files(images_dir, suffix)}
    labels = {p.name[: -len(ending)] for p in _files(labels_dir, ending)}
    return [Case(name, root.name, images_dir / f"{name}{suffix}", labels_dir / f"{name}{ending}")
            for name in sorted(images | labels)]


def _files(folder: Path, ending: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name.endswith(ending) and not p.name.startswith(".")]
