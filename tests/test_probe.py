import argparse
import csv
import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from massl.data.store import CaseStore
from massl.errors import ConfigError, DataError
from massl.model import MASSLNet
from massl.probe import cli_probe, draw_cases, encoder_features, pooled_target, probe_r2, probe_options, run_probe

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


def test_probe_r2_hand_computed():
    # x = 0, 1, 2, 3 and y = 0, 1, 1, 2 over two images. Least squares: slope 3 / 5 = 0.6,
    # intercept 1 - 0.6 * 1.5 = 0.1, residuals -0.1, 0.3, -0.3, 0.1 -> SS_res = 0.2,
    # SS_tot = 1 + 0 + 0 + 1 = 2 -> R^2 = 1 - 0.2 / 2 = 0.9
    features = [np.array([[0.0, 1.0]]), np.array([[2.0, 3.0]])]
    targets = [np.array([0.0, 1.0]), np.array([1.0, 2.0])]
    assert probe_r2(features, targets) == pytest.approx(0.9)


def test_probe_r2_linear_code_and_noise():
    rng = np.random.default_rng(0)
    targets = [rng.random((4, 30, 30)) for _ in range(2)]
    encoded = [np.stack([2 * t + 1, rng.normal(size=t.shape), rng.normal(size=t.shape)]) for t in targets]
    noise = [rng.normal(size=(3, *t.shape)) for t in targets]
    assert probe_r2(encoded, targets) == pytest.approx(1.0, abs=1e-9)
    assert probe_r2(encoded, targets, max_voxels=500) == pytest.approx(1.0, abs=1e-9)
    assert probe_r2(noise, targets) < 0.01  # in-sample R^2 of 3 noise regressors on 7200 samples


def test_probe_r2_nan_for_constant_target():
    assert math.isnan(probe_r2([np.ones((2, 3, 3))], [np.zeros((3, 3))]))


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
    rows = run_probe(tiny_model(2), store, store.case_ids, n_images=2, n_draws=2, max_voxels=300)
    assert [(r["level"], r["draw"]) for r in rows] == [(lvl, d) for d in range(2) for lvl in (1, 2, 3)]
    # 2 images of 3 x 12 x 12 voxels: level 1 = 864 voxels (capped at 300), level 3 = 2 * 3 * 3 * 3
    assert [r["n_voxels"] for r in rows[:3]] == [300, 2 * 3 * 6 * 6, 2 * 3 * 3 * 3]
    assert all(0.0 <= r["r2"] <= 1.0 for r in rows)


def test_probe_options():
    assert probe_options(None) == {"n_images": 5, "n_draws": 5, "max_voxels": 200_000, "seed": 0}
    assert probe_options({"n_draws": 2})["n_draws"] == 2
    with pytest.raises(ConfigError, match="unknown key.*'probe'.*images"):
        probe_options({"images": 3})
    with pytest.raises(ConfigError, match="probe.max_voxels"):
        probe_options({"max_voxels": 0})


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
    config.write_text(json.dumps({"probe": {"n_images": 2, "n_draws": 3, "max_voxels": 400}}))

    def load_model(path, device):
        assert path == run / "model.pt"
        return tiny_model(2), {"dataset": "brats18", "setting": "50L70U", "method": "massl_alter", "rep": 1}

    monkeypatch.setitem(sys.modules, "massl.training.checkpoint", types.SimpleNamespace(load_model=load_model))
    out = tmp_path / "probe.tsv"
    args = argparse.Namespace(config=str(config), run=str(run), out=str(out), threads=None, device="cpu")
    return args, run


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_cli_probe_writes_tsv(results_tree):
    args, _ = results_tree
    assert cli_probe(args) == 0
    rows = read_tsv(args.out)
    assert list(rows[0]) == ["level", "draw", "r2", "n_voxels"]
    assert len(rows) == 3 * 3
    assert all(0.0 <= float(r["r2"]) <= 1.0 for r in rows)


@pytest.mark.parametrize("where", ["summary", "checkpoint"])
def test_cli_probe_diverged_run_gives_nan_rows(results_tree, monkeypatch, where):
    args, run = results_tree
    if where == "summary":
        (run / "summary.json").write_text(json.dumps({"status": "diverged"}))
    else:
        meta = {"dataset": "brats18", "rep": 1, "status": "diverged"}
        monkeypatch.setitem(sys.modules, "massl.training.checkpoint",
                            types.SimpleNamespace(load_model=lambda path, device: (tiny_model(2), meta)))
    assert cli_probe(args) == 0
    rows = read_tsv(args.out)
    assert len(rows) == 9 and all(math.isnan(float(r["r2"])) for r in rows)


def test_cli_probe_missing_split_is_named(results_tree, tmp_path):
    args, _ = results_tree
    (tmp_path / "results" / "splits" / "brats18" / "rep1.json").unlink()
    with pytest.raises(DataError, match="rep1.json"):
        cli_probe(args)


def test_massl_probe_command(results_tree):
    # through the CLI parser: `--run` must not clash with the subcommand's handler
    from massl.cli import main

    args, _ = results_tree
    assert main(["probe", "--config", args.config, "--run", args.run, "--out", args.out, "--device", "cpu"]) == 0
    assert len(read_tsv(args.out)) == 9
