"""Rule score_patient: classical Agatston score of one patient inside its heart mask, and its
lesions with the images that show them. A refused study gets header-only tables."""

import logging
from pathlib import Path

from cacflow.ingest import load_volume
from cacflow.pipeline import load_segmentation
from cacflow.runlog import start_rule_log
from cacflow.scoring import LESION_COLUMNS, PATIENT_COLUMNS, score_volume
from cacflow.tables import write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
log = logging.getLogger("score")

patient_id = snakemake.wildcards.patient
volume = load_volume(Path(snakemake.input.volume))
heart_mask, instance_numbers = load_segmentation(Path(snakemake.input.segmentation))
score = score_volume(patient_id, volume, heart_mask, instance_numbers, snakemake.params.grid)
if score is None:
    log.info("%s: refused at ingest (results/qc/series.tsv), nothing to score", patient_id)
rows, lesions = ([score.row], score.lesions) if score else ([], [])
write_tsv(Path(snakemake.output.lesions), lesions, LESION_COLUMNS)
write_tsv(Path(snakemake.output.scores), rows, PATIENT_COLUMNS)
if score:
    log.info("%s: %s", patient_id, score.row)
