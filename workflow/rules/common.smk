"""Config validation, the experiment grid and the path helpers every rule uses.

The config is validated against the schema (which also fills defaults), the real-data
overrides (`brats18_dir`, `wmh17_dir`) are applied, and every split is checked for feasibility
before any job starts. The resolved config is written to <results_dir>/config.json, which
every `massl` call reads, when a run starts (`onstart`, under Snakemake's lock, never by a dry
run). It is not an input of the rules; each names the config values it depends on in a
`params` fingerprint instead, so a config change reruns exactly the jobs it affects, and a
rerun with nothing changed does no work.
"""

import json
import os
import re
from pathlib import Path

from jsonschema import ValidationError
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from massl.allocator import shell_prefix
from massl.errors import ConfigError
from massl.io import atomic_path, atomic_write_json

SETTING_NAME = re.compile(r"^(\d+)L(\d+)U$")
# Synthetic data: format -> dataset root inside the `massl synth` folder (docs/architecture.md).
SYNTHETIC_LAYOUT_ROOT = {"brats18": "MICCAI_BraTS_2018_Data_Training", "wmh17": ""}
# Tables 1 and 2 of the paper; any other dataset key gets a table of its own name.
RESULTS_TABLE = {"brats18": "table1", "wmh17": "table2"}
TABLE_CAPTION = {
    "brats18": "Dice of the whole-tumor segmentation on BraTS 2018 (mean over test scans and repetitions)",
    "wmh17": "Dice of the white-matter-hyperintensity segmentation on WMH 2017 (mean over test scans and repetitions)",
}
PRETRAINING_METHODS = ("pretrain_dec", "pretrain_cnn")
ATTENTION_METHODS = ("massl_l07", "massl_l09", "massl_alter")
EXAMPLE_METHODS = ("cnn", "mssl_alter", "massl_alter")
# The allocator of the torch processes (MASSL_ALLOCATOR, massl.allocator: faster large steps, same
# results): tcmalloc is preloaded by `{params.preload}` before their shell commands; glibc-tuned
# needs no prefix (`massl` applies it itself).
PRELOAD = shell_prefix()


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
        raise ConfigError(f"config key '{where}': {cause.message}{allowed}") from None


def apply_data_dirs(cfg):
    """`--config brats18_dir=PATH wmh17_dir=PATH` select the real data of those datasets."""
    for key in ("brats18", "wmh17"):
        path = cfg[f"{key}_dir"]
        if path is None:
            continue
        if key not in cfg["datasets"]:
            raise ConfigError(f"config key '{key}_dir' is set but 'datasets' has no '{key}' entry")
        cfg["datasets"][key]["root"] = str(path)


def setting_counts(dataset, name, counts):
    match = SETTING_NAME.match(name)
    if [int(match[1]), int(match[2])] != list(counts):
        raise ConfigError(
            f"config key 'datasets.{dataset}.settings.{name}': counts {list(counts)} do not match "
            f"the name (expected [{match[1]}, {match[2]}])"
        )
    return counts


def n_split_cases(split):
    """Cases a split needs: pool + test + validation (at least one validation scan)."""
    return split["pool"] + split["test"] + (split["validation"] or 1)


def check_dataset(name, ds):
    key = f"datasets.{name}"
    if ds["root"] is not None and not Path(ds["root"]).is_dir():
        raise ConfigError(f"config key '{key}.root': folder {ds['root']} not found")
    if ds["root"] is None:
        if ds["format"] not in SYNTHETIC_LAYOUT_ROOT:
            raise ConfigError(f"config key '{key}.root': format {ds['format']} has no synthetic data; give a folder")
        for field in ("n_cases", "shape"):
            if field not in ds["synthetic"]:
                raise ConfigError(f"config key '{key}.synthetic.{field}' is required for synthetic data (root: null)")
    split = ds["split"]
    for setting, counts in ds["settings"].items():
        labeled, unlabeled = setting_counts(name, setting, counts)
        if max(labeled, unlabeled) > split["pool"]:
            raise ConfigError(
                f"config key '{key}.settings.{setting}': {labeled} labeled / {unlabeled} unlabeled "
                f"cannot be drawn from a training pool of {split['pool']} ('{key}.split.pool')"
            )
    if ds["root"] is None and n_split_cases(split) > ds["synthetic"]["n_cases"]:
        raise ConfigError(
            f"config key '{key}.split': pool {split['pool']} + test {split['test']} + validation "
            f"{split['validation'] or 1} needs {n_split_cases(split)} cases, but "
            f"'{key}.synthetic.n_cases' is {ds['synthetic']['n_cases']}"
        )


def check_grid(cfg):
    for name, ds in cfg["datasets"].items():
        check_dataset(name, ds)
    for role in ("reference", "best"):
        if cfg["stats"][role] not in cfg["methods"]:
            raise ConfigError(f"config key 'stats.{role}': {cfg['stats'][role]} is not one of 'methods'")
    probe = cfg["probe"]
    if probe["dataset"] not in cfg["datasets"]:
        raise ConfigError(f"config key 'probe.dataset': no dataset {probe['dataset']!r} in 'datasets'")
    missing = sorted(set(probe["methods"]) - set(cfg["methods"]))
    if missing:
        raise ConfigError(f"config key 'probe.methods': {', '.join(missing)} not in 'methods'")
    test = cfg["datasets"][probe["dataset"]]["split"]["test"]
    if probe["n_images"] > test:
        raise ConfigError(f"config key 'probe.n_images': {probe['n_images']} > the {test} test scans of {probe['dataset']}")


validate_config(config)
apply_data_dirs(config)
check_grid(config)

RESULTS = config["results_dir"]
CONFIG_JSON = f"{RESULTS}/config.json"
DATASETS = list(config["datasets"])
METHODS = config["methods"]
REPS = list(range(1, config["repetitions"] + 1))
PAPER_VALUES = str(Path(workflow.basedir) / "config" / "paper_values.tsv")  # Tables 1-3 as printed


def write_resolved_config():
    """Rewritten only when its content changes, so its age says when the config last changed."""
    path = Path(CONFIG_JSON)
    try:
        if json.loads(path.read_text()) == config:
            return
    except (OSError, ValueError):
        pass  # absent or damaged: (re)write it
    atomic_write_json(path, config)


onstart:
    write_resolved_config()


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


def probe_setting():
    """probe.setting if the probe dataset has it, else the setting with the nearest labeled count."""
    wanted = config["probe"]["setting"]
    names = settings(config["probe"]["dataset"])
    if wanted in names:
        return wanted
    labeled = int(SETTING_NAME.match(wanted)[1])
    return min(names, key=lambda s: abs(int(SETTING_NAME.match(s)[1]) - labeled))


def results_table(name):
    return RESULTS_TABLE.get(name, f"table_{name}")


def dataset_of_table(table):
    return next(d for d in DATASETS if results_table(d) == table)


def effective_section(name, section):
    """The `training`/`model` section for one dataset: global values updated with its overrides."""
    return {**config[section], **dataset(name)[section]}


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
            "training": effective_section(wildcards.dataset, "training"),
            "model": effective_section(wildcards.dataset, "model"),
            "device": train_device(wildcards),
            "scale": config["scale"],
        }
    )


def train_device(wildcards):
    return "cuda" if config["resources"]["train"]["gpu"] > 0 else "cpu"


def probe_device(wildcards):
    return "cuda" if config["resources"]["probe"]["gpu"] > 0 else "cpu"


def autoencoder_run(wildcards):
    return run_dir(wildcards.dataset, wildcards.setting, "autoencoder", wildcards.rep)


def autoencoder_model(wildcards):
    if wildcards.method not in PRETRAINING_METHODS:
        return []
    return f"{autoencoder_run(wildcards)}/model.pt"


SETTING_JOB = "all_methods"  # the method part of a `train_job: setting` job's log and benchmark paths


def setting_job_methods():
    """What one `train_job: setting` job trains, in order: the shared autoencoder first when a
    pretraining method needs it, then the methods."""
    needs_autoencoder = any(m in PRETRAINING_METHODS for m in METHODS)
    return (["autoencoder"] if needs_autoencoder else []) + list(METHODS)


def setting_run_files(name, with_autoencoder=False):
    """Output `name` of every run a `train_job: setting` job trains (wildcards left in)."""
    methods = [m for m in setting_job_methods() if with_autoencoder or m != "autoencoder"]
    return [f"{RESULTS}/runs/{{dataset}}/{{setting}}/{m}/rep{{rep}}/{name}" for m in methods]


def autoencoder_arg(wildcards):
    if wildcards.method not in PRETRAINING_METHODS:
        return ""
    return f"--autoencoder {autoencoder_run(wildcards)}"


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
    name, setting = config["probe"]["dataset"], probe_setting()
    return [
        f"{RESULTS}/probe/{name}/{setting}/{m}/rep{r}.tsv"
        for m in config["probe"]["methods"]
        for r in REPS
    ]


def table_files(stem, extended=True):
    stems = [stem, f"{stem}_extended"] if extended else [stem]
    return [f"{RESULTS}/tables/{s}.{ext}" for s in stems for ext in ("csv", "md", "tex")]


def stats_for_table(wildcards):
    return f"{RESULTS}/stats/{dataset_of_table(wildcards.table)}.tsv"


def table_settings(wildcards):
    return ",".join(settings(dataset_of_table(wildcards.table)))


def table_caption(wildcards):
    name = dataset_of_table(wildcards.table)
    return TABLE_CAPTION.get(name, f"Dice on {name} (mean over test scans and repetitions)")


def probe_caption():
    return (
        f"R² ({config['probe'].get('score', 'held_out').replace('_', '-')}) of a linear regression from each "
        f"encoder level's features to the down-sampled ground truth ({config['probe']['dataset']}, "
        f"{probe_setting()}): mean over {config['probe']['n_draws']} draws of "
        f"{config['probe']['n_images']} test images and {len(REPS)} repetitions (variance: "
        f"{PROBE_VARIANCE[config['probe'].get('variance', 'within')]})"
    )


PROBE_VARIANCE = {"within": "over the draws within a repetition, averaged over repetitions",
                  "pooled": "over all draws of all repetitions"}


def benchmark_files():
    """Per-job timings of every training and probe job of the grid."""
    jobs = [SETTING_JOB] if config["train_job"] == "setting" else setting_job_methods()
    trained = [(d, s, m, r) for d in DATASETS for s in settings(d) for m in jobs for r in REPS]
    probed = [(config["probe"]["dataset"], probe_setting(), m, r) for m in config["probe"]["methods"] for r in REPS]
    return [f"{RESULTS}/benchmarks/train/{d}/{s}/{m}/rep{r}.tsv" for d, s, m, r in trained] + [
        f"{RESULTS}/benchmarks/probe/{d}/{s}/{m}/rep{r}.tsv" for d, s, m, r in probed
    ]


def merge_benchmarks(paths, out):
    """One row per job (stage, dataset, setting, method, rep + Snakemake's benchmark columns):
    the wall time and peak memory of the grid, e.g. to estimate its GPU-hours."""
    import pandas as pd

    rows = []
    for path in paths:
        stage, name, setting, method, rep = Path(path).with_suffix("").parts[-5:]
        row = pd.read_csv(path, sep="\t").iloc[[-1]]
        rows.append(row.assign(stage=stage, dataset=name, setting=setting, method=method, rep=rep[3:]))
    table = pd.concat(rows, ignore_index=True)
    first = ["stage", "dataset", "setting", "method", "rep"]
    with atomic_path(out) as tmp:
        table[first + [c for c in table.columns if c not in first]].to_csv(tmp, sep="\t", index=False)


def figure_files(stem):
    return [f"{RESULTS}/figures/{stem}.{ext}" for ext in ("png", "pdf")]


# --- targets ----------------------------------------------------------------------------


def all_table_files():
    files = [f for d in DATASETS for f in table_files(results_table(d))]
    return files + table_files("table3", extended=False)


def all_figure_files():
    stems = ["probe_r2"]
    for d in DATASETS:
        stems += [f"dice_{d}", f"curves_{d}"]
        if set(METHODS) & set(EXAMPLE_METHODS):
            stems.append(f"examples_{d}")
        if set(METHODS) & set(ATTENTION_METHODS):
            stems.append(f"reconstructions_{d}")
    return [f for stem in stems for f in figure_files(stem)]


def replication_files():
    return [f"{RESULTS}/replication/{name}" for name in ("report.md", "report.html", "checklist.tsv")] + [
        f"{RESULTS}/replication/paper_vs_ours.{ext}" for ext in ("png", "pdf")
    ]
