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
name it. A folder where the format finds no case at all raises `LayoutError`, which says what
the folder holds instead and what to point at (`layout_error`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from massl.config import FORMATS
from massl.errors import DataError

log = logging.getLogger(__name__)

NIFTI_ENDINGS = (".nii.gz", ".nii")
_BRATS_CASE = re.compile(r"^Brats\d*_(?P<site>.+)_(?P<id>[^_]+)_\d+$")
# Stems of the files in the two layouts that are not the FLAIR: labels (`*_seg`, `wmh`) and the
# other modalities (BraTS `*_t1`, `*_t1ce`, `*_t2`, WMH `pre/T1`).
NOT_FLAIR = re.compile(r"(^|_)(seg|wmh|t1|t1ce|t2)$", re.IGNORECASE)
# What a format's root looks like, for messages.
EXPECTED_LAYOUT = {
    "brats18": "HGG/Brats18_<site>_<id>_1/ case folders",
    "wmh17": "case folders with wmh.nii.gz and pre/FLAIR.nii.gz",
    "nnunet": "imagesTr/<case>_0000.nii.gz and labelsTr/<case>.nii.gz",
}
POINT_AT = {
    "brats18": "MICCAI_BraTS_2018_Data_Training/ (the folder holding HGG/) or its HGG/ folder",
    "wmh17": "the folder holding the site folders (Utrecht/, Singapore/, GE3T/) or the 2022 release's training/",
    "nnunet": "the DatasetXXX_Name/ folder holding dataset.json, imagesTr/ and labelsTr/",
}
FORMAT_NAMES = {"brats18": "BraTS data", "wmh17": "WMH data", "nnunet": "an nnU-Net raw folder"}
SEARCH_DEPTH = 5  # folder levels searched for hints (the 2022 WMH release nests cases 5 deep)


class DataFileError(DataError):
    """A problem with one file or folder; `path` and `problem` stay apart for reports."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class LayoutError(DataFileError):
    """The folder holds no case of the format; it seems to hold a `looks_like` dataset `at` a folder."""

    def __init__(self, path: str | Path, problem: str, looks_like: str | None = None, at: Path | None = None):
        self.looks_like, self.at = looks_like, at
        super().__init__(path, problem)


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
    a file, no `dataset.json`, an unknown channel) and LayoutError when it holds no case.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown dataset format {fmt!r}; allowed: {', '.join(FORMATS)}")
    root = Path(root)
    if root.is_file():
        inside = _enclosing_root(root, fmt)
        where = f"point at {inside}" if inside else f"point at {POINT_AT[fmt]}"
        raise DataFileError(root, f"is a file, not a dataset folder: {where}")
    if not root.is_dir():
        raise DataFileError(root, "dataset folder not found")
    if fmt == "brats18":
        cases = _brats(root, include_lgg)
    elif fmt == "wmh17":
        cases = _wmh(root)
    else:
        cases = _nnunet(root, channel)
    if not cases:
        raise layout_error(fmt, root)
    log.debug("%s: found %d case(s) in %s", fmt, len(cases), root)
    return sorted(cases, key=lambda c: (c.case_id, str(c.image)))


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith((".", "__")))
    except OSError:  # unreadable folder: nothing to list (the hints then say less)
        return []


def _visible_dirs(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_dir()]


def _nifti(folder: Path, stem: str) -> Path:
    """`<stem>.nii.gz`, or `<stem>.nii` when only that exists (the expected path when neither)."""
    for ending in NIFTI_ENDINGS:
        if (folder / f"{stem}{ending}").is_file():
            return folder / f"{stem}{ending}"
    return folder / f"{stem}{NIFTI_ENDINGS[0]}"


def nifti_stem(path: Path) -> str:
    for ending in NIFTI_ENDINGS:
        if path.name.endswith(ending):
            return path.name[: -len(ending)]
    return path.stem


def _brats_case(folder: Path, default_site: str) -> Case:
    match = _BRATS_CASE.match(folder.name)
    return Case(folder.name, match["site"] if match else default_site, _nifti(folder, f"{folder.name}_flair"),
                _nifti(folder, f"{folder.name}_seg"))


def _wmh_case(folder: Path, label: Path) -> Case:
    site = folder.parent.name
    return Case(f"{site}_{folder.name}", site, _nifti(folder / "pre", "FLAIR"), label)


def case_folder(folder: Path) -> Case | None:
    """The case a single BraTS or WMH case folder holds, named as its dataset reader names it;
    None for any other folder (what `massl predict` segments when given one case)."""
    if _nifti(folder, f"{folder.name}_flair").is_file():
        return _brats_case(folder, folder.parent.name)
    if _nifti(folder / "pre", "FLAIR").is_file():
        return _wmh_case(folder, _nifti(folder, "wmh"))
    return None


def _is_brats_case(folder: Path) -> bool:
    """Named like a BraTS case, or holding a `*_flair` / `*_seg` file."""
    return bool(_BRATS_CASE.match(folder.name)) or any(
        re.search(r"_(flair|seg)$", nifti_stem(p), re.IGNORECASE) for p in _visible(folder))


def _brats(root: Path, include_lgg: bool) -> list[Case]:
    if (root / "HGG").is_dir():
        grades = [root / "HGG"]
        if include_lgg:
            if not (root / "LGG").is_dir():
                raise DataFileError(root / "LGG", "LGG folder not found (LGG cases were asked for)")
            grades.append(root / "LGG")
    else:  # the HGG (or LGG) folder itself, or not a BraTS folder at all (layout_error says which)
        if not any(_is_brats_case(folder) for folder in _visible_dirs(root)):
            return []
        if include_lgg:
            raise DataFileError(root, "no HGG/ folder here: to include LGG, give the folder holding HGG/ and LGG/")
        grades = [root]
    return [_brats_case(folder, grade.name) for grade in grades for folder in _visible_dirs(grade)]


def _wmh(root: Path) -> list[Case]:
    search = root / "training" if (root / "training").is_dir() else root
    if search != root:
        log.info("wmh17: searching %s only (the 2022 release's test/ cases are not used)", search)
    return [_wmh_case(label.parent, label) for label in sorted(search.rglob("wmh.nii.gz"))]


def _walk_dirs(root: Path, depth: int = SEARCH_DEPTH):
    """Visible folders below `root`, level by level, at most `depth` levels down."""
    level = [root]
    for _ in range(depth):
        level = [d for folder in level for d in _visible_dirs(folder)]
        yield from level


def _is_root(folder: Path, fmt: str) -> bool:
    if fmt == "brats18":
        return (folder / "HGG").is_dir()
    if fmt == "nnunet":
        return (folder / "dataset.json").is_file()
    return False  # WMH cases are found at any depth: the folder above a WMH root works as well


def _wmh_sites(root: Path) -> list[Path]:
    """Site folders below `root` (the folders above folders holding wmh.nii.gz)."""
    return sorted({d.parent for d in _walk_dirs(root) if (d / "wmh.nii.gz").is_file()})


def looks_like(folder: Path) -> tuple[str, Path] | None:
    """The format a folder, or the nearest folder below it, seems to be in, and that folder
    (from marker files; for hints only). A WMH tree is read from any folder above its cases."""
    if any(_is_brats_case(d) for d in _visible_dirs(folder)):
        return "brats18", folder
    for d in (folder, *_walk_dirs(folder)):
        if (d / "dataset.json").is_file():
            return "nnunet", d
        if (d / "HGG").is_dir():
            return "brats18", d
        if (d / "wmh.nii.gz").is_file():
            return "wmh17", folder
    return None


def _evidence(folder: Path, fmt: str, where: Path) -> str:
    inside = f" in {where.relative_to(folder)}/" if where != folder else ""
    if fmt == "nnunet":
        return "a dataset.json" + inside
    if fmt == "brats18":
        return "an HGG/ folder" + inside if (where / "HGG").is_dir() else "Brats18_* case folders"
    sites = [str(s.relative_to(folder)) + "/" for s in _wmh_sites(folder) if s != folder]
    return "site folders holding wmh.nii.gz cases" + (f" ({', '.join(sites[:4])})" if sites else "")


_NONE_HERE = {
    "brats18": "no HGG/ folder or Brats18_<site>_<id>_1/ case folders here",
    "wmh17": "no case folder with wmh.nii.gz below this folder",
    "nnunet": "dataset.json not found (an nnU-Net raw folder needs it)",
}


def layout_error(fmt: str, root: Path) -> LayoutError:
    """Why `root` holds no case of `fmt`: what is there instead, and what to point at."""
    folder = root / "HGG" if fmt == "brats18" and (root / "HGG").is_dir() else root
    entries = _visible(folder)
    if not entries:
        return LayoutError(folder, f"folder is empty: point at {POINT_AT[fmt]}")
    inside = next((d for d in _walk_dirs(root) if _is_root(d, fmt)), None)
    if inside is not None:
        return LayoutError(root, f"found {inside.relative_to(root)}/ inside: point at that folder ({inside})")
    other, where = looks_like(root) or (None, None)
    if other not in (None, fmt):
        return LayoutError(root, f"{_NONE_HERE[fmt]}, but {_evidence(root, other, where)}: "
                                 f"is this {FORMAT_NAMES[other]}?", looks_like=other, at=where)
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    packed = [n for n in names if n.endswith((".zip", ".tar", ".tar.gz", ".tgz"))]
    holds = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    what = f"unpack {packed[0]} first" if packed else f"point at {POINT_AT[fmt]}"
    no_json = fmt == "nnunet" and not (root / "dataset.json").is_file()
    first = _NONE_HERE[fmt] if no_json else f"no cases found (expected {EXPECTED_LAYOUT[fmt]})"
    return LayoutError(folder, f"{first}; it holds {holds}: {what}")


def _enclosing_root(path: Path, fmt: str) -> Path | None:
    """The dataset folder of `fmt` that a file given in its place lies in."""
    for folder in path.parents:
        if _is_root(folder, fmt):
            return folder
        if fmt == "wmh17" and (folder / "wmh.nii.gz").is_file():
            return folder.parent.parent
    return None


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
    if not (root / "dataset.json").is_file():
        raise layout_error("nnunet", root)
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
