"""Rule library_stamp: SHA-256 of each library module of a set, one line per module.

Written again (and so rerunning the rules that take it as input) whenever one of the modules
changes; the rules' own inputs then stay one file however many modules they import."""

import hashlib
from pathlib import Path

lines = [
    f"{hashlib.sha256(Path(path).read_bytes()).hexdigest()}  {Path(path).name}"
    for path in snakemake.input
]
tmp = Path(snakemake.output[0] + ".tmp")
tmp.write_text("\n".join(lines) + "\n")
tmp.replace(snakemake.output[0])
Path(snakemake.log[0]).write_text(f"{len(lines)} modules stamped\n")
