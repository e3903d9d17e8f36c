# `massl train` already scores each run on its test scans (per_case.tsv, summary.json); this
# stage gathers the per-case rows of a dataset into one tidy table.


rule aggregate_metrics:
    input:
        summaries=dataset_summaries,
        cases=dataset_cases,
    output:
        cases=f"{RESULTS}/metrics/{{dataset}}.tsv",
    params:
        config=CONFIG_JSON,
        runs=dataset_run_dirs,
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/aggregate/{{dataset}}.log",
    shell:
        "python -m analysis.aggregate --config {params.config} --runs {params.runs} "
        "--out-cases {output.cases} > {log} 2>&1"
