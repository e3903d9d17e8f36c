# Table 3: linear-regression probe of each encoder level of the trained models.


rule probe:
    input:
        model=f"{RESULTS}/runs/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}/model.pt",
        summary=f"{RESULTS}/runs/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}/summary.json",
        **RUN_INPUTS,
    output:
        f"{RESULTS}/probe/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}.tsv",
    params:
        config=CONFIG_JSON,
        preload=PRELOAD,
        run=input_folder,
        device=probe_device,
        rerun_when=fingerprint(config["probe"]),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/probe/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}.tsv"
    threads: config["resources"]["probe"]["threads"]
    resources:
        mem_mb=scaled_by_attempt("probe", "mem_mb"),
        runtime=scaled_by_attempt("probe", "runtime"),
        gpu=config["resources"]["probe"]["gpu"],
        gpu_model=gpu_model("probe"),
    shell:
        "{params.preload}massl probe --config {params.config} --run {params.run} --split {input.split} "
        "--cases {input.cases} --out {output} "
        "--threads {threads} --device {params.device} > {log} 2>&1"
