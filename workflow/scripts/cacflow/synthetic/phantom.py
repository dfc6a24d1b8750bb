"""A synthetic non-contrast, ECG-gated calcium-scoring CT of the chest at heart level.

The phantom is built in patient coordinates (DICOM LPS, millimetres: x towards the
patient's left, y posterior, z superior) from simple solids: elliptic cylinders for the
body wall, ellipsoids for the heart, left atrium, liver dome and lesions, and capsules
(3-D segments with a radius) for vessels, airways, ribs and the coronary arteries.
Anatomy and tissue values follow ../shared/reference.md (HU of air, lung, fat, soft
tissue, blood, bone; 120 kVp; 2.5-3 mm slices, 0.5-0.8 mm pixels, 40-56 slices from
above the aortic root to below the apex).

Image formation, in this order:
1. each slice is the mean of the phantom sampled on `planes_per_slice` planes across the
   slice thickness (partial volume through the slice); small calcifications are sampled
   on 3x3 sub-pixels and 7 planes, so their partial volume is right at any pixel size;
2. a Gaussian point-spread function in-plane (FWHM `psf_fwhm_mm`);
3. noise: white Gaussian noise shaped by the same kernel (CT noise is band-limited by
   the reconstruction kernel), scaled to `noise_sd_hu` and growing with body size; or,
   with `noise_model="radon"`, Poisson-like noise added to a parallel-beam sinogram
   (scikit-image radon) and reconstructed by filtered back-projection (iradon);
4. rounding to integers and clipping to the 12-bit range [-1024, 3071] HU.

Nothing here knows about the later stages: shapes and values come from anatomy and CT
physics, and the truth (heart mask, lesion map, non-coronary calcium) is what the
phantom is, not what a detector would find.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

# Tissue values in HU (non-contrast, 120 kVp).
AIR = -1000.0
FAT = -95.0
SOFT_TISSUE = 40.0
MUSCLE = 50.0
BLOOD = 42.0
MYOCARDIUM = 48.0
LIVER = 58.0
CSF = 10.0
CARTILAGE = 110.0
STERNUM_SEMI_MM = (14.0, 6.5)  # half width and half depth of the sternal body
LESION_LABEL_MIN_HU = 20.0  # a pixel belongs to a lesion where it raises the image this much

ARTERIES = ("LAD", "LCX", "RCA")


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


@dataclass
class Capsules:
    """Segments p0 -> p1 with radius r; rendered as a union of 3-D capsules."""

    p0: np.ndarray
    p1: np.ndarray
    radius: np.ndarray

    @classmethod
    def from_polyline(cls, points: np.ndarray, radius: np.ndarray | float) -> Capsules:
        points = np.asarray(points, dtype=float)
        radius = np.broadcast_to(np.asarray(radius, dtype=float), (len(points),))
        return cls(points[:-1], points[1:], np.maximum(radius[:-1], radius[1:]))

    @classmethod
    def concat(cls, parts: list[Capsules]) -> Capsules:
        if not parts:
            return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
        return cls(
            np.concatenate([p.p0 for p in parts]),
            np.concatenate([p.p1 for p in parts]),
            np.concatenate([p.radius for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.radius)


@dataclass(frozen=True)
class Ellipsoid:
    center: np.ndarray  # (3,)
    axes: np.ndarray  # (3, 3): rows are the unit directions
    semi_axes_mm: np.ndarray  # (3,)

    @property
    def quadric(self) -> np.ndarray:
        scaled = self.axes / self.semi_axes_mm[:, None]
        return scaled.T @ scaled

    def half_extent(self) -> np.ndarray:
        """Half the size of the axis-aligned bounding box."""
        return np.sqrt(np.sum((self.axes * self.semi_axes_mm[:, None]) ** 2, axis=0))

    def scaled(self, margin_mm: float) -> Ellipsoid:
        return Ellipsoid(self.center, self.axes, np.maximum(self.semi_axes_mm + margin_mm, 0.1))


@dataclass(frozen=True)
class Calcification:
    """One calcified plaque: an ellipsoid of calcium of a given density."""

    shape: Ellipsoid
    density_hu: float
    artery: str  # LAD / LCX / RCA, or "" for non-coronary calcium
    kind: str  # coronary, aortic_wall, aortic_valve, mitral_annulus


@dataclass
class Anatomy:
    """Every solid of one patient, in mm; `render_plane` samples it at one z."""

    body_semi_axes: tuple[float, float, float]  # lateral, anterior, posterior
    body_center_y: float
    subcutaneous_fat_mm: float
    muscle_mm: float
    chest_wall_mm: float
    lung_hu: float
    spine_center: tuple[float, float]
    vertebral_radius: tuple[float, float]
    disc_levels_z: np.ndarray
    pericardium: Ellipsoid
    epicardial_fat_mm: float
    left_atrium: Ellipsoid
    aortic_valve: np.ndarray
    aortic_root_top_z: float
    ascending_aorta: Capsules
    descending_aorta: Capsules
    pulmonary_arteries: Capsules
    superior_vena_cava: Capsules
    esophagus: Capsules
    airways: Capsules
    lung_vessels: Capsules
    ribs: Capsules
    costal_cartilage: Capsules
    coronary_lumen: dict[str, Capsules]
    liver_dome: tuple[float, float, float, float]  # x, y, z of the top, curvature radius
    left_dome: tuple[float, float, float, float]
    stomach_air: Ellipsoid | None
    sternum_bottom_z: float
    calcifications: list[Calcification] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Sampling grids


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


def capsule_distances(grid: Grid, capsules: Capsules, z: float):
    """Yield (window, distance in mm) for each capsule that the plane z cuts."""
    if len(capsules) == 0:
        return
    z0, z1, r = capsules.p0[:, 2], capsules.p1[:, 2], capsules.radius
    hit = (np.minimum(z0, z1) - r <= z) & (np.maximum(z0, z1) + r >= z)
    for k in np.flatnonzero(hit):
        a, b, radius = capsules.p0[k], capsules.p1[k], capsules.radius[k]
        d = b - a
        # Part of the segment within `radius` of the plane bounds the pixels it can touch.
        if abs(d[2]) > 1e-6:
            ta, tb = sorted(((z - radius - a[2]) / d[2], (z + radius - a[2]) / d[2]))
            ta, tb = max(ta, 0.0), min(tb, 1.0)
        else:
            ta, tb = 0.0, 1.0
        ends = np.array([a + ta * d, a + tb * d])
        win = grid.window(
            ends[:, 0].min() - radius,
            ends[:, 0].max() + radius,
            ends[:, 1].min() - radius,
            ends[:, 1].max() + radius,
        )
        if win is None:
            continue
        index, x, y = win
        dx, dy, dz = x - a[0], y - a[1], z - a[2]
        length2 = float(d @ d)
        t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / max(length2, 1e-9), 0.0, 1.0)
        dist = np.sqrt((dx - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dz - t * d[2]) ** 2)
        yield index, dist, radius


def ellipsoid_value(grid: Grid, shape: Ellipsoid, z: float, window=None):
    """(window, q) with q <= 1 inside the ellipsoid, on the plane z; None if it misses."""
    half = shape.half_extent()
    dz = z - shape.center[2]
    if abs(dz) > half[2]:
        return None
    if window is None:
        window = grid.window(
            shape.center[0] - half[0],
            shape.center[0] + half[0],
            shape.center[1] - half[1],
            shape.center[1] + half[1],
        )
    if window is None:
        return None
    index, x, y = window
    dx, dy = x - shape.center[0], y - shape.center[1]
    return index, quadric_form(shape.quadric, dx, dy, dz)


def quadric_form(m: np.ndarray, dx, dy, dz: float):
    """(d^T M d) for offsets d = (dx, dy, dz) from an ellipsoid's centre: <= 1 inside."""
    return (
        m[0, 0] * dx * dx
        + 2 * m[0, 1] * dx * dy
        + m[1, 1] * dy * dy
        + 2 * (m[0, 2] * dx + m[1, 2] * dy) * dz
        + m[2, 2] * dz * dz
    )


def paint_capsules(
    image: np.ndarray,
    grid: Grid,
    capsules: Capsules,
    z: float,
    hu: float,
    where: np.ndarray | None = None,
) -> None:
    for index, dist, radius in capsule_distances(grid, capsules, z):
        inside = dist <= radius
        if where is not None:
            inside &= where[index]
        image[index][inside] = hu


# ---------------------------------------------------------------------------------------
# Rendering one plane


@dataclass
class PlaneSample:
    hu: np.ndarray  # float32, noise-free, before the PSF
    heart_mask: np.ndarray  # bool


def render_plane(anatomy: Anatomy, grid: Grid, z: float, static: StaticMaps) -> PlaneSample:
    """Sample the phantom (without calcifications) on the axial plane at z."""
    a = anatomy
    x, y = grid.x, grid.y
    image = np.full((grid.size, grid.size), AIR, dtype=np.float32)

    image = static.base.copy()  # body wall: skin, fat, muscle, intercostal layer
    cavity = static.cavity

    # Diaphragm domes: liver on the right, spleen and stomach on the left, below them.
    below_right = _below_dome(x, y, z, a.liver_dome)
    below_left = _below_dome(x, y, z, a.left_dome)
    abdomen = cavity & (below_right | below_left)
    thorax = cavity & ~abdomen
    image[thorax] = static.lung[thorax]
    liver = abdomen & below_right & (x < a.left_dome[0] - 10)
    image[liver] = LIVER
    image[abdomen & ~liver] = SOFT_TISSUE + 5
    if a.stomach_air is not None:
        hit = ellipsoid_value(grid, a.stomach_air, z)
        if hit is not None:
            index, q = hit
            image[index][(q <= 1) & abdomen[index] & ~liver[index]] = AIR
    # Back muscles around the posterior arch of the spine.
    paraspinal = static.paraspinal
    image[paraspinal & cavity] = MUSCLE
    lung_region = thorax & ~paraspinal

    # Mediastinum: fat between sternum and spine, wrapping the heart and great vessels.
    mediastinum = np.zeros_like(cavity)
    # Mediastinal fat from the sternum to the spine, separating the lungs: an anterior
    # lobe in front of the heart and a posterior one round oesophagus and aorta.
    sternum_y = a.body_center_y - a.body_semi_axes[1]
    spine_y = a.spine_center[1]
    heart_y = a.pericardium.center[1]
    for cx, y0, y1, half_width in (
        (0.25 * a.pericardium.center[0], sternum_y, heart_y, 15.0),
        (6.0, heart_y, spine_y, 20.0),
    ):
        cy, semi_y = 0.5 * (y0 + y1), 0.5 * abs(y1 - y0) + 10.0
        mediastinum |= (((x - cx) / half_width) ** 2 + ((y - cy) / semi_y) ** 2 <= 1.0) & (
            lung_region
        )
    _mark_ellipsoid(mediastinum, grid, a.pericardium.scaled(4.0), z)
    _mark_ellipsoid(mediastinum, grid, a.left_atrium.scaled(4.0), z)
    for vessels in (
        a.ascending_aorta,
        a.descending_aorta,
        a.pulmonary_arteries,
        a.superior_vena_cava,
        a.esophagus,
    ):
        for index, dist, radius in capsule_distances(grid, vessels, z):
            mediastinum[index] |= dist <= radius + 5.0
    mediastinum &= thorax
    image[mediastinum] = FAT
    lung_region &= ~mediastinum

    # Lung vessels (only inside the lung) and airways.
    paint_capsules(image, grid, a.lung_vessels, z, BLOOD, where=lung_region)
    for index, dist, radius in capsule_distances(grid, a.airways, z):
        image[index][dist <= radius] = SOFT_TISSUE  # bronchial wall
        image[index][dist <= radius - 1.8] = AIR

    # Great vessels and oesophagus (non-contrast: blood is soft tissue).
    paint_capsules(image, grid, a.descending_aorta, z, BLOOD)
    paint_capsules(image, grid, a.superior_vena_cava, z, BLOOD)
    paint_capsules(image, grid, a.pulmonary_arteries, z, BLOOD)
    for index, dist, radius in capsule_distances(grid, a.esophagus, z):
        image[index][dist <= radius] = SOFT_TISSUE + 5
        image[index][dist <= 2.0] = AIR

    # Heart: pericardium, epicardial fat, myocardium, blood; left atrium; coronaries.
    heart_mask = np.zeros(image.shape, dtype=bool)
    hit = ellipsoid_value(grid, a.pericardium, z)
    if hit is not None:
        index, q = hit
        sac = q <= 1.0
        heart_mask[index] |= sac
        radius_mean = float(np.mean(a.pericardium.semi_axes_mm))
        # q is a squared normalised radius: depth below the sac ~ (1 - sqrt(q)) * R.
        depth = (1.0 - np.sqrt(np.maximum(q, 0))) * radius_mean
        region = image[index]
        region[sac] = SOFT_TISSUE - 10  # fibrous pericardium
        region[sac & (depth > 1.2)] = FAT
        region[sac & (depth > a.epicardial_fat_mm)] = MYOCARDIUM
        region[sac & (depth > a.epicardial_fat_mm + 11.0)] = BLOOD
    hit = ellipsoid_value(grid, a.left_atrium, z)
    if hit is not None:
        index, q = hit
        atrium = q <= 1.0
        heart_mask[index] |= atrium
        image[index][atrium] = MYOCARDIUM
        image[index][q <= 0.8] = BLOOD
    for artery in ARTERIES:
        capsules = a.coronary_lumen[artery]
        # The coronaries run in a sleeve of epicardial fat (the grooves), lumen inside it.
        for index, dist, radius in capsule_distances(grid, capsules, z):
            region = image[index]
            region[(dist <= radius + 2.2) & heart_mask[index]] = FAT
        for index, dist, radius in capsule_distances(grid, capsules, z):
            image[index][dist <= radius] = BLOOD

    # Ascending aorta drawn last: its root is inside the pericardium.
    for index, dist, radius in capsule_distances(grid, a.ascending_aorta, z):
        lumen = dist <= radius
        image[index][lumen] = BLOOD
        if z <= a.aortic_root_top_z:
            heart_mask[index] |= lumen

    # Bone: spine (vertebral body or disc, canal, posterior arch), ribs, sternum.
    _render_spine(image, grid, a, z)
    for index, dist, radius in capsule_distances(grid, a.ribs, z):
        region = image[index]
        region[dist <= radius] = 750.0  # cortex
        region[dist <= radius - 1.3] = 230.0  # marrow
    paint_capsules(image, grid, a.costal_cartilage, z, CARTILAGE)

    _render_sternum(image, grid, a, z)
    # Nothing outside the body but air: clip anatomy that leaks past the skin.
    image[~static.inside_body] = AIR
    return PlaneSample(hu=image, heart_mask=heart_mask)


def _mark_ellipsoid(mask: np.ndarray, grid: Grid, shape: Ellipsoid, z: float) -> None:
    hit = ellipsoid_value(grid, shape, z)
    if hit is not None:
        index, q = hit
        mask[index] |= q <= 1.0


def _below_dome(x, y, z: float, dome: tuple[float, float, float, float]) -> np.ndarray:
    """True below a paraboloid dome (top at x0, y0, z0; radius of curvature rc)."""
    x0, y0, z0, rc = dome
    if z > z0:
        return np.zeros((y.shape[0], x.shape[1]), dtype=bool)
    return ((x - x0) ** 2 + (y - y0) ** 2) < 2.0 * rc * (z0 - z)


def _render_sternum(image: np.ndarray, grid: Grid, a: Anatomy, z: float) -> None:
    if z < a.sternum_bottom_z:
        return
    wall = a.subcutaneous_fat_mm + a.muscle_mm + a.chest_wall_mm
    cy = a.body_center_y - a.body_semi_axes[1] + sternum_depth_mm(wall)
    half_width, half_depth = STERNUM_SEMI_MM
    win = grid.window(-half_width - 2, half_width + 2, cy - half_depth - 2, cy + half_depth + 2)
    if win is None:
        return
    index, x, y = win
    q = (x / half_width) ** 2 + ((y - cy) / half_depth) ** 2
    region = image[index]
    region[q <= 1.0] = 700.0
    region[q <= 0.6] = 240.0


def _render_spine(image: np.ndarray, grid: Grid, a: Anatomy, z: float) -> None:
    sx, sy = a.spine_center
    rx, ry = a.vertebral_radius
    win = grid.window(sx - rx - 30, sx + rx + 30, sy - ry - 4, sy + ry + 75)
    if win is None:
        return
    index, x, y = win
    region = image[index]
    dx, dy = x - sx, y - sy
    body = (dx / rx) ** 2 + (dy / ry) ** 2
    at_disc = np.min(np.abs(a.disc_levels_z - z)) < 4.0
    if at_disc:
        region[body <= 1.0] = 85.0
    else:
        region[body <= 1.0] = 780.0
        region[body <= 0.8] = 210.0
    # Spinal canal and the arch around it, then the spinous process towards the back.
    canal_y = sy + ry + 9.0
    canal = dx**2 + (y - canal_y) ** 2
    arch = (canal <= 15.5**2) & (y > sy + ry - 1)
    region[arch] = 650.0
    region[canal <= 8.5**2] = CSF
    spinous = (np.abs(dx) <= 4.0) & (y > canal_y + 12) & (y < canal_y + 42)
    region[spinous] = 600.0
    # Transverse processes reaching for the rib heads.
    transverse = (
        (np.abs(y - canal_y - 0.4 * np.abs(dx)) <= 4.0) & (np.abs(dx) > 10) & (np.abs(dx) < 28)
    )
    region[transverse] = 600.0


# ---------------------------------------------------------------------------------------
# Calcifications: sub-pixel, sub-slice occupancy


def calcification_occupancy(
    grid: Grid,
    shape: Ellipsoid,
    z_center: float,
    thickness_mm: float,
    n_planes: int = 7,
    sub: int = 3,
):
    """(window, occupancy 0..1) of an ellipsoid in the slab centred at z_center."""
    half = shape.half_extent()
    if abs(z_center - shape.center[2]) > half[2] + thickness_mm / 2:
        return None
    pad = grid.spacing
    win = grid.window(
        shape.center[0] - half[0] - pad,
        shape.center[0] + half[0] + pad,
        shape.center[1] - half[1] - pad,
        shape.center[1] + half[1] + pad,
    )
    if win is None:
        return None
    index, x, y = win
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    planes = z_center + thickness_mm * ((np.arange(n_planes) + 0.5) / n_planes - 0.5)
    m = shape.quadric
    occupancy = np.zeros((y.shape[0], x.shape[1]), dtype=np.float32)
    for z in planes:
        dz = z - shape.center[2]
        for oy in offsets:
            dy = y + oy * grid.spacing - shape.center[1]
            for ox in offsets:
                dx = x + ox * grid.spacing - shape.center[0]
                occupancy += quadric_form(m, dx, dy, dz) <= 1.0
    occupancy /= n_planes * sub * sub
    if not occupancy.any():
        return None
    return index, occupancy


# ---------------------------------------------------------------------------------------
# Slices


@dataclass
class SliceTruth:
    hu: np.ndarray  # float32 after PSF and noise, before rounding
    heart_mask: np.ndarray
    lesion_labels: np.ndarray  # int32, 0 = none
    noncoronary_calcium: np.ndarray


@dataclass
class StaticMaps:
    """Per-patient maps that do not change along z (the body wall is an elliptic cylinder)."""

    inside_body: np.ndarray
    cavity: np.ndarray
    base: np.ndarray  # float32: air, skin, fat, muscle, intercostal layer
    lung: np.ndarray  # float32: lung parenchyma with its gravity gradient
    paraspinal: np.ndarray
    scan_circle: np.ndarray  # inside the reconstruction circle


def static_maps(anatomy: Anatomy, grid: Grid) -> StaticMaps:
    a = anatomy
    lateral, anterior, posterior = a.body_semi_axes
    x = grid.x
    y = grid.y - a.body_center_y
    semi_y = np.where(y < 0, anterior, posterior).astype(np.float32)
    r = np.sqrt((x / lateral) ** 2 + (y / semi_y) ** 2)
    rho = np.sqrt(x**2 + y**2)
    # Depth below the skin along the ray from the centre: exact for a circle, close for
    # the mild ellipticity of a chest.
    depth = np.where(r < 1e-3, min(lateral, anterior), (1.0 - r) * rho / np.maximum(r, 1e-3))
    inside_body = depth > 0
    wall_inner = a.subcutaneous_fat_mm + a.muscle_mm
    cavity = depth > wall_inner + a.chest_wall_mm
    base = np.full(depth.shape, AIR, dtype=np.float32)
    base[inside_body] = SOFT_TISSUE
    base[(depth > 1.5) & (depth <= a.subcutaneous_fat_mm)] = FAT
    base[(depth > a.subcutaneous_fat_mm) & (depth <= wall_inner)] = MUSCLE
    base[(depth > wall_inner) & ~cavity] = MUSCLE - 5
    # Dependent (posterior) lung is denser: ~40 HU from front to back.
    gradient = 20.0 * np.clip(y / posterior, -1.0, 1.0)
    lung = np.broadcast_to(a.lung_hu + gradient, depth.shape).astype(np.float32)
    sx, sy = a.spine_center
    arch_y = sy + a.vertebral_radius[1] + 25.0
    paraspinal = ((grid.x - sx) / 48.0) ** 2 + ((grid.y - arch_y) / 40.0) ** 2 <= 1.0
    paraspinal |= (np.abs(grid.x - sx) < 48.0) & (grid.y > arch_y)
    half = (grid.size - 1) / 2.0
    ii = np.arange(grid.size)
    scan_circle = ((ii[:, None] - half) ** 2 + (ii[None, :] - half) ** 2) <= (half + 0.5) ** 2
    return StaticMaps(inside_body, cavity, base, lung, paraspinal & inside_body, scan_circle)


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


# ---------------------------------------------------------------------------------------
# Drawing one patient


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _perpendicular_frame(direction: np.ndarray, rng: np.random.Generator):
    """Two unit vectors perpendicular to `direction` and to each other (random roll)."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(direction[2]) < 0.9 else np.array([1.0, 0, 0])
    n1 = _unit(np.cross(direction, helper))
    n2 = np.cross(direction, n1)
    roll = rng.uniform(0, 2 * np.pi)
    return np.cos(roll) * n1 + np.sin(roll) * n2, -np.sin(roll) * n1 + np.cos(roll) * n2


@dataclass(frozen=True)
class HeartFrame:
    """The pericardial ellipsoid in its own frame: u base->apex, e1 anterior, e2 = u x e1."""

    center: np.ndarray
    u: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    semi: np.ndarray  # along u, e1, e2

    def point(self, t: np.ndarray, phi_deg: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
        """Point at long-axis position t (-1 base .. 1 apex) and angle phi round the axis."""
        t = np.asarray(t, dtype=float)
        phi = np.radians(phi_deg)
        ring = np.sqrt(np.clip(1 - t**2, 0, 1))
        offset = (
            (t * self.semi[0])[..., None] * self.u
            + (ring * self.semi[1] * np.cos(phi))[..., None] * self.e1
            + (ring * self.semi[2] * np.sin(phi))[..., None] * self.e2
        )
        return self.center + np.asarray(scale, dtype=float)[..., None] * offset


def _behind_chest_wall(frame: HeartFrame, body_front, min_depth_mm: float) -> np.ndarray:
    """The heart's centre moved back until its front half lies `min_depth_mm` below the skin.

    Only the front half is checked: the back of the body is drawn later, round the heart.
    """
    lateral, anterior = body_front
    body = (lateral, anterior, np.inf)
    t, phi = np.linspace(-1, 1, 41)[:, None], np.linspace(0, 360, 73)[None, :]
    centre = frame.center.copy()
    for _ in range(20):
        surface = HeartFrame(centre, frame.u, frame.e1, frame.e2, frame.semi).point(t, phi, 1.0)
        front = surface[..., 1] < 0
        if not front.any():
            break
        depth = depth_below_skin_mm(body, surface[..., 0][front], surface[..., 1][front])
        shortfall = min_depth_mm - float(depth.min())
        if shortfall <= 0.05:
            break
        centre[1] += shortfall + 0.1
    return centre


def _coronary_paths(
    frame: HeartFrame, fat_mm: float, root: np.ndarray, root_radius: float, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Centre lines (points, radii) of LAD (with left main), LCX and RCA in the fat layer."""
    depth = max(0.55 * fat_mm, 2.2)
    scale = 1.0 - depth / float(np.mean(frame.semi))
    t_av = rng.uniform(-0.62, -0.48)

    def wiggle(n: int, amplitude: float) -> np.ndarray:
        knots = rng.normal(0, amplitude, size=5)
        return np.interp(np.linspace(0, 4, n), np.arange(5), knots)

    def along(t0, t1, phi0, phi1, n):
        t = np.linspace(t0, t1, n)
        phi = np.linspace(phi0, phi1, n) + wiggle(n, 4.0)
        return frame.point(t, phi, scale)

    def ostium(towards: np.ndarray, dz: float) -> np.ndarray:
        radial = towards - root
        radial[2] = 0.0
        return root + _unit(radial) * root_radius * 0.95 + np.array([0, 0, dz])

    bifurcation_phi = rng.uniform(318, 332)
    lad = along(t_av, rng.uniform(0.82, 0.95), bifurcation_phi + 5, rng.uniform(340, 355), 40)
    lcx = along(t_av, t_av + 0.05, bifurcation_phi - 5, rng.uniform(225, 250), 30)
    crux_phi = rng.uniform(195, 210)
    rca_ring = along(t_av, t_av, rng.uniform(40, 60), crux_phi, 45)
    pda = along(t_av, rng.uniform(0.1, 0.4), crux_phi, crux_phi, 20)
    rca = np.concatenate([rca_ring, pda[1:]])
    left_main_start = ostium(lad[0], rng.uniform(6, 12))
    rca_start = ostium(rca[0], rng.uniform(6, 12))
    left_main = np.linspace(left_main_start, lad[0], 5)
    rca_proximal = np.linspace(rca_start, rca[0], 5)

    def taper(n, r0, r1):
        return np.linspace(r0, r1, n)

    lad_pts = np.concatenate([left_main, lad[1:]])
    lad_r = np.concatenate(
        [np.full(5, rng.uniform(2.1, 2.5)), taper(len(lad) - 1, rng.uniform(1.7, 2.0), 0.8)]
    )
    lcx_pts = np.concatenate([lad[:1], lcx])
    lcx_r = taper(len(lcx_pts), rng.uniform(1.6, 1.9), 0.9)
    rca_pts = np.concatenate([rca_proximal, rca[1:]])
    rca_r = taper(len(rca_pts), rng.uniform(1.8, 2.1), 0.9)
    return {"LAD": (lad_pts, lad_r), "LCX": (lcx_pts, lcx_r), "RCA": (rca_pts, rca_r)}


def _vessel_tree(
    start: np.ndarray,
    direction: np.ndarray,
    radius: float,
    length: float,
    generations: int,
    rng: np.random.Generator,
) -> Capsules:
    """A random bifurcating tree of tubes: the pulmonary vessels seen as dots and rods."""
    p0, p1, r = [], [], []
    stack = [(start, _unit(direction), radius, length, 0)]
    while stack:
        point, d, rad, ln, gen = stack.pop()
        end = point + d * ln
        p0.append(point)
        p1.append(end)
        r.append(rad)
        if gen + 1 >= generations:
            continue
        for _ in range(2):
            turn = rng.normal(0, 0.55, size=3)
            child = _unit(d + turn - (turn @ d) * d)
            stack.append((end, child, rad * 0.74, ln * rng.uniform(0.7, 0.85), gen + 1))
    return Capsules(np.array(p0), np.array(p1), np.array(r))


def depth_below_skin_mm(body_semi, x, y) -> np.ndarray:
    """Depth of points (x, y; body centre at 0) below the skin, along the ray from the
    centre: the depth `static_maps` layers the body wall by."""
    lateral, anterior, posterior = body_semi
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    semi_y = np.where(y < 0, anterior, posterior)
    r = np.sqrt((x / lateral) ** 2 + (y / semi_y) ** 2)
    rho = np.hypot(x, y)
    return np.where(r < 1e-3, min(lateral, anterior), (1.0 - r) * rho / np.maximum(r, 1e-3))


def _below_skin(body_semi, polar_angle: np.ndarray, depth_mm) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) at `depth_mm` below the skin on the rays at `polar_angle` (radians, y posterior)."""
    lateral, anterior, posterior = body_semi
    c, s = np.cos(polar_angle), np.sin(polar_angle)
    semi_y = np.where(s > 0, posterior, anterior)
    rho = 1.0 / np.sqrt((c / lateral) ** 2 + (s / semi_y) ** 2) - depth_mm
    return rho * c, rho * s


def sternum_depth_mm(wall_anterior_mm: float) -> float:
    """Depth of the sternum's centre below the skin: its back lies just in front of the inner
    surface of the chest wall (the sternum is part of the wall, never of the thorax)."""
    return wall_anterior_mm - STERNUM_SEMI_MM[1] - 0.5


def _rib_cage(
    body_semi,
    depth_mm: float,
    sternum_depth: float,
    z_levels: np.ndarray,
    rng: np.random.Generator,
    sternum_half_width: float,
) -> tuple[Capsules, Capsules]:
    """Ribs from the spine round to the front, sloping down; cartilage on to the sternum.

    Both run inside the chest wall at a fixed depth below the skin, so they follow its
    curve: costal cartilage bends round the front of the chest to the sternum's edge and
    never cuts across the thorax (where heart and lungs are).
    """
    lateral, anterior, posterior = body_semi
    ribs, cartilage = [], []
    for z_head in z_levels:
        drop = rng.uniform(55, 75)
        for side in (1.0, -1.0):
            angle = np.radians(np.linspace(72, -55, 24))  # posterior -> lateral -> anterior
            progress = np.linspace(0, 1, len(angle))
            semi_y = np.where(np.sin(angle) > 0, posterior, anterior)
            # Directions of the ribs' course; the depth is set exactly along each ray.
            polar = np.arctan2(
                (semi_y - depth_mm) * np.sin(angle), (lateral - depth_mm) * np.cos(angle)
            )
            x, y = _below_skin(body_semi, polar, depth_mm)
            z = z_head - drop * progress**1.3
            points = np.stack([side * x, y, z], axis=1)
            ribs.append(Capsules.from_polyline(points, 3.4))
            # Cartilage: from the rib's end, round the front, to the edge of the sternum,
            # rising 14 mm and moving to the sternum's depth.
            fine = np.linspace(polar[-1], -np.pi / 2, 400)
            fine_x, _ = _below_skin(body_semi, fine, sternum_depth)
            edge = fine[np.argmin(np.abs(fine_x - sternum_half_width))]
            n = 12
            c_polar = np.linspace(polar[-1], edge, n)
            c_depth = np.linspace(depth_mm, sternum_depth, n)
            cx, cy = _below_skin(body_semi, c_polar, c_depth)
            cz = z[-1] + np.linspace(0, 14, n)
            cartilage.append(Capsules.from_polyline(np.stack([side * cx, cy, cz], axis=1), 3.2))
    return Capsules.concat(ribs), Capsules.concat(cartilage)


def _ellipsoid_along(
    point: np.ndarray,
    tangent: np.ndarray,
    half_length: float,
    half_widths: tuple[float, float],
    rng: np.random.Generator,
) -> Ellipsoid:
    n1, n2 = _perpendicular_frame(_unit(tangent), rng)
    return Ellipsoid(
        point,
        np.stack([_unit(tangent), n1, n2]),
        np.array([half_length, half_widths[0], half_widths[1]]),
    )


def _coronary_calcifications(paths, rng: np.random.Generator) -> list[Calcification]:
    """Plaque burden drawn like a population (about half with none), lesions on the arteries.

    A patient with calcified plaque gets a target burden from a log-normal (median
    Agatston ~80, spanning every risk category as in MESA and Heinz Nixdorf Recall);
    lesions are added, proximal segments favoured, until their expected score reaches it.
    The score on the image is then measured, not assumed.
    """
    if rng.random() >= 0.5:
        return []
    target = 10 ** np.clip(rng.normal(1.9, 0.8), -0.3, 3.6)
    size_scale = 1.0 + 0.35 * max(0.0, np.log10(target) - 1.0)
    shares = {"LAD": 0.45, "RCA": 0.30, "LCX": 0.25}
    lesions: list[Calcification] = []
    expected = 0.0
    while expected < target and len(lesions) < 60:
        artery = rng.choice(list(shares), p=list(shares.values()))
        points, radii = paths[artery]
        cumulative = np.concatenate(
            [[0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
        )
        s = min(rng.exponential(0.35), 0.98) * cumulative[-1]
        k = int(np.clip(np.searchsorted(cumulative, s) - 1, 0, len(points) - 2))
        tangent = points[k + 1] - points[k]
        frac = (s - cumulative[k]) / max(cumulative[k + 1] - cumulative[k], 1e-6)
        centre = points[k] + frac * tangent
        radius = radii[k]
        half_length = rng.uniform(0.5, 3.5) * size_scale
        widths = (rng.uniform(0.35, 1.3) * size_scale, rng.uniform(0.35, 1.1) * size_scale)
        widths = (min(widths[0], radius * 1.2), min(widths[1], radius * 1.2))
        shape = _ellipsoid_along(centre, tangent, half_length, widths, rng)
        # Plaque sits in the wall: push it off the centre line.
        offset = shape.axes[1] * radius * 0.55
        shape = Ellipsoid(centre + offset, shape.axes, shape.semi_axes_mm)
        density = float(np.clip(rng.lognormal(np.log(480), 0.55), 160, 2000))
        lesions.append(Calcification(shape, density, artery, "coronary"))
        volume = 4.0 / 3.0 * np.pi * half_length * widths[0] * widths[1]
        expected += volume / 3.0 * min(4, max(1, int(density * 0.6 // 100)))
    return lesions


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy (mm, LPS, z = 0 near the centre of the heart)."""
    lateral = rng.uniform(150, 190)
    anterior = rng.uniform(112, 132)
    fat = rng.uniform(6, 28)
    muscle = rng.uniform(7, 14)
    chest_wall = rng.uniform(7, 10)
    wall_anterior = fat + muscle + chest_wall

    # Heart: pericardial ellipsoid, long axis to the left, front and down.
    azimuth = np.radians(rng.uniform(35, 55))
    elevation = np.radians(rng.uniform(25, 42))
    u = np.array(
        [
            np.cos(elevation) * np.cos(azimuth),
            -np.cos(elevation) * np.sin(azimuth),
            -np.sin(elevation),
        ]
    )
    e1 = _unit(np.array([0.0, -1.0, 0.0]) - (-u[1]) * u)
    e2 = np.cross(u, e1)
    semi = np.array([rng.uniform(64, 76), rng.uniform(40, 47), rng.uniform(52, 60)])
    axes = np.stack([u, e1, e2])
    probe = Ellipsoid(np.zeros(3), axes, semi)
    half = probe.half_extent()
    # The pericardium lies behind the chest wall, separated from sternum, costal cartilage
    # and ribs by a few mm of anterior mediastinal fat: it never holds bone or cartilage.
    centre_x = rng.uniform(18, 34)
    retrosternal_fat = rng.uniform(2, 8)
    centre = np.array([centre_x, -(anterior - wall_anterior) + half[1] + retrosternal_fat, 0.0])
    centre = _behind_chest_wall(
        HeartFrame(centre, u, e1, e2, semi), (lateral, anterior), wall_anterior + retrosternal_fat
    )
    pericardium = Ellipsoid(centre, axes, semi)
    frame = HeartFrame(centre, u, e1, e2, semi)
    epicardial_fat = rng.uniform(3.5, 9.0)

    # Base of the heart: aortic valve and left atrium behind it.
    valve = centre - 0.62 * semi[0] * u + 0.3 * semi[1] * e1
    root_radius = rng.uniform(14, 17)
    la_centre = centre - 0.7 * semi[0] * u + np.array([-5.0, rng.uniform(22, 30), 0.0])
    la_semi = np.array([rng.uniform(28, 36), rng.uniform(18, 24), rng.uniform(20, 26)])
    left_atrium = Ellipsoid(la_centre, np.eye(3), la_semi)

    # Behind the heart: oesophagus, descending aorta, then the spine.
    desc_radius = rng.uniform(10.5, 13.5)
    la_back = la_centre[1] + la_semi[1]
    surface = frame.point(np.linspace(-1, 1, 41)[:, None], np.linspace(0, 360, 73)[None, :], 1.0)
    desc_x = rng.uniform(18, 28)
    near = np.abs(surface[..., 0] - desc_x) < desc_radius + 4
    heart_back = surface[..., 1][near].max() if near.any() else centre[1]
    desc_y = max(la_back, heart_back) + desc_radius + 3.0
    vertebral_radius = (rng.uniform(17, 22), rng.uniform(14, 17))
    spine_y = desc_y + rng.uniform(0, 6)
    spine_y = max(spine_y, la_back + 8 + vertebral_radius[1])
    posterior = spine_y + vertebral_radius[1] + 9.0 + 42.0 + rng.uniform(12, 25) + fat
    body_center_y = 0.0

    # z extent: from above the aortic root to below the apex.
    heart_bottom = centre[2] - half[2]
    z_top_anatomy = valve[2] + 90.0
    z_bottom_anatomy = heart_bottom - 60.0
    z_top_asc = z_top_anatomy
    asc_dir = _unit(np.array([rng.uniform(-0.3, -0.15), rng.uniform(-0.2, 0.0), 1.0]))
    asc_len = (z_top_asc - valve[2]) / asc_dir[2]
    asc_pts = valve + np.linspace(0, asc_len, 12)[:, None] * asc_dir
    asc_r = np.where(np.linspace(0, asc_len, 12) < 22, root_radius + 2.0, root_radius)
    ascending = Capsules.from_polyline(asc_pts, asc_r)
    descending = Capsules.from_polyline(
        np.array([[desc_x, desc_y, z_bottom_anatomy], [desc_x - 3, desc_y - 2, z_top_anatomy]]),
        desc_radius,
    )
    # Pulmonary trunk: from the right-ventricular outflow, up and back to the bifurcation.
    rvot = valve + np.array([22.0, -18.0, 2.0])
    bifurcation = rvot + np.array([8.0, 22.0, rng.uniform(35, 45)])
    pa_radius = rng.uniform(12, 15)
    pulmonary = Capsules.concat(
        [
            Capsules.from_polyline(np.array([rvot, bifurcation]), pa_radius),
            Capsules.from_polyline(
                np.array([bifurcation, bifurcation + np.array([45, 25, -4])]), pa_radius * 0.75
            ),
            Capsules.from_polyline(
                np.array([bifurcation, bifurcation + np.array([-70, 20, -6])]), pa_radius * 0.8
            ),
        ]
    )
    svc_base = valve + np.array([-30.0, 5.0, -5.0])
    svc = Capsules.from_polyline(
        np.array([svc_base, svc_base + np.array([0, 0, 120])]), rng.uniform(8, 11)
    )
    esophagus = Capsules.from_polyline(
        np.array([[6.0, la_back + 7, z_bottom_anatomy], [2.0, la_back + 7, z_top_anatomy]]), 7.0
    )
    carina = np.array([-2.0, la_back + 2.0, bifurcation[2] + 15])
    airways = Capsules.concat(
        [
            Capsules.from_polyline(np.array([carina, carina + np.array([0, -5, 60])]), 9.0),
            Capsules.from_polyline(np.array([carina, carina + np.array([-40, 6, -22])]), 7.0),
            Capsules.from_polyline(np.array([carina, carina + np.array([45, 8, -35])]), 6.5),
        ]
    )

    # Lungs: parenchyma value and the vessel trees from each hilum.
    lung_hu = rng.uniform(-890, -830)
    trees = []
    for side in (-1.0, 1.0):
        hilum = np.array([side * 55.0, la_back - 10, valve[2] + 5])
        for direction in (
            [side, 0.2, 0.8],
            [side, 0.4, -0.7],
            [side, -0.6, -0.2],
            [side * 0.6, 0.7, -0.3],
            [side, -0.2, 0.5],
        ):
            trees.append(
                _vessel_tree(
                    hilum, np.array(direction), rng.uniform(4.5, 6.0), rng.uniform(26, 36), 7, rng
                )
            )
    lung_vessels = Capsules.concat(trees)

    rib_depth = fat + muscle + 0.5 * chest_wall
    rib_levels = np.arange(z_bottom_anatomy - 20, z_top_anatomy + 80, rng.uniform(24, 29))
    ribs, cartilage = _rib_cage(
        (lateral, anterior, posterior),
        rib_depth,
        sternum_depth_mm(wall_anterior),
        rib_levels,
        rng,
        STERNUM_SEMI_MM[0],
    )
    disc_levels = np.arange(z_bottom_anatomy + rng.uniform(0, 26), z_top_anatomy, 26.0)

    dome_r = (
        -lateral * 0.35,
        centre[1] + 10,
        heart_bottom + rng.uniform(10, 25),
        rng.uniform(110, 150),
    )
    dome_l = (
        centre[0] + 20,
        centre[1] + 30,
        heart_bottom + rng.uniform(0, 12),  # the heart rests on the diaphragm
        rng.uniform(90, 120),
    )
    stomach = None
    if rng.random() < 0.6:
        stomach = Ellipsoid(
            np.array([dome_l[0] + 25, dome_l[1] - 15, dome_l[2] - 25]),
            np.eye(3),
            np.array([30.0, 22.0, 14.0]),
        )

    paths = _coronary_paths(frame, epicardial_fat, valve, root_radius + 2.0, rng)
    coronary = {name: Capsules.from_polyline(p, r) for name, (p, r) in paths.items()}
    calcifications = _coronary_calcifications(paths, rng)
    calcifications += _noncoronary_calcifications(
        rng, bool(calcifications), valve, root_radius, ascending, descending, frame, desc_radius
    )

    return Anatomy(
        body_semi_axes=(lateral, anterior, posterior),
        body_center_y=body_center_y,
        subcutaneous_fat_mm=fat,
        muscle_mm=muscle,
        chest_wall_mm=chest_wall,
        lung_hu=lung_hu,
        spine_center=(0.0, spine_y),
        vertebral_radius=vertebral_radius,
        disc_levels_z=disc_levels,
        pericardium=pericardium,
        epicardial_fat_mm=epicardial_fat,
        left_atrium=left_atrium,
        aortic_valve=valve,
        aortic_root_top_z=valve[2] + 25.0,
        ascending_aorta=ascending,
        descending_aorta=descending,
        pulmonary_arteries=pulmonary,
        superior_vena_cava=svc,
        esophagus=esophagus,
        airways=airways,
        lung_vessels=lung_vessels,
        ribs=ribs,
        costal_cartilage=cartilage,
        coronary_lumen=coronary,
        liver_dome=dome_r,
        left_dome=dome_l,
        stomach_air=stomach,
        sternum_bottom_z=heart_bottom - 10.0,
        calcifications=calcifications,
    )


def _noncoronary_calcifications(
    rng,
    has_cac: bool,
    valve,
    root_radius,
    ascending: Capsules,
    descending: Capsules,
    frame: HeartFrame,
    desc_radius: float,
) -> list[Calcification]:
    """Confounders a coronary calcium detector must not count."""
    found: list[Calcification] = []
    # Aortic wall plaques (descending and ascending aorta), common with age.
    if rng.random() < 0.2 + 0.35 * has_cac:
        for _ in range(rng.integers(1, 7)):
            vessel, radius = (
                (descending, desc_radius) if rng.random() < 0.7 else (ascending, root_radius)
            )
            k = rng.integers(len(vessel))
            axis = vessel.p1[k] - vessel.p0[k]
            centre = vessel.p0[k] + rng.random() * axis
            n1, _ = _perpendicular_frame(_unit(axis), rng)
            shape = _ellipsoid_along(
                centre + n1 * radius,
                axis,
                rng.uniform(1.5, 5),
                (rng.uniform(0.6, 1.4), rng.uniform(1.5, 4)),
                rng,
            )
            found.append(Calcification(shape, rng.uniform(300, 1300), "", "aortic_wall"))
    # Aortic valve cusps at the valve plane (inside the heart region).
    if rng.random() < 0.06 + 0.12 * has_cac:
        for _ in range(rng.integers(1, 4)):
            angle = rng.uniform(0, 2 * np.pi)
            centre = valve + 0.55 * root_radius * np.array([np.cos(angle), np.sin(angle), 0.0])
            shape = Ellipsoid(
                centre + np.array([0, 0, 3]), np.eye(3), rng.uniform(1.0, 2.5, size=3)
            )
            found.append(Calcification(shape, rng.uniform(300, 1200), "", "aortic_valve"))
    # Mitral annulus: an arc of lumps between left atrium and left ventricle, posteriorly.
    if rng.random() < 0.05 + 0.10 * has_cac:
        phis = np.linspace(rng.uniform(150, 180), rng.uniform(230, 270), rng.integers(3, 7))
        for phi in phis:
            centre = frame.point(-0.45, phi, 0.6)
            shape = Ellipsoid(centre, np.eye(3), rng.uniform(1.0, 2.2, size=3))
            found.append(Calcification(shape, rng.uniform(250, 1100), "", "mitral_annulus"))
    return found


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
