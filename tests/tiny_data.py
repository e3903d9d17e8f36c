"""A tiny preprocessed dataset and config for whole training runs in seconds on one CPU core:
8 volumes of 8 x 32 x 32 voxels (a bright disk through all slices, label 1), a 2D network with
4-8-16 channels, and a split file with the settings 2L2U and 2L1U."""

import json

import numpy as np

SHAPE = (8, 32, 32)
CASE_COLUMNS = ("case_id", "site", "shape_zyx", "spacing_zyx", "image", "label", "meta", "n_foreground")


def write_dataset(results, n_cases=8, seed=0):
    """Preprocessed cases (a bright disk through all slices, label 1) and a split file."""
    rng = np.random.default_rng(seed)
    folder = results / "preprocessed" / "brats18"
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    rows, ids = ["\t".join(CASE_COLUMNS)], []
    for i in range(n_cases):
        case = f"case{i:02d}"
        cy, cx, radius = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 8)
        label = np.repeat(((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2)[None], SHAPE[0], axis=0).astype(np.uint8)
        image = np.clip(0.2 + 0.6 * label + rng.normal(0, 0.05, SHAPE), 0, 1).astype(np.float32)
        np.save(folder / f"{case}.image.npy", image)
        np.save(folder / f"{case}.label.npy", label)
        (folder / f"{case}.json").write_text("{}")
        rows.append("\t".join((case, f"site{i % 2}", "8x32x32", "1.0x1.0x1.0", f"{case}.image.npy",
                               f"{case}.label.npy", f"{case}.json", str(int(label.sum())))))
        ids.append(case)
    (folder / "cases.tsv").write_text("\n".join(rows) + "\n")
    split = {"dataset": "brats18", "rep": 1, "seed": 1, "pool": ids[:4], "validation": ids[4:6], "test": ids[6:8],
             "settings": {"2L2U": {"labeled": ids[:2], "unlabeled": ids[2:4]},
                          "2L1U": {"labeled": ids[:2], "unlabeled": ids[2:3]}}}
    (results / "splits" / "brats18").mkdir(parents=True)
    (results / "splits" / "brats18" / "rep1.json").write_text(json.dumps(split))
    return split


def tiny_config(results, **training):
    """A workflow config for the tiny dataset (`massl.config.resolve_config` accepts it)."""
    return {
        "results_dir": str(results),
        "scale": "test",
        "datasets": {"brats18": {"format": "brats18", "root": None, "synthetic": {"n_cases": 8, "shape": list(SHAPE)},
                                 "split": {"pool": 4, "validation": 2, "test": 2},
                                 "settings": {"2L2U": [2, 2], "2L1U": [2, 1]}}},
        "model": {"spatial_dims": 2, "channels": [4, 8, 16]},
        "training": {"patch_size": [32, 32], "batch_size": 2, "epochs_by_labeled": [[20, 100]],
                     "max_iterations": 30, "validate_every_epochs": 5, "checkpoint_every_iterations": 5,
                     **training},
        "probe": {"n_images": 2},
    }


def run_inputs(results, dataset="brats18", rep=1):
    """The split file and case table of a run on the tiny dataset (resolve_run's split=, cases=)."""
    return {"split": results / "splits" / dataset / f"rep{rep}.json",
            "cases": results / "preprocessed" / dataset / "cases.tsv"}


def run_args(results, dataset="brats18", rep=1):
    """The same as `massl train` / `massl probe` options."""
    paths = run_inputs(results, dataset, rep)
    return ["--split", str(paths["split"]), "--cases", str(paths["cases"])]
