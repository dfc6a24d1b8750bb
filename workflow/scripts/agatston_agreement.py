"""Rule agatston_agreement: ICC, linear kappa and Bland-Altman of each method against truth."""

import logging
from pathlib import Path

from cacflow.runlog import start_rule_log
from cacflow.scoring.agreement import AGREEMENT_COLUMNS, agreement_rows
from cacflow.tables import read_tsv, write_tsv

start_rule_log(snakemake.log[0], snakemake.rule)
rows = agreement_rows(read_tsv(Path(snakemake.input.scores)))
write_tsv(Path(snakemake.output[0]), rows, AGREEMENT_COLUMNS)
for row in rows:
    logging.getLogger("agreement").info("%s", row)
