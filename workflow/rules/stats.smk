# Per (setting, method): means, spreads and the significance tests behind the marks of Tables 1-2.


rule stats:
    input:
        f"{RESULTS}/metrics/{{dataset}}.tsv",
    output:
        f"{RESULTS}/stats/{{dataset}}.tsv",
    params:
        config=CONFIG_JSON,
        ratio=test_train_ratio,
        rerun_when=fingerprint(config["stats"]),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/stats/{{dataset}}.log",
    shell:
        "python -m analysis.stats --config {params.config} --cases {input} --out {output} "
        "--test-train-ratio {params.ratio} > {log} 2>&1"
