"""Preprocessing: hand-computed crops, clips and normalisations, the label mapping, the way back
to the original grid, and the cached dataset folder (`massl preprocess`)."""

import json

import nibabel as nib
import numpy as np
import pytest
from layouts import make_brats, make_nnunet, make_wmh2022

from massl.cli import main
from massl.data.preprocess import (
    brain_region,
    preprocess_dataset,
    preprocess_label,
    preprocess_volume,
    to_original_space,
)
from massl.config import preprocess_options
from massl.data.store import CASES_COLUMNS, CaseStore
from massl.errors import ConfigError, DataError


def test_brats_clip_crop_and_max_by_hand():
    image = np.arange(30 * 26 * 4, dtype=np.float32).reshape(30, 26, 4)  # x y z
    out, meta = preprocess_volume("brats18", image, np.eye(4), {"crop_xy": [20, 16]})
    expected = np.where(image < 30, 0, image) / image.max()
    np.testing.assert_allclose(out, expected.transpose(2, 1, 0)[:, 5:21, 5:25], rtol=1e-6)
    assert out.dtype == np.float32
    assert meta["box_zyx"] == [[0, 4, 0, 4], [5, 21, 0, 16], [5, 25, 0, 20]]
    assert meta["shape_zyx"] == [4, 16, 20]
    assert meta["original_shape_xyz"] == [30, 26, 4]
    assert meta["normalization"] == {"method": "max", "offset": 0.0, "scale": float(image.max()), "clip": None}


def test_crop_and_pad_round_trip_to_the_original_grid():
    rng = np.random.default_rng(0)
    shape = (13, 26, 9)  # GE3T-like: x is padded to 20 (3 before, 4 after), y cropped to 20
    affine = np.diag([1.2, 0.98, 3.0, 1.0])
    mask = (rng.random(shape) > 0.7).astype(np.uint8)
    _, meta = preprocess_volume("wmh17", rng.random(shape) * 100, affine,
                                {"crop_xy": [20, 20], "crop_center": "image"})
    assert meta["box_zyx"] == [[0, 9, 0, 9], [3, 23, 0, 20], [0, 13, 3, 16]]
    assert meta["spacing_zyx"] == pytest.approx([3.0, 0.98, 1.2])
    label = preprocess_label(mask, meta)
    assert label.shape == (9, 20, 20)
    assert not label[:, :, :3].any() and not label[:, :, 16:].any()  # the padding
    np.testing.assert_array_equal(label[:, :, 3:16], mask.transpose(2, 1, 0)[:, 3:23, :])
    back = to_original_space(label, meta)
    expected = mask.copy()
    expected[:, :3, :] = 0  # y rows outside the crop cannot come back
    expected[:, 23:, :] = 0
    np.testing.assert_array_equal(back, expected)


def test_to_original_space_rejects_a_wrong_grid():
    _, meta = preprocess_volume("nnunet", np.ones((4, 5, 6)), np.eye(4), {})
    with pytest.raises(ValueError, match="not the preprocessed shape"):
        to_original_space(np.zeros((4, 5, 6)), meta)  # x y z instead of z y x


@pytest.mark.parametrize("fmt, values, expected", [
    ("brats18", [0, 1, 2, 4], [0, 1, 1, 1]),  # whole tumour
    ("wmh17", [0, 1, 2], [0, 1, 2]),  # label 2 (other pathology) kept as ignore
    ("nnunet", [0, 1, 3], [0, 1, 0]),  # values that are neither target nor ignore are background
])
def test_label_mapping(fmt, values, expected):
    label = np.array(values, dtype=np.int16).reshape(len(values), 1, 1)
    _, meta = preprocess_volume(fmt, np.ones(label.shape, np.float32) * 50, np.eye(4), {"crop_xy": None})
    out = preprocess_label(label, meta)
    assert out.dtype == np.uint8
    assert out.ravel().tolist() == expected


def head_phantom() -> tuple[np.ndarray, np.ndarray]:
    """(volume, head) in (z, y, x): a bright block with a dark enclosed 'ventricle', and a small
    bright blob not connected to it."""
    volume = np.zeros((10, 20, 20), np.float32)
    head = np.zeros(volume.shape, bool)
    head[2:8, 4:16, 4:16] = True
    volume[head] = 100
    volume[4:6, 8:12, 8:12] = 1
    volume[0, 0:2, 0:2] = 100
    return volume, head


def test_brain_region_largest_component_with_holes_filled():
    volume, head = head_phantom()
    np.testing.assert_array_equal(brain_region(volume, 0.1), head)


def test_brain_percentile_normalisation_by_hand():
    volume, head = head_phantom()
    # Head voxels: 32 of 864 are 1 (3.7 %), the rest 100: p1 = 1, p99.9 = 100.
    out, meta = preprocess_volume("wmh17", volume.transpose(2, 1, 0), np.eye(4), {"crop_xy": None})
    assert meta["normalization"] == {"method": "brain_percentile", "offset": 1.0, "scale": 99.0, "clip": [0.0, 1.0]}
    np.testing.assert_allclose(out, np.clip((volume - 1) / 99, 0, 1))
    assert meta["region_voxels"] == int(head.sum())


def test_brain_zscore_uses_head_statistics():
    volume, head = head_phantom()
    out, meta = preprocess_volume("wmh17", volume.transpose(2, 1, 0), np.eye(4),
                                  {"crop_xy": None, "normalize": "brain_zscore"})
    mean, sd = volume[head].mean(), volume[head].std()
    np.testing.assert_allclose(out, (volume - mean) / sd, rtol=1e-5)
    assert out[head].mean() == pytest.approx(0, abs=1e-5)


def test_crop_centred_on_an_off_centre_head():
    volume = np.zeros((4, 40, 30), np.float32)  # z y x
    volume[:, 2:14, 20:28] = 100
    args = ("wmh17", volume.transpose(2, 1, 0), np.eye(4))
    out, meta = preprocess_volume(*args, {"crop_xy": [10, 16], "normalize": "max"})
    assert meta["box_zyx"][1:] == [[0, 16, 0, 16], [19, 29, 0, 10]]
    assert out.sum() == (volume > 0).sum()  # the whole head is inside
    grid_centre, _ = preprocess_volume(*args, {"crop_xy": [10, 16], "normalize": "max", "crop_center": "image"})
    assert grid_centre.sum() < out.sum()


@pytest.mark.parametrize("options, message", [
    ({"crop": [1, 2]}, "unknown key"),
    ({"normalize": "minmax"}, "normalize = 'minmax'"),
    ({"crop_xy": [200]}, "crop_xy"),
    ({"percentiles": [99, 1]}, "percentiles"),
    ({"target_labels": [1], "ignore_labels": [1]}, "disjoint"),
])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ConfigError, match=message) as err:
        preprocess_options("wmh17", options, "datasets.wmh17.preprocess")
    assert "datasets.wmh17.preprocess" in str(err.value)


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_brats_dataset_cache(tmp_path):
    root = make_brats(tmp_path / "raw")
    out = tmp_path / "pre"
    table = preprocess_dataset("brats18", root, out, {"crop_xy": [16, 16]})
    assert table == out / "cases.tsv"
    header = table.read_text().splitlines()[0].split("\t")
    assert tuple(header) == CASES_COLUMNS
    store = CaseStore(out)
    assert store.case_ids == ["Brats18_2013_10_1", "Brats18_CBICA_AAB_1", "Brats18_TCIA08_167_1"]
    case = "Brats18_CBICA_AAB_1"
    flair = nib.load(root / "HGG" / case / f"{case}_flair.nii.gz")
    seg = np.asanyarray(nib.load(root / "HGG" / case / f"{case}_seg.nii.gz").dataobj)
    expected, _ = preprocess_volume("brats18", flair.get_fdata(), flair.affine, {"crop_xy": [16, 16]})
    np.testing.assert_array_equal(store.image(case), expected)
    assert store.image(case).dtype == np.float32 and store.label(case).dtype == np.uint8
    assert store.label(case).shape == (8, 16, 16)
    assert store.site(case) == "CBICA"
    assert store.spacing(case) == (1.0, 1.0, 1.0)
    meta = store.meta(case)
    assert meta["original_shape_xyz"] == [24, 24, 8]
    np.testing.assert_allclose(meta["affine"], flair.affine)
    row = store.rows[case]
    assert int(row["n_foreground"]) == int((seg[4:20, 4:20, :] > 0).sum()) == meta["n_foreground"]

    before = snapshot(out)
    preprocess_dataset("brats18", root, out, {"crop_xy": [16, 16]})
    assert snapshot(out) == before  # unchanged data and options: nothing rewritten

    preprocess_dataset("brats18", root, out, {"crop_xy": [12, 12]})
    assert CaseStore(out).image(case).shape == (8, 12, 12)


def test_a_changed_source_file_is_redone_alone(tmp_path):
    root = make_brats(tmp_path / "raw", lgg=())
    out = tmp_path / "pre"
    preprocess_dataset("brats18", root, out, {"crop_xy": [16, 16]})
    before = snapshot(out)
    flair = root / "HGG" / "Brats18_2013_10_1" / "Brats18_2013_10_1_flair.nii.gz"
    img = nib.load(flair)
    nib.save(nib.Nifti1Image(img.get_fdata() * 2, img.affine), flair)
    preprocess_dataset("brats18", root, out, {"crop_xy": [16, 16]})
    after = snapshot(out)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"Brats18_2013_10_1.image.npy", "Brats18_2013_10_1.label.npy", "Brats18_2013_10_1.json"}


def test_wmh_sites_share_one_in_plane_grid(tmp_path):
    out = tmp_path / "pre"
    preprocess_dataset("wmh17", make_wmh2022(tmp_path), out, {"crop_xy": [20, 20]})
    store = CaseStore(out)
    shapes = {c: store.image(c).shape for c in store.case_ids}
    assert shapes["GE3T_200"] == (9, 20, 20) and shapes["Utrecht_0"] == (6, 20, 20)
    assert shapes["Site A.v2_300"] == (5, 20, 20)
    assert store.site("Site A.v2_300") == "Site A.v2"
    assert all(0 <= store.image(c).min() and store.image(c).max() <= 1 for c in store.case_ids)
    assert set(np.unique(store.label("Utrecht_0"))) == {0, 1, 2}


def test_nnunet_ignore_label_from_dataset_json(capsys, tmp_path):
    root = make_nnunet(tmp_path)  # labels background 0, lesion 1, ignore 2
    out = tmp_path / "pre"
    assert main(["preprocess", "nnunet", str(root), "--out", str(out), "--channel", "FLAIR"]) == 0
    store = CaseStore(out)
    meta = store.meta("lesion_000")
    assert meta["options"]["ignore_labels"] == [2]
    assert meta["source"]["image"][0].endswith("lesion_000_0001.nii.gz")
    raw = np.asanyarray(nib.load(root / "labelsTr" / "lesion_000.nii.gz").dataobj)
    np.testing.assert_array_equal(store.label("lesion_000"), raw.transpose(2, 1, 0))


def test_refuses_bad_data_before_writing_anything(tmp_path):
    root = make_brats(tmp_path / "raw", lgg=())
    (root / "HGG" / "Brats18_2013_10_1" / "Brats18_2013_10_1_seg.nii.gz").unlink()
    with pytest.raises(DataError, match="Brats18_2013_10_1_seg.nii.gz: missing label file"):
        preprocess_dataset("brats18", root, tmp_path / "pre", {})
    assert not (tmp_path / "pre").exists()


def test_a_new_problem_leaves_earlier_outputs_untouched(tmp_path):
    root = make_brats(tmp_path / "raw", lgg=())
    out = tmp_path / "pre"
    preprocess_dataset("brats18", root, out, {"crop_xy": [16, 16]})
    before = snapshot(out)
    (root / "HGG" / "Brats18_TCIA08_167_1" / "Brats18_TCIA08_167_1_flair.nii.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DataError, match="Brats18_TCIA08_167_1_flair.nii.gz: unreadable"):
        preprocess_dataset("brats18", root, out, {"crop_xy": [16, 16]})
    assert snapshot(out) == before


def write_config(path, root, split, preprocess):
    """A workflow config of one real-data dataset `tumor` (resolve_config accepts it)."""
    probe = {"dataset": "tumor", "n_images": 1, "score": "in_sample"}
    path.write_text(json.dumps({"datasets": {"tumor": {"format": "brats18", "root": str(root), "preprocess": preprocess,
                                                       "split": split, "settings": {"1L1U": [1, 1]}}},
                                "probe": probe}))
    return path


def test_cli_takes_options_and_split_size_from_the_config(capsys, tmp_path):
    root = make_brats(tmp_path / "raw", lgg=())
    out = tmp_path / "pre"
    config = write_config(tmp_path / "config.json", root, {"pool": 2, "validation": None, "test": 2},
                          {"crop_xy": [16, 16]})
    argv = ["preprocess", "brats18", str(root), "--out", str(out), "--config", str(config), "--dataset", "tumor"]
    assert main(argv) == 2
    assert f"found 3 cases in {root}, the split needs 4 (pool 2 + test 2)" in capsys.readouterr().err
    assert not out.exists()

    write_config(config, root, {"pool": 2, "test": 1}, {"crop_xy": [16, 16]})
    assert main(argv) == 0
    assert CaseStore(out).image("Brats18_2013_10_1").shape == (8, 16, 16)

    assert main(argv[:-2]) == 2  # no dataset 'brats18' in this config
    assert "no dataset 'brats18'" in capsys.readouterr().err
    write_config(config, root, {"pool": 2, "test": 1}, {"crop_size": [16, 16]})
    assert main(argv) == 2
    assert "unknown key(s) in datasets.tumor.preprocess: crop_size" in capsys.readouterr().err
