# The replication report (our numbers beside the paper's, with a pass/fail checklist) and the
# cost of the grid (every training and probe job's wall time and peak memory).


rule replication_report:
    input:
        stats=expand(f"{RESULTS}/stats/{{dataset}}.tsv", dataset=DATASETS),
        cases=expand(f"{RESULTS}/metrics/{{dataset}}.tsv", dataset=DATASETS),
        probe=probe_files(),
        paper=PAPER_VALUES,
    output:
        report(f"{RESULTS}/replication/report.html", caption="../report/replication.rst", category="Replication"),
        f"{RESULTS}/replication/report.md",
        f"{RESULTS}/replication/checklist.tsv",
        multiext(f"{RESULTS}/replication/paper_vs_ours", ".png", ".pdf"),
    params:
        config=CONFIG_JSON,
        out=output_folder,
        rerun_when=fingerprint([config["replication"], config["stats"], config["probe"]["variance"]]),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/replication.log",
    shell:
        "python -m analysis.replication --stats {input.stats} --cases {input.cases} --probe-files {input.probe} "
        "--paper {input.paper} --config {params.config} --out-dir {params.out} > {log} 2>&1"


rule benchmark_summary:
    input:
        benchmark_files(),
    output:
        report(f"{RESULTS}/benchmarks/summary.tsv", caption="../report/benchmarks.rst", category="Cost"),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/benchmark_summary.log",
    shell:
        "python -m analysis.costs --jobs {input} --out {output} > {log} 2>&1"
