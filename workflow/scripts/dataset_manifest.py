"""Rule dataset_manifest: one manifest per dataset, the accepted patients' rows in order."""

from pathlib import Path

from cacflow.imaging.datasets import merge_manifests
from cacflow.runlog import start_rule_log

start_rule_log(snakemake.log[0], snakemake.rule)
paths = [Path(p) for p in snakemake.input if str(p).endswith(".tsv")]
merge_manifests(paths, Path(snakemake.output[0]))
