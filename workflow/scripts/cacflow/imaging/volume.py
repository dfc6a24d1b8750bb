"""The HU volume of an accepted series as the stages after ingest take it.

Here rather than in `cacflow.dicom.ingest`, which makes it (`volume_of`): the datasets and
scoring take a whole `Volume`, and the training and report environments that import the
datasets have no pydicom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STANDARD_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class Volume:
    """An accepted series, slices superior to inferior (`cacflow.dicom.ingest.volume_of`)."""

    hu: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    slice_spacing_mm: float
    slice_thickness_mm: float
    instance_numbers: np.ndarray
    positions_mm: np.ndarray
    # ImageOrientationPatient: row and column directions in the patient's axes (LPS).
    orientation: tuple[float, ...] = STANDARD_AXIAL
