"""Rule make_splits: patients (not images) to train / validation / test, stratified."""

import logging
from pathlib import Path

from cacflow.learning.splits import (
    SPLIT_COLUMNS,
    SplitSettings,
    patients_from_manifest,
    patients_from_truth,
    split_patients,
)
from cacflow.runlog import start_rule_log
from cacflow.tables import read_tsv, write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
log = logging.getLogger("splits")

patients = patients_from_manifest(read_tsv(Path(snakemake.input.manifest)))
if snakemake.input.truth:
    truth = read_tsv(Path(snakemake.input.truth))
    patients = patients_from_truth(truth, [p.patient_id for p in patients])
rows = split_patients(
    patients, SplitSettings.from_config(snakemake.params.splits), snakemake.params.seed
)
write_tsv(Path(snakemake.output[0]), rows, SPLIT_COLUMNS)
for split in ("train", "validation", "test"):
    members = [r for r in rows if r["split"] == split]
    log.info(
        "%s: %d patients, %d with calcium",
        split,
        len(members),
        sum(r["calcium"] for r in members),
    )
