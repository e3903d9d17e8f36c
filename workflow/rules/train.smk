# `train_job: run`: one training job per (dataset, setting, method, repetition) and one per shared
# autoencoder; `train_job: setting`: one job per (dataset, setting, repetition) that trains the
# autoencoder and then every method in one process (same runs, same files; torch's start-up paid
# once instead of ten times). `massl train` also tests the best checkpoint (per_case.tsv) and the
# final weights (per_case_final.tsv).
# The three rules differ only in which runs one job trains (their outputs, log and benchmark
# paths and retry runtime); they share one command, `TRAIN_COMMAND`, and one set of parameters.
# Snakemake's `use rule ... with:` cannot replace a rule's outputs by a differently named set, and
# the two families must not both exist (their outputs overlap), hence a rule per family.
# Declared outputs are only the files `massl train` writes once training is over: Snakemake
# deletes the declared outputs of a failed job, and <run>/checkpoints/ must survive a job killed
# at its wall-time limit so that the retry (with more runtime) resumes from it.
# No `shadow:` for the same reason: the checkpoints must be written into the real run folder.

TRAIN_RESOURCES = config["resources"]["train"]
TRAIN_COMMAND = (
    "{params.preload}massl train --config {params.config} --dataset {wildcards.dataset} "
    "--setting {wildcards.setting} --method {params.methods} --rep {wildcards.rep} "
    "--split {input.split} --cases {input.cases} --out '{params.out}' {params.autoencoder}"
    "--threads {threads} --device {params.device} > {log} 2>&1"
)


TRAINED = ("model.pt", "summary.json", "train_log.tsv")  # every run, the autoencoder's too
TESTED = ("per_case.tsv", "per_case_final.tsv", "examples.npz")  # runs that segment


if config["train_job"] == "run":

    rule train_autoencoder:
        input:
            **RUN_INPUTS,
        output:
            **run_files(AUTOENCODER, TRAINED),
        params:
            **train_params(AUTOENCODER, output_folder, ""),
        conda:
            "../../environment.yml"
        log:
            f"{RESULTS}/logs/train/{{dataset}}/{{setting}}/{AUTOENCODER}/rep{{rep}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train/{{dataset}}/{{setting}}/{AUTOENCODER}/rep{{rep}}.tsv"
        threads: TRAIN_RESOURCES["threads"]
        resources:
            **train_resources(),
        shell:
            TRAIN_COMMAND


    rule train:
        input:
            **RUN_INPUTS,
            autoencoder=autoencoder_model,
        output:
            **run_files("{method}", TRAINED + TESTED),
        params:
            **train_params(lambda wildcards: wildcards.method, output_folder, autoencoder_arg),
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
            **train_resources(),
        shell:
            TRAIN_COMMAND

else:

    rule train_setting:
        input:
            **RUN_INPUTS,
        output:
            model=setting_run_files("model.pt", with_autoencoder=True),
            summary=setting_run_files("summary.json", with_autoencoder=True),
            train_log=setting_run_files("train_log.tsv", with_autoencoder=True),
            cases=setting_run_files("per_case.tsv"),
            cases_final=setting_run_files("per_case_final.tsv"),
            examples=setting_run_files("examples.npz"),
        params:
            **train_params(",".join(setting_job_methods()),
                           lambda wildcards: run_dir(wildcards.dataset, wildcards.setting, "{method}", wildcards.rep),
                           lambda wildcards: f"--autoencoder {autoencoder_run(wildcards)} "),
        conda:
            "../../environment.yml"
        log:
            f"{RESULTS}/logs/train/{{dataset}}/{{setting}}/{SETTING_JOB}/rep{{rep}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train/{{dataset}}/{{setting}}/{SETTING_JOB}/rep{{rep}}.tsv"
        threads: TRAIN_RESOURCES["threads"]
        resources:
            **train_resources(runs=len(setting_job_methods())),
        shell:
            TRAIN_COMMAND
