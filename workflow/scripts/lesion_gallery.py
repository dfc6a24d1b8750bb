"""Rule lesion_gallery: a patient's candidate lesions, each kept or rejected and by which rule
of the classical score (cacflow.scoring.scoring.candidate_lesions, drawn by
cacflow.reporting.lesion_gallery)."""

import logging
from pathlib import Path

import numpy as np

from cacflow.dicom.ingest import IngestSettings, volume_of
from cacflow.pipeline import read_checked_study
from cacflow.reporting.lesion_gallery import draw_lesion_gallery
from cacflow.runlog import start_rule_log
from cacflow.scoring.scoring import ScoringSettings, candidate_lesions, filter_candidates

start_rule_log(snakemake.log[0], snakemake.rule)
params = snakemake.params
patient_id = snakemake.wildcards.patient
out = Path(snakemake.output[0])
with np.load(snakemake.input.segmentation) as saved:
    heart_mask, order = saved["heart_mask"], saved["instance_numbers"]
if heart_mask.size == 0:  # refused at ingest: results/qc/series.tsv says why
    empty = np.zeros((1, 1, 1))
    draw_lesion_gallery(
        empty, empty.astype(bool), [], (1.0, 1.0), [0], out, f"{patient_id}: study refused"
    )
else:
    report = read_checked_study(
        Path(params.study), patient_id, IngestSettings.from_config(dict(params.ingest))
    )
    volume = volume_of(report.ct)
    if not np.array_equal(volume.instance_numbers, order):
        raise RuntimeError(f"{patient_id}: the heart mask's slices are not the study's")
    geometry = (volume.pixel_spacing_mm, volume.slice_spacing_mm)
    found = filter_candidates(
        volume.hu, heart_mask, *geometry, ScoringSettings.from_config(params.classical)
    )
    candidates = candidate_lesions(volume.hu, heart_mask, found, *geometry)
    draw_lesion_gallery(
        volume.hu, heart_mask, candidates, volume.pixel_spacing_mm, volume.instance_numbers,
        out, patient_id,
    )  # fmt: skip
    logging.getLogger("lesion_gallery").info(
        "%s: %d candidate lesions, %d kept",
        patient_id,
        len(candidates),
        sum(c.outcome == "kept" for c in candidates),
    )
