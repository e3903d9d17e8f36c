"""`massl check-data`: the summary of a sound dataset, and one test per bad input (each gives a
non-zero exit and a message naming the file and the problem): exit 1 for problems in the
data, exit 2 when the folder is no dataset at all (more in tests/test_bad_input.py)."""

import shutil

import numpy as np
import pytest
from layouts import affine_for, make_brats, make_nnunet, make_wmh2017, scan, write_nifti

from massl.cli import main
from massl.data.validate import check_dataset

CASE = "Brats18_CBICA_AAB_1"


@pytest.fixture
def brats(tmp_path):
    return make_brats(tmp_path, lgg=())


def flair(root, case=CASE):
    return root / "HGG" / case / f"{case}_flair.nii.gz"


def seg(root, case=CASE):
    return root / "HGG" / case / f"{case}_seg.nii.gz"


def check(capsys, *argv):
    code = main(["check-data", *map(str, argv)])
    return code, capsys.readouterr().out


def assert_reports(capsys, root, path, problem, *extra, fmt="brats18"):
    code, out = check(capsys, fmt, root, *extra)
    assert code == 1
    assert f"{path}: {problem}" in out, out
    return out


def assert_refuses(capsys, root, path, problem, fmt="brats18"):
    code = main(["check-data", fmt, str(root)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == f"massl check-data: error: {path}: {problem}\n", captured.err
    assert captured.out == ""


def test_sound_dataset_summary(capsys, brats):
    code, out = check(capsys, "brats18", brats)
    assert code == 0
    assert "3 case(s)" in out
    assert "shapes (x y z): 24x24x8 (3)" in out
    assert "spacings (mm, x y z): 1x1x1 (3)" in out
    assert "label values: 0 1 2 4" in out
    assert "no problems found" in out


def test_summary_counts_sites_and_grids(tmp_path):
    report = check_dataset("wmh17", make_wmh2017(tmp_path))
    assert report.ok
    assert dict(report.shapes) == {"24x24x6": 2, "26x22x6": 2, "14x26x9": 2}
    assert dict(report.spacings) == {"1x1x3": 6}
    assert report.label_values == {0, 1, 2}


def test_missing_flair(capsys, brats):
    flair(brats).unlink()
    assert_reports(capsys, brats, flair(brats), "missing image file")


def test_missing_label(capsys, brats):
    seg(brats).unlink()
    assert_reports(capsys, brats, seg(brats), "missing label file")


def test_unreadable_file(capsys, brats):
    flair(brats).write_bytes(b"this is not a NIfTI file")
    assert_reports(capsys, brats, flair(brats), "unreadable or truncated image file")


def test_truncated_gzip(capsys, brats):
    data = seg(brats).read_bytes()
    seg(brats).write_bytes(data[: len(data) - 40])  # the header still reads; the data does not
    assert_reports(capsys, brats, seg(brats), "unreadable or truncated label file")


def test_shape_mismatch(capsys, brats):
    _, label = scan((24, 24, 7), seed=0)
    write_nifti(seg(brats), label)
    assert_reports(capsys, brats, seg(brats), f"label shape 24x24x7 differs from image shape 24x24x8 ({flair(brats)})")


def test_affine_mismatch(capsys, brats):
    _, label = scan((24, 24, 8), seed=0)
    write_nifti(seg(brats), label, affine_for(origin=(-10.0, -12.0, 6.5)))
    assert_reports(capsys, brats, seg(brats), f"label affine differs from the image's ({flair(brats)}) by up to 2.5 mm")


def test_label_values_outside_the_set(capsys, brats):
    _, label = scan((24, 24, 8), seed=0, label_values=(3, 1))
    write_nifti(seg(brats), label)
    assert_reports(capsys, brats, seg(brats), "label values {3} outside the allowed set {0, 1, 2, 4}")


def test_nnunet_label_set_comes_from_dataset_json(capsys, tmp_path):
    root = make_nnunet(tmp_path, channels=("FLAIR",), v2=False)  # labels {0, 1}
    label = root / "labelsTr" / "lesion_001.nii.gz"
    write_nifti(label, scan((20, 18, 6), seed=1, label_values=(1, 2))[1])
    assert_reports(capsys, root, label, "label values {2} outside the allowed set {0, 1}", fmt="nnunet")


def test_nan_and_inf_voxels(capsys, brats):
    image, _ = scan((24, 24, 8), seed=1)
    image[3, 4, 5], image[0, 0, 0] = np.nan, np.inf
    write_nifti(flair(brats), image)
    assert_reports(capsys, brats, flair(brats), "2 NaN/inf voxel(s) in the image")


def test_4d_volume(capsys, brats):
    image, _ = scan((24, 24, 8), seed=1)
    write_nifti(flair(brats), np.stack([image, image], axis=-1))
    assert_reports(capsys, brats, flair(brats), "4-D image with 2 volumes in one file (shape 24x24x8x2): "
                                                "give one 3-D volume per file (e.g. split it with fslsplit)")


def test_2d_volume(capsys, brats):
    image, _ = scan((24, 24, 8), seed=1)
    write_nifti(flair(brats), image[:, :, 0])
    assert_reports(capsys, brats, flair(brats), "2-D image (shape 24x24); a 3-D volume is expected")


def test_empty_dataset_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_refuses(capsys, tmp_path / "empty", tmp_path / "empty", "folder is empty: point at the folder holding the "
                   "site folders (Utrecht/, Singapore/, GE3T/) or the 2022 release's training/", fmt="wmh17")


def test_duplicate_case_ids(capsys, tmp_path):
    root = tmp_path / "wmh"
    make_wmh2017(root / "download1")
    shutil.copytree(root / "download1" / "wmh2017" / "Utrecht", root / "download2" / "Utrecht")
    first = root / "download1" / "wmh2017" / "Utrecht" / "0" / "pre" / "FLAIR.nii.gz"
    second = root / "download2" / "Utrecht" / "0" / "pre" / "FLAIR.nii.gz"
    out = assert_reports(capsys, root, second, f"duplicate case id 'Utrecht_0' (also {first})", fmt="wmh17")
    assert "duplicate case id 'Utrecht_1'" in out


def test_fewer_cases_than_the_split_needs(capsys, brats):
    assert_reports(capsys, brats, brats, f"found 3 cases in {brats}, the split needs 170", "--min-cases", 170)
    report = check_dataset("brats18", brats, min_cases=170, min_cases_reason="pool 120 + test 50")
    expected = f"found 3 cases in {brats}, the split needs 170 (pool 120 + test 50)"
    assert [p.message for p in report.problems] == [expected]


def test_every_problem_is_reported_at_once(capsys, brats):
    flair(brats).unlink()
    seg(brats, "Brats18_2013_10_1").write_bytes(b"garbage")
    code, out = check(capsys, "brats18", brats, "--min-cases", 5)
    assert code == 1
    assert "3 problem(s):" in out
    assert str(flair(brats)) in out and str(seg(brats, "Brats18_2013_10_1")) in out and "needs 5" in out


def test_missing_root_is_bad_input_not_a_crash(capsys, tmp_path):
    assert_refuses(capsys, tmp_path / "nowhere", tmp_path / "nowhere", "dataset folder not found")
