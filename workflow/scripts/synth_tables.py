"""Rule synth_tables: merge the per-patient label and summary tables of the synthetic cohort."""

from pathlib import Path

from cacflow.runlog import start_rule_log
from cacflow.synthetic.synth import merge_tables

# Header (host, SLURM job), tracebacks and log records go to the rule's log.
start_rule_log(snakemake.log[0], snakemake.rule)

merge_tables(
    label_paths=list(snakemake.input.labels),
    summary_paths=list(snakemake.input.summaries),
    labels_out=Path(snakemake.output.labels),
    patients_out=Path(snakemake.output.patients),
)
