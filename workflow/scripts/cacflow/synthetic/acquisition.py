"""How one synthetic series is scanned: its acquisition settings, drawn per patient as in
../shared/reference.md (0.5-0.8 mm pixels at 512 px, 2.5-3 mm slices, 40-56 slices from
above the aortic root to below the apex), and the pixel grid they make."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cacflow.synthetic.anatomy import Anatomy


@dataclass(frozen=True)
class Acquisition:
    """How one synthetic series is sampled and reconstructed."""

    size: int
    pixel_spacing_mm: float
    slice_thickness_mm: float
    n_slices: int
    z_top_mm: float  # centre of the first (most superior) slice
    origin_x_mm: float  # centre of the first column
    origin_y_mm: float  # centre of the first row
    noise_sd_hu: float
    noise_model: str = "gaussian"
    psf_fwhm_mm: float = 1.1
    planes_per_slice: int = 3
    kvp: float = 120.0

    def slice_z_mm(self) -> np.ndarray:
        return self.z_top_mm - self.slice_thickness_mm * np.arange(self.n_slices)


class Grid:
    """Pixel-centre coordinates of one image, as broadcastable row and column vectors."""

    def __init__(self, acq: Acquisition):
        self.size = acq.size
        self.spacing = acq.pixel_spacing_mm
        self.x0 = acq.origin_x_mm
        self.y0 = acq.origin_y_mm
        self.x = (self.x0 + self.spacing * np.arange(acq.size)).astype(np.float32)[None, :]
        self.y = (self.y0 + self.spacing * np.arange(acq.size)).astype(np.float32)[:, None]

    def window(self, x_lo: float, x_hi: float, y_lo: float, y_hi: float):
        """Index slices and coordinates of the pixels whose centres lie in a box."""
        j0 = max(int(np.floor((x_lo - self.x0) / self.spacing)), 0)
        j1 = min(int(np.ceil((x_hi - self.x0) / self.spacing)) + 1, self.size)
        i0 = max(int(np.floor((y_lo - self.y0) / self.spacing)), 0)
        i1 = min(int(np.ceil((y_hi - self.y0) / self.spacing)) + 1, self.size)
        if j0 >= j1 or i0 >= i1:
            return None
        return (slice(i0, i1), slice(j0, j1)), self.x[:, j0:j1], self.y[i0:i1, :]


def sample_acquisition(
    anatomy: Anatomy,
    rng: np.random.Generator,
    size: int,
    pixel_spacing_range_mm: tuple[float, float],
    slice_thickness_choices_mm: tuple[float, ...],
    noise_sd_hu: float,
    noise_model: str = "gaussian",
    min_slices: int = 40,
    max_slices: int = 56,
) -> Acquisition:
    """Scan range over the heart, field of view and noise of one series."""
    spacing_512 = rng.uniform(*pixel_spacing_range_mm)
    spacing = spacing_512 * 512.0 / size  # a smaller matrix keeps the field of view
    thickness = float(rng.choice(np.asarray(slice_thickness_choices_mm, dtype=float)))
    half = anatomy.pericardium.half_extent()
    heart_bottom = anatomy.pericardium.center[2] - half[2]
    z_top = anatomy.aortic_valve[2] + rng.uniform(28, 45)
    z_bottom = heart_bottom - rng.uniform(5, 18)
    n_slices = int(np.clip(round((z_top - z_bottom) / thickness) + 1, min_slices, max_slices))
    # Field of view centred between the body centre and the heart, as for a cardiac scan:
    # across, between the midline and the heart; front to back, 15-45 mm in front of the
    # middle of the body (the heart lies in its front half).
    lateral, anterior, posterior = anatomy.body_semi_axes
    centre_x = rng.uniform(0.2, 0.6) * anatomy.pericardium.center[0] + rng.uniform(-8, 8)
    body_middle_y = anatomy.body_center_y + 0.5 * (posterior - anterior)
    centre_y = body_middle_y + rng.uniform(-45, -15)
    # Larger patients are noisier: noise ~ exp(mu d / 2) for a water path d.
    diameter = 2.0 * np.sqrt(lateral * 0.5 * (anterior + posterior))
    noise = (
        noise_sd_hu
        * rng.uniform(0.85, 1.15)
        * float(np.clip(np.exp(0.0095 * (diameter - 300.0)), 0.6, 1.6))
    )
    origin = -(size - 1) / 2.0 * spacing
    # Values as a scanner writes them (DICOM decimal strings), so files and truth agree.
    return Acquisition(
        size=size,
        pixel_spacing_mm=round(float(spacing), 6),
        slice_thickness_mm=thickness,
        n_slices=n_slices,
        z_top_mm=round(float(z_top), 2),
        origin_x_mm=round(float(centre_x + origin), 2),
        origin_y_mm=round(float(centre_y + origin), 2),
        noise_sd_hu=float(noise),
        noise_model=noise_model,
        planes_per_slice=3 if size >= 256 else 2,
    )
