"""Rule synth_patient: write one synthetic patient (DICOM series, truth, labels, summary)."""

import logging
import sys
from pathlib import Path

from cacflow.synth import SynthSettings, synth_patient

# Tracebacks and log records go to the rule's log for the life of the script.
sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

settings = SynthSettings.from_config(dict(snakemake.params.synth))
synth_patient(Path(snakemake.params.out_dir), snakemake.wildcards.patient, settings)
