"""Discovery of cases in the real folder layouts: BraTS HGG/LGG, WMH 2017 zip and 2022 release,
nnU-Net raw (v1 and v2 dataset.json)."""

import json

import pytest
from layouts import BRATS_HGG, BRATS_LGG, make_brats, make_nnunet, make_wmh2017, make_wmh2022

from massl.data.discover import DataFileError, LayoutError, case_folder, discover, read_nnunet_dataset


def test_brats_hgg_only_by_default(tmp_path):
    root = make_brats(tmp_path)
    cases = discover("brats18", root)
    assert [c.case_id for c in cases] == sorted(BRATS_HGG)
    assert [c.site for c in cases] == ["2013", "CBICA", "TCIA08"]
    case = cases[1]
    assert case.image == root / "HGG" / "Brats18_CBICA_AAB_1" / "Brats18_CBICA_AAB_1_flair.nii.gz"
    assert case.label == root / "HGG" / "Brats18_CBICA_AAB_1" / "Brats18_CBICA_AAB_1_seg.nii.gz"


def test_brats_with_lgg_and_from_the_hgg_folder(tmp_path):
    root = make_brats(tmp_path)
    assert [c.case_id for c in discover("brats18", root, include_lgg=True)] == sorted(BRATS_HGG + BRATS_LGG)
    assert [c.case_id for c in discover("brats18", root / "HGG")] == sorted(BRATS_HGG)
    with pytest.raises(DataFileError, match="HGG/ and LGG/"):
        discover("brats18", root / "HGG", include_lgg=True)


def test_brats_lgg_requested_but_absent(tmp_path):
    root = make_brats(tmp_path, lgg=())
    with pytest.raises(DataFileError, match="LGG folder not found") as err:
        discover("brats18", root, include_lgg=True)
    assert err.value.path == root / "LGG"


def test_wmh_2017_zip_layout(tmp_path):
    root = make_wmh2017(tmp_path)
    cases = discover("wmh17", root)
    assert [c.case_id for c in cases] == ["GE3T_100", "GE3T_101", "Singapore_50", "Singapore_51",
                                          "Utrecht_0", "Utrecht_1"]
    assert {c.site for c in cases} == {"GE3T", "Singapore", "Utrecht"}
    assert cases[0].image == root / "GE3T" / "100" / "pre" / "FLAIR.nii.gz"
    assert cases[0].label == root / "GE3T" / "100" / "wmh.nii.gz"


def test_wmh_2022_release_uses_training_only_and_odd_site_names(tmp_path):
    root = make_wmh2022(tmp_path)
    cases = discover("wmh17", root)
    ids = [c.case_id for c in cases]
    assert ids == ["GE3T_200", "GE3T_201", "Singapore_100", "Singapore_101", "Site A.v2_300", "Site A.v2_301",
                   "Utrecht_0", "Utrecht_1"]
    assert cases[0].image == root / "training" / "Amsterdam" / "GE3T" / "200" / "pre" / "FLAIR.nii.gz"
    assert cases[4].site == "Site A.v2"
    assert not any("GE1T5" in c.case_id for c in cases)  # test/ of the 2022 release is left out


def test_nnunet_v2_channel_by_name(tmp_path):
    root = make_nnunet(tmp_path)
    with pytest.raises(DataFileError, match="0=T1, 1=FLAIR"):
        discover("nnunet", root)
    cases = discover("nnunet", root, channel="flair")
    assert [c.case_id for c in cases] == ["lesion_000", "lesion_001", "lesion_002"]
    assert cases[0].image == root / "imagesTr" / "lesion_000_0001.nii.gz"
    assert cases[0].label == root / "labelsTr" / "lesion_000.nii.gz"
    assert discover("nnunet", root, channel="0")[0].image.name == "lesion_000_0000.nii.gz"
    with pytest.raises(DataFileError, match="no channel 'T2'"):
        discover("nnunet", root, channel="T2")


def test_nnunet_v1_dataset_json(tmp_path):
    root = make_nnunet(tmp_path, channels=("FLAIR",), v2=False)
    spec = read_nnunet_dataset(root)
    assert spec.channels == {0: "FLAIR"}
    assert spec.labels == {"background": [0], "lesion": [1]}
    assert spec.ignore_value is None
    assert len(discover("nnunet", root)) == 3


def test_nnunet_region_labels_and_ignore(tmp_path):
    root = make_nnunet(tmp_path, channels=("FLAIR",))
    spec = json.loads((root / "dataset.json").read_text())
    spec["labels"] = {"background": 0, "whole": [1, 3], "ignore": 5}
    (root / "dataset.json").write_text(json.dumps(spec))
    info = read_nnunet_dataset(root)
    assert info.label_values == {0, 1, 3, 5}
    assert info.ignore_value == 5


def test_nnunet_case_with_label_but_no_image_is_listed(tmp_path):
    root = make_nnunet(tmp_path, channels=("FLAIR",))
    (root / "imagesTr" / "lesion_001_0000.nii.gz").unlink()
    cases = discover("nnunet", root)
    assert [c.case_id for c in cases] == ["lesion_000", "lesion_001", "lesion_002"]
    assert not cases[1].image.exists()  # the check names it as missing


def test_missing_root_and_missing_dataset_json(tmp_path):
    with pytest.raises(DataFileError, match="dataset folder not found"):
        discover("wmh17", tmp_path / "nowhere")
    (tmp_path / "raw" / "imagesTr").mkdir(parents=True)
    with pytest.raises(DataFileError, match="dataset.json not found"):
        discover("nnunet", tmp_path / "raw")


def test_case_folder_is_named_as_the_readers_name_it(tmp_path):
    brats = make_brats(tmp_path, lgg=())
    wmh = make_wmh2022(tmp_path)
    for root, fmt in ((brats, "brats18"), (wmh, "wmh17")):
        for case in discover(fmt, root):
            assert case_folder(case.image.parent if fmt == "brats18" else case.image.parent.parent) == case
    assert case_folder(brats / "HGG") is None and case_folder(wmh / "training") is None


def test_layout_errors_say_where_the_dataset_is(tmp_path):
    root = make_nnunet(tmp_path / "download", channels=("FLAIR",))
    with pytest.raises(LayoutError) as err:
        discover("nnunet", tmp_path / "download")
    assert err.value.problem == f"found Dataset501_Lesions/ inside: point at that folder ({root})"
    brats = make_brats(tmp_path / "b", lgg=())
    with pytest.raises(LayoutError) as err:
        discover("nnunet", brats)
    assert (err.value.looks_like, err.value.at) == ("brats18", brats)
    with pytest.raises(LayoutError) as err:
        discover("brats18", root)
    assert (err.value.looks_like, err.value.at) == ("nnunet", root)


def test_a_grade_folder_with_a_stray_folder_keeps_listing_it(tmp_path):
    hgg = make_brats(tmp_path, lgg=()) / "HGG"
    (hgg / "notes").mkdir()
    assert [c.case_id for c in discover("brats18", hgg)] == sorted(BRATS_HGG) + ["notes"]  # the check names it
