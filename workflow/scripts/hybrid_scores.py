"""Rules hybrid_scores and external_hybrid_scores: the classical lesions of each patient of
one split (test, or the external cohort) kept only where the network calls an image that shows
them calcium (cacflow.scoring.scoring.hybrid_scores)."""

import logging
from pathlib import Path

from cacflow.runlog import start_rule_log
from cacflow.scoring.scoring import PATIENT_COLUMNS, hybrid_scores
from cacflow.tables import read_tsv, write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
dataset, model = snakemake.wildcards.dataset, snakemake.wildcards.model
# Not the validation patients: they chose the epoch of the saved weights.
split = snakemake.params.split
predictions = [r for r in read_tsv(Path(snakemake.input.predictions)) if r["split"] == split]
lesions = [row for path in snakemake.input.lesions for row in read_tsv(Path(path))]
rows = hybrid_scores(
    lesions, predictions, f"hybrid:{dataset}/{model}", threshold=snakemake.params.threshold
)
write_tsv(Path(snakemake.output[0]), rows, PATIENT_COLUMNS)
logging.getLogger("hybrid").info("%s/%s: %d %s patients scored", dataset, model, len(rows), split)
