"""Rule external_pointing: the share of each network's heat-map heat within 5 mm of a true
lesion, over its true-positive calcium images of the external cohort: the map of the layer
evaluation.gradcam_min_cells chooses (weighed as evaluation.gradcam_method says) and its
Guided Grad-CAM, each beside the same map of the network randomised above that layer
(cacflow.learning.pointing.checked_pointing)."""

from pathlib import Path

import keras

from cacflow.learning.gradcam import gradcam_layer_name, map_cells
from cacflow.learning.model_file import read_preprocessing
from cacflow.learning.pointing import (
    POINTING_COLUMNS,
    POINTING_RADIUS_MM,
    checked_pointing,
    pointing_row,
    true_positive_tiles,
)
from cacflow.runlog import start_rule_log
from cacflow.tables import read_tsv, write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
keras.utils.set_random_seed(snakemake.params.seed)  # the randomised networks' weights
rows = []
for model_path, predictions_path in zip(
    snakemake.input.models, snakemake.input.predictions, strict=True
):
    prep = read_preprocessing(Path(model_path))
    root = Path(snakemake.input.manifests[0]).parents[1] / prep["dataset"]
    model = keras.saving.load_model(model_path)
    layer = gradcam_layer_name(model, snakemake.params.min_cells)
    images, lesions, pixel_mm = true_positive_tiles(
        read_tsv(Path(predictions_path)),
        read_tsv(root / "manifest.tsv"),
        root,
        prep["image_size"],
        prep["channels"],
        threshold=snakemake.params.threshold,
        resize=prep["resize"],
    )
    cells = map_cells(model, layer)
    checked = checked_pointing(
        model, images, lesions, pixel_mm, layer, snakemake.params.method, POINTING_RADIUS_MM
    )
    for method, trained, randomised in checked:
        row = pointing_row(
            prep["dataset"], prep["model"], layer, cells, trained, POINTING_RADIUS_MM,
            method=method, randomised=randomised,
        )  # fmt: skip
        rows.append(row)
write_tsv(Path(snakemake.output[0]), rows, POINTING_COLUMNS)
