# Per (setting, method): means, spreads and the significance tests behind the marks of Tables 1-2.


# stats/<d>.tsv: the paper's rows of the grid (Tables 1-2, the report); stats/<d>_plus.tsv: all
# of them, with the baselines beyond the paper (table*_plus). Each is its own Holm family.
rule stats:
    input:
        f"{RESULTS}/metrics/{{dataset}}.tsv",
    output:
        f"{RESULTS}/stats/{{dataset}}{{rows}}.tsv",
    params:
        config=CONFIG_JSON,
        methods=lambda wildcards: ",".join(stats_methods(wildcards.rows)),
        ratio=test_train_ratio,
        rerun_when=fingerprint(config["stats"]),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/stats/{{dataset}}{{rows}}.log",
    wildcard_constraints:
        rows=f"|{PLUS}",
    shell:
        "python -m analysis.stats --config {params.config} --cases {input} --out {output} "
        "--test-train-ratio {params.ratio} --methods {params.methods} > {log} 2>&1"
