"""The `cacflow` command line: `cacflow synth` writes a synthetic cohort; `cacflow ingest`
runs the workflow's per-patient steps (checks, HU, heart segmentation, the three datasets)
on one study."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__


def _synth(args: argparse.Namespace) -> int:
    from .synth import SynthSettings, synth_cohort

    settings = SynthSettings(
        seed=args.seed,
        size=args.size,
        slice_thickness_mm=tuple(args.slice_thickness),
        noise_sd_hu=args.noise,
        noise_model=args.noise_model,
        phi=args.phi,
    )
    start = time.perf_counter()
    rows = synth_cohort(Path(args.out), args.patients, settings, jobs=args.jobs)
    seconds = time.perf_counter() - start
    n_slices = sum(int(r["n_slices"]) for r in rows)
    zero = sum(float(r["agatston_total"]) == 0 for r in rows)
    print(
        f"wrote {len(rows)} patients, {n_slices} slices to {args.out} in {seconds:.1f} s "
        f"({n_slices / seconds:.1f} slices/s); CAC = 0 in {zero} of {len(rows)}",
        file=sys.stderr,
    )
    return 0


def _ingest(args: argparse.Namespace) -> int:
    import yaml

    from .ingest import IngestSettings, pseudonym
    from .pipeline import StudySettings, process_study, settings_from
    from .tables import read_label_table

    study = Path(args.study_dir)
    sections = {}
    if args.config:
        sections = yaml.safe_load(Path(args.config).read_text()) or {}
    ingest_section = dict(sections.get("ingest") or {})
    if args.pseudonymize:
        ingest_section["pseudonymize"] = True
    ingest = IngestSettings.from_config(ingest_section)
    patient_id = args.patient_id or study.resolve().name
    label_key = patient_id
    if ingest.pseudonymize and not args.patient_id:
        key = args.pseudonym_key or ingest_section.get("pseudonym_key", "")
        if not key:
            print("cacflow ingest: --pseudonymize needs --pseudonym-key", file=sys.stderr)
            return 64
        patient_id = pseudonym(study.resolve().name, key)
    settings = StudySettings(
        ingest=ingest,
        segmentation=settings_from("segmentation", sections.get("segmentation") or {}),
        datasets=settings_from("datasets", sections.get("datasets") or {}),
    )
    labels = read_label_table(Path(args.labels)) if args.labels else None
    truth = Path(args.truth) if args.truth else None
    return process_study(
        study, Path(args.out), patient_id, settings, labels, truth, label_key=label_key
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cacflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cacflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write a synthetic CAC-CT cohort with known truth")
    synth.add_argument("--patients", type=int, required=True, help="number of patients")
    synth.add_argument("--seed", type=int, default=2021, help="random seed (default 2021)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--size", type=int, default=512, help="pixels per side (default 512)")
    synth.add_argument(
        "--slice-thickness",
        type=float,
        nargs="+",
        default=[3.0],
        metavar="MM",
        help="slice thickness choices in mm (default 3.0)",
    )
    synth.add_argument("--noise", type=float, default=20.0, help="noise SD in HU (default 20)")
    synth.add_argument(
        "--noise-model",
        choices=("gaussian", "radon"),
        default="gaussian",
        help="gaussian (fast) or radon: projection, quantum noise, FBP",
    )
    synth.add_argument(
        "--phi",
        action="store_true",
        help="write identifying values into identity tags (to test PHI guards)",
    )
    synth.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    synth.set_defaults(func=_synth)

    ingest = sub.add_parser(
        "ingest",
        help="check, segment and build the three datasets of one DICOM study",
        description="Run the workflow's per-patient steps on one study folder and write "
        "qc/, segmentation/ and datasets/ under --out. Exit 0: accepted; 2: refused (the "
        "reason on stderr); 64: bad usage.",
    )
    ingest.add_argument("study_dir", help="folder with the patient's DICOM files")
    ingest.add_argument("--out", required=True, help="output folder")
    ingest.add_argument(
        "--patient-id", help="pseudonymous ID for outputs (default: the folder name)"
    )
    ingest.add_argument(
        "--labels", help="slice label table (patient_id, instance_number, calcium, cac_class)"
    )
    ingest.add_argument("--truth", help="synthetic truth .npz (scores the segmentation)")
    ingest.add_argument(
        "--config", help="a config.yaml whose ingest/segmentation/datasets sections apply"
    )
    ingest.add_argument(
        "--pseudonymize",
        action="store_true",
        help="accept identifying tags (never copied) and name the patient by a keyed hash",
    )
    ingest.add_argument("--pseudonym-key", help="secret key of the pseudonym")
    ingest.set_defaults(func=_ingest)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "patients", 1) < 1:
        parser.error("--patients must be at least 1")
    if getattr(args, "size", 64) < 32:
        parser.error("--size must be at least 32")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
