"""`massl.allocator`: the MASSL_ALLOCATOR choice, what it resolves to, what a process and its
children run with, and that it changes no result."""

import json
import logging
import os
import subprocess
import sys

import pytest

from massl import allocator
from massl.cli import main
from massl.errors import EXIT_BAD_INPUT, ConfigError

TCMALLOC = "/nonexistent/libtcmalloc_minimal.so.4"
GLIBC = pytest.mark.skipif(not allocator.is_glibc(), reason="glibc's malloc only")


@pytest.fixture
def no_tcmalloc(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_path", lambda: None)


@pytest.fixture
def with_tcmalloc(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_path", lambda: TCMALLOC)


def test_requested_defaults_to_auto_and_names_the_variable_on_a_bad_value():
    assert allocator.requested({}) == "auto" and allocator.requested({"MASSL_ALLOCATOR": " "}) == "auto"
    assert allocator.requested({"MASSL_ALLOCATOR": "glibc-tuned"}) == "glibc-tuned"
    with pytest.raises(ConfigError, match="MASSL_ALLOCATOR='jemalloc'.*auto, glibc-tuned, tcmalloc, default"):
        allocator.requested({"MASSL_ALLOCATOR": "jemalloc"})


def test_auto_is_tcmalloc_when_installed(with_tcmalloc):
    assert allocator.resolve("auto") == "tcmalloc"
    assert allocator.resolve("glibc-tuned") == "glibc-tuned" and allocator.resolve("default") == "default"


def test_auto_without_tcmalloc_is_glibc_tuned_on_glibc_else_default(no_tcmalloc, monkeypatch):
    monkeypatch.setattr(allocator, "is_glibc", lambda: True)
    assert allocator.resolve("auto") == "glibc-tuned"
    monkeypatch.setattr(allocator, "is_glibc", lambda: False)
    assert allocator.resolve("auto") == "default"
    with pytest.raises(ConfigError, match="MASSL_ALLOCATOR=tcmalloc, but tcmalloc is not installed.*apt-get"):
        allocator.resolve("tcmalloc")


@pytest.mark.parametrize("env, preload, expected", [
    ({}, "", "glibc-tuned"),
    ({"MASSL_ALLOCATOR": "glibc-tuned"}, "", "glibc-tuned"),
    ({"MASSL_ALLOCATOR": "tcmalloc"}, "", "glibc-tuned"),  # not preloaded: glibc tuned instead, with a warning
    ({"MASSL_ALLOCATOR": "default"}, "", "default"),
    ({}, TCMALLOC, "tcmalloc"),  # preloaded by the workflow or `massl bench`
])
def test_apply_reports_what_the_process_runs_with(monkeypatch, no_tcmalloc, env, preload, expected):
    tuned = []
    monkeypatch.setattr(allocator, "tune_glibc", lambda: tuned.append(True) or True)
    monkeypatch.setattr(allocator, "_active", None)
    monkeypatch.setenv("LD_PRELOAD", preload)
    assert allocator.apply(env) == expected == allocator.active()
    assert bool(tuned) == (expected == "glibc-tuned")


def test_glibc_tuned_off_glibc_is_a_logged_no_op(monkeypatch, no_tcmalloc, caplog):
    monkeypatch.setattr(allocator, "is_glibc", lambda: False)
    monkeypatch.setattr(allocator, "_active", None)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    with caplog.at_level(logging.INFO, logger="massl.allocator"):
        assert allocator.apply({"MASSL_ALLOCATOR": "glibc-tuned"}) == "default"
    assert "not glibc" in caplog.text


def test_cli_rejects_a_bad_choice_before_the_command_runs(monkeypatch, capsys):
    monkeypatch.setenv("MASSL_ALLOCATOR", "fast")
    assert main(["bench", "--threads", "1"]) == EXIT_BAD_INPUT
    assert "MASSL_ALLOCATOR='fast'" in capsys.readouterr().err


def test_child_env_sets_the_resolved_choice_and_preloads_only_tcmalloc(monkeypatch, no_tcmalloc):
    monkeypatch.setattr(allocator, "is_glibc", lambda: True)
    env = {"PATH": "/bin", "LD_PRELOAD": "/x/libtcmalloc.so.4:/y/libother.so"}
    assert allocator.child_env(env, "auto") == {"PATH": "/bin", "LD_PRELOAD": "/y/libother.so",
                                                "MASSL_ALLOCATOR": "glibc-tuned"}
    assert allocator.child_env({"PATH": "/bin"}, "default") == {"PATH": "/bin", "MASSL_ALLOCATOR": "default"}
    monkeypatch.setattr(allocator, "tcmalloc_path", lambda: TCMALLOC)
    assert allocator.child_env(env, "auto")["LD_PRELOAD"] == f"{TCMALLOC}:/y/libother.so"


def test_preload_env_adds_or_removes_only_tcmalloc():
    env = {"PATH": "/bin", "LD_PRELOAD": "/x/libtcmalloc.so.4:/y/libother.so"}
    assert allocator.preload_env(env, "/lib/libtcmalloc_minimal.so.4")["LD_PRELOAD"] == \
        "/lib/libtcmalloc_minimal.so.4:/y/libother.so"
    assert allocator.preload_env(env, None) == {"PATH": "/bin", "LD_PRELOAD": "/y/libother.so"}
    assert allocator.preload_env({"PATH": "/bin"}, None) == {"PATH": "/bin"}


def test_tcmalloc_path_prefers_the_environments_own(tmp_path, monkeypatch):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libtcmalloc_minimal.so.4").write_bytes(b"")
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path))
    assert allocator.tcmalloc_path() == str(tmp_path / "lib" / "libtcmalloc_minimal.so.4")


def test_shell_prefix_keeps_what_ld_preload_already_holds(with_tcmalloc):
    command = allocator.shell_prefix({}) + "printenv LD_PRELOAD"

    def run(env):
        # strict mode, as Snakemake runs its shell commands
        return subprocess.run(["bash", "-euo", "pipefail", "-c", command], env=env, capture_output=True,
                              text=True, check=True).stdout

    assert run({"PATH": os.environ["PATH"], "LD_PRELOAD": "/x/libother.so"}) == f"{TCMALLOC}:/x/libother.so\n"
    assert run({"PATH": os.environ["PATH"]}) == f"{TCMALLOC}\n"
    assert allocator.shell_prefix({"MASSL_ALLOCATOR": "glibc-tuned"}) == ""


def test_shell_prefix_is_empty_without_tcmalloc(no_tcmalloc):
    assert allocator.shell_prefix({}) == ""
    with pytest.raises(ConfigError, match="tcmalloc is not installed"):
        allocator.shell_prefix({"MASSL_ALLOCATOR": "tcmalloc"})


def _python(code: str, choice: str) -> str:
    env = {**os.environ, "MASSL_ALLOCATOR": choice, "OMP_NUM_THREADS": "1"}
    env.pop("LD_PRELOAD", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


MMAPPED_BLOCKS = """
import ctypes, json
from massl import allocator
active = allocator.apply()
libc = ctypes.CDLL(None)
class Info(ctypes.Structure):  # struct mallinfo2 (glibc >= 2.33): hblks = blocks served by mmap
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = Info, ctypes.c_void_p, (ctypes.c_void_p,)
before = libc.mallinfo2().hblks  # Python's start-up may have mmapped some already
block = libc.malloc(64 << 20)  # a paper-scale activation buffer
print(json.dumps({"active": active, "new_mmapped": libc.mallinfo2().hblks - before}))
libc.free(block)
"""


@GLIBC
def test_glibc_tuned_serves_large_blocks_from_the_heap():
    tuned, default = (json.loads(_python(MMAPPED_BLOCKS, c)) for c in ("glibc-tuned", "default"))
    assert tuned == {"active": "glibc-tuned", "new_mmapped": 0}
    assert default == {"active": "default", "new_mmapped": 1}  # glibc mmaps a 64 MiB block


TRAIN = """
import hashlib, json, torch
from massl import allocator
active = allocator.apply()
from massl import bench
from massl.config import ModelConfig, TrainConfig
from massl.methods import get_method
from massl.model.network import build_model
from massl.training.strategies import make_strategy
torch.set_num_threads(1)
scale = bench.Scale("alloc", 2, (64, 64), 2, channels=(8, 16))  # activations above glibc's mmap threshold
cfg = TrainConfig(patch_size=list(scale.patch), batch_size=scale.batch_size)
digest = hashlib.sha256()
for method in map(get_method, ("cnn", "massl_l07")):
    torch.manual_seed(1)
    model = build_model(ModelConfig(spatial_dims=2, channels=list(scale.channels)), method)
    strategy, batch = make_strategy(model, method, cfg), bench.synthetic_batch(scale, torch.device("cpu"), seed=1)
    for _ in range(3):
        strategy.step(batch)
    for tensor in model.state_dict().values():
        digest.update(tensor.numpy().tobytes())
print(json.dumps({"active": active, "weights": digest.hexdigest()}))
"""


@GLIBC
def test_the_allocator_changes_no_result():
    """A few training steps of two strategies end in bitwise identical weights with and without
    the tuned allocator."""
    tuned, default = (json.loads(_python(TRAIN, c)) for c in ("glibc-tuned", "default"))
    assert (tuned["active"], default["active"]) == ("glibc-tuned", "default")
    assert tuned["weights"] == default["weights"]
