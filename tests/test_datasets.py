"""The paper's three image datasets: sizes, window, geometry of the crops and tile labels.

Hand-built slices pin the geometry and labels exactly; synthetic patients (size 256) check
that every coronary lesion of the truth lands, bright, in a tile labelled calcium.
"""

import filecmp
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import make_volume
from PIL import Image
from scipy import ndimage

from cacflow.imaging import DatasetError
from cacflow.imaging.datasets import (
    DATASETS,
    MANIFEST_COLUMNS,
    DatasetSettings,
    build_patient_datasets,
    merge_manifests,
)
from cacflow.imaging.geometry import heart_box
from cacflow.imaging.labels import SliceLabel, slice_labels_from_table
from cacflow.imaging.png import png_bytes, slice_grey
from cacflow.imaging.windowing import window_to_uint8
from cacflow.scoring.agatston import agatston_score, cac_class, density_weight
from cacflow.synthetic.synth import SynthSettings, simulate_patient, truth_summary
from cacflow.tables import read_tsv

SETTINGS = DatasetSettings()
GREY_130 = int(window_to_uint8(np.array([130], dtype=np.int16), 150.0, 800.0)[0])
EIGHT = np.ones((3, 3), dtype=bool)


# ---------------------------------------------------------------------------------------
# Helpers


def read_grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L", path  # 8-bit grey
        return np.asarray(image)


def manifest(out: Path, dataset: str, patient_id: str) -> list[dict]:
    rows = read_tsv(out / dataset / f"{patient_id}.tsv")
    for row in rows:
        for key in ("slice", "tile", "row0", "row1", "col0", "col1"):
            row[key] = int(row[key])
    return rows


def to_image(r: np.ndarray, c: np.ndarray, box: tuple[int, ...], size: int):
    """Nearest image pixel of slice pixels (r, c) in a box resized to size x size."""
    row0, row1, col0, col1 = box
    u = np.rint((r - row0 + 0.5) * size / (row1 - row0) - 0.5).astype(int)
    v = np.rint((c - col0 + 0.5) * size / (col1 - col0) - 0.5).astype(int)
    return np.clip(u, 0, size - 1), np.clip(v, 0, size - 1)


def box_of(row: dict) -> tuple[int, int, int, int]:
    return row["row0"], row["row1"], row["col0"], row["col1"]


def synthetic_inputs(patient_id: str) -> dict:
    """Arguments of build_patient_datasets for a synthetic patient, labels as labels.tsv has them."""
    p = simulate_patient(patient_id, SynthSettings(seed=2021, size=256))
    vol, acq = p.volume, p.acquisition
    truth_row, calcium = truth_summary(p)
    table = [
        {
            "patient_id": patient_id,
            "instance_number": k + 1,
            "calcium": int(calcium[k]),
            "cac_class": truth_row["cac_class"],
        }
        for k in range(acq.n_slices)
    ]
    coronary = [i for i, kind in enumerate(vol.lesion_kind) if kind == "coronary"]
    return {
        "patient_id": patient_id,
        "volume": make_volume(
            vol.hu,
            list(range(1, acq.n_slices + 1)),
            (acq.pixel_spacing_mm, acq.pixel_spacing_mm),
            acq.slice_thickness_mm,
        ),
        "heart_mask": vol.heart_mask,
        "slice_labels": slice_labels_from_table(table, patient_id),
        "lesion_mask": np.isin(vol.lesion_labels, coronary),
    }


def qualifying_lesions(hu, region, pixel_area_mm2) -> tuple[np.ndarray, list[int], dict]:
    """Components of (region & HU >= 130), 8-connected, kept from 1 mm^2: (map, ids, weight)."""
    components, n = ndimage.label(region & (hu >= 130), EIGHT)
    ids = [i for i in range(1, n + 1) if (components == i).sum() * pixel_area_mm2 >= 1.0]
    weights = {i: density_weight(float(hu[components == i].max())) for i in ids}
    return components, ids, weights


@pytest.fixture(scope="module")
def syn6() -> dict:
    return synthetic_inputs("SYN0006")  # 37 coronary lesions, Agatston ~1160


@pytest.fixture(scope="module")
def syn4() -> dict:
    return synthetic_inputs("SYN0004")  # one coronary lesion, mitral annulus calcium


@pytest.fixture(scope="module")
def built6(syn6, tmp_path_factory):
    out = tmp_path_factory.mktemp("datasets")
    return out, build_patient_datasets(out, settings=SETTINGS, **syn6)


# ---------------------------------------------------------------------------------------
# Units


def test_window_maps_hu_to_grey():
    hu = np.array([-1000, -250, 130, 150, 549, 550, 3000], dtype=np.int16)
    # [150 - 400, 150 + 400] -> 0..255: 130 HU is (130 + 250) / 800 * 255 = 121.1.
    assert window_to_uint8(hu, 150.0, 800.0).tolist() == [0, 0, 121, 128, 255, 255, 255]
    assert GREY_130 == 121
    # The int16 look-up and the float path agree on every value of a CT range.
    every = np.arange(-1024, 3072, dtype=np.int16)
    assert np.array_equal(
        window_to_uint8(every, 40.0, 350.0), window_to_uint8(every.astype(float), 40.0, 350.0)
    )


def test_png_reads_back_as_the_same_8_bit_pixels():
    image = np.random.default_rng(0).integers(0, 256, size=(37, 53), dtype=np.uint8)
    with Image.open(io.BytesIO(png_bytes(image, 1))) as png:
        assert png.mode == "L"
        assert png.size == (53, 37)
        assert np.array_equal(np.asarray(png), image)
    # A slab (slices above, at and below as channels) is RGB; figures show its middle slice.
    slab = np.stack([image, 255 - image, image // 2], axis=-1)
    with Image.open(io.BytesIO(png_bytes(slab, 1))) as png:
        assert png.mode == "RGB"
        assert np.array_equal(np.asarray(png), slab)
        assert np.array_equal(slice_grey(np.asarray(png)), 255 - image)
    assert slice_grey(image) is image


def test_heart_box_is_square_and_centred():
    mask = np.zeros((60, 60), dtype=bool)
    mask[10:40, 20:35] = True  # 30 rows x 15 cols: 15 columns of padding, 7 before, 8 after
    assert heart_box(mask) == (10, 40, 13, 43)
    assert heart_box(np.zeros((8, 8), dtype=bool)) is None
    dot = np.zeros((8, 8), dtype=bool)
    dot[4, 4] = True
    assert heart_box(dot, grid=3) == (3, 6, 3, 6)  # at least one pixel per tile


# ---------------------------------------------------------------------------------------
# A hand-built patient: every label and box known in advance


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    hu = np.full((3, 60, 60), 40, dtype=np.int16)
    heart = np.zeros(hu.shape, dtype=bool)
    lesions = np.zeros(hu.shape, dtype=bool)
    # Slice 1 (instance 11): heart 30 x 15 px -> box rows 10..40, cols 13..43, tiles of 10 px.
    heart[0, 10:40, 20:35] = True
    hu[0, 12:14, 21:24] = 450  # 6 px = 1.5 mm^2, weight 4; 4 px in tile 1 and 2 px in tile 2
    hu[0, 31:39, 24:32] = 450  # 64 px = 16 mm^2 x 4 = 64: tile 8, high
    hu[0, 25, 26:29] = 900  # 3 px = 0.75 mm^2 < 1 mm^2: noise, tile 5 stays no_calcium
    hu[0, 22:26, 36:39] = 900  # qualifying, in the box (tile 6) but outside the heart mask
    lesions[0] = hu[0] >= 130
    hu[0, 15:18, 27:30] = 600  # bright but not in the lesion map (bone, valve): tile 2
    # Slice 2 (instance 12): a wide heart at the top edge: the square passes the edge.
    heart[1, 0:10, 5:45] = True
    # Slice 3 (instance 13): no heart; labelled calcium by the table, so counted as dropped.
    labels = {11: SliceLabel(True, "high"), 12: SliceLabel(False, "high"), 13: SliceLabel(True)}
    out = tmp_path_factory.mktemp("handmade")
    volume = make_volume(hu, [11, 12, 13], 0.5, 3.0)
    result = build_patient_datasets(out, "P1", volume, heart, labels, lesions, SETTINGS)
    return out, result, hu, heart


def test_handmade_boxes_and_tile_labels(handmade):
    out, result, _, _ = handmade
    original = manifest(out, "original", "P1")
    assert [(r["slice"], r["label"], r["cac_class"]) for r in original] == [
        (11, "calcium", "high"),
        (12, "no_calcium", ""),  # no calcium: the class of the table is not carried
        (13, "calcium", ""),
    ]
    assert {box_of(r) for r in original} == {(0, 60, 0, 60)}
    segmented = manifest(out, "segmented", "P1")
    assert [(r["slice"], box_of(r)) for r in segmented] == [
        (11, (10, 40, 13, 43)),
        (12, (-15, 25, 5, 45)),
    ]
    tiles = {r["tile"]: r for r in manifest(out, "cropped", "P1") if r["slice"] == 11}
    assert box_of(tiles[1]) == (10, 20, 13, 23)
    assert box_of(tiles[9]) == (30, 40, 33, 43)
    assert tiles[5]["path"] == "P1/P1_0011_t5.png"
    labelled = {n: (row["label"], row["cac_class"]) for n, row in tiles.items()}
    assert labelled == {
        1: ("calcium", "low"),  # 4 px x 0.25 mm^2 x 4 = 4
        2: ("no_calcium", ""),  # 2 px of the same lesion: a 0.5 mm^2 sliver
        3: ("no_calcium", ""),
        4: ("no_calcium", ""),
        5: ("no_calcium", ""),  # the 0.75 mm^2 speck is noise
        6: ("no_calcium", ""),  # the lesion outside the heart mask is black in the image
        7: ("no_calcium", ""),
        8: ("calcium", "high"),  # 64
        9: ("no_calcium", ""),
    }
    assert {row["label_source"] for row in tiles.values()} == {"lesion_map"}
    assert result.n_slices == 3
    assert result.n_empty_mask_dropped == 1
    assert result.n_calcium_slices == 2
    assert result.n_calcium_slices_dropped == 1
    assert result.n_calcium_slices_without_positive_tile == 0
    assert result.n_calcium_tiles == 2


def test_each_image_gives_the_calcium_candidates_it_shows(handmade):
    """candidate_mm2: HU >= 130 in the heart mask, components of 1 mm^2 or more, whatever
    the label: tile 2's bright blob outside the lesion map makes it a hard negative."""
    out, _, _, _ = handmade
    tiles = {r["tile"]: r for r in manifest(out, "cropped", "P1") if r["slice"] == 11}
    shown = {n: float(row["candidate_mm2"]) for n, row in tiles.items()}
    # Tile 2: the lesion's 2 px sliver and the 9 px blob; the speck (tile 5) is under
    # 1 mm^2 and the lesion of tile 6 lies outside the heart mask.
    assert shown == {1: 1.0, 2: 2.75, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0, 8: 16.0, 9: 0}
    assert tiles[2]["label"] == "no_calcium"
    for name in ("original", "segmented"):
        areas = {r["slice"]: float(r["candidate_mm2"]) for r in manifest(out, name, "P1")}
        assert areas[11] == (6 + 64 + 9) * 0.25 and areas[12] == 0


def test_any_lesion_pixel_makes_a_calcium_tile_without_the_area_minimum(handmade, tmp_path):
    _, _, hu, heart = handmade
    labels = {11: SliceLabel(True, "high"), 12: SliceLabel(False), 13: SliceLabel(False)}
    volume = make_volume(hu, [11, 12, 13], 0.5, 3.0)
    lesions = hu >= 130
    lesions[0, 15:18, 27:30] = False  # the handmade lesion map: not the bright blob
    settings = DatasetSettings(min_tile_lesion_area_mm2=0.0)
    build_patient_datasets(tmp_path, "P1", volume, heart, labels, lesions, settings)
    tiles = {r["tile"]: r for r in manifest(tmp_path, "cropped", "P1") if r["slice"] == 11}
    assert (tiles[2]["label"], tiles[2]["cac_class"]) == ("calcium", "low")  # 2 px x 4 x 0.25
    assert tiles[2]["lesion_mask"] == "P1/lesion/P1_0011_t2.png"


def test_handmade_images(handmade):
    out, _, hu, _ = handmade
    original = read_grey(out / "original" / "P1" / "P1_0011.png")
    assert original.shape == (60, 60)
    assert np.array_equal(original, window_to_uint8(hu[0], 150.0, 800.0))
    segmented = read_grey(out / "segmented" / "P1" / "P1_0011.png")
    assert segmented.shape == (299, 299)
    # Columns 13..20 of the square are padding outside the heart mask: black.
    assert segmented[:, : int(299 * 6 / 30)].max() == 0
    # Outside the heart mask, the bright lesion of tile 6 is black too.
    u, v = to_image(np.array([23]), np.array([37]), (10, 40, 13, 43), 299)
    assert segmented[u, v].max() == 0
    tile8 = read_grey(out / "cropped" / "P1" / "P1_0011_t8.png")
    assert tile8.shape == (299, 299)
    u, v = to_image(np.array([35]), np.array([28]), (30, 40, 23, 33), 299)
    assert tile8[u, v][0] == window_to_uint8(np.array([450], dtype=np.int16), 150.0, 800.0)[0]
    # The square of slice 12 starts 15 rows above the image: those rows are black (up to
    # the half pixel that bilinear resampling blends with the heart).
    edge = read_grey(out / "segmented" / "P1" / "P1_0012.png")
    assert edge[: int(299 * 14.5 / 40)].max() == 0
    assert edge[int(299 * 16 / 40) : int(299 * 24 / 40)].min() > 0  # the heart itself
    assert not (out / "segmented" / "P1" / "P1_0013.png").exists()
    assert sorted(p.name for p in (out / "cropped" / "P1").glob("*.png")) == sorted(
        [f"P1_0011_t{n}.png" for n in range(1, 10)] + [f"P1_0012_t{n}.png" for n in range(1, 10)]
    )


def test_box_context_tiles_show_the_slice_around_the_heart(handmade, tmp_path):
    """cropped_context box: a tile shows what lies outside the heart mask (the bright lesion
    of tile 6), while its label and candidates still count inside the mask only."""
    out, _, hu, heart = handmade
    labels = {11: SliceLabel(True, "high"), 12: SliceLabel(False, "high"), 13: SliceLabel(True)}
    lesions = hu >= 130
    lesions[0, 15:18, 27:30] = False  # as the fixture's lesion map
    volume = make_volume(hu, [11, 12, 13], 0.5, 3.0)
    settings = DatasetSettings(cropped_context="box")
    build_patient_datasets(tmp_path, "P1", volume, heart, labels, lesions, settings)
    u, v = to_image(np.array([23]), np.array([37]), (20, 30, 33, 43), 299)
    boxed = read_grey(tmp_path / "cropped" / "P1" / "P1_0011_t6.png")
    masked = read_grey(out / "cropped" / "P1" / "P1_0011_t6.png")
    bright = window_to_uint8(hu[0, 23, 37:38], 150.0, 800.0)[0]
    assert boxed[u, v][0] == bright and masked[u, v][0] == 0
    columns = ("tile", "label", "cac_class", "candidate_mm2", "row0", "row1", "col0", "col1")
    assert [tuple(r[c] for c in columns) for r in manifest(tmp_path, "cropped", "P1")] == [
        tuple(r[c] for c in columns) for r in manifest(out, "cropped", "P1")
    ]
    assert np.array_equal(
        read_grey(tmp_path / "segmented" / "P1" / "P1_0011.png"),
        read_grey(out / "segmented" / "P1" / "P1_0011.png"),
    )
    with pytest.raises(DatasetError, match="cropped_context must be one of"):
        DatasetSettings(cropped_context="slice")


@pytest.mark.parametrize("context", ["heart", "box"])
def test_slab_images_stack_the_neighbouring_slices_as_channels(tmp_path, context):
    """slab 3: every image is RGB; its middle channel is the slice's own image, its first
    and last the slices above and below cut with the slice's box (and mask) (the end slices
    repeat themselves); labels, lesion masks and candidates stay the slice's."""
    n = 5
    hu = np.full((n, 60, 60), -50, dtype=np.int16)
    heart = np.zeros(hu.shape, dtype=bool)
    for k in range(n):  # each slice its own grey level, heart and lesion
        hu[k, 5:55, 5:55] = 20 + 40 * k
        heart[k, 12 + k : 40 + k, 15 : 38 + 2 * k] = True
        hu[k, 20 + 2 * k : 24 + 2 * k, 20 + 3 * k : 25 + 3 * k] = 300 + 100 * k
    lesions = hu >= 130
    instances = list(range(1, n + 1))
    labels = {i: SliceLabel(True, "high") for i in instances}

    def build(root, volume_hu, slab, lesion_map):
        volume = make_volume(volume_hu, instances, 0.5, 3.0)
        settings = DatasetSettings(slab=slab, cropped_context=context)
        build_patient_datasets(root, "P1", volume, heart, labels, lesion_map, settings)
        return root

    slab = build(tmp_path / "slab", hu, 3, lesions)
    single = build(tmp_path / "single", hu, 1, lesions)
    # The neighbours' images, made the single-slice way from the volume shifted by one.
    above = build(tmp_path / "above", np.concatenate([hu[:1], hu[:-1]]), 1, None)
    below = build(tmp_path / "below", np.concatenate([hu[1:], hu[-1:]]), 1, None)
    for dataset in DATASETS:
        rows = manifest(slab, dataset, "P1")
        assert rows == manifest(single, dataset, "P1")
        assert any(row["label"] == "calcium" for row in rows)
        for row in rows:
            with Image.open(slab / dataset / row["path"]) as image:
                assert image.mode == "RGB", row["path"]
                rgb = np.asarray(image)
            for channel, root in enumerate((above, single, below)):
                assert np.array_equal(rgb[..., channel], read_grey(root / dataset / row["path"]))
            if row["lesion_mask"]:
                assert filecmp.cmp(
                    slab / dataset / row["lesion_mask"],
                    single / dataset / row["lesion_mask"],
                    shallow=False,
                )
    # The first slice repeats itself above, the last below; a middle slice's three differ.
    for instance, same in ((1, 0), (n, 2)):
        with Image.open(slab / "segmented" / "P1" / f"P1_{instance:04d}.png") as image:
            rgb = np.asarray(image).astype(int)
        assert np.array_equal(rgb[..., same], rgb[..., 1])
    with Image.open(slab / "segmented" / "P1" / "P1_0003.png") as image:
        rgb = np.asarray(image).astype(int)
    assert len({int(np.median(rgb[20:40, 20:40, c])) for c in range(3)}) == 3
    with pytest.raises(DatasetError, match="slab must be one of"):
        DatasetSettings(slab=2)


def test_fallback_uses_hu_candidates_on_calcium_slices_only(handmade, tmp_path):
    _, _, hu, heart = handmade
    labels = {11: SliceLabel(True, "high"), 12: SliceLabel(False), 13: SliceLabel(False)}
    volume = make_volume(hu, [11, 12, 13], 0.5, 3.0)
    build_patient_datasets(tmp_path, "P1", volume, heart, labels, None, SETTINGS)
    tiles = {r["tile"]: r for r in manifest(tmp_path, "cropped", "P1") if r["slice"] == 11}
    # Without a lesion map the 600 HU blob (9 px) in tile 2 counts as well.
    assert {n for n, r in tiles.items() if r["label"] == "calcium"} == {1, 2, 8}
    assert tiles[2]["cac_class"] == "low"  # (2 x 4 + 9 x 4) x 0.25 = 11
    assert {r["label_source"] for r in tiles.values()} == {"hu_candidates"}
    other = [r for r in manifest(tmp_path, "cropped", "P1") if r["slice"] == 12]
    assert {(r["label"], r["label_source"]) for r in other} == {("no_calcium", "label_table")}


def test_bad_inputs_name_the_patient(handmade, tmp_path):
    _, _, hu, heart = handmade
    labels = {11: SliceLabel(True, "high"), 12: SliceLabel(False)}
    volume = make_volume(hu, [11, 12, 13], 0.5, 3.0)
    with pytest.raises(DatasetError, match=r"P1: no label-table row .*\[13\]"):
        build_patient_datasets(tmp_path, "P1", volume, heart, labels, None, SETTINGS)
    with pytest.raises(DatasetError, match="P1: heart mask shape"):
        build_patient_datasets(tmp_path, "P1", volume, heart[:2], labels, None, SETTINGS)
    with pytest.raises(DatasetError, match="cac_class"):
        SliceLabel(True, "medium")
    with pytest.raises(DatasetError, match="P1: instance 4: calcium must be 0 or 1"):
        slice_labels_from_table(
            [{"patient_id": "P1", "instance_number": "4", "calcium": "maybe"}], "P1"
        )


# ---------------------------------------------------------------------------------------
# Synthetic patients


def test_every_image_has_its_size_and_manifest_row(built6, syn6):
    out, result = built6
    n_slices = len(syn6["volume"].instance_numbers)
    kept = int(syn6["heart_mask"].any(axis=(1, 2)).sum())
    assert (result.n_slices, result.n_empty_mask_dropped) == (n_slices, n_slices - kept)
    assert n_slices - kept > 0  # the patient has slices without heart: they are dropped
    expected = {"original": (n_slices, 256), "segmented": (kept, 299), "cropped": (9 * kept, 299)}
    for dataset in DATASETS:
        n_rows, size = expected[dataset]
        lines = (out / dataset / "SYN0006.tsv").read_text().splitlines()
        assert lines[0].split("\t") == list(MANIFEST_COLUMNS)
        rows = manifest(out, dataset, "SYN0006")
        assert len(rows) == n_rows
        for row in rows:
            assert read_grey(out / dataset / row["path"]).shape == (size, size)
        on_disk = {p.name for p in (out / dataset / "SYN0006").glob("*.png")}
        assert on_disk == {Path(row["path"]).name for row in rows}
        # Lesion masks: one per calcium image that shows lesion pixels, none for the others.
        masks = {row["lesion_mask"] for row in rows if row["lesion_mask"]}
        assert masks == {
            p.relative_to(out / dataset).as_posix()
            for p in (out / dataset / "SYN0006" / "lesion").glob("*.png")
        }
        assert all(row["label"] == "calcium" for row in rows if row["lesion_mask"])
        if dataset == "cropped":
            assert all(row["lesion_mask"] for row in rows if row["label"] == "calcium")
    assert not [p for p in out.rglob("*") if p.name.endswith((".part", ".old"))]
    segmented = {r["slice"] for r in manifest(out, "segmented", "SYN0006")}
    assert segmented == {
        n for k, n in enumerate(syn6["volume"].instance_numbers) if syn6["heart_mask"][k].any()
    }


def test_slice_labels_come_from_the_label_table(built6, syn6):
    out, result = built6
    table = syn6["slice_labels"]
    for dataset in ("original", "segmented"):
        for row in manifest(out, dataset, "SYN0006"):
            truth = table[row["slice"]]
            assert row["label"] == ("calcium" if truth.calcium else "no_calcium")
            assert row["cac_class"] == (truth.cac_class if truth.calcium else "")
            assert row["label_source"] == "label_table"
    assert result.n_calcium_slices == sum(label.calcium for label in table.values()) > 0


def test_segmented_shows_the_heart_only(built6, syn6):
    out, _ = built6
    hu, heart = syn6["volume"].hu, syn6["heart_mask"]
    near_heart = ndimage.binary_dilation(heart, iterations=2, structure=np.ones((1, 3, 3)))
    core = ndimage.binary_erosion(heart, iterations=2, structure=np.ones((1, 3, 3)))
    for row in manifest(out, "segmented", "SYN0006"):
        k = row["slice"] - 1
        image = read_grey(out / "segmented" / row["path"])
        row0, row1, col0, col1 = box_of(row)
        # Each image pixel's source pixel on the slice; outside the image counts as far.
        src_r = row0 + (np.arange(299) + 0.5) * (row1 - row0) // 299
        src_c = col0 + (np.arange(299) + 0.5) * (col1 - col0) // 299
        rr, cc = np.meshgrid(src_r.astype(int), src_c.astype(int), indexing="ij")
        inside = (rr >= 0) & (rr < 256) & (cc >= 0) & (cc < 256)
        near = np.zeros_like(inside)
        near[inside] = near_heart[k][rr[inside], cc[inside]]
        assert image[~near].max() == 0
        # Inside the heart it is the windowed slice, resampled.
        r, c = np.nonzero(core[k])
        u, v = to_image(r, c, box_of(row), 299)
        grey = window_to_uint8(hu[k][r, c], 150.0, 800.0).astype(float)
        assert np.abs(image[u, v] - grey).mean() < 4


def test_every_coronary_lesion_lands_bright_in_a_calcium_tile(built6, syn6):
    out, result = built6
    volume, heart, lesion_mask = syn6["volume"], syn6["heart_mask"], syn6["lesion_mask"]
    hu = volume.hu
    pixel_area = float(np.prod(volume.pixel_spacing_mm))
    normalisation = volume.slice_spacing_mm / 3.0
    reference = agatston_score(hu, lesion_mask, volume.pixel_spacing_mm, volume.slice_spacing_mm)
    per_slice = np.bincount(
        [lesion.slice_index for lesion in reference.lesions], minlength=hu.shape[0]
    )
    tiles_by_slice: dict[int, list[dict]] = {}
    for row in manifest(out, "cropped", "SYN0006"):
        tiles_by_slice.setdefault(row["slice"], []).append(row)
    n_lesions_checked = n_without_tile = 0
    for instance, tiles in tiles_by_slice.items():
        k = instance - 1
        components, ids, weights = qualifying_lesions(hu[k], lesion_mask[k], pixel_area)
        assert len(ids) == per_slice[k]  # the same lesions as the Agatston scorer
        visible = np.isin(components, ids) & heart[k]
        for tile in tiles:
            row0, row1, col0, col1 = box_of(tile)
            window = np.zeros_like(visible)
            window[max(row0, 0) : row1, max(col0, 0) : col1] = True
            shown = visible & window
            if not shown.any():
                assert (tile["label"], tile["cac_class"]) == ("no_calcium", ""), tile
                continue
            score = sum(
                (shown & (components == i)).sum() * pixel_area * weights[i] * normalisation
                for i in ids
            )
            assert (tile["label"], tile["cac_class"]) == ("calcium", cac_class(score)), tile
            image = read_grey(out / "cropped" / tile["path"])
            # The tile's lesion mask (for relabelling after augmentation) covers them too.
            mask = read_grey(out / "cropped" / tile["lesion_mask"])
            assert float(tile["pixel_mm"]) == pytest.approx(
                (row1 - row0) * np.sqrt(pixel_area) / 299, rel=1e-4
            )
            for i in ids:
                r, c = np.nonzero(shown & (components == i))
                if r.size:
                    u, v = to_image(r, c, box_of(tile), 299)
                    assert image[u, v].max() >= GREY_130 - 2, (tile, i)
                    assert (mask[u, v] == 255).all(), (tile, i)
                    n_lesions_checked += 1
        # A calcium slice whose lesions lie in the heart has a calcium tile.
        label = syn6["slice_labels"][instance]
        in_heart = not (np.isin(components, ids) & ~heart[k]).any()
        has_tile = any(tile["label"] == "calcium" for tile in tiles)
        if label.calcium and in_heart:
            assert has_tile, instance
        n_without_tile += label.calcium and not has_tile
    assert n_lesions_checked > 20
    assert result.n_calcium_slices_without_positive_tile == n_without_tile
    assert result.n_calcium_tiles == sum(
        t["label"] == "calcium" for tiles in tiles_by_slice.values() for t in tiles
    )


def test_fallback_finds_the_lesion_map_tiles_and_more(syn4, tmp_path):
    with_map = build_patient_datasets(tmp_path / "map", settings=SETTINGS, **syn4)
    fallback = build_patient_datasets(
        tmp_path / "hu", settings=SETTINGS, **{**syn4, "lesion_mask": None}
    )
    truth = {(r["slice"], r["tile"]) for r in with_map.rows["cropped"] if r["label"] == "calcium"}
    found = {(r["slice"], r["tile"]) for r in fallback.rows["cropped"] if r["label"] == "calcium"}
    assert truth and truth <= found
    calcium_slices = {n for n, label in syn4["slice_labels"].items() if label.calcium}
    for row in fallback.rows["cropped"]:
        if row["slice"] in calcium_slices:
            assert row["label_source"] == "hu_candidates"
        else:
            assert (row["label"], row["label_source"]) == ("no_calcium", "label_table")


def test_second_run_is_byte_identical_and_leaves_no_temporary_files(built6, syn6, tmp_path):
    first, _ = built6
    snapshot = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    build_patient_datasets(tmp_path, settings=SETTINGS, **syn6)
    build_patient_datasets(first, settings=SETTINGS, **syn6)  # over the first run
    for root in (first, tmp_path):
        files = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        assert files.keys() == snapshot.keys()
        assert all(files[name] == data for name, data in snapshot.items())
    assert not [p for p in first.rglob("*") if p.name.startswith(".")]
    assert filecmp.cmp(first / "cropped" / "SYN0006.tsv", tmp_path / "cropped" / "SYN0006.tsv")


def test_merge_manifests(built6, syn4, tmp_path):
    out, result6 = built6
    result4 = build_patient_datasets(out, settings=SETTINGS, **syn4)
    for dataset in DATASETS:
        merged = out / dataset / "manifest.tsv"
        n = merge_manifests([result6.manifests[dataset], result4.manifests[dataset]], merged)
        rows = read_tsv(merged)
        assert n == len(rows) == len(result4.rows[dataset]) + len(result6.rows[dataset])
        assert [r["patient_id"] for r in rows] == sorted(r["patient_id"] for r in rows)
        assert all((out / dataset / r["path"]).is_file() for r in rows[:: max(1, n // 50)])
    broken = tmp_path / "broken.tsv"
    broken.write_text("patient_id\tslice\n")
    with pytest.raises(DatasetError, match=r"broken\.tsv"):
        merge_manifests([broken], tmp_path / "manifest.tsv")


def test_slab_without_three_channels_is_refused_before_any_job(refused_overlay):
    out = refused_overlay("datasets: {slab: 3}\ninput_pipeline: {channels: 1}\n")
    assert "input_pipeline.channels must be 3, not 1" in out
