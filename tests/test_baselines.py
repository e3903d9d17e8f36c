"""The baselines beyond the paper (issue 17): Mean Teacher and cross pseudo supervision as
strategies of the suite's loop, on tiny batches and on the tiny dataset of test_training."""

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_data import run_inputs, tiny_config, write_dataset

from massl.config import ModelConfig, TrainConfig, train_config
from massl.errors import ConfigError
from massl.methods import METHODS, PAPER_METHODS, get_method
from massl.model.files import load_model
from massl.model.network import build_model
from massl.training import baselines, loop
from massl.training.baselines import sigmoid_rampup
from massl.training.run import resolve_run, train_run
from massl.training.strategies import Batch, make_strategy, strategy_class

torch.set_num_threads(1)
ARCH = ModelConfig(spatial_dims=2, channels=[4, 8, 16])


def strategy_for(method_id, planned_iterations=40, **training):
    torch.manual_seed(0)
    method = get_method(method_id)
    model = build_model(ARCH, method)
    return make_strategy(model, method, TrainConfig(**training), planned_iterations=planned_iterations,
                         new_network=lambda: build_model(ARCH, method))


def disk_batch(seed=0, n=4):
    """Bright disks on noise: a task a tiny network learns in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    centres = 5 + 6 * torch.rand(2 * n, 2, generator=g)
    disks = (((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) <= 12).float()
    images = (0.2 + 0.6 * disks + 0.05 * torch.randn(2 * n, 16, 16, generator=g)).unsqueeze(1)
    target = disks[:n].unsqueeze(1)
    return Batch(image=images[:n], target=target, mask=torch.ones_like(target), unlabeled=images[n:])


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_sigmoid_rampup_is_the_published_schedule():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(10, 10) == sigmoid_rampup(99, 10) == 1.0
    assert sigmoid_rampup(0, 0) == 1.0  # no ramp-up


def test_method_table_keeps_the_papers_nine_as_the_default():
    assert list(PAPER_METHODS) == list(METHODS)[:9]
    assert [m for m in METHODS if not METHODS[m].paper] == ["mean_teacher", "cps"]
    for method_id in ("mean_teacher", "cps"):
        method = METHODS[method_id]
        assert not method.needs_autoencoder and method.rec_channels == 0 and not method.trains_reconstruction


@pytest.mark.parametrize("key, value", [("ema_decay", 1.5), ("cps_weight", -1.0), ("rampup_fraction", 2.0),
                                        ("consistency_noise_std", -0.1)])
def test_bad_baseline_hyperparameters_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"training.{key}"):
        train_config({key: value})


# Mean Teacher -------------------------------------------------------------------------------

def test_mean_teacher_teacher_is_the_ema_of_the_student():
    strategy = strategy_for("mean_teacher", ema_decay=0.6)
    student, teacher = strategy.model, strategy.teacher
    assert strategy.eval_model is teacher and all(not p.requires_grad for p in teacher.parameters())
    for step in range(1, 4):
        before = params(teacher)
        strategy.step(disk_batch(step))
        alpha = min(1 - 1 / (step + 1), 0.6)  # 0.5, 0.6667 -> 0.6, 0.6
        for t, t0, s in zip(teacher.parameters(), before, student.parameters()):
            torch.testing.assert_close(t, alpha * t0 + (1 - alpha) * s.detach(), rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters()))


def test_mean_teacher_loss_is_supervised_plus_ramped_consistency():
    strategy = strategy_for("mean_teacher", planned_iterations=40)  # ramp-up over 10 iterations
    for step in range(12):
        weight = 0.1 * sigmoid_rampup(step, 10)
        losses = strategy.step(disk_batch(step))
        assert losses["loss"] == pytest.approx(losses["loss_seg"] + weight * losses["loss_unsup"], rel=1e-5)
        assert math.isnan(losses["loss_rec"]) and losses["loss_unsup"] > 0


def test_mean_teacher_consistency_compares_noisy_student_and_teacher_views(monkeypatch):
    strategy = strategy_for("mean_teacher")
    batch, inputs = disk_batch(), []
    for net in (strategy.model, strategy.teacher):
        net.encoder.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach().clone()))
    strategy.step(batch)
    student_input, teacher_input = inputs
    n = batch.image.shape[0]
    assert torch.equal(student_input[:n], batch.image)  # labeled images clean: CNN's supervised term
    for view in (student_input[n:], teacher_input):
        noise = view - batch.unlabeled
        assert 0 < noise.abs().max() <= 0.2 + 1e-6  # std 0.1, clipped at 2 std
    assert not torch.equal(student_input[n:], teacher_input)  # independent noise


def test_mean_teacher_learns():
    strategy = strategy_for("mean_teacher", lr_segmentation=0.01, consistency_noise_std=0.05)
    first = strategy.step(disk_batch(0))["loss_seg"]
    for _ in range(60):
        last = strategy.step(disk_batch(0))["loss_seg"]
    assert last < 0.6 * first, (first, last)


# Cross pseudo supervision -------------------------------------------------------------------

def test_cps_networks_start_different_and_exchange_hard_pseudo_labels(monkeypatch):
    strategy = strategy_for("cps")
    net1, net2 = strategy.networks()
    assert strategy.eval_model is net1 and net2 is not net1
    assert any(not torch.equal(a, b) for a, b in zip(net1.parameters(), net2.parameters()))  # own initialisations
    batch = disk_batch()
    images = torch.cat([batch.image, batch.unlabeled])
    with torch.no_grad():
        expected = [(torch.sigmoid(net.segment(net.encode(images))) >= 0.5).float() for net in (net1, net2)]
    seen = []
    original = F.binary_cross_entropy_with_logits

    def spy(logits, target, *args, **kwargs):
        seen.append((logits.detach(), target))
        return original(logits, target, *args, **kwargs)

    monkeypatch.setattr(baselines.F, "binary_cross_entropy_with_logits", spy)
    weight = 1.5 * sigmoid_rampup(0, strategy.rampup_iterations)
    losses = strategy.step(batch)
    (logits1, target1), (logits2, target2) = seen
    assert torch.equal(target1, expected[1]) and torch.equal(target2, expected[0])  # each from the other
    assert losses["loss"] == pytest.approx(losses["loss_seg"] + weight * losses["loss_unsup"], rel=1e-5)


def test_cps_updates_both_networks_and_learns():
    strategy = strategy_for("cps", lr_segmentation=0.01)
    net1, net2 = strategy.networks()
    before = [params(net1), params(net2)]
    first = strategy.step(disk_batch(0))["loss_seg"]
    for net, old in zip((net1, net2), before):
        assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), old))
    for _ in range(60):
        last = strategy.step(disk_batch(0))["loss_seg"]
    assert last < 0.6 * first, (first, last)


def test_baselines_need_their_budget_and_second_network():
    method = get_method("cps")
    with pytest.raises(ValueError, match="planned_iterations"):
        make_strategy(build_model(ARCH, method), method, TrainConfig())
    with pytest.raises(ValueError, match="new_network"):
        make_strategy(build_model(ARCH, method), method, TrainConfig(), planned_iterations=10)


# Whole runs: resume ---------------------------------------------------------------------------

class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_dataset(root)
    return root


def train(results, out, method_id, on_iteration=None):
    spec = resolve_run(tiny_config(results), "brats18", "2L2U", method_id, 1, out, **run_inputs(results))
    return train_run(spec, device="cpu", on_iteration=on_iteration)


@pytest.mark.parametrize("method_id", ["mean_teacher", "cps"])
def test_resumed_baseline_matches_an_uninterrupted_run(results, tmp_path, method_id):
    def interrupt(iteration):
        if iteration == 17:
            raise Interrupted

    train(results, tmp_path / "straight", method_id)
    with pytest.raises(Interrupted):
        train(results, tmp_path / "resumed", method_id, on_iteration=interrupt)
    summary = train(results, tmp_path / "resumed", method_id)
    straight, resumed = (load_model(tmp_path / name / "model.pt")[0].state_dict() for name in ("straight", "resumed"))
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    for name in ("per_case.tsv", "per_case_final.tsv"):
        assert (tmp_path / "straight" / name).read_text() == (tmp_path / "resumed" / name).read_text()
    assert summary["method_label"] == METHODS[method_id].label


@pytest.mark.parametrize("method_id, network", [("mean_teacher", "teacher"), ("cps", "model")])
def test_the_validated_and_saved_network_is_the_one_the_method_tests(results, tmp_path, monkeypatch, method_id,
                                                                     network):
    """Mean Teacher validates, keeps and tests its teacher; CPS its network 1."""
    kept, validated = {}, []
    strategy_cls = strategy_class(METHODS[method_id].strategy)
    original_setup, original_call = strategy_cls.setup, loop.Validator.__call__

    def setup(self):
        original_setup(self)
        kept["strategy"] = self

    def call(self, model):
        validated.append(model)
        return original_call(self, model)

    monkeypatch.setattr(strategy_cls, "setup", setup)
    monkeypatch.setattr(loop.Validator, "__call__", call)
    summary = train(results, tmp_path / method_id, method_id)
    expected = getattr(kept["strategy"], network)
    assert validated and all(model is expected for model in validated)
    saved = load_model(tmp_path / method_id / "model.pt")[0].state_dict()
    if summary["best_iteration"] == summary["iterations"]:  # model.pt = the final weights of that network
        assert all(torch.equal(saved[k], v) for k, v in expected.state_dict().items())
