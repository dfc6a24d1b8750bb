"""The final report: one self-contained HTML page (cacflow.reporting.report), the dataset examples
figure (cacflow.reporting.example_figures), the report rule's place in the workflow, and the page as a
browser shows it (headless Chromium)."""

from __future__ import annotations

import base64
import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cacflow.pipeline import NO_HEART
from cacflow.reporting.example_figures import draw_examples, pick_examples
from cacflow.reporting.report import TABLE_KEYS, demo_preset, write_report
from cacflow.tables import read_tsv, write_tsv

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium; .ci/run does)"
)
REFUSED_REASON = "IM0007.dcm: PixelSpacing (0028,0030) missing"


def png(path: Path, seed: int = 0) -> Path:
    """A small PNG with a gradient and noise (not blank)."""
    rng = np.random.default_rng(seed)
    image = np.linspace(0, 255, 48 * 64).reshape(48, 64) + rng.normal(0, 10, (48, 64))
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def tables(tmp_path) -> dict[str, Path]:
    """Small tables of every kind the report reads, with one refused study."""
    folder = tmp_path / "tables"
    series = [
        {"patient_id": "SYN0001", "status": "accepted", "kind": "", "reason": ""},
        {"patient_id": "SYN0002", "status": "accepted", "kind": "", "reason": ""},
        {"patient_id": "SYN0002", "status": "ignored", "kind": "localizer", "reason": "not axial"},
        {"patient_id": "SYN0003", "status": "refused", "kind": "missing_tag", "reason": REFUSED_REASON},
    ]  # fmt: skip
    segmentation = [
        {"patient_id": "SYN0001", "dice_heart_slices": "0.9000", "dice_volume": "0.9200",
         "n_lesions": "3", "n_lesions_inside": "3", "warning": ""},
        {"patient_id": "SYN0002", "dice_heart_slices": "0.8800", "dice_volume": "0.9000",
         "n_lesions": "0", "n_lesions_inside": "0", "warning": ""},
        {"patient_id": "SYN0004", "dice_heart_slices": "", "dice_volume": "",
         "n_lesions": "0", "n_lesions_inside": "0", "warning": NO_HEART},
    ]  # fmt: skip
    datasets = [
        {"patient_id": p, "n_slices": "40", "n_original": "40", "n_segmented": "36",
         "n_cropped": "324", "label_source": "lesion_map"}
        for p in ("SYN0001", "SYN0002")
    ]  # fmt: skip
    splits = [
        {"patient_id": "SYN0001", "split": "train", "calcium": "1", "risk_category": "11-100"},
        {"patient_id": "SYN0002", "split": "test", "calcium": "0", "risk_category": "0"},
    ]
    training = [
        {"dataset": "cropped", "model": "resnet50", "parameters": "23591810", "epochs_run": "2",
         "best_val_accuracy": "0.8125", "train_images_per_s": "41.7",
         "inference_ms_batch1": "35.2", "inference_ms_batch32": "4.1", "device": "CPU"},
    ]  # fmt: skip
    metrics = []
    for split in ("validation", "test"):
        for level in ("image", "patient"):
            row = {"dataset": "cropped", "model": "resnet50", "split": split, "level": level,
                   "n_images": "90", "n_patients": "2"}  # fmt: skip
            for name, value in (("accuracy", 0.8764), ("roc_auc", 0.9123)):
                row |= {name: value, f"{name}_ci_low": value - 0.1, f"{name}_ci_high": 0.99}
            metrics.append(row)
    table3 = [
        {"dataset": "cropped", "model": "resnet50", "paper_accuracy": "0.9852",
         "our_accuracy": "0.8764", "our_ci_low": "0.7764", "our_ci_high": "0.99"},
    ]  # fmt: skip
    agatston = [
        {"patient_id": "SYN0001", "method": "classical", "agatston": "55.0",
         "risk_category": "11-100", "truth_agatston": "50.0", "truth_risk_category": "11-100"},
        {"patient_id": "SYN0002", "method": "classical", "agatston": "0.0",
         "risk_category": "0", "truth_agatston": "0.0", "truth_risk_category": "0"},
    ]  # fmt: skip
    agreement = [{"method": "classical", "n_patients": "2", "icc": "0.98"}]
    paths = {}
    for key, rows in (
        ("series", series), ("segmentation", segmentation), ("datasets", datasets),
        ("splits", splits), ("training", training), ("metrics", metrics),
        ("table3", table3), ("agatston", agatston), ("agreement", agreement),
    ):  # fmt: skip
        paths[key] = folder / f"{key}.tsv"
        write_tsv(paths[key], rows, list(rows[0]))
    return paths


@pytest.fixture
def config(repo_root) -> dict:
    settings = yaml.safe_load((repo_root / "config.yaml").read_text())
    settings["ingest"]["pseudonym_key"] = "do-not-print-me"
    return settings


@pytest.fixture
def report(tmp_path, tables, config) -> Path:
    figures = [
        ("Dataset examples", png(tmp_path / "examples.png"), "One slice as three datasets."),
        ("ROC curves", png(tmp_path / "roc.png", seed=1), "ROC of every network."),
        ("Confusion matrices", None, "Not made in this run."),
    ]
    out = tmp_path / "report" / "index.html"
    write_report(out, tables=tables, figures=figures, config=config, synthetic=True, demo=True)
    return out


def test_report_holds_refused_study_banners_results_and_figures(report, config):
    text = report.read_text()
    assert REFUSED_REASON in text
    assert "SYN0003" in text
    assert f"<li>SYN0004: {html.escape(NO_HEART)}</li>" in text
    assert "Synthetic data" in text and "synthetic cohort" in text
    assert "Demo training preset" in text and "not</em> the paper's setting" in text
    training = config["training"]
    own = training["per_model"]["resnet50"]["steps_per_epoch"]
    assert f"at most {training['steps_per_epoch']} (resnet50: {own}) batches" in text
    # Value [interval]: the test split at both levels, and Table 3; not the validation split.
    assert text.count("0.876 [0.776, 0.990]") == 3
    assert "patient</td>" in text and "image</td>" in text
    # Table 3: ours with its interval beside the paper's.
    assert "0.985" in text
    assert "23,591,810" in text
    assert "not run (no results/tables/table1.tsv)" in text
    assert text.count("<figure>") == 2
    assert 'Confusion matrices</h3><p class="notrun">not run' in text
    assert not list(report.parent.glob("*.part"))


def test_report_is_self_contained(report, tmp_path):
    text = report.read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", text)
    assert sources, "no src/href found: the pattern broke"
    for value in sources:
        assert value.startswith(("data:image/png;base64,", "#")), value
    assert not re.search(r"https?://", text)
    assert "<script" not in text.lower()
    assert "<link" not in text.lower() and "@import" not in text and "url(" not in text
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert base64.b64decode(embedded[0]) == (tmp_path / "examples.png").read_bytes()


def test_secret_settings_are_masked(report, config):
    text = report.read_text()
    assert config["ingest"]["pseudonym_key"] not in text
    assert "(set, not shown)" in text
    assert "working_spacing_mm" in text  # the other settings are all there


def test_missing_tables_say_not_run(tmp_path, config):
    out = tmp_path / "index.html"
    write_report(
        out, tables={}, figures=[], config=config, synthetic=False, demo=False, versions={}
    )
    text = out.read_text()
    for name in TABLE_KEYS.values():
        assert f"not run (no {name})" in text
    assert "Synthetic data" not in text and "Demo training preset" not in text


def test_demo_preset_is_the_small_or_capped_training():
    assert demo_preset({"image_size": 75, "steps_per_epoch": 0})
    assert demo_preset({"image_size": 299, "steps_per_epoch": 12})
    assert not demo_preset({"image_size": 299, "steps_per_epoch": 0})


def test_examples_show_calcium_slices_of_the_manifests(mini_datasets, tmp_path):
    manifests = {
        name: mini_datasets / "datasets" / name / "manifest.tsv"
        for name in ("original", "segmented", "cropped")
    }
    rows = {name: read_tsv(path) for name, path in manifests.items()}
    shown = draw_examples(manifests, tmp_path / "examples.png", n_patients=3, dpi=60)
    # SYN0006 has coronary calcium, SYN0001 none.
    assert [patient for patient, _ in shown] == ["SYN0006"]
    patient, slice_ = shown[0]
    calcium_tiles = [
        r for r in rows["cropped"]
        if (r["patient_id"], r["slice"]) == (patient, slice_) and r["label"] == "calcium"
    ]  # fmt: skip
    assert calcium_tiles
    with Image.open(tmp_path / "examples.png") as image:
        assert image.width > 300 and np.asarray(image.convert("L")).std() > 10
    assert pick_examples(rows, 1) == shown[:1]


def test_examples_without_calcium_say_so(mini_datasets, tmp_path):
    manifests = {}
    for name in ("original", "segmented", "cropped"):
        source = mini_datasets / "datasets" / name / "manifest.tsv"
        rows = [r | {"label": "no_calcium"} for r in read_tsv(source)]
        manifests[name] = tmp_path / name / "manifest.tsv"
        write_tsv(manifests[name], rows, list(rows[0]))
    assert draw_examples(manifests, tmp_path / "examples.png") == []
    assert (tmp_path / "examples.png").stat().st_size > 0


def test_report_rule_gathers_the_tables_and_figures(tmp_path, run_snakemake):
    proc = run_snakemake(tmp_path, "--dry-run", "results/report/index.html")
    out = proc.stdout + proc.stderr
    block = out[re.search(r"rule report:", out).start() :]
    inputs = block[: block.index("\n    output:")]
    for table in ("results/qc/series.tsv", "results/splits/patients.tsv",
                  "results/models/summary.tsv", "results/agatston/patients.tsv",
                  "results/agatston/agreement.tsv", "results/figures/examples.png"):  # fmt: skip
        assert table in inputs
    # The library modules its script imports, as one stamp input (workflow/rules/library.smk).
    assert "results/library/write_report.sha256" in inputs, inputs
    assert re.search(r"rule example_figure:", out)


# The page in a browser ----------------------------------------------------------------------
def chromium(page: Path, *mode: str, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,2000",
        *mode,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def console_errors(stderr: str) -> list[str]:
    """Lines where the page logged to the console (errors, uncaught exceptions)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def assert_renders(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "screenshot.png"
    proc = chromium(page, f"--screenshot={shot}", tmp_path=tmp_path)
    assert shot.exists(), f"no screenshot; chromium said:\n{proc.stderr[-3000:]}"
    assert not console_errors(proc.stderr), console_errors(proc.stderr)
    with Image.open(shot) as image:
        grey = np.asarray(image.convert("L"), dtype=float)
    assert grey.shape == (2000, 1280)
    assert grey.std() > 5, "blank screenshot"
    assert (grey < 128).mean() > 0.005, "no text or images drawn"
    dom = chromium(page, "--dump-dom", tmp_path=tmp_path)
    assert "Cohort and quality control" in dom.stdout
    assert not console_errors(dom.stderr), console_errors(dom.stderr)


@needs_chromium
def test_console_errors_are_seen(tmp_path):
    # The check below is only worth something if a broken page fails it.
    page = tmp_path / "broken.html"
    page.write_text("<html><body><p>x</p><script>notDefined();</script></body></html>")
    proc = chromium(page, "--dump-dom", tmp_path=tmp_path)
    assert console_errors(proc.stderr)


@needs_chromium
def test_report_renders_in_headless_chromium(report, tmp_path):
    assert_renders(report, tmp_path)


def test_demo_report_names_the_pairs_it_trained_and_what_the_cpu_preset_adds(tmp_path, config):
    config["training"] |= {"datasets": ["cropped"], "models": ["resnet50", "vgg16"]}
    out = tmp_path / "index.html"
    write_report(out, tables={}, figures=[], config=config, synthetic=True, demo=True, versions={})
    text = out.read_text()
    assert "This run trained 2 (dataset, network) pairs: cropped/resnet50, cropped/vgg16." in text
    added = text.split("adding ", 1)[1].split(".</div>", 1)[0].split(", ")
    assert len(added) == 10
    assert "original/resnet50" in added and "cropped/vgg19" in added
    assert "cropped/resnet50" not in added

    config["training"] |= {
        "datasets": ["original", "segmented", "cropped"],
        "models": ["resnet50", "inception_resnet_v2", "vgg16", "vgg19"],
    }
    write_report(out, tables={}, figures=[], config=config, synthetic=True, demo=True, versions={})
    assert "config/cpu.yaml" not in out.read_text()


def test_report_names_the_configuration_files_of_the_run(tmp_path, config):
    out = tmp_path / "index.html"
    files = ["config.yaml", "config/cpu.yaml"]
    write_report(
        out, tables={}, figures=[], config=config, synthetic=True, demo=True, versions={},
        configfiles=files,
    )  # fmt: skip
    text = out.read_text()
    named = "Configuration of this run: <code>config.yaml</code> + <code>config/cpu.yaml</code>."
    assert text.count(named) == 2  # the banner and the settings
