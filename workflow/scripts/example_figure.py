"""Rule example_figure: one calcium slice per patient as the three datasets (report figure)."""

import logging
from pathlib import Path

from cacflow.reporting.example_figures import draw_examples
from cacflow.runlog import start_rule_log

start_rule_log(snakemake.log[0], snakemake.rule)
manifests = dict(zip(snakemake.params.datasets, map(Path, snakemake.input.manifests), strict=True))
shown = draw_examples(
    manifests,
    Path(snakemake.output[0]),
    n_patients=snakemake.params.patients,
    dpi=snakemake.params.dpi,
)
logging.getLogger("example_figure").info("examples: %s", shown)
