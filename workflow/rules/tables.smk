# Tables 1-2 (Dice per method and setting, with significance marks) and Table 3 (probe R²).


rule table_results:
    input:
        stats_for_table,
    output:
        report(f"{RESULTS}/tables/{{table}}.csv", caption="../report/table_results.rst", category="Tables"),
        multiext(f"{RESULTS}/tables/{{table}}", ".md", ".tex"),
        report(
            f"{RESULTS}/tables/{{table}}_extended.csv",
            caption="../report/table_results_extended.rst",
            category="Tables",
        ),
        multiext(f"{RESULTS}/tables/{{table}}_extended", ".md", ".tex"),
    params:
        config=CONFIG_JSON,
        prefix=output_stem,
        caption=table_caption,
        methods=table_methods,
        settings=table_settings,
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/tables/{{table}}.log",
    wildcard_constraints:
        table="|".join(results_tables()),
    shell:
        "python -m analysis.tables results --config {params.config} --stats {input} --out-prefix {params.prefix} "
        "--caption {params.caption:q} --methods {params.methods} --settings {params.settings} > {log} 2>&1"


rule table_probe:
    input:
        probe_files(),
    output:
        report(f"{RESULTS}/tables/table3.csv", caption="../report/table_probe.rst", category="Tables"),
        multiext(f"{RESULTS}/tables/table3", ".md", ".tex"),
    params:
        config=CONFIG_JSON,
        prefix=output_stem,
        rerun_when=fingerprint([config["probe"], config["repetitions"]]),  # the caption states them
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/tables/table3.log",
    shell:
        "python -m analysis.tables probe --config {params.config} --probe-files {input} "
        "--out-prefix {params.prefix} > {log} 2>&1"
