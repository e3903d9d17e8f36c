"""Issue 15, `check-data` and `preprocess`: faults a new user meets, injected one at a time into
files written in the real BraTS 2018 / WMH 2017 layouts; each test asserts the exact message
and exit code. (`massl predict`: tests/test_bad_input_predict.py.)"""

import numpy as np
import pytest
from layouts import BRATS_HGG, make_brats, make_wmh2017, scan, write_nifti

from massl.cli import build_parser, main
from massl.data.store import CaseStore
from massl.errors import EXIT_CODES

CASE = "Brats18_CBICA_AAB_1"
POINT_AT_BRATS = "MICCAI_BraTS_2018_Data_Training/ (the folder holding HGG/) or its HGG/ folder"


@pytest.fixture
def brats(tmp_path):
    return make_brats(tmp_path / "download", lgg=())


def flair(root, case=CASE):
    return root / "HGG" / case / f"{case}_flair.nii.gz"


def seg(root, case=CASE):
    return root / "HGG" / case / f"{case}_seg.nii.gz"


def run(capsys, *argv):
    code = main([*map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_data(capsys, fmt, root):
    return run(capsys, "check-data", fmt, root)


# 1. blank scans -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0.0, 7.0])
def test_constant_flair_is_a_problem_and_preprocess_refuses_it(capsys, tmp_path, brats, value):
    write_nifti(flair(brats), np.full((24, 24, 8), value, np.float32))
    message = (f"{flair(brats)}: constant image (every voxel is {value:g}): a blank scan, e.g. from a failed "
               "conversion; convert it again or leave the case out")
    code, out, _ = check_data(capsys, "brats18", brats)
    assert code == 1
    assert out.endswith(f"1 problem(s):\n  {message}\n"), out
    code, _, err = run(capsys, "preprocess", "brats18", brats, "--out", tmp_path / "pre")
    assert code == 2
    assert f"nothing was written (see `massl check-data brats18 {brats}`):\n  {message}" in err
    assert not (tmp_path / "pre").exists()


def test_a_label_may_be_all_background(capsys, brats):
    write_nifti(seg(brats), np.zeros((24, 24, 8), np.int16))  # e.g. a WMH scan without lesions
    code, out, _ = check_data(capsys, "brats18", brats)
    assert code == 0 and "no problems found" in out


def test_nearly_empty_flair_is_a_warning(capsys, brats):
    image = np.zeros((24, 24, 8), np.float32)
    image[10, 10, 2:5] = 100  # 3 of 4608 voxels: below 0.1 %
    write_nifti(flair(brats), image)
    code, out, _ = check_data(capsys, "brats18", brats)
    assert code == 0
    assert (f"1 warning(s):\n  {flair(brats)}: nearly empty image: 3 of 4608 voxels (0.065 %) above the "
            "background value 0; look at it in a viewer (a failed conversion?)\nno problems found\n") in out


def test_a_scan_blanked_by_clip_below_is_refused_by_preprocess(capsys, tmp_path, brats):
    image, _ = scan((24, 24, 8), seed=0)
    write_nifti(flair(brats), image / image.max())  # a 0..1 export; BraTS clips below 30
    code, _, err = run(capsys, "preprocess", "brats18", brats, "--out", tmp_path / "pre")
    assert code == 2
    assert err.splitlines()[-1] == (f"massl preprocess: error: {flair(brats)}: blank after preprocessing: every "
                                    "voxel is below clip_below 30 (the image maximum is 1); set "
                                    "preprocess.clip_below lower or to null for data on this intensity scale")


# 3. 4-D volumes -------------------------------------------------------------------------------

def test_trailing_axis_of_length_1_is_squeezed_and_said(capsys, tmp_path, brats):
    image, label = scan((24, 24, 8), seed=1, label_values=(2, 1, 4))
    write_nifti(flair(brats), image[..., None])
    write_nifti(seg(brats), label[..., None])
    code, out, _ = check_data(capsys, "brats18", brats)
    assert code == 0, out
    assert "shapes (x y z): 24x24x8 (3)" in out
    assert (f"  2 file(s) of shape x y z 1 read as 3-D (the axis of length 1 dropped), e.g. {flair(brats)}\n"
            in out)
    assert out.endswith("no problems found\n")
    assert main(["preprocess", "brats18", str(brats), "--out", str(tmp_path / "pre")]) == 0
    store = CaseStore(tmp_path / "pre")
    assert store.image(CASE).shape == (8, 200, 200)
    assert store.meta(CASE)["original_shape_xyz"] == [24, 24, 8]


def test_a_real_fourth_dimension_is_refused_with_a_hint(capsys, brats):
    image, _ = scan((24, 24, 8), seed=1)
    write_nifti(flair(brats), np.stack([image] * 4, axis=-1))
    code, out, _ = check_data(capsys, "brats18", brats)
    assert code == 1
    assert out.endswith(f"  {flair(brats)}: 4-D image with 4 volumes in one file (shape 24x24x8x4): give one "
                        "3-D volume per file (e.g. split it with fslsplit)\n")


# 4. layout mistakes ---------------------------------------------------------------------------

def test_the_folder_above_the_dataset(capsys, brats):
    code, out, err = check_data(capsys, "brats18", brats.parent)
    assert (code, out) == (2, "")
    assert err == (f"massl check-data: error: {brats.parent}: found MICCAI_BraTS_2018_Data_Training/ inside: "
                   f"point at that folder ({brats})\n")


def test_case_folder_name_and_file_prefix_differ(capsys, brats):
    folder = brats / "HGG" / "Brats18_CBICA_AAC_1"
    (brats / "HGG" / CASE).rename(folder)  # holds Brats18_CBICA_AAB_1_{flair,seg}.nii.gz
    code, out, _ = check_data(capsys, "brats18", brats)
    assert code == 1
    assert out.endswith(f"1 problem(s):\n  {folder}: holds {CASE}_* files, not Brats18_CBICA_AAC_1_*: the folder "
                        "name and the file prefix must match (rename the folder or the files)\n"), out


def test_empty_case_folder(capsys, brats):
    folder = brats / "HGG" / "Brats18_TCIA08_999_1"
    folder.mkdir()
    code, out, _ = check_data(capsys, "brats18", brats)
    assert code == 1
    assert out.endswith(f"1 problem(s):\n  {folder}: case folder is empty: copy its files in again or remove "
                        "the folder\n"), out


def test_brats_pointed_at_wmh_and_wmh_at_brats(capsys, tmp_path, brats):
    wmh = make_wmh2017(tmp_path)
    code, _, err = check_data(capsys, "brats18", wmh)
    assert code == 2
    assert err == (f"massl check-data: error: {wmh}: no HGG/ folder or Brats18_<site>_<id>_1/ case folders here, "
                   "but site folders holding wmh.nii.gz cases (GE3T/, Singapore/, Utrecht/): is this WMH data? "
                   f"try `massl check-data wmh17 {wmh}`\n")
    code, _, err = check_data(capsys, "wmh17", brats)
    assert code == 2
    assert err == (f"massl check-data: error: {brats}: no case folder with wmh.nii.gz below this folder, but an "
                   f"HGG/ folder: is this BraTS data? try `massl check-data brats18 {brats}`\n")


def test_a_file_where_a_folder_is_expected(capsys, brats):
    code, _, err = check_data(capsys, "brats18", flair(brats))
    assert code == 2
    assert err == f"massl check-data: error: {flair(brats)}: is a file, not a dataset folder: point at {brats}\n"
    loose = brats.parent / "scan.nii.gz"
    write_nifti(loose, scan((8, 8, 4), seed=0)[0])
    code, _, err = check_data(capsys, "brats18", loose)
    assert err == f"massl check-data: error: {loose}: is a file, not a dataset folder: point at {POINT_AT_BRATS}\n"


def test_an_empty_hgg_folder_and_a_packed_download(capsys, tmp_path):
    (tmp_path / "MICCAI_BraTS_2018_Data_Training" / "HGG").mkdir(parents=True)
    code, _, err = check_data(capsys, "brats18", tmp_path / "MICCAI_BraTS_2018_Data_Training")
    hgg = tmp_path / "MICCAI_BraTS_2018_Data_Training" / "HGG"
    assert (code, err) == (2, f"massl check-data: error: {hgg}: folder is empty: point at {POINT_AT_BRATS}\n")
    (tmp_path / "wmh").mkdir()
    (tmp_path / "wmh" / "WMH2017.zip").write_bytes(b"PK")
    code, _, err = check_data(capsys, "wmh17", tmp_path / "wmh")
    assert code == 2
    assert err == (f"massl check-data: error: {tmp_path / 'wmh'}: no cases found (expected case folders with "
                   "wmh.nii.gz and pre/FLAIR.nii.gz); it holds WMH2017.zip: unpack WMH2017.zip first\n")


# 5. exit codes --------------------------------------------------------------------------------

def test_exit_codes_one_meaning_each_and_documented_once(capsys, tmp_path, brats, monkeypatch):
    assert check_data(capsys, "brats18", brats)[0] == 0
    seg(brats, BRATS_HGG[0]).unlink()
    assert check_data(capsys, "brats18", brats)[0] == 1  # problems in the data
    assert check_data(capsys, "brats18", tmp_path / "nowhere")[0] == 2  # not a dataset
    assert run(capsys, "preprocess", "brats18", brats, "--out", tmp_path / "pre")[0] == 2  # unusable data
    with pytest.raises(SystemExit) as usage:
        main(["check-data", "brats2018", str(brats)])  # argparse: a bad choice
    assert usage.value.code == 2

    seg(brats, BRATS_HGG[0]).write_bytes(seg(brats).read_bytes())
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, "preprocess", "brats18", brats, "--out", tmp_path / "file" / "pre")
    assert code == 3 and "cannot write" in err and "Not a directory" in err

    def bug(args):
        raise RuntimeError("an unexpected bug")

    monkeypatch.setattr("massl.data.validate.cli_check_data", bug)
    code, _, err = check_data(capsys, "brats18", brats)
    assert code == 4
    assert "Traceback" in err and "RuntimeError: an unexpected bug" in err
    assert err.endswith("massl check-data: internal error (a bug in massl, not in your input): please report it "
                        "with the traceback above\n")

    help_text = build_parser().format_help()
    assert sorted(EXIT_CODES) == [0, 1, 2, 3, 4]
    for code, text in EXIT_CODES.items():
        assert f"  {code}  {text.split()[0]}" in help_text
