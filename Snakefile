# massl-bench: the grid of Chen et al. (MICCAI 2019), Tables 1-3, on synthetic or real data.
#
#   snakemake --profile workflow/profiles/default                 # demo grid (config/config.yaml)
#   snakemake --profile workflow/profiles/default --configfile config/smoke.yaml
#   snakemake --profile workflow/profiles/slurm --configfile config/paper.yaml \
#       --config brats18_dir=/data/MICCAI_BraTS_2018_Data_Training wmh17_dir=/data/WMH
#
# Targets: all (default) = all_tables + all_figures + replication_report + benchmark_summary.

from snakemake.utils import min_version

min_version("9.0")

# A profile given with --configfile replaces the demo config instead of being merged into it
# (Snakemake merges nested dicts, which would mix the demo's settings with the profile's).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="|".join(DATASETS),
    setting=LIBRARY["setting_pattern"].strip("^$").replace("(", "(?:"),  # massl describe
    rep=r"\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/splits.smk"
if IMPORTED is None:

    include: "workflow/rules/train.smk"
    include: "workflow/rules/probe.smk"

else:

    include: "workflow/rules/import.smk"


include: "workflow/rules/metrics.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


# Cheap rules run where Snakemake runs, never through a cluster queue.
localrules:
    all,
    all_tables,
    all_figures,
    synth,
    split,
    aggregate_metrics,
    stats,
    table_results,
    table_probe,
    figure_dice,
    figure_curves,
    figure_examples,
    figure_reconstructions,
    figure_probe,
    replication_report,
    benchmark_summary,


rule all:
    input:
        all_table_files(),
        all_figure_files(),
        replication_files(),
        f"{RESULTS}/benchmarks/summary.tsv",
    default_target: True


rule all_tables:
    input:
        all_table_files(),


rule all_figures:
    input:
        all_figure_files(),
