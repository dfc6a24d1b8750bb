# Input functions of the report (workflow/rules/report.smk), apart from its rules as
# snakemake --lint asks. Called while report.smk is read, after every other rule file.


def produced(path):
    """True when some rule of the workflow can make `path`."""
    return any(rule.is_producer(path) for rule in workflow.rules)


def report_tables():
    """{key of cacflow.report.TABLE_KEYS: path} of the tables the report shows."""
    tables = {
        "series": rules.qc_series.output[0],
        "segmentation": rules.qc_segmentation.output[0],
        "datasets": rules.qc_datasets.output[0],
        "splits": rules.make_splits.output[0],
        "training": rules.training_summary.output[0],
        "agatston": rules.agatston_patients.output[0],
    }
    if not own_data():
        tables["agreement"] = rules.agatston_agreement.output[0]
    optional = {
        "metrics": "results/metrics.tsv",
        "table1": "results/tables/table1.tsv",
        "table3": "results/tables/table3.tsv",
    }
    tables.update({key: path for key, path in optional.items() if produced(path)})
    if external_patient_ids():
        tables["external_metrics"] = rules.external_evaluate.output.metrics
        tables["external_table3"] = rules.external_evaluate.output.table3
        tables["external_agreement"] = rules.external_agatston_agreement.output[0]
        tables["external_pointing"] = rules.external_pointing.output[0]
    return tables


def report_figures():
    """[title, path, caption] of the report's figures, in the order shown; paths as plain
    strings (params must pickle, and a rule's output file objects do not)."""
    figures = [
        [
            "Dataset examples",
            "results/figures/examples.png",
            "One slice with coronary calcium per patient as the three image datasets: the "
            "original slice (heart box yellow), the segmented heart image and its tiles, and "
            "the cropped tiles; tiles labelled calcium are framed red.",
        ],
        [
            "Augmentation",
            "results/figures/augmentation.png",
            "Training images beside augmented copies (rotation, shear, zoom, flip, shifts), "
            "per dataset and class; a copy stays calcium while >= 1 mm² of its lesion is in "
            "view.",
        ],
    ]
    evaluation = [
        [
            "ROC curves",
            "results/figures/roc.png",
            "ROC curves of every network on the test images, one panel per dataset.",
        ],
        [
            "Confusion matrices",
            "results/figures/confusion.png",
            f"Confusion matrices on the test images (threshold {config['evaluation']['threshold']}).",
        ],
    ]
    for dataset in TRAINED_DATASETS:
        for model in MODELS:
            evaluation.append(
                [
                    f"Training curves: {model} on {dataset}",
                    f"results/figures/training_curves/{dataset}_{model}.png",
                    "Loss and accuracy per epoch, training and validation.",
                ]
            )
    for dataset in TRAINED_DATASETS:
        evaluation.append(
            [
                f"Grad-CAM: {dataset}",
                f"results/figures/gradcam/{dataset}.png",
                "Grad-CAM heat maps of sample test images (true and false positives and "
                "negatives), one row per network.",
            ]
        )
    if not own_data():
        evaluation += [
            [
                "Agatston scores against the truth",
                str(rules.agatston_figures.output.scatter),
                "Each method's Agatston score against the synthetic cohort's true score, "
                "log(1 + score) axes, risk-category bounds dashed.",
            ],
            [
                "Bland-Altman plot of the Agatston scores",
                str(rules.agatston_figures.output.bland_altman),
                "Method - truth against their mean, with the mean difference and the 95 % "
                "limits of agreement.",
            ],
        ]
    if external_patient_ids():
        cohort = (
            f"the {len(external_patient_ids())} patients of the external cohort (seed "
            f"{config['external']['seed']}, never trained or tuned on)"
        )
        evaluation += [
            [
                "ROC curves, external cohort",
                str(rules.external_figures.output.roc),
                f"ROC curves of every network on the images of {cohort}, one panel per "
                "dataset.",
            ],
            [
                "Confusion matrices, external cohort",
                str(rules.external_figures.output.confusion),
                f"Confusion matrices on the images of {cohort} (threshold "
                f"{config['evaluation']['threshold']}).",
            ],
        ]
    return figures + [entry for entry in evaluation if produced(entry[1])]
