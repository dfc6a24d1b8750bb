"""Rule evaluation_figures: ROC curves (test images) and confusion matrices of every model."""

from pathlib import Path

import numpy as np

from cacflow.eval_figures import confusions_from_rows, plot_confusion_matrices, plot_roc_curves
from cacflow.runlog import start_rule_log
from cacflow.tables import read_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
curves = {}
for path in snakemake.input.predictions:
    test = [r for r in read_tsv(Path(path)) if r["split"] == "test"]
    if not test:
        continue
    labels = np.array([r["label"] == "calcium" for r in test], dtype=int)
    probabilities = np.array([float(r["probability"]) for r in test])
    curves.setdefault(test[0]["dataset"], {})[test[0]["model"]] = (labels, probabilities)
plot_roc_curves(curves, Path(snakemake.output.roc))
metrics = read_tsv(Path(snakemake.input.metrics))
plot_confusion_matrices(confusions_from_rows(metrics), Path(snakemake.output.confusion))
