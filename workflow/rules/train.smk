# `train_job: run`: one training job per (dataset, setting, method, repetition) and one per shared
# autoencoder; `train_job: setting`: one job per (dataset, setting, repetition) that trains the
# autoencoder and then every method in one process (same runs, same files; torch's start-up paid
# once instead of ten times). `massl train` also tests the best checkpoint (per_case.tsv) and the
# final weights (per_case_final.tsv).
# Declared outputs are only the files `massl train` writes once training is over: Snakemake deletes the declared outputs of a failed job, and <run>/checkpoints/ must survive a
# job killed at its wall-time limit so that the retry (with more runtime) resumes from it.
# No `shadow:` for the same reason: the checkpoints must be written into the real run folder.

TRAIN_RESOURCES = config["resources"]["train"]


if config["train_job"] == "run":

    rule train_autoencoder:
        input:
            cases=f"{RESULTS}/preprocessed/{{dataset}}/cases.tsv",
            split=f"{RESULTS}/splits/{{dataset}}/rep{{rep}}.json",
        output:
            model=f"{RESULTS}/runs/{{dataset}}/{{setting}}/autoencoder/rep{{rep}}/model.pt",
            summary=f"{RESULTS}/runs/{{dataset}}/{{setting}}/autoencoder/rep{{rep}}/summary.json",
            train_log=f"{RESULTS}/runs/{{dataset}}/{{setting}}/autoencoder/rep{{rep}}/train_log.tsv",
        params:
            config=CONFIG_JSON,
            preload=PRELOAD,
            out=output_folder,
            device=train_device,
            rerun_when=train_fingerprint,
        conda:
            "../../environment.yml"
        log:
            f"{RESULTS}/logs/train/{{dataset}}/{{setting}}/autoencoder/rep{{rep}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train/{{dataset}}/{{setting}}/autoencoder/rep{{rep}}.tsv"
        threads: TRAIN_RESOURCES["threads"]
        resources:
            mem_mb=scaled_by_attempt("train", "mem_mb"),
            runtime=scaled_by_attempt("train", "runtime"),
            gpu=TRAIN_RESOURCES["gpu"],
            gpu_model=gpu_model("train"),
        shell:
            "{params.preload}massl train --config {params.config} --dataset {wildcards.dataset} --setting {wildcards.setting} "
            "--method autoencoder --rep {wildcards.rep} --out {params.out} "
            "--threads {threads} --device {params.device} > {log} 2>&1"


    rule train:
        input:
            cases=f"{RESULTS}/preprocessed/{{dataset}}/cases.tsv",
            split=f"{RESULTS}/splits/{{dataset}}/rep{{rep}}.json",
            autoencoder=autoencoder_model,
        output:
            model=f"{RESULTS}/runs/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}/model.pt",
            summary=f"{RESULTS}/runs/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}/summary.json",
            cases=f"{RESULTS}/runs/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}/per_case.tsv",
            cases_final=f"{RESULTS}/runs/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}/per_case_final.tsv",
            examples=f"{RESULTS}/runs/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}/examples.npz",
            train_log=f"{RESULTS}/runs/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}/train_log.tsv",
        params:
            config=CONFIG_JSON,
            preload=PRELOAD,
            out=output_folder,
            autoencoder=autoencoder_arg,
            device=train_device,
            rerun_when=train_fingerprint,
        conda:
            "../../environment.yml"
        log:
            f"{RESULTS}/logs/train/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train/{{dataset}}/{{setting}}/{{method}}/rep{{rep}}.tsv"
        wildcard_constraints:
            method="|".join(METHODS),
        threads: TRAIN_RESOURCES["threads"]
        resources:
            mem_mb=scaled_by_attempt("train", "mem_mb"),
            runtime=scaled_by_attempt("train", "runtime"),
            gpu=TRAIN_RESOURCES["gpu"],
            gpu_model=gpu_model("train"),
        shell:
            "{params.preload}massl train --config {params.config} --dataset {wildcards.dataset} --setting {wildcards.setting} "
            "--method {wildcards.method} --rep {wildcards.rep} --out {params.out} {params.autoencoder} "
            "--threads {threads} --device {params.device} > {log} 2>&1"

else:

    rule train_setting:
        input:
            cases=f"{RESULTS}/preprocessed/{{dataset}}/cases.tsv",
            split=f"{RESULTS}/splits/{{dataset}}/rep{{rep}}.json",
        output:
            model=setting_run_files("model.pt", with_autoencoder=True),
            summary=setting_run_files("summary.json", with_autoencoder=True),
            train_log=setting_run_files("train_log.tsv", with_autoencoder=True),
            cases=setting_run_files("per_case.tsv"),
            cases_final=setting_run_files("per_case_final.tsv"),
            examples=setting_run_files("examples.npz"),
        params:
            config=CONFIG_JSON,
            preload=PRELOAD,
            methods=",".join(setting_job_methods()),
            out=lambda wildcards: run_dir(wildcards.dataset, wildcards.setting, "{method}", wildcards.rep),
            autoencoder=autoencoder_run,
            device=train_device,
            rerun_when=train_fingerprint,
        conda:
            "../../environment.yml"
        log:
            f"{RESULTS}/logs/train/{{dataset}}/{{setting}}/{SETTING_JOB}/rep{{rep}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train/{{dataset}}/{{setting}}/{SETTING_JOB}/rep{{rep}}.tsv"
        threads: TRAIN_RESOURCES["threads"]
        resources:
            mem_mb=scaled_by_attempt("train", "mem_mb"),
            runtime=scaled_by_attempt("train", "runtime", runs=len(setting_job_methods())),
            gpu=TRAIN_RESOURCES["gpu"],
            gpu_model=gpu_model("train"),
        shell:
            "{params.preload}massl train --config {params.config} --dataset {wildcards.dataset} --setting {wildcards.setting} "
            "--method {params.methods} --rep {wildcards.rep} --out '{params.out}' --autoencoder {params.autoencoder} "
            "--threads {threads} --device {params.device} > {log} 2>&1"
