"""The final report: one self-contained HTML file (results/report/index.html) that a browser
opens offline. Images are embedded as base64 data URIs, the style sheet is inline, and the
page holds no script and no address outside itself, so it can be mailed or archived alone.

Sections: what the data and the training preset were (a banner when the cohort is synthetic
or the training a smoke-size demo), cohort and QC (accepted and refused studies with their
reasons, segmentation quality, dataset counts, split sizes), the settings of the run, the
software versions, the results tables (training, metrics with bootstrap intervals, the
paper's Tables 1 and 3 beside ours, Agatston scores and agreement) and the figures.

Every table is optional: a missing one (a stage not run, e.g. evaluation) says so in its
section. Tables are read as strings (cacflow.tables.read_tsv) and shown as they are; the
only identifiers written are the pseudonymous patient_id values the tables already hold, and
settings whose name marks them secret (e.g. ingest.pseudonym_key) are masked.
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cacflow import __version__
from cacflow.scoring.agatston import RISK_CATEGORIES
from cacflow.scoring.arteries import ARTERIES, ARTERY_COLUMNS
from cacflow.tables import read_tsv

# Keys of `tables` in write_report, and the file each stands for.
TABLE_KEYS = {
    "series": "results/qc/series.tsv",
    "segmentation": "results/qc/segmentation.tsv",
    "datasets": "results/qc/datasets.tsv",
    "splits": "results/splits/patients.tsv",
    "training": "results/models/summary.tsv",
    "metrics": "results/metrics.tsv",
    "table1": "results/tables/table1.tsv",
    "table3": "results/tables/table3.tsv",
    "agatston": "results/agatston/patients.tsv",
    "agreement": "results/agatston/agreement.tsv",
    "lesions_eval": "results/agatston/lesions_eval.tsv",
    "external_metrics": "results/external/metrics.tsv",
    "external_table3": "results/external/table3.tsv",
    "external_agreement": "results/external/agatston/agreement.tsv",
    "external_pointing": "results/external/gradcam_pointing.tsv",
}
# The paper's input size; smaller inputs, or capped epochs, are the smoke-size demo preset.
PAPER_IMAGE_SIZE = 299
# Distributions whose versions the report lists (first installed name of each entry).
VERSION_PACKAGES = (
    ("snakemake",),
    ("tensorflow", "tensorflow-cpu"),
    ("keras",),
    ("pydicom",),
    ("numpy",),
    ("scikit-image",),
    ("scikit-learn",),
    ("pandas",),
    ("matplotlib",),
)
TRAINING_COLUMNS = (
    "dataset",
    "model",
    "image_size",
    "parameters",
    "train_images",
    "epochs_run",
    "steps_per_epoch",
    "best_epoch",
    "best_val_accuracy",
    "train_images_per_s",
    "inference_ms_batch1",
    "inference_ms_batch32",
    "device",
)
METRIC_NAMES = ("accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity", "f1")
DATASET_ORDER = ("original", "segmented", "cropped")
SECRET_WORDS = ("key", "secret", "password", "token")
MISSING = "\u2013"  # en dash
NOT_RUN = "not run"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1200px; padding: 1em 2em 3em; color: #1d1d1f;
       line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ccd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-bottom: 0.3em; }
.banner { border: 2px solid #c77700; background: #fff4e0; padding: 0.6em 1em;
          margin: 0.8em 0; border-radius: 4px; }
.banner strong { color: #8a4b00; }
.note { color: #555; font-size: 0.92em; }
.notrun { color: #777; font-style: italic; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.88em; }
th, td { border: 1px solid #ccd; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #eef0f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafd; }
.scroll { overflow-x: auto; }
.settings { display: flex; flex-wrap: wrap; gap: 0 2em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #333; max-width: 60em; }
nav ul { columns: 2; }
"""


def demo_preset(training: Mapping) -> bool:
    """True when training ran the smoke-size demo rather than the paper's setting: inputs
    smaller than the paper's 299 px, or epochs capped at a number of batches."""
    return int(training.get("image_size", PAPER_IMAGE_SIZE)) < PAPER_IMAGE_SIZE or (
        int(training.get("steps_per_epoch", 0)) > 0
    )


def software_versions() -> dict[str, str]:
    """Python, cacflow and the main libraries as installed where the report is written."""
    versions = {"python": platform.python_version(), "cacflow": __version__}
    for names in VERSION_PACKAGES:
        versions[names[0]] = "not installed here"
        for name in names:
            try:
                versions[names[0]] = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def write_report(
    out_html: Path,
    *,
    tables: Mapping[str, Path | None],
    figures: Sequence[tuple[str, Path | None, str]],
    config: Mapping,
    synthetic: bool,
    demo: bool,
    versions: Mapping[str, str] | None = None,
    configfiles: Sequence[str] = (),
) -> None:
    """Write the report to `out_html` (atomically: a temporary name, then rename).

    `tables`: TABLE_KEYS -> path, or None / a missing file when that stage did not run.
    `figures`: (title, PNG path or None, caption), shown in this order; a missing PNG is
    listed as not run. `config`: the run's settings. `synthetic`: the data were the
    synthetic cohort. `demo`: training used the smoke-size preset (see demo_preset).
    `versions`: name -> version (default: software_versions()). `configfiles`: the
    configuration files of the run, each overlaying the ones before.
    """
    rows = {key: _read_optional(tables.get(key)) for key in TABLE_KEYS}
    sections = [
        ("cohort", "Cohort and quality control", _cohort_section(rows)),
        ("settings", "Method settings", _settings_section(config, configfiles)),
        ("software", "Software", _versions_section(versions or software_versions())),
        ("results", "Results", _results_section(rows)),
        ("figures", "Figures", _figures_section(figures)),
    ]
    body = [
        "<h1>cacflow report: coronary artery calcium on CT</h1>",
        (
            '<p class="note">After Lee et al., <em>Sensors</em> 2021, 21:7059 (CNN calcium '
            "detection on three image datasets) with the heart segmentation of Rim et al., "
            f"<em>Sensors</em> 2021, 21:2675. cacflow {html.escape(__version__)}.</p>"
        ),
        _banner(synthetic, demo, config, configfiles),
        "<nav><ul>",
        *(
            f'<li><a href="#{anchor}">{html.escape(title)}</a></li>'
            for anchor, title, _ in sections
        ),
        "</ul></nav>",
    ]
    for anchor, title, content in sections:
        body.append(f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{content}</section>')
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>cacflow report</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    partial = out_html.with_name(out_html.name + ".part")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, out_html)


# Sections -------------------------------------------------------------------------------
def _banner(synthetic: bool, demo: bool, config: Mapping, configfiles: Sequence[str]) -> str:
    notes = []
    if synthetic:
        notes.append(
            "<strong>Synthetic data.</strong> These results come from the built-in synthetic "
            "cohort: chest CT phantoms whose calcium is known (the truth), not patients. They "
            "show that the workflow works and how close it gets to a known truth; they say "
            "nothing about performance on clinical scans."
        )
    if demo:
        training = config.get("training", {})
        pipeline = config.get("input_pipeline", {})
        half = ", half calcium" if pipeline.get("balanced_batches") else ""
        notes.append(
            "<strong>Demo training preset.</strong> The networks were trained from scratch in "
            "a short CPU run (input "
            f"{html.escape(str(training.get('image_size', '?')))} px, "
            f"{html.escape(str(training.get('epochs', '?')))} epochs of at most "
            f"{html.escape(str(training.get('steps_per_epoch', '?')))}"
            f"{_per_network_steps(training)} batches of "
            f"{html.escape(str(pipeline.get('batch_size', '?')))}{half}, "
            f"{html.escape(str(training.get('optimizer', 'sgd')))}), which keeps a run within "
            "minutes. This is <em>not</em> the paper's setting "
            f"({PAPER_IMAGE_SIZE} px inputs, every training image in every epoch, SGD): "
            "the networks learn, but less than they can. The paper's settings: "
            "<code>snakemake --configfile config/paper.yaml</code> (a GPU run)."
            + _files_note(configfiles)
            + _pairs_note(training)
        )
    return "".join(f'<div class="banner">{note}</div>' for note in notes)


# The (dataset, network) pairs config/cpu.yaml trains: every dataset with every network.
CPU_PRESET_DATASETS = ("original", "segmented", "cropped")
CPU_PRESET_MODELS = ("resnet50", "inception_resnet_v2", "vgg16", "vgg19")


def _per_network_steps(training: Mapping) -> str:
    """ " (resnet50: 128)" for the trained networks given their own batches an epoch."""
    own = [
        f"{html.escape(model)}: {html.escape(str(keys['steps_per_epoch']))}"
        for model, keys in training.get("per_model", {}).items()
        if "steps_per_epoch" in keys and model in training.get("models", ())
    ]
    return f" ({', '.join(own)})" if own else ""


def _pairs_note(training: Mapping) -> str:
    """Which pairs this run trained and which config/cpu.yaml adds ("" when none)."""
    trained = [
        (d, m) for d in training.get("datasets", CPU_PRESET_DATASETS) for m in training["models"]
    ]
    added = [
        (d, m) for d in CPU_PRESET_DATASETS for m in CPU_PRESET_MODELS if (d, m) not in trained
    ]
    if not added:
        return ""

    def listed(pairs):
        return ", ".join(f"{html.escape(d)}/{html.escape(m)}" for d, m in pairs)

    return (
        f" This run trained {len(trained)} (dataset, network) pair"
        f"{'s' if len(trained) != 1 else ''}: {listed(trained)}. "
        "<code>snakemake --configfile config/cpu.yaml</code> trains all "
        f"{len(CPU_PRESET_DATASETS) * len(CPU_PRESET_MODELS)} on a CPU (about an hour on 2 "
        f"cores), adding {listed(added)}."
    )


def _cohort_section(rows: Mapping[str, list[dict] | None]) -> str:
    parts = ["<h3>Studies (ingest)</h3>", _series_summary(rows["series"])]
    parts += ["<h3>Heart segmentation</h3>", _segmentation_summary(rows["segmentation"])]
    parts += ["<h3>Image datasets</h3>", _datasets_summary(rows["datasets"])]
    parts += ["<h3>Patient splits</h3>", _splits_summary(rows["splits"])]
    return "".join(parts)


def _series_summary(series: list[dict] | None) -> str:
    if series is None:
        return _not_run("results/qc/series.tsv")
    status: dict[str, str] = {}
    refused: list[dict] = []
    ignored = 0
    for row in series:
        pid, state = row.get("patient_id", ""), row.get("status", "")
        if state == "accepted":
            status[pid] = "accepted"
        elif state == "refused":
            status.setdefault(pid, "refused")
            refused.append(row)
        else:
            ignored += state == "ignored"
            status.setdefault(pid, state or "unknown")
    n_accepted = sum(s == "accepted" for s in status.values())
    n_refused = sum(s == "refused" for s in status.values())
    counts = _table(
        ["patients", "accepted", "refused", "other series ignored"],
        [[str(len(status)), str(n_accepted), str(n_refused), str(ignored)]],
    )
    if not refused:
        return counts + "<p>No study was refused.</p>"
    refused_table = _table(
        ["patient_id", "kind", "reason"],
        [[r.get("patient_id", ""), r.get("kind", ""), r.get("reason", "")] for r in refused],
    )
    return (
        counts + "<p>Refused studies were left out of every later stage; the reason names what "
        "was wrong:</p>" + refused_table
    )


def _segmentation_summary(rows: list[dict] | None) -> str:
    if rows is None:
        return _not_run("results/qc/segmentation.tsv")
    if not rows:
        return "<p>No segmented patients.</p>"
    stats = []
    for column, what in (
        ("dice_heart_slices", "Dice on slices with heart"),
        ("dice_volume", "Dice of the volume"),
        ("nonempty_rate_nonheart", "mask on slices without heart (fraction)"),
        ("mask_volume_ml", "mask volume (ml)"),
    ):
        values = _numbers(r.get(column) for r in rows)
        if values:
            stats.append([what, str(len(values)), *(_fmt(f(values)) for f in (_mean, min, max))])
    text = f"<p>{len(rows)} patients segmented.</p>"
    flagged = [r for r in rows if r.get("warning")]
    if flagged:
        items = "".join(
            f"<li>{html.escape(str(r['patient_id']))}: {html.escape(str(r['warning']))}</li>"
            for r in flagged
        )
        text += f'<p class="note">{len(flagged)} flagged:</p><ul>{items}</ul>'
    if not any(_numbers(r.get("dice_heart_slices") for r in rows)):
        text += '<p class="note">No truth to compare with (own data): masks are not scored.</p>'
    lesions = _numbers(r.get("n_lesions") for r in rows)
    inside = _numbers(r.get("n_lesions_inside") for r in rows)
    if lesions and sum(lesions):
        text += (
            f"<p>True coronary lesions inside the mask: {int(sum(inside))} of "
            f"{int(sum(lesions))} ({100 * sum(inside) / sum(lesions):.1f} %).</p>"
        )
    return text + (_table(["measure", "patients", "mean", "min", "max"], stats) if stats else "")


def _datasets_summary(rows: list[dict] | None) -> str:
    if rows is None:
        return _not_run("results/qc/datasets.tsv")
    columns = [
        ("n_slices", "slices"),
        ("n_empty_mask_dropped", "slices dropped (empty heart mask)"),
        ("n_calcium_slices", "calcium slices"),
        ("n_calcium_slices_dropped", "calcium slices dropped"),
        ("n_calcium_tiles", "calcium tiles"),
        ("n_original", "original images"),
        ("n_segmented", "segmented images"),
        ("n_cropped", "cropped tiles"),
    ]
    table_rows = [
        [what, _fmt(round(sum(_numbers(r.get(column) for r in rows))))]
        for column, what in columns
        if any(column in r for r in rows)
    ]
    sources = sorted({r.get("label_source", "") for r in rows} - {""})
    note = (
        f"<p>{len(rows)} patients; tile labels from: {html.escape(', '.join(sources))}.</p>"
        if sources
        else f"<p>{len(rows)} patients.</p>"
    )
    return note + _table(["count", "all patients"], table_rows)


def _splits_summary(rows: list[dict] | None) -> str:
    if rows is None:
        return _not_run("results/splits/patients.tsv")
    order = ["train", "validation", "test"]
    splits = order + sorted({r.get("split", "") for r in rows} - set(order))
    table_rows = []
    for split in splits:
        members = [r for r in rows if r.get("split") == split]
        if not members and split not in order:
            continue
        calcium = sum(_truthy(r.get("calcium", "")) for r in members)
        table_rows.append([split, str(len(members)), str(calcium), str(len(members) - calcium)])
    return _table(["split", "patients", "with calcium", "without calcium"], table_rows)


def _files_note(configfiles: Sequence[str]) -> str:
    if not configfiles:
        return ""
    files = " + ".join(f"<code>{html.escape(name)}</code>" for name in configfiles)
    return f" Configuration of this run: {files}."


def _settings_section(config: Mapping, configfiles: Sequence[str] = ()) -> str:
    general = [
        [key, _setting(key, value)] for key, value in config.items() if not _is_section(value)
    ]
    blocks = []
    if general:
        blocks.append("<div><h3>general</h3>" + _table(["setting", "value"], general) + "</div>")
    for name, section in config.items():
        if _is_section(section):
            rows = [[key, _setting(key, value)] for key, value in section.items()]
            blocks.append(
                f"<div><h3>{html.escape(str(name))}</h3>"
                + _table(["setting", "value"], rows)
                + "</div>"
            )
    return (
        '<p class="note">The configuration of this run (config.yaml with any --configfile on '
        "top, defaults filled in from the schema)."
        f"{_files_note(configfiles)}</p>"
        f'<div class="settings">{"".join(blocks)}</div>'
    )


def _versions_section(versions: Mapping[str, str]) -> str:
    return (
        '<p class="note">As installed in the environment that wrote this report; every rule '
        "environment pins the same versions (envs/, requirements.txt).</p>"
        + _table(["software", "version"], [[name, v] for name, v in versions.items()])
    )


def _results_section(rows: Mapping[str, list[dict] | None]) -> str:
    parts = ["<h3>Training</h3>", _training_table(rows["training"])]
    parts += [
        "<h3>Classification metrics (test split)</h3>",
        (
            '<p class="note">Value [95 % bootstrap interval over patients]. Image level: '
            "every test image; patient level: a patient is calcium when any of its images "
            "is.</p>"
        ),
        _metrics_table(rows["metrics"], "results/metrics.tsv"),
    ]
    parts += [
        "<h3>Table 1 of the paper: computational cost, theirs and ours</h3>",
        _generic_table(rows["table1"], "results/tables/table1.tsv"),
    ]
    parts += [
        "<h3>Table 3 of the paper: test accuracy, theirs and ours</h3>",
        _generic_table(
            rows["table3"],
            "results/tables/table3.tsv",
            intervals={"our_accuracy": ("our_ci_low", "our_ci_high")},
        ),
    ]
    parts += ["<h3>Agatston scores</h3>", _agatston_summary(rows["agatston"])]
    parts += [
        "<h3>Agreement of the scores with the truth</h3>",
        _generic_table(rows["agreement"], "results/agatston/agreement.tsv"),
        "<h3>Lesion-level evaluation (orCaScore)</h3>",
        _generic_table(rows["lesions_eval"], "results/agatston/lesions_eval.tsv"),
    ]
    parts += ["<h3>External validation</h3>", _external_section(rows)]
    return "".join(parts)


def _external_section(rows: Mapping[str, list[dict] | None]) -> str:
    """The networks on the external cohort (config external:), or why there is none."""
    if rows["external_metrics"] is None:
        hint = (
            "<p>Set <code>external.patients</code> to score every trained network on "
            "patients of another seed and acquisition.</p>"
        )
        missing = [_not_run(TABLE_KEYS[k]) for k in TABLE_KEYS if k.startswith("external_")]
        return "".join(missing) + hint
    n = max((int(r["n_patients"]) for r in rows["external_metrics"]), default=0)
    return "".join(
        [
            (
                f'<p class="note">{n} patients of another synthetic seed, field of view and '
                "slice thickness, never trained or tuned on; every image classified as "
                "<code>cacflow predict</code> does. Value [95 % bootstrap interval over "
                "patients].</p>"
            ),
            _metrics_table(rows["external_metrics"], "results/external/metrics.tsv", "external"),
            "<h4>Table 3 of the paper: its test accuracy beside ours on the external cohort</h4>",
            _generic_table(
                rows["external_table3"],
                "results/external/table3.tsv",
                intervals={"our_accuracy": ("our_ci_low", "our_ci_high")},
            ),
            "<h4>Agatston scores of the external cohort against its truth</h4>",
            _generic_table(rows["external_agreement"], "results/external/agatston/agreement.tsv"),
            "<h4>Heat-map pointing game</h4>",
            (
                '<p class="note">Share of each heat map\'s heat within 5 mm of a true '
                "lesion, over the network's true-positive calcium images of the external "
                "cohort: 1 when the map shows the reader the calcium and nothing else. The "
                "maps are those of the layer named (the deepest with a map at least "
                "<code>evaluation.gradcam_min_cells</code> cells across), weighed by the "
                "method named (<code>evaluation.gradcam_method</code>), of the calcium "
                "log-odds; <code>guided_</code> "
                "is its Guided Grad-CAM (times guided backpropagation: the input's "
                "resolution). Calcium is the brightest thing in a tile, so a map can point "
                "at it without the network's help: <code>random_mean_share</code> is the "
                "same share with every layer above the map's re-initialised at random "
                "(Adebayo et al. 2018). The gap between the two is what the trained network "
                "adds.</p>"
            ),
            _generic_table(rows["external_pointing"], "results/external/gradcam_pointing.tsv"),
        ]
    )


def _training_table(rows: list[dict] | None) -> str:
    if rows is None:
        return _not_run("results/models/summary.tsv")
    columns = [c for c in TRAINING_COLUMNS if any(c in r for r in rows)]
    ordered = sorted(rows, key=_dataset_model_key)
    return _table(columns, [[r.get(c, "") for c in columns] for r in ordered], numeric=True)


def _metrics_table(rows: list[dict] | None, name: str, split: str = "test") -> str:
    if rows is None:
        return _not_run(name)
    test = [r for r in rows if r.get("split") == split and r.get("level") in ("image", "patient")]
    if not test:
        return f"<p>No {html.escape(split)} rows in {html.escape(name)}.</p>"
    names = [m for m in METRIC_NAMES if any(m in r for r in test)]
    columns = ["dataset", "model", "level", "n_images", "n_patients", *names]
    table_rows = []
    for r in sorted(test, key=lambda r: (*_dataset_model_key(r), r.get("level", ""))):
        cells = [r.get(c, "") for c in columns[:5]]
        cells += [_interval(r.get(m), r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high")) for m in names]
        table_rows.append(cells)
    return _table(columns, table_rows, numeric=True)


def _agatston_summary(rows: list[dict] | None) -> str:
    if rows is None:
        return _not_run("results/agatston/patients.tsv")
    methods: dict[str, list[dict]] = {}
    for row in rows:
        methods.setdefault(row.get("method", ""), []).append(row)
    artery_means = [f"mean {artery}" for artery in ARTERIES]
    columns = ["method", "patients", "mean score", "median score", *RISK_CATEGORIES]
    columns += artery_means
    table_rows = []
    for method, members in methods.items():
        scores = sorted(_numbers(r.get("agatston") for r in members))
        counts = [str(sum(r.get("risk_category") == c for r in members)) for c in RISK_CATEGORIES]
        median = scores[len(scores) // 2] if scores else math.nan
        mean = _mean(scores) if scores else math.nan
        by_artery = [_numbers(r.get(column) for r in members) for column in ARTERY_COLUMNS]
        means = [_fmt(_mean(values)) if values else "" for values in by_artery]
        table_rows.append([method, str(len(members)), _fmt(mean), _fmt(median), *counts, *means])
    truth = [r for r in rows if r.get("truth_risk_category")]
    note = '<p class="note">Patients per risk category (Agatston score 0, 1-10, 11-100, 101-400, >400).'
    if truth:
        first = next(iter(methods.values()))
        counts = [
            str(sum(r.get("truth_risk_category") == c for r in first)) for c in RISK_CATEGORIES
        ]
        scores = sorted(_numbers(r.get("truth_agatston") for r in first))
        mean = _mean(scores) if scores else math.nan
        median = scores[len(scores) // 2] if scores else math.nan
        by_artery = [_numbers(r.get(f"truth_{c}") for r in first) for c in ARTERY_COLUMNS]
        means = [_fmt(_mean(values)) if values else "" for values in by_artery]
        table_rows.append(["truth", str(len(first)), _fmt(mean), _fmt(median), *counts, *means])
        note += " The last row is the known truth of the synthetic cohort."
    note += " Mean score per artery: LAD with the left main."
    return note + "</p>" + _table(columns, table_rows, numeric=True)


def _figures_section(figures: Sequence[tuple[str, Path | None, str]]) -> str:
    if not figures:
        return "<p>No figures.</p>"
    parts = []
    for title, path, caption in figures:
        heading = f"<h3>{html.escape(title)}</h3>"
        if path is None or not Path(path).is_file():
            parts.append(heading + f'<p class="notrun">{NOT_RUN}.</p>')
            continue
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(
            f"<figure>{heading}"
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(title, quote=True)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return "".join(parts)


# Tables and cells -----------------------------------------------------------------------
def _read_optional(path: Path | None) -> list[dict] | None:
    if path is None or not Path(path).is_file():
        return None
    return read_tsv(Path(path))


def _not_run(name: str) -> str:
    return f'<p class="notrun">{NOT_RUN} (no {html.escape(name)}).</p>'


def _generic_table(
    rows: list[dict] | None,
    name: str,
    intervals: Mapping[str, tuple[str, str]] | None = None,
) -> str:
    """Every column of a table, with `X_ci_low` / `X_ci_high` (and the given `intervals`)
    folded into the cell of X as value [low, high]."""
    if rows is None:
        return _not_run(name)
    if not rows:
        return f"<p>{html.escape(name)} has no rows.</p>"
    columns = list(rows[0])
    folded = dict(intervals or {})
    for column in columns:
        low, high = f"{column}_ci_low", f"{column}_ci_high"
        if low in columns and high in columns:
            folded[column] = (low, high)
    folded = {c: pair for c, pair in folded.items() if c in columns and set(pair) <= set(columns)}
    hidden = {c for pair in folded.values() for c in pair}
    shown = [c for c in columns if c not in hidden]
    table_rows = []
    for row in rows:
        cells = []
        for column in shown:
            if column in folded:
                low, high = folded[column]
                cells.append(_interval(row.get(column), row.get(low), row.get(high)))
            else:
                cells.append(row.get(column, ""))
        table_rows.append(cells)
    return _table(shown, table_rows, numeric=True)


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], numeric: bool = False) -> str:
    # Column names as the tables spell them, with spaces so long names wrap.
    head = "".join(f"<th>{html.escape(str(c).replace('_', ' '))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for value in row:
            text = _fmt(value) if numeric else str(value)
            css = ' class="num"' if _is_number(value) or text.endswith("]") else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _interval(value, low, high) -> str:
    if not _is_number(value):
        return MISSING
    text = _fmt(value)
    if _is_number(low) and _is_number(high):
        text += f" [{_fmt(low)}, {_fmt(high)}]"
    return text


def _fmt(value) -> str:
    """Numbers as a reader wants them: integers whole, others to 3 decimals (1 from 100 up);
    empty and NaN as a dash; anything else as it is."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "nan", "NaN")):
        return MISSING
    number = _number(value)
    if number is None:
        return str(value)
    if math.isnan(number):
        return MISSING
    whole = isinstance(value, int) or (
        isinstance(value, str) and value.strip().lstrip("-").isdigit()
    )
    if whole:
        return f"{int(number):,}" if abs(number) >= 10000 else str(int(number))
    return f"{number:.1f}" if abs(number) >= 100 else f"{number:.3f}"


def _number(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_number(value) -> bool:
    number = _number(value)
    return number is not None and not math.isnan(number)


def _numbers(values: Iterable) -> list[float]:
    return [n for n in (_number(v) for v in values) if n is not None and not math.isnan(n)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _truthy(value: str) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "calcium")


def _dataset_model_key(row: Mapping) -> tuple:
    dataset = row.get("dataset", "")
    rank = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
    return rank, dataset, row.get("model", "")


def _is_section(value) -> bool:
    return isinstance(value, Mapping)


def _setting(key: str, value) -> str:
    """A setting's value for the page; secrets (a pseudonym key) are never shown."""
    if set(str(key).lower().split("_")) & set(SECRET_WORDS) and value not in ("", None):
        return "(set, not shown)"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)
