"""Rule synth_patient: write one synthetic patient (DICOM series, truth, labels, summary)."""

from pathlib import Path

from cacflow.runlog import start_rule_log
from cacflow.synthetic.synth import SynthSettings, synth_patient

# Header (host, SLURM job), tracebacks and log records go to the rule's log.
start_rule_log(snakemake.log[0], snakemake.rule)

settings = SynthSettings.from_config(dict(snakemake.params.synth))
synth_patient(Path(snakemake.params.out_dir), snakemake.wildcards.patient, settings)
