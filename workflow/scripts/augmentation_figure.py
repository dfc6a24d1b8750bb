"""Rule augmentation_figure: training images beside augmented copies, per dataset and class."""

from pathlib import Path

from cacflow.reporting.augment_figure import draw_augmentation_figure
from cacflow.runlog import start_rule_log
from cacflow.tables import read_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
datasets = {}
for name, manifest, augmented in zip(
    snakemake.params.datasets, snakemake.input.manifests, snakemake.input.augmented, strict=True
):
    datasets[name] = (Path(manifest).parent, Path(augmented).parent, read_tsv(Path(augmented)))
draw_augmentation_figure(datasets, Path(snakemake.output[0]))
