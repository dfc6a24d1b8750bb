rule evaluate:
    input:
        predictions=training_outputs("predictions.tsv"),
        summaries=training_outputs("summary.tsv"),
        lib=lib("evaluate"),
    output:
        metrics="results/metrics.tsv",
        table1=report(
            "results/tables/table1.tsv",
            caption="../report/table1.rst",
            category="Models",
        ),
        table3=report(
            "results/tables/table3.tsv",
            caption="../report/table3.rst",
            category="Models",
        ),
    log:
        "results/logs/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        evaluation=METRICS_SETTINGS,
        seed=config["seed"],
    script:
        "../scripts/evaluate.py"


rule evaluation_figures:
    input:
        predictions=training_outputs("predictions.tsv"),
        metrics="results/metrics.tsv",
        lib=lib("evaluation_figures"),
    output:
        roc=report(
            "results/figures/roc.png", caption="../report/roc.rst", category="Models"
        ),
        confusion=report(
            "results/figures/confusion.png",
            caption="../report/confusion.rst",
            category="Models",
        ),
    log:
        "results/logs/evaluation_figures.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    params:
        split="test",
    script:
        "../scripts/evaluation_figures.py"


rule training_curves:
    input:
        history="results/models/{dataset}/{model}/history.csv",
        lib=lib("training_curves"),
    output:
        report(
            "results/figures/training_curves/{dataset}_{model}.png",
            caption="../report/training_curves.rst",
            category="Training",
            labels={"dataset": "{dataset}", "model": "{model}"},
        ),
    log:
        "results/logs/training_curves/{dataset}_{model}.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/training_curves.py"


rule gradcam_figure:
    input:
        manifest="results/datasets/{dataset}/manifest.tsv",
        models=expand("results/models/{{dataset}}/{model}/model.keras", model=MODELS),
        predictions=expand(
            "results/models/{{dataset}}/{model}/predictions.tsv", model=MODELS
        ),
        lib=lib("gradcam_figure"),
    output:
        report(
            "results/figures/gradcam/{dataset}.png",
            caption="../report/gradcam.rst",
            category="Models",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "results/logs/gradcam/{dataset}.log",
    benchmark:
        "results/benchmarks/gradcam/{dataset}.tsv"
    conda:
        "../../envs/train.yaml"
    # Mostly one-threaded (loading four models): two datasets' figures run side by side.
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        per_kind=config["evaluation"]["gradcam_per_kind"],
        min_cells=config["evaluation"]["gradcam_min_cells"],
        method=config["evaluation"]["gradcam_method"],
        seed=config["seed"],
    script:
        "../scripts/gradcam_figure.py"
