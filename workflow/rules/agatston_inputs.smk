# Input functions of the Agatston stage (workflow/rules/agatston.smk), apart from its rules
# as snakemake --lint asks; candidates for common.smk.


def hybrid_tables():
    """Per-method score tables (PATIENT_COLUMNS of cacflow.scoring, e.g. method
    "hybrid:cropped/resnet50") merged after the classical scores. The evaluation stage
    fills this with the outputs of its hybrid scoring rules (cacflow.scoring.hybrid_scores
    on the lesion tables and a classifier's predictions, threshold
    config["agatston"]["hybrid_threshold"]); none yet."""
    return []
