"""Rule external_pointing: the share of each network's heat-map heat (of the layer
evaluation.gradcam_min_cells chooses, weighed as evaluation.gradcam_method says) within 5 mm
of a true lesion, over its true-positive calcium images of the external cohort
(cacflow.learning.gradcam.pointing_game)."""

from pathlib import Path

import keras

from cacflow.learning.gradcam import (
    POINTING_COLUMNS,
    POINTING_RADIUS_MM,
    gradcam_layer_name,
    map_cells,
    pointing_game,
    pointing_row,
)
from cacflow.learning.model_file import read_preprocessing
from cacflow.runlog import start_rule_log
from cacflow.tables import read_tsv, write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
rows = []
for model_path, predictions_path in zip(
    snakemake.input.models, snakemake.input.predictions, strict=True
):
    prep = read_preprocessing(Path(model_path))
    root = Path(snakemake.input.manifests[0]).parents[1] / prep["dataset"]
    model = keras.saving.load_model(model_path)
    layer = gradcam_layer_name(model, snakemake.params.min_cells)
    pointing = pointing_game(
        model,
        read_tsv(Path(predictions_path)),
        read_tsv(root / "manifest.tsv"),
        root,
        prep["image_size"],
        prep["channels"],
        threshold=snakemake.params.threshold,
        layer_name=layer,
        method=snakemake.params.method,
        resize=prep["resize"],
    )
    cells = map_cells(model, layer)
    row = pointing_row(
        prep["dataset"], prep["model"], layer, cells, pointing, POINTING_RADIUS_MM,
        method=snakemake.params.method,
    )  # fmt: skip
    rows.append(row)
write_tsv(Path(snakemake.output[0]), rows, POINTING_COLUMNS)
