"""Rule external_predict: one trained network's P(calcium) for every image of its dataset in
the external cohort (cacflow.learning.external.predict_cohort)."""

from pathlib import Path

from cacflow.learning.external import predict_cohort
from cacflow.reporting.evaluation import PREDICTION_COLUMNS
from cacflow.runlog import start_rule_log
from cacflow.tables import write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
rows = predict_cohort(
    Path(snakemake.input.model),
    Path(snakemake.input.manifest).parent,
    snakemake.params.datasets,
    batch_size=snakemake.params.batch_size,
)
write_tsv(Path(snakemake.output[0]), rows, PREDICTION_COLUMNS)
