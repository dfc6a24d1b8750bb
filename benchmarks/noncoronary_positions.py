"""Where the classical score's non-coronary calcium lies, beside its coronary lesions: could a
classifier that knew a lesion's place in the heart tell the two apart?

Each patient of a synthetic cohort goes through the workflow's library calls (synthetic DICOM,
ingest, heart mask, `classical_score` with the defaults of config.yaml). Each lesion the
classical score keeps is labelled by what the phantom put under most of its pixels (coronary,
non-coronary: aortic wall or valve, mitral annulus; `agatston_agreement.kind_map`) and placed
by what a tile classifier could be told: its tile of the 3x3 grid, its height below the top
slice of the heart mask (mm), and its depth inside the slice's heart mask (mm from the mask's
edge). The table gives both kinds by tile and the quartiles of height and depth, then each
non-coronary lesion with the coronary lesions of its tile within 10 mm of its height.

    .venv/bin/python benchmarks/noncoronary_positions.py [--patients 30] [--seed 2021]
        [--pixel-spacing 0.5 0.8] [--slice-thickness 3.0] [--record]
"""

import os

# One core: BLAS/OpenMP pools size themselves when numpy is first imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import shutil
from pathlib import Path

import numpy as np
from _common import (
    add_cohort_arguments,
    append_section,
    cohort_details,
    cohort_settings,
    score_cohort,
)
from agatston_agreement import KINDS, kind_map
from scipy import ndimage

from cacflow.dicom.ingest import read_study, volume_of
from cacflow.imaging.geometry import heart_box
from cacflow.pipeline import StudySettings, segment_volume
from cacflow.scoring.agatston import agatston_score
from cacflow.scoring.reference import read_lesion_map
from cacflow.scoring.scoring import classical_score
from cacflow.synthetic.synth import synth_patient

COMPARED = ("coronary", "noncoronary")
KIND_NAMES = {1 + KINDS.index(kind): kind for kind in COMPARED}  # kind_map's codes
NEAR_HEIGHT_MM = 10.0


def lesion_places(cohort: Path, pid: str, settings) -> list[dict]:
    """The classical score's coronary and non-coronary lesions of one synthetic patient, each
    with its score, tile, height below the heart's top slice and depth inside the mask."""
    synth_patient(cohort, pid, settings)
    study = StudySettings()
    report = read_study(cohort / "dicom" / pid, pid, study.ingest)
    if not report.accepted:
        raise RuntimeError(f"{pid}: refused at ingest: {report.error.reason}")
    volume = volume_of(report.ct)
    heart = segment_volume(volume, study.segmentation)
    grid = study.datasets.grid
    classical = classical_score(pid, volume, heart, grid)
    truth_path = cohort / "truth" / f"{pid}.npz"
    kinds = kind_map(
        truth_path, volume.instance_numbers, read_lesion_map(truth_path, volume.instance_numbers)
    )
    lesions = agatston_score(
        volume.hu,
        classical.filtered.region,
        volume.pixel_spacing_mm,
        volume.slice_spacing_mm,
        lesion_labels=kinds,
    ).lesions
    top = int(np.flatnonzero(heart.any(axis=(1, 2)))[0])
    pixel_mm = float(np.mean(volume.pixel_spacing_mm))
    places = []
    for lesion in lesions:
        if lesion.label not in KIND_NAMES:
            continue
        k, row, col = lesion.slice_index, lesion.centroid_row, lesion.centroid_col
        r0, r1, c0, c1 = heart_box(heart[k], grid)
        tile_row = min(grid - 1, int((row - r0) * grid / (r1 - r0)))
        tile_col = min(grid - 1, int((col - c0) * grid / (c1 - c0)))
        depth = ndimage.distance_transform_edt(heart[k])[round(row), round(col)] * pixel_mm
        places.append(
            {
                "patient_id": pid,
                "kind": KIND_NAMES[lesion.label],
                "score": lesion.score,
                "tile": 1 + tile_row * grid + tile_col,
                "height_mm": (k - top) * float(volume.slice_spacing_mm),
                "depth_mm": float(depth),
            }
        )
    shutil.rmtree(cohort / "dicom" / pid)
    return places


def _quartiles(values: list[float]) -> str:
    if not values:
        return "-"
    q = np.percentile(values, [25, 50, 75])
    return f"{q[1]:.0f} ({q[0]:.0f}-{q[2]:.0f})"


def markdown_tables(places: list[dict], grid: int = 3) -> str:
    lines = [
        "| kind | lesions | score | lesions per tile (1..9) | height below the heart's top, mm, median (quartiles) | depth inside the mask, mm |",
        "|---|---:|---:|---|---|---|",
    ]  # fmt: skip
    for kind in KIND_NAMES.values():
        rows = [p for p in places if p["kind"] == kind]
        per_tile = [sum(p["tile"] == t for p in rows) for t in range(1, grid * grid + 1)]
        lines.append(
            f"| {kind} | {len(rows)} | {sum(p['score'] for p in rows):.0f} | "
            f"{' '.join(map(str, per_tile))} | {_quartiles([p['height_mm'] for p in rows])} | "
            f"{_quartiles([p['depth_mm'] for p in rows])} |"
        )
    coronary = [p for p in places if p["kind"] == "coronary"]
    lines += [
        "",
        f"| non-coronary lesion | score | tile | height, mm | depth, mm | coronary lesions of the cohort in its tile within {NEAR_HEIGHT_MM:g} mm of its height |",
        "|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for p in (p for p in places if p["kind"] == "noncoronary"):
        near = sum(
            c["tile"] == p["tile"] and abs(c["height_mm"] - p["height_mm"]) <= NEAR_HEIGHT_MM
            for c in coronary
        )
        lines.append(
            f"| {p['patient_id']} | {p['score']:.1f} | {p['tile']} | {p['height_mm']:.1f} | "
            f"{p['depth_mm']:.1f} | {near} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cohort_arguments(parser, patients=30, seed=2021)
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    settings = cohort_settings(parser, args)
    patients, seconds = score_cohort(
        args,
        "cacflow-places-",
        lambda cohort, pid: lesion_places(cohort, pid, settings),
        lambda rows: f"{sum(p['kind'] == 'noncoronary' for p in rows)} non-coronary of {len(rows)}",
    )
    table = markdown_tables([p for rows in patients for p in rows])
    print(table)
    if args.record:
        details = f"Cohort: {cohort_details(args, settings)}; {seconds:.0f} s"
        append_section("noncoronary_positions", details, table)


if __name__ == "__main__":
    main()
