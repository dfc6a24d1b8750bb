"""The model file: ``model.keras`` with the preprocessing its network was trained with
(``cacflow.json`` inside the archive), written by the training job, read and checked before
any image is classified (`cacflow predict`, the external cohort, Grad-CAM). Reading the
preprocessing needs no TensorFlow: a model unfit for a study is refused in a second."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from cacflow import __version__
from cacflow.imaging.datasets import DATASETS, DatasetSettings

PREPROCESSING_ENTRY = "cacflow.json"  # inside model.keras (a zip archive)
RESIZE_METHODS = ("area", "max")  # `cacflow.learning.inputs.model_resize`


class UnusableModelError(ValueError):
    """The model file is missing, is not a cacflow model (no cacflow.json), or does not
    match the preprocessing stored in it."""


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its inputs: which dataset's images, at what size."""

    dataset: str
    model: str
    image_size: int
    channels: int
    datasets: Mapping  # the ``datasets:`` config: window, sizes, grid
    resize: str = "area"  # one of RESIZE_METHODS
    cacflow_version: str = __version__


def save_model(model, path: Path, preprocessing: Preprocessing) -> None:
    """A Keras model as ``model.keras``, written atomically, with `PREPROCESSING_ENTRY` added
    to the archive."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    with zipfile.ZipFile(tmp, "a") as archive:
        archive.writestr(PREPROCESSING_ENTRY, json.dumps(asdict(preprocessing), indent=1))
    os.replace(tmp, path)


def read_preprocessing(path: Path) -> dict:
    """The preprocessing a cacflow ``model.keras`` expects (`Preprocessing` as a dict)."""
    try:
        with zipfile.ZipFile(path) as archive:
            prep = json.loads(archive.read(PREPROCESSING_ENTRY))
    except (KeyError, zipfile.BadZipFile, FileNotFoundError) as error:
        raise UnusableModelError(
            f"{path}: not a model written by cacflow's training (no {PREPROCESSING_ENTRY})"
        ) from error
    if isinstance(prep, dict):
        prep.setdefault("resize", "area")  # models written before the setting
    return prep


def model_preprocessing(model_path: Path) -> dict:
    """The preprocessing stored in a cacflow ``model.keras``, checked for what predict needs."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise UnusableModelError(f"{model_path}: model file not found")
    try:
        prep = read_preprocessing(model_path)
    except UnusableModelError:
        raise
    except (ValueError, OSError) as error:  # unreadable JSON, a broken archive member
        raise UnusableModelError(f"{model_path}: unreadable cacflow.json ({error})") from None
    problems = []
    if prep.get("dataset") not in DATASETS:
        problems.append(f"dataset {prep.get('dataset')!r} is not one of {list(DATASETS)}")
    for key in ("image_size", "channels"):
        if not isinstance(prep.get(key), int) or prep[key] < 1:
            problems.append(f"{key} {prep.get(key)!r} is not a positive integer")
    if not isinstance(prep.get("datasets"), Mapping):
        problems.append("no datasets settings (window, sizes, grid)")
    if prep["resize"] not in RESIZE_METHODS:
        problems.append(f"resize {prep['resize']!r} is not one of {list(RESIZE_METHODS)}")
    if problems:
        raise UnusableModelError(f"{model_path}: cacflow.json: {'; '.join(problems)}")
    return prep


def model_dataset_settings(prep: Mapping) -> DatasetSettings:
    """The `DatasetSettings` the model was trained with (defaults for keys not stored)."""
    try:
        return DatasetSettings.from_config(prep["datasets"])
    except (ValueError, TypeError) as error:
        raise UnusableModelError(f"cacflow.json: datasets settings: {error}") from None


def load_classifier(model_path: Path, prep: Mapping):
    """The Keras model, checked against its stored input size and two-class output."""
    import keras

    try:
        model = keras.saving.load_model(Path(model_path), compile=False)
    except (ValueError, TypeError, KeyError, AttributeError, OSError, zipfile.BadZipFile) as error:
        # What Keras raises for a broken archive or unknown layers, on one line.
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UnusableModelError(f"{model_path}: Keras cannot load it ({first})") from None
    expected = (prep["image_size"], prep["image_size"], prep["channels"])
    shape = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else ()
    if shape != expected:
        raise UnusableModelError(
            f"{model_path}: model input {shape} does not match its stored preprocessing "
            f"{expected} (image_size, image_size, channels)"
        )
    if tuple(model.output_shape[1:]) != (2,):
        raise UnusableModelError(
            f"{model_path}: output {model.output_shape[1:]}, expected two classes"
        )
    return model
