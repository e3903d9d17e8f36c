"""`massl bench` pieces on tiny inputs: FLOP counting, the reference step's equivalence with the
project's strategies, the report's schema and arithmetic. No timing assertions."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from massl import bench
from massl.config import TrainConfig
from massl.methods import METHODS, get_method

torch.set_num_threads(1)
CPU = torch.device("cpu")
TINY = bench.Scale("tiny", 2, (8, 8), 2, channels=(4, 8))
TINY_3D = bench.Scale("tiny3d", 3, (4, 8, 8), 1, channels=(4, 8))  # 3D: the project takes massl.model.cpu_conv
STEP_KEYS = {"strategy", "scale", "seconds_per_iteration", "gflops", "fraction_of_ceiling",
             "reference_seconds_per_iteration", "speedup_vs_reference"}


def test_count_gflop_of_a_matmul_and_a_convolution():
    a, b = torch.ones(2, 3), torch.ones(3, 4)
    assert bench.count_gflop(lambda: a @ b) == pytest.approx(2 * 2 * 3 * 4 / 1e9)
    conv = torch.nn.Conv2d(1, 2, 3, padding=1, bias=False)
    x = torch.ones(1, 1, 4, 4)
    forward = 2 * 2 * 1 * 9 * 16  # 2 FLOP per multiply-add: out channels x in channels x kernel x voxels
    assert bench.count_gflop(lambda: conv(x)) == pytest.approx(forward / 1e9)
    # Backward to the weights only (the input needs no gradient): one more convolution's worth.
    assert bench.count_gflop(lambda: conv(x).sum().backward()) == pytest.approx(2 * forward / 1e9)


@pytest.mark.parametrize("scale", [TINY, TINY_3D], ids=lambda s: s.name)
@pytest.mark.parametrize("strategy", list(bench.STRATEGY_METHODS))
def test_reference_step_makes_the_same_updates_as_the_project(strategy, scale):
    method = get_method(bench.STRATEGY_METHODS[strategy])
    project, _ = bench.make_step("project", scale, method, CPU, seed=3)
    reference, info = bench.make_step("reference", scale, method, CPU, seed=3)
    assert info == {"amp": "off"}
    for _ in range(3):  # equal losses after updates: same gradients, same optimizer steps
        assert reference() == pytest.approx(project(), rel=1e-4, abs=1e-6)


def test_reference_joint_step_costs_the_extra_forward_passes():
    """The project encodes labeled and unlabeled images once; the reference segments the
    unlabeled batch in a pass of its own first, so it costs more FLOPs per step."""
    method = METHODS["massl_l07"]
    project, _ = bench.make_step("project", TINY, method, CPU)
    reference, _ = bench.make_step("reference", TINY, method, CPU)
    assert bench.count_gflop(reference) > bench.count_gflop(project)


def test_measure_step_smoke():
    row = bench.measure_step("project", TINY, "joint", CPU, warmup=1, repeats=2)
    assert row["scale"] == "tiny" and row["strategy"] == "joint" and row["method"] == "massl_l07"
    assert row["seconds_per_iteration"] > 0 and row["gflop_per_iteration"] > 0 and row["repeats"] == 2


def test_quick_plan_on_cpu_skips_only_the_slow_paper_steps():
    full = [(s.name, strategy) for s, strategy, *_ in bench.step_plan(False, CPU)]
    quick = [(s.name, strategy) for s, strategy, *_ in bench.step_plan(True, CPU)]
    assert len(full) == 8 and set(quick) < set(full)
    assert {k for k in full if k not in quick} == {("paper", "joint"), ("paper", "alternating")}


def test_loading_draws_augmented_batches_from_memory_mapped_cases(tmp_path):
    store = bench.write_synthetic_store(tmp_path, (6, 12, 12))
    # Target block: [s/4, s/2) along each axis, 2 x 3 x 3 voxels.
    assert isinstance(store.image("case0"), np.memmap) and store.label("case1").sum() == 2 * 3 * 3
    rows = bench.measure_loading(CPU, scales=(TINY,), shape=(6, 12, 12), draws=3)
    assert [r["scale"] for r in rows] == ["tiny"]
    assert rows[0]["batches_per_second"] == pytest.approx(1 / rows[0]["seconds_per_batch"])


def test_count_windows_matches_the_sliding_window_grid():
    # 155 slices, window 32, step 16: starts 0..112 plus 123; 200 pixels, window 128: 0, 64, 72.
    assert bench.count_windows((155, 200, 200), (32, 128, 128), 0.5) == 9 * 3 * 3
    assert bench.count_windows((20, 100, 100), (32, 128, 128), 0.5) == 1  # padded up to one window


def _worker_outputs():
    steps = [{"strategy": "supervised", "scale": "demo", "method": "cnn", "seconds_per_iteration": 0.5,
              "gflop_per_iteration": 20.0, "peak_memory_mb": 100.0, "repeats": 3, "amp": "off"},
             {"strategy": "joint", "scale": "demo", "method": "massl_l07", "seconds_per_iteration": 2.0,
              "gflop_per_iteration": 50.0, "peak_memory_mb": 200.0, "repeats": 3, "amp": "off"}]
    project = {"impl": "project", "steps": steps, "ceiling_gflops": 80.0,
               "machine": {"cpu": "Test CPU", "cpu_cores": 2, "torch_threads": 1, "device": "cpu",
                           "device_name": "Test CPU", "torch": "x", "hostname": "h", "quick": True},
               "allocator": "glibc-tuned",
               "loading": [{"scale": "demo", "seconds_per_batch": 0.01, "batches_per_second": 100.0}],
               "inference": {"volume_shape": [155, 200, 200], "patch": [32, 128, 128], "overlap": 0.5,
                             "windows_per_batch": 8, "windows": 81, "windows_timed": 9, "seconds": 81.0,
                             "seconds_per_window": 1.0, "extrapolated": True, "amp": "off"}}
    reference = {"impl": "reference", "allocator": "default", "steps": [{**steps[0], "seconds_per_iteration": 0.8, "gflop_per_iteration": 20.0},
                                                {**steps[1], "seconds_per_iteration": 4.0, "gflop_per_iteration": 60.0}]}
    return project, reference


def test_merged_report_has_the_issue_schema_and_hand_computed_ratios(tmp_path):
    report = bench.merge_results(*_worker_outputs())
    assert {"machine", "ceiling_gflops", "steps", "inference", "loading"} <= set(report)
    assert (report["allocator"], report["reference_allocator"]) == ("glibc-tuned", "default")
    supervised, joint = report["steps"]
    assert STEP_KEYS <= set(supervised)
    assert supervised["gflops"] == pytest.approx(40.0)  # 20 GFLOP / 0.5 s
    assert supervised["fraction_of_ceiling"] == pytest.approx(0.5)  # 40 / 80
    assert supervised["speedup_vs_reference"] == pytest.approx(1.6)  # 0.8 s / 0.5 s
    assert joint["speedup_vs_reference"] == pytest.approx(2.0) and joint["reference_gflop_per_iteration"] == 60.0
    assert report["loading"][0]["fraction_of_step"] == pytest.approx(0.02)  # 0.01 s of a 0.5 s step
    assert report["paper_grid_hours"] is None  # no paper-scale steps measured
    text = bench.format_report(report)
    for figure in ("Test CPU", "80.0 GFLOP/s", "1.60x", "2.00 %", "81.0 s", "extrapolated from 9",
                   "allocator: glibc-tuned (reference: default)"):
        assert figure in text
    json.dumps(report)  # the report is plain JSON


def test_paper_grid_hours_on_a_one_setting_grid():
    # 2 labeled / 4 unlabeled: epoch = 2 iterations, 20 epochs = 40 iterations, one validation
    # (every 20 epochs). Each of the 9 methods and the autoencoder: 40 steps of 1 s; one
    # validation scan of one window (1 s); 2 test scans for the 9 methods: 400 + 10 + 18 s.
    cfg = TrainConfig(epochs_by_labeled=[[10, 20]], validate_every_epochs=20)
    steps = [{"scale": "paper", "strategy": s, "seconds_per_iteration": 1.0} for s in bench.STRATEGY_METHODS]
    grid = {"d": {"settings": [(2, 4)], "validation": 1, "test": 2, "volumes": [(32, 128, 128)]}}
    hours = bench.paper_grid_hours(steps, 1.0, grid=grid, repetitions=5, cfg=cfg)
    assert hours == pytest.approx((400 + 10 + 18) * 5 / 3600)
    assert bench.paper_grid_hours(steps[:2], 1.0, grid=grid, cfg=cfg) is None


def test_worker_boot_applies_the_allocator_before_torch(tmp_path):
    """The worker's entry tunes the allocator before `massl.bench` imports torch, and runs the
    worker's command line."""
    probe = tmp_path / "boot_probe.py"
    boot = bench.WORKER_BOOT.replace("from massl.bench import", "import boot_probe; from massl.bench import")
    probe.write_text("import sys, massl.allocator as a\nprint(a.active(), 'torch' in sys.modules)\n")
    env = {**os.environ, "MASSL_ALLOCATOR": "default", "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", boot, "worker", "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("default False\n") and "--impl" in done.stdout


def test_rounds_combine_to_the_median_time_and_the_highest_peak():
    def step(scale, strategy, seconds, peak):
        return {"scale": scale, "strategy": strategy, "seconds_per_iteration": seconds, "peak_memory_mb": peak,
                "repeats": 10, "gflop_per_iteration": 1.0}
    rounds = [step("demo", "joint", s, p) for s, p in ((0.3, 100), (0.1, 300), (0.2, 200))]
    combined = bench.combine_rounds([step("demo", "supervised", 0.05, 90), *rounds, step("paper", "joint", 9.0, None)])
    assert [(c["scale"], c["strategy"]) for c in combined] == [("demo", "supervised"), ("demo", "joint"),
                                                               ("paper", "joint")]
    joint = combined[1]
    assert joint["seconds_per_iteration"] == 0.2 and joint["peak_memory_mb"] == 300 and joint["repeats"] == 30
    assert joint["round_seconds_per_iteration"] == [0.3, 0.1, 0.2] and combined[2]["peak_memory_mb"] is None


def test_step_plan_keeps_only_the_asked_scales():
    assert {s.name for s, *_ in bench.step_plan(False, CPU, ("demo",))} == {"demo"}
    assert len(bench.step_plan(True, CPU, ("paper",))) == len(bench.QUICK_CPU_PAPER_STRATEGIES)


def test_paper_grid_is_the_library_protocol():
    """The grid's settings and split sizes come from the paper protocol of `massl.data.splits`
    (BraTS validation: the rest of its 210 scans), its runs from the method table."""
    from massl.data.splits import DEFAULT_PROTOCOL
    assert list(bench.PAPER_GRID) == list(DEFAULT_PROTOCOL)
    for name, dataset in bench.PAPER_GRID.items():
        assert dataset["settings"] == [tuple(s) for s in DEFAULT_PROTOCOL[name]["settings"].values()]
        assert dataset["test"] == DEFAULT_PROTOCOL[name]["split"]["test"]
    assert (bench.PAPER_GRID["brats18"]["validation"], bench.PAPER_GRID["wmh17"]["validation"]) == (40, 10)
    assert bench.grid_runs() == (270, 30)  # 2 datasets x 3 settings x 5 repetitions x (9 methods, 1 autoencoder)
    assert (bench.PAPER.patch, bench.PAPER.batch_size) == (tuple(TrainConfig().patch_size), TrainConfig().batch_size)
