"""DICOM in and out: reading a study with its checks and PHI guard, writing CT series."""
