# Per (setting, method): means, spreads and the significance tests behind the marks of Tables 1-2.


rule stats:
    input:
        f"{RESULTS}/metrics/{{dataset}}.tsv",
    output:
        f"{RESULTS}/stats/{{dataset}}.tsv",
    params:
        ratio=test_train_ratio,
        alpha=config["stats"]["alpha"],
        reference=config["stats"]["reference"],
        best=config["stats"]["best"],
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/stats/{{dataset}}.log",
    shell:
        "python -m analysis.stats --cases {input} --out {output} --test-train-ratio {params.ratio} "
        "--alpha {params.alpha} --reference {params.reference} --best {params.best} > {log} 2>&1"
