"""Rule report: results/report/index.html, one self-contained page."""

from pathlib import Path

from cacflow.reporting.report import TABLE_KEYS, demo_preset, write_report
from cacflow.runlog import start_rule_log

start_rule_log(snakemake.log[0], snakemake.rule)
settings = snakemake.params.settings
tables = {key: snakemake.input.get(key) for key in TABLE_KEYS}
write_report(
    Path(snakemake.output[0]),
    tables={key: Path(path) if path else None for key, path in tables.items()},
    figures=[(title, Path(path), caption) for title, path, caption in snakemake.params.figures],
    config=settings,
    synthetic=snakemake.params.synthetic,
    demo=demo_preset(settings["training"]),
    configfiles=snakemake.params.configfiles,
)
