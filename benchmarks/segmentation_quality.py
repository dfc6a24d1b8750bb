"""Heart segmentation against the synthetic truth: Dice, coronary lesions kept whole, masks
on the wrong organs, and speed, on one core.

Writes N synthetic patients (real DICOM series and truth files, `synth_patient`) for a seed,
matrix size, pixel-spacing range and slice thicknesses, reads them back as the workflow does
(`read_study`), segments each volume (`segment_heart`) and scores it against the truth:

- Dice: mean per-slice Dice over the slices that hold heart (all patients pooled, weighted
  by slices), as `results/qc/segmentation.tsv` and docs/segmentation.md report it;
- lesions: true coronary lesions >= 1 mm^2 (the Agatston definition) with every pixel inside
  the mask; each lost one is listed with its artery, its slice's depth below the top of the
  heart (mm), and how far its farthest pixel lies outside the mask (mm);
- false positives: mask volume outside the true heart (ml), the part of it below the
  diaphragm domes (liver, stomach, spleen; ml), and mask pixels on the descending aorta's
  lumen (both from the phantom's anatomy);
- masks on slices without heart (above it: great vessels; below: abdomen);
- slices/s of `segment_heart` alone, one thread.

`--baseline REV` also runs the segmentation module of git revision REV on the same volumes,
interleaved with the current one, so that before and after come from one run.

    .venv/bin/python benchmarks/segmentation_quality.py --seed 8888 --patients 16 \\
        [--size 512] [--spacing 0.4 0.9] [--thickness 2.5 3] [--baseline HEAD] \\
        [--cohort-dir DIR] [--note TEXT] [--record]

`--cohort-dir` keeps the written cohort (and reuses it when it was written with the same
settings); without it a temporary folder is used. `--record` appends the tables to
docs/benchmarks.md.
"""

import os

# One core: BLAS/OpenMP pools size themselves when numpy is first imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, append_section
from scipy import ndimage

from cacflow.dicom.ingest import read_study, volume_of
from cacflow.imaging import segmentation as current_segmentation
from cacflow.patients import synthetic_patient_ids
from cacflow.scoring.agatston import MIN_AREA_MM2, THRESHOLD_HU
from cacflow.synthetic import phantom
from cacflow.synthetic.acquisition import Grid
from cacflow.synthetic.synth import SynthSettings, simulate_patient, synth_patient

SEGMENTATION_PATH = "workflow/scripts/cacflow/imaging/segmentation.py"


@dataclass
class LostLesion:
    patient_id: str
    artery: str
    area_mm2: float
    depth_below_heart_top_mm: float  # slice centre below the most superior heart slice
    heart_height_mm: float
    outside_mm: float  # farthest pixel of the lesion from the mask


@dataclass
class PatientResult:
    patient_id: str
    pixel_spacing_mm: float
    slice_thickness_mm: float
    n_slices: int
    seconds: float
    scores: dict
    outside_truth_ml: float
    below_diaphragm_ml: float
    aorta_pixels: int
    lost: list[LostLesion] = field(default_factory=list)


def load_baseline(revision: str, folder: Path):
    """The segmentation module as it was at a git revision, importable beside the current."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{SEGMENTATION_PATH}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = folder / "segmentation_at_baseline.py"
    path.write_text(source)
    # A submodule of cacflow, so that its relative imports resolve.
    name = "cacflow._segmentation_at_baseline"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def write_cohort(folder: Path, ids: list[str], settings: SynthSettings) -> None:
    """Write the patients not yet in `folder`; refuse a folder written with other settings."""
    stamp = folder / "synth_settings.json"
    wanted = json.dumps(asdict(settings), sort_keys=True)
    if stamp.exists() and stamp.read_text() != wanted:
        raise SystemExit(f"{folder} holds a cohort with other settings: {stamp.read_text()}")
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted)
    for pid in ids:
        if not (folder / "truth" / f"{pid}.npz").exists():
            synth_patient(folder, pid, settings)
            print(f"wrote {pid}", file=sys.stderr)


def aligned_truth(path: Path, instance_numbers: np.ndarray) -> dict[str, np.ndarray]:
    keys = ("instance_numbers", "heart_mask", "lesion_labels", "lesion_kind", "lesion_artery")
    with np.load(path) as data:
        truth = {key: data[key] for key in (*keys, "slice_z_mm")}
    index = {int(n): k for k, n in enumerate(truth["instance_numbers"])}
    order = np.array([index[int(n)] for n in instance_numbers], dtype=int)
    for key in ("heart_mask", "lesion_labels", "slice_z_mm"):
        truth[key] = truth[key][order]
    return truth


def wrong_organ_masks(
    pid: str, settings: SynthSettings, slice_z_mm: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Below the diaphragm domes, and the descending aorta's lumen, from the phantom."""
    probe = simulate_patient(pid, settings, slices=[])  # anatomy and acquisition only
    anatomy, grid = probe.anatomy, Grid(probe.acquisition)
    abdomen = np.zeros((len(slice_z_mm), *shape), dtype=bool)
    aorta = np.zeros_like(abdomen)
    for k, z in enumerate(slice_z_mm):
        for x0, y0, z0, rc in (anatomy.liver_dome, anatomy.left_dome):
            if z <= z0:
                abdomen[k] |= (grid.x - x0) ** 2 + (grid.y - y0) ** 2 < 2.0 * rc * (z0 - z)
        for index, distance, radius in phantom.capsule_distances(
            grid, anatomy.descending_aorta, float(z)
        ):
            aorta[k][index] |= distance <= radius
    return abdomen, aorta


def lost_lesions(
    pid: str, mask: np.ndarray, truth: dict, hu: np.ndarray, spacing: tuple[float, float]
) -> list[LostLesion]:
    """The coronary lesions (>= 1 mm^2, per slice, 8-connected) not wholly in the mask."""
    kind, artery = truth["lesion_kind"], truth["lesion_artery"]
    coronary_ids = np.flatnonzero(kind == "coronary")
    coronary = np.isin(truth["lesion_labels"], coronary_ids) & (hu >= THRESHOLD_HU)
    z = truth["slice_z_mm"]
    heart_z = z[truth["heart_mask"].any(axis=(1, 2))]
    top, height = float(heart_z.max()), float(heart_z.max() - heart_z.min())
    pixel_area = spacing[0] * spacing[1]
    lost = []
    for k in np.flatnonzero(coronary.any(axis=(1, 2))):
        components, n = ndimage.label(coronary[k], np.ones((3, 3), dtype=bool))
        outside = ndimage.distance_transform_edt(~mask[k], sampling=spacing)
        for label in range(1, n + 1):
            pixels = components == label
            area = float(pixels.sum() * pixel_area)
            if area < MIN_AREA_MM2 or not (pixels & ~mask[k]).any():
                continue
            ids = truth["lesion_labels"][k][pixels]
            lost.append(
                LostLesion(
                    pid,
                    str(artery[np.bincount(ids).argmax()]),
                    area,
                    top - float(z[k]),
                    height,
                    float(outside[pixels].max()),
                )
            )
    return lost


def evaluate(
    module, pid: str, volume, truth: dict, wrong: tuple[np.ndarray, np.ndarray], overrides: dict
) -> PatientResult:
    settings = module.SegmentationSettings(**overrides)
    start = time.perf_counter()
    mask = module.segment_heart(
        volume.hu, volume.pixel_spacing_mm, volume.slice_spacing_mm, settings=settings
    )
    seconds = time.perf_counter() - start
    spacing = tuple(float(s) for s in volume.pixel_spacing_mm)
    scores = current_segmentation.segmentation_scores(
        mask, truth["heart_mask"], volume.hu, truth["lesion_labels"], truth["lesion_kind"], spacing
    )
    voxel_ml = spacing[0] * spacing[1] * volume.slice_spacing_mm / 1000.0
    false = mask & ~truth["heart_mask"]
    abdomen, aorta = wrong
    return PatientResult(
        pid,
        spacing[0],
        float(volume.slice_thickness_mm),
        len(mask),
        seconds,
        scores,
        float(false.sum() * voxel_ml),
        float((false & abdomen).sum() * voxel_ml),
        int((mask & aorta).sum()),
        lost_lesions(pid, mask, truth, volume.hu, spacing),
    )


def pooled(results: list[PatientResult]) -> dict:
    weights = [r.scores["n_heart_slices"] for r in results]
    n_nonheart = sum(r.scores["n_nonheart_slices"] for r in results)
    nonempty = sum(
        r.scores["nonempty_rate_nonheart"] * r.scores["n_nonheart_slices"]
        for r in results
        if r.scores["n_nonheart_slices"]
    )
    return {
        "dice": float(
            np.average([r.scores["dice_heart_slices"] for r in results], weights=weights)
        ),
        "min_dice": min(r.scores["dice_heart_slices"] for r in results),
        "lesions": sum(r.scores["n_lesions"] for r in results),
        "inside": sum(r.scores["n_lesions_inside"] for r in results),
        "outside_truth_ml": float(np.mean([r.outside_truth_ml for r in results])),
        "below_diaphragm_ml": float(np.mean([r.below_diaphragm_ml for r in results])),
        "n_below_diaphragm": sum(r.below_diaphragm_ml >= 1.0 for r in results),
        "aorta_pixels": sum(r.aorta_pixels for r in results),
        "nonempty_nonheart": nonempty / n_nonheart if n_nonheart else float("nan"),
        "slices": sum(r.n_slices for r in results),
        "seconds": sum(r.seconds for r in results),
    }


def percent(inside: int, total: int) -> str:
    return f"{inside}/{total} ({100.0 * inside / total:.1f} %)" if total else "0/0"


def tables(runs: dict[str, list[PatientResult]]) -> str:
    lines = [
        (
            "| version | patients | mean Dice (min) | lesions inside | outside truth, ml/patient "
            "| below diaphragm, ml/patient (patients >= 1 ml) | aorta lumen px "
            "| masks on slices without heart | slices/s |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, results in runs.items():
        p = pooled(results)
        lines.append(
            f"| {name} | {len(results)} | {p['dice']:.3f} ({p['min_dice']:.3f}) | "
            f"{percent(p['inside'], p['lesions'])} | {p['outside_truth_ml']:.1f} | "
            f"{p['below_diaphragm_ml']:.1f} ({p['n_below_diaphragm']}) | {p['aorta_pixels']} | "
            f"{100.0 * p['nonempty_nonheart']:.0f} % | {p['slices'] / p['seconds']:.1f} |"
        )
    name, results = list(runs.items())[-1]
    lines += [
        "",
        f"Per patient ({name}):",
        "",
        (
            "| patient | pixel mm | slice mm | slices | Dice | lesions inside | outside truth, ml "
            "| below diaphragm, ml | aorta px | slices/s |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s = r.scores
        lines.append(
            f"| {r.patient_id} | {r.pixel_spacing_mm:.3f} | {r.slice_thickness_mm:g} | "
            f"{r.n_slices} | {s['dice_heart_slices']:.3f} | "
            f"{s['n_lesions_inside']}/{s['n_lesions']} | {r.outside_truth_ml:.1f} | "
            f"{r.below_diaphragm_ml:.1f} | {r.aorta_pixels} | {r.n_slices / r.seconds:.1f} |"
        )
    lost = [(name, lesion) for name, results in runs.items() for r in results for lesion in r.lost]
    lines += ["", "Lesions lost (not wholly inside the mask):", ""]
    if not lost:
        return "\n".join([*lines, "none"])
    lines += [
        (
            "| version | patient | artery | area mm^2 | slice below the heart's top, mm (of height) "
            "| farthest pixel outside the mask, mm |"
        ),
        "|---|---|---|---:|---:|---:|",
    ]
    for name, lesion in lost:
        lines.append(
            f"| {name} | {lesion.patient_id} | {lesion.artery} | {lesion.area_mm2:.1f} | "
            f"{lesion.depth_below_heart_top_mm:.1f} ({lesion.heart_height_mm:.0f}) | "
            f"{lesion.outside_mm:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2021, help="synthetic seed (default 2021)")
    parser.add_argument("--patients", type=int, default=16, help="patients (default 16)")
    parser.add_argument("--first", type=int, default=1, help="first patient number (default 1)")
    parser.add_argument("--size", type=int, default=512, help="matrix size (default 512)")
    parser.add_argument(
        "--spacing", type=float, nargs=2, default=(0.4, 0.9), help="pixel spacing range at 512 px"
    )
    parser.add_argument("--thickness", type=float, nargs="+", default=(2.5, 3.0))
    parser.add_argument("--noise-model", default="gaussian", choices=("gaussian", "radon"))
    parser.add_argument("--baseline", help="git revision whose segmentation.py to compare")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a SegmentationSettings field for the current version (repeatable)",
    )
    parser.add_argument("--cohort-dir", type=Path, help="keep (and reuse) the cohort here")
    parser.add_argument("--note", default="", help="what the cohort is (for --record)")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.patients < 1 or args.first < 1:
        parser.error("--patients and --first must be at least 1")
    settings = SynthSettings(
        seed=args.seed,
        size=args.size,
        pixel_spacing_mm=tuple(args.spacing),
        slice_thickness_mm=tuple(args.thickness),
        noise_model=args.noise_model,
    )
    ids = synthetic_patient_ids(args.first + args.patients - 1)[args.first - 1 :]
    defaults = current_segmentation.SegmentationSettings()
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if not hasattr(defaults, name):
            parser.error(f"--set: SegmentationSettings has no field {name!r}")
        overrides[name] = type(getattr(defaults, name))(value)
    with tempfile.TemporaryDirectory(prefix="cacflow-segq-") as tmp:
        modules = {}
        if args.baseline:
            modules[f"before ({args.baseline})"] = load_baseline(args.baseline, Path(tmp))
        modules["after (working tree)" if args.baseline else "current"] = current_segmentation
        runs: dict[str, list[PatientResult]] = {name: [] for name in modules}
        folder = args.cohort_dir or Path(tmp) / "cohort"
        write_cohort(folder, ids, settings)
        for n, pid in enumerate(ids):
            report = read_study(folder / "dicom" / pid, pid)
            if report.error is not None:
                raise SystemExit(f"{pid}: {report.error}")
            volume = volume_of(report.ct)
            truth = aligned_truth(folder / "truth" / f"{pid}.npz", volume.instance_numbers)
            wrong = wrong_organ_masks(pid, settings, truth["slice_z_mm"], volume.hu.shape[1:])
            if n == 0:  # warm-up: imports and first-call costs
                for module in modules.values():
                    module.segment_heart(
                        volume.hu, volume.pixel_spacing_mm, volume.slice_spacing_mm
                    )
            for name, module in modules.items():
                result = evaluate(
                    module,
                    pid,
                    volume,
                    truth,
                    wrong,
                    {} if module is not current_segmentation else overrides,
                )
                runs[name].append(result)
                s = result.scores
                print(
                    f"{name} {pid}: Dice {s['dice_heart_slices']:.3f}, lesions "
                    f"{s['n_lesions_inside']}/{s['n_lesions']}, outside truth "
                    f"{result.outside_truth_ml:.1f} ml, below diaphragm "
                    f"{result.below_diaphragm_ml:.1f} ml",
                    file=sys.stderr,
                )
    table = tables(runs)
    print(table)
    if args.record:
        details = (
            f"seed {args.seed}, patients {ids[0]}-{ids[-1]}, {args.size} px, pixel spacing "
            f"{args.spacing[0]:g}-{args.spacing[1]:g} mm at 512 px, slices "
            f"{'/'.join(f'{t:g}' for t in args.thickness)} mm, {args.noise_model} noise"
            + (f"; settings {', '.join(args.set)}" if args.set else "")
            + (f"; {args.note}" if args.note else "")
        )
        append_section("segmentation_quality", details, table)


if __name__ == "__main__":
    main()
