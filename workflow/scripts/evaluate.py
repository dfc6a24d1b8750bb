"""Rule evaluate: results/metrics.tsv and the paper's Tables 1 and 3 beside ours."""

import logging
from pathlib import Path

from cacflow.reporting.evaluation import TABLE1_COLUMNS, metrics_table, table1, write_metrics
from cacflow.reporting.paper import TABLE3_COMPARISON_COLUMNS, table3_comparison
from cacflow.runlog import start_rule_log
from cacflow.tables import read_tsv, write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
rows = metrics_table(
    [Path(p) for p in snakemake.input.predictions],
    snakemake.params.evaluation,
    snakemake.params.seed,
)
write_metrics(Path(snakemake.output.metrics), rows)
summaries = [row for p in snakemake.input.summaries for row in read_tsv(Path(p))]
write_tsv(Path(snakemake.output.table1), table1(summaries), TABLE1_COLUMNS)
write_tsv(Path(snakemake.output.table3), table3_comparison(rows), TABLE3_COMPARISON_COLUMNS)
logging.getLogger("evaluate").info("%d metric rows", len(rows))
