"""One patient's chest at heart level, drawn at random as solids.

Patient coordinates are DICOM LPS in millimetres (x towards the patient's left, y
posterior, z superior). Elliptic cylinders make the body wall; ellipsoids the heart, left
atrium, liver dome and lesions; capsules the vessels, airways, ribs and coronary arteries.
Anatomy follows ../shared/reference.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cacflow.synthetic.geometry import Capsules, Ellipsoid

STERNUM_SEMI_MM = (14.0, 6.5)  # half width and half depth of the sternal body

ARTERIES = ("LAD", "LCX", "RCA")


@dataclass(frozen=True)
class Calcification:
    """One calcified plaque: an ellipsoid of calcium of a given density."""

    shape: Ellipsoid
    density_hu: float
    artery: str  # LAD / LCX / RCA, or "" for non-coronary calcium
    kind: str  # coronary, aortic_wall, aortic_valve, mitral_annulus


@dataclass
class Anatomy:
    """Every solid of one patient, in mm; `phantom.render_plane` samples it at one z."""

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
    """Centre lines (points, radii) of LAD (with left main), LCX and RCA in the fat layer.

    The ostia sit in the sinuses of Valsalva, below the sinotubular junction: 10-17 mm
    (left) and 11-19 mm (right) above the valve plane (CT series measure about 13-14 and
    15-17 mm, SD about 3 mm). The left main runs left and slightly down (4 mm) to its
    bifurcation in the AV groove; where the groove there lies higher, the bifurcation moves
    forward round the groove, to where it is low enough.
    """
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
    lad_end, lad_phi_end = rng.uniform(0.82, 0.95), rng.uniform(340, 355)
    lad_wiggle = wiggle(40, 4.0)
    lcx_phi_end = rng.uniform(225, 250)
    lcx_wiggle = wiggle(30, 4.0)
    crux_phi = rng.uniform(195, 210)
    rca_ring = along(t_av, t_av, rng.uniform(40, 60), crux_phi, 45)
    pda = along(t_av, rng.uniform(0.1, 0.4), crux_phi, crux_phi, 20)
    rca = np.concatenate([rca_ring, pda[1:]])
    left_ostium_mm, right_ostium_mm = rng.uniform(10, 17), rng.uniform(11, 19)
    highest = root[2] + left_ostium_mm - 4.0  # level or slightly down
    while bifurcation_phi < 380 and (
        frame.point(np.array(t_av), np.array(bifurcation_phi + 5 + lad_wiggle[0]), scale)[2]
        > highest
    ):
        bifurcation_phi += 1.0
    lad = frame.point(
        np.linspace(t_av, lad_end, 40),
        np.linspace(bifurcation_phi + 5, max(lad_phi_end, bifurcation_phi + 5), 40) + lad_wiggle,
        scale,
    )
    lcx = frame.point(
        np.linspace(t_av, t_av + 0.05, 30),
        np.linspace(bifurcation_phi - 5, lcx_phi_end, 30) + lcx_wiggle,
        scale,
    )
    left_main = np.linspace(ostium(lad[0], left_ostium_mm), lad[0], 5)
    rca_proximal = np.linspace(ostium(rca[0], right_ostium_mm), rca[0], 5)

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
    centre: the depth `phantom.static_maps` layers the body wall by."""
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
        rng, bool(calcifications), valve, root_radius, ascending, descending, frame
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
) -> list[Calcification]:
    """Confounders a coronary calcium detector must not count."""
    found: list[Calcification] = []
    # Aortic wall plaques (descending and ascending aorta), common with age.
    if rng.random() < 0.2 + 0.35 * has_cac:
        for _ in range(rng.integers(1, 7)):
            vessel = descending if rng.random() < 0.7 else ascending
            k = rng.integers(len(vessel))
            axis = vessel.p1[k] - vessel.p0[k]
            centre = vessel.p0[k] + rng.random() * axis
            n1, _ = _perpendicular_frame(_unit(axis), rng)
            shape = _ellipsoid_along(
                centre + n1 * vessel.radius[k],  # in the wall (the sinuses' wider one at the root)
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
