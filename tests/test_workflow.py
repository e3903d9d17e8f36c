"""The Snakemake workflow: lint, the planned grid, config validation, rerun and resume behaviour.

Fast tests run Snakemake in dry-run mode, or for real with a stand-in `massl` executable that
writes placeholder outputs (no torch), so they check the workflow's own logic in seconds. The
slow test runs the smoke profile end to end with the real library.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "config" / "smoke.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def snakemake(workdir: Path, *args: str, configfile: Path = SMOKE, env: dict | None = None):
    """Run Snakemake on the repository's Snakefile in `workdir`; returns the finished process."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(configfile), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run or dry run, as {rule: count}."""
    table = output[output.index("Job stats:"):]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def write_config(path: Path, edit) -> Path:
    """The smoke config changed by `edit(config)`, written to `path`."""
    config = yaml.safe_load(SMOKE.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    return path


# --- lint and the planned grid ------------------------------------------------------------

def test_lint_is_clean(tmp_path):
    result = snakemake(tmp_path, "--lint", configfile=REPO / "config" / "config.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


def test_default_grid_plans_every_training_once(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    n_settings = sum(len(d["settings"]) for d in config["datasets"].values())
    reps = config["repetitions"]
    per_run = snakemake(tmp_path, "-n", "--config", "train_job=run", configfile=REPO / "config" / "config.yaml")
    assert per_run.returncode == 0, per_run.stderr
    counts = job_counts(per_run.stdout)
    # 2 datasets x 3 settings x 9 methods x 5 repetitions, and one autoencoder per
    # (dataset, setting, repetition) shared by the two pretraining rows.
    assert counts["train"] == n_settings * len(config["methods"]) * reps == 270
    assert counts["train_autoencoder"] == n_settings * reps == 30
    assert counts["split"] == len(config["datasets"]) * reps == 10
    assert counts["probe"] == len(config["probe"]["methods"]) * reps == 15
    assert counts["table_results"] == 2 and counts["table_probe"] == 1
    # The demo's `train_job: setting`: the same runs, one process per (dataset, setting, repetition).
    assert config["train_job"] == "setting"
    grouped = snakemake(tmp_path, "-n", "-p", configfile=REPO / "config" / "config.yaml")
    assert grouped.returncode == 0, grouped.stderr
    counts = job_counts(grouped.stdout)
    assert counts["train_setting"] == n_settings * reps == 30
    assert "train" not in counts and "train_autoencoder" not in counts
    assert re.search(r"--method autoencoder,cnn,pretrain_dec,pretrain_cnn,mssl_l07,mssl_l09,mssl_alter,"
                     r"massl_l07,massl_l09,massl_alter --rep \d --split \S+ --cases \S+ "
                     r"--out '\S+/runs/\w+/\w+/\{method\}/rep\d'",
                     grouped.stdout)
    assert not (tmp_path / "results").exists(), "a dry run must not write results"


def test_extended_profile_is_the_demo_plus_the_baselines():
    from massl.methods import METHODS, PAPER_METHODS

    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    extended = yaml.safe_load((REPO / "config" / "extended.yaml").read_text())
    beyond = [m for m in METHODS if m not in PAPER_METHODS]
    assert beyond == ["mean_teacher", "cps"]
    assert extended["methods"] == demo["methods"] + beyond
    assert extended["results_dir"] != demo["results_dir"]
    same = {k: v for k, v in extended.items() if k not in ("methods", "results_dir")}
    assert same == {k: v for k, v in demo.items() if k not in ("methods", "results_dir")}


def test_extended_profile_plans_the_plus_tables(tmp_path):
    result = snakemake(tmp_path, "-n", "-p", configfile=REPO / "config" / "extended.yaml")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # Tables 1-2 (the paper's rows, their own statistics) and table1_plus / table2_plus (all rows)
    assert (counts["train_setting"], counts["stats"], counts["table_results"]) == (30, 4, 4)
    assert "massl_l09,massl_alter,mean_teacher,cps --rep" in result.stdout
    for stem in ("table1", "table1_plus", "table2", "table2_plus"):
        assert f"tables/{stem}.csv" in result.stdout
    paper = ",".join(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["methods"])  # the nine
    assert f"--methods {paper} " in result.stdout and f"--methods {paper},mean_teacher,cps " in result.stdout


def test_paper_check_profile_plans_the_whole_dag(tmp_path):
    result = snakemake(tmp_path, "-n", configfile=REPO / "config" / "paper_check.yaml")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # 2 datasets x 1 setting x 1 repetition, each job the autoencoder and the nine methods
    assert (counts["train_setting"], counts["probe"], counts["table_results"]) == (2, 3, 2)


def test_real_data_folder_replaces_the_synthetic_data(tmp_path):
    brats = tmp_path / "MICCAI_BraTS_2018_Data_Training"
    brats.mkdir()
    result = snakemake(tmp_path, "-n", "-p", "--config", f"brats18_dir={brats}")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout)["synth"] == 1  # only wmh17 stays synthetic
    assert f"massl preprocess brats18 {brats} " in result.stdout


def test_probe_uses_the_setting_nearest_to_the_papers(tmp_path):
    # The paper probes 50L70U; a dataset without it falls back to the nearest labeled count.
    cfg = write_config(tmp_path / "c.yaml", lambda c: c["probe"].update(setting="50L70U"))
    result = snakemake(tmp_path, "-n", "all_tables", configfile=cfg)
    assert result.returncode == 0, result.stderr
    probed = set(re.findall(r"results/probe/brats18/(\w+)/\w+/rep\d\.tsv", result.stdout))
    assert probed == {"12L12U"}  # smoke settings 4L8U and 12L12U: 12 is nearer to 50


# --- config validation: bad input fails before any job, naming the key ----------------------

BAD_CONFIGS = {
    "unknown training key": (lambda c: c["training"].update(learning_rate=0.1), "'learning_rate'"),
    "wrong type": (lambda c: c["training"].update(batch_size="four"), "training.batch_size"),
    "method typo": (lambda c: c.update(methods=["cnn", "masl_alter"]), "masl_alter"),
    "negative budget": (lambda c: c["training"].update(epochs_by_labeled=[[4, -1]]), "training.epochs_by_labeled"),
    "more labeled than the pool": (
        lambda c: c["datasets"]["brats18"]["settings"].update({"20L8U": [20, 8]}),
        "datasets.brats18.settings.20L8U",
    ),
    "pool and test exceed the cases": (
        lambda c: c["datasets"]["wmh17"]["split"].update(pool=12),
        "datasets.wmh17.split",
    ),
    "setting name contradicts counts": (
        lambda c: c["datasets"]["brats18"]["settings"].update({"4L8U": [4, 6]}),
        "datasets.brats18.settings.4L8U",
    ),
    "marked-against method not run": (
        lambda c: c.update(methods=["cnn", "mssl_alter"]),
        "stats.best",
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, case):
    edit, key = BAD_CONFIGS[case]
    cfg = write_config(tmp_path / "bad.yaml", edit)
    result = snakemake(tmp_path, "-n", configfile=cfg)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert key in message, message[-2000:]
    assert "Job stats" not in message  # failed while reading the config, before planning jobs
    assert not (tmp_path / "results").exists()


def schema_sections(schema: dict) -> dict:
    """The schema's node for each section of `massl.config.schema_facts()`."""
    defs, top = schema["$defs"], schema["properties"]
    return {"model": defs["model"]["properties"], "training": defs["training"]["properties"],
            "probe": top["probe"]["properties"], "dataset": defs["dataset"]["properties"],
            "preprocess": defs["dataset"]["properties"]["preprocess"]["properties"],
            "split": defs["dataset"]["properties"]["split"]["properties"]}


def test_schema_restates_the_library_exactly():
    """The schema validates the config before the library resolves it, so every key, allowed
    value and default it states must be the library's (one place for each fact: the library)."""
    from dataclasses import fields

    from massl.config import ModelConfig, TrainConfig, schema_facts
    from massl.methods import METHODS, PAPER_METHODS, SETTING_PATTERN

    schema = yaml.safe_load(SCHEMA.read_text())
    facts, sections = schema_facts(), schema_sections(schema)
    assert set(sections["training"]) == {f.name for f in fields(TrainConfig)}
    assert set(sections["model"]) == {f.name for f in fields(ModelConfig)}
    assert set(sections["preprocess"]) == set().union(*facts["defaults"]["preprocess"].values())
    for section, choices in facts["choices"].items():
        for key, allowed in choices.items():
            assert sections[section][key]["enum"] == allowed, f"{section}.{key}"
    for section in ("model", "training", "probe", "split", "dataset"):
        for key, node in sections[section].items():
            if node.get("default", {}) != {}:  # {}: an empty section, filled in below it
                assert node["default"] == facts["defaults"][section][key], f"{section}.{key}"
    assert schema["$defs"]["method"]["enum"] == list(METHODS)
    assert schema["properties"]["methods"]["default"] == list(PAPER_METHODS)
    assert sections["dataset"]["settings"]["propertyNames"]["pattern"] == SETTING_PATTERN
    assert sections["probe"]["setting"]["pattern"] == SETTING_PATTERN


def test_paper_profile_states_the_librarys_protocol():
    """config/paper.yaml is the paper's protocol as a profile; its split sizes and settings must
    be the library's (`massl split` without a config uses those)."""
    from massl.config import resolve_config
    from massl.data.splits import DEFAULT_PROTOCOL

    paper = resolve_config(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    for name, protocol in DEFAULT_PROTOCOL.items():
        assert paper["datasets"][name]["split"] == protocol["split"], name
        assert paper["datasets"][name]["settings"] == protocol["settings"], name


# --- rerun and resume, with a stand-in massl ---------------------------------------------------

FAKE_MASSL = textwrap.dedent(
    """\
    #!{python}
    # Stand-in for `massl`: writes placeholder outputs; `train` fails once after writing a
    # checkpoint when FAKE_MASSL_KILL is set (a job killed at its wall-time limit).
    import os, sys, time
    from pathlib import Path

    command, args = sys.argv[1], sys.argv[2:]
    if command in ("config", "allocator", "describe"):  # what the workflow asks of the library itself
        os.execv(sys.executable, [sys.executable, "-m", "massl.cli", *sys.argv[1:]])
    out = Path(args[args.index("--out") + 1])
    with open(os.environ["FAKE_MASSL_CALLS"], "a") as calls:
        calls.write(" ".join(sys.argv[1:]) + "\\n")
    if command == "synth":
        out.mkdir(parents=True, exist_ok=True)
    elif command == "preprocess":
        (out / "cases.tsv").write_text("case_id\\n")
    elif command == "split":
        out.write_text("{{}}")
    elif command == "train":
        if os.environ.get("FAKE_MASSL_SECONDS"):  # a training that takes a while: log when it runs
            with open(os.environ["FAKE_MASSL_CALLS"] + ".intervals", "a") as intervals:
                start = time.time()
                time.sleep(float(os.environ["FAKE_MASSL_SECONDS"]))
                intervals.write(f"{{start}} {{time.time()}}\\n")
        checkpoint = out / "checkpoints" / "last.pt"
        with open(out / "attempts.txt", "a") as attempts:
            attempts.write("resumed\\n" if checkpoint.exists() else "started\\n")
        if os.environ.get("FAKE_MASSL_KILL") and not checkpoint.exists():
            checkpoint.parent.mkdir(parents=True)
            checkpoint.write_text("state")
            sys.exit(137)
        for name in ("model.pt", "summary.json", "provenance.json", "per_case.tsv", "per_case_final.tsv",
                     "examples.npz", "train_log.tsv"):
            (out / name).write_text(name)
    elif command == "probe":
        out.write_text("probe")
    """
)

CNN_RUN = "results/runs/brats18/4L8U/cnn/rep1"
PRETRAIN_RUN = "results/runs/brats18/4L8U/pretrain_dec/rep1"
TARGETS = (f"{CNN_RUN}/summary.json", f"{PRETRAIN_RUN}/summary.json")


@pytest.fixture
def fake_massl(tmp_path):
    """Environment whose `massl` is the stand-in; its calls are logged to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "massl"
    exe.write_text(FAKE_MASSL.format(python=sys.executable))
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_MASSL_CALLS": str(tmp_path / "calls.log")}


def test_rerun_does_nothing_and_a_change_reruns_only_what_it_touches(tmp_path, fake_massl):
    work = tmp_path / "work"
    first = snakemake(work, "--cores", "1", *TARGETS, env=fake_massl)
    assert first.returncode == 0, first.stderr
    calls = (tmp_path / "calls.log").read_text()
    inputs = "--split results/splits/brats18/rep1.json --cases results/preprocessed/brats18/cases.tsv"
    assert f"--method pretrain_dec --rep 1 {inputs} --out {PRETRAIN_RUN} --autoencoder " \
           "results/runs/brats18/4L8U/autoencoder/rep1 --threads 1 --device cpu" in calls
    assert f"--method cnn --rep 1 {inputs} --out {CNN_RUN} --threads 1 --device cpu" in calls

    again = snakemake(work, "-n", *TARGETS, env=fake_massl)
    assert "Nothing to be done" in again.stdout + again.stderr

    # A statistics option touches no training job.
    stats_cfg = write_config(tmp_path / "stats.yaml", lambda c: c.update(stats={"alpha": 0.01}))
    stats_only = snakemake(work, "-n", *TARGETS, configfile=stats_cfg, env=fake_massl)
    assert "Nothing to be done" in stats_only.stdout + stats_only.stderr

    # A training option reruns the trainings, not the data preparation.
    train_cfg = write_config(tmp_path / "train.yaml", lambda c: c["training"].update(lr_joint=0.5))
    training = snakemake(work, "-n", *TARGETS, configfile=train_cfg, env=fake_massl)
    counts = job_counts(training.stdout)
    assert counts.get("train") == 2 and counts.get("train_autoencoder") == 1
    assert not {"synth", "preprocess", "split"} & set(counts)


def test_training_killed_at_its_time_limit_resumes_from_its_checkpoint(tmp_path, fake_massl):
    work = tmp_path / "work"
    result = snakemake(work, "--cores", "1", "--retries", "1", TARGETS[0],
                       env={**fake_massl, "FAKE_MASSL_KILL": "1"})
    assert result.returncode == 0, result.stderr
    run = work / CNN_RUN
    # Snakemake removed no checkpoint of the failed attempt, so the retry resumed from it.
    assert (run / "attempts.txt").read_text().split() == ["started", "resumed"]
    assert (run / "summary.json").is_file()
    # ... and the retry asked for twice the runtime (minutes) of the first attempt.
    runtimes = re.findall(r"rule train:.*?runtime=(\d+)", result.stdout + result.stderr, re.S)
    first = yaml.safe_load(SMOKE.read_text())["resources"]["train"]["runtime"]
    assert [int(r) for r in runtimes] == [first, 2 * first]


@pytest.mark.parametrize("gpus_per_training", [1, 0])
def test_default_profile_runs_one_gpu_training_at_a_time(tmp_path, fake_massl, gpus_per_training):
    cfg = write_config(tmp_path / "c.yaml", lambda c: c["resources"]["train"].update(gpu=gpus_per_training))
    runs = [f"results/runs/brats18/4L8U/cnn/rep{r}/summary.json" for r in (1, 2)]
    result = snakemake(tmp_path / "work", "--profile", str(REPO / "workflow" / "profiles" / "default"),
                       "--cores", "4", *runs, configfile=cfg, env={**fake_massl, "FAKE_MASSL_SECONDS": "2"})
    assert result.returncode == 0, result.stderr
    (start1, end1), (start2, end2) = sorted(
        tuple(map(float, line.split())) for line in Path(fake_massl["FAKE_MASSL_CALLS"] + ".intervals").open()
    )
    overlapped = start2 < end1
    assert overlapped == (gpus_per_training == 0)  # CPU trainings share the 4 cores
    assert f"--device {'cuda' if gpus_per_training else 'cpu'}" in Path(fake_massl["FAKE_MASSL_CALLS"]).read_text()


# --- runs trained elsewhere (import_runs) ------------------------------------------------------

def test_imported_runs_replace_training_and_a_grid_of_another_config_is_refused(tmp_path, fake_massl):
    trained = tmp_path / "trained"  # every run and probe of the smoke grid, by the stand-in
    done = snakemake(trained, "--cores", "2", "all", "--omit-from", "aggregate_metrics", "table_probe",
                     "benchmark_summary", "figure_examples", "figure_reconstructions", "figure_curves", env=fake_massl)
    assert done.returncode == 0, done.stderr
    source = trained / "results"

    plan = snakemake(tmp_path / "work", "-n", "all_tables", "all", "--config", f"import_runs={source}")
    assert plan.returncode == 0, plan.stderr
    counts = job_counts(plan.stdout)
    assert not {"synth", "preprocess", "split", "train", "train_autoencoder", "probe"} & set(counts)
    config = json.loads((source / "config.json").read_text())
    runs = sum(len(d["settings"]) for d in config["datasets"].values()) * len(config["methods"]) * config["repetitions"]
    probes = len(config["probe"]["methods"]) * config["repetitions"]
    assert counts["import_run"] == runs
    jobs = runs + runs // len(config["methods"])  # + the autoencoders
    assert counts["import_file"] == probes + jobs + probes  # probe TSVs, training and probe benchmarks
    assert "figure_examples" not in counts and counts["figure_dice"] == 2  # no examples.npz to draw

    # A grid trained before a key existed (its config.json lacks it) imports: the key's default
    # is what its runs were trained with.
    older = tmp_path / "older"
    shutil.copytree(source, older)
    for entry in config["datasets"].values():
        del entry["training"]["lr_autoencoder"]
    del config["training"]["lr_autoencoder"]
    (older / "config.json").write_text(json.dumps(config))
    plan = snakemake(tmp_path / "work", "-n", "all_tables", "--config", f"import_runs={older}")
    assert plan.returncode == 0, plan.stderr

    other = write_config(tmp_path / "other.yaml", lambda c: c["training"].update(lr_joint=0.5))
    refused = snakemake(tmp_path / "work", "-n", "all_tables", "--config", f"import_runs={source}",
                        configfile=other)
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    assert "datasets.brats18.training" in message and str(source) in message


# --- the smoke profile end to end (real library) -----------------------------------------------

def read_table(path: Path, delimiter: str = ",") -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path):
    result = snakemake(tmp_path, "--profile", str(REPO / "workflow" / "profiles" / "default"), "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    config = json.loads((tmp_path / "results" / "config.json").read_text())  # defaults filled in
    tables = tmp_path / "results" / "tables"
    check_results_table(read_table(tables / "table1.csv"), config, "brats18")
    check_results_table(read_table(tables / "table2.csv"), config, "wmh17")
    check_probe_table(read_table(tables / "table3.csv"), config)
    for name in ("report.md", "report.html", "checklist.tsv", "paper_vs_ours.png"):
        assert (tmp_path / "results" / "replication" / name).is_file()
    for figure in ("dice_brats18", "curves_wmh17", "examples_brats18", "reconstructions_wmh17", "probe_r2"):
        assert (tmp_path / "results" / "figures" / f"{figure}.pdf").is_file()

    costs = read_table(tmp_path / "results" / "benchmarks" / "summary.tsv", delimiter="\t")
    n_settings = sum(len(d["settings"]) for d in config["datasets"].values())
    n_trainings = n_settings * (len(config["methods"]) + 1) * config["repetitions"]  # + autoencoders
    assert len(costs) == n_trainings + len(config["probe"]["methods"]) * config["repetitions"]
    assert all(float(row["s"]) > 0 for row in costs)

    rerun = snakemake(tmp_path, "-n")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr

    # The small files of its runs, copied elsewhere, rebuild the same tables, statistics and report.
    exported = tmp_path / "exported"
    subprocess.run(["bash", str(REPO / "scripts" / "export_runs.sh"), str(tmp_path / "results"), str(exported)],
                   check=True, capture_output=True)
    assert not list(exported.rglob("model.pt")) and not list(exported.rglob("examples.npz"))
    elsewhere = tmp_path / "elsewhere"
    imported = snakemake(elsewhere, "--cores", "2", "all_tables", "all", "--config", f"import_runs={exported}")
    assert imported.returncode == 0, imported.stderr[-5000:]
    assert not {"train", "train_autoencoder", "probe"} & set(job_counts(imported.stdout + imported.stderr))
    here, there = tmp_path / "results", elsewhere / "results"
    for path in [*(here / "tables").iterdir(), *(here / "stats").iterdir(), here / "replication" / "checklist.tsv",
                 here / "replication" / "report.md", here / "benchmarks" / "summary.tsv"]:
        relative = path.relative_to(here)
        assert (there / relative).read_bytes() == path.read_bytes(), relative


@pytest.mark.slow
def test_baselines_beyond_the_paper_end_to_end(tmp_path):
    """The smoke grid with Mean Teacher and CPS added: Tables 1-2 keep the paper's rows (and
    numbers), table1_plus / table2_plus add the baselines' rows, the figures show them."""
    config = yaml.safe_load(SMOKE.read_text())
    config["methods"] += ["mean_teacher", "cps"]
    configfile = tmp_path / "smoke_plus.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))  # the settings keep their order
    result = snakemake(tmp_path, "--profile", str(REPO / "workflow" / "profiles" / "default"), "--cores", "2",
                       "all_tables", "all", configfile=configfile)
    assert result.returncode == 0, result.stderr[-5000:]
    resolved = json.loads((tmp_path / "results" / "config.json").read_text())
    paper = {**resolved, "methods": resolved["methods"][:-2]}
    tables = tmp_path / "results" / "tables"
    for table, dataset in (("table1", "brats18"), ("table2", "wmh17")):
        rows, plus = read_table(tables / f"{table}.csv"), read_table(tables / f"{table}_plus.csv")
        check_results_table(rows, paper, dataset)
        check_results_table(plus, resolved, dataset)
        # the paper's rows are the same runs, the same means and (unadjusted paired test) the same marks
        assert plus[:9] == rows[:9]
        extended = read_table(tables / f"{table}_plus_extended.csv")
        assert {row["method"] for row in extended} == set(resolved["methods"])
    for run in ("mean_teacher", "cps"):
        summary = json.loads((tmp_path / "results" / "runs" / "brats18" / "4L8U" / run / "rep1" /
                              "summary.json").read_text())
        assert summary["status"] == "converged" and summary["stop_reason"] in ("plateau", "budget")
    for figure in ("dice_brats18", "curves_wmh17"):
        assert (tmp_path / "results" / "figures" / f"{figure}.pdf").is_file()


def check_results_table(rows: list[dict], config: dict, dataset: str) -> None:
    """Rows = the configured methods by their paper labels, in order; one column per setting,
    headed 'L (U)'; every cell a Dice with optional marks, or n.c. for a diverged run."""
    from massl.methods import METHODS

    assert [row["method"] for row in rows] == [METHODS[m].label for m in config["methods"]] + [
        "SD of repetition means (median over methods)"]
    counts = sorted(config["datasets"][dataset]["settings"].values())  # the smoke lists them in this order
    columns = [f"{labeled} ({unlabeled})" for labeled, unlabeled in counts]
    assert list(rows[0]) == ["method", *columns]
    for row in rows:
        for column in columns:
            assert re.fullmatch(r"[01]\.\d{4}\*?†?|n\.c\.|–", row[column]), row


def check_probe_table(rows: list[dict], config: dict) -> None:
    """Table 3 (long form): every probed method at every encoder level, R² in [0, 1]."""
    levels = len(config["model"].get("channels", [16, 32, 64, 128, 256]))
    assert {(row["method"], int(row["level"])) for row in rows} == {
        (m, level) for m in config["probe"]["methods"] for level in range(1, levels + 1)
    }
    # no number for a refused level (its reason is given) or an all-diverged cell; held-out R² may be < 0
    assert all(float(row["mean"]) <= 1 for row in rows if row["mean"])
