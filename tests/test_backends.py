"""The model factory on Keras backends other than TensorFlow (GPU nodes may have only JAX or
PyTorch): every registered network builds and takes a training step, and nothing on the
model path imports TensorFlow."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"

# Run in a fresh interpreter: Keras fixes its backend at the first import.
STEP = """
import json, random, sys
import numpy as np
import keras
from cacflow.learning.models import REGISTRY, build_model

random.seed(0)  # Keras draws its default seeds from Python's random (set_random_seed imports TensorFlow)
report = {}
for name, net in REGISTRY.items():
    size = max(net.min_size, 32)
    model = build_model(name, (size, size, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy")
    before = [np.array(w) for w in model.trainable_weights]
    x = np.random.default_rng(0).random((4, size, size, 3), dtype=np.float32)
    loss = model.train_on_batch(x, np.array([0, 1, 0, 1]))
    changed = sum(not np.array_equal(b, np.array(w)) for b, w in zip(before, model.trainable_weights))
    # Batch statistics: after one step the moving ones are still near their initial values,
    # and untrained ResNet50 activations reach 1e20 without normalization (softmax then NaN).
    p = np.asarray(model(x, training=True))
    report[name] = {"loss": float(loss), "changed": changed, "weights": len(before),
                    "rows_sum_to_one": bool(np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1, atol=1e-4))}
report["backend"] = keras.backend.backend()
report["tensorflow_imported"] = "tensorflow" in sys.modules
print(json.dumps(report))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_network_trains_without_tensorflow(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (requirements.txt pins jax for this test)")
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(SCRIPTS))
    done = subprocess.run(
        [sys.executable, "-c", STEP],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report.pop("backend") == backend
    assert report.pop("tensorflow_imported") is False
    from cacflow.learning.models import REGISTRY

    assert set(report) == set(REGISTRY)
    for name, result in report.items():
        assert result["loss"] > 0 and result["loss"] < 1e3, name
        # One SGD step moves every trainable weight (all get a gradient).
        assert result["changed"] == result["weights"], name
        assert result["rows_sum_to_one"], name
