"""Rule segment_patient: heart mask of one ingested series, and its QC row (scored against
the synthetic truth when there is one). A refused study gets an empty mask and no row."""

import logging
from pathlib import Path

from cacflow.ingest import load_volume
from cacflow.pipeline import (
    SEGMENTATION_QC_COLUMNS,
    save_segmentation,
    segment_volume,
    segmentation_qc_row,
    settings_from,
)
from cacflow.runlog import start_rule_log
from cacflow.tables import write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
log = logging.getLogger("segment")

patient_id = snakemake.wildcards.patient
volume = load_volume(Path(snakemake.input.volume))
rows = []
if volume is None:
    log.info("%s: refused at ingest (results/qc/series.tsv), nothing to segment", patient_id)
    save_segmentation(Path(snakemake.output.segmentation), None, None)
else:
    settings = settings_from("segmentation", dict(snakemake.params.segmentation))
    heart_mask = segment_volume(volume, settings)
    save_segmentation(Path(snakemake.output.segmentation), heart_mask, volume.instance_numbers)
    truth = Path(snakemake.input.truth) if snakemake.input.truth else None
    rows.append(segmentation_qc_row(patient_id, volume, heart_mask, truth))
    log.info("%s: %s", patient_id, rows[0])
write_tsv(Path(snakemake.output.qc), rows, SEGMENTATION_QC_COLUMNS)
