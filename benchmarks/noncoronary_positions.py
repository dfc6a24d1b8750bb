"""Where the classical score's non-coronary calcium lies, beside its coronary lesions: could a
classifier that knew a lesion's place in the heart tell the two apart?

Each patient of a synthetic cohort goes through the workflow's library calls (synthetic DICOM,
ingest, heart mask, `classical_score` with the defaults of config.yaml;
`_truth.scored_study`). Each lesion the classical score keeps is labelled by what
the phantom put under most of its pixels (coronary, or non-coronary: aortic wall or valve,
mitral annulus; `_truth.lesion_kinds`) and placed by what a tile classifier could be
told: the tiles of the 3x3 grid that show it (the lesion table's, which the hybrid score
uses), its height below the top slice of the heart mask (mm) and the depth of its centroid
inside the slice's heart mask (mm from the mask's edge). The table gives both kinds by tile
(a lesion counts in each tile that shows it) with the medians and quartiles of height and
depth, then each non-coronary lesion with the number of coronary lesions of the whole cohort
that share a tile with it within 10 mm of its height.

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
from _truth import lesion_key, lesion_kinds, scored_study
from scipy import ndimage

from cacflow.pipeline import StudySettings
from cacflow.synthetic.synth import synth_patient

COMPARED = ("coronary", "noncoronary")
NEAR_HEIGHT_MM = 10.0


def lesion_places(cohort: Path, pid: str, settings) -> list[dict]:
    """The classical score's coronary and non-coronary lesions of one synthetic patient, each
    with its score, tiles, height below the heart's top slice and depth inside the mask."""
    synth_patient(cohort, pid, settings)
    scored = scored_study(cohort, pid)
    volume, heart, classical = scored.volume, scored.heart_mask, scored.classical
    kind_of = lesion_kinds(scored)
    top = int(np.flatnonzero(heart.any(axis=(1, 2)))[0])
    depths: dict[int, np.ndarray] = {}
    places = []
    for row in classical.lesions:
        k = row["slice_index"]
        kind = kind_of[lesion_key(k, row["centroid_row"], row["centroid_col"])]
        if kind not in COMPARED:
            continue
        if k not in depths:
            depths[k] = ndimage.distance_transform_edt(heart[k], sampling=volume.pixel_spacing_mm)
        places.append(
            {
                "patient_id": pid,
                "kind": kind,
                "score": row["score"],
                "tiles": {int(t) for t in row["tiles"].split(",") if t},
                "height_mm": (k - top) * float(volume.slice_spacing_mm),
                "depth_mm": float(
                    depths[k][round(row["centroid_row"]), round(row["centroid_col"])]
                ),
            }
        )
    shutil.rmtree(cohort / "dicom" / pid)
    return places


def _quartiles(values: list[float]) -> str:
    if not values:
        return "-"
    q = np.percentile(values, [25, 50, 75])
    return f"{q[1]:.0f} ({q[0]:.0f}-{q[2]:.0f})"


def markdown_tables(places: list[dict], grid: int) -> str:
    lines = [
        f"| kind | lesions | score | lesions per tile (1..{grid * grid}) | height below the heart's top, mm, median (quartiles) | depth inside the mask, mm, median (quartiles) |",
        "|---|---:|---:|---|---|---|",
    ]  # fmt: skip
    for kind in COMPARED:
        rows = [p for p in places if p["kind"] == kind]
        per_tile = [sum(t in p["tiles"] for p in rows) for t in range(1, grid * grid + 1)]
        lines.append(
            f"| {kind} | {len(rows)} | {sum(p['score'] for p in rows):.0f} | "
            f"{' '.join(map(str, per_tile))} | {_quartiles([p['height_mm'] for p in rows])} | "
            f"{_quartiles([p['depth_mm'] for p in rows])} |"
        )
    coronary = [p for p in places if p["kind"] == "coronary"]
    lines += [
        "",
        f"| non-coronary lesion | score | tiles | height, mm | depth, mm | coronary lesions of the cohort sharing a tile within {NEAR_HEIGHT_MM:g} mm of its height |",
        "|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for p in (p for p in places if p["kind"] == "noncoronary"):
        near = sum(
            bool(c["tiles"] & p["tiles"]) and abs(c["height_mm"] - p["height_mm"]) <= NEAR_HEIGHT_MM
            for c in coronary
        )
        lines.append(
            f"| {p['patient_id']} | {p['score']:.1f} | {','.join(map(str, sorted(p['tiles'])))} | {p['height_mm']:.1f} | "
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
    table = markdown_tables([p for rows in patients for p in rows], StudySettings().datasets.grid)
    print(table)
    if args.record:
        details = f"Cohort: {cohort_details(args, settings)}; {seconds:.0f} s"
        append_section("noncoronary_positions", details, table)


if __name__ == "__main__":
    main()
