"""Grad-CAM (cacflow.learning.gradcam): the heat map of a small CNN trained to find a bright spot
peaks on the spot; the ResNet50 model of the workflow gives maps of its input's size in
[0, 1]; example selection; the Grad-CAM figure."""

import keras
import numpy as np
import pytest
from PIL import Image

from cacflow.learning.gradcam import (
    CAM_METHODS,
    GradCamError,
    class_log_odds,
    class_score_model,
    grad_cam,
    gradcam_layer_name,
    map_cells,
    select_examples,
)
from cacflow.reporting.eval_figures import plot_gradcam_grid

SIZE = 32


def spot_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images (n, 32, 32, 3); the odd ones carry a bright 3x3 spot. Returns images,
    labels (1 = spot) and spot centres (row, col; -1 without a spot)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.3, size=(n, SIZE, SIZE, 1)).astype(np.float32)
    labels = np.arange(n) % 2
    centres = np.full((n, 2), -1)
    for i in np.flatnonzero(labels):
        r, c = rng.integers(4, SIZE - 4, size=2)
        images[i, r - 1 : r + 2, c - 1 : c + 2] = 1.0
        centres[i] = (r, c)
    return np.repeat(images, 3, axis=-1), labels, centres


def workflow_head(inputs, features) -> keras.Model:
    """The head the workflow's models end in (cacflow.learning.models)."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    outputs = keras.layers.Dense(2, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def spot_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    # Halving the maps lets the global average see the small spot: trains reliably in 15
    # epochs (every seed of 0..4 tried), and the 16 x 16 map still locates it within 2 px.
    x = keras.layers.MaxPooling2D(2, name="halve")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    model = workflow_head(inputs, x)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    images, labels, _ = spot_images(256, seed=1)
    model.fit(images, labels, batch_size=32, epochs=15, verbose=0)
    return model


@pytest.mark.parametrize("method", CAM_METHODS)
def test_heat_map_peaks_on_the_spot(spot_model, method):
    images, labels, centres = spot_images(40, seed=2)
    probabilities = spot_model.predict(images, verbose=0)[:, 1]
    assert np.mean((probabilities > 0.5) == labels) >= 0.9  # the model learned the task

    maps = grad_cam(spot_model, images, class_index=1, method=method)
    assert maps.shape == (40, SIZE, SIZE)
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    positives = np.flatnonzero(labels == 1)
    peaks = np.array([np.unravel_index(np.argmax(maps[i]), maps[i].shape) for i in positives])
    distance = np.hypot(*(peaks - centres[positives]).T)
    assert np.mean(distance <= 3) >= 0.8, distance


def test_maps_explain_the_log_odds_of_the_class(spot_model):
    """The maps follow the class's log-odds, log(p / (1 - p)): adding one vector to both
    classes' weights changes no probability, and no map."""
    images, _, _ = spot_images(8, seed=4)
    head = spot_model.get_layer("predictions")
    score_model, softmax_dense = class_score_model(spot_model, "conv2")
    predicted = spot_model.predict(images, verbose=0)
    probability = predicted[:, 1]
    log_odds = class_log_odds(score_model(images)[1], head, softmax_dense, 1).numpy()
    np.testing.assert_allclose(
        log_odds, np.log(predicted[:, 1]) - np.log(predicted[:, 0]), atol=1e-3
    )

    shared = keras.models.clone_model(spot_model)
    shared.set_weights(spot_model.get_weights())
    kernel, bias = head.get_weights()
    common = np.random.default_rng(0).uniform(0.5, 1.0, size=(kernel.shape[0], 1))
    shared.get_layer("predictions").set_weights([kernel + common, bias + 1.0])
    np.testing.assert_allclose(shared.predict(images, verbose=0)[:, 1], probability, atol=1e-5)
    for method in CAM_METHODS:
        np.testing.assert_allclose(
            grad_cam(shared, images, method=method),
            grad_cam(spot_model, images, method=method),
            atol=1e-4,
        )


def test_layer_choice(spot_model):
    assert gradcam_layer_name(spot_model) == "conv2"
    images, _, _ = spot_images(2, seed=3)
    assert grad_cam(spot_model, images, layer_name="conv1").shape == (2, SIZE, SIZE)
    with pytest.raises(GradCamError, match="no_such_layer"):
        grad_cam(spot_model, images, layer_name="no_such_layer")
    with pytest.raises(GradCamError, match="unknown method 'scorecam'"):
        grad_cam(spot_model, images, method="scorecam")


def test_a_final_max_pooling_is_passed_over():
    # As in VGG16, whose last 4-D layer is block5_pool after block5_conv3.
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block5_conv3")(inputs)
    x = keras.layers.MaxPooling2D(2, name="block5_pool")(x)
    assert gradcam_layer_name(workflow_head(inputs, x)) == "block5_conv3"


def test_resnet50_as_the_workflow_builds_it():
    inputs = keras.Input((64, 64, 3))
    base = keras.applications.ResNet50(include_top=False, weights=None, input_tensor=inputs)
    model = workflow_head(inputs, base.output)
    assert gradcam_layer_name(model) == "conv5_block3_out"
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 64, 3))
    maps = grad_cam(model, images)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert np.all((maps >= 0) & (maps <= 1))
    # At 64 px the stages end at 2x2 (conv5), 4x4 (conv4) and 8x8 (conv3) cells: a minimum
    # map size moves Grad-CAM to the deepest stage that fine, its last block's output.
    assert map_cells(model, "conv5_block3_out") == "2x2"
    assert gradcam_layer_name(model, min_cells=3) == "conv4_block6_out"
    assert gradcam_layer_name(model, min_cells=7) == "conv3_block4_out"
    assert map_cells(model, "conv3_block4_out") == "8x8"
    # Finer than any layer: the deepest of the finest (conv1_pad is padding, skipped).
    assert gradcam_layer_name(model, min_cells=500) == "conv1_relu"
    fine = grad_cam(model, images, layer_name="conv3_block4_out")
    assert fine.shape == (2, 64, 64) and np.all((fine >= 0) & (fine <= 1))


def test_select_examples():
    # kinds: 0 TP, 1 FN, 2 FP, 3 TN, 4 TP, 5 TP, 6 TN
    labels = [1, 1, 0, 0, 1, 1, 0]
    probabilities = [0.9, 0.2, 0.7, 0.1, 0.6, 0.99, 0.5]
    chosen = select_examples(labels, probabilities, per_kind=2, seed=0)
    assert set(chosen) == {"TP", "FP", "FN", "TN"}
    assert set(chosen["TP"]) <= {0, 4, 5} and len(chosen["TP"]) == 2
    assert list(chosen["FN"]) == [1] and list(chosen["FP"]) == [2]
    assert list(chosen["TN"]) == [3, 6]  # 0.5 is not above the threshold
    again = select_examples(labels, probabilities, per_kind=2, seed=0)
    assert all(np.array_equal(chosen[k], again[k]) for k in chosen)


def test_gradcam_figure(tmp_path, spot_model):
    images, labels, _ = spot_images(8, seed=4)
    probabilities = spot_model.predict(images, verbose=0)[:, 1]
    maps = grad_cam(spot_model, images)
    out = tmp_path / "figures" / "gradcam.png"
    plot_gradcam_grid(images[..., 0], maps, labels, probabilities, out)
    with Image.open(out) as png:
        png.verify()
    with Image.open(out) as png:
        assert png.width >= 300 and png.height >= 150
    assert out.stat().st_size > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["gradcam.png"]


def test_heat_near_lesions_is_the_share_of_heat_within_the_radius():
    from cacflow.learning.pointing import heat_near_lesions

    lesion = np.zeros((40, 40), bool)
    lesion[20, 20] = True
    block = np.zeros((40, 40), bool)
    block[20:23, 20:23] = True
    on_lesion = np.zeros((10, 10), np.float32)
    on_lesion[5, 5] = 1.0  # resized x4: heat on rows and columns 18-25, within 4 mm of it
    far = np.zeros((10, 10), np.float32)
    far[0, 0] = 1.0  # about 20 mm away
    flat = np.ones((10, 10), np.float32)
    shares, hits = heat_near_lesions(
        np.stack([on_lesion, far, flat, np.zeros((10, 10), np.float32)]),
        [block, lesion, lesion, lesion],
        [1.0, 1.0, 1.0, 1.0],
        radius_mm=5.0,
    )
    assert shares[0] == pytest.approx(1.0)
    assert shares[1] == pytest.approx(0.0)
    # Uniform heat: the disc of radius 5 px (81 pixels) of the 1,600.
    assert shares[2] == pytest.approx(81 / 1600, abs=1e-6)
    assert np.isnan(shares[3])
    # The peak: on the lesion, 20 mm away, and the first pixel of the flat map (a corner).
    assert hits[:3].tolist() == [1.0, 0.0, 0.0] and np.isnan(hits[3])
    # The same lesion with 0.1 mm pixels: the whole 4 mm image is within 5 mm of it.
    fine_pixels = heat_near_lesions(far[None], [lesion], [0.1], radius_mm=5.0)
    assert fine_pixels.shares[0] == pytest.approx(1.0)


def test_map_checks_of_the_spot_model(spot_model):
    """Guided Grad-CAM of the spot model peaks on the spot, sharper than the layer's map; the
    copy randomised above the map's layer keeps the layers up to it and re-initialises the
    rest; a guided copy predicts as the model does."""
    from cacflow.learning.map_checks import checked_maps, network_copy
    from cacflow.learning.pointing import heat_near_lesions

    images, labels, centres = spot_images(40, seed=2)
    guided = network_copy(spot_model, guided=True)
    np.testing.assert_allclose(
        guided.predict(images, verbose=0), spot_model.predict(images, verbose=0), atol=1e-6
    )
    keras.utils.set_random_seed(1)
    random_top = network_copy(spot_model, random_above="conv2")
    for name in ("conv1", "conv2"):
        for ours, theirs in zip(
            random_top.get_layer(name).get_weights(), spot_model.get_layer(name).get_weights()
        ):
            np.testing.assert_array_equal(ours, theirs)
    trained_kernel = spot_model.get_layer("predictions").get_weights()[0]
    assert not np.allclose(random_top.get_layer("predictions").get_weights()[0], trained_kernel)
    with pytest.raises(GradCamError, match="no layer 'conv9'"):
        network_copy(spot_model, random_above="conv9")

    positives = np.flatnonzero(labels == 1)
    spots = []
    for i in positives:
        spot = np.zeros((SIZE, SIZE), bool)
        spot[centres[i][0] - 1 : centres[i][0] + 2, centres[i][1] - 1 : centres[i][1] + 2] = True
        spots.append(spot)
    keras.utils.set_random_seed(1)
    checked = checked_maps(spot_model, images[positives], "conv2", "layercam")
    assert [c.method for c in checked] == ["layercam", "guided_layercam"]
    shares = {}
    for c in checked:
        assert c.trained.shape == c.randomised.shape == (len(positives), SIZE, SIZE)
        trained = heat_near_lesions(c.trained, spots, [1.0] * len(spots), radius_mm=3.0)
        randomised = heat_near_lesions(c.randomised, spots, [1.0] * len(spots), radius_mm=3.0)
        assert np.nanmean(trained.hits) >= 0.8, c.method
        assert not np.allclose(c.trained, c.randomised), c.method
        shares[c.method] = (np.nanmean(trained.shares), np.nanmean(randomised.shares))
    # The guided map has the input's resolution: more of its heat on the 3 x 3 spot.
    assert shares["guided_layercam"][0] > shares["layercam"][0] + 0.05
    # Only the Dense head lies above conv2, and conv1-conv2 alone find the brightest spot:
    # the randomised maps still point at it. Such a share is not the trained head's doing,
    # which is what the randomised column tells a reader.
    assert shares["layercam"][1] > 0.5
