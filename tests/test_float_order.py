"""Float order (README, "Reproducibility"): a job's thread count does not change its runs when
`training.threads_per_run` is set (massl.training.parallel), and `training.cpu_isa` caps the CPU
kernels' instruction set (massl.device.pin_cpu_isa)."""

import filecmp
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from tiny_data import run_args, tiny_config, write_dataset

from massl.cli import main
from massl.device import pin_cpu_isa
from massl.errors import ConfigError
from massl.training.parallel import plan_workers

METHODS = "autoencoder,cnn,pretrain_dec,massl_alter"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_dataset(root)
    return root


def train(results, out, threads, **training):
    config = out.parent / f"{out.name}.json"
    config.write_text(json.dumps(tiny_config(results, cpu_isa="native", **training)))
    return main(["train", "--config", str(config), "--dataset", "brats18", "--setting", "2L2U", "--rep", "1",
                 "--device", "cpu", "--threads", str(threads), *run_args(results), "--method", METHODS,
                 "--out", str(out / "{method}"), "--autoencoder", str(out / "autoencoder")])


def test_a_jobs_thread_count_does_not_change_its_runs(results, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="massl.training.parallel")
    assert train(results, tmp_path / "one", 1, threads_per_run=1, batch_size=4) == 0
    assert "at a time" not in caplog.text  # one thread: one run after the other, in this process
    assert train(results, tmp_path / "two", 2, threads_per_run=1, batch_size=4) == 0
    assert "4 runs, 2 at a time, 1 torch thread(s) each" in caplog.text
    for method in METHODS.split(","):
        one, two = tmp_path / "one" / method, tmp_path / "two" / method
        assert json.loads((two / "provenance.json").read_text())["torch_threads"] == 1
        assert _losses(one) == _losses(two), method
        assert torch.equal(_flat(one), _flat(two)), method
        if method != "autoencoder":
            assert filecmp.cmp(one / "per_case.tsv", two / "per_case.tsv", shallow=False), method


def test_a_failing_run_in_a_worker_fails_the_job_with_its_message(results, tmp_path, capsys):
    split = json.loads((results / "splits" / "brats18" / "rep1.json").read_text())
    split["settings"]["2L2U"]["unlabeled"] = []  # massl_alter cannot train, cnn can
    bad = tmp_path / "rep1.json"
    bad.write_text(json.dumps(split))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(results, threads_per_run=1, cpu_isa="native")))
    code = main(["train", "--config", str(config), "--dataset", "brats18", "--setting", "2L2U", "--rep", "1",
                 "--device", "cpu", "--threads", "2", "--split", str(bad),
                 "--cases", str(results / "preprocessed" / "brats18" / "cases.tsv"),
                 "--method", "cnn,massl_alter", "--out", str(tmp_path / "{method}")])
    assert code == 2
    assert f"{bad}: setting 2L2U has no unlabeled cases, which method massl_alter needs" in capsys.readouterr().err
    assert not (tmp_path / "massl_alter" / "summary.json").exists()


@pytest.mark.parametrize("job_threads, threads_per_run, n_runs, workers", [
    (2, 1, 10, 2), (4, 1, 3, 3), (4, 2, 10, 2), (2, None, 10, 1), (None, 1, 10, 1), (2, 1, 1, 1), (1, 2, 10, 1)])
def test_worker_plan(job_threads, threads_per_run, n_runs, workers):
    assert plan_workers(job_threads, threads_per_run, n_runs, "cpu") == workers


def test_cpu_isa_pin_sets_both_caps_and_wins_over_the_environment(monkeypatch, caplog):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    record = pin_cpu_isa("avx2")
    assert "replacing ONEDNN_MAX_CPU_ISA=AVX512_CORE from the environment by AVX2" in caplog.text
    assert (os.environ["ONEDNN_MAX_CPU_ISA"], os.environ["ATEN_CPU_CAPABILITY"]) == ("AVX2", "avx2")
    assert record["cpu_isa"] == "avx2" and record["onednn_max_cpu_isa"] == "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert pin_cpu_isa("native")["onednn_max_cpu_isa"] == "AVX512_CORE"  # native leaves the environment alone
    with pytest.raises(ConfigError, match="training.cpu_isa = 'sse9' is not allowed"):
        pin_cpu_isa("sse9")


def test_cpu_isa_reaches_the_kernels_of_a_fresh_process():
    """In a new `massl` process the pin is in place before oneDNN creates its first kernel: its
    verbose log names the AVX2 implementation, on a CPU that has more."""
    code = ("import os, torch; from massl.device import pin_cpu_isa; pin_cpu_isa('avx2');"
            "os.environ['ONEDNN_VERBOSE'] = '1'; torch.nn.Conv2d(8, 8, 3)(torch.randn(2, 8, 16, 16)).sum().backward()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    kernels = {line.split(",")[6] for line in out.splitlines() if ",exec,cpu,convolution," in line}
    if not kernels:
        pytest.skip("this torch build does not send the convolution to oneDNN")
    assert any("avx2" in k for k in kernels) and not any("avx512" in k for k in kernels), kernels


def _losses(run):
    rows = (run / "train_log.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    return [{k: v for k, v in zip(header, row.split("\t")) if k != "seconds"} for row in rows[1:]]


def _flat(run):
    from massl.model.files import load_model

    return torch.cat([p.flatten() for p in load_model(run / "model.pt")[0].state_dict().values()])
