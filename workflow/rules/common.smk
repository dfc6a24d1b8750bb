import ast
import functools
import os
import re
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

# The library's standard-library-only modules, from this checkout (first on the path: an
# installed cacflow may be another version).
SCRIPTS = Path(workflow.basedir, "workflow", "scripts")
sys.path.insert(0, str(SCRIPTS))
from cacflow.overlays import per_model_after_overlays
from cacflow.patients import label_rows_by_patient, pseudonym, synthetic_patient_ids


def config_layer_files():
    """The run's configuration files in the order they overlay: the Snakefile's config.yaml
    (where present), then each --configfile (Snakemake lists config.yaml after them)."""
    given = [str(path) for path in workflow.overwrite_configfiles]
    own = [str(path) for path in workflow.configfiles if str(path) not in given]
    return list(dict.fromkeys(own + given))


def _training_layers():
    """The training section of the schema's defaults and of each configuration file."""
    defaults = {}
    validate(defaults, "../schemas/config.schema.yaml")
    files = [
        yaml.safe_load(Path(name).read_text()) or {} for name in config_layer_files()
    ]
    return [defaults["training"], *((f.get("training") or {}) for f in files)]


config["training"]["per_model"] = per_model_after_overlays(
    config["training"]["per_model"], _training_layers()
)


def _key_sorted(value):
    if isinstance(value, dict):
        return {key: _key_sorted(value[key]) for key in sorted(value)}
    return value


# Config sections reach rules as params, and Snakemake compares params as written: sorted
# keys make the order of keys in a config file (or a --configfile on top) irrelevant, so
# reordering settings never reruns a job.
for _section in list(config):
    config[_section] = _key_sorted(config[_section])


# results/datasets/<dataset>/manifest.tsv is the merged table, never a patient's manifest
# (a study folder named "manifest" is refused in study_folders).
wildcard_constraints:
    patient=r"(?!manifest\.tsv$)[A-Za-z0-9_.-]+",
    dataset="original|segmented|cropped",
    script="[A-Za-z0-9_]+",


PATIENT_ID = re.compile(r"[A-Za-z0-9_.-]+")
DATASETS = ("original", "segmented", "cropped")
MODELS = tuple(config["training"]["models"])
# The datasets the networks train on (every dataset is made either way).
TRAINED_DATASETS = tuple(d for d in DATASETS if d in config["training"]["datasets"])
# Keys of the training section that say what to train, not how: no training job depends on them.
TRAINING_LIST_KEYS = ("models", "datasets", "per_model")
_ONE_TRAINING_KEYS = set(config["training"]) - set(TRAINING_LIST_KEYS)
for _model, _keys in config["training"]["per_model"].items():
    _unknown = sorted(set(_keys) - _ONE_TRAINING_KEYS)
    if _unknown:
        raise WorkflowError(
            f"training.per_model.{_model}: {_unknown} are not settings of one training; "
            f"known: {sorted(_ONE_TRAINING_KEYS)}"
        )


if config["datasets"].get("slab", 1) == 3 and config["input_pipeline"]["channels"] != 3:
    raise WorkflowError(
        "datasets.slab 3 makes RGB images (the slices above, at and below): "
        f"input_pipeline.channels must be 3, not {config['input_pipeline']['channels']}"
    )


# The evaluation keys the metrics read: the Grad-CAM keys rerun only the Grad-CAM rules.
METRICS_SETTINGS = {
    key: config["evaluation"][key] for key in ("bootstrap_samples", "threshold")
}


def config_files():
    """The run's configuration files in the order they overlay: a repository file by its
    path in the repository, another by its name only (a path can name a person)."""
    root = Path(workflow.basedir).resolve()
    names = []
    for name in config_layer_files():
        path = Path(name).resolve()
        names.append(
            str(path.relative_to(root)) if path.is_relative_to(root) else path.name
        )
    return list(dict.fromkeys(names))


def model_training_config(wildcards):
    """The training section as the job of `wildcards.model` needs it: without the lists of
    what to train, with only this network's per_model entry (cacflow.learning.training applies it),
    so that adding a network or changing another's keys reruns no other training."""
    section = {
        k: v for k, v in config["training"].items() if k not in TRAINING_LIST_KEYS
    }
    own = config["training"]["per_model"].get(wildcards.model)
    return {**section, "per_model": {wildcards.model: own}} if own else section


# Settings of the synthetic cohort that change no single patient: changing them must not
# rerun the patients already written.
COHORT_ONLY_KEYS = ("patients",)


LIBRARY = "cacflow"


def _module_file(name):
    """The file of library module `name` (dotted), or None when it is not one (an attribute
    imported from a package, a third-party module)."""
    if name != LIBRARY and not name.startswith(f"{LIBRARY}."):
        return None
    base = SCRIPTS.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(path):
    """Dotted names a file imports, at any depth of its code (function-level imports too),
    relative imports resolved; for `from X import y` both X and X.y (y may be a module).
    """
    package = path.relative_to(SCRIPTS).with_suffix("").parts[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package[: len(package) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


@functools.cache
def library_closure(script):
    """The library files a rule script runs, directly or through other modules, each
    package's __init__ included (Python runs it on the way to any module inside)."""
    seen, todo = set(), [SCRIPTS / f"{script}.py"]
    while todo:
        for name in _imported_names(todo.pop()):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                path = _module_file(".".join(parts[:depth]))
                if path and path not in seen:
                    seen.add(path)
                    todo.append(path)
    return sorted(seen)


def lib(script):
    """The library a rule's script imports, as one input: Snakemake does not follow imports,
    so an edit of the library must rerun the rules whose scripts use it. The input is one
    stamp per script, made by the library_stamp rule from library_closure(script); a
    per-patient job then has one library input instead of a dozen, which keeps planning a
    2,300-patient cohort fast. check_library_inputs() holds each rule to its own script.
    """
    return f"results/library/{script}.sha256"


def library_files(wildcards):
    """Paths of a script's library modules, relative to the working directory, which need
    not be the repository (snakemake --directory)."""
    return [os.path.relpath(path) for path in library_closure(wildcards.script)]


def check_library_inputs(rules):
    """Every rule whose script imports the library takes that script's stamp as input `lib`,
    and no other: a stamp copied from a neighbouring rule would miss modules."""
    for each in rules:
        if not each.script:
            continue
        script = Path(each.script).stem
        wanted = lib(script) if library_closure(script) else None
        given = each.input.get("lib")
        if given != wanted:
            raise WorkflowError(
                f"{each.name}: input lib is {given!r}; its script {each.script} "
                f"needs {wanted!r}"
            )


def own_data():
    return bool(config["dicom_dir"])


@functools.cache
def study_folders():
    """{patient_id: study folder}. Synthetic: the cohort's DICOM folders. Own data: every
    sub-folder of dicom_dir, named by its folder name, or by a keyed pseudonym."""
    if not own_data():
        ids = synthetic_patient_ids(config["synthetic"]["patients"])
        return {pid: f"results/synthetic/dicom/{pid}" for pid in ids}
    root = Path(config["dicom_dir"])
    if not root.is_dir():
        raise WorkflowError(f"dicom_dir: folder not found: {root}")
    if not config["labels"]:
        raise WorkflowError(
            "labels: own DICOM data needs a slice label table (see README, 'Your own data')"
        )
    settings = config["ingest"]
    if settings["pseudonymize"] and not settings["pseudonym_key"]:
        raise WorkflowError("ingest.pseudonym_key: set a secret key to pseudonymize")
    folders = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        if settings["pseudonymize"]:
            folders[pseudonym(folder.name, settings["pseudonym_key"])] = str(folder)
        elif PATIENT_ID.fullmatch(folder.name) and folder.name != "manifest":
            folders[folder.name] = str(folder)
        else:
            raise WorkflowError(
                f"dicom_dir: folder {folder.name!r} is not usable as a patient ID (letters, "
                "digits, _ . - only); rename it, or set ingest.pseudonymize: true"
            )
    if not folders:
        raise WorkflowError(f"dicom_dir: no patient sub-folders in {root}")
    return folders


def patient_ids():
    return list(study_folders())


def study_input(wildcards):
    """The study's files (own data: every file, so editing one reruns the patient) or the
    synthetic patient's folder (an output of synth_patient)."""
    folder = study_folders()[wildcards.patient]
    if not own_data():
        return folder
    return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file())


def truth_input(wildcards):
    """The patient's reference lesion map: the synthetic truth, or own data's file in the
    `lesions` folder, named by the label table's ID (none without one)."""
    if not own_data():
        return f"results/synthetic/truth/{wildcards.patient}.npz"
    if not config["lesions"]:
        return []
    return str(Path(config["lesions"], f"{label_key(wildcards)}.npz"))


@functools.cache
def check_lesion_maps():
    """Own data with `lesions`: one map per patient, or a clear error naming the missing."""
    folder = Path(config["lesions"])
    if not folder.is_dir():
        raise WorkflowError(f"lesions: folder not found: {folder}")
    keys = [table_key(pid) for pid in patient_ids()]
    missing = sorted(key for key in keys if not (folder / f"{key}.npz").is_file())
    if missing:
        raise WorkflowError(
            f"lesions: no lesion map for {len(missing)} patients in {folder}, e.g. "
            f"{missing[0]}.npz (write one per study; an empty map for a study without calcium)"
        )


def lesion_maps():
    """Whether every patient has a reference lesion map (synthetic truth, or `lesions`)."""
    if not own_data():
        return True
    if config["lesions"]:
        check_lesion_maps()
        return True
    return False


def truth_table():
    """The per-patient reference scores the agreement tables compare with: the synthetic
    truth's, or own data's `reference` table with the workflow's patient IDs; None."""
    if not own_data():
        return "results/synthetic/truth/patients.tsv"
    return "results/reference/patients.tsv" if config["reference"] else None


def labels_input(wildcards):
    """The synthetic patient's label file (an output of synth_patient); none with own data,
    whose labels reach the job as params (patient_label_rows)."""
    if own_data():
        return []
    return f"results/synthetic/labels/{wildcards.patient}.tsv"


@functools.cache
def own_label_rows():
    """The user's label table: {ID in the table: its rows, without the ID}."""
    path = Path(config["labels"])
    if not path.is_file():
        raise WorkflowError(f"labels: file not found: {path}")
    try:
        return label_rows_by_patient(path)
    except ValueError as error:
        raise WorkflowError(f"labels: {error}") from None


def patient_label_rows(wildcards):
    """Own data: the patient's rows of the label table, as a job parameter, so that editing
    one patient's rows reruns that patient alone (the table itself is no input). Synthetic:
    none, the job reads the patient's label file."""
    if not own_data():
        return []
    return own_label_rows().get(label_key(wildcards), [])


def label_key(wildcards):
    """The patient's ID in the label table: the folder name, also when pseudonymized (the
    table is the user's own file, read inside the job; it never reaches results)."""
    return table_key(wildcards.patient)


def table_key(patient):
    """`label_key` of a patient ID."""
    if own_data() and config["ingest"]["pseudonymize"]:
        return Path(study_folders()[patient]).name
    return patient


def synth_settings():
    """The synthetic settings that shape a single patient."""
    return {k: v for k, v in config["synthetic"].items() if k not in COHORT_ONLY_KEYS}


# External validation (rules in external.smk) ------------------------------------------
EXTERNAL_ACQUISITION_KEYS = ("seed", "size", "pixel_spacing_mm", "slice_thickness_mm")


def external_patient_ids():
    """The external cohort's patients: none when external.patients is 0, and none with own
    data unless external.with_own_data is set (phantoms say little about networks trained on
    scans, and config.yaml's default cohort is the demo's)."""
    external = config["external"]
    if own_data() and not external["with_own_data"]:
        return []
    return synthetic_patient_ids(external["patients"])


def external_synth_settings():
    """The training cohort's synthetic settings with the external cohort's seed and
    acquisition. Its seed must differ from the training cohort's: the same seed would give
    the same patients."""
    external = config["external"]
    if not own_data() and external["seed"] == config["synthetic"]["seed"]:
        raise WorkflowError(
            f"external.seed {external['seed']} is the training cohort's seed "
            "(synthetic.seed): the external cohort would hold the training patients; choose "
            "another seed"
        )
    return {**synth_settings(), **{k: external[k] for k in EXTERNAL_ACQUISITION_KEYS}}


def external_outputs():
    """What rule all asks of the external validation (nothing without an external cohort)."""
    if not external_patient_ids():
        return []
    return [
        "results/external/qc/series.tsv",
        "results/external/metrics.tsv",
        "results/external/table3.tsv",
        "results/external/agatston/agreement.tsv",
        "results/external/gradcam_pointing.tsv",
    ]


def training_outputs(name):
    """One output of every training job (dataset x model)."""
    return expand(
        f"results/models/{{dataset}}/{{model}}/{name}",
        dataset=TRAINED_DATASETS,
        model=MODELS,
    )


def hybrid_tables():
    """Hybrid Agatston scores of every trained network (rule hybrid_scores), merged after
    the classical ones into results/agatston/patients.tsv."""
    return expand(
        "results/agatston/hybrid/{dataset}/{model}.tsv",
        dataset=TRAINED_DATASETS,
        model=MODELS,
    )


def train_priority(wildcards):
    """Priority of a train_model job, higher runs first among those ready: the
    cropped dataset (nine tiles a slice to predict), then the larger networks."""
    size = ("resnet50", "vgg16", "vgg19", "inception_resnet_v2")
    rank = size.index(wildcards.model) + 1 if wildcards.model in size else 0
    return 10 * (wildcards.dataset == "cropped") + rank


def truth_outputs():
    """The agreement tables and figures, where a reference is known."""
    if truth_table() is None:
        return []
    outputs = [
        "results/agatston/agreement.tsv",
        "results/figures/agatston_scatter.png",
        "results/figures/agatston_bland_altman.png",
    ]
    if lesion_maps():
        outputs.append("results/agatston/lesions_eval.tsv")
    return outputs


def final_outputs():
    """What `snakemake` makes by default, the inputs of rule all; every table, figure and
    the report."""
    return [
        # The synthetic cohort's merged tables (only when it is the input).
        [] if own_data() else "results/synthetic/labels.tsv",
        [] if own_data() else "results/synthetic/truth/patients.tsv",
        "results/qc/series.tsv",
        "results/qc/segmentation.tsv",
        "results/qc/datasets.tsv",
        expand("results/datasets/{dataset}/manifest.tsv", dataset=DATASETS),
        "results/splits/patients.tsv",
        expand("results/augmented/{dataset}/manifest.tsv", dataset=DATASETS),
        "results/figures/augmentation.png",
        "results/models/summary.tsv",
        "results/metrics.tsv",
        "results/figures/roc.png",
        "results/figures/confusion.png",
        expand(
            "results/figures/training_curves/{dataset}_{model}.png",
            dataset=TRAINED_DATASETS,
            model=MODELS,
        ),
        expand("results/figures/gradcam/{dataset}.png", dataset=TRAINED_DATASETS),
        "results/agatston/patients.tsv",
        expand("results/figures/lesions/{patient}.png", patient=patient_ids()),
        # Agreement with the truth: the synthetic cohort's, or own data's reference.
        truth_outputs(),
        external_outputs(),
        "results/report/index.html",
    ]
