"""Concatenate per-patient TSV tables (same columns) into one, in the order given."""

from pathlib import Path

from cacflow.runlog import start_rule_log
from cacflow.tables import merge_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
merge_tsv([Path(p) for p in snakemake.input.tables], Path(snakemake.output[0]))
