import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")


wildcard_constraints:
    patient="[A-Za-z0-9_.-]+",


# Settings of the synthetic cohort that change no single patient: changing them must not
# rerun the patients already written.
COHORT_ONLY_KEYS = ("patients",)


def lib(*names):
    """Library modules a rule's script imports, as inputs: Snakemake does not follow imports,
    so an edit of the library reruns the rules that use it. Paths are relative to the working
    directory, which need not be the repository (snakemake --directory)."""
    package = Path(workflow.basedir, "workflow", "scripts", "cacflow")
    return [os.path.relpath(package / f"{name}.py") for name in names]


def synthetic_patient_ids(n):
    """Same IDs as cacflow.synth.patient_ids(n), which the Snakefile cannot import."""
    return [f"SYN{i:04d}" for i in range(1, n + 1)]


def patient_ids():
    if config["dicom_dir"]:
        raise WorkflowError(
            "dicom_dir: running on own DICOM data is not implemented yet; "
            'set dicom_dir: "" to use the synthetic cohort.'
        )
    return synthetic_patient_ids(config["synthetic"]["patients"])


def synth_settings():
    """The synthetic settings that shape a single patient."""
    return {k: v for k, v in config["synthetic"].items() if k not in COHORT_ONLY_KEYS}
