"""Agatston scores per patient: classical (the standard algorithm inside the heart mask, less
the candidates that automated CAC software rejects) and hybrid (the classical lesions that a
CNN's images call calcium), and the merged table.

Classical: `cacflow.scoring.agatston.agatston_score` (HU >= 130, 8-connected 2-D lesions >= 1 mm^2,
density weights 1-4, score x slice spacing / 3 mm) on the ingested HU volume restricted to
the heart mask of `cacflow.imaging.segmentation`. The mask holds the aortic root, the valves and
the mitral annulus, can take in bone at its edge, and on a noisy scan blood and myocardium
cross 130 HU by chance; a reader clicks such lesions away, automated tools reject them by
rules or by what they learned (González et al., "Automated Agatston score computation in a
large dataset of non ECG-gated chest CT": heart region, threshold, then rules against
calcium of the main vessels; van Velzen et al. 2020, DeepCAC and AI-CAC learn it). Five
rules, each a deviation from the standard algorithm with its setting in `ScoringSettings`
(config ``agatston: classical:``), drop whole candidate lesions, never parts of one; a
lesion is dropped by the first that applies:

1. bone (``bone_outside_mm3``): the lesion is part of a 3-D (26-connected) >= 130 HU
   structure of which at least this volume lies outside the heart mask: a vertebra, rib or
   sternum the mask's edge takes in. A coronary plaque lies in the epicardial fat inside
   the pericardium, and the segmentation adds a plaque at the mask's edge whole.
2. deep (``max_depth_mm``): no pixel of the lesion comes within this distance (3-D, in mm)
   of the mask's surface. Coronary arteries are epicardial, running in the fat of the
   atrioventricular and interventricular grooves on the heart's surface; calcium deep in the
   heart lies in the aortic valve and root, the mitral annulus or the chambers' walls.
3. noise (``noise_peak_sd``): the lesion's peak HU is below the patient's blood/myocardium
   level + k x its noise SD (both robust: median and 1.4826 x MAD of the mask's pixels whose
   2 mm-smoothed HU is 0-100 HU, at least 2 mm inside the mask). With noise SD s, about one
   independent pixel in 3.5 million exceeds the level by 5 s, so a noise blob rarely passes
   k = 5; a calcification of a few hundred HU passes at any noise a calcium scan has
   (the rule is idle while level + k x s < 130 HU: s below about 17 HU at k = 5).
4. aorta (``aorta_fat_share``): the lesion lies on the wall of the aorta where it runs
   free in the mediastinum. On the lesion's slice, fat-free discs of 9-24 mm radius (the
   adult ascending and descending aorta, Hager et al., J Thorac Cardiovasc Surg 2002) are
   tried round it, each the largest free of fat (or lung, below -30 HU after 1.5 mm
   smoothing) about its centre, with the lesion's outermost pixel on its edge (4 mm inside
   to 3 mm outside it: a plaque or an arc of calcium in the wall); the one whose edge
   faces fat the most must do so over at least this share of its circumference, or the
   tube must run on below the lesion for at least 30 mm. Then a disc of about the same size
   must be found on every slice above, to the first slice of the scan: per 3 mm of slice
   spacing its centre moves at most 4 mm and its radius 3 mm (at least 1 mm a slice; at
   most 6 mm from the lesion slice's radius in all), with fat over at least 30 % of its
   edge (the trace below follows the same steps). A coronary artery never runs up to the
   top of a cardiac scan; the aorta does. The coronary ostia sit in the sinuses of
   Valsalva, at most about 2 cm above the aortic valve, where the root is embedded among
   the atria and the right ventricular outflow and fat meets little of its edge (0.4-0.58
   on the synthetic cohorts, against 0.5-0.8 for wall plaques higher up), and the tube
   ends in the heart (traced on to 21-27 mm below ostial plaques on the synthetic
   cohorts). So ostial and proximal coronary calcium is kept; plaques on the
   root's wall at that level are kept with it, and so is a lesion on the scan's first
   slice (no slice above to show a tube). Higher up, a wall plaque on an aorta flanked by
   the pulmonary artery and the superior vena cava (fat on less of its edge) is dropped
   by the tube running on below it, as is one on the descending aorta.
5. pixels (``min_lesion_pixels``, off by default): the lesion has fewer pixels than this, as
   well as the standard 1 mm^2. Software differs here (2-4 pixels; van Ooijen et al., Eur
   Radiol 2005, 15:102-110, measured the effect): at 0.7-0.8 mm pixels 1 mm^2 is 2 pixels,
   which noise fills easily. A pixel count depends on the matrix, though: at 2 mm pixels
   (a 160 px image) even 2 pixels drop real plaques, while the noise rule, which measures
   the noise, does the same work at any pixel size (on the synthetic cohort at 0.5-0.8 mm it
   leaves 3 pixels nothing to remove).

`STANDARD` switches every rule off: the plain standard algorithm inside the mask.
`filter_candidates` says which candidate pixels each rule removed (the agreement benchmark
reports it). Not handled: calcium of the aortic root's wall at the level of the sinuses
(which no rule here tells from an ostial coronary plaque), of an aorta that does not reach
the scan's first slice as a round tube, and valve calcium less than ``max_depth_mm`` deep.
The volume is taken as contiguous slices; beyond its first and last slice counts as outside
the heart (a lesion there is never "deep").

Each scored lesion is listed with the images of the datasets that show it, in the
manifests' coordinates (`cacflow.imaging.datasets`): its slice is the DICOM instance number (the
manifests' ``slice``), whole-slice images are tile 0, and its cropped tiles are those of the
3x3 grid over `heart_box` (`tile_boxes`, numbered 1..grid^2 row-major) that hold at least
one of its pixels. Every lesion pixel is inside the heart mask, so the segmented image and
the listed tiles show it.

Hybrid (ours: Lee et al. 2021 classify images but give no score): the classifier stands in
for the reader who removes non-coronary candidates. A lesion counts when at least one image
that shows it (its slice's original or segmented image, or one of its tiles) has a
predicted calcium probability >= the threshold; images without a prediction count as not
calcium.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from cacflow import settings_from_config
from cacflow.imaging.geometry import heart_box, tile_boxes
from cacflow.imaging.volume import Volume
from cacflow.scoring.agatston import (
    MIN_AREA_MM2,
    THRESHOLD_HU,
    Lesion2D,
    agatston_score,
    risk_category,
)
from cacflow.scoring.arteries import (
    ARTERIES,
    ARTERY_COLUMNS,
    heart_axes,
    lesion_arteries,
    score_by_artery,
)
from cacflow.tables import read_tsv

CLASSICAL = "classical"
PATIENT_COLUMNS = (
    "patient_id",
    "method",
    "agatston",
    "volume_mm3",
    "risk_category",
    "n_lesions",
    *ARTERY_COLUMNS,
    "n_vessels",  # arteries with calcium, as CAC-DRS reports it
)
TRUTH_COLUMNS = (
    "truth_agatston",
    "truth_volume_mm3",
    "truth_risk_category",
    *(f"truth_{column}" for column in ARTERY_COLUMNS),
)
MERGED_COLUMNS = PATIENT_COLUMNS + TRUTH_COLUMNS
LESION_COLUMNS = (
    "patient_id",
    "slice",  # DICOM instance number, as in the dataset manifests
    "slice_index",  # position in the volume (superior to inferior)
    "centroid_row",
    "centroid_col",
    "area_mm2",
    "peak_hu",
    "weight",
    "score",
    "volume_mm3",
    "tiles",  # cropped tiles holding lesion pixels, comma-separated (1..grid^2)
    "artery",  # LAD (left main included), LCX or RCA (cacflow.scoring.arteries)
)
DEFAULT_HYBRID_THRESHOLD = 0.5
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # as cacflow.scoring.agatston
# 8-connected within each slice only, for labelling a stack of slices in one call.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = True
_TWENTY_SIX_CONNECTED = np.ones((3, 3, 3), dtype=bool)
# Noise estimate: blood and myocardium (+40 to +50 HU, reference.md) after smoothing, away
# from the mask's edge (fat, partial volume).
_TISSUE_HU = (0.0, 100.0)
_TISSUE_SMOOTHING_MM = 2.0
_TISSUE_INSET_MM = 2.0
MAD_TO_SD = 1.4826
EXCLUSION_RULES = ("bone", "deep", "noise", "aorta", "pixels")
# Aortic wall rule: fat is below -30 HU after 1.5 mm smoothing (midway between fat, about
# -100 HU, and blood, +40 HU); the aorta's radius; how far its disc moves and changes per
# slice while traced upwards; the share of its edge that must face fat there.
_FAT_HU = -30.0
_FAT_SMOOTHING_MM = 1.5
_AORTA_RADIUS_MM = (9.0, 24.0)
_AORTA_RIM_MM = (4.0, 3.0)  # the lesion's outermost pixel: inside to outside the disc's edge
_AORTA_SHIFT_MM_PER_3MM = 4.0
_AORTA_RADIUS_CHANGE_MM = 3.0  # per 3 mm of slice spacing (at least 1 mm a slice)
_AORTA_RADIUS_DRIFT_MM = 6.0  # from the radius on the lesion's slice, over the whole trace
_AORTA_TRACE_FAT_SHARE = 0.3
# The coronary ostia lie at most about 2 cm above the aortic valve, and the trace can follow
# the tube on into the outflow tract for about 1 cm more: a wall lesion on a tube that runs
# on at least this far below it lies above them.
_AORTA_BELOW_OSTIA_MM = 30.0
_EDGE_ANGLES = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
_EDGE_OUTSIDE_MM = 1.5  # the edge is sampled this far outside the disc


class ScoringError(ValueError):
    """Inputs that cannot be scored together (shapes, slice order, table columns)."""


@dataclass(frozen=True)
class ScoringSettings:
    """Rules of the classical score on top of the standard algorithm (module docstring);
    0 switches a rule off."""

    bone_outside_mm3: float = 100.0  # a >= 130 HU structure this big outside the mask is bone
    max_depth_mm: float = 12.0  # calcium deeper in the heart than this is not coronary
    noise_peak_sd: float = 5.0  # a lesion's peak must exceed the tissue level by k noise SDs
    aorta_fat_share: float = 0.6  # wall of a tube to the scan's top, this much of it in fat
    min_lesion_pixels: int = 0  # as well as the standard 1 mm^2 (e.g. 3 at fine pixels)

    @classmethod
    def from_config(cls, values: Mapping) -> ScoringSettings:
        """From the config's ``agatston: classical:`` mapping (unknown keys fail)."""
        try:
            return settings_from_config(cls, dict(values or {}), strict=True)
        except ValueError as error:
            raise ValueError(f"agatston.classical: {error}") from None


STANDARD = ScoringSettings(
    bone_outside_mm3=0.0,
    max_depth_mm=0.0,
    noise_peak_sd=0.0,
    aorta_fat_share=0.0,
    min_lesion_pixels=0,
)


@dataclass(frozen=True)
class CandidateFilter:
    """What the rules of `ScoringSettings` make of a patient's candidate lesions."""

    region: np.ndarray  # the heart mask less the excluded lesions: where calcium counts
    excluded: dict[str, np.ndarray] = field(default_factory=dict)  # rule -> its pixels
    tissue_hu: float = float("nan")  # blood/myocardium level (median)
    noise_sd_hu: float = float("nan")  # its noise (1.4826 x MAD); NaN when not measured


@dataclass(frozen=True)
class Candidate:
    """A candidate lesion of the standard algorithm inside the heart mask, and what the
    rules made of it: "kept" or the rule that rejected it."""

    lesion: Lesion2D
    outcome: str


@dataclass(frozen=True)
class PatientScore:
    """A patient's row of the scores table, the rows of its scored lesions, every
    candidate lesion with the rules' verdict (the lesion gallery draws them) and where
    calcium counted (the lesion-level evaluation compares it with a reference)."""

    row: dict
    lesions: list[dict]
    candidates: list[Candidate] = field(default_factory=list)
    filtered: CandidateFilter | None = None  # the rules' verdicts, voxel by voxel

    @property
    def region(self) -> np.ndarray | None:
        """Where calcium counted."""
        return None if self.filtered is None else self.filtered.region


def patient_row(
    patient_id: str,
    method: str,
    agatston: float,
    volume_mm3: float,
    lesions: Sequence[Mapping] = (),
) -> dict:
    """A `PATIENT_COLUMNS` row; `lesions`: the scored lesion rows (artery, score)."""
    by_artery = score_by_artery(lesions)
    return {
        "patient_id": patient_id,
        "method": method,
        "agatston": round(float(agatston), 3),
        "volume_mm3": round(float(volume_mm3), 3),
        "risk_category": risk_category(agatston),
        "n_lesions": len(lesions),
        **{
            column: round(by_artery[artery], 3)
            for column, artery in zip(ARTERY_COLUMNS, ARTERIES, strict=True)
        },
        "n_vessels": sum(score > 0 for score in by_artery.values()),
    }


def tissue_noise(
    hu: np.ndarray, heart_mask: np.ndarray, pixel_spacing_mm: tuple[float, float]
) -> tuple[float, float]:
    """(level, noise SD) in HU of the blood and myocardium in `heart_mask`: the median and
    1.4826 x MAD of the mask's pixels at least 2 mm inside it whose 2 mm-smoothed HU is
    0-100; (NaN, NaN) when there are none."""
    heart_mask = np.asarray(heart_mask, dtype=bool)
    if not heart_mask.any():
        return float("nan"), float("nan")
    box = _bounding_box(heart_mask)
    hu_box = np.asarray(hu[box], dtype=np.float32)
    mask_box = heart_mask[box]
    sigma = [0.0] + [_TISSUE_SMOOTHING_MM / float(s) for s in pixel_spacing_mm]
    smooth = ndimage.gaussian_filter(hu_box, sigma, mode="nearest")
    inset = np.stack(
        [
            ndimage.distance_transform_edt(np.pad(m, 1), sampling=pixel_spacing_mm)[1:-1, 1:-1]
            for m in mask_box
        ]
    )
    tissue = (inset >= _TISSUE_INSET_MM) & (smooth >= _TISSUE_HU[0]) & (smooth <= _TISSUE_HU[1])
    if not tissue.any():
        return float("nan"), float("nan")
    values = hu_box[tissue]
    level = float(np.median(values))
    return level, MAD_TO_SD * float(np.median(np.abs(values - level)))


def filter_candidates(
    hu: np.ndarray,
    heart_mask: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: float,
    settings: ScoringSettings = ScoringSettings(),
) -> CandidateFilter:
    """The rules of `settings` on the standard algorithm's lesions inside `heart_mask`
    (slice x row x col, superior to inferior, as `hu`); see the module docstring."""
    hu = np.asarray(hu)
    heart_mask = np.asarray(heart_mask, dtype=bool)
    candidates = (hu >= THRESHOLD_HU) & heart_mask
    components, n_components = ndimage.label(candidates, _IN_PLANE)
    excluded = {rule: np.zeros(hu.shape, dtype=bool) for rule in EXCLUSION_RULES}
    if n_components == 0:
        return CandidateFilter(heart_mask, excluded)
    # Per-component statistics over the candidate pixels only (few, unlike the volume's).
    where = np.nonzero(candidates)
    owner = components[where]
    n_pixels = np.bincount(owner, minlength=n_components + 1)[1:]

    def per_component(ufunc: np.ufunc, values: np.ndarray, start: float) -> np.ndarray:
        out = np.full(n_components + 1, start, dtype=float)
        ufunc.at(out, owner, values)
        return out[1:]

    pixel_area_mm2 = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    voxel_mm3 = pixel_area_mm2 * float(slice_spacing_mm)
    reason = np.zeros(n_components + 1, dtype=np.int8)  # 0: kept, else 1 + rule index
    # Only lesions the standard algorithm keeps (>= 1 mm^2) are judged.
    judged = np.concatenate([[False], n_pixels * pixel_area_mm2 >= MIN_AREA_MM2])

    def exclude(rule: str, hit: np.ndarray) -> None:
        hit = np.concatenate([[False], np.asarray(hit, dtype=bool)]) & judged & (reason == 0)
        reason[hit] = EXCLUSION_RULES.index(rule) + 1

    if settings.bone_outside_mm3 > 0:
        structures, _ = ndimage.label(hu >= THRESHOLD_HU, _TWENTY_SIX_CONNECTED)
        outside_mm3 = np.bincount(structures[~heart_mask]) * voxel_mm3
        outside_mm3[0] = 0.0
        bone_ids = np.flatnonzero(outside_mm3 >= settings.bone_outside_mm3)
        on_bone = np.isin(structures[where], bone_ids)
        exclude("bone", per_component(np.maximum, on_bone, 0.0) > 0)
    if settings.max_depth_mm > 0:
        box = _bounding_box(heart_mask)
        sampling = (float(slice_spacing_mm), *map(float, pixel_spacing_mm))
        # Padded on every side: beyond the scan's first and last slice is outside too.
        depth = ndimage.distance_transform_edt(np.pad(heart_mask[box], 1), sampling=sampling)
        offset = [b.start - 1 for b in box]
        depth_at = depth[tuple(w - o for w, o in zip(where, offset, strict=True))]
        exclude("deep", per_component(np.minimum, depth_at, np.inf) > settings.max_depth_mm)
    level, noise_sd = float("nan"), float("nan")
    if settings.noise_peak_sd > 0:
        level, noise_sd = tissue_noise(hu, heart_mask, pixel_spacing_mm)
        if np.isfinite(noise_sd):
            peaks = per_component(np.maximum, hu[where], -np.inf)
            exclude("noise", peaks < level + settings.noise_peak_sd * noise_sd)
    if settings.aorta_fat_share > 0:
        fat = _FatMaps(hu, heart_mask, pixel_spacing_mm)
        aortic = np.zeros(n_components, dtype=bool)
        for i in np.flatnonzero(judged[1:] & (reason[1:] == 0)):
            mine = owner == i + 1
            k = int(where[0][mine][0])  # components lie within one slice
            lesion = (where[1][mine], where[2][mine])
            aortic[i] = on_aortic_wall(fat, k, lesion, slice_spacing_mm, settings.aorta_fat_share)
        exclude("aorta", aortic)
    if settings.min_lesion_pixels > 0:
        exclude("pixels", n_pixels < settings.min_lesion_pixels)

    pixel_reason = reason[components]
    for k, rule in enumerate(EXCLUSION_RULES, start=1):
        excluded[rule] = pixel_reason == k
    region = heart_mask & (pixel_reason == 0)
    return CandidateFilter(region, excluded, level, noise_sd)


def candidate_lesions(
    hu: np.ndarray,
    heart_mask: np.ndarray,
    candidate_filter: CandidateFilter,
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: float,
) -> list[Candidate]:
    """Every lesion of the standard algorithm inside `heart_mask` (the Agatston lesions of
    `cacflow.scoring.agatston`), with the outcome `filter_candidates` gave it."""
    outcome = np.zeros(np.shape(hu), dtype=np.int8)  # 0: kept, else 1 + rule index
    for k, rule in enumerate(EXCLUSION_RULES, start=1):
        outcome[candidate_filter.excluded[rule]] = k
    lesions = agatston_score(
        hu, heart_mask, pixel_spacing_mm, slice_spacing_mm, lesion_labels=outcome
    ).lesions
    names = ("kept", *EXCLUSION_RULES)
    return [Candidate(lesion, names[lesion.label]) for lesion in lesions]


class _FatMaps:
    """Per slice, computed when first asked, inside a box round the heart mask: where the
    1.5 mm-smoothed HU is fat or lung, and each pixel's distance (mm) to the nearest such
    pixel. Coordinates are the volume's (row, col); the box is the mask's in-plane extent
    widened by 40 mm (beyond the largest disc and its edge)."""

    _MARGIN_MM = 40.0

    def __init__(
        self, hu: np.ndarray, heart_mask: np.ndarray, pixel_spacing_mm: tuple[float, float]
    ) -> None:
        self.hu = hu
        self.spacing = np.asarray(pixel_spacing_mm, dtype=float)
        rows, cols = _bounding_box(heart_mask.any(axis=0))
        margin = np.ceil(self._MARGIN_MM / self.spacing).astype(int)
        self.origin = np.array([max(rows.start - margin[0], 0), max(cols.start - margin[1], 0)])
        self.box = (
            slice(int(self.origin[0]), min(rows.stop + int(margin[0]), hu.shape[1])),
            slice(int(self.origin[1]), min(cols.stop + int(margin[1]), hu.shape[2])),
        )
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._maps:
            sigma = _FAT_SMOOTHING_MM / self.spacing
            patch = np.asarray(self.hu[k][self.box], dtype=np.float32)
            fat = ndimage.gaussian_filter(patch, sigma) < _FAT_HU
            to_fat = ndimage.distance_transform_edt(~fat, sampling=self.spacing)
            self._maps[k] = fat, to_fat.astype(np.float32)
        return self._maps[k]


def _vessel_disc(
    fat: _FatMaps,
    k: int,
    near: np.ndarray,
    max_shift_mm: float,
    radius_mm: tuple[float, float],
    lesion: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, float, float] | None:
    """(centre (row, col), radius mm, share of the edge in fat or lung) of the vessel-like
    disc of slice `k` centred within `max_shift_mm` of `near` whose edge faces fat the most.

    A candidate centre's disc is the largest one free of fat (radius: its distance to fat),
    of a radius within `radius_mm`. With `lesion` (its pixels' rows and cols), the lesion's
    pixel farthest from the centre must lie on the disc's edge (4 mm inside to 3 mm
    outside it), so a plaque or an arc of calcium on the wall qualifies, while calcium
    deeper inside or farther out does not. The edge is sampled 1.5 mm outside the disc;
    samples beyond the box count as no fat."""
    is_fat, to_fat = fat[k]
    local = np.asarray(near, dtype=float) - fat.origin
    reach = np.ceil(max_shift_mm / fat.spacing).astype(int)
    r0, c0 = (int(np.rint(v)) for v in local)
    rows = np.arange(max(r0 - reach[0], 0), min(r0 + reach[0] + 1, is_fat.shape[0]))
    cols = np.arange(max(c0 - reach[1], 0), min(c0 + reach[1] + 1, is_fat.shape[1]))
    rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    offset = np.hypot((rr - local[0]) * fat.spacing[0], (cc - local[1]) * fat.spacing[1])
    radius = to_fat[rr, cc].astype(float)
    ok = (offset <= max_shift_mm) & (radius >= radius_mm[0]) & (radius <= radius_mm[1])
    rr, cc, radius = rr[ok], cc[ok], radius[ok]
    if lesion is not None and len(rr):
        lr = np.asarray(lesion[0], dtype=float) - fat.origin[0]
        lc = np.asarray(lesion[1], dtype=float) - fat.origin[1]
        farthest = np.hypot(
            (lr[None] - rr[:, None]) * fat.spacing[0], (lc[None] - cc[:, None]) * fat.spacing[1]
        ).max(axis=1)
        on_edge = (farthest >= radius - _AORTA_RIM_MM[0]) & (farthest <= radius + _AORTA_RIM_MM[1])
        rr, cc, radius = rr[on_edge], cc[on_edge], radius[on_edge]
    if not len(rr):
        return None
    edge = radius[:, None] + _EDGE_OUTSIDE_MM
    er = np.rint(rr[:, None] + edge * np.sin(_EDGE_ANGLES)[None] / fat.spacing[0]).astype(int)
    ec = np.rint(cc[:, None] + edge * np.cos(_EDGE_ANGLES)[None] / fat.spacing[1]).astype(int)
    inside = (er >= 0) & (er < is_fat.shape[0]) & (ec >= 0) & (ec < is_fat.shape[1])
    hit = np.zeros(er.shape, dtype=bool)
    hit[inside] = is_fat[er[inside], ec[inside]]
    share = hit.mean(axis=1)
    best = int(np.argmax(share))
    centre = np.array([rr[best], cc[best]], dtype=float) + fat.origin
    return centre, float(radius[best]), float(share[best])


def _traced_slices(
    fat: _FatMaps,
    k: int,
    disc: tuple[np.ndarray, float],
    step: int,
    slice_spacing_mm: float,
    limit: int,
) -> int:
    """How many slices (up to `limit`) the tube of `disc` (centre, radius on slice `k`) runs
    on, slice by slice in the direction `step` (-1 up, +1 down), as rule 4 traces it."""
    centre, radius = disc
    at_lesion = radius
    per_3mm = float(slice_spacing_mm) / 3.0
    shift = _AORTA_SHIFT_MM_PER_3MM * per_3mm
    change = max(_AORTA_RADIUS_CHANGE_MM * per_3mm, 1.0)
    for n in range(limit):
        sizes = (
            max(_AORTA_RADIUS_MM[0], radius - change, at_lesion - _AORTA_RADIUS_DRIFT_MM),
            min(_AORTA_RADIUS_MM[1], radius + change, at_lesion + _AORTA_RADIUS_DRIFT_MM),
        )
        found = _vessel_disc(fat, k + step * (n + 1), centre, shift, sizes)
        if found is None or found[2] < _AORTA_TRACE_FAT_SHARE:
            return n
        centre, radius, _ = found
    return limit


def on_aortic_wall(
    fat: _FatMaps,
    k: int,
    lesion: tuple[np.ndarray, np.ndarray],
    slice_spacing_mm: float,
    min_fat_share: float,
) -> bool:
    """Whether a lesion of slice `k` (its pixels' rows and cols) lies on the wall of a
    round tube that runs up to the scan's first slice, free in fat on the lesion's slice or
    running on below it past the coronary ostia (rule 4 of the module docstring). A lesion
    on the first slice has no slice above to show a tube and is kept."""
    if k == 0:
        return False
    centroid = np.array([np.mean(lesion[0]), np.mean(lesion[1])])
    reach = _AORTA_RADIUS_MM[1] + _AORTA_RIM_MM[1]
    disc = _vessel_disc(fat, k, centroid, reach, _AORTA_RADIUS_MM, lesion)
    if disc is None:
        return False
    centre, radius, share = disc
    if share < min_fat_share:
        below = int(np.ceil(_AORTA_BELOW_OSTIA_MM / float(slice_spacing_mm)))
        if k + below >= fat.hu.shape[0]:  # the scan ends first: no tube shown that far
            return False
        if _traced_slices(fat, k, (centre, radius), 1, slice_spacing_mm, below) < below:
            return False
    return _traced_slices(fat, k, (centre, radius), -1, slice_spacing_mm, k) == k


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True of a non-empty mask."""
    return tuple(
        slice(int(idx[0]), int(idx[-1]) + 1)
        for idx in (
            np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != d)))
            for d in range(mask.ndim)
        )
    )


def classical_score(
    patient_id: str,
    volume: Volume,
    heart_mask: np.ndarray,
    grid: int = 3,
    settings: ScoringSettings = ScoringSettings(),
    mask_instance_numbers: Sequence[int] | None = None,
) -> PatientScore:
    """Agatston score of the calcium of `volume` inside `heart_mask` (slice x row x col, as
    `volume.hu`) that the rules of `settings` keep (`STANDARD`: all of it), with the lesions
    and the cropped tiles (`grid` x `grid`) that show them, and every candidate lesion with
    its verdict (`candidate_lesions`). `mask_instance_numbers`: the slices a saved mask was
    made for, checked against the volume's when given."""
    hu = np.asarray(volume.hu)
    heart_mask = np.asarray(heart_mask, dtype=bool)
    instances = [int(n) for n in volume.instance_numbers]
    pixel_spacing_mm, slice_spacing_mm = volume.pixel_spacing_mm, volume.slice_spacing_mm
    if hu.ndim != 3 or heart_mask.shape != hu.shape:
        raise ScoringError(
            f"{patient_id}: heart mask shape {heart_mask.shape} differs from HU {hu.shape}"
        )
    if len(instances) != hu.shape[0]:
        raise ScoringError(
            f"{patient_id}: {len(instances)} instance numbers for {hu.shape[0]} slices"
        )
    if mask_instance_numbers is not None and [int(n) for n in mask_instance_numbers] != instances:
        raise ScoringError(
            f"{patient_id}: the segmentation's slices (instance numbers) differ from the volume's"
        )
    found = filter_candidates(hu, heart_mask, pixel_spacing_mm, slice_spacing_mm, settings)
    region = found.region
    result = agatston_score(hu, region, pixel_spacing_mm, slice_spacing_mm)
    by_slice: dict[int, list] = defaultdict(list)
    for lesion in result.lesions:
        by_slice[lesion.slice_index].append(lesion)

    pixel_area_mm2 = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    axes = None
    if by_slice:
        axes = heart_axes(heart_mask, pixel_spacing_mm, slice_spacing_mm, volume.orientation)
    rows, positions = [], []
    for k, lesions in sorted(by_slice.items()):
        pixels = _lesion_pixels(hu[k], region[k], pixel_area_mm2)
        if [len(p[0]) for p in pixels] != [lesion.n_pixels for lesion in lesions]:
            raise ScoringError(f"{patient_id}: slice {k}: lesions do not match their pixels")
        box = heart_box(heart_mask[k], grid)
        tiles = tile_boxes(box, grid)
        for lesion, (r, c) in zip(lesions, pixels, strict=True):
            shown = [
                n
                for n, (r0, r1, c0, c1) in enumerate(tiles, start=1)
                if np.any((r >= r0) & (r < r1) & (c >= c0) & (c < c1))
            ]
            rows.append(
                {
                    "patient_id": patient_id,
                    "slice": instances[k],
                    "slice_index": k,
                    "centroid_row": round(lesion.centroid_row, 2),
                    "centroid_col": round(lesion.centroid_col, 2),
                    "area_mm2": round(lesion.area_mm2, 4),
                    "peak_hu": round(lesion.peak_hu, 1),
                    "weight": lesion.weight,
                    "score": round(lesion.score, 4),
                    "volume_mm3": round(lesion.area_mm2 * float(slice_spacing_mm), 4),
                    "tiles": ",".join(map(str, shown)),
                }
            )
            positions.append((k, lesion.centroid_row, lesion.centroid_col))
    if rows:
        arteries = lesion_arteries(
            axes, positions, [r["score"] for r in rows], pixel_spacing_mm, slice_spacing_mm
        )
        for lesion_row, artery in zip(rows, arteries, strict=True):
            lesion_row["artery"] = artery
    row = patient_row(patient_id, CLASSICAL, result.total, result.volume_mm3, rows)
    candidates = candidate_lesions(hu, heart_mask, found, pixel_spacing_mm, slice_spacing_mm)
    return PatientScore(row, rows, candidates, found)


def _lesion_pixels(
    hu_slice: np.ndarray, mask_slice: np.ndarray, pixel_area_mm2: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, cols) of each lesion of a slice, in the order `agatston_score` lists them
    (component id order of the same 8-connected labelling)."""
    candidates = (hu_slice >= THRESHOLD_HU) & mask_slice
    components, _ = ndimage.label(candidates, _EIGHT_CONNECTED)
    found = ndimage.find_objects(components)
    pixels = []
    for comp_id, where in enumerate(found, start=1):
        if where is None:
            continue
        r, c = np.nonzero(components[where] == comp_id)
        if len(r) * pixel_area_mm2 >= MIN_AREA_MM2:
            pixels.append((r + where[0].start, c + where[1].start))
    return pixels


# Hybrid ---------------------------------------------------------------------------------
def _image_key(row: Mapping) -> tuple[str, int, int]:
    tile = str(row.get("tile", "") or "").strip()
    return str(row["patient_id"]), int(row["slice"]), int(tile) if tile else 0


def hybrid_scores(
    lesion_rows: Iterable[Mapping],
    predictions: Iterable[Mapping],
    method: str,
    threshold: float = DEFAULT_HYBRID_THRESHOLD,
) -> list[dict]:
    """Per patient with predictions, the score of the classical lesions that an image called
    calcium shows.

    `lesion_rows`: `LESION_COLUMNS` rows (as read from the lesion tables: strings are fine).
    `predictions`: rows (patient_id, slice, tile, probability) of one classifier on one
    dataset; tile is 0 or "" for whole-slice images. Rows are sorted by patient_id."""
    probability: dict[tuple[str, int, int], float] = {}
    for row in predictions:
        key = _image_key(row)
        probability[key] = max(probability.get(key, 0.0), float(row["probability"]))
    patients = sorted({key[0] for key in probability})
    by_patient: dict[str, list[Mapping]] = defaultdict(list)
    for lesion in lesion_rows:
        by_patient[str(lesion["patient_id"])].append(lesion)

    rows = []
    for patient_id in patients:
        kept = []
        for lesion in by_patient[patient_id]:
            instance = int(lesion["slice"])
            tiles = [int(t) for t in str(lesion["tiles"] or "").split(",") if t.strip()]
            images = [(patient_id, instance, tile) for tile in (0, *tiles)]
            if any(probability.get(image, -1.0) >= threshold for image in images):
                kept.append(lesion)
        total = sum(float(lesion["score"]) for lesion in kept)
        volume = sum(float(lesion["volume_mm3"]) for lesion in kept)
        rows.append(patient_row(patient_id, method, total, volume, kept))
    return rows


# The merged table -----------------------------------------------------------------------
def merge_scores(tables: Iterable[Path], truth_rows: Iterable[Mapping] | None = None) -> list[dict]:
    """Rows of `PATIENT_COLUMNS` tables (classical per patient, hybrid per method...) in the
    order given, with the synthetic truth (`agatston_total`, `volume_mm3`, `risk_category`
    of truth/patients.tsv) as `TRUTH_COLUMNS`, empty when unknown."""
    truth = {}
    for row in truth_rows or ():
        truth[str(row["patient_id"])] = {
            "truth_agatston": row["agatston_total"],
            "truth_volume_mm3": row["volume_mm3"],
            "truth_risk_category": row["risk_category"],
            **{f"truth_{column}": row.get(column, "") for column in ARTERY_COLUMNS},
        }
    merged = []
    for path in tables:
        for row in read_tsv(Path(path)):
            missing = [c for c in PATIENT_COLUMNS if c not in row]
            if missing:
                raise ScoringError(f"{path}: score table lacks columns {missing}")
            known = truth.get(row["patient_id"], dict.fromkeys(TRUTH_COLUMNS, ""))
            merged.append({**{c: row[c] for c in PATIENT_COLUMNS}, **known})
    return merged
