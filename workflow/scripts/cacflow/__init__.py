"""cacflow: coronary artery calcium on CT, from DICOM to a report (Lee et al. 2021, done properly)."""

__version__ = "0.1.0"
