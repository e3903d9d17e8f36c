# Raw data -> preprocessed arrays. Synthetic datasets are generated in the real folder layout
# first; real data (root, or --config brats18_dir=... wmh17_dir=...) is read where it lies.


rule synth:
    output:
        directory(f"{RESULTS}/raw/synthetic/{{dataset}}"),
    params:
        format=dataset_format,
        args=synth_args,
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/synth/{{dataset}}.log",
    shell:
        "massl synth --dataset {params.format} --out {output} {params.args} > {log} 2>&1"


rule preprocess:
    input:
        raw_data,
    output:
        f"{RESULTS}/preprocessed/{{dataset}}/cases.tsv",
    params:
        format=dataset_format,
        root=data_root,
        out=output_folder,
        config=CONFIG_JSON,
        rerun_when=preprocess_fingerprint,
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/preprocess/{{dataset}}.log",
    threads: config["resources"]["preprocess"]["threads"]
    resources:
        mem_mb=scaled_by_attempt("preprocess", "mem_mb"),
        runtime=scaled_by_attempt("preprocess", "runtime"),
    shell:
        "massl preprocess {params.format} {params.root:q} --out {params.out} --config {params.config} "
        "--dataset {wildcards.dataset} > {log} 2>&1"
