"""Rule reference_table: own data's reference scores under the workflow's patient IDs
(cacflow.scoring.reference.reference_for_patients)."""

import logging
from pathlib import Path

from cacflow.runlog import start_rule_log
from cacflow.scoring.reference import (
    TRUTH_TABLE_COLUMNS,
    read_reference_table,
    reference_for_patients,
)
from cacflow.tables import write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
log = logging.getLogger("reference")
rows, unmatched = reference_for_patients(
    read_reference_table(Path(snakemake.input.table)), dict(snakemake.params.patient_ids)
)
write_tsv(Path(snakemake.output[0]), rows, TRUTH_TABLE_COLUMNS)
log.info("reference scores for %d of %d patients", len(rows), len(snakemake.params.patient_ids))
if unmatched:
    log.warning("%d rows of the reference table name no study of dicom_dir", unmatched)
