wildcard_constraints:
    model="|".join(MODELS),


rule train_model:
    input:
        manifest="results/datasets/{dataset}/manifest.tsv",
        augmented="results/augmented/{dataset}/manifest.tsv",
        splits="results/splits/patients.tsv",
        lib=lib("train_model"),
    output:
        model="results/models/{dataset}/{model}/model.keras",
        history="results/models/{dataset}/{model}/history.csv",
        summary="results/models/{dataset}/{model}/summary.tsv",
        # P(calcium) of every validation and test image, for evaluation and hybrid scores.
        predictions="results/models/{dataset}/{model}/predictions.tsv",
    log:
        "results/logs/train/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{model}.tsv"
    # Longest first, so that the last training does not run alone while other slots wait:
    # the cropped dataset (nine tiles a slice to predict), then the larger networks.
    priority: train_priority
    conda:
        "../../envs/train.yaml"
    # TensorFlow uses the job's threads (intra-op); on a workstation with one GPU (profile
    # resources gpu: 1) the trainings run one at a time.
    threads: 8
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        training=model_training_config,
        input_pipeline=config["input_pipeline"],
        augmentation=config["augmentation"],
        datasets=config["datasets"],
        seed=config["seed"],
    script:
        "../scripts/train_model.py"


rule training_summary:
    input:
        tables=expand(
            "results/models/{dataset}/{model}/summary.tsv",
            dataset=TRAINED_DATASETS,
            model=MODELS,
        ),
        lib=lib("merge_tables"),
    output:
        "results/models/summary.tsv",
    log:
        "results/logs/training_summary.log",
    localrule: True
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/merge_tables.py"
