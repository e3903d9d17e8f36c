# One split per (dataset, repetition), shared by every method and setting of that repetition.


rule split:
    input:
        cases=f"{RESULTS}/preprocessed/{{dataset}}/cases.tsv",
    output:
        f"{RESULTS}/splits/{{dataset}}/rep{{rep}}.json",
    params:
        config=CONFIG_JSON,
        rerun_when=split_fingerprint,
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/split/{{dataset}}/rep{{rep}}.log",
    shell:
        "massl split --cases {input.cases} --dataset {wildcards.dataset} --rep {wildcards.rep} "
        "--out {output} --config {params.config} > {log} 2>&1"
