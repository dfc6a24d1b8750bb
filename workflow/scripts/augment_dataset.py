"""Rule augment_dataset: augmented copies of one dataset's training images, with a manifest."""

import logging
from collections import Counter
from pathlib import Path

from cacflow.learning.augment import AugmentSettings, augment_dataset
from cacflow.learning.splits import read_splits
from cacflow.runlog import start_rule_log
from cacflow.tables import read_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
manifest = Path(snakemake.input.manifest)
rows = augment_dataset(
    read_tsv(manifest),
    manifest.parent,
    read_splits(read_tsv(Path(snakemake.input.splits))),
    Path(snakemake.output.manifest).parent,
    AugmentSettings.from_config(snakemake.params.augmentation),
    snakemake.params.seed,
)
labels = Counter(r["label"] for r in rows)
logging.getLogger("augment").info(
    "%s: %d augmented images %s", snakemake.wildcards.dataset, len(rows), dict(labels)
)
