"""Training loop, strategies, augmentation and the `massl train` run folder,
on a tiny 2D-friendly dataset of bright disks (8 x 32 x 32 volumes, 4-8-16 channels)."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from tiny_data import SHAPE, run_args, run_inputs, tiny_config, write_dataset

from massl.cli import main
from massl.config import ModelConfig, TrainConfig
from massl.errors import ConfigError
from massl.methods import AUTOENCODER, METHODS, get_method
from massl.model.network import build_model
from massl.training import loop, strategies
from massl.training import run as training_run
from massl.training.augment import affine_theta, augment_batch, warp_batch
from massl.model.files import load_checkpoint, load_model
from massl.training.loop import reconstruction_error, training_schedule
from massl.training.run import resolve_run, train_run
from massl.training.strategies import Batch, make_strategy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_dataset(root)
    return root


@pytest.fixture(scope="module")
def autoencoder_run(results):
    out = results / "runs" / "brats18" / "2L2U" / "autoencoder" / "rep1"
    train_run(resolve_run(tiny_config(results), "brats18", "2L2U", "autoencoder", 1, out, **run_inputs(results)),
              device="cpu")
    return out


@pytest.fixture(scope="module")
def reference_run(results):
    """An uninterrupted MASSL(alter) run: the baseline for determinism and resume tests."""
    out = results / "runs" / "brats18" / "2L2U" / "massl_alter" / "rep1"
    train_run(resolve_run(tiny_config(results), "brats18", "2L2U", "massl_alter", 1, out, **run_inputs(results)),
              device="cpu")
    return out


def run(results, out, method="massl_alter", autoencoder=None, on_iteration=None, **training):
    spec = resolve_run(tiny_config(results, **training), "brats18", "2L2U", method, 1, out, **run_inputs(results),
                       autoencoder=autoencoder)
    return train_run(spec, device="cpu", on_iteration=on_iteration)


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def weights(run_dir):
    return load_model(run_dir / "model.pt")[0].state_dict()


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


class Interrupted(Exception):
    pass


def interrupt_at(k):
    def hook(iteration):
        if iteration == k:
            raise Interrupted
    return hook


# Augmentation -------------------------------------------------------------------------------

def _params(n, angle=0.0, scale=1.0, flip=False):
    return (torch.full((n,), angle, dtype=torch.float64), torch.full((n,), scale, dtype=torch.float64),
            torch.full((n,), flip, dtype=torch.bool))


def test_warp_identity_flip_and_quarter_turn():
    x = torch.rand(2, 1, 8, 8)
    label = torch.randint(0, 3, (2, 1, 8, 8), dtype=torch.uint8)
    same, same_label = warp_batch(x, label, affine_theta(*_params(2), (8, 8)))
    torch.testing.assert_close(same, x)
    assert torch.equal(same_label, label)
    flipped, flipped_label = warp_batch(x, label, affine_theta(*_params(2, flip=True), (8, 8)))
    torch.testing.assert_close(flipped, x.flip(-1))
    assert torch.equal(flipped_label, label.flip(-1))
    # +90 degrees: output (y, x) reads input (x, -y) about the centre, i.e. rot90 towards -y.
    turned, _ = warp_batch(x, None, affine_theta(*_params(2, angle=math.pi / 2), (8, 8)))
    torch.testing.assert_close(turned, torch.rot90(x, 1, dims=(-2, -1)))
    volume = torch.rand(1, 1, 4, 8, 8)  # 3D: the rotation is in-plane, z is untouched
    turned3d, _ = warp_batch(volume, None, affine_theta(*_params(1, angle=math.pi / 2), (4, 8, 8)))
    torch.testing.assert_close(turned3d, torch.rot90(volume, 1, dims=(-2, -1)))


def test_scaling_and_rotation_on_a_non_square_patch():
    # A centred 4 x 4 square in a 16 x 24 patch, zoomed by 2, becomes a centred 8 x 8 square.
    label = torch.zeros(1, 1, 16, 24, dtype=torch.uint8)
    label[..., 6:10, 10:14] = 1
    zoomed = warp_batch(label.float(), label, affine_theta(*_params(1, scale=2.0), (16, 24)))[1]
    expected = torch.zeros_like(label)
    expected[..., 4:12, 8:16] = 1
    assert torch.equal(zoomed, expected)
    # Rotating by 90 degrees in voxel units keeps the square a square (not a 4 x 6 rectangle).
    turned = warp_batch(label.float(), label, affine_theta(*_params(1, angle=math.pi / 2), (16, 24)))[1]
    rows, cols = torch.nonzero(turned[0, 0], as_tuple=True)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (4, 4)


def test_augment_is_seeded_and_keeps_label_values():
    x = torch.rand(4, 1, 16, 16)
    label = torch.randint(0, 3, (4, 1, 16, 16), dtype=torch.uint8)
    cfg = TrainConfig(rotate_degrees=30.0, scale_range=[0.8, 1.2])
    a = augment_batch(x, label, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(x, label, cfg, torch.Generator().manual_seed(3))
    c = augment_batch(x, label, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert set(a[1].unique().tolist()) <= {0, 1, 2} and a[1].dtype == torch.uint8


# Schedule and validation --------------------------------------------------------------------

def test_schedule_follows_the_released_budget():
    cfg = TrainConfig(epochs_by_labeled=[[20, 3]], validate_every_epochs=2, checkpoint_every_iterations=4)
    schedule = training_schedule(cfg, n_labeled=5, n_unlabeled=3)
    assert (schedule.epoch_length, schedule.iterations, schedule.validate_every) == (3, 9, 6)
    assert [k for k in range(1, 10) if schedule.validates_at(k)] == [6, 9]
    assert [k for k in range(1, 10) if schedule.checkpoints_at(k)] == [4, 8, 9]
    assert training_schedule(cfg, n_labeled=5, n_unlabeled=0).iterations == 15  # no unlabeled: |L| per epoch
    cfg.max_iterations = 4
    assert training_schedule(cfg, n_labeled=5, n_unlabeled=3).iterations == 4
    cfg.max_iterations, cfg.validate_every_iterations = None, 4  # a period in iterations wins
    schedule = training_schedule(cfg, n_labeled=5, n_unlabeled=3)
    assert [k for k in range(1, 10) if schedule.validates_at(k)] == [4, 8, 9]


def test_the_autoencoder_has_its_own_learning_rate_and_cap(results, tmp_path):
    """lr_autoencoder and autoencoder_max_iterations reach the autoencoder's optimizer and
    budget only: the alternating runs' reconstruction step keeps lr_reconstruction."""
    config = tiny_config(results, lr_reconstruction=1e-3, lr_autoencoder=0.05, max_iterations=3,
                         autoencoder_max_iterations=7)

    def learning_rates_and_budget(method):
        spec = resolve_run(config, "brats18", "2L2U", method, 1, tmp_path / method, **run_inputs(results))
        model = build_model(spec.model, spec.method)
        groups = make_strategy(model, spec.method, spec.training).parameter_groups()
        return {name: lr for name, (_, lr) in groups.items()}, training_schedule(spec.training, 2, 2).iterations

    assert learning_rates_and_budget("autoencoder") == ({"rec": 0.05}, 7)
    assert learning_rates_and_budget("massl_alter") == ({"seg": 1e-2, "rec": 1e-3}, 3)
    assert TrainConfig().for_autoencoder() == TrainConfig()  # unset: the autoencoder trains as before


class ConstantReconstruction:
    """A stand-in autoencoder whose reconstruction is 0.5 everywhere."""

    spatial_dims = 2

    def encode(self, x):
        return [x]

    def reconstruct(self, feats):
        return torch.full_like(feats[-1], 0.5)


def test_reconstruction_error_is_the_volume_mse_when_windows_tile_it():
    volume = np.random.default_rng(0).random((3, 16, 24), dtype=np.float32)
    error = reconstruction_error(ConstantReconstruction(), volume, (8, 8), batch_size=5, device="cpu", amp_dtype=None)
    assert error == pytest.approx(float(np.mean((volume - 0.5) ** 2)), rel=1e-6)


# Strategies ---------------------------------------------------------------------------------

def tiny_strategy(method_id, **training):
    torch.manual_seed(0)
    method = get_method(method_id)
    model = build_model(ModelConfig(spatial_dims=2, channels=[4, 8, 16]), method)
    return make_strategy(model, method, TrainConfig(**training))


def tiny_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    image, unlabeled = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    target = (image > 0.6).float()
    return Batch(image=image, target=target, mask=torch.ones_like(target), unlabeled=unlabeled)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize("method_id", ["massl_alter", "massl_l07"])
@pytest.mark.parametrize("attention_grad", ["detach", "encoder"])
def test_attention_targets_come_from_the_images_own_segmentation(monkeypatch, method_id, attention_grad):
    strategy = tiny_strategy(method_id, attention_grad=attention_grad)
    model, batch = strategy.model, tiny_batch()
    seen = []
    original = strategies.attention_reconstruction_loss

    def spy(rec, image, seg_prob):
        with torch.no_grad():  # S must be the segmentation of these very images, current weights
            expected = torch.sigmoid(model.segment(model.encode(image)))
        seen.append((image, seg_prob, expected))
        return original(rec, image, seg_prob)

    monkeypatch.setattr(strategies, "attention_reconstruction_loss", spy)
    rec_before = snapshot(model.rec_decoder)
    strategy.step(batch)
    assert changed(rec_before, model.rec_decoder)  # the released code's bug left it untouched
    (image, seg_prob, expected), = seen
    # Alternating: the unlabeled step segments the unlabeled batch itself (SPEC section 8).
    # Joint: one reconstruction loss over labeled + unlabeled images.
    own_images = batch.unlabeled if method_id == "massl_alter" else torch.cat([batch.image, batch.unlabeled])
    assert torch.equal(image, own_images)
    torch.testing.assert_close(seg_prob, expected)
    assert seg_prob.requires_grad == (attention_grad == "encoder")


def test_joint_encodes_each_image_once_per_step():
    for method_id, calls in (("massl_l07", 1), ("mssl_l09", 1), ("massl_alter", 2), ("cnn", 1)):
        strategy = tiny_strategy(method_id)
        batches = []
        strategy.model.encoder.register_forward_hook(lambda module, args, out, seen=batches: seen.append(len(args[0])))
        strategy.step(tiny_batch())
        assert len(batches) == calls, method_id
        assert sum(batches) == (4 if method_id != "cnn" else 2), method_id


def test_joint_loss_is_the_lambda_weighted_sum():
    strategy = tiny_strategy("mssl_l07")
    losses = strategy.step(tiny_batch())
    assert losses["loss"] == pytest.approx(0.7 * losses["loss_seg"] + 0.3 * losses["loss_rec"], rel=1e-5)


def test_pretrain_decoder_keeps_the_encoder_frozen():
    strategy = tiny_strategy("pretrain_dec")
    model = strategy.model
    encoder, decoder = snapshot(model.encoder), snapshot(model.seg_decoder)
    for seed in range(3):
        strategy.step(tiny_batch(seed))
    assert not changed(encoder, model.encoder)
    assert changed(decoder, model.seg_decoder)
    assert model.rec_decoder is None  # the autoencoder run owns the reconstruction decoder


def test_learning_rates_halve_every_step_period():
    strategy = tiny_strategy("mssl_alter", lr_step_iterations=2)
    rates = []
    for seed in range(4):
        strategy.step(tiny_batch(seed))
        rates.append(strategy.learning_rates())
    assert [r["lr_seg"] for r in rates] == pytest.approx([1e-2, 5e-3, 5e-3, 2.5e-3])
    assert [r["lr_rec"] for r in rates] == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4])


# Whole runs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method_id", ["autoencoder", *METHODS])
def test_every_method_trains_and_writes_its_run_folder(results, autoencoder_run, tmp_path, method_id):
    method = get_method(method_id)
    out = autoencoder_run if method_id == "autoencoder" else tmp_path / method_id
    if method_id != "autoencoder":
        run(results, out, method_id, autoencoder=autoencoder_run if method.needs_autoencoder else None)
    log = read_tsv(out / "train_log.tsv")
    # the baselines' ramped-up unlabeled term grows while they learn: their supervised term must fall
    losses = [float(row["loss" if method.paper else "loss_seg"]) for row in log]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.97 * np.mean(losses[:5]), losses
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "converged" and summary["iterations"] == 30
    assert (summary["data_source"], summary["scale"], summary["seed"]) == ("synthetic", "test", 1000)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["seed"] == 1000 and provenance["torch_threads"] == 1 and provenance["config"]["scale"] == "test"
    assert not (out / "checkpoints").exists()
    if method is AUTOENCODER:
        val_mse = [float(row["val_mse"]) for row in log if row["val_mse"] != "NaN"]
        assert len(val_mse) == 3 and summary["val_mse"] == pytest.approx(min(val_mse), abs=1e-6)
        assert summary["mean_dice"] is None
        assert not (out / "per_case.tsv").exists()
        return
    cases = read_tsv(out / "per_case.tsv")
    assert [c["case_id"] for c in cases] == ["case06", "case07"]
    assert all(c["method"] == method_id and c["method_label"] == method.label and c["status"] == "converged"
               for c in cases)
    assert summary["mean_dice"] == pytest.approx(np.mean([float(c["dice"]) for c in cases]))
    val = [float(row["val_dice"]) for row in log if row["val_dice"] != "NaN"]
    assert len(val) == 3 and summary["val_dice"] == pytest.approx(max(val), abs=1e-6)
    example = np.load(out / "examples.npz")
    assert example["image"].shape == example["prob"].shape == example["label"].shape == SHAPE[1:]
    assert example["label"].any()
    assert ("rec" in example) == (method.strategy in ("joint", "alternating"))
    if "rec" in example:
        assert example["rec"].shape == (method.rec_channels, *SHAPE[1:])


def test_same_seed_gives_identical_runs(results, reference_run, tmp_path):
    run(results, tmp_path / "again")
    assert_same_weights(weights(reference_run), weights(tmp_path / "again"))
    assert read_tsv(reference_run / "per_case.tsv") == read_tsv(tmp_path / "again" / "per_case.tsv")


def test_resumed_run_matches_an_uninterrupted_one(results, reference_run, tmp_path):
    out = tmp_path / "resumed"
    out.mkdir()
    (out / "summary.json").write_text("{}")  # left by an earlier run: must not mark this one finished
    with pytest.raises(Interrupted):
        run(results, out, on_iteration=interrupt_at(17))
    assert load_checkpoint(out / "checkpoints" / "last.pt")["iteration"] == 15
    assert load_checkpoint(out / "checkpoints" / "previous.pt")["iteration"] == 10
    assert not (out / "model.pt").exists() and not (out / "summary.json").exists()
    run(results, out)
    assert_same_weights(weights(reference_run), weights(out))
    assert read_tsv(reference_run / "per_case.tsv") == read_tsv(out / "per_case.tsv")
    reference_log, resumed_log = read_tsv(reference_run / "train_log.tsv"), read_tsv(out / "train_log.tsv")
    assert without_seconds(reference_log) == without_seconds(resumed_log)


def test_corrupt_last_checkpoint_falls_back_to_the_previous(results, reference_run, tmp_path, caplog):
    out = tmp_path / "corrupt"
    with pytest.raises(Interrupted):
        run(results, out, on_iteration=interrupt_at(12))
    last = out / "checkpoints" / "last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    run(results, out)
    assert "previous.pt" in caplog.text and "WARNING" in caplog.text
    assert_same_weights(weights(reference_run), weights(out))


def test_changed_config_does_not_resume_a_foreign_checkpoint(results, tmp_path, caplog):
    out = tmp_path / "foreign"
    with pytest.raises(Interrupted):
        run(results, out, on_iteration=interrupt_at(6))
    run(results, out, max_iterations=8)
    assert "another configuration" in caplog.text
    assert [int(r["iteration"]) for r in read_tsv(out / "train_log.tsv")] == list(range(1, 9))


def test_divergence_is_recorded_and_exits_zero(results, tmp_path, monkeypatch):
    calls = {"n": 0}
    dice = strategies.soft_dice_loss

    def nan_on_fifth_call(prob, target, **kwargs):
        calls["n"] += 1
        loss = dice(prob, target, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(strategies, "soft_dice_loss", nan_on_fifth_call)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(results)))
    out = tmp_path / "diverged"
    code = main(["train", "--config", str(config), "--dataset", "brats18", "--setting", "2L2U",
                 "--method", "cnn", "--rep", "1", "--out", str(out), "--threads", "1", "--device", "cpu",
                 *run_args(results)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["iterations"] == 4 and summary["mean_dice"] is None
    assert "iteration 5" in summary["divergence"]
    cases = read_tsv(out / "per_case.tsv")
    assert len(cases) == 2 and all(c["status"] == "diverged" and c["dice"] == "NaN" for c in cases)
    assert read_tsv(out / "train_log.tsv")[-1]["loss"] == "NaN"
    model, meta = load_model(out / "model.pt")
    assert meta["status"] == "diverged"
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the failed step made no update


def test_cnn_and_massl_draw_the_same_labeled_batches(results, tmp_path, monkeypatch):
    """One random stream each for labeled and unlabeled patches and augmentations: a method that
    also draws unlabeled batches sees the same labeled batches as CNN for the same seed."""
    real_draw, seen = loop.draw_batch, {}
    for method_id in ("cnn", "massl_alter", "mssl_l07"):
        batches = seen[method_id] = []

        def record(*args, batches=batches):
            batch = real_draw(*args)
            batches.append((batch.image.clone(), batch.target.clone(), batch.unlabeled))
            return batch

        monkeypatch.setattr(loop, "draw_batch", record)
        run(results, tmp_path / method_id, method_id, max_iterations=6)
    assert TrainConfig().augment and "augment" not in tiny_config(results)["training"]  # augmentation on
    assert len(seen["cnn"]) == 6 and all(unlabeled is None for *_, unlabeled in seen["cnn"])
    assert not torch.equal(seen["cnn"][0][0], seen["cnn"][1][0])
    for method_id in ("massl_alter", "mssl_l07"):
        assert all(unlabeled is not None for *_, unlabeled in seen[method_id])
        for (image, target, _), (other, other_target, _) in zip(seen["cnn"], seen[method_id], strict=True):
            assert torch.equal(image, other) and torch.equal(target, other_target), method_id


def test_bad_inputs_are_named(results, autoencoder_run, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(results)))
    args = ["train", "--config", str(config), "--dataset", "brats18", "--rep", "1", "--out", str(tmp_path / "x"),
            *run_args(results)]
    assert main([*args, "--setting", "9L9U", "--method", "cnn"]) == 2
    assert "rep1.json" in capsys.readouterr().err
    assert main([*args, "--setting", "2L2U", "--method", "pretrain_dec"]) == 2
    assert "--autoencoder" in capsys.readouterr().err
    assert main([*args, "--setting", "2L2U", "--method", "nope"]) == 2
    # An autoencoder of another setting saw other unlabeled scans: refused.
    with pytest.raises(ConfigError, match="autoencoder was trained for"):
        train_run(resolve_run(tiny_config(results), "brats18", "2L1U", "pretrain_cnn", 1, tmp_path / "y",
                              **run_inputs(results), autoencoder=autoencoder_run), device="cpu")
    with pytest.raises(ConfigError, match="patch_size"):
        resolve_run(tiny_config(results, patch_size=[30, 30]), "brats18", "2L2U", "cnn", 1, tmp_path / "z",
                    **run_inputs(results))


def test_several_methods_in_one_process_match_separate_runs(results, autoencoder_run, reference_run, tmp_path):
    """`massl train --method a,b` (the workflow's `train_job: setting`) trains the same runs as
    one process per run: the autoencoder first, then the methods that reuse it."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(results)))
    args = ["train", "--config", str(config), "--dataset", "brats18", "--setting", "2L2U", "--rep", "1",
            "--device", "cpu", "--threads", "1", *run_args(results)]
    assert main([*args, "--method", "autoencoder,massl_alter", "--out", str(tmp_path / "one")]) == 2  # no {method}
    out = tmp_path / "{method}"
    assert main([*args, "--method", "autoencoder,pretrain_cnn,massl_alter", "--out", str(out),
                 "--autoencoder", str(tmp_path / "autoencoder")]) == 0
    assert_same_weights(weights(autoencoder_run), weights(tmp_path / "autoencoder"))
    assert_same_weights(weights(reference_run), weights(tmp_path / "massl_alter"))
    assert read_tsv(reference_run / "per_case.tsv") == read_tsv(tmp_path / "massl_alter" / "per_case.tsv")
    separate = tmp_path / "separate"
    run(results, separate, method="pretrain_cnn", autoencoder=autoencoder_run)
    assert_same_weights(weights(separate), weights(tmp_path / "pretrain_cnn"))


def test_3d_runs_train_alike_through_either_convolution_path(results, tmp_path):
    """The paper's 3D network in the training loop, with massl.model.cpu_conv and without: the same
    losses up to float rounding over 6 updates."""
    losses = {}
    for cpu_conv3d in ("onednn", "torch"):
        config = tiny_config(results, patch_size=[8, 16, 16], batch_size=1, max_iterations=6, cpu_conv3d=cpu_conv3d)
        config["model"]["spatial_dims"] = 3
        out = tmp_path / cpu_conv3d
        train_run(resolve_run(config, "brats18", "2L2U", "massl_l07", 1, out, **run_inputs(results)), device="cpu")
        losses[cpu_conv3d] = [float(row["loss"]) for row in read_tsv(out / "train_log.tsv")]
    assert len(losses["onednn"]) == 6 and all(math.isfinite(v) for v in losses["onednn"])
    assert losses["onednn"] == pytest.approx(losses["torch"], rel=1e-3)


def test_cpu_conv3d_option_reaches_the_model(results, tmp_path, monkeypatch):
    seen = []
    real = training_run.set_cpu_conv3d
    monkeypatch.setattr(training_run, "set_cpu_conv3d", lambda model, mode: seen.append(mode) or real(model, mode))
    run(results, tmp_path / "cnn", method="cnn", cpu_conv3d="torch")
    assert seen == ["torch"]
