"""Rule training_curves: loss and accuracy per epoch of one training job."""

from pathlib import Path

from cacflow.reporting.eval_figures import plot_training_curves
from cacflow.runlog import start_rule_log

start_rule_log(snakemake.log[0], snakemake.rule)
plot_training_curves(
    Path(snakemake.input.history),
    Path(snakemake.output[0]),
    title=f"{snakemake.wildcards.model} on {snakemake.wildcards.dataset}",
)
