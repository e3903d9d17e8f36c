import json

import nibabel as nib
import numpy as np
import pytest

from massl.cli import main
from massl.data import synthetic
from massl.data.synthetic import MANIFEST, WMH_SITES, brats_grid, generate, tumor_case, wmh_case, wmh_layout
from massl.errors import ConfigError

# Small grids shared by the tests (each new voxel size filters the template once, about 1 s).
SMALL_BRATS = (16, 32, 32)
SMALL_WMH = (8, 30, 30)


def load(path):
    image = nib.load(path)
    return image, np.asarray(image.dataobj)


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    out = tmp_path_factory.mktemp("brats")
    return out, generate("brats18", out, n_cases=3, seed=0)


@pytest.fixture(scope="module")
def wmh(tmp_path_factory):
    out = tmp_path_factory.mktemp("wmh")
    return out, generate("wmh17", out, n_cases=6, seed=0)


def test_brats_layout_dtypes_and_grid(brats):
    out, folders = brats
    hgg = out / "MICCAI_BraTS_2018_Data_Training" / "HGG"
    names = [f"Brats18_SYN_000{i}_1" for i in (1, 2, 3)]
    assert folders == [hgg / name for name in names]
    assert sorted(p.name for p in hgg.iterdir()) == names
    for name in names:
        assert sorted(p.name for p in (hgg / name).iterdir()) == [f"{name}_flair.nii.gz", f"{name}_seg.nii.gz"]
        flair, image = load(hgg / name / f"{name}_flair.nii.gz")
        seg, label = load(hgg / name / f"{name}_seg.nii.gz")
        assert image.shape == label.shape == (64, 64, 32)  # NIfTI (x, y, z) of the (32, 64, 64) zyx grid
        assert flair.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
        np.testing.assert_allclose(np.diag(flair.affine)[:3], [240 / 64, 240 / 64, 155 / 32])
        assert set(np.unique(label)) <= {0, 1, 2, 4} and {2, 4} <= set(np.unique(label))
        brain = image > 0  # skull-stripped: background exactly 0
        assert (image >= 0).all() and 0.1 < brain.mean() < 0.6
        assert 100 < np.median(image[brain]) < 1000  # FLAIR-like values in the hundreds
        assert brain[label > 0].all()  # the tumour lies inside the brain
        assert image[label == 2].mean() > 1.3 * np.median(image[brain & (label == 0)])  # hyperintense oedema
    assert json.loads((out / MANIFEST).read_text())["n_cases"] == 3


def test_brats_brain_fits_the_200_of_240_centre_crop(brats):
    _, folders = brats
    for folder in folders:
        _, image = load(folder / f"{folder.name}_flair.nii.gz")
        rows, cols = np.nonzero(image.any(axis=2))
        margin = 64 * 20 / 240  # the real preprocessing crops 20 of 240 voxels on each side
        assert rows.min() >= margin - 1 and rows.max() <= 63 - margin + 1
        assert cols.min() >= margin - 1 and cols.max() <= 63 - margin + 1
        assert rows.max() - rows.min() > 30  # and the brain fills most of the grid


def test_tumour_parts_and_sizes_vary():
    grid = brats_grid(SMALL_BRATS)
    cases = [tumor_case(0, i, grid) for i in range(8)]
    assert any((c.label == 1).any() for c in cases)  # necrosis in most, not all
    sizes = [(c.label > 0).sum() for c in cases]
    assert max(sizes) > 4 * min(sizes)
    for case in cases:
        assert case.brain[case.label > 0].all()
        core = np.isin(case.label, (1, 4))
        assert core.any() and (case.label == 2).sum() > 0


def test_wmh_layout_sites_ids_and_grids(wmh):
    out, folders = wmh
    expected = {"Utrecht": (["0", "2"], (60, 60, 12)), "Singapore": (["50", "52"], (64, 58, 12)),
                "GE3T": (["100", "101"], (33, 64, 21))}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(expected)
    assert sorted(folders) == sorted(out / site / i for site, (ids, _) in expected.items() for i in ids)
    for site, (ids, shape) in expected.items():
        assert sorted(p.name for p in (out / site).iterdir()) == ids
        for case_id in ids:
            flair, image = load(out / site / case_id / "pre" / "FLAIR.nii.gz")
            mask, label = load(out / site / case_id / "wmh.nii.gz")
            assert image.shape == label.shape == shape
            assert flair.get_data_dtype() == np.float32 and mask.get_data_dtype() == np.uint8
            assert set(np.unique(label)) <= {0, 1, 2} and (label == 1).any()
    spacings = {site: nib.load(out / site / ids[0] / "wmh.nii.gz").header.get_zooms() for site, (ids, _) in
                expected.items()}
    assert len(set(spacings.values())) == 3  # per-site voxel sizes (slice thickness)
    np.testing.assert_allclose(spacings["Utrecht"], (240 * 0.96 / 60, 240 * 0.95 / 60, 48 * 3.0 / 12), rtol=1e-5)


def test_wmh_lesions_in_white_matter_skull_not_stripped_and_other_pathology():
    layout = wmh_layout(12, SMALL_WMH)
    cases = [wmh_case(0, i, grid, site, case_id) for i, site, case_id, grid in layout]
    assert [c.site for c in cases[:3]] == [s.name for s in WMH_SITES]
    assert cases[0].grid.shape == (30, 30, 8)
    for case in cases:
        assert case.brain[case.label > 0].all()
        background = np.median(case.image[~case.brain])
        ring = case.image[~case.brain & (case.image > 4 * background)]
        assert ring.size > 0.03 * (~case.brain).sum()  # bright scalp outside the brain
        assert case.image[case.label == 1].mean() > 1.3 * np.median(case.image[case.brain & (case.label == 0)])
    assert 1 <= sum((c.label == 2).any() for c in cases) <= 8  # about 1 case in 4
    loads = [(c.label == 1).sum() for c in cases]
    assert max(loads) > 3 * min(loads)


def test_same_seed_same_data_other_seed_differs():
    grid = brats_grid(SMALL_BRATS)
    a, b, c = tumor_case(5, 2, grid), tumor_case(5, 2, grid), tumor_case(6, 2, grid)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.image, c.image)
    _, site, case_id, wgrid = wmh_layout(3, SMALL_WMH)[1]
    x, y, z = (wmh_case(seed, 1, wgrid, site, case_id) for seed in (5, 5, 6))
    np.testing.assert_array_equal(x.image, y.image)
    assert not np.array_equal(x.image, z.image)


def test_files_are_byte_identical_across_runs_and_prefixes(tmp_path, wmh):
    out, _ = wmh
    generate("wmh17", tmp_path, n_cases=4, seed=0)  # a prefix of the 6-case set
    for relative in ("Utrecht/0/pre/FLAIR.nii.gz", "GE3T/100/wmh.nii.gz", "Utrecht/2/wmh.nii.gz"):
        assert (tmp_path / relative).read_bytes() == (out / relative).read_bytes()


def test_complete_output_is_skipped_and_changed_output_replaced(tmp_path):
    generate("wmh17", tmp_path, n_cases=3, seed=1, shape=SMALL_WMH)
    flair = tmp_path / "GE3T" / "100" / "pre" / "FLAIR.nii.gz"
    stamp = flair.stat().st_mtime_ns
    generate("wmh17", tmp_path, n_cases=3, seed=1, shape=SMALL_WMH)
    assert flair.stat().st_mtime_ns == stamp

    (tmp_path / "notes.txt").write_text("mine")
    generate("wmh17", tmp_path, n_cases=2, seed=1, shape=SMALL_WMH)
    assert not (tmp_path / "GE3T").exists()  # the third case (and its emptied folders) went away
    assert (tmp_path / "notes.txt").read_text() == "mine"  # files it did not write stay
    assert json.loads((tmp_path / MANIFEST).read_text())["n_cases"] == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_an_interrupted_run_is_cleaned_up_by_the_next(tmp_path, monkeypatch):
    real_make_case = synthetic.make_case

    def crash_on_third(dataset, seed, entry):
        if entry["index"] == 2:
            raise KeyboardInterrupt
        return real_make_case(dataset, seed, entry)

    monkeypatch.setattr(synthetic, "make_case", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        generate("brats18", tmp_path, n_cases=4, seed=0, shape=SMALL_BRATS)
    assert json.loads((tmp_path / MANIFEST).read_text())["complete"] is False
    with pytest.raises(ConfigError, match="no complete synthetic"):
        synthetic.write_preview("brats18", tmp_path, tmp_path / "p.png")
    monkeypatch.undo()
    generate("brats18", tmp_path, n_cases=1, seed=0, shape=SMALL_BRATS)
    names = sorted(p.name for p in tmp_path.rglob("*.nii.gz"))
    assert names == ["Brats18_SYN_0001_1_flair.nii.gz", "Brats18_SYN_0001_1_seg.nii.gz"]


def test_shape_option_sets_the_grids():
    grid = brats_grid((16, 40, 48))
    assert grid.shape == (48, 40, 16)
    np.testing.assert_allclose(grid.spacing, (5.0, 6.0, 155 / 16))
    grids = {site.name: grid for _, site, _, grid in wmh_layout(3, (48, 240, 240))}
    assert grids["Utrecht"].shape == (240, 240, 48)  # the real grids at full scale
    assert grids["Singapore"].shape == (256, 232, 48)
    assert grids["GE3T"].shape == (132, 256, 83)


def test_bad_arguments_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="n_cases must be >= 1"):
        generate("brats18", tmp_path, n_cases=0)
    with pytest.raises(ConfigError, match="shape must be 3 integers"):
        generate("brats18", tmp_path, n_cases=1, shape=(2, 64, 64))
    with pytest.raises(ConfigError, match="unknown"):
        generate("lits", tmp_path)


def test_cli_writes_cases_and_preview(tmp_path):
    png = tmp_path / "preview.png"
    argv = ["synth", "--dataset", "brats18", "--out", str(tmp_path / "b"), "--n-cases", "2",
            "--shape", *map(str, SMALL_BRATS), "--preview", str(png)]
    assert main(argv) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "b").rglob("*_seg.nii.gz"))) == 2
    assert main(["synth", "--dataset", "wmh17", "--out", str(tmp_path / "w"), "--n-cases", "0"]) == 2


def test_ids_stay_unique_beyond_25_cases_per_site():
    ids = [(site.name, case_id) for _, site, case_id, _ in wmh_layout(90)]
    assert len({case_id for _, case_id in ids}) == 90
    assert ids[:3] == [("Utrecht", "0"), ("Singapore", "100"), ("GE3T", "200")]
    assert synthetic.DEFAULT_N_CASES == {"brats18": 210, "wmh17": 60}
