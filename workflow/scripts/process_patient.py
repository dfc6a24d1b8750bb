"""Rule process_patient: one patient's study from DICOM to its per-patient tables, in one
process (`cacflow.pipeline.run_patient`): ingest, heart mask, the three image datasets, the
classical Agatston score and, where the rule has a `gallery` output, the gallery of its
candidate lesions (the external cohort's rule has none).

A refused study is not an error of the run (it is listed in results/qc/series.tsv and gets
an empty mask, empty manifests, header-only score tables and a "study refused" gallery)
unless ingest.strict is set."""

import logging
import sys
from pathlib import Path

from cacflow.dicom.ingest import IngestSettings
from cacflow.imaging.datasets import DatasetSettings
from cacflow.patients import read_label_table
from cacflow.pipeline import PatientFiles, StudySettings, run_patient, settings_from, write_refused
from cacflow.runlog import start_rule_log
from cacflow.scoring.scoring import ScoringSettings

start_rule_log(snakemake.log[0], snakemake.rule)
log = logging.getLogger("patient")
out, params = snakemake.output, snakemake.params
patient_id = snakemake.wildcards.patient
if snakemake.input.labels:  # the synthetic patient's label file
    label_rows = read_label_table(Path(snakemake.input.labels))
else:  # own data: this patient's rows of the label table, passed as params
    label_rows = [{"patient_id": params.label_key, **row} for row in params.label_rows]
files = PatientFiles(
    series_qc=Path(out.series_qc),
    segmentation=Path(out.segmentation),
    segmentation_qc=Path(out.segmentation_qc),
    datasets=Path(out.manifests[0]).parents[1],
    datasets_qc=Path(out.datasets_qc),
    lesions=Path(out.lesions),
    scores=Path(out.scores),
    gallery=Path(out.gallery) if out.get("gallery") else None,
    lesion_eval=Path(out.lesion_eval) if out.get("lesion_eval") else None,
)
settings = StudySettings(
    ingest=IngestSettings.from_config(dict(params.ingest)),
    segmentation=settings_from("segmentation", dict(params.segmentation)),
    datasets=DatasetSettings.from_config(params.datasets),
    scoring=ScoringSettings.from_config(params.classical),
)
report, result = run_patient(
    Path(params.study),
    patient_id,
    settings,
    files,
    label_rows,
    Path(snakemake.input.truth) if snakemake.input.truth else None,
    label_key=params.label_key,
)
if result is None:
    log.warning("refused: %s", report.error.reason)
    if params.ingest["strict"]:
        sys.exit(f"ingest.strict is set, stopping at a refused study: {report.error.reason}")
    write_refused(files, patient_id)
    log.info("%s: refused, left out (empty mask, manifests and scores)", patient_id)
    sys.exit(0)
volume = result.volume
log.info(
    "%s: accepted, %d slices of %dx%d, %.3g mm pixels, %.3g mm apart",
    patient_id, volume.hu.shape[0], volume.hu.shape[1], volume.hu.shape[2],
    volume.pixel_spacing_mm[0], volume.slice_spacing_mm,
)  # fmt: skip
if result.segmentation_qc["warning"]:
    log.warning("%s: %s", patient_id, result.segmentation_qc["warning"])
for stage, row in (
    ("segmentation", result.segmentation_qc),
    ("datasets", result.datasets_qc),
    ("agatston", result.score.row),
):
    log.info("%s (%.2f s): %s", stage, result.seconds[stage], row)
log.info("read (%.2f s)", result.seconds["read"])
if files.gallery is not None:
    candidates = result.score.candidates
    log.info(
        "%s: %d candidate lesions, %d kept (gallery %.2f s)",
        patient_id,
        len(candidates),
        sum(c.outcome == "kept" for c in candidates),
        result.seconds["gallery"],
    )
