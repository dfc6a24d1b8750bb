# The final report, results/report/index.html: one self-contained page. Included last in the
# Snakefile, so the input functions of report_inputs.smk see every rule: a table or figure
# is an input when a rule of this workflow makes it (evaluation outputs join once their
# rules exist).


include: "report_inputs.smk"


rule example_figure:
    input:
        manifests=expand("results/datasets/{dataset}/manifest.tsv", dataset=DATASETS),
        lib=lib("example_figure"),
    output:
        report(
            "results/figures/examples.png",
            caption="../report/examples.rst",
            category="Data",
        ),
    log:
        "results/logs/example_figure.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        datasets=list(DATASETS),
        patients=config["report"]["example_patients"],
        dpi=config["report"]["figure_dpi"],
    script:
        "../scripts/example_figure.py"


rule report:
    input:
        **report_tables(),
        figures=[path for _, path, _ in report_figures()],
        lib=lib("write_report"),
    output:
        "results/report/index.html",
    log:
        "results/logs/report.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        figures=report_figures(),
        synthetic=not own_data(),
        configfiles=config_files(),
        # The settings shown. The pseudonym key is a secret: whether it is set, not its value.
        settings={
            **config,
            "ingest": {
                **config["ingest"],
                "pseudonym_key": "(set)" if config["ingest"]["pseudonym_key"] else "",
            },
        },
    script:
        "../scripts/write_report.py"
