rule make_splits:
    input:
        manifest="results/datasets/original/manifest.tsv",
        # Synthetic truth: calcium and risk category per patient. Own data: from the labels.
        truth=[] if own_data() else "results/synthetic/truth/patients.tsv",
        lib=lib("make_splits"),
    output:
        "results/splits/patients.tsv",
    log:
        "results/logs/make_splits.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        splits=config["splits"],
        seed=config["seed"],
    script:
        "../scripts/make_splits.py"


rule augment_dataset:
    input:
        manifest="results/datasets/{dataset}/manifest.tsv",
        splits="results/splits/patients.tsv",
        lib=lib("augment_dataset"),
    output:
        manifest="results/augmented/{dataset}/manifest.tsv",
        images=directory("results/augmented/{dataset}/images"),
    log:
        "results/logs/augment/{dataset}.log",
    benchmark:
        "results/benchmarks/augment/{dataset}.tsv"
    conda:
        "../../envs/dicom.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        augmentation=config["augmentation"],
        # One random stream per dataset, from the run's seed.
        seed=lambda wildcards: [config["seed"], DATASETS.index(wildcards.dataset)],
    script:
        "../scripts/augment_dataset.py"


rule augmentation_figure:
    input:
        manifests=expand("results/datasets/{dataset}/manifest.tsv", dataset=DATASETS),
        augmented=expand("results/augmented/{dataset}/manifest.tsv", dataset=DATASETS),
        lib=lib("augmentation_figure"),
    output:
        report(
            "results/figures/augmentation.png",
            caption="../report/augmentation.rst",
            category="Data",
        ),
    log:
        "results/logs/augmentation_figure.log",
    localrule: True
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        datasets=list(DATASETS),
    script:
        "../scripts/augmentation_figure.py"
