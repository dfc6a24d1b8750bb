"""Rules evaluation_figures and external_figures: ROC curves and confusion matrices of every
model on the images of one split (the test split; the external cohort)."""

from pathlib import Path

import numpy as np

from cacflow.reporting.eval_figures import (
    confusions_from_rows,
    plot_confusion_matrices,
    plot_roc_curves,
)
from cacflow.runlog import start_rule_log
from cacflow.tables import read_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
split = snakemake.params.split
curves = {}
for path in snakemake.input.predictions:
    rows = [r for r in read_tsv(Path(path)) if r["split"] == split]
    if not rows:
        continue
    labels = np.array([r["label"] == "calcium" for r in rows], dtype=int)
    probabilities = np.array([float(r["probability"]) for r in rows])
    curves.setdefault(rows[0]["dataset"], {})[rows[0]["model"]] = (labels, probabilities)
plot_roc_curves(curves, Path(snakemake.output.roc))
metrics = read_tsv(Path(snakemake.input.metrics))
plot_confusion_matrices(confusions_from_rows(metrics, split), Path(snakemake.output.confusion))
