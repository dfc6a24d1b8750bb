# Input functions of the report (workflow/rules/report.smk), apart from its rules as
# snakemake --lint asks. Called while report.smk is read, after every other rule file.
from types import SimpleNamespace

import jinja2


def produced(path):
    """True when some rule of the workflow can make `path`."""
    return any(rule.is_producer(path) for rule in workflow.rules)


def report_tables():
    """{key of cacflow.reporting.report.TABLE_KEYS: path} of the tables the report shows."""
    tables = {
        "series": rules.qc_series.output[0],
        "segmentation": rules.qc_segmentation.output[0],
        "datasets": rules.qc_datasets.output[0],
        "splits": rules.make_splits.output[0],
        "training": rules.training_summary.output[0],
        "agatston": rules.agatston_patients.output[0],
    }
    if truth_table():
        tables["agreement"] = rules.agatston_agreement.output[0]
        if lesion_maps():
            tables["lesions_eval"] = rules.agatston_lesions.output[0]
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


def caption(name, **wildcards):
    """Caption workflow/report/<name>.rst as Snakemake's report renders it (its Jinja fields
    filled from the config and `wildcards`), in plain text for the workflow's own report.
    """
    text = Path(workflow.basedir, "workflow", "report", f"{name}.rst").read_text()
    fields = SimpleNamespace(config=config, wildcards=SimpleNamespace(**wildcards))
    text = " ".join(jinja2.Template(text).render(snakemake=fields).split())
    # rst inline markup (``literal``, *emphasis*) as plain text
    return re.sub(r"``(.+?)``|\*(.+?)\*", lambda m: m.group(1) or m.group(2), text)


def report_figures():
    """[title, path, caption] of the report's figures, in the order shown; paths as plain
    strings (params must pickle, and a rule's output file objects do not)."""
    figures = [
        ["Dataset examples", "results/figures/examples.png", caption("examples")],
        ["Augmentation", "results/figures/augmentation.png", caption("augmentation")],
    ]
    evaluation = [
        ["ROC curves", "results/figures/roc.png", caption("roc")],
        ["Confusion matrices", "results/figures/confusion.png", caption("confusion")],
    ]
    for dataset in TRAINED_DATASETS:
        for model in MODELS:
            evaluation.append(
                [
                    f"Training curves: {model} on {dataset}",
                    f"results/figures/training_curves/{dataset}_{model}.png",
                    caption("training_curves", dataset=dataset, model=model),
                ]
            )
    for dataset in TRAINED_DATASETS:
        evaluation.append(
            [
                f"Grad-CAM: {dataset}",
                f"results/figures/gradcam/{dataset}.png",
                caption("gradcam", dataset=dataset),
            ]
        )
    if truth_table():
        evaluation += [
            [
                "Agatston scores against the truth",
                str(rules.agatston_figures.output.scatter),
                caption("agatston_scatter"),
            ],
            [
                "Bland-Altman plot of the Agatston scores",
                str(rules.agatston_figures.output.bland_altman),
                caption("agatston_bland_altman"),
            ],
        ]
    # The training cohort's galleries only: the external cohort's patients draw none.
    evaluation += [
        [
            f"Candidate lesions: {patient}",
            expand(rules.process_patient.output.gallery, patient=patient)[0],
            caption("lesion_gallery", patient=patient),
        ]
        for patient in patient_ids()
    ]
    if external_patient_ids():
        evaluation += [
            [
                "ROC curves, external cohort",
                str(rules.external_figures.output.roc),
                caption("external_roc"),
            ],
            [
                "Confusion matrices, external cohort",
                str(rules.external_figures.output.confusion),
                caption("external_confusion"),
            ],
        ]
    return figures + [entry for entry in evaluation if produced(entry[1])]
