"""The start of a rule's log: where the job ran, and Python logging and stderr sent to the log.

A rule script begins with ``start_rule_log(snakemake.log[0], snakemake.rule)``. The log file then
opens with one header line naming the rule and the host and, when the job runs under SLURM, the
job id and partition as SLURM sets them inside the job (``SLURM_JOB_ID``,
``SLURM_JOB_PARTITION``). On a cluster this says which SLURM job wrote an output, so its
``scontrol``/``sacct`` record and the SLURM log can be found; the tests use it to check that jobs
really ran under SLURM, in the partition the profile asked for.

The header is ``key=value`` words after a fixed prefix, e.g.::

    cacflow-job: rule=synth_patient host=node17 slurm_job_id=4211 slurm_partition=gpu

and ``read_header`` turns it back into a dict. Values hold no spaces (spaces are replaced).
"""

import logging
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

HEADER_PREFIX = "cacflow-job:"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Header key -> environment variable that SLURM sets inside a job (batch script and job steps).
SLURM_FIELDS = {
    "slurm_job_id": "SLURM_JOB_ID",
    "slurm_partition": "SLURM_JOB_PARTITION",
    "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
    "slurm_array_task_id": "SLURM_ARRAY_TASK_ID",
}


def job_fields(
    rule: str, environ: Mapping[str, str] | None = None, host: str | None = None
) -> dict[str, str]:
    """What the header records: the rule, the host and the SLURM variables that are set."""
    environ = os.environ if environ is None else environ
    fields = {"rule": rule, "host": host or socket.gethostname()}
    for key, variable in SLURM_FIELDS.items():
        if environ.get(variable):
            fields[key] = environ[variable]
    return fields


def format_header(fields: Mapping[str, str]) -> str:
    """One line, ``cacflow-job: key=value ...``, without the newline."""
    words = (f"{key}={str(value).replace(' ', '_') or '-'}" for key, value in fields.items())
    return " ".join([HEADER_PREFIX, *words])


def read_header(log_path: Path | str) -> dict[str, str]:
    """The fields of the header line of a rule log; {} when the log does not start with one."""
    with open(log_path) as log:
        first = log.readline().strip()
    if not first.startswith(HEADER_PREFIX + " "):
        return {}
    words = first[len(HEADER_PREFIX) :].split()
    return dict(word.split("=", 1) for word in words)


def start_rule_log(log_path: Path | str, rule: str, level: int = logging.INFO) -> TextIO:
    """Open (truncate) a rule's log, write the header, and send stderr and logging there.

    Tracebacks of the script and every log record then land in the log for the life of the
    script. Returns the open log stream (line-buffered, so a killed job leaves complete lines).
    """
    stream = open(log_path, "w", buffering=1)  # noqa: SIM115 - open for the life of the script
    stream.write(format_header(job_fields(rule)) + "\n")
    sys.stderr = stream
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=stream, force=True)
    return stream
