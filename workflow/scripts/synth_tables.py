"""Rule synth_tables: merge the per-patient label and summary tables of the synthetic cohort."""

import logging
import sys
from pathlib import Path

from cacflow.synth import merge_tables

# Tracebacks and log records go to the rule's log for the life of the script.
sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

merge_tables(
    label_paths=list(snakemake.input.labels),
    summary_paths=list(snakemake.input.summaries),
    labels_out=Path(snakemake.output.labels),
    patients_out=Path(snakemake.output.patients),
)
