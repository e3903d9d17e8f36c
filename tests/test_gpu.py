"""The CUDA code paths (issue 14): every strategy trains the 3D network on CUDA with `amp: off`
and `amp: bf16`; models and resume checkpoints move between CUDA and the CPU; sliding-window
inference of a full BraTS-size volume at the paper's patch fits, and its peak memory is printed.

These tests are marked `gpu` and skipped where CUDA is absent: the default run leaves them out
(pyproject.toml), `python -m pytest -m gpu -rs` runs them (and, on a CPU, reports them skipped).
The last test needs no GPU and runs by default: every GPU job of the paper profile claims the
`gpu` resource that the default profile limits.
"""

import csv
import json
import logging
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_data import run_inputs, tiny_config, write_dataset
from test_training import Interrupted, interrupt_at

from massl.bench import BRATS_VOLUME
from massl.config import ModelConfig, TrainConfig
from massl.device import autocast_dtype
from massl.evaluation.inference import sliding_window_predict
from massl.methods import AUTOENCODER, METHODS, get_method
from massl.model.network import build_model
from massl.model.files import load_checkpoint, load_model
from massl.training.run import resolve_run, train_run

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = REPO / "workflow" / "profiles" / "default"
CUDA = torch.cuda.is_available()
PATCH_3D = [8, 16, 16]  # the tiny volumes are 8 x 32 x 32; 3 levels need multiples of 4


def gpu_test(fn):
    """Selected by `-m gpu`; skipped, never passed, without CUDA."""
    skip = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    return pytest.mark.gpu(skip(fn))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_dataset(root)
    return root


def config_3d(results, **training):
    """The tiny dataset's config with the 3D network (spatial_dims 3) at batch 1, as the paper."""
    config = tiny_config(results, patch_size=PATCH_3D, batch_size=1, **training)
    config["model"]["spatial_dims"] = 3
    return config


def train(results, out, method, device, autoencoder=None, on_iteration=None, **training):
    spec = resolve_run(config_3d(results, **training), "brats18", "2L2U", method, 1, out, **run_inputs(results),
                       autoencoder=autoencoder)
    return train_run(spec, device=device, on_iteration=on_iteration)


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def all_finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


@pytest.fixture(scope="module")
def cuda_autoencoder(results):
    """The shared autoencoder run of the pretraining rows, trained on CUDA once per `amp`."""
    runs = {}

    def get(amp):
        if amp not in runs:
            runs[amp] = results / "runs" / f"autoencoder_{amp}"
            train(results, runs[amp], AUTOENCODER.id, "cuda", amp=amp, max_iterations=3)
        return runs[amp]

    return get


# Every strategy on CUDA -------------------------------------------------------------------------

@pytest.mark.parametrize("amp", ["off", "bf16"])
@pytest.mark.parametrize("method_id", [AUTOENCODER.id, *METHODS])
@gpu_test
def test_every_strategy_trains_the_3d_network_on_cuda(results, cuda_autoencoder, tmp_path, method_id, amp):
    method = get_method(method_id)
    if method is AUTOENCODER:
        out = cuda_autoencoder(amp)
    else:
        out = tmp_path / method_id
        autoencoder = cuda_autoencoder(amp) if method.needs_autoencoder else None
        train(results, out, method_id, "cuda", autoencoder=autoencoder, amp=amp, max_iterations=3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "converged" and summary["iterations"] == 3
    assert summary["device"].startswith("cuda")
    log = read_tsv(out / "train_log.tsv")
    assert [int(row["iteration"]) for row in log] == [1, 2, 3]
    segments, reconstructs = method is not AUTOENCODER, method.strategy in ("joint", "alternating", "autoencoder")
    for row in log:
        assert math.isfinite(float(row["loss"])), row
        assert math.isfinite(float(row["loss_seg"])) == segments, row
        assert math.isfinite(float(row["loss_rec"])) == reconstructs, row
    # The one validation (at the end, over whole volumes on CUDA) scored.
    assert math.isfinite(float(log[-1]["val_mse" if method is AUTOENCODER else "val_dice"]))
    assert all_finite(load_model(out / "model.pt")[0])
    if segments:
        assert all(math.isfinite(float(case["dice"])) for case in read_tsv(out / "per_case.tsv"))


@gpu_test
def test_bf16_autocast_changes_the_losses_by_rounding_only(results, tmp_path):
    """Same seed, same first batch: the first losses differ only by the precision, so bf16 is
    in effect (they differ) and not broken (they are close)."""
    first = {}
    for amp in ("off", "bf16"):
        train(results, tmp_path / amp, "massl_l07", "cuda", amp=amp, max_iterations=2)
        first[amp] = [float(read_tsv(tmp_path / amp / "train_log.tsv")[0][k]) for k in ("loss_seg", "loss_rec")]
    assert first["bf16"] != first["off"]
    assert first["bf16"] == pytest.approx(first["off"], rel=0.05)


# Models and checkpoints across devices ------------------------------------------------------------

# Tolerance between CUDA and CPU probabilities of one model: cuDNN runs fp32 convolutions in
# TF32 by default (torch.backends.cudnn.allow_tf32), 10 mantissa bits, as `massl predict` does.
PROB_ATOL_MAX, PROB_ATOL_MEAN = 1e-2, 1e-3


@pytest.mark.parametrize("trained_on", ["cuda", "cpu"])
@gpu_test
def test_a_model_trained_on_one_device_predicts_alike_on_the_other(results, tmp_path, trained_on):
    out = tmp_path / "run"
    train(results, out, "massl_alter", trained_on, amp="off", max_iterations=3)
    volume = np.load(results / "preprocessed" / "brats18" / "case06.image.npy")
    predicted = {}
    for device in ("cpu", "cuda"):
        model, _ = load_model(out / "model.pt", device)
        model.eval()
        predicted[device] = sliding_window_predict(model, volume, PATCH_3D, 0.5, 8, device, None,
                                                   return_reconstruction=True)
    (prob_cpu, rec_cpu), (prob_cuda, rec_cuda) = predicted["cpu"], predicted["cuda"]
    assert np.ptp(prob_cpu) > 1e-3  # a model whose output varies: the comparison means something
    for cpu, cuda in ((prob_cpu, prob_cuda), (rec_cpu, rec_cuda)):
        assert cpu.shape == cuda.shape
        difference = np.abs(cpu - cuda)
        assert difference.max() < PROB_ATOL_MAX and difference.mean() < PROB_ATOL_MEAN


@pytest.mark.parametrize("first, then", [("cuda", "cpu"), ("cpu", "cuda")])
@gpu_test
def test_a_checkpoint_written_on_one_device_resumes_on_the_other(results, tmp_path, caplog, first, then):
    settings = {"amp": "off", "max_iterations": 6, "checkpoint_every_iterations": 2}
    reference = tmp_path / "reference"
    train(results, reference, "massl_alter", first, **settings)
    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train(results, out, "massl_alter", first, on_iteration=interrupt_at(4), **settings)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["iteration"] == 4
    caplog.set_level(logging.INFO, logger="massl")
    summary = train(results, out, "massl_alter", then, **settings)
    assert "resumed at iteration 4" in caplog.text  # not a fresh start on `then`
    assert summary["status"] == "converged" and summary["iterations"] == 6
    assert summary["device"].startswith(then)
    log, reference_log = read_tsv(out / "train_log.tsv"), read_tsv(reference / "train_log.tsv")
    assert [int(row["iteration"]) for row in log] == list(range(1, 7))
    for row, saved in zip(log[:4], state["rows"], strict=True):  # the log up to the checkpoint, as saved
        assert float(row["loss"]) == pytest.approx(saved["loss"], rel=1e-5)
    # Iterations 5-6 ran on `then` from the checkpoint's weights, optimizer state and random
    # streams: the reference run's batches, so its losses up to the two devices' rounding.
    resumed, uninterrupted = ([float(row[k]) for row in rows for k in ("loss_seg", "loss_rec")]
                              for rows in (log, reference_log))
    assert resumed == pytest.approx(uninterrupted, rel=2e-2)
    assert all_finite(load_model(out / "model.pt")[0])


# A full BraTS volume --------------------------------------------------------------------------

@pytest.mark.parametrize("amp", ["off", "bf16"])
@gpu_test
def test_sliding_window_inference_of_a_full_brats_volume_fits(capsys, amp):
    """The paper network (with the attention reconstruction decoder, as the figure example runs)
    on a preprocessed BraTS-size volume at the library's defaults (32 x 128 x 128 windows, 50 %
    overlap, 8 windows per batch). The sums live on the CPU, so the GPU's peak is that of one
    batch: the same for a one-window-deep slab as for the whole volume."""
    cfg = TrainConfig(amp=amp)
    torch.manual_seed(0)
    model = build_model(ModelConfig(), METHODS["massl_alter"]).to("cuda").eval()
    amp_dtype = autocast_dtype(cfg.amp, "cuda")
    volume = np.random.default_rng(0).random(BRATS_VOLUME, dtype=np.float32)

    def predict(part):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        out = sliding_window_predict(model, part, cfg.patch_size, cfg.inference_overlap, cfg.inference_batch,
                                     "cuda", amp_dtype, return_reconstruction=True)
        torch.cuda.synchronize()
        return out, torch.cuda.max_memory_allocated(), time.perf_counter() - started

    _, slab_peak, _ = predict(volume[: cfg.patch_size[0]])  # also the warm-up (cuDNN's first calls)
    (prob, rec), peak, seconds = predict(volume)
    with capsys.disabled():
        print(f"\nfull-volume inference, {'x'.join(map(str, BRATS_VOLUME))} in {'x'.join(map(str, cfg.patch_size))} "
              f"windows, amp {amp}, on {torch.cuda.get_device_name()}: torch.cuda.max_memory_allocated() = "
              f"{peak / 2**20:.0f} MiB ({peak} bytes), {seconds:.1f} s")
    assert prob.shape == BRATS_VOLUME and rec.shape == (2, *BRATS_VOLUME)
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    assert np.isfinite(rec).all()
    assert peak <= 1.1 * slab_peak


# The default profile's GPU limit ----------------------------------------------------------------

def profile_gpu_limit():
    return yaml.safe_load((DEFAULT_PROFILE / "config.yaml").read_text())["resources"]["gpu"]


@gpu_test
def test_the_default_profile_runs_no_more_gpu_jobs_than_there_are_gpus():
    assert 1 <= profile_gpu_limit() <= torch.cuda.device_count()


def planned_jobs(dry_run: str) -> list[tuple[str, dict]]:
    """(rule, resources) of every job a Snakemake dry run prints."""
    jobs = []
    for line in dry_run.splitlines():
        header = re.fullmatch(r"(?:local)?rule (\w+):", line)
        if header:
            jobs.append((header[1], {}))
        elif line.strip().startswith("resources:") and jobs:
            pairs = (item.split("=", 1) for item in line.split(":", 1)[1].split(", "))
            jobs[-1][1].update((key.strip(), value) for key, value in pairs)
    return jobs


def test_every_gpu_job_of_the_paper_profile_claims_the_gpu_the_default_profile_limits(tmp_path):
    """Each GPU job uses the first visible GPU, so the default profile allows one at a time
    (`resources: gpu: 1`); that holds only if every job that runs on CUDA claims it."""
    assert profile_gpu_limit() == 1
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n",  # target: all
           "--profile", str(DEFAULT_PROFILE), "--configfile", str(REPO / "config" / "paper.yaml")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result.stdout)
    on_gpu = {"train", "train_autoencoder", "probe"}  # their shell passes --device cuda when gpu > 0
    assert {rule for rule, _ in jobs} >= on_gpu
    for rule, resources in jobs:
        assert int(resources.get("gpu", 0)) == (1 if rule in on_gpu else 0), (rule, resources)
