"""`massl predict`: masks come back on the scan's own grid (shape, affine, header), for a file, a
folder of scans or a dataset root; a bad scan is named and does not cost the others their masks."""

import nibabel as nib
import numpy as np
import pytest
from layouts import affine_for, make_brats, scan, write_nifti

from massl.cli import main
from massl.data.preprocess import preprocess_volume
from massl.errors import DataError
from massl.evaluation.predict import find_scans, model_settings, predict_scan, write_mask

GE3T_AFFINE = affine_for(spacing=(1.2, 0.98, 3.0), origin=(-80.0, -120.0, -60.0))


def test_mask_covers_exactly_the_crop_box_on_the_original_grid(tmp_path):
    image, _ = scan((14, 26, 9), seed=0)  # x is padded to 20, y cropped to 20 (rows 3..22)
    path = write_nifti(tmp_path / "ge3t.nii.gz", image, GE3T_AFFINE)
    options = {"crop_xy": [20, 20], "crop_center": "image"}
    mask = predict_scan(path, lambda volume: np.ones(volume.shape, np.float32), "wmh17", options)
    expected = np.zeros((14, 26, 9), np.uint8)
    expected[:, 3:23, :] = 1
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), expected)
    np.testing.assert_array_equal(mask.affine, nib.load(path).affine)
    assert mask.get_data_dtype() == np.uint8


def test_thresholded_probabilities_land_on_the_right_voxels(tmp_path):
    image, _ = scan((24, 24, 8), seed=3)
    path = write_nifti(tmp_path / "flair.nii.gz", image)
    # The "model" returns the preprocessed intensity (BraTS: image / max) as the probability.
    mask = np.asanyarray(predict_scan(path, lambda v: v, "brats18", {"crop_xy": [16, 16]}).dataobj)
    expected = np.zeros(image.shape, np.uint8)
    inside = (np.where(image < 30, 0, image) / image.max() >= 0.5)[4:20, 4:20, :]
    expected[4:20, 4:20, :] = inside
    assert inside.any() and not inside.all()
    np.testing.assert_array_equal(mask, expected)


def test_written_mask_reads_back_with_the_scan_geometry(tmp_path):
    image, _ = scan((14, 26, 9), seed=0)
    source = nib.Nifti1Image(image, GE3T_AFFINE)
    source.set_qform(GE3T_AFFINE, code=1)
    source.set_sform(GE3T_AFFINE, code=2)
    path = tmp_path / "scan.nii.gz"
    nib.save(source, path)
    mask = predict_scan(path, lambda v: (v > 0.5).astype(np.float32), "wmh17", {"crop_xy": [20, 20]})
    write_mask(tmp_path / "out" / "scan_mask.nii.gz", mask)
    first = (tmp_path / "out" / "scan_mask.nii.gz").read_bytes()
    back = nib.load(tmp_path / "out" / "scan_mask.nii.gz")
    assert back.shape == (14, 26, 9)
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_allclose(back.affine, GE3T_AFFINE)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 2
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(mask.dataobj))
    write_mask(tmp_path / "out" / "scan_mask.nii.gz", mask)
    assert (tmp_path / "out" / "scan_mask.nii.gz").read_bytes() == first  # deterministic bytes


def test_find_scans(tmp_path):
    image, _ = scan((8, 8, 4), seed=0)
    one = write_nifti(tmp_path / "scans" / "p1.nii.gz", image)
    write_nifti(tmp_path / "scans" / "p2.nii", image)
    assert find_scans(one, "wmh17") == [("p1", one)]
    assert [name for name, _ in find_scans(tmp_path / "scans", "wmh17")] == ["p1", "p2"]
    root = make_brats(tmp_path, lgg=())
    assert [name for name, _ in find_scans(root, "brats18")] == ["Brats18_2013_10_1", "Brats18_CBICA_AAB_1",
                                                                 "Brats18_TCIA08_167_1"]
    write_nifti(tmp_path / "scans" / "p1.nii", image)
    with pytest.raises(DataError, match="same mask: p1"):
        find_scans(tmp_path / "scans", "wmh17")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no NIfTI scans"):
        find_scans(tmp_path / "empty", "wmh17")


def test_model_settings_prefer_the_recorded_training_section():
    config = {"training": {"patch_size": [8, 8]},
              "datasets": {"tumor": {"format": "brats18", "preprocess": {"crop_xy": [16, 16]},
                                     "training": {"inference_batch": 2}}}}
    fmt, options, train = model_settings({"dataset": "tumor", "config": config}, None, "model.pt")
    assert (fmt, options, train.patch_size, train.inference_batch) == ("brats18", {"crop_xy": [16, 16]}, [8, 8], 2)
    _, _, train = model_settings({"dataset": "tumor", "config": config, "training": {"patch_size": [4, 4]}},
                                 None, "model.pt")
    assert train.patch_size == [4, 4]
    fmt, options, _ = model_settings({"dataset": "tumor", "config": config}, "nnunet", "model.pt")
    assert (fmt, options) == ("nnunet", {})  # another format: that format's defaults


@pytest.fixture
def tiny_model(tmp_path):
    """A saved 2-level 2D CNN, as `massl train` would leave it."""
    torch = pytest.importorskip("torch")
    checkpoint = pytest.importorskip("massl.model.files")
    from massl.config import ModelConfig
    from massl.methods import METHODS
    from massl.model.network import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(spatial_dims=2, channels=[4, 8]), METHODS["cnn"])
    kwargs = {"spatial_dims": 2, "in_channels": 1, "channels": [4, 8], "downsample": "avgpool",
              "rec_channels": 0, "segmentation": True}
    config = {"datasets": {"brats18": {"format": "brats18", "preprocess": {"crop_xy": [16, 16]}}},
              "training": {"patch_size": [8, 8], "inference_batch": 4}}
    path = tmp_path / "run" / "model.pt"
    checkpoint.save_model(path, model, {"dataset": "brats18", "config": config, "model_kwargs": kwargs})
    return path


def test_cli_predict_a_folder(capsys, tmp_path, tiny_model):
    scans = tmp_path / "scans"
    shapes = {"a": (24, 24, 8), "b": (20, 26, 6)}
    for seed, (name, shape) in enumerate(shapes.items()):
        write_nifti(scans / f"{name}.nii.gz", scan(shape, seed)[0], affine_for(origin=(seed, 2.0, 3.0)))
    out = tmp_path / "masks"
    argv = ["predict", "--model", str(tiny_model), "--input", str(scans), "--out", str(out),
            "--device", "cpu", "--threads", "1"]
    assert main(argv) == 0
    for seed, (name, shape) in enumerate(shapes.items()):
        mask = nib.load(out / f"{name}_mask.nii.gz")
        assert mask.shape == shape
        np.testing.assert_allclose(mask.affine, affine_for(origin=(seed, 2.0, 3.0)))
        assert set(np.unique(np.asanyarray(mask.dataobj))) <= {0, 1}

    (scans / "c.nii.gz").write_bytes(b"broken")
    for mask in out.iterdir():
        mask.unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "1 of 3 scan(s) could not be segmented" in err and f"{scans / 'c.nii.gz'}: unreadable" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.nii.gz", "b_mask.nii.gz"]


def test_cli_predict_reports_a_missing_model(capsys, tmp_path):
    write_nifti(tmp_path / "a.nii.gz", scan((8, 8, 4), 0)[0])
    argv = ["predict", "--model", str(tmp_path / "nope.pt"), "--input", str(tmp_path / "a.nii.gz"),
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(argv) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_prediction_uses_the_same_preprocessing_as_training(tmp_path):
    image, _ = scan((24, 24, 8), seed=5)
    path = write_nifti(tmp_path / "flair.nii.gz", image)
    seen = []
    predict_scan(path, lambda v: seen.append(v) or np.zeros_like(v), "brats18", {"crop_xy": [16, 16]})
    expected, _ = preprocess_volume("brats18", image, np.eye(4), {"crop_xy": [16, 16]})
    np.testing.assert_array_equal(seen[0], expected)
