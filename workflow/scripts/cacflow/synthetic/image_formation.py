"""CT image formation of the synthetic series: each slice from the phantom, with its truth.

In this order:
1. each slice is the mean of the phantom sampled on `planes_per_slice` planes across the
   slice thickness (partial volume through the slice); small calcifications are sampled
   on 3x3 sub-pixels and 7 planes, so their partial volume is right at any pixel size;
2. a Gaussian point-spread function in-plane (FWHM `psf_fwhm_mm`);
3. noise: white Gaussian noise shaped by the same kernel (CT noise is band-limited by
   the reconstruction kernel), scaled to `noise_sd_hu` and growing with body size; or,
   with `noise_model="radon"`, Poisson-like noise added to a parallel-beam sinogram
   (scikit-image radon) and reconstructed by filtered back-projection (iradon);
4. rounding to integers and clipping to the 12-bit range [-1024, 3071] HU.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cacflow.synthetic.acquisition import Acquisition, Grid
from cacflow.synthetic.anatomy import Anatomy
from cacflow.synthetic.phantom import (
    AIR,
    SOFT_TISSUE,
    StaticMaps,
    calcification_occupancy,
    render_plane,
    static_maps,
)

LESION_LABEL_MIN_HU = 20.0  # a pixel belongs to a lesion where it raises the image this much


@dataclass
class SliceTruth:
    hu: np.ndarray  # float32 after PSF and noise, before rounding
    heart_mask: np.ndarray
    lesion_labels: np.ndarray  # int32, 0 = none
    noncoronary_calcium: np.ndarray


def render_slice(
    anatomy: Anatomy,
    acq: Acquisition,
    grid: Grid,
    z_center: float,
    static: StaticMaps,
    kernel_sd: float,
    rng: np.random.Generator,
) -> SliceTruth:
    """One reconstructed slice with its truth maps."""
    n = acq.planes_per_slice
    offsets = acq.slice_thickness_mm * ((np.arange(n) + 0.5) / n - 0.5)
    image = np.zeros((acq.size, acq.size), dtype=np.float32)
    heart_votes = np.zeros((acq.size, acq.size), dtype=np.float32)
    for dz in offsets:
        sample = render_plane(anatomy, grid, z_center + dz, static)
        image += sample.hu
        heart_votes += sample.heart_mask
    image /= n
    heart_mask = heart_votes >= n / 2.0

    sigma_px = acq.psf_fwhm_mm / 2.3548 / acq.pixel_spacing_mm
    lesion_labels = np.zeros(image.shape, dtype=np.int32)
    lesion_contribution = np.zeros(image.shape, dtype=np.float32)
    noncoronary = np.zeros(image.shape, dtype=bool)
    for lesion_id, calc in enumerate(anatomy.calcifications, start=1):
        hit = calcification_occupancy(grid, calc.shape, z_center, acq.slice_thickness_mm)
        if hit is None:
            continue
        index, occupancy = hit
        region = image[index]
        region += occupancy * (calc.density_hu - region)
        # Where the blurred calcium raises the image by >= 20 HU, the pixel is the lesion's.
        c_index, contribution = blurred_patch(
            index, occupancy * (calc.density_hu - SOFT_TISSUE), sigma_px, image.shape
        )
        inside = contribution >= LESION_LABEL_MIN_HU
        if calc.kind == "coronary":
            stronger = inside & (contribution > lesion_contribution[c_index])
            lesion_labels[c_index][stronger] = lesion_id
            lesion_contribution[c_index][stronger] = contribution[stronger]
        else:
            noncoronary[c_index] |= inside

    image = _reconstruct(image, acq, sigma_px, kernel_sd, rng)
    image[~static.scan_circle] = AIR
    return SliceTruth(image, heart_mask, lesion_labels, noncoronary)


def blurred_patch(index, patch: np.ndarray, sigma_px: float, shape):
    """Blur a patch with the PSF, letting it spread past its window; (window, patch) clipped
    to the image."""
    pad = int(np.ceil(3 * sigma_px)) + 1
    blurred = np.pad(patch, pad)
    if sigma_px > 0.05:
        blurred = ndimage.gaussian_filter(blurred, sigma_px, mode="constant")
    rows, cols = index
    r0, c0 = rows.start - pad, cols.start - pad
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1 = min(r0 + blurred.shape[0], shape[0])
    cc1 = min(c0 + blurred.shape[1], shape[1])
    return (slice(rr0, rr1), slice(cc0, cc1)), blurred[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0]


def kernel_noise_sd(sigma_px: float) -> float:
    """How much the PSF kernel shrinks the SD of white noise."""
    if sigma_px <= 0.05:
        return 1.0
    delta = np.zeros((33, 33), dtype=np.float64)
    delta[16, 16] = 1.0
    kernel = ndimage.gaussian_filter(delta, sigma_px, mode="constant")
    return float(np.sqrt(np.sum(kernel**2)))


def _reconstruct(
    image: np.ndarray, acq: Acquisition, sigma_px: float, kernel_sd: float, rng: np.random.Generator
) -> np.ndarray:
    if acq.noise_model == "radon":
        return _radon_reconstruct(image, acq, sigma_px, rng)
    # Blur and noise in one filter: noise is band-limited by the same kernel as the PSF.
    white = rng.standard_normal(image.shape, dtype=np.float32)
    image += white * np.float32(acq.noise_sd_hu / kernel_sd)
    if sigma_px > 0.05:
        image = ndimage.gaussian_filter(image, sigma_px, mode="nearest")
    return image


@functools.lru_cache(maxsize=8)
def _fbp_unit_noise_sd(size: int, n_angles: int) -> float:
    """SD at the centre of an FBP image of unit white sinogram noise (fixed seed)."""
    from skimage.transform import iradon

    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    reference = np.random.default_rng(0).standard_normal((size, n_angles))  # circle=True
    unit = iradon(reference, theta=theta, circle=True, filter_name="shepp-logan")
    return float(np.std(unit[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4]))


def _radon_reconstruct(
    image: np.ndarray, acq: Acquisition, sigma_px: float, rng: np.random.Generator
) -> np.ndarray:
    """Parallel-beam projection, quantum noise on the line integrals, filtered back-projection.

    Attenuation is taken proportional to HU + 1000 (water = 0.019 / mm at 120 kVp).
    The photon count is set so that noise at the centre of a 300 mm water-equivalent
    path is about `noise_sd_hu`; thicker paths get noisier, which gives the streaks
    and the centre-to-edge noise pattern of real CT.
    """
    from skimage.transform import iradon, radon

    size = image.shape[0]
    if sigma_px > 0.05:
        image = ndimage.gaussian_filter(image, sigma_px, mode="nearest")
    mu_water_per_px = 0.019 * acq.pixel_spacing_mm
    mu = np.clip(image + 1000.0, 0, None) * (mu_water_per_px / 1000.0)
    n_angles = max(180, int(size * 1.2))
    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    sinogram = radon(mu, theta=theta, circle=True)
    # Quantum noise: var(line integral) = 1 / N0 exp(-p); N0 chosen from a reference
    # reconstruction of unit noise, so the scale is measured, not guessed.
    unit_sd_hu = _fbp_unit_noise_sd(size, n_angles) * 1000.0 / mu_water_per_px
    path_ref = 300.0 / acq.pixel_spacing_mm * mu_water_per_px
    sd_centre = acq.noise_sd_hu / unit_sd_hu  # SD of line-integral noise at the reference path
    sd = sd_centre * np.exp(0.5 * (sinogram - path_ref))
    noisy = sinogram + rng.standard_normal(sinogram.shape) * sd
    recon = iradon(noisy, theta=theta, circle=True, filter_name="shepp-logan")
    recon_hu = recon * (1000.0 / mu_water_per_px) - 1000.0
    yy, xx = np.mgrid[:size, :size]
    outside = (yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2 > (size / 2) ** 2
    recon_hu[outside] = AIR
    return recon_hu.astype(np.float32)


@dataclass
class Volume:
    hu: np.ndarray  # int16, slice x row x col, superior -> inferior
    heart_mask: np.ndarray
    lesion_labels: np.ndarray  # int16, 0 = none
    lesion_artery: np.ndarray  # str, index = lesion id (index 0 is "")
    lesion_kind: np.ndarray  # str, index = lesion id
    noncoronary_calcium: np.ndarray
    slice_z_mm: np.ndarray


def render_volume(anatomy: Anatomy, acq: Acquisition, slice_rng, slices=None) -> Volume:
    """The slices of the series (all, or the indices in `slices`) with their truth maps.

    `slice_rng(k)` gives the random generator of slice k, so a slice renders the same
    whether alone or in the whole series.
    """
    grid = Grid(acq)
    static = static_maps(anatomy, grid)
    sigma_px = acq.psf_fwhm_mm / 2.3548 / acq.pixel_spacing_mm
    kernel_sd = kernel_noise_sd(sigma_px)
    indices = np.arange(acq.n_slices) if slices is None else np.asarray(list(slices), dtype=int)
    z_values = acq.slice_z_mm()[indices]
    shape = (len(indices), acq.size, acq.size)
    hu = np.empty(shape, dtype=np.int16)
    heart = np.empty(shape, dtype=bool)
    labels = np.empty(shape, dtype=np.int16)
    noncoronary = np.empty(shape, dtype=bool)
    for n, (k, z) in enumerate(zip(indices, z_values, strict=True)):
        truth = render_slice(anatomy, acq, grid, float(z), static, kernel_sd, slice_rng(int(k)))
        hu[n] = np.clip(np.rint(truth.hu), -1024, 3071).astype(np.int16)
        heart[n] = truth.heart_mask
        labels[n] = truth.lesion_labels
        noncoronary[n] = truth.noncoronary_calcium
    artery = np.array([""] + [c.artery for c in anatomy.calcifications], dtype="<U3")
    kind = np.array([""] + [c.kind for c in anatomy.calcifications], dtype="<U16")
    return Volume(hu, heart, labels, artery, kind, noncoronary, z_values)
