"""Rule agatston_lesions: orCaScore's lesion-level evaluation of the classical score against
the truth (cacflow.scoring.lesions.lesion_evaluation)."""

import logging
from pathlib import Path

from cacflow.runlog import start_rule_log
from cacflow.scoring.lesions import LESIONS_EVAL_COLUMNS, lesion_evaluation
from cacflow.tables import read_tsv, write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
per_patient = [row for path in snakemake.input.lesion_eval for row in read_tsv(Path(path))]
rows = lesion_evaluation(per_patient, read_tsv(Path(snakemake.input.scores)))
write_tsv(Path(snakemake.output[0]), rows, LESIONS_EVAL_COLUMNS)
for row in rows:
    logging.getLogger("lesions").info("%s", row)
