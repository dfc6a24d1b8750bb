"""Rule external_evaluate: results/external/metrics.tsv (image and patient level, patient
bootstrap intervals) and the paper's Table 3 beside ours on the external cohort."""

from pathlib import Path

from cacflow.reporting.evaluation import EXTERNAL_SPLIT, metrics_table, write_metrics
from cacflow.reporting.paper import TABLE3_COMPARISON_COLUMNS, table3_comparison
from cacflow.runlog import start_rule_log
from cacflow.tables import write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
rows = metrics_table(
    [Path(p) for p in snakemake.input.predictions],
    snakemake.params.evaluation,
    snakemake.params.seed,
    splits=(EXTERNAL_SPLIT,),
)
write_metrics(Path(snakemake.output.metrics), rows)
write_tsv(
    Path(snakemake.output.table3),
    table3_comparison(rows, split=EXTERNAL_SPLIT),
    TABLE3_COMPARISON_COLUMNS,
)
