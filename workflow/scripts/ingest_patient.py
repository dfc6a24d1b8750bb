"""Rule ingest_patient: find, check and convert one patient's CT series; record the QC rows.

A refused study is not an error of the run (it is listed in results/qc/series.tsv and left
out downstream) unless ingest.strict is set."""

import logging
import sys
from pathlib import Path

from cacflow.ingest import (
    QC_COLUMNS,
    IngestSettings,
    check_labels,
    qc_rows,
    read_study,
    save_volume,
)
from cacflow.runlog import start_rule_log
from cacflow.tables import read_label_table, write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
log = logging.getLogger("ingest")

patient_id = snakemake.wildcards.patient
settings = IngestSettings.from_config(dict(snakemake.params.ingest))
report = read_study(Path(snakemake.params.study), patient_id, settings)
report = check_labels(
    report, read_label_table(Path(snakemake.input.labels)), snakemake.params.label_key
)
if report.accepted:
    ct = report.ct
    log.info(
        "%s: accepted, %d slices of %dx%d, %.3g mm pixels, %.3g mm apart",
        patient_id, ct.hu.shape[0], ct.hu.shape[1], ct.hu.shape[2],
        ct.pixel_spacing_mm[0], ct.slice_spacing_mm,
    )  # fmt: skip
else:
    log.warning("refused: %s", report.error.reason)
    if snakemake.params.ingest["strict"]:
        sys.exit(f"ingest.strict is set, stopping at a refused study: {report.error.reason}")
save_volume(Path(snakemake.output.volume), report)
write_tsv(Path(snakemake.output.qc), qc_rows(report), QC_COLUMNS)
