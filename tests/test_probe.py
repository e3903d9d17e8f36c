import argparse
import csv
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from massl import config as massl_config
from massl.data.store import CaseStore
from massl.errors import ConfigError, DataError
from massl.model.network import MASSLNet
from massl.config import probe_options
from massl.evaluation.probe import cli_probe, draw_cases, encoder_features, pooled_target, probe_level, run_probe

torch.set_num_threads(1)
CHANNELS = (4, 8, 16)


def tiny_model(spatial_dims=2):
    torch.manual_seed(0)
    return MASSLNet(spatial_dims, channels=CHANNELS, rec_channels=0).eval()


@pytest.mark.parametrize(
    "spatial_dims, shape, expected",
    [
        (2, (3, 13, 10), [(4, 3, 13, 10), (8, 3, 7, 5), (16, 3, 4, 3)]),
        (3, (5, 9, 6), [(4, 5, 9, 6), (8, 3, 5, 3), (16, 2, 3, 2)]),
    ],
)
def test_feature_shapes_per_level(spatial_dims, shape, expected):
    volume = np.random.default_rng(0).random(shape, dtype=np.float32)
    feats = encoder_features(tiny_model(spatial_dims), volume, slice_batch=2)
    assert [f.shape for f in feats] == expected


def test_2d_features_are_the_slices_stacked_along_z():
    model = tiny_model(2)
    volume = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    feats = encoder_features(model, volume, slice_batch=2)
    for z in range(3):
        direct = model.encode(torch.from_numpy(volume[z])[None, None])
        for level, f in enumerate(feats):
            np.testing.assert_allclose(f[:, z], direct[level][0].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_pooled_target_block_means():
    label = np.array(
        [[[1, 1, 0, 0],
          [1, 0, 0, 2],
          [0, 0, 1, 1],
          [0, 0, 1, 1]]], np.uint8)
    # 2x2 blocks: top-left 3/4, top-right 0 (label 2 is background), bottom-left 0, bottom-right 1
    np.testing.assert_allclose(pooled_target(label, (1, 2, 2)), [[[0.75, 0.0], [0.0, 1.0]]])


def test_pooled_target_border_cells_average_real_voxels_only():
    label = np.array([[[1, 0, 1]]], np.uint8)
    # factor 2 on x: cells {x0, x1} -> 1/2 and {x2} (+ padding) -> 1/1
    np.testing.assert_allclose(pooled_target(label, (1, 1, 2)), [[[0.5, 1.0]]])
    # factor 4 (the encoder's level 3 grid of a 3-voxel axis is 1 cell): 2/3
    np.testing.assert_allclose(pooled_target(label, (1, 1, 1)), [[[2 / 3]]])
    with pytest.raises(ValueError, match="power of two"):
        pooled_target(np.zeros((1, 1, 6)), (1, 1, 5))


def in_sample_r2(features, targets, **kwargs):
    return probe_level(features, targets, "in_sample", min_samples_per_feature=0, **kwargs)["r2"]


def test_in_sample_r2_hand_computed():
    # x = 0, 1, 2, 3 and y = 0, 1, 1, 2 over two images. Least squares: slope 3 / 5 = 0.6,
    # intercept 1 - 0.6 * 1.5 = 0.1, residuals -0.1, 0.3, -0.3, 0.1 -> SS_res = 0.2,
    # SS_tot = 1 + 0 + 0 + 1 = 2 -> R^2 = 1 - 0.2 / 2 = 0.9
    features = [np.array([[0.0, 1.0]]), np.array([[2.0, 3.0]])]
    targets = [np.array([0.0, 1.0]), np.array([1.0, 2.0])]
    assert in_sample_r2(features, targets) == pytest.approx(0.9)


def test_held_out_r2_hand_computed():
    # Images {x = 0, 1; y = 0, 1} and {x = 2, 3; y = 3, 2}. Fit on image 2 (slope -1,
    # intercept 5), predict 5, 4 for image 1; fit on image 1 (slope 1, intercept 0), predict
    # 2, 3 for image 2. Pooled: y = 0, 1, 3, 2, mean 1.5, SS_tot = 5; SS_res = 25 + 9 + 1 + 1
    # = 36 -> R^2 = 1 - 36 / 5 = -6.2
    features = [np.array([[0.0, 1.0]]), np.array([[2.0, 3.0]])]
    targets = [np.array([0.0, 1.0]), np.array([3.0, 2.0])]
    row = probe_level(features, targets, "held_out", min_samples_per_feature=0)
    assert row == {"r2": pytest.approx(-6.2), "n_voxels": 2, "n_features": 1, "reason": ""}


def test_in_sample_r2_is_ordinary_least_squares_with_an_intercept():
    """`in_sample` is the paper's (and the previous release's) R^2: numpy's least squares on the
    same (subsampled) voxels gives the same number."""
    rng = np.random.default_rng(1)
    targets = [rng.random((3, 10, 10)) for _ in range(3)]
    features = [np.stack([t + rng.normal(scale=0.5, size=t.shape) for _ in range(4)]) for t in targets]
    x = np.concatenate([f.reshape(4, -1).T for f in features])
    y = np.concatenate([t.reshape(-1) for t in targets])
    design = np.column_stack([x, np.ones(len(y))])
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    expected = 1 - residual @ residual / ((y - y.mean()) @ (y - y.mean()))
    assert in_sample_r2(features, targets) == pytest.approx(expected, rel=1e-9)
    # Subsampling picks voxels by rng(seed) over the pooled images, as before.
    chosen = np.sort(np.random.default_rng(7).choice(len(y), size=500, replace=False))
    residual = y[chosen] - design[chosen] @ np.linalg.lstsq(design[chosen], y[chosen], rcond=None)[0]
    expected = 1 - residual @ residual / ((y[chosen] - y[chosen].mean()) @ (y[chosen] - y[chosen].mean()))
    assert in_sample_r2(features, targets, max_voxels=500, seed=7) == pytest.approx(expected, rel=1e-9)


def test_random_features_score_high_in_sample_and_nothing_held_out():
    """The issue's demo case: 5 images of 64 voxels, 256 features that know nothing of the
    target. In-sample R^2 is about 256 / 319 whatever the features; held out it is not > 0."""
    rng = np.random.default_rng(0)
    targets = [rng.random((1, 8, 8)) for _ in range(5)]
    noise = [rng.normal(size=(256, 1, 8, 8)) for _ in targets]
    assert in_sample_r2(noise, targets) > 0.7
    held_out = probe_level(noise, targets, "held_out", min_samples_per_feature=0)["r2"]
    assert held_out < 0.0
    # Well determined (2,000 samples, 8 features): in-sample near 0, held out not above it.
    targets = [rng.random((4, 10, 10)) for _ in range(5)]
    noise = [rng.normal(size=(8, 4, 10, 10)) for _ in targets]
    assert in_sample_r2(noise, targets) < 0.02
    assert probe_level(noise, targets, "held_out")["r2"] < 0.005


@pytest.mark.parametrize("score", ["held_out", "in_sample"])
def test_features_that_determine_the_target_score_one(score):
    rng = np.random.default_rng(0)
    targets = [rng.random((4, 30, 30)) for _ in range(3)]
    encoded = [np.stack([2 * t + 1, rng.normal(size=t.shape), rng.normal(size=t.shape)]) for t in targets]
    assert probe_level(encoded, targets, score)["r2"] == pytest.approx(1.0, abs=1e-9)
    assert probe_level(encoded, targets, score, max_voxels=500)["r2"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("score, n_fit", [("held_out", 256), ("in_sample", 320)])
def test_under_determined_level_is_refused_with_the_reason(score, n_fit):
    rng = np.random.default_rng(0)
    targets = [rng.random((1, 8, 8)) for _ in range(5)]
    features = [rng.normal(size=(256, 1, 8, 8)) for _ in targets]
    row = probe_level(features, targets, score)
    assert math.isnan(row["r2"]) and (row["n_voxels"], row["n_features"]) == (n_fit, 256)
    assert row["reason"] == f"under-determined: {n_fit} samples for 256 features (< 10 per feature)"
    # At exactly 10 samples per feature the level is scored.
    assert probe_level(features, targets, score, min_samples_per_feature=n_fit / 256)["reason"] == ""


def test_held_out_fits_count_the_smallest_fold():
    # Images of 4, 6 and 10 voxels: the fold that holds out the 10-voxel image fits on 10.
    rng = np.random.default_rng(0)
    targets = [rng.random(n) for n in (4, 6, 10)]
    features = [rng.normal(size=(1, n)) for n in (4, 6, 10)]
    assert probe_level(features, targets, "held_out", min_samples_per_feature=0)["n_voxels"] == 10
    assert probe_level(features, targets, "in_sample", min_samples_per_feature=0)["n_voxels"] == 20


def test_unscorable_levels_name_the_reason():
    one_image = probe_level([np.ones((1, 30))], [np.arange(30.0)], "held_out", min_samples_per_feature=0)
    assert math.isnan(one_image["r2"]) and "at least 2 images" in one_image["reason"]
    constant = probe_level([np.random.default_rng(0).random((2, 3, 3))], [np.zeros((3, 3))], "in_sample",
                           min_samples_per_feature=0)
    assert math.isnan(constant["r2"]) and constant["reason"] == "constant target (R^2 undefined)"
    with pytest.raises(ValueError, match="score must be one of held_out, in_sample"):
        probe_level([np.ones((1, 3))], [np.ones(3)], "pooled")


def test_draws_depend_only_on_seed_and_case_set():
    cases = [f"case{i}" for i in range(10)]
    first = [draw_cases(cases, 5, d) for d in range(5)]
    assert first == [draw_cases(list(reversed(cases)), 5, d) for d in range(5)]
    assert all(len(set(c)) == 5 for c in first) and len({tuple(c) for c in first}) > 1
    assert draw_cases(cases[:3], 5, 0) == cases[:3]


def write_store(folder, n_cases=4, shape=(3, 12, 12)):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["\t".join(("case_id", "site", "shape_zyx", "spacing_zyx", "image", "label", "meta", "n_foreground"))]
    for i in range(n_cases):
        label = np.zeros(shape, np.uint8)
        label[:, 2 + i:8 + i, 3:9] = 1
        image = (rng.random(shape) * 0.3 + 0.6 * label).astype(np.float32)
        np.save(folder / f"c{i}.image.npy", image)
        np.save(folder / f"c{i}.label.npy", label)
        (folder / f"c{i}.json").write_text("{}")
        fields = (f"c{i}", "site", "x".join(map(str, shape)), "1x1x1", f"c{i}.image.npy", f"c{i}.label.npy",
                  f"c{i}.json", str(int(label.sum())))
        rows.append("\t".join(fields))
    (folder / "cases.tsv").write_text("\n".join(rows) + "\n")
    return CaseStore(folder)


def test_run_probe_rows(tmp_path):
    store = write_store(tmp_path / "pre")
    rows = run_probe(tiny_model(2), store, store.case_ids, n_images=2, n_draws=2, max_voxels=300,
                     score="in_sample", min_samples_per_feature=1)
    assert [(r["level"], r["draw"]) for r in rows] == [(lvl, d) for d in range(2) for lvl in (1, 2, 3)]
    # 2 images of 3 x 12 x 12 voxels: level 1 = 864 voxels (capped at 300), level 3 = 2 * 3 * 3 * 3
    assert [r["n_voxels"] for r in rows[:3]] == [300, 2 * 3 * 6 * 6, 2 * 3 * 3 * 3]
    assert [r["n_features"] for r in rows[:3]] == list(CHANNELS)
    assert all(0.0 <= r["r2"] <= 1.0 and r["reason"] == "" and r["score"] == "in_sample" for r in rows)


def test_run_probe_held_out_refuses_the_deepest_level(tmp_path):
    store = write_store(tmp_path / "pre")
    rows = run_probe(tiny_model(2), store, store.case_ids, n_images=2, n_draws=1)
    # Held out, each fit sees one image: level 2 = 3 * 6 * 6 = 108 voxels for 8 features (13.5
    # per feature), level 3 = 3 * 3 * 3 = 27 voxels for 16 features (refused).
    level2, level3 = rows[1], rows[2]
    assert (level2["n_voxels"], level2["reason"]) == (108, "") and level2["r2"] <= 1.0
    assert level3["n_voxels"] == 27 and math.isnan(level3["r2"])
    assert level3["reason"] == "under-determined: 27 samples for 16 features (< 10 per feature)"


def test_probe_options():
    assert probe_options(None) == {"n_images": 5, "n_draws": 5, "max_voxels": 200_000, "seed": 0,
                                   "score": "held_out", "min_samples_per_feature": 10, "variance": "within"}
    assert probe_options({"n_draws": 2})["n_draws"] == 2
    assert probe_options({"min_samples_per_feature": 2.5, "variance": "pooled"})["min_samples_per_feature"] == 2.5
    with pytest.raises(ConfigError, match="unknown key.*'probe'.*images"):
        probe_options({"images": 3})
    with pytest.raises(ConfigError, match="probe.max_voxels"):
        probe_options({"max_voxels": 0})
    with pytest.raises(ConfigError, match="probe.score must be one of held_out, in_sample, got 'cv'"):
        probe_options({"score": "cv"})
    with pytest.raises(ConfigError, match="probe.variance must be one of within, pooled"):
        probe_options({"variance": "all"})
    with pytest.raises(ConfigError, match="probe.n_images must be >= 2 with probe.score: held_out"):
        probe_options({"n_images": 1})
    assert probe_options({"n_images": 1, "score": "in_sample"})["n_images"] == 1


def test_schema_probe_section_matches_the_library():
    """The schema's `probe` keys, defaults and allowed values are the library's (one place for
    each fact: a drifting copy fails here)."""
    import yaml

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    properties = schema["properties"]["probe"]["properties"]
    defaults = massl_config.schema_facts()["defaults"]["probe"]
    assert set(properties) == set(defaults)
    for key, default in defaults.items():
        assert properties[key].get("default", default) == default, key
    for key in massl_config.PROBE_DEFAULTS:
        assert properties[key].get("description"), key
    for key, choices in massl_config.CHOICES["probe"].items():
        assert tuple(properties[key]["enum"]) == choices


def probe_config(**probe):
    """A workflow config whose probe options are `probe` (resolve_config accepts it)."""
    return {"datasets": {"brats18": {"format": "brats18", "synthetic": {"n_cases": 8, "shape": [3, 12, 12]},
                                     "split": {"pool": 2, "test": 4}, "settings": {"1L1U": [1, 1]}}},
            "model": {"spatial_dims": 2}, "training": {"patch_size": [16, 16]}, "probe": probe}


@pytest.fixture
def results_tree(tmp_path, monkeypatch):
    """A results/ tree with one finished run and a fake checkpoint loader."""
    results = tmp_path / "results"
    write_store(results / "preprocessed" / "brats18")
    split = {"dataset": "brats18", "rep": 1, "test": ["c0", "c1", "c2", "c3"]}
    (results / "splits" / "brats18").mkdir(parents=True)
    (results / "splits" / "brats18" / "rep1.json").write_text(json.dumps(split))
    run = results / "runs" / "brats18" / "50L70U" / "massl_alter" / "rep1"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"weights")
    (run / "summary.json").write_text(json.dumps({"status": "converged"}))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(probe_config(n_images=2, n_draws=3, max_voxels=400)))

    def load_model(path, device):
        assert path == run / "model.pt"
        return tiny_model(2), {"dataset": "brats18", "setting": "50L70U", "method": "massl_alter", "rep": 1}

    monkeypatch.setitem(sys.modules, "massl.model.files", types.SimpleNamespace(load_model=load_model))
    out = tmp_path / "probe.tsv"
    args = argparse.Namespace(config=str(config), run=str(run), out=str(out), threads=None, device="cpu",
                              split=str(results / "splits" / "brats18" / "rep1.json"),
                              cases=str(results / "preprocessed" / "brats18" / "cases.tsv"))
    return args, run


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_cli_probe_writes_tsv(results_tree):
    args, _ = results_tree
    assert cli_probe(args) == 0
    rows = read_tsv(args.out)
    assert list(rows[0]) == ["level", "draw", "r2", "n_voxels", "n_features", "score", "reason"]
    assert len(rows) == 3 * 3 and {r["score"] for r in rows} == {"held_out"}
    assert [r["n_features"] for r in rows[:3]] == [str(c) for c in CHANNELS]
    scored = [r for r in rows if not r["reason"]]
    assert scored and all(float(r["r2"]) <= 1.0 for r in scored)
    assert all(math.isnan(float(r["r2"])) and r["reason"].startswith("under-determined")
               for r in rows if r["reason"])


@pytest.mark.parametrize("where", ["summary", "checkpoint"])
def test_cli_probe_diverged_run_gives_nan_rows(results_tree, monkeypatch, where):
    args, run = results_tree
    if where == "summary":
        (run / "summary.json").write_text(json.dumps({"status": "diverged"}))
    else:
        meta = {"dataset": "brats18", "rep": 1, "status": "diverged"}
        monkeypatch.setitem(sys.modules, "massl.model.files",
                            types.SimpleNamespace(load_model=lambda path, device: (tiny_model(2), meta)))
    assert cli_probe(args) == 0
    rows = read_tsv(args.out)
    assert len(rows) == 9 and all(math.isnan(float(r["r2"])) and r["reason"] == "diverged" for r in rows)
    assert [r["n_features"] for r in rows[:3]] == [str(c) for c in CHANNELS]


def test_cli_probe_missing_or_foreign_split_is_named(results_tree, tmp_path):
    args, _ = results_tree
    split = tmp_path / "results" / "splits" / "brats18" / "rep1.json"
    split.write_text(json.dumps({"dataset": "brats18", "rep": 2, "test": ["c0", "c1"]}))
    with pytest.raises(DataError, match="rep1.json: a split of rep 2, but the run was trained on 1"):
        cli_probe(args)
    split.unlink()
    with pytest.raises(DataError, match="rep1.json"):
        cli_probe(args)


def test_massl_probe_command(results_tree):
    # through the CLI parser: `--run` must not clash with the subcommand's handler
    from massl.cli import main

    args, _ = results_tree
    assert main(["probe", "--config", args.config, "--run", args.run, "--out", args.out, "--device", "cpu",
                 "--split", args.split, "--cases", args.cases]) == 0
    assert len(read_tsv(args.out)) == 9
