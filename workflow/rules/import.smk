# `import_runs: DIR`: the grid's runs, probes and per-job benchmarks come from DIR, a results
# folder of the same grid trained elsewhere (or its small files only: a committed measurement,
# what a GPU machine or a cluster sends back), instead of being trained here. These rules
# replace train.smk and probe.smk, so nothing is trained; every rule downstream of them is the
# same as for a grid trained here. check_import (common.smk) has already refused a DIR whose
# config.json describes other runs.

# What the tables, statistics, report and figures read of a segmentation run (not model.pt,
# nor examples.npz: without them the example and reconstruction figures are left out).
IMPORTED_RUN_FILES = ("summary.json", "provenance.json", "train_log.tsv", "per_case.tsv", "per_case_final.tsv")


def imported(path):
    """The file of DIR at `path` (relative to a results folder)."""
    return f"{IMPORTED}/{path}"


rule import_run:
    input:
        **{key: imported(path.removeprefix(f"{RESULTS}/")) for key, path in run_files("{method}", IMPORTED_RUN_FILES).items()},
    output:
        **run_files("{method}", IMPORTED_RUN_FILES),
    log:
        f"{RESULTS}/logs/import/runs/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}.log",
    wildcard_constraints:
        method="|".join(METHODS),
    shell:
        "cp -v {input} $(dirname {output.summary}) > {log} 2>&1"


rule import_file:
    input:
        imported("{kind}/{path}.tsv"),
    output:
        f"{RESULTS}/{{kind}}/{{path}}.tsv",
    log:
        f"{RESULTS}/logs/import/{{kind}}/{{path}}.log",
    wildcard_constraints:
        kind="probe|benchmarks",
        path=r"[^/]+(/[^/]+)+",  # below a folder: benchmarks/summary.tsv is built here, not copied
    shell:
        "cp -v {input} {output} > {log} 2>&1"


localrules:
    import_run,
    import_file,
