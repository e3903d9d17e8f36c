"""Issue 15, `massl predict`: a case folder gives the mask of its FLAIR only (labels and other
modalities skipped and named), 4-D and blank scans, and a folder in another layout (the message
suggests --format). Files in the real BraTS 2018 / WMH 2017 layouts; exact messages and exit codes."""

import logging

import nibabel as nib
import numpy as np
from layouts import make_brats, make_wmh2017, scan, write_nifti, write_wmh_case
from test_predict import tiny_model  # noqa: F401 (a fixture: a saved 2D CNN trained on brats18 data)

from massl.cli import main
from massl.evaluation.predict import find_scans

CASE = "Brats18_CBICA_AAB_1"


def predict(model, source, out, *extra):
    return main(["predict", "--model", str(model), "--input", str(source), "--out", str(out),
                 "--device", "cpu", "--threads", "1", *map(str, extra)])


# 2. a case folder: its FLAIR, nothing else ----------------------------------------------------

def test_brats_case_folder_segments_its_flair_only(caplog, tmp_path, tiny_model):
    folder = make_brats(tmp_path, hgg=(CASE,), lgg=(), all_modalities=True) / "HGG" / CASE
    caplog.set_level(logging.INFO, logger="massl.evaluation.predict")
    assert predict(tiny_model, folder, tmp_path / "masks") == 0
    assert [p.name for p in (tmp_path / "masks").iterdir()] == [f"{CASE}_mask.nii.gz"]
    assert (f"{folder}: skipped 4 file(s) that are labels or other modalities, not the FLAIR: {CASE}_seg.nii.gz, "
            f"{CASE}_t1.nii.gz, {CASE}_t1ce.nii.gz, {CASE}_t2.nii.gz") in caplog.messages


def test_wmh_case_folder_finds_pre_flair(caplog, tmp_path):
    folder = tmp_path / "Utrecht" / "0"
    write_wmh_case(folder, (24, 24, 6), seed=0, t1=True)
    caplog.set_level(logging.INFO, logger="massl.evaluation.predict")
    assert find_scans(folder, "wmh17") == [("Utrecht_0", folder / "pre" / "FLAIR.nii.gz")]
    assert (f"{folder}: skipped 2 file(s) that are labels or other modalities, not the FLAIR: T1.nii.gz, "
            "wmh.nii.gz") in caplog.messages


def test_folder_of_loose_files_skips_labels(caplog, tmp_path):
    image, label = scan((8, 8, 4), seed=0)
    for name, data in (("p1", image), ("p1_seg", label), ("p2_flair", image), ("wmh", label)):
        write_nifti(tmp_path / "scans" / f"{name}.nii.gz", data)
    caplog.set_level(logging.INFO, logger="massl.evaluation.predict")
    assert [name for name, _ in find_scans(tmp_path / "scans", "wmh17")] == ["p1", "p2_flair"]
    assert any("skipped 2 file(s)" in m and "p1_seg.nii.gz, wmh.nii.gz" in m for m in caplog.messages)


# 3. 4-D scans; 1. blank scans -----------------------------------------------------------------

def test_x_y_z_1_scan_gets_a_mask_of_its_shape_and_a_blank_one_is_named(capsys, tmp_path, tiny_model):
    image, _ = scan((24, 24, 8), seed=2)
    write_nifti(tmp_path / "scans" / "a.nii.gz", image[..., None])
    assert predict(tiny_model, tmp_path / "scans", tmp_path / "masks") == 0
    mask = nib.load(tmp_path / "masks" / "a_mask.nii.gz")
    assert mask.shape == (24, 24, 8, 1)
    assert set(np.unique(np.asanyarray(mask.dataobj))) <= {0, 1}

    write_nifti(tmp_path / "scans" / "b.nii.gz", np.zeros((24, 24, 8), np.float32))
    assert predict(tiny_model, tmp_path / "scans", tmp_path / "masks") == 2
    err = capsys.readouterr().err
    assert (f"1 of 2 scan(s) could not be segmented:\n  {tmp_path / 'scans' / 'b.nii.gz'}: constant image (every "
            "voxel is 0): a blank scan, e.g. from a failed conversion; convert it again or leave the case out") in err


# 4. a folder in another layout than the model's -----------------------------------------------

def test_a_folder_the_models_format_cannot_read_suggests_format(capsys, tmp_path, tiny_model):
    wmh = make_wmh2017(tmp_path, per_site=1)
    assert predict(tiny_model, wmh, tmp_path / "masks") == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"massl predict: error: {wmh}: no NIfTI scans (*.nii.gz, *.nii) and no brats18 dataset (no HGG/ folder or "
        "Brats18_<site>_<id>_1/ case folders here, but site folders holding wmh.nii.gz cases (GE3T/, Singapore/, "
        "Utrecht/): is this WMH data?); the model reads brats18 data; to read this folder as wmh17, pass "
        "--format wmh17")
    # what --format wmh17 reads (segmenting at the wmh17 defaults' 200 x 200 grid takes a minute on CPU)
    assert [name for name, _ in find_scans(wmh, "wmh17")] == ["GE3T_100", "Singapore_50", "Utrecht_0"]

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("")
    assert predict(tiny_model, tmp_path / "other", tmp_path / "masks") == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "give a FLAIR file, a folder of them, a case folder or a brats18 dataset folder (data in another layout: "
        "pass --format)")
