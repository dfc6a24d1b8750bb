"""External validation (config `external:`): every trained network scored on a synthetic
cohort of another seed and acquisition, as `cacflow predict` scores a study."""

from pathlib import Path

import keras
import numpy as np
import pydicom
import pytest
import yaml

from cacflow.learning.pointing import pointing_game
from cacflow.predict import predict_study
from cacflow.tables import read_tsv


def with_external(tiny_config, folder, **external) -> Path:
    """The tiny config with an `external:` section, training on the cropped tiles only."""
    config = yaml.safe_load(tiny_config.read_text())
    config["external"] = external
    config["training"]["datasets"] = ["cropped"]
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_external_cohort_of_the_training_seed_is_refused(run_snakemake, tiny_config, tmp_path):
    config = with_external(tiny_config, tmp_path, patients=2, seed=3)
    proc = run_snakemake(tmp_path, "-n", configfile=config, check=False)
    assert proc.returncode != 0
    assert "external.seed 3 is the training cohort's seed" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_every_network_is_scored_on_the_external_cohort(run_snakemake, tiny_config, tmp_path):
    # Three patients of seed 12 (one with coronary calcium) at the tiny cohort's 96 px, zoomed
    # field of view, 2.5 mm slices.
    config = with_external(tiny_config, tmp_path, patients=3, seed=12, size=96)
    targets = (
        "results/external/metrics.tsv",
        "results/external/agatston/agreement.tsv",
        "results/external/gradcam_pointing.tsv",
    )
    run_snakemake(tmp_path, *targets, configfile=config)
    results = tmp_path / "results"

    # Another acquisition than the training cohort's (0.5-0.8 mm at 512 px, 3 mm slices).
    for pid in ("SYN0001", "SYN0002", "SYN0003"):
        first = min((results / "external" / "synthetic" / "dicom" / pid).glob("*.dcm"))
        ds = pydicom.dcmread(first, stop_before_pixels=True)
        assert float(ds.SliceThickness) == 2.5
        assert 0.35 * 512 / 96 <= float(ds.PixelSpacing[0]) <= 0.45 * 512 / 96
        trained = min((results / "synthetic" / "dicom" / pid).glob("*.dcm"))
        assert float(pydicom.dcmread(trained, stop_before_pixels=True).SliceThickness) == 3.0

    metrics = read_tsv(results / "external" / "metrics.tsv")
    models = [("cropped", "resnet50")]
    assert [(r["dataset"], r["model"], r["level"]) for r in metrics] == [
        (d, m, level) for d, m in models for level in ("image", "patient")
    ]
    assert {r["split"] for r in metrics} == {"external"}
    assert {r["n_patients"] for r in metrics} == {"3"}

    for dataset, model in models:
        manifest = read_tsv(results / "external" / "datasets" / dataset / "manifest.tsv")
        labelled = [r for r in manifest if r["label"] in ("calcium", "no_calcium")]
        predictions = read_tsv(results / "external" / "predictions" / dataset / f"{model}.tsv")
        assert [(r["patient_id"], r["path"]) for r in predictions] == [
            (r["patient_id"], r["path"]) for r in labelled
        ]
        assert {r["label"] for r in predictions} <= {"calcium", "no_calcium"}

    # The same probabilities as `cacflow predict` gives the study with the same model.
    model_path = results / "models" / "cropped" / "resnet50" / "model.keras"
    study = results / "external" / "synthetic" / "dicom" / "SYN0003"
    record = predict_study(model_path, study, tmp_path / "predict").record
    ours = {
        (int(r["slice"]), int(r["tile"])): float(r["probability"])
        for r in read_tsv(results / "external" / "predictions" / "cropped" / "resnet50.tsv")
        if r["patient_id"] == "SYN0003"
    }
    theirs = {(i["slice"], i["tile"]): i["probability"] for i in record["images"]}
    assert ours.keys() <= theirs.keys() and len(ours) > 0
    # Equal up to float rounding: other images share the batches there.
    assert max(abs(ours[k] - theirs[k]) for k in ours) < 1e-4

    # Grad-CAM pointing game: per network the map of evaluation.gradcam_method (layercam by
    # default) and its Guided Grad-CAM, each beside the network randomised above the layer;
    # shares of heat in [0, 1].
    pointing = read_tsv(results / "external" / "gradcam_pointing.tsv")
    assert [(r["dataset"], r["model"], r["method"]) for r in pointing] == [
        (*network, method) for network in models for method in ("layercam", "guided_layercam")
    ]
    for r in pointing:
        for column in ("mean_share", "random_mean_share"):
            assert r["n_images"] == "0" or 0.0 <= float(r[column]) <= 1.0, r
        # evaluation.gradcam_min_cells (16): the maps come from a stage at least that fine
        # (at the tiny config's 32 px, ResNet50's first, 16x16).
        assert min(int(cells) for cells in r["map_cells"].split("x")) >= 16, r
    # Every calcium image, whatever the tiny network calls it: heat shares of real maps.
    root = results / "external" / "datasets" / "cropped"
    shares, hits = pointing_game(
        keras.saving.load_model(model_path),
        read_tsv(results / "external" / "predictions" / "cropped" / "resnet50.tsv"),
        read_tsv(root / "manifest.tsv"),
        root,
        32,
        3,
        threshold=0.0,
    )
    calcium = [r for r in read_tsv(root / "manifest.tsv") if r["label"] == "calcium"]
    assert len(shares) == len(calcium) > 0
    finite = shares[~np.isnan(shares)]
    assert ((finite >= 0) & (finite <= 1)).all()
    assert set(hits[~np.isnan(shares)]) <= {0.0, 1.0}

    # Hybrid and classical scores of the external patients against their truth.
    agreement = read_tsv(results / "external" / "agatston" / "agreement.tsv")
    assert {r["method"] for r in agreement} == {"classical"} | {
        f"hybrid:{d}/{m}" for d, m in models
    }
