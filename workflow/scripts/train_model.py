"""Rule train_model: one network trained on one dataset (cacflow.learning.training)."""

from pathlib import Path

from cacflow.learning.augment import AugmentSettings
from cacflow.learning.inputs import PipelineSettings
from cacflow.learning.training import TrainPaths, TrainSettings, train_classifier, write_summary
from cacflow.runlog import start_rule_log

start_rule_log(snakemake.log[0], snakemake.rule)
out_dir = Path(snakemake.output.model).parent
row = train_classifier(
    snakemake.wildcards.dataset,
    snakemake.wildcards.model,
    TrainPaths(
        dataset_root=Path(snakemake.input.manifest).parent,
        splits=Path(snakemake.input.splits),
        augmented_root=Path(snakemake.input.augmented).parent,
        out_dir=out_dir,
        predictions=Path(snakemake.output.predictions),
    ),
    TrainSettings.from_config(snakemake.params.training, snakemake.wildcards.model),
    PipelineSettings.from_config(snakemake.params.input_pipeline),
    AugmentSettings.from_config(snakemake.params.augmentation),
    snakemake.params.datasets,
    snakemake.params.seed,
    threads=snakemake.threads,
)
write_summary(Path(snakemake.output.summary), row)
