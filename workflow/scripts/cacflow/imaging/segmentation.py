"""Heart segmentation on non-contrast cardiac CT by K-means and mathematical morphology.

Method after Rim et al., Sensors 2021, 21, 2675 (as summarised in
../shared/reference.md): a K-means threshold (k=2, mean of the two centroids) separates
the body from the outside air and a convex hull of the body holds the lungs; the lungs'
convex hull holds the heart; a K-means with k=3 (brightest centroid) finds bone, and the
region behind the front of the spine is removed; what remains, refined, is the heart.

Done a volume at a time, not slice by slice, for speed and for the context it gives:
- one K-means per volume, on the histogram of all voxels, sets the thresholds;
- the masks are built on a coarse grid (blocks of pixels, about 2 mm), and every
  structuring element is a disc whose radius is in millimetres, so the result does not
  depend on the field of view or the matrix; large discs go through Euclidean distance
  transforms (an opening is two thresholded transforms), small ones are footprints;
- lung parenchyma (denser than outside air) counts as body, so that a zoomed view whose
  edge cuts through the lungs, leaving the chest wall out, still holds them;
- the spine is bone that persists along the volume (ribs move from slice to slice);
- the chambers (blood and myocardium) are soft tissue between the lungs after an
  opening that cuts the thin links to the great vessels, oesophagus, descending aorta and
  liver; of the 3-D blobs left, the heart is the one wrapped in the most fat (the
  epicardial fat; the liver, which can be larger, borders lung and muscle). Slices above
  and below the run of slices with a heart-sized blob are followed slice by slice for a
  few millimetres (the atria and aortic root, the apex); farther out there are only
  vessels or abdomen. Towards the diaphragm (the end of the scan with less lung) the
  heart only narrows below its widest fat-wrapped section while the domes of the liver
  and spleen widen, so each slice there keeps only what lies within a few millimetres of
  the slice above;
- the mask is the chambers grown, in 3-D, by the depth of the pericardium: the distance
  at which the median HU round the chambers peaks on the thin pericardial line between
  epicardial and mediastinal fat, measured on the volume, and a little more towards the
  apex, where the slices cut the sac obliquely past the chambers' end, and towards the
  base, where the sac's roof and the atrioventricular groove lie above the ventricles.
  The growth stops at the lungs, at organs reaching out of the lungs' hull (chest wall,
  liver), and a few millimetres short of free-standing structures behind the heart (descending aorta, oesophagus); the
  great vessels at the base (ascending aorta, pulmonary trunk) are not entered but get no
  clearance, since the coronary arteries run right beside their roots;
- the distance field is interpolated to full resolution (a smooth boundary), and
  calcium at the edge of the mask is added whole, so that no coronary plaque is cut,
  unless it lies on the vessels behind the heart (the aortic wall).

Assumptions: `hu` is in Hounsfield units of a non-contrast scan (blood and myocardium
~40 HU, fat ~-100 HU, lung < -500 HU), axial slices of a supine patient with anterior at
row 0 as DICOM stores them, contiguous slices. The order of the slices (superior or
inferior first) does not matter. A truncated field of view (lungs cut by the
reconstruction circle) is fine; a field of view that cuts the heart is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from cacflow.scoring.agatston import MIN_AREA_MM2, THRESHOLD_HU

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# Connectivity within a slice only, for labelling a stack of slices in one call.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)
_FAR_MM = 1e6  # slice spacing that keeps a distance transform within each slice
_AIR_HU = -1024.0


class SegmentationError(ValueError):
    """The input cannot be segmented (wrong shape, spacing or type)."""


@dataclass(frozen=True)
class SegmentationSettings:
    """Tunables of `segment_heart`; every length is in millimetres, every area in mm^2."""

    working_spacing_mm: float = 2.0  # pixel size (about) of the coarse grid of the masks
    default_slice_spacing_mm: float = 3.0  # used when the caller gives no slice spacing
    smoothing_mm: float = 1.0  # Gaussian smoothing of the coarse image against noise
    body_opening_mm: float = 3.0  # removes the table, cables and noise outside the body
    lung_opening_mm: float = 2.0  # removes noise and small airways from the lung mask
    lung_min_area_mm2: float = 150.0  # smaller air pockets (oesophagus, bronchi) are not lung
    lung_hull_margin_mm: float = 25.0  # the heart may reach this far beyond the lungs' hull
    outside_air_max_hu: float = -960.0  # outside air is -1000 HU; lung parenchyma is denser
    parenchyma_opening_mm: float = 4.0  # lung is thicker than the partial volume at edges
    bone_min_hu: float = 200.0  # floor of the K-means bone threshold (little bone in view)
    spine_persistence: float = 0.5  # fraction of slices a spine pixel must be bone in
    spine_clearance_mm: float = 3.0  # the heart ends this far in front of the spine
    soft_tissue_min_hu: float = -30.0  # between fat (-100) and blood/muscle (+40)
    fat_min_hu: float = -200.0  # between lung (-850) and fat (-100)
    fat_ring_mm: float = 4.0  # width of the ring in which a blob's surrounding fat is counted
    heart_fat_wrap: float = 0.8  # fraction of fat round a heart section (not abdomen)
    inferior_growth_mm: float = 4.0  # below its widest section the heart grows no more
    max_heart_candidates: int = 3  # largest soft-tissue blobs compared for the heart
    chamber_opening_mm: float = 8.0  # breaks links to vessels, liver, oesophagus
    heart_min_radius_mm: float = 20.0  # a heart slice holds a disc this big; vessels do not
    vessel_attach_mm: float = 10.0  # chamber parts this far beyond that disc are vessels
    heart_cap_mm: float = 15.0  # heart above and below the slices that hold such a disc
    structure_min_radius_mm: float = 4.0  # soft tissue thinner than this does not block
    vessel_clearance_mm: float = 3.0  # kept between the mask and other soft tissue
    lung_clearance_mm: float = 2.0  # kept between the mask and the lungs
    pericardium_search_mm: float = 12.0  # the pericardium is looked for this far out
    pericardium_min_distance_mm: float = 1.5  # the line is at least this far out
    pericardium_min_contrast_hu: float = 25.0  # its line must stand out of the fat this much
    pericardium_half_thickness_mm: float = 0.6  # added to the distance of the line's centre
    default_pericardial_margin_mm: float = 6.0  # used when no pericardium line is found
    apex_extra_margin_mm: float = 1.5  # added to the margin round the apex ...
    apex_taper_mm: float = 6.0  # ... reached over this length up to the last chamber slice
    base_extra_margin_mm: float = 1.5  # added to the margin round the base (same taper)
    min_heart_area_mm2: float = 200.0  # slices with less heart are left empty
    max_calcium_area_mm2: float = 200.0  # calcium touching the mask is added up to this size
    calcium_gap_mm: float = 4.0  # calcium this close to the mask is added whole ...
    calcium_reach_mm: float = 8.0  # ... if no pixel of it is farther out than this


@dataclass
class _CoarseMasks:
    chambers: np.ndarray  # bool: heart chambers, blood and myocardium (coarse grid)
    allowed: np.ndarray  # bool: where the heart may extend (not lung, bone, other organs)
    no_calcium: np.ndarray  # bool: calcium here is not the heart's (aortic wall, spine)


def segment_heart(
    hu: np.ndarray,
    pixel_spacing_mm: float | tuple[float, float],
    slice_spacing_mm: float | None = None,
    settings: SegmentationSettings | None = None,
) -> np.ndarray:
    """Heart mask (bool, same shape) of a CT volume `hu` (slice x row x col, HU).

    `pixel_spacing_mm` is one value or the (row, column) spacing. `slice_spacing_mm` is
    the distance between slice centres; without it `default_slice_spacing_mm` is assumed.
    """
    settings = settings or SegmentationSettings()
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise SegmentationError(f"expected a volume (slice x row x col), got shape {hu.shape}")
    spacing = _pair(pixel_spacing_mm)
    z_mm = float(slice_spacing_mm or settings.default_slice_spacing_mm)
    if not np.isfinite(z_mm) or z_mm <= 0:
        raise SegmentationError(f"slice spacing must be positive mm, got {slice_spacing_mm}")
    heart = np.zeros(hu.shape, dtype=bool)
    if hu.size == 0:
        return heart
    factors = (_block_factor(spacing[0], settings), _block_factor(spacing[1], settings))
    coarse = _block_mean(hu, factors)
    coarse_spacing = (spacing[0] * factors[0], spacing[1] * factors[1])
    masks = _coarse_masks(coarse, coarse_spacing, z_mm, settings)
    if masks is None:
        return heart

    # Signed distance (mm, 3-D) to the chambers' surface: the pericardium lies at a roughly
    # constant depth of epicardial fat outside it, measured on the volume.
    sampling = (z_mm, *coarse_spacing)
    signed = ndimage.distance_transform_edt(~masks.chambers, sampling=sampling)
    signed -= ndimage.distance_transform_edt(masks.chambers, sampling=sampling)
    margin = _pericardial_margin(hu, signed, factors, settings)
    pixel_area = spacing[0] * spacing[1]
    margins = _margins_by_slice(masks.chambers, margin, coarse_spacing, z_mm, settings)
    reach = signed <= margins[:, None, None]
    for k in np.flatnonzero(reach.any(axis=(1, 2))):
        margin_k = margins[k]
        window = _coarse_window(signed[k] <= margin_k + max(coarse_spacing))
        full = _full_window(window, factors, hu.shape[1:])
        distance = _upsample(signed[k][window], factors, full, window)
        allowed = _upsample(masks.allowed[k][window].astype(np.float32), factors, full, window)
        mask = ndimage.binary_fill_holes((distance <= margin_k) & (allowed >= 0.5))
        if mask.sum() * pixel_area >= settings.min_heart_area_mm2:
            heart[k][full] = mask
    _add_touching_calcium(heart, hu, spacing, masks.no_calcium, factors, settings)
    return heart


def _margins_by_slice(
    chambers: np.ndarray,
    margin: float,
    spacing: tuple[float, float],
    z_mm: float,
    settings: SegmentationSettings,
) -> np.ndarray:
    """The pericardial margin (mm) of each slice, wider towards the apex.

    At the apex the slices cut the sac obliquely and the fat lies thicker along the long
    axis than round the ventricles; the chambers also end slices before the sac does. The
    apex is the end of the chambers that lies the more anterior and to the patient's left
    (higher column, lower row); the other end holds the atria and the great vessels.
    """
    margins = np.full(len(chambers), margin)
    on_chambers = np.flatnonzero(chambers.any(axis=(1, 2)))
    if len(on_chambers) < 4:
        return margins
    quarter = max(len(on_chambers) // 4, 1)
    rows, cols = np.indices(chambers.shape[1:])
    lean = (cols * spacing[1] - rows * spacing[0]).astype(np.float32)

    def mean_lean(slices: np.ndarray) -> float:
        part = chambers[slices]
        return float(lean[part.any(axis=0)].mean()) if part.any() else 0.0

    if mean_lean(on_chambers[-quarter:]) >= mean_lean(on_chambers[:quarter]):
        from_apex = on_chambers[-1] - np.arange(len(chambers))
        from_base = np.arange(len(chambers)) - on_chambers[0]
    else:
        from_apex = np.arange(len(chambers)) - on_chambers[0]
        from_base = on_chambers[-1] - np.arange(len(chambers))
    taper = max(settings.apex_taper_mm, z_mm)
    ramp = np.clip(1.0 - from_apex * z_mm / taper, 0.0, 1.0)
    # At the base the sac's roof lies above the ventricles, over the atria and the roots
    # of the great vessels, and the atrioventricular groove (circumflex, right coronary)
    # sits in the fat below it: the margin widens there too.
    base_ramp = np.clip(1.0 - from_base * z_mm / taper, 0.0, 1.0)
    return (
        margins + settings.apex_extra_margin_mm * ramp + settings.base_extra_margin_mm * base_ramp
    )


# ---------------------------------------------------------------------------------------
# Coarse masks


def _coarse_masks(
    coarse: np.ndarray,
    spacing: tuple[float, float],
    z_mm: float,
    settings: SegmentationSettings,
) -> _CoarseMasks | None:
    air_hu, bone_hu = _volume_thresholds(coarse, settings)
    if air_hu is None:
        return None
    smooth = ndimage.gaussian_filter(
        coarse, (0.0, settings.smoothing_mm / spacing[0], settings.smoothing_mm / spacing[1])
    )
    pixel_area = spacing[0] * spacing[1]
    # Per-slice (2-D) morphology runs on the whole stack at once: a huge slice spacing
    # keeps each distance transform within its slice.
    plane = (_FAR_MM, *spacing)

    foreground = _open(smooth > air_hu, settings.body_opening_mm, plane)
    # A zoomed field of view can cut the chest wall away: the lungs then run out to the
    # scan's edge, beyond the hull of the soft tissue, and only their density tells them
    # from the air outside: parenchyma is denser. The opening drops the rims of partial
    # volume between tissue and outside air (at the skin and the scan's edge).
    parenchyma = (smooth <= air_hu) & (smooth > settings.outside_air_max_hu)
    parenchyma = _remove_small(
        _open(parenchyma, settings.parenchyma_opening_mm, plane),
        settings.lung_min_area_mm2 / pixel_area,
    )
    foreground = _largest_per_slice(foreground | parenchyma)
    body = np.zeros_like(foreground)
    for k in np.flatnonzero(foreground.any(axis=(1, 2))):
        # The hull also closes lungs that the field of view cuts open to the outside air.
        body[k] = _convex_hull(foreground[k])
    air = _open(body & (smooth <= air_hu), settings.lung_opening_mm, plane)
    lungs = _remove_small(air, settings.lung_min_area_mm2 / pixel_area)
    lung_hull = np.zeros_like(body)
    for k in np.flatnonzero(lungs.any(axis=(1, 2))):
        lung_hull[k] = _convex_hull(lungs[k])

    behind_spine = np.zeros_like(body)
    spine_front_row = _spine_front_row(body & (smooth >= bone_hu), body, settings)
    if spine_front_row is not None:
        cut = spine_front_row - int(np.ceil(settings.spine_clearance_mm / spacing[0]))
        behind_spine[:, max(cut, 0) :, :] = True

    soft = body & (smooth > settings.soft_tissue_min_hu) & (smooth < bone_hu)
    candidate = soft & ~lungs & ~behind_spine
    # The opening is 2-D: a 3-D ball would also erase the apex and the top of the atria,
    # where the chambers shrink quickly from slice to slice.
    chambers = _open(candidate & lung_hull, settings.chamber_opening_mm, plane)
    chambers = _most_heart_like(chambers, smooth, plane, settings)
    if not chambers.any():
        return None
    # Where the heart lies on the chest wall, the hull's chord between the lung tips cuts
    # through it: take the whole blob of each slice, within a wider hull. The opening
    # removes the band of chest wall that the wider hull lets in.
    wider = _dilate(lung_hull, settings.lung_hull_margin_mm, plane)
    blobs, n = ndimage.label(
        _open(candidate & wider, settings.chamber_opening_mm, plane), _IN_PLANE
    )
    touched = np.bincount(blobs[chambers], minlength=n + 1) > 0
    touched[0] = False
    chambers |= touched[blobs]
    chambers = _heart_slices_only(chambers, plane, z_mm, settings)
    fat = (smooth > settings.fat_min_hu) & (smooth < settings.soft_tissue_min_hu)
    chambers = _above_diaphragm(chambers, fat, lungs, plane, z_mm, settings)
    if not chambers.any():
        return None

    # Lungs and other soft-tissue organs stop the heart; thin soft tissue (coronary
    # arteries, the pericardium itself) does not. Organs reaching out of the lungs' hull
    # (chest wall, liver, diaphragm) only may not be entered: the heart lies against
    # them. Free-standing ones behind the heart (descending aorta, oesophagus) are kept
    # at a clearance, so the calcium of the aortic wall stays out; the great vessels at
    # the base (ascending aorta, pulmonary trunk) leave the heart inside the pericardium,
    # with the coronary arteries in the atrioventricular groove beside them: the mask may
    # reach them, and calcium next to them is the heart's.
    near_chambers = _dilate(chambers, settings.vessel_clearance_mm + 2.0, (z_mm, *spacing))
    # Bone counts as an organ too; small bright spots (calcium) do not, so that a plaque
    # next to the chest wall is not cut out of the mask.
    bright = smooth >= bone_hu
    spots = bright & ~_remove_small(bright, settings.max_calcium_area_mm2 / pixel_area)
    dense = body & (smooth > settings.soft_tissue_min_hu) & ~chambers & ~spots
    others = _open(dense, settings.structure_min_radius_mm, plane) & ~near_chambers
    organs, n = ndimage.label(others, _IN_PLANE)
    on_wall = np.zeros(n + 1, dtype=bool)
    on_wall[np.unique(organs[others & ~lung_hull])] = True
    on_wall[0] = False
    # Behind the heart: organs whose centre lies behind the chambers' posterior edge
    # (the back of the left atrium).
    back_row = float(np.max(np.nonzero(chambers)[1]))
    posterior = np.zeros(n + 1, dtype=bool)
    if n:
        rows = np.bincount(organs.ravel(), np.indices(organs.shape)[1].ravel(), n + 1)
        counts = np.bincount(organs.ravel(), minlength=n + 1)
        posterior[1:] = rows[1:] / np.maximum(counts[1:], 1) > back_row
    posterior &= ~on_wall
    around_posterior = _dilate(posterior[organs], settings.vessel_clearance_mm, plane)
    blocked = _dilate(lungs, settings.lung_clearance_mm, plane)
    blocked |= (on_wall | ~posterior)[organs] & others
    blocked |= around_posterior
    allowed = body & ~behind_spine & ~blocked
    # Calcium on and round the vessels behind the heart is never added to the heart.
    no_calcium = around_posterior | behind_spine
    return _CoarseMasks(chambers=chambers, allowed=allowed | chambers, no_calcium=no_calcium)


def _most_heart_like(
    blobs: np.ndarray,
    smooth: np.ndarray,
    plane: tuple[float, float, float],
    settings: SegmentationSettings,
) -> np.ndarray:
    """The 3-D blob wrapped in the most fat: the heart, in its epicardial fat.

    The liver can be larger than the heart and also lies within the lungs' hull, but it
    borders the lungs, diaphragm and chest wall, not fat. Only the largest blobs compete.
    """
    labels, n = ndimage.label(blobs)
    if n <= 1:
        return blobs.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    contenders = np.argsort(sizes)[::-1][: settings.max_heart_candidates]
    contenders = contenders[sizes[contenders] > 0]
    fat = (smooth > settings.fat_min_hu) & (smooth < settings.soft_tissue_min_hu)
    best, best_fat = contenders[0], -1
    for label in contenders:
        blob = labels == label
        ring = _dilate(blob, settings.fat_ring_mm, plane) & ~blob
        n_fat = int(np.count_nonzero(ring & fat))
        if n_fat > best_fat:
            best, best_fat = label, n_fat
    return labels == best


def _heart_slices_only(
    chambers: np.ndarray,
    plane: tuple[float, float, float],
    z_mm: float,
    settings: SegmentationSettings,
) -> np.ndarray:
    """Keep the chambers on the run of slices that hold a heart-sized blob, and its caps.

    Above the heart the component goes on into the great vessels (aorta, pulmonary trunk,
    vena cava), tubes narrower than the heart: a 2-D opening by `heart_min_radius_mm`
    removes them and keeps the heart. Chamber parts farther than `vessel_attach_mm` from
    that blob are vessels. Up to `heart_cap_mm` beyond the run (the top of the atria and
    the aortic root, the apex) the chambers of the neighbouring slice are the reference.
    """
    bodies = _open(chambers, settings.heart_min_radius_mm, plane)
    has_body = bodies.any(axis=(1, 2))
    if not has_body.any():
        return np.zeros_like(chambers)
    runs, _ = ndimage.label(has_body)
    run = np.flatnonzero(runs == np.argmax(np.bincount(runs)[1:]) + 1)
    spacing = plane[1:]
    near = _dilate(bodies, settings.vessel_attach_mm, plane)
    kept = np.zeros_like(chambers)
    kept[run] = chambers[run] & near[run]
    # Beyond the run, follow the heart slice by slice: each cap slice keeps what lies
    # near the slice before it, as the atria and the apex shift and shrink.
    n_cap = int(settings.heart_cap_mm / z_mm + 1e-6)
    for step, start in ((-1, run[0]), (1, run[-1])):
        for k in range(start + step, start + step * (n_cap + 1), step):
            if not 0 <= k < len(chambers) or not kept[k - step].any():
                break
            kept[k] = chambers[k] & _dilate(kept[k - step], settings.vessel_attach_mm, spacing)
    return kept


def _above_diaphragm(
    chambers: np.ndarray,
    fat: np.ndarray,
    lungs: np.ndarray,
    plane: tuple[float, float, float],
    z_mm: float,
    settings: SegmentationSettings,
) -> np.ndarray:
    """Cut the abdominal organs (liver, spleen, stomach) off the heart's inferior end.

    The heart rests on the diaphragm, and below the diaphragm's domes the abdominal soft
    tissue touches it slice to slice, so the chambers' 3-D blob can run on into the
    abdomen. Below its widest section the heart only narrows (towards the apex and its
    diaphragmatic surface), while the domes widen downwards: from the widest section
    that is wrapped in epicardial fat, each slice towards the diaphragm keeps only what
    lies within `inferior_growth_mm` of the slice above it. The diaphragm's side is the
    end of the scan with less lung (the domes push the lungs' bases aside).
    """
    on_chambers = np.flatnonzero(chambers.any(axis=(1, 2)))
    if len(on_chambers) < 3:
        return chambers
    lung_area = lungs.sum(axis=(1, 2))
    third = max(len(lungs) // 3, 1)
    step = 1 if lung_area[-third:].mean() < lung_area[:third].mean() else -1
    spacing = plane[1:]
    area = np.zeros(len(chambers))
    for k in on_chambers:
        ring = _dilate(chambers[k], settings.fat_ring_mm, spacing) & ~chambers[k]
        if np.count_nonzero(ring & fat[k]) >= settings.heart_fat_wrap * np.count_nonzero(ring):
            area[k] = np.count_nonzero(chambers[k])
    if not area.any():
        return chambers
    widest = int(np.argmax(area))
    kept = chambers.copy()
    k = widest + step
    while 0 <= k < len(kept) and kept[k].any():
        kept[k] &= _dilate(kept[k - step], settings.inferior_growth_mm, spacing)
        k += step
    return kept


def _volume_thresholds(
    coarse: np.ndarray, settings: SegmentationSettings
) -> tuple[float | None, float]:
    """Air/tissue threshold (k=2, mean of centroids) and bone threshold (k=3, brightest)."""
    values = np.clip(np.rint(coarse), _AIR_HU, 3071).astype(np.int32) - int(_AIR_HU)
    counts = np.bincount(values.ravel(), minlength=3071 - int(_AIR_HU) + 1).astype(float)
    levels = np.arange(len(counts), dtype=float) + _AIR_HU
    air_tissue = _kmeans_1d(levels, counts, 2)
    # Air and tissue are ~1000 HU apart; two close centroids mean one of them is missing.
    if air_tissue is None or air_tissue[1] - air_tissue[0] < 300.0:
        return None, settings.bone_min_hu
    air_hu = float(np.mean(air_tissue))
    tissue = levels > air_hu
    bone_centroids = _kmeans_1d(levels[tissue], counts[tissue], 3)
    bone_hu = settings.bone_min_hu
    if bone_centroids is not None:
        bone_hu = max(float(bone_centroids[-1]), settings.bone_min_hu)
    return air_hu, bone_hu


def _kmeans_1d(
    levels: np.ndarray, counts: np.ndarray, k: int, iterations: int = 50
) -> np.ndarray | None:
    """Sorted centroids of a weighted 1-D K-means (Lloyd), started at count quantiles."""
    total = counts.sum()
    if total <= 0 or np.count_nonzero(counts) < k:
        return None
    cumulative = np.cumsum(counts) / total
    centroids = levels[np.searchsorted(cumulative, (np.arange(k) + 0.5) / k)].astype(float)
    for _ in range(iterations):
        edges = 0.5 * (centroids[1:] + centroids[:-1])
        cluster = np.searchsorted(edges, levels)
        weight = np.bincount(cluster, counts, minlength=k)
        moment = np.bincount(cluster, counts * levels, minlength=k)
        updated = np.where(weight > 0, moment / np.maximum(weight, 1e-12), centroids)
        if np.allclose(updated, centroids):
            break
        centroids = np.sort(updated)
    return centroids


def _spine_front_row(
    bone: np.ndarray, body: np.ndarray, settings: SegmentationSettings
) -> int | None:
    """Anterior edge (row) of the vertebral column: bone present in most slices, in the
    posterior half of the body, the largest such blob."""
    slices_with_body = body.any(axis=(1, 2))
    if not slices_with_body.any():
        return None
    persistent = bone[slices_with_body].mean(axis=0) >= settings.spine_persistence
    labels, n = ndimage.label(persistent)
    if n == 0:
        return None
    body_rows = np.flatnonzero(body.any(axis=(0, 2)))
    middle_row = 0.5 * (body_rows[0] + body_rows[-1])
    sizes = np.bincount(labels.ravel())[1:]
    centres = ndimage.center_of_mass(persistent, labels, np.arange(1, n + 1))
    best, best_size = None, 0
    for label, (size, centre) in enumerate(zip(sizes, centres, strict=True), start=1):
        if centre[0] > middle_row and size > best_size:
            best, best_size = label, size
    if best is None:
        return None
    return int(np.flatnonzero((labels == best).any(axis=1))[0])


# ---------------------------------------------------------------------------------------
# Full resolution


def _pericardial_margin(
    hu: np.ndarray,
    signed: np.ndarray,
    factors: tuple[int, int],
    settings: SegmentationSettings,
) -> float:
    """Distance (mm) from the chambers' surface to the outside of the pericardium.

    The fibrous pericardium is a thin line of soft tissue between the epicardial fat
    inside and the mediastinal fat outside. Round the chambers, the median HU of the fat
    and soft tissue at each distance dips in the epicardial fat and peaks on that line;
    the median over many slices finds it where no single ray would.
    """
    step_mm = 0.5
    n_bins = int(settings.pericardium_search_mm / step_mm)
    on_chambers = np.flatnonzero((signed <= 0).any(axis=(1, 2)))
    middle = on_chambers[len(on_chambers) // 4 : len(on_chambers) - len(on_chambers) // 4]
    distances, values = [], []
    for k in middle[::2]:
        window = _coarse_window(signed[k] <= settings.pericardium_search_mm)
        full = _full_window(window, factors, hu.shape[1:])
        distance = _upsample(signed[k][window], factors, full, window)
        hu_k = hu[k][full]
        ring = (distance > 0) & (distance < settings.pericardium_search_mm)
        ring &= (hu_k > -300) & (hu_k < THRESHOLD_HU)  # fat and soft tissue, no lung or bone
        distances.append(distance[ring])
        values.append(hu_k[ring])
    if not distances:
        return settings.default_pericardial_margin_mm
    distance = np.concatenate(distances)
    value = np.concatenate(values).astype(np.float32)
    bins = np.minimum((distance / step_mm).astype(int), n_bins - 1)
    order = np.argsort(bins, kind="stable")
    bins, value = bins[order], value[order]
    starts = np.searchsorted(bins, np.arange(n_bins + 1))
    profile = np.full(n_bins, np.nan)
    for i in range(n_bins):
        if starts[i + 1] - starts[i] >= 50:
            profile[i] = np.median(value[starts[i] : starts[i + 1]])
    # The first peak after the fat minimum, standing out of it by the minimum contrast.
    # Skip the partial volume of the chambers' own edge.
    valid = np.flatnonzero(np.isfinite(profile))
    valid = valid[valid * step_mm >= settings.pericardium_min_distance_mm]
    if len(valid) < 3:
        return settings.default_pericardial_margin_mm
    low = valid[0]
    for i in valid:
        if profile[i] < profile[low]:
            low = i
        elif profile[i] - profile[low] >= settings.pericardium_min_contrast_hu:
            peak = i
            while peak + 1 < n_bins and np.nan_to_num(profile[peak + 1], nan=-1e9) >= profile[peak]:
                peak += 1
            return (peak + 0.5) * step_mm + settings.pericardium_half_thickness_mm
    return settings.default_pericardial_margin_mm


def _coarse_window(mask: np.ndarray) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return slice(0, 0), slice(0, 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _full_window(
    window: tuple[slice, slice], factors: tuple[int, int], shape: tuple[int, int]
) -> tuple[slice, slice]:
    return tuple(
        slice(min(w.start * f, n), min(w.stop * f, n))
        for w, f, n in zip(window, factors, shape, strict=True)
    )


def _upsample(
    patch: np.ndarray,
    factors: tuple[int, int],
    full: tuple[slice, slice],
    window: tuple[slice, slice],
) -> np.ndarray:
    """Bilinear upsampling of a coarse patch onto the full-resolution pixels of `full`.

    Coarse pixel centres sit at (i + 0.5) * f - 0.5 in full-resolution pixels."""
    axes = []
    for w, fw, f in zip(window, full, factors, strict=True):
        axes.append((np.arange(fw.start, fw.stop) + 0.5) / f - 0.5 - w.start)
    rows, cols = axes
    r0 = np.clip(np.floor(rows).astype(int), 0, max(patch.shape[0] - 2, 0))
    c0 = np.clip(np.floor(cols).astype(int), 0, max(patch.shape[1] - 2, 0))
    r1 = np.minimum(r0 + 1, patch.shape[0] - 1)
    c1 = np.minimum(c0 + 1, patch.shape[1] - 1)
    tr = np.clip(rows - r0, 0.0, 1.0).astype(np.float32)[:, None]
    tc = np.clip(cols - c0, 0.0, 1.0).astype(np.float32)[None, :]
    patch = patch.astype(np.float32, copy=False)
    top = patch[r0][:, c0] * (1 - tc) + patch[r0][:, c1] * tc
    bottom = patch[r1][:, c0] * (1 - tc) + patch[r1][:, c1] * tc
    return top * (1 - tr) + bottom * tr


def _add_touching_calcium(
    heart: np.ndarray,
    hu: np.ndarray,
    spacing: tuple[float, float],
    no_calcium: np.ndarray,
    factors: tuple[int, int],
    settings: SegmentationSettings,
) -> None:
    """Add whole each calcium component at the edge of the mask (in place).

    A coronary plaque sits in the epicardial fat at the edge of the mask; cutting it, or
    leaving it just outside, would change its Agatston score. A component is added when
    it comes within `calcium_gap_mm` of the mask and no pixel of it lies farther out
    than `calcium_reach_mm`: a rib or the sternum reaches farther (or is larger than
    `max_calcium_area_mm2`) and stays out, and so does calcium on the vessels behind
    the heart (`no_calcium`, on the coarse grid).
    """
    max_pixels = settings.max_calcium_area_mm2 / (spacing[0] * spacing[1])
    pad = int(np.ceil(settings.calcium_reach_mm / min(spacing))) + 1
    for k in np.flatnonzero(heart.any(axis=(1, 2))):
        window = _coarse_window(heart[k])
        box = tuple(
            slice(max(w.start - pad, 0), min(w.stop + pad, n))
            for w, n in zip(window, heart.shape[1:], strict=True)
        )
        calcium = hu[k][box] >= THRESHOLD_HU
        if not calcium.any():
            continue
        distance = ndimage.distance_transform_edt(~heart[k][box], sampling=spacing)
        near = calcium & (distance > 0) & (distance <= settings.calcium_gap_mm)
        if not near.any():
            continue
        # Components are labelled on the whole slice: one may reach beyond the box.
        labels, _ = ndimage.label(hu[k] >= THRESHOLD_HU, _EIGHT_CONNECTED)
        box_labels = labels[box]
        for label in np.unique(box_labels[near]):
            component = labels == label
            n_pixels = int(component.sum())
            inside_box = box_labels == label
            if n_pixels > max_pixels or int(inside_box.sum()) < n_pixels:
                continue
            if distance[inside_box].max() > settings.calcium_reach_mm:
                continue
            rows, cols = np.nonzero(component)
            if no_calcium[k][rows // factors[0], cols // factors[1]].any():
                continue
            heart[k] |= component


# ---------------------------------------------------------------------------------------
# Morphology helpers (radii in mm)


def _open(mask: np.ndarray, radius_mm: float, sampling) -> np.ndarray:
    """Opening by a disc (2-D) or ball (3-D) of `radius_mm`; sampling = voxel size in mm.

    With a slice spacing of `_FAR_MM` each slice of the stack is opened on its own."""
    footprint = _small_footprint(radius_mm, sampling)
    if footprint is not None:
        return ndimage.binary_opening(mask, footprint)
    if len(sampling) == 3 and sampling[0] >= _FAR_MM:
        return _per_slice(_open, mask, radius_mm, sampling[1:])
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    inner = ndimage.distance_transform_edt(mask, sampling=sampling) > radius_mm
    if not inner.any():
        return np.zeros_like(mask)
    return ndimage.distance_transform_edt(~inner, sampling=sampling) <= radius_mm


def _dilate(mask: np.ndarray, radius_mm: float, sampling) -> np.ndarray:
    footprint = _small_footprint(radius_mm, sampling)
    if footprint is not None:
        return ndimage.binary_dilation(mask, footprint)
    if len(sampling) == 3 and sampling[0] >= _FAR_MM:
        return _per_slice(_dilate, mask, radius_mm, sampling[1:])
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask, sampling=sampling) <= radius_mm


def _small_footprint(radius_mm: float, sampling) -> np.ndarray | None:
    """The disc or ball of `radius_mm` as a footprint when it spans at most 5 pixels across.

    Small structuring elements are cheaper as plain binary morphology than as distance
    transforms; the footprint holds the pixels whose centres are within the radius."""
    if radius_mm <= 0:
        return None
    half = [0 if s >= _FAR_MM else int(radius_mm / s + 1e-9) for s in sampling]
    if max(half) > 2:
        return None
    grids = np.meshgrid(
        *[np.arange(-h, h + 1) * min(s, 1e3) for h, s in zip(half, sampling, strict=True)],
        indexing="ij",
    )
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-9


def _per_slice(operation, mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Apply a 2-D operation to each non-empty slice (an empty slice stays empty)."""
    out = np.zeros_like(mask)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        out[k] = operation(mask[k], radius_mm, spacing)
    return out


def _largest_per_slice(mask: np.ndarray) -> np.ndarray:
    """The largest 2-D component of each slice of a stack."""
    labels, n = ndimage.label(mask, _IN_PLANE)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    slice_of = np.zeros(n + 1, dtype=int)
    slice_of[labels.ravel()] = np.repeat(np.arange(mask.shape[0]), mask[0].size)
    keep = np.zeros(n + 1, dtype=bool)
    for k in np.unique(slice_of[1:]):
        ids = np.flatnonzero(slice_of == k)
        ids = ids[ids > 0]
        keep[ids[np.argmax(sizes[ids])]] = True
    return keep[labels]


def _remove_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """Drop 2-D components (of each slice) smaller than `min_pixels`."""
    structure = _IN_PLANE if mask.ndim == 3 else None
    labels, n = ndimage.label(mask, structure)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of a 2-D mask (pixel centres), from the row extremes and qhull."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return mask.copy()
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    points = np.concatenate(
        [np.stack([rows, first], axis=1), np.stack([rows, last], axis=1)]
    ).astype(float)
    try:
        hull = ConvexHull(points)
    except QhullError:  # a line or a point: its row extents are already its hull
        hull_mask = np.zeros_like(mask)
        for r, c0, c1 in zip(rows, first, last, strict=True):
            hull_mask[r, c0 : c1 + 1] = True
        return hull_mask
    # Each facet: a * row + b * col + offset <= 0 inside; solve for col on each row.
    a, b, offset = hull.equations[:, 0], hull.equations[:, 1], hull.equations[:, 2]
    row_range = np.arange(rows[0], rows[-1] + 1, dtype=float)
    rhs = -(a[None, :] * row_range[:, None] + offset[None, :])
    eps = 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = rhs / b[None, :]
    lower = np.where(b < -eps, bound, -np.inf).max(axis=1)
    upper = np.where(b > eps, bound, np.inf).min(axis=1)
    cols = np.arange(mask.shape[1], dtype=float)
    inside = (cols[None, :] >= lower[:, None] - 1e-6) & (cols[None, :] <= upper[:, None] + 1e-6)
    hull_mask = np.zeros_like(mask)
    hull_mask[rows[0] : rows[-1] + 1] = inside
    return hull_mask | mask


def _block_factor(pixel_mm: float, settings: SegmentationSettings) -> int:
    """Pixels per block: blocks of about `working_spacing_mm`, rather larger than smaller
    (the cost of the coarse masks grows with the square of the number of blocks), but
    never more than a quarter larger (coarser blocks bias the boundary)."""
    factor = max(1, int(np.ceil(settings.working_spacing_mm / pixel_mm - 1e-6)))
    if factor > 1 and factor * pixel_mm > 1.25 * settings.working_spacing_mm:
        factor -= 1
    return factor


def _block_mean(hu: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """Mean of f_r x f_c blocks of each slice (edges padded with air)."""
    fr, fc = factors
    s, r, c = hu.shape
    pr, pc = -r % fr, -c % fc
    if pr or pc:
        hu = np.pad(hu, ((0, 0), (0, pr), (0, pc)), constant_values=_AIR_HU)
    blocks = hu.reshape(s, (r + pr) // fr, fr, (c + pc) // fc, fc)
    return blocks.sum(axis=(2, 4), dtype=np.float32) / np.float32(fr * fc)


def _pair(pixel_spacing_mm: float | tuple[float, float]) -> tuple[float, float]:
    values = np.atleast_1d(np.asarray(pixel_spacing_mm, dtype=float)).ravel()
    if values.size == 1:
        values = np.repeat(values, 2)
    if values.size != 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise SegmentationError(f"pixel spacing must be one or two positive mm, got {values}")
    return float(values[0]), float(values[1])


# ---------------------------------------------------------------------------------------
# Quality control against a known truth (synthetic cohort)


def segmentation_scores(
    heart_mask_pred: np.ndarray,
    heart_mask_true: np.ndarray | None,
    hu: np.ndarray,
    lesion_labels: np.ndarray,
    lesion_kind: np.ndarray,
    pixel_spacing_mm: float | tuple[float, float],
) -> dict:
    """Dice of the heart mask (when a true one is given) and how many true coronary
    lesions it holds whole.

    A lesion is what the Agatston score counts: an 8-connected component, in one slice,
    of coronary-lesion pixels >= 130 HU with an area >= 1 mm^2. It is inside when every
    such pixel of it is inside the predicted mask.
    """
    pred = np.asarray(heart_mask_pred, dtype=bool)
    true = pred if heart_mask_true is None else np.asarray(heart_mask_true, dtype=bool)
    if pred.shape != true.shape or pred.shape != np.shape(hu):
        raise SegmentationError(
            f"shapes differ: prediction {pred.shape}, truth {true.shape}, hu {np.shape(hu)}"
        )
    spacing = _pair(pixel_spacing_mm)
    coronary_ids = np.flatnonzero(np.asarray(lesion_kind) == "coronary")
    coronary = np.isin(lesion_labels, coronary_ids[coronary_ids > 0]) & (
        np.asarray(hu) >= THRESHOLD_HU
    )
    pixel_area = spacing[0] * spacing[1]
    n_lesions = n_inside = 0
    for k in np.flatnonzero(coronary.any(axis=(1, 2))):
        labels, n = ndimage.label(coronary[k], _EIGHT_CONNECTED)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        outside = np.bincount(labels[~pred[k]], minlength=n + 1)
        lesion = sizes * pixel_area >= MIN_AREA_MM2  # as the Agatston score counts them
        lesion[0] = False
        n_lesions += int(lesion.sum())
        n_inside += int((lesion & (outside == 0)).sum())

    inside = {
        "n_lesions": n_lesions,
        "n_lesions_inside": n_inside,
        "lesion_inside_fraction": n_inside / n_lesions if n_lesions else float("nan"),
    }
    if heart_mask_true is None:
        return inside
    true_area = true.sum(axis=(1, 2))
    pred_area = pred.sum(axis=(1, 2))
    overlap = (pred & true).sum(axis=(1, 2))
    heart_slices = true_area > 0
    dice_per_slice = 2.0 * overlap[heart_slices] / (true_area + pred_area)[heart_slices]
    total = int(true_area.sum() + pred_area.sum())
    return {
        "dice_heart_slices": float(dice_per_slice.mean()) if heart_slices.any() else float("nan"),
        "n_heart_slices": int(heart_slices.sum()),
        "n_nonheart_slices": int((~heart_slices).sum()),
        "nonempty_rate_nonheart": (
            float((pred_area[~heart_slices] > 0).mean()) if (~heart_slices).any() else float("nan")
        ),
        **inside,
        "dice_volume": 2.0 * int(overlap.sum()) / total if total else 1.0,
    }
