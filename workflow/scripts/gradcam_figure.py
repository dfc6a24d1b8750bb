"""Rule gradcam_figure: Grad-CAM maps of sample test images (TP, FP, FN, TN) of every model
trained on one dataset; one row of images per model, in the order of training.models."""

from pathlib import Path

import keras
import numpy as np

from cacflow.learning.gradcam import gradcam_layer_name, test_examples
from cacflow.learning.model_file import read_preprocessing
from cacflow.reporting.eval_figures import plot_gradcam_grid
from cacflow.runlog import start_rule_log
from cacflow.tables import read_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
per_kind = snakemake.params.per_kind
parts = []
for model_path, predictions in zip(
    snakemake.input.models, snakemake.input.predictions, strict=True
):
    preprocessing = read_preprocessing(Path(model_path))
    model = keras.saving.load_model(model_path)
    parts.append(
        test_examples(
            model,
            read_tsv(Path(predictions)),
            Path(snakemake.input.manifest).parent,
            preprocessing["image_size"],
            preprocessing["channels"],
            per_kind=per_kind,
            seed=snakemake.params.seed,
            layer_name=gradcam_layer_name(model, snakemake.params.min_cells),
            method=snakemake.params.method,
            resize=preprocessing["resize"],
        )
    )
images, maps, labels, probabilities = (np.concatenate(arrays) for arrays in zip(*parts))
plot_gradcam_grid(
    images, maps, labels, probabilities, Path(snakemake.output[0]), columns=4 * per_kind
)
