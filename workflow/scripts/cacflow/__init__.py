"""cacflow: coronary artery calcium on CT, from DICOM to a report (Lee et al. 2021, done properly)."""

__version__ = "0.1.0"


def settings_from_config(cls, section, strict: bool = False):
    """A frozen settings dataclass from a config section: lists become tuples; keys the class
    does not know are ignored (other settings of the section), or refused when `strict`."""
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(section) - known)
    if strict and unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if k in known}
    return cls(**values)
