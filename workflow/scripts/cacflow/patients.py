"""Patient IDs and the user's slice label table. Standard library only: the Snakefile imports
this module to plan jobs, before any rule environment exists."""

from __future__ import annotations

import csv
import hashlib
import hmac
from pathlib import Path

# Columns every slice label table has (more are kept and ignored).
LABEL_COLUMNS = ("patient_id", "instance_number", "calcium")


def synthetic_patient_ids(n_patients: int) -> list[str]:
    return [f"SYN{i:04d}" for i in range(1, n_patients + 1)]


def synthetic_patient_index(patient_id: str) -> int:
    if not (patient_id.startswith("SYN") and patient_id[3:].isdigit()):
        raise ValueError(f"not a synthetic patient id: {patient_id!r} (expected SYN0001 ...)")
    return int(patient_id[3:])


def pseudonym(folder_name: str, key: str) -> str:
    """A stable pseudonymous ID for a patient folder: P + 12 hex of HMAC-SHA256(key, name).

    With a secret key, the ID cannot be traced back to the folder name (often an MRN) by
    anyone without the key; the same key gives the same IDs on every run.
    """
    if not key:
        raise ValueError("pseudonymize needs a non-empty pseudonym key")
    digest = hmac.new(key.encode(), folder_name.encode(), hashlib.sha256).hexdigest()
    return f"P{digest[:12].upper()}"


def _label_table(path: Path) -> tuple[list[str], list[dict]]:
    path = Path(path)
    with open(path, newline="") as handle:
        delimiter = "," if path.suffix.lower() == ".csv" else "\t"
        reader = csv.DictReader(handle, delimiter=delimiter)
        return list(reader.fieldnames or ()), list(reader)


def read_label_table(path: Path) -> list[dict]:
    """The user's slice label table: TSV, or CSV when the name ends in .csv."""
    return _label_table(path)[1]


def label_rows_by_patient(path: Path) -> dict[str, list[dict]]:
    """{patient ID in the table: its rows, without the ID}; ValueError naming the file when
    a column of LABEL_COLUMNS is missing."""
    columns, rows = _label_table(path)
    missing = sorted(set(LABEL_COLUMNS) - set(columns))
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    by_patient = {}
    for row in rows:
        by_patient.setdefault(str(row.pop("patient_id")), []).append(row)
    return by_patient
