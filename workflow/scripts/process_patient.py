"""Rule process_patient: one patient's study from DICOM to its per-patient tables, in one
process: ingest (series found, checked, converted to HU), heart mask, the three image
datasets and the classical Agatston score. The HU volume stays in memory; every file is
written under a temporary name and renamed.

A refused study is not an error of the run (it is listed in results/qc/series.tsv and gets
an empty mask, empty manifests and header-only score tables) unless ingest.strict is set."""

import logging
import sys
import time
from pathlib import Path

from cacflow.datasets import DatasetSettings
from cacflow.ingest import QC_COLUMNS, IngestSettings, check_labels, qc_rows, read_study, volume_of
from cacflow.patients import read_label_table
from cacflow.pipeline import (
    DATASET_QC_COLUMNS,
    SEGMENTATION_QC_COLUMNS,
    dataset_qc_row,
    make_datasets,
    save_segmentation,
    segment_volume,
    segmentation_qc_row,
    settings_from,
    write_empty_datasets,
)
from cacflow.runlog import start_rule_log
from cacflow.scoring import LESION_COLUMNS, PATIENT_COLUMNS, ScoringSettings, score_volume
from cacflow.tables import write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
log = logging.getLogger("patient")
out = snakemake.output
patient_id = snakemake.wildcards.patient
label_key = snakemake.params.label_key
if snakemake.input.labels:  # the synthetic patient's label file
    label_rows = read_label_table(Path(snakemake.input.labels))
else:  # own data: this patient's rows of the label table, passed as params
    label_rows = [{"patient_id": label_key, **row} for row in snakemake.params.label_rows]
truth = Path(snakemake.input.truth) if snakemake.input.truth else None

# Ingest ---------------------------------------------------------------------------------
start = time.perf_counter()
settings = IngestSettings.from_config(dict(snakemake.params.ingest))
report = check_labels(
    read_study(Path(snakemake.params.study), patient_id, settings), label_rows, label_key
)
write_tsv(Path(out.series_qc), qc_rows(report), QC_COLUMNS)
if not report.accepted:
    log.warning("refused: %s", report.error.reason)
    if snakemake.params.ingest["strict"]:
        sys.exit(f"ingest.strict is set, stopping at a refused study: {report.error.reason}")
    log.info("%s: refused, left out (empty mask, manifests and scores)", patient_id)
    save_segmentation(Path(out.segmentation), None, None)
    write_tsv(Path(out.segmentation_qc), [], SEGMENTATION_QC_COLUMNS)
    write_empty_datasets(Path(out.manifests[0]).parents[1], patient_id)
    write_tsv(Path(out.datasets_qc), [], DATASET_QC_COLUMNS)
    write_tsv(Path(out.lesions), [], LESION_COLUMNS)
    write_tsv(Path(out.scores), [], PATIENT_COLUMNS)
    sys.exit(0)
volume = volume_of(report.ct)
log.info(
    "%s: accepted, %d slices of %dx%d, %.3g mm pixels, %.3g mm apart (%.2f s)",
    patient_id, volume.hu.shape[0], volume.hu.shape[1], volume.hu.shape[2],
    volume.pixel_spacing_mm[0], volume.slice_spacing_mm, time.perf_counter() - start,
)  # fmt: skip

# Heart mask -----------------------------------------------------------------------------
start = time.perf_counter()
heart_mask = segment_volume(
    volume, settings_from("segmentation", dict(snakemake.params.segmentation))
)
save_segmentation(Path(out.segmentation), heart_mask, volume.instance_numbers)
row = segmentation_qc_row(patient_id, volume, heart_mask, truth)
write_tsv(Path(out.segmentation_qc), [row], SEGMENTATION_QC_COLUMNS)
log.info("segmentation (%.2f s): %s", time.perf_counter() - start, row)

# Datasets -------------------------------------------------------------------------------
start = time.perf_counter()
result = make_datasets(
    Path(out.manifests[0]).parents[1],
    patient_id,
    volume,
    heart_mask,
    label_rows,
    truth,
    DatasetSettings.from_config(snakemake.params.datasets),
    label_key=label_key,
)
row = dataset_qc_row(result, truth is not None)
write_tsv(Path(out.datasets_qc), [row], DATASET_QC_COLUMNS)
log.info("datasets (%.2f s): %s", time.perf_counter() - start, row)

# Classical Agatston ---------------------------------------------------------------------
start = time.perf_counter()
score = score_volume(
    patient_id,
    volume,
    heart_mask,
    volume.instance_numbers,
    snakemake.params.datasets["grid"],
    settings=ScoringSettings.from_config(snakemake.params.classical),
)
write_tsv(Path(out.lesions), score.lesions, LESION_COLUMNS)
write_tsv(Path(out.scores), [score.row], PATIENT_COLUMNS)
log.info("agatston (%.2f s): %s", time.perf_counter() - start, score.row)
