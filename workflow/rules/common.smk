"""The resolved config, the experiment grid and the path helpers every rule uses.

The workflow talks to the library only through the `massl` CLI. The config is validated
against the schema (which fills the workflow's own defaults); `massl config` then resolves it
(library defaults, per-dataset sections, the real-data folders, the grid's feasibility checks)
and the resolved config replaces Snakemake's. It is written to <results_dir>/config.json, which
every `massl` and `analysis` call reads, when a run starts (`onstart`, under Snakemake's lock,
never by a dry run). It is not an input of the rules; each names the config values it depends
on in a `params` fingerprint instead, so a config change reruns exactly the jobs it affects,
and a rerun with nothing changed does no work.

This file is the one place that knows the results layout (docs/architecture.md): every rule
passes the paths it reads and writes to the library as arguments.
"""

import json
import os
import subprocess
from pathlib import Path

from jsonschema import ValidationError
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# Synthetic data: format -> dataset root inside the `massl synth` folder (docs/architecture.md).
SYNTHETIC_LAYOUT_ROOT = {"brats18": "MICCAI_BraTS_2018_Data_Training", "wmh17": ""}
# Tables 1 and 2 of the paper; any other dataset key gets a table of its own name.
RESULTS_TABLE = {"brats18": "table1", "wmh17": "table2"}
TABLE_CAPTION = {
    "brats18": "Dice of the whole-tumor segmentation on BraTS 2018 (mean over test scans and repetitions)",
    "wmh17": "Dice of the white-matter-hyperintensity segmentation on WMH 2017 (mean over test scans and repetitions)",
}
# The rows the paper's example figure shows (Fig. 2), whichever of them are run.
EXAMPLE_METHODS = ("cnn", "mssl_alter", "massl_alter")


def validate_config(cfg):
    """Validate against the schema (filling defaults); name the offending key on failure."""
    try:
        validate(cfg, "../schemas/config.schema.yaml")
    except WorkflowError as exc:
        cause = exc.__context__  # validate() raises WorkflowError while handling the schema error
        if not isinstance(cause, ValidationError):
            raise
        where = ".".join(str(p) for p in cause.absolute_path) or "(top level)"
        allowed = ""
        if cause.validator == "additionalProperties":  # name the keys that are allowed there
            allowed = f"; allowed: {', '.join(cause.schema.get('properties', {}))}"
        raise WorkflowError(f"config key '{where}': {cause.message}{allowed}") from None


def massl(*args, stdin=None):
    """Stdout of `massl ARGS`; its error message (which names the bad key or file) becomes the
    workflow's."""
    done = subprocess.run(["massl", *args], input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise WorkflowError(done.stderr.strip() or f"massl {args[0]} failed (exit code {done.returncode})")
    return done.stdout


validate_config(config)
config.update(json.loads(massl("config", "--in", "-", stdin=json.dumps(config))))

RESULTS = config["results_dir"]
CONFIG_JSON = f"{RESULTS}/config.json"
IMPORTED = config["import_runs"]  # a results folder whose runs are copied instead of trained (import.smk)
DATASETS = list(config["datasets"])
METHODS = config["methods"]
REPS = list(range(1, config["repetitions"] + 1))
PAPER_VALUES = str(Path(workflow.basedir) / "config" / "paper_values.tsv")  # Tables 1-3 as printed
LIBRARY = config["library"]  # the method table and the setting-name pattern (massl describe)
LIBRARY_ROWS = {m["id"]: m for m in LIBRARY["method_table"]}
AUTOENCODER = LIBRARY["autoencoder"]["id"]
PRETRAINING_METHODS = [m["id"] for m in LIBRARY["method_table"] if m["needs_autoencoder"]]
# The grid's rows of the paper's Tables 1-2, and those beyond the paper (Mean Teacher, CPS): these
# get tables of their own, table1_plus / table2_plus, with every row of the grid.
PAPER_ROWS = [m for m in METHODS if LIBRARY_ROWS[m]["paper"]]
BEYOND_PAPER = [m for m in METHODS if m not in PAPER_ROWS]
PLUS = "_plus"  # file-name suffix of the tables (and statistics) with the baselines beyond the paper
ATTENTION_METHODS = [m["id"] for m in LIBRARY["method_table"] if m["reconstruction"] == "attention"]
# The allocator of the torch processes (MASSL_ALLOCATOR, `massl allocator`: faster large steps,
# same results): tcmalloc is preloaded by `{params.preload}` before their shell commands;
# glibc-tuned needs no prefix (`massl` applies it itself).
PRELOAD = massl("allocator", "--shell-prefix").strip()
PRELOAD = f"{PRELOAD} " if PRELOAD else ""


onstart:
    # Rewritten only when its content changes, so its age says when the config last changed.
    massl("config", "--in", "-", "--out", CONFIG_JSON, stdin=json.dumps(config))


# What decides a run's results, per dataset (`root` only as synthetic or not: real data may lie
# elsewhere on the machine that trained it), and for every run.
RUN_DEFINING_DATASET_KEYS = ("format", "synthetic", "preprocess", "split", "settings", "training", "model")
RUN_DEFINING_KEYS = ("scale", "probe")


def check_import(folder):
    """Refuse an `import_runs` folder whose runs are not this config's: its config.json (written
    when its grid started) must agree on every key that decides a run, the datasets' included;
    it may hold more methods or repetitions than are imported."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise WorkflowError(f"import_runs: {path} is missing: {folder} is not the results folder of a grid "
                            "(its config.json is written when the grid starts); copy it along with the runs")
    try:
        theirs = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WorkflowError(f"import_runs: {path} cannot be read as JSON ({exc}); copy it again") from None
    # Resolved again by today's library: a key added since then gets its default, which is the
    # behaviour its runs were trained with.
    try:
        theirs = json.loads(massl("config", "--in", "-", stdin=json.dumps(theirs)))
    except WorkflowError as exc:
        raise WorkflowError(f"import_runs: {path} is not a config this version can read ({exc}); "
                            "import the runs with the code they were trained with") from None
    differ = [key for key in RUN_DEFINING_KEYS if theirs.get(key) != config[key]]
    for name, ours in config["datasets"].items():
        other = (theirs.get("datasets") or {}).get(name)
        if other is None:
            differ.append(f"datasets.{name} (not in its grid)")
            continue
        differ += [f"datasets.{name}.{key}" for key in RUN_DEFINING_DATASET_KEYS if other.get(key) != ours[key]]
        if (other.get("root") is None) != (ours["root"] is None):
            differ.append(f"datasets.{name}.root (synthetic in one config, real data in the other)")
    if differ:
        raise WorkflowError(f"import_runs: the runs in {folder} were trained with another config ({path}); "
                            f"these keys differ from this one's: {', '.join(differ)}. Import them with the config "
                            "they were trained with (--configfile), or train this one")


if IMPORTED is not None:
    check_import(IMPORTED)


# --- the grid ---------------------------------------------------------------------------


def dataset(name):
    return config["datasets"][name]


def settings(name):
    return list(dataset(name)["settings"])


def is_synthetic(name):
    return dataset(name)["root"] is None


def run_dir(name, setting, method, rep):
    return f"{RESULTS}/runs/{name}/{setting}/{method}/rep{rep}"


def dataset_runs(name, methods=None):
    """Run folders of a dataset's grid, in the order of the config (optionally only `methods`)."""
    return [
        run_dir(name, s, m, r)
        for s in settings(name)
        for m in METHODS
        if methods is None or m in methods
        for r in REPS
    ]


def results_table(name):
    return RESULTS_TABLE.get(name, f"table_{name}")


def results_tables():
    """Every Table 1-2 of the grid: one per dataset, and its _plus twin when methods beyond the paper run."""
    return [t + plus for t in map(results_table, DATASETS) for plus in ([""] + ([PLUS] if BEYOND_PAPER else []))]


def dataset_of_table(table):
    return next(d for d in DATASETS if results_table(d) == table.removesuffix(PLUS))


def stats_methods(rows):
    """The rows of stats/<d><rows>.tsv: the paper's ("") or all of the grid's (PLUS)."""
    return METHODS if rows == PLUS else PAPER_ROWS


def fingerprint(obj):
    """A stable string of the config values behind a job. Snakemake's params trigger reruns the
    job when this changes, and only then (results/config.json holds every value)."""
    return json.dumps(obj, sort_keys=True)


# --- input functions and parameters of the rules ----------------------------------------


def output_folder(wildcards, output):
    return os.path.dirname(output[0])


def output_stem(wildcards, output):
    """First output without its extension: the --out / --out-prefix of the analysis CLIs."""
    return os.path.splitext(output[0])[0]


def input_folder(wildcards, input):
    return os.path.dirname(input[0])


def dataset_format(wildcards):
    return dataset(wildcards.dataset)["format"]


def synthetic_root(wildcards):
    return f"{RESULTS}/raw/synthetic/{wildcards.dataset}"


def raw_data(wildcards):
    """The synthetic folder to build first; real data is outside the workflow's outputs."""
    return [synthetic_root(wildcards)] if is_synthetic(wildcards.dataset) else []


def data_root(wildcards):
    """The folder a real download would be: `massl synth` writes the release's layout below it."""
    ds = dataset(wildcards.dataset)
    if ds["root"] is not None:
        return ds["root"]
    inside = SYNTHETIC_LAYOUT_ROOT[ds["format"]]
    return f"{synthetic_root(wildcards)}/{inside}" if inside else synthetic_root(wildcards)


def synth_args(wildcards):
    syn = dataset(wildcards.dataset)["synthetic"]
    z, y, x = syn["shape"]
    return f"--n-cases {syn['n_cases']} --seed {syn['seed']} --shape {z} {y} {x}"


def preprocess_fingerprint(wildcards):
    ds = dataset(wildcards.dataset)
    return fingerprint({k: ds[k] for k in ("format", "root", "synthetic", "preprocess")})


def split_fingerprint(wildcards):
    ds = dataset(wildcards.dataset)
    return fingerprint({"split": ds["split"], "settings": ds["settings"]})


def train_fingerprint(wildcards):
    return fingerprint(
        {
            "training": dataset(wildcards.dataset)["training"],  # resolved: global + the dataset's own
            "model": dataset(wildcards.dataset)["model"],
            "device": train_device(wildcards),
            "scale": config["scale"],
        }
    )


def train_device(wildcards):
    return "cuda" if config["resources"]["train"]["gpu"] > 0 else "cpu"


def probe_device(wildcards):
    return "cuda" if config["resources"]["probe"]["gpu"] > 0 else "cpu"


def autoencoder_run(wildcards):
    return run_dir(wildcards.dataset, wildcards.setting, AUTOENCODER, wildcards.rep)


def autoencoder_model(wildcards):
    if wildcards.method not in PRETRAINING_METHODS:
        return []
    return f"{autoencoder_run(wildcards)}/model.pt"


# What every training and probe job of a run reads: its dataset's cases and its repetition's split.
RUN_INPUTS = {
    "cases": f"{RESULTS}/preprocessed/{{dataset}}/cases.tsv",
    "split": f"{RESULTS}/splits/{{dataset}}/rep{{rep}}.json",
}
SETTING_JOB = "all_methods"  # the method part of a `train_job: setting` job's log and benchmark paths


def setting_job_methods():
    """What one `train_job: setting` job trains, in order: the shared autoencoder first when a
    pretraining method needs it, then the methods."""
    needs_autoencoder = any(m in PRETRAINING_METHODS for m in METHODS)
    return ([AUTOENCODER] if needs_autoencoder else []) + list(METHODS)


def setting_run_files(name, with_autoencoder=False):
    """Output `name` of every run a `train_job: setting` job trains (wildcards left in)."""
    methods = [m for m in setting_job_methods() if with_autoencoder or m != AUTOENCODER]
    return [f"{RESULTS}/runs/{{dataset}}/{{setting}}/{m}/rep{{rep}}/{name}" for m in methods]


def autoencoder_arg(wildcards):
    if wildcards.method not in PRETRAINING_METHODS:
        return ""
    return f"--autoencoder {autoencoder_run(wildcards)} "  # TRAIN_COMMAND leaves the space to it


def train_params(methods, out, autoencoder):
    """The parameters of the training rules' one command (TRAIN_COMMAND in train.smk)."""
    return {"config": CONFIG_JSON, "preload": PRELOAD, "methods": methods, "out": out,
            "autoencoder": autoencoder, "device": train_device, "rerun_when": train_fingerprint}


def run_files(method, names):
    """{name without extension: path} of a run's files `names` (wildcards left in)."""
    return {name.split(".")[0]: f"{RESULTS}/runs/{{dataset}}/{{setting}}/{method}/rep{{rep}}/{name}" for name in names}


def train_resources(runs=1):
    """Resources of a training job that trains `runs` runs one after the other."""
    res = config["resources"]["train"]
    return {"mem_mb": scaled_by_attempt("train", "mem_mb"), "runtime": scaled_by_attempt("train", "runtime", runs),
            "gpu": res["gpu"], "gpu_model": gpu_model("train")}


def scaled_by_attempt(kind, key, runs=1):
    """A resource that grows with each retry: a job killed at its wall-time or memory limit
    comes back with twice (three times, ...) the request, and resumes from its checkpoint.
    `runs`: how many runs the job trains one after the other (`train_job: setting`)."""

    def resource(wildcards, attempt):
        return config["resources"][kind][key] * attempt * runs

    return resource


def gpu_model(kind):
    """SLURM GPU type, only where GPUs are requested (an empty resource is left out)."""
    res = config["resources"][kind]
    return res["gpu_model"] if res["gpu"] > 0 and res["gpu_model"] else ""


def dataset_summaries(wildcards):
    return [f"{run}/summary.json" for run in dataset_runs(wildcards.dataset)]


def dataset_cases(wildcards):
    return [f"{run}/per_case.tsv" for run in dataset_runs(wildcards.dataset)]


def dataset_train_logs(wildcards):
    return [f"{run}/train_log.tsv" for run in dataset_runs(wildcards.dataset)]


def dataset_run_dirs(wildcards):
    return dataset_runs(wildcards.dataset)


def example_run_dirs(wildcards):
    """The figure shows CNN, MSSL(alter) and MASSL(alter) as in the paper (whichever are run),
    each from its lowest converged repetition."""
    return dataset_runs(wildcards.dataset, EXAMPLE_METHODS)


def attention_run_dirs(wildcards):
    return dataset_runs(wildcards.dataset, ATTENTION_METHODS)


def example_methods(wildcards):
    return ",".join(m for m in METHODS if m in EXAMPLE_METHODS)


def example_files(wildcards):
    return [f"{run}/examples.npz" for run in example_run_dirs(wildcards)]


def attention_examples(wildcards):
    return [f"{run}/examples.npz" for run in attention_run_dirs(wildcards)]


def test_train_ratio(wildcards):
    """n_test / n_train of the corrected resampled t-test (Nadeau & Bengio 2003)."""
    split = dataset(wildcards.dataset)["split"]
    return split["test"] / split["pool"]


def probe_files():
    name, setting = config["probe"]["dataset"], config["probe"]["setting"]
    return [
        f"{RESULTS}/probe/{name}/{setting}/{m}/rep{r}.tsv"
        for m in config["probe"]["methods"]
        for r in REPS
    ]


def table_files(stem, extended=True):
    stems = [stem, f"{stem}_extended"] if extended else [stem]
    return [f"{RESULTS}/tables/{s}.{ext}" for s in stems for ext in ("csv", "md", "tex")]


def table_rows(table):
    return PLUS if table.endswith(PLUS) else ""


def stats_for_table(wildcards):
    return f"{RESULTS}/stats/{dataset_of_table(wildcards.table)}{table_rows(wildcards.table)}.tsv"


def table_methods(wildcards):
    return ",".join(stats_methods(table_rows(wildcards.table)))


def table_settings(wildcards):
    return ",".join(settings(dataset_of_table(wildcards.table)))


def table_caption(wildcards):
    name = dataset_of_table(wildcards.table)
    caption = TABLE_CAPTION.get(name, f"Dice on {name} (mean over test scans and repetitions)")
    return caption + (", with baselines beyond the paper" if table_rows(wildcards.table) else "")


def benchmark_files():
    """Per-job timings of every training and probe job of the grid."""
    jobs = [SETTING_JOB] if config["train_job"] == "setting" else setting_job_methods()
    trained = [(d, s, m, r) for d in DATASETS for s in settings(d) for m in jobs for r in REPS]
    probed = [(config["probe"]["dataset"], config["probe"]["setting"], m, r) for m in config["probe"]["methods"] for r in REPS]
    return [f"{RESULTS}/benchmarks/train/{d}/{s}/{m}/rep{r}.tsv" for d, s, m, r in trained] + [
        f"{RESULTS}/benchmarks/probe/{d}/{s}/{m}/rep{r}.tsv" for d, s, m, r in probed
    ]


def figure_files(stem):
    return [f"{RESULTS}/figures/{stem}.{ext}" for ext in ("png", "pdf")]


# --- targets ----------------------------------------------------------------------------


def all_table_files():
    files = [f for t in results_tables() for f in table_files(t)]
    return files + table_files("table3", extended=False)


def all_figure_files():
    stems = ["probe_r2"]
    for d in DATASETS:
        stems += [f"dice_{d}", f"curves_{d}"]
        if IMPORTED is not None:
            continue  # the example and reconstruction figures need examples.npz, which is not imported
        if set(METHODS) & set(EXAMPLE_METHODS):
            stems.append(f"examples_{d}")
        if set(METHODS) & set(ATTENTION_METHODS):
            stems.append(f"reconstructions_{d}")
    return [f for stem in stems for f in figure_files(stem)]


def replication_files():
    return [f"{RESULTS}/replication/{name}" for name in ("report.md", "report.html", "checklist.tsv")] + [
        f"{RESULTS}/replication/paper_vs_ours.{ext}" for ext in ("png", "pdf")
    ]
