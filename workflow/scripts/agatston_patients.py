"""Rule agatston_patients: the classical score of every patient, then the rows of any other
method's table (hybrid scores), with the synthetic truth when there is one."""

from pathlib import Path

from cacflow.runlog import start_rule_log
from cacflow.scoring.scoring import MERGED_COLUMNS, merge_scores
from cacflow.tables import read_tsv, write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
truth = read_tsv(Path(snakemake.input.truth)) if snakemake.input.truth else None
tables = [Path(p) for p in [*snakemake.input.classical, *snakemake.input.methods]]
write_tsv(Path(snakemake.output[0]), merge_scores(tables, truth), MERGED_COLUMNS)
