"""The `cacflow` command line: `cacflow synth` writes a synthetic cohort; `cacflow convert`
writes a public dataset in the workflow's own-data layout; `cacflow ingest`
runs the workflow's per-patient steps (checks, HU, heart segmentation, the three datasets)
on one study; `cacflow predict` scores one new study with a trained model.

Exit status: 0 done (study accepted and scored); 2 study refused by ingest (one-line reason
on stderr, as in results/qc/series.tsv); 3 model unusable (`predict`: file missing, not a
cacflow model, input size not matching its stored preprocessing); 64 bad usage (options,
config); 1 an unexpected error (a bug: please report it with the traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cacflow import __version__

EXIT_OK, EXIT_REFUSED, EXIT_MODEL, EXIT_USAGE = 0, 2, 3, 64


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage, which `predict` and `ingest` use for a refused study."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _synth(args: argparse.Namespace) -> int:
    from cacflow.synthetic.synth import SynthSettings, synth_cohort

    settings = SynthSettings(
        seed=args.seed,
        size=args.size,
        slice_thickness_mm=tuple(args.slice_thickness),
        noise_sd_hu=args.noise,
        noise_model=args.noise_model,
        phi=args.phi,
    )
    start = time.perf_counter()
    if args.format == "coca":
        from cacflow.convert.coca import synth_coca

        rows = synth_coca(Path(args.out), args.patients, settings, args.instance_order)
    elif args.format == "orcascore":
        from cacflow.convert.orcascore import synth_orcascore

        rows = synth_orcascore(Path(args.out), args.patients, settings)
    else:
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


def _convert(args: argparse.Namespace) -> int:
    import yaml

    from cacflow.convert.coca import convert_coca
    from cacflow.convert.cohort import ConversionError
    from cacflow.convert.orcascore import convert_orcascore
    from cacflow.dicom.ingest import IngestSettings

    sections = yaml.safe_load(Path(args.config).read_text()) or {} if args.config else {}
    settings = IngestSettings.from_config(dict(sections.get("ingest") or {}))
    start = time.perf_counter()
    try:
        convert = {"coca": convert_coca, "orcascore": convert_orcascore}[args.dataset]
        rows = convert(Path(args.root), Path(args.out), settings)
    except ConversionError as error:
        print(f"cacflow convert: {error}", file=sys.stderr)
        return EXIT_USAGE
    converted = [r for r in rows if r["status"] == "converted"]
    differ = [
        r for r in converted if r.get("difference") not in ("", None) and abs(r["difference"]) > 1
    ]
    seconds = time.perf_counter() - start
    print(
        f"converted {len(converted)} of {len(rows)} patients into {args.out} in {seconds:.1f} s "
        f"({seconds / max(len(rows), 1):.2f} s a patient); patients keep the dataset's IDs "
        f"(its folder names); left out: {len(rows) - len(converted)}; score differs from the "
        f"dataset's table by more than 1: {len(differ)} (see {args.out}/conversion.tsv)",
        file=sys.stderr,
    )
    return EXIT_OK


def _ingest(args: argparse.Namespace) -> int:
    import yaml

    from cacflow.dicom.ingest import IngestSettings
    from cacflow.patients import pseudonym, read_label_table
    from cacflow.pipeline import StudySettings, process_study, settings_from
    from cacflow.scoring.scoring import ScoringSettings

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
        scoring=ScoringSettings.from_config(
            (sections.get("agatston") or {}).get("classical") or {}
        ),
    )
    labels = read_label_table(Path(args.labels)) if args.labels else None
    truth = Path(args.truth) if args.truth else None
    return process_study(
        study, Path(args.out), patient_id, settings, labels, truth, label_key=label_key
    )


PREDICT_DESCRIPTION = """\
Score one new study with a trained model, running the workflow's own code: ingest checks
(the same refusals and reasons), heart segmentation, the images of the dataset the model was
trained on (with the window, sizes and grid stored in the model, which win over --config),
the classifier on every image, the classical Agatston score inside the heart mask and the
hybrid one (the classical lesions shown by an image the model calls calcium). Writes
prediction.json and overlay.png into --out and prints a summary on stdout.

exit status:
  0   scored
  2   study refused by ingest (the one-line reason on stderr); no prediction.json
  3   model unusable: missing, not a cacflow model (no cacflow.json inside), or not
      matching its stored preprocessing
  64  bad usage (options, --config)
"""


def _predict(args: argparse.Namespace) -> int:
    import yaml

    def usage(message: str) -> int:
        print(f"cacflow predict: {message}", file=sys.stderr)
        return EXIT_USAGE

    sections = {}
    if args.config:
        try:
            sections = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            return usage(f"--config {args.config}: {str(error).splitlines()[0]}")
    from cacflow.dicom.ingest import IngestError, IngestSettings
    from cacflow.learning.model_file import UnusableModelError
    from cacflow.pipeline import StudySettings, settings_from
    from cacflow.predict import patient_name, predict_study
    from cacflow.prediction_record import summary_lines
    from cacflow.scoring.scoring import ScoringSettings

    ingest_section = dict(sections.get("ingest") or {})
    if args.pseudonymize:
        ingest_section["pseudonymize"] = True
    try:
        settings = StudySettings(
            ingest=IngestSettings.from_config(ingest_section),
            segmentation=settings_from("segmentation", sections.get("segmentation") or {}),
            datasets=settings_from("datasets", sections.get("datasets") or {}),
        )
        scoring = ScoringSettings.from_config((sections.get("agatston") or {}).get("classical"))
    except (ValueError, TypeError) as error:
        return usage(f"--config {args.config}: {error}")
    threshold = args.threshold
    if threshold is None:
        threshold = float((sections.get("agatston") or {}).get("hybrid_threshold", 0.5))
    if not 0.0 <= threshold <= 1.0:
        return usage(f"--threshold must be within 0..1, got {threshold:g}")
    key = args.pseudonym_key or ingest_section.get("pseudonym_key", "")
    if settings.ingest.pseudonymize and not key:
        return usage("--pseudonymize needs --pseudonym-key (or ingest.pseudonym_key)")
    patient_id = patient_name(Path(args.study_dir), settings.ingest, key)
    out = Path(args.out) if args.out else Path("predictions") / patient_id
    try:
        prediction = predict_study(
            Path(args.model),
            Path(args.study_dir),
            out,
            settings,
            threshold=threshold,
            patient_id=patient_id,
            keep_images=args.keep_images,
            config_datasets=sections.get("datasets") or {},
            scoring=scoring,
        )
    except UnusableModelError as error:
        print(f"model unusable: {error}", file=sys.stderr)
        return EXIT_MODEL
    except IngestError as error:
        print(f"refused: {error.reason}", file=sys.stderr)
        return EXIT_REFUSED
    for note in prediction.notes:
        print(f"note: {note}", file=sys.stderr)
    for line in summary_lines(prediction.record):
        print(line)
    print(f"wrote {prediction.json_path} and {prediction.overlay_path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cacflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    synth.add_argument(
        "--format",
        choices=("cacflow", "coca", "orcascore"),
        default="cacflow",
        help="cacflow (default: dicom/, labels, truth); coca: Stanford COCA's layout, "
        "calcium contours and score table; orcascore: MetaImage image and reference pairs "
        "(both with the truth beside them)",
    )
    synth.add_argument(
        "--instance-order",
        choices=("descending", "ascending"),
        default="descending",
        help="coca: InstanceNumber 1 at the top of the scan (descending in z) or the bottom",
    )
    synth.set_defaults(func=_synth)

    convert = sub.add_parser(
        "convert",
        help="a public calcium-scoring dataset into the workflow's own-data layout",
        description="Write DIR/dicom/<patient>/, DIR/labels.tsv, DIR/lesions/<patient>.npz, "
        "DIR/reference.tsv and DIR/conversion.tsv (each patient converted, or left out with "
        "its reason). Exit 0: done; 64: bad usage or not the dataset's layout.",
    )
    convert.add_argument("dataset", choices=("coca", "orcascore"), help="the dataset's format")
    convert.add_argument(
        "root",
        help="the dataset's folder (COCA: Gated_release_final; orCaScore: the folder of its "
        "<id>CTI.mhd and <id>R.mhd pairs, searched through sub-folders)",
    )
    convert.add_argument("--out", required=True, help="output folder")
    convert.add_argument("--config", help="a config.yaml whose ingest section applies")
    convert.set_defaults(func=_convert)

    ingest = sub.add_parser(
        "ingest",
        help="check, segment, make the three datasets and score one DICOM study",
        description="Run the workflow's per-patient steps on one study folder and write "
        "qc/, segmentation/, datasets/ and agatston/ under --out. Exit 0: accepted; 2: refused (the "
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
        "--config",
        help="a config.yaml whose ingest, segmentation, datasets and agatston: classical: apply",
    )
    ingest.add_argument(
        "--pseudonymize",
        action="store_true",
        help="accept identifying tags (never copied) and name the patient by a keyed hash",
    )
    ingest.add_argument("--pseudonym-key", help="secret key of the pseudonym")
    ingest.set_defaults(func=_ingest)

    predict = sub.add_parser(
        "predict",
        help="score one new study with a trained model (classical and hybrid Agatston)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=PREDICT_DESCRIPTION,
    )
    predict.add_argument("study_dir", help="folder with the patient's DICOM files")
    predict.add_argument(
        "--model", required=True, help="a model.keras written by cacflow's training"
    )
    predict.add_argument("--out", help="output folder (default: predictions/<patient id>)")
    predict.add_argument(
        "--threshold",
        type=float,
        help="P(calcium) from which an image counts as calcium for the hybrid score "
        "(default: agatston.hybrid_threshold of --config, else 0.5)",
    )
    predict.add_argument(
        "--config",
        help="a config.yaml whose ingest, segmentation and agatston (hybrid_threshold, "
        "classical) sections apply",
    )
    predict.add_argument(
        "--pseudonymize",
        action="store_true",
        help="accept identifying tags (never copied) and name the patient by a keyed hash",
    )
    predict.add_argument("--pseudonym-key", help="secret key of the pseudonym")
    predict.add_argument(
        "--keep-images",
        action="store_true",
        help="keep the images the model saw under OUT/images/<dataset>/ with their manifest",
    )
    predict.set_defaults(func=_predict)
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
