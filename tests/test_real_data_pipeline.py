"""End to end on tiny files in each real layout: discovery and preprocessing, a split, a
two-iteration training and `massl predict` back in the scan's own space (issue: real data)."""

import json
from functools import partial

import nibabel as nib
import numpy as np
import pytest

from massl.cli import main
import layouts

LAYOUTS = {
    # key: (format, builder, extra CLI flags, crop, expected case count)
    "brats18": ("brats18", layouts.make_brats, ["--include-lgg"], [24, 24], 6),
    "wmh2017": ("wmh17", layouts.make_wmh2017, [], [24, 24], 6),
    "wmh2022": ("wmh17", layouts.make_wmh2022, [], [24, 24], 8),
    "lesions": ("nnunet", partial(layouts.make_nnunet, n_cases=4), ["--channel", "FLAIR"], [16, 16], 4),
}


def _config(tmp_path, key, fmt, root, crop):
    return {
        "results_dir": str(tmp_path / "results"),
        "scale": "test",
        "datasets": {key: {
            "format": fmt, "root": str(root),
            "preprocess": {"crop_xy": crop},
            "split": {"pool": 2, "validation": None, "test": 1, "balance_by": None},
            "settings": {"1L1U": [1, 1]},
        }},
        "model": {"spatial_dims": 2, "channels": [4, 8, 16]},
        "training": {"patch_size": [16, 16], "batch_size": 1, "max_iterations": 2, "validate_every_epochs": 1,
                     "checkpoint_every_iterations": 1, "augment": False},
        "methods": ["cnn"],
        "probe": {"dataset": key, "setting": "1L1U", "methods": ["cnn"], "n_images": 1, "score": "in_sample"},
    }


@pytest.mark.parametrize("key", LAYOUTS)
def test_layout_preprocess_train_predict(tmp_path, key):
    fmt, build, flags, crop, n_cases = LAYOUTS[key]
    root = build(tmp_path / "raw")
    config = _config(tmp_path, key, fmt, root, crop)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    results = tmp_path / "results"

    assert main(["check-data", fmt, str(root), *flags]) == 0
    assert main(["preprocess", fmt, str(root), "--out", str(results / "preprocessed" / key),
                 "--config", str(config_path), "--dataset", key, *flags]) == 0
    cases = (results / "preprocessed" / key / "cases.tsv").read_text().splitlines()
    assert len(cases) == 1 + n_cases

    assert main(["split", "--cases", str(results / "preprocessed" / key / "cases.tsv"), "--dataset", key,
                 "--rep", "1", "--out", str(results / "splits" / key / "rep1.json"), "--config", str(config_path)]) == 0
    run = results / "runs" / key / "1L1U" / "cnn" / "rep1"
    assert main(["train", "--config", str(config_path), "--dataset", key, "--setting", "1L1U", "--method", "cnn",
                 "--rep", "1", "--split", str(results / "splits" / key / "rep1.json"),
                 "--cases", str(results / "preprocessed" / key / "cases.tsv"), "--out", str(run),
                 "--threads", "1", "--device", "cpu"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["status"] == "converged"
    assert summary["data_source"] == "real"

    # predict on one raw scan of the layout: the mask has the scan's own shape and affine
    scan = next(p for p in sorted(root.rglob("*.nii.gz")) if "flair" in p.name.lower() or "_0001" in p.name)
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(run / "model.pt"), "--input", str(scan), "--out", str(out)]) == 0
    masks = list(out.glob("*_mask.nii.gz"))
    assert len(masks) == 1
    mask, source = nib.load(masks[0]), nib.load(scan)
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
