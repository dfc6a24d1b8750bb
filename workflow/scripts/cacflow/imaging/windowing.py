"""The CT display window: HU mapped linearly onto 8-bit grey (window centre and width)."""

from __future__ import annotations

import numpy as np


def window_to_uint8(hu: np.ndarray, center_hu: float, width_hu: float) -> np.ndarray:
    """Map [center - width/2, center + width/2] linearly onto 0..255, clipped and rounded."""
    hu = np.asarray(hu)
    if hu.dtype == np.int16:
        # One table look-up per pixel instead of float arithmetic: int16 -> offset binary.
        table = _window(np.arange(-32768, 32768), center_hu, width_hu)
        return table[hu.view(np.uint16) ^ np.uint16(0x8000)]
    return _window(hu, center_hu, width_hu)


def _window(hu: np.ndarray, center_hu: float, width_hu: float) -> np.ndarray:
    low = center_hu - width_hu / 2.0
    grey = (hu.astype(np.float64) - low) * 255.0 / width_hu
    return np.rint(np.clip(grey, 0.0, 255.0)).astype(np.uint8)
