"""Rule datasets_patient: the original, segmented and cropped images of one patient, with
their per-patient manifests and a QC row. A refused study gets empty manifests."""

import logging
from pathlib import Path

from cacflow.datasets import DatasetSettings
from cacflow.ingest import load_volume
from cacflow.pipeline import (
    DATASET_QC_COLUMNS,
    dataset_qc_row,
    load_segmentation,
    make_datasets,
    write_empty_datasets,
)
from cacflow.runlog import start_rule_log
from cacflow.tables import read_label_table, write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
log = logging.getLogger("datasets")

patient_id = snakemake.wildcards.patient
volume = load_volume(Path(snakemake.input.volume))
out_root = Path(snakemake.output.manifests[0]).parents[1]
rows = []
if volume is None:
    log.info("%s: refused at ingest (results/qc/series.tsv), no images", patient_id)
    write_empty_datasets(out_root, patient_id)
else:
    heart_mask, _ = load_segmentation(Path(snakemake.input.segmentation))
    truth = Path(snakemake.input.truth) if snakemake.input.truth else None
    result = make_datasets(
        out_root,
        patient_id,
        volume,
        heart_mask,
        read_label_table(Path(snakemake.input.labels)),
        truth,
        DatasetSettings.from_config(snakemake.params.datasets),
        label_key=snakemake.params.label_key,
    )
    rows.append(dataset_qc_row(result, truth is not None))
    log.info("%s: %s", patient_id, rows[0])
write_tsv(Path(snakemake.output.qc), rows, DATASET_QC_COLUMNS)
