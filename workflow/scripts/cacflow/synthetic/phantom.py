"""The phantom on one axial plane: its solids rasterised on the pixel grid, filled with
the tissue values of ../shared/reference.md (HU of air, lung, fat, soft tissue, blood and
bone at 120 kVp).

Nothing here knows about the later stages: shapes and values come from anatomy and CT
physics, and the truth (heart mask, lesion map, non-coronary calcium) is what the
phantom is, not what a detector would find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cacflow.synthetic.acquisition import Grid
from cacflow.synthetic.anatomy import ARTERIES, STERNUM_SEMI_MM, Anatomy, sternum_depth_mm
from cacflow.synthetic.geometry import Capsules, Ellipsoid, quadric_form

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


# ---------------------------------------------------------------------------------------
# Solids on the pixel grid


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


def _mark_ellipsoid(mask: np.ndarray, grid: Grid, shape: Ellipsoid, z: float) -> None:
    hit = ellipsoid_value(grid, shape, z)
    if hit is not None:
        index, q = hit
        mask[index] |= q <= 1.0


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
# Rendering one plane


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
