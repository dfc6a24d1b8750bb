"""Agreement of the classical Agatston score (the standard algorithm inside the heart mask, less
the candidates its rules reject) with the true coronary score of synthetic patients, against
the targets ICC >= 0.95 and linear kappa >= 0.90 over the risk categories; beside it the
plain standard algorithm inside the mask (every rule off, `cacflow.scoring.scoring.STANDARD`).

Each patient goes through the library calls of the workflow's per-patient rules: synthetic
DICOM series (`synth_patient`), ingest (`read_study`), heart mask (`segment_volume`),
classical score (`classical_score` with `ScoringSettings()`, the defaults of config.yaml's
``agatston: classical:``, and with `STANDARD`). The truth maps then explain both scores, and
what each rule removed: each lesion goes to the kind that holds most of its pixels,

- coronary: true coronary lesion pixels (what the truth scores);
- non-coronary: aortic wall, aortic valve and mitral annulus calcium (the truth leaves it
  out, classical counts it where it lies in the heart mask);
- outside the true heart: the mask spilling onto bone, cartilage or liver;
- inside the true heart, not calcium: image noise (the phantom's heart holds no bone or
  cartilage);

so the four add up to the score. A diagnostic row scores only the true coronary pixels inside
the heart mask: truth minus that is what the mask cuts off. The truth is never used to score.

A second diagnostic row is the ceiling of the hybrid score on the cropped dataset: the hybrid
rule (`cacflow.scoring.scoring.hybrid_scores`: a classical lesion counts when a tile that shows it is
called calcium) with a perfect tile classifier, one that calls a tile calcium exactly when
it shows a true coronary calcium pixel (>= 130 HU) inside the heart mask. A trained network
can only do as well as that; where the classical score errs, it says how much a classifier
could win back (calcium sharing a tile with a coronary plaque stays in).

    .venv/bin/python benchmarks/agatston_agreement.py [--patients 30] [--seed 2021]
        [--pixel-spacing 0.5 0.8] [--slice-thickness 3.0] [--record]
    .venv/bin/python benchmarks/agatston_agreement.py --fresh 5 --patients 24 [--record]
        [--model results/models/cropped/resnet50/model.keras [--threshold 0.5] [--training ...]]

`--model` adds the hybrid score of a trained network, as `cacflow predict` computes it
(`benchmarks/hybrid_agreement.py`, same code), beside the classical one on the same patients.

`--fresh K` is the protocol that cannot be tuned to: K cohorts of seeds drawn from the clock,
never used before (benchmarks/_seeds.py), alternating between the training cohort's
acquisition and a zoomed field of view with 2.5 mm slices. It reports each cohort and the
pooled ones with patient-bootstrap intervals, and the coronary lesions found and the false
ones per scan. Rules are chosen on named development seeds; fresh seeds are for checking.

Defaults are the workflow's synthetic cohort (512 px, seed 2021, the seed the segmentation
was tuned on); `--seed 9001 --pixel-spacing 0.4 0.9 --slice-thickness 2.5` is a cohort no
tuning saw. `--record` appends the tables to docs/benchmarks.md.

Tuning and checking: the rules' constants were tuned on seeds 2021 and 5001 (default
protocol) only; seed 9001 (above) and seed 6161 with `--pixel-spacing 0.45 0.75
--slice-thickness 3.0` are checks, each run once with the final constants. The aorta rule
(session 6) was designed on 5001 and set with 9001 and 4747 (`--patients 24
--pixel-spacing 0.42 0.85 --slice-thickness 2.5`) in view, so those are no longer checks for
it; seed 3131 (`--patients 24`, default protocol) is its check (run once, and again after
a review changed the rule's geometry: the same result).
"""

import os

# One core: BLAS/OpenMP pools size themselves when numpy is first imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import copy
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
from _seeds import draw_fresh_seeds
from _truth import KINDS, lesion_key, scored_study
from hybrid_agreement import better_on_both, predicted_scores
from hybrid_agreement import markdown_tables as hybrid_tables

from cacflow.imaging.geometry import heart_box, tile_boxes
from cacflow.pipeline import StudySettings
from cacflow.scoring.agatston import THRESHOLD_HU, agatston_score, risk_category
from cacflow.scoring.agreement import agreement_rows, agreement_statistics, bootstrap_agreement
from cacflow.scoring.arteries import (
    ARTERIES,
    ARTERY_COLUMNS,
    heart_axes,
    lesion_arteries,
    score_by_artery,
)
from cacflow.scoring.lesions import lesion_detection
from cacflow.scoring.reference import LesionMap
from cacflow.scoring.scoring import (
    DEFAULT_HYBRID_THRESHOLD,
    EXCLUSION_RULES,
    STANDARD,
    ScoringSettings,
    classical_score,
    hybrid_scores,
)
from cacflow.synthetic.synth import SynthSettings, synth_patient

ICC_TARGET, KAPPA_TARGET = 0.95, 0.90
CLASSICAL = "classical (rules on)"
STANDARD_METHOD = "standard algorithm in mask (rules off)"
ORACLE = "coronary in mask (diagnostic)"
CEILING = "hybrid, perfect tile classifier (diagnostic)"


def artery_labels(truth: LesionMap) -> np.ndarray:
    """Per pixel, 1 + the index in ARTERIES of the true coronary lesion there, else 0."""
    ids = np.array(
        [
            ARTERIES.index(str(artery)) + 1 if kind == "coronary" else 0
            for artery, kind in zip(truth.lesion_artery, truth.lesion_kind, strict=True)
        ]
    )
    return ids[truth.lesion_labels.astype(int)]


def fixed_sector_rows(volume, heart_mask: np.ndarray, lesion_rows: list[dict]) -> list[dict]:
    """The lesion rows with their arteries by the fixed sectors alone (no LAD course)."""
    if not lesion_rows:
        return []
    geometry = (volume.pixel_spacing_mm, volume.slice_spacing_mm)
    axes = heart_axes(heart_mask, *geometry, volume.orientation)
    positions = [(r["slice_index"], r["centroid_row"], r["centroid_col"]) for r in lesion_rows]
    scores = [r["score"] for r in lesion_rows]
    arteries = lesion_arteries(axes, positions, scores, *geometry, lad_course=False)
    return [r | {"artery": a} for r, a in zip(lesion_rows, arteries, strict=True)]


def true_arteries(volume, region: np.ndarray, truth: LesionMap) -> list:
    """The Agatston lesions of `region`, each labelled with its true artery (1 + index in
    ARTERIES) or 0 where it is not coronary calcium."""
    return agatston_score(
        volume.hu,
        region,
        volume.pixel_spacing_mm,
        volume.slice_spacing_mm,
        lesion_labels=artery_labels(truth),
    ).lesions


def artery_agreement(labelled: list, lesion_rows: list[dict]) -> tuple[float, float]:
    """(true coronary score of the `labelled` lesions (`true_arteries`), the part of it on
    the lesions the score's rows assigned to their true artery)."""
    assigned = {
        lesion_key(r["slice_index"], r["centroid_row"], r["centroid_col"]): r["artery"]
        for r in lesion_rows
    }
    true = right = 0.0
    for lesion in labelled:
        if lesion.label:
            key = lesion_key(lesion.slice_index, lesion.centroid_row, lesion.centroid_col)
            true += lesion.score
            right += lesion.score * (assigned.get(key) == ARTERIES[lesion.label - 1])
    return true, right


def score_patient(
    cohort: Path, pid: str, settings: SynthSettings, model: Path | None, threshold: float
) -> dict:
    truth_row = synth_patient(cohort, pid, settings)
    network = predicted_scores(cohort, pid, truth_row, model, threshold) if model else None
    volume, heart_mask, classical, truth_map, kinds = scored_study(cohort, pid)
    geometry = (volume.pixel_spacing_mm, volume.slice_spacing_mm)
    grid = StudySettings().datasets.grid
    standard = classical_score(pid, volume, heart_mask, grid, settings=STANDARD)
    scores = {"classical": classical.row["agatston"], "standard": standard.row["agatston"]}
    coronary = truth_map.coronary_mask()
    filtered = classical.filtered
    calcium = coronary & heart_mask & (volume.hu >= THRESHOLD_HU)
    tiles = perfect_tile_calls(pid, calcium, heart_mask, volume.instance_numbers, grid)
    ceiling = hybrid_scores(classical.lesions, tiles, CEILING)
    ceiling_score = ceiling[0]["agatston"] if ceiling else 0.0

    def by_kind(region: np.ndarray) -> dict[str, float]:
        """Score of `region`'s lesions by the kind holding most of each lesion's pixels."""
        labels = agatston_score(volume.hu, region, *geometry, lesion_labels=kinds)
        scored = labels.score_by_label()
        return {kind: scored.get(k, 0.0) for k, kind in enumerate(KINDS, start=1)}

    coronary_in = agatston_score(volume.hu, coronary & heart_mask, *geometry).total
    pixel_mm = volume.pixel_spacing_mm
    detection = {
        "classical": lesion_detection(
            volume.hu, filtered.region, coronary, pixel_mm, volume.slice_spacing_mm
        ),
        "standard": lesion_detection(
            volume.hu, heart_mask, coronary, pixel_mm, volume.slice_spacing_mm
        ),
    }
    labelled = true_arteries(volume, filtered.region, truth_map)
    on_artery = artery_agreement(labelled, classical.lesions)
    fixed = fixed_sector_rows(volume, heart_mask, classical.lesions)
    shutil.rmtree(cohort / "dicom" / pid)  # ~35 MB a patient
    truth = float(truth_row["agatston_total"])
    if network and abs(network["classical"] - scores["classical"]) > 0.01:
        raise RuntimeError(
            f"{pid}: cacflow predict's classical score {network['classical']:.2f} is not this "
            f"benchmark's {scores['classical']:.2f}: the hybrid would filter other lesions"
        )
    return {
        "patient_id": pid,
        "truth": truth,
        "truth_category": truth_row["risk_category"],
        **scores,
        "coronary_in_mask": coronary_in,
        "ceiling": ceiling_score,
        "kinds_standard": by_kind(heart_mask),
        "kinds_classical": by_kind(filtered.region),
        "removed": {rule: by_kind(filtered.excluded[rule]) for rule in EXCLUSION_RULES},
        "noise_sd": filtered.noise_sd_hu,
        "lesions": detection,
        "noncoronary_kinds": truth_row["noncoronary_calcifications"],
        "arteries": {
            artery: (float(classical.row[column]), float(truth_row[column]))
            for artery, column in zip(ARTERIES, ARTERY_COLUMNS, strict=True)
        },
        "on_artery": on_artery,
        "fixed_sectors": {
            "arteries": {
                artery: (score, float(truth_row[column]))
                for (artery, score), column in zip(
                    score_by_artery(fixed).items(), ARTERY_COLUMNS, strict=True
                )
            },
            "on_artery": artery_agreement(labelled, fixed),
        },
        "pixel_mm": float(truth_row["pixel_spacing_mm"]),
        "slice_mm": float(truth_row["slice_thickness_mm"]),
        "network": network,
        "hybrid": network["hybrid"] if network else None,
    }


def perfect_tile_calls(
    pid: str, calcium: np.ndarray, heart_mask: np.ndarray, instances, grid: int
) -> list[dict]:
    """Prediction rows (patient_id, slice, tile, probability) of a perfect classifier on the
    cropped tiles: 1 where the tile shows a pixel of `calcium`, else 0."""
    rows = []
    for k, instance in enumerate(instances):
        box = heart_box(heart_mask[k], grid)
        if box is None:
            continue
        for tile, (r0, r1, c0, c1) in enumerate(tile_boxes(box, grid), start=1):
            shows = calcium[k, max(r0, 0) : r1, max(c0, 0) : c1].any()
            rows.append(
                {
                    "patient_id": pid,
                    "slice": int(instance),
                    "tile": tile,
                    "probability": float(shows),
                }
            )
    return rows


def network_method(patients: list[dict]) -> list[tuple[str, str]]:
    """(method, key) of the trained network's hybrid score where the patients have one."""
    network = patients[0]["network"]
    return [(f"{network['method']} (network)", "hybrid")] if network else []


def score_rows(patients: list[dict]) -> list[dict]:
    """Merged-table rows (cacflow.scoring.scoring.MERGED_COLUMNS) of both scores and the
    diagnostics (the network's hybrid score has its own table: `network_lines`)."""
    rows = []
    for method, key in (
        (STANDARD_METHOD, "standard"),
        (CLASSICAL, "classical"),
        (ORACLE, "coronary_in_mask"),
        (CEILING, "ceiling"),
    ):
        for p in patients:
            rows.append(
                {
                    "patient_id": p["patient_id"],
                    "method": method,
                    "agatston": p[key],
                    "risk_category": risk_category(p[key]),
                    "truth_agatston": p["truth"],
                    "truth_risk_category": p["truth_category"],
                }
            )
    return rows


def _number(cell: str, digits: int = 1) -> str:
    return f"{float(cell):.{digits}f}" if cell else "-"


def _kind_sums(patients: list[dict], key: str) -> dict[str, float]:
    return {kind: sum(p[key][kind] for p in patients) for kind in KINDS}


def _decomposition(name: str, total: float, kinds: dict[str, float]) -> str:
    return (
        f"{name} {total:.0f} = coronary {kinds['coronary']:.0f} + non-coronary calcium "
        f"{kinds['noncoronary']:.0f} + outside the true heart {kinds['outside_heart']:.0f} + "
        f"inside the true heart, not calcium {kinds['inside_heart']:.0f}"
    )


def markdown_tables(patients: list[dict]) -> str:
    lines = [
        (
            "| method | patients | ICC(A,1) | linear kappa | Bland-Altman mean | 95 % limits "
            "| category accuracy |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    summary = agreement_rows(score_rows(patients))
    for row in summary:
        lines.append(
            f"| {row['method']} | {row['n_patients']} | {row['icc'] or '-'} | "
            f"{row['kappa_linear'] or '-'} | {_number(row['bland_altman_mean'])} | "
            f"{_number(row['loa_low'])} to {_number(row['loa_high'])} | "
            f"{row['category_accuracy'] or '-'} |"
        )
    by_method = {row["method"]: row for row in summary}
    icc, kappa = (float(by_method[CLASSICAL][key] or "nan") for key in ("icc", "kappa_linear"))
    verdict = {True: "met", False: "not met"}
    sums = {k: sum(p[k] for p in patients) for k in ("truth", "standard", "classical")}
    coronary_in = sum(p["coronary_in_mask"] for p in patients)
    rules = ScoringSettings()
    lines += [
        "",
        (
            f"Classical (rules on): ICC {icc:.3f} (target {ICC_TARGET}: "
            f"{verdict[icc >= ICC_TARGET]}), linear kappa {kappa:.3f} (target {KAPPA_TARGET}: "
            f"{verdict[kappa >= KAPPA_TARGET]}). Rules: bone_outside_mm3 "
            f"{rules.bone_outside_mm3:g}, max_depth_mm {rules.max_depth_mm:g}, noise_peak_sd "
            f"{rules.noise_peak_sd:g}, aorta_fat_share {rules.aorta_fat_share:g}, "
            f"min_lesion_pixels {rules.min_lesion_pixels}."
        ),
        "",
        (
            f"Where the scores come from, summed over the cohort (truth {sums['truth']:.0f}): "
            + _decomposition("standard", sums["standard"], _kind_sums(patients, "kinds_standard"))
            + "; "
            + _decomposition(
                "classical", sums["classical"], _kind_sums(patients, "kinds_classical")
            )
            + f". The mask cuts off {sums['truth'] - coronary_in:.0f} of the true score."
        ),
        *network_lines(patients),
        "",
        "What each rule removed (first rule that applies), by what the phantom put there:",
        "",
        "| rule | coronary | non-coronary | outside true heart | inside true heart, not calcium |",
        "|---|---:|---:|---:|---:|",
    ]
    for rule in EXCLUSION_RULES:
        removed = {kind: sum(p["removed"][rule][kind] for p in patients) for kind in KINDS}
        lines.append(f"| {rule} | " + " | ".join(f"{removed[k]:.1f}" for k in KINDS) + " |")
    lines += [
        "",
        (
            "Patients whose standard or classical score differs from the truth by more than 10 "
            "or whose risk category differs (classical columns: what it kept, by kind):"
        ),
        "",
        (
            "| patient | pixel mm | slice mm | noise SD HU | truth | standard | classical "
            "| coronary | non-coronary | outside true heart | inside true heart, not calcium "
            "| non-coronary calcium of the phantom | category: truth -> standard -> classical |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for p in patients:
        categories = [risk_category(p[key]) for key in ("standard", "classical")]
        same = all(c == p["truth_category"] for c in categories)
        close = all(abs(p[key] - p["truth"]) <= 10 for key in ("standard", "classical"))
        if close and same:
            continue
        kept = p["kinds_classical"]
        lines.append(
            f"| {p['patient_id']} | {p['pixel_mm']:.3f} | {p['slice_mm']:g} "
            f"| {p['noise_sd']:.1f} | {p['truth']:.1f} | {p['standard']:.1f} "
            f"| {p['classical']:.1f} | "
            + " | ".join(f"{kept[k]:.1f}" for k in KINDS)
            + f" | {p['noncoronary_kinds']} | {p['truth_category']} -> {categories[0]} -> "
            f"{categories[1]} |"
        )
    return "\n".join(lines)


def network_lines(patients: list[dict]) -> list[str]:
    """The network's hybrid score against the classical, patient by patient
    (`hybrid_agreement`'s table), where the patients have one."""
    if not patients[0]["network"]:
        return []
    return [
        "",
        "The trained network's hybrid score:",
        "",
        hybrid_tables([p["network"] for p in patients]),
    ]


# The fresh protocol: cohorts alternate between the training cohort's acquisition and a
# zoomed cardiac field of view with thinner slices (the external cohort's defaults).
FRESH_PROTOCOLS = (((0.5, 0.8), (3.0,)), ((0.35, 0.45), (2.5,)))
FRESH_MIN_PATIENTS = 24
FRESH_METHODS = ((CLASSICAL, "classical"), (STANDARD_METHOD, "standard"), (CEILING, "ceiling"))


def _interval(value: float, bounds: tuple[float, float]) -> str:
    return f"{value:.3f} [{bounds[0]:.3f}, {bounds[1]:.3f}]"


def fresh_rows(name: str, patients: list[dict]) -> list[str]:
    """Table rows of one cohort (or the pooled cohorts): agreement with the truth with
    patient-bootstrap intervals, and coronary lesion detection."""
    truth = [p["truth"] for p in patients]
    truth_category = [p["truth_category"] for p in patients]
    lines = []
    for method, key in (*FRESH_METHODS, *network_method(patients)):
        scores = [p[key] for p in patients]
        categories = [risk_category(v) for v in scores]
        point = agreement_statistics(scores, truth, categories, truth_category)
        bounds = bootstrap_agreement(scores, truth, categories, truth_category)
        cells = [
            _interval(point[k], bounds[k]) for k in ("icc", "kappa_linear", "category_accuracy")
        ]
        if key in ("classical", "standard"):
            found = [p["lesions"][key] for p in patients]
            true = sum(d.true_lesions for d in found)
            detected = sum(d.detected for d in found)
            false = sum(d.false_positives for d in found)
            cells += [f"{detected / true:.3f} ({detected}/{true})", f"{false / len(found):.2f}"]
        else:
            cells += ["-", "-"]
        lines.append(f"| {name} | {method} | {len(patients)} | " + " | ".join(cells) + " |")
    return lines


def artery_row(name: str, patients: list[dict]) -> str:
    """A cohort's per-artery agreement: the share of the true coronary score (of the lesions
    the classical score kept) assigned to its artery, per-artery ICC with patient-bootstrap
    intervals, and the number of vessels with calcium."""
    true = sum(p["on_artery"][0] for p in patients)
    right = sum(p["on_artery"][1] for p in patients)
    cells = [f"{right / true:.3f}" if true else "-"]
    for artery in ARTERIES:
        scores = [p["arteries"][artery][0] for p in patients]
        truth = [p["arteries"][artery][1] for p in patients]
        categories = [risk_category(v) for v in scores]
        truth_categories = [risk_category(v) for v in truth]
        point = agreement_statistics(scores, truth, categories, truth_categories)["icc"]
        bounds = bootstrap_agreement(scores, truth, categories, truth_categories)["icc"]
        cells.append(_interval(point, bounds))
    vessels = [
        tuple(sum(p["arteries"][a][i] > 0 for a in ARTERIES) for i in (0, 1)) for p in patients
    ]
    cells.append(f"{sum(a == b for a, b in vessels) / len(vessels):.3f}")
    return f"| {name} | {len(patients)} | " + " | ".join(cells) + " |"


def artery_table(cohorts: list[tuple[str, list[dict]]]) -> str:
    """Per-artery agreement per cohort and pooled, then the same with the fixed sectors
    alone (`lesion_arteries(..., lad_course=False)`) on the same lesions."""
    lines = [
        "Per artery, classical score (LAD with the left main; cacflow.scoring.arteries; targets: at least 0.85 of the score on its artery, per-artery ICC at least 0.90); \"fixed sectors\": the same lesions without the LAD/LCX boundary from the LAD's course:",
        "",
        "| cohort | patients | true coronary score on its artery | ICC LAD [95 % CI] | ICC LCX [95 % CI] | ICC RCA [95 % CI] | vessels with calcium right |",
        "|---|---:|---:|---|---|---|---:|",
    ]  # fmt: skip
    if len(cohorts) > 1:
        cohorts = [*cohorts, ("pooled", [p for _, patients in cohorts for p in patients])]
    lines += [artery_row(name, patients) for name, patients in cohorts]
    lines += [
        artery_row(f"{name}, fixed sectors", [p | p["fixed_sectors"] for p in patients])
        for name, patients in cohorts
    ]
    return "\n".join(lines)


def fresh_table(cohorts: list[tuple[str, list[dict]]]) -> str:
    lines = [
        "| cohort | method | patients | ICC(A,1) [95 % CI] | linear kappa [95 % CI] | category accuracy [95 % CI] | coronary lesion sensitivity | false-positive lesions per scan |",
        "|---|---|---:|---|---|---|---|---:|",
    ]  # fmt: skip
    for name, patients in cohorts:
        lines += fresh_rows(name, patients)
    if len(cohorts) > 1:
        lines += fresh_rows("pooled", [p for _, patients in cohorts for p in patients])
    return "\n".join(lines + network_verdict(cohorts))


def network_verdict(cohorts: list[tuple[str, list[dict]]]) -> list[str]:
    """How many cohorts the network's hybrid score beats the classical one on both ICC and
    kappa (the scoring issue's target for the hybrid)."""
    if not cohorts[0][1][0]["network"]:
        return []
    better = [
        name for name, patients in cohorts if better_on_both([p["network"] for p in patients])
    ]
    return [
        "",
        (
            f"The network's hybrid score is better than the classical one on both ICC and "
            f"kappa on {len(better)} of {len(cohorts)} cohorts"
            f"{': ' if better else ''}{', '.join(better)}."
        ),
    ]


def _describe(p: dict) -> str:
    return (
        f"truth {p['truth']:.1f}, standard {p['standard']:.1f}, classical "
        f"{p['classical']:.1f} = "
        + " + ".join(f"{kind} {p['kinds_classical'][kind]:.1f}" for kind in KINDS)
        + f"; coronary in mask {p['coronary_in_mask']:.1f}; {p['noncoronary_kinds']}"
    )


def run_cohort(parser, args) -> tuple[list[dict], float, str]:
    """Rows of one cohort, the seconds they took and the cohort in words."""
    settings = cohort_settings(parser, args)
    patients, seconds = score_cohort(
        args,
        "cacflow-agatston-",
        lambda cohort, pid: score_patient(cohort, pid, settings, args.model, args.threshold),
        _describe,
    )
    return patients, seconds, cohort_details(args, settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cohort_arguments(parser, patients=30, seed=2021)
    parser.add_argument(
        "--fresh", type=int, metavar="K",
        help="K cohorts of seeds never used, drawn from the clock and registered in "
        "benchmarks/used_seeds.tsv (--seed, --pixel-spacing and --slice-thickness are ignored)",
    )  # fmt: skip
    parser.add_argument(
        "--model", type=Path, help="a trained model.keras: its hybrid score beside the classical"
    )
    parser.add_argument("--threshold", type=float, default=DEFAULT_HYBRID_THRESHOLD)
    parser.add_argument("--training", default="", help="how the model was trained (recorded)")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.model and not args.model.is_file():
        parser.error(f"--model {args.model}: no such file")
    if args.training and not args.model:
        parser.error("--training describes a --model: give both")
    cores = "all for the network's inference, one otherwise" if args.model else "one"
    network = (
        f"; hybrid score of {args.model}, threshold {args.threshold:g}"
        + (f", trained: {args.training}" if args.training else "")
        if args.model
        else ""
    )
    if args.fresh is None:
        patients, seconds, details = run_cohort(parser, args)
        table = markdown_tables(patients) + "\n\n" + artery_table([(str(args.seed), patients)])
        print(table)
        if args.record:
            details += (
                f"{network}; synthesis, ingest, segmentation and scoring took {seconds:.0f} s"
            )
            append_section("agatston_agreement", details, table, cores)
        return
    if args.fresh < 2 or args.patients < FRESH_MIN_PATIENTS:
        parser.error(f"--fresh needs K >= 2 cohorts of --patients >= {FRESH_MIN_PATIENTS}")
    seeds = draw_fresh_seeds(args.fresh, "agatston_agreement --fresh")
    print(f"fresh seeds: {', '.join(map(str, seeds))}", flush=True)
    cohorts, described, sections, total = [], [], [], 0.0
    for j, seed in enumerate(seeds):
        cohort_args = copy.copy(args)
        spacing, thickness = FRESH_PROTOCOLS[j % len(FRESH_PROTOCOLS)]
        cohort_args.seed, cohort_args.pixel_spacing, cohort_args.slice_thickness = (
            seed, spacing, thickness
        )  # fmt: skip
        patients, seconds, details = run_cohort(parser, cohort_args)
        total += seconds
        cohorts.append((str(seed), patients))
        described.append(details)
        sections.append(f"### Seed {seed}\n\n{details}\n\n{markdown_tables(patients)}")
    table = fresh_table(cohorts) + "\n\n" + artery_table(cohorts) + "\n\n" + "\n\n".join(sections)
    print(table)
    if args.record:
        details = (
            f"fresh protocol: {args.fresh} cohorts of seeds drawn from the clock at this run, "
            f"never used before (benchmarks/used_seeds.tsv): {'; '.join(described)}; "
            f"[95 % patient-bootstrap intervals, 1000 resamples]; a lesion is an 8-connected "
            f"component of one slice at >= 130 HU and >= 1 mm^2 (the Agatston lesion), found "
            f"when the score's lesions overlap it{network}; {total:.0f} s"
        )
        append_section("agatston_agreement --fresh", details, table, cores)


if __name__ == "__main__":
    main()
