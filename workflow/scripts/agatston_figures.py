"""Rule agatston_figures: predicted against true scores, and Bland-Altman, per method."""

from pathlib import Path

from cacflow.reporting.agatston_figures import draw_bland_altman, draw_scatter, scores_by_method
from cacflow.runlog import start_rule_log
from cacflow.tables import read_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
scores = scores_by_method(read_tsv(Path(snakemake.input.scores)))
draw_scatter(scores, Path(snakemake.output.scatter))
draw_bland_altman(scores, Path(snakemake.output.bland_altman))
