# Figures, each as PNG and PDF: Dice per method and setting, training curves, example
# segmentations, MASSL foreground/background reconstructions and probe R² by encoder level.


rule figure_dice:
    input:
        f"{RESULTS}/metrics/{{dataset}}.tsv",
    output:
        png=report(
            f"{RESULTS}/figures/dice_{{dataset}}.png",
            caption="../report/figure_dice.rst",
            category="Figures",
        ),
        pdf=f"{RESULTS}/figures/dice_{{dataset}}.pdf",
    params:
        config=CONFIG_JSON,
        out=output_stem,
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/figures/dice_{{dataset}}.log",
    shell:
        "python -m analysis.figures dice --config {params.config} --cases {input} --out {params.out} > {log} 2>&1"


rule figure_curves:
    input:
        summaries=dataset_summaries,
        train_logs=dataset_train_logs,
    output:
        png=report(
            f"{RESULTS}/figures/curves_{{dataset}}.png",
            caption="../report/figure_curves.rst",
            category="Figures",
        ),
        pdf=f"{RESULTS}/figures/curves_{{dataset}}.pdf",
    params:
        config=CONFIG_JSON,
        runs=dataset_run_dirs,
        out=output_stem,
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/figures/curves_{{dataset}}.log",
    shell:
        "python -m analysis.figures curves --config {params.config} --runs {params.runs} --out {params.out} > {log} 2>&1"


rule figure_examples:
    input:
        example_files,
    output:
        png=report(
            f"{RESULTS}/figures/examples_{{dataset}}.png",
            caption="../report/figure_examples.rst",
            category="Figures",
        ),
        pdf=f"{RESULTS}/figures/examples_{{dataset}}.pdf",
    params:
        config=CONFIG_JSON,
        runs=example_run_dirs,
        methods=example_methods,
        out=output_stem,
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/figures/examples_{{dataset}}.log",
    shell:
        "python -m analysis.figures examples --config {params.config} --runs {params.runs} --methods {params.methods} "
        "--out {params.out} > {log} 2>&1"


rule figure_reconstructions:
    input:
        attention_examples,
    output:
        png=report(
            f"{RESULTS}/figures/reconstructions_{{dataset}}.png",
            caption="../report/figure_reconstructions.rst",
            category="Figures",
        ),
        pdf=f"{RESULTS}/figures/reconstructions_{{dataset}}.pdf",
    params:
        config=CONFIG_JSON,
        runs=attention_run_dirs,
        out=output_stem,
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/figures/reconstructions_{{dataset}}.log",
    shell:
        "python -m analysis.figures reconstructions --config {params.config} --runs {params.runs} --out {params.out} > {log} 2>&1"


rule figure_probe:
    input:
        f"{RESULTS}/tables/table3.csv",
    output:
        png=report(
            f"{RESULTS}/figures/probe_r2.png",
            caption="../report/figure_probe.rst",
            category="Figures",
        ),
        pdf=f"{RESULTS}/figures/probe_r2.pdf",
    params:
        config=CONFIG_JSON,
        out=output_stem,
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/figures/probe_r2.log",
    shell:
        "python -m analysis.figures probe --config {params.config} --table {input} --out {params.out} > {log} 2>&1"
