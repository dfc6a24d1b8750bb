"""`cacflow convert coca|orcascore` on format-faithful synthetic fixtures (`cacflow synth
--format coca|orcascore`): the round trip gives back the truth's lesions and per-artery scores, and each kind
of bad input leaves its patient out with its reason while the others convert."""

from __future__ import annotations

import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from cacflow.convert.coca import convert_coca, synth_coca
from cacflow.convert.orcascore import convert_orcascore, synth_orcascore
from cacflow.dicom.ingest import read_study, volume_of
from cacflow.scoring.agatston import THRESHOLD_HU, density_weight
from cacflow.scoring.reference import read_lesion_map
from cacflow.synthetic.synth import SynthSettings

ARTERY_COLUMNS = ["agatston_lad", "agatston_lcx", "agatston_rca"]


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"patient_id": str}, keep_default_na=False)


@pytest.mark.parametrize(
    "order, size, thickness",
    [("descending", 128, 3.0), ("ascending", 160, 2.5)],
)
def test_coca_round_trip_gives_back_the_truth(tmp_path, order, size, thickness):
    settings = SynthSettings(seed=3, size=size, slice_thickness_mm=(thickness,))
    synth_coca(tmp_path / "coca", 4, settings, instance_order=order)
    root = tmp_path / "coca" / "Gated_release_final"
    # The fixture is COCA's: ImageIndex counts slices by z ascending, points are strings.
    with open(next((root / "calcium_xml").glob("*.xml")), "rb") as handle:
        image = plistlib.load(handle)["Images"][0]
    assert isinstance(image["ROIs"][0]["Point_px"][0], str)
    assert image["ROIs"][0]["Name"].endswith("Artery")

    rows = convert_coca(tmp_path / "coca", tmp_path / "out")
    assert [r["status"] for r in rows] == ["converted"] * 4
    truth = read(tmp_path / "coca" / "truth" / "patients.tsv").set_index("patient_id")
    reference = read(tmp_path / "out" / "reference.tsv").set_index("patient_id")
    assert truth["agatston_total"].astype(float).sum() > 100  # calcium to convert
    for column in ["agatston_total", *ARTERY_COLUMNS, "volume_mm3"]:
        np.testing.assert_allclose(reference[column], truth[column].astype(float), atol=0.01)
    assert list(reference["risk_category"]) == list(truth["risk_category"])
    assert all(r["difference"] == pytest.approx(0, abs=0.01) for r in rows)

    # Each lesion pixel that counts lands on its slice, whichever way InstanceNumber runs.
    for pid in truth.index:
        volume = volume_of(read_study(tmp_path / "out" / "dicom" / pid, pid).ct)
        lesions = read_lesion_map(
            tmp_path / "out" / "lesions" / f"{pid}.npz", volume.instance_numbers, volume.hu.shape
        )
        with np.load(tmp_path / "coca" / "truth" / f"{pid}.npz") as data:
            true = data["lesion_labels"] > 0  # superior to inferior, as the volume
        counts = volume.hu >= THRESHOLD_HU
        np.testing.assert_array_equal(lesions.lesion_labels[counts] > 0, true[counts], pid)
    labels = read(tmp_path / "out" / "labels.tsv")
    calcium = labels.groupby("patient_id")["calcium"].sum()
    assert (calcium > 0).to_dict() == (truth["agatston_total"].astype(float) > 0).to_dict()


@pytest.fixture(scope="module")
def coca(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coca")
    synth_coca(root, 8, SynthSettings(seed=3, size=96), log=sys.stderr)
    return root


def convert(dataset: str, root: Path, out: Path) -> str:
    """`cacflow convert`'s summary line, after it exits 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "cacflow.cli", "convert", dataset, str(root), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def edit_roi(path: Path, change) -> None:
    with open(path, "rb") as handle:
        plist = plistlib.load(handle)
    change(plist["Images"][0]["ROIs"][0])
    with open(path, "wb") as handle:
        plistlib.dump(plist, handle)


def test_bad_coca_input_leaves_its_patient_out_with_a_reason(tmp_path, coca):
    root = tmp_path / "Gated_release_final"
    shutil.copytree(coca / "Gated_release_final", root)
    xml = root / "calcium_xml"
    scores = pd.read_csv(root / "scores.csv")
    calcium = sorted(scores.loc[scores["total"] > 0, "pid"].str.removesuffix("A"))
    annotated = sorted(p.stem for p in xml.glob("*.xml"))
    missing = calcium[-1]
    far, outside, unknown = [pid for pid in annotated if pid != missing][:3]
    malformed = min(p.name for p in (root / "patient").iterdir() if p.name not in annotated)
    (xml / f"{malformed}.xml").write_text("<plist><dict><key>Images</key>")

    def move_z(roi):
        roi["Point_mm"] = [p.rsplit(",", 1)[0] + ", 999.0)" for p in roi["Point_mm"]]

    def move_out(roi):
        roi["Point_px"] = [f"({float(p[1:].split(',')[0]) + 500}, 3.0)" for p in roi["Point_px"]]

    def rename(roi):
        roi["Name"] = "Obtuse Marginal"

    edit_roi(xml / f"{far}.xml", move_z)
    edit_roi(xml / f"{outside}.xml", move_out)
    edit_roi(xml / f"{unknown}.xml", rename)
    (xml / f"{missing}.xml").unlink()  # the score table gives this patient calcium
    shutil.copy(xml / f"{outside}.xml", xml / "SYN0099.xml")  # no series

    assert "converted 3 of 9 patients" in convert("coca", tmp_path, tmp_path / "out")
    rows = read(tmp_path / "out" / "conversion.tsv").set_index("patient_id")
    reasons = rows["reason"].to_dict()
    assert reasons[malformed].startswith(f"{malformed}.xml: not a COCA calcium property list")
    assert f"{far}.xml: ROI 1" in reasons[far] and "at z 999.00 mm matches no slice" in reasons[far]
    assert "reaches outside the 96x96 image" in reasons[outside]
    assert reasons[unknown].endswith("unknown artery name 'Obtuse Marginal'")
    assert reasons[missing] == (
        f"{missing}: no calcium_xml/{missing}.xml, but the score table gives calcium"
    )
    assert reasons["SYN0099"] == "SYN0099.xml: no series"
    converted = sorted(rows.index[rows["status"] == "converted"])
    assert len(converted) == 3
    assert sorted(p.name for p in (tmp_path / "out" / "dicom").iterdir()) == converted
    assert sorted(read(tmp_path / "out" / "reference.tsv")["patient_id"]) == converted


def mixed_artery_score(truth_path: Path) -> float:
    """The Agatston score of the calcium components that lie on lesions of two arteries."""
    with np.load(truth_path) as data:
        hu, labels, artery = data["hu"], data["lesion_labels"], data["lesion_artery"]
        area = float(np.prod(data["pixel_spacing_mm"]))
        thickness = float(data["slice_thickness_mm"])
    mixed = 0.0
    for k in range(hu.shape[0]):
        components, n = ndimage.label((hu[k] >= THRESHOLD_HU) & (labels[k] > 0), np.ones((3, 3)))
        for c in range(1, n + 1):
            here = components == c
            if len({str(artery[i]) for i in np.unique(labels[k][here])}) > 1:
                peak = float(hu[k][here].max())
                mixed += here.sum() * area * density_weight(peak) * thickness / 3.0
    return mixed


@pytest.mark.parametrize("size, thickness", [(128, 3.0), (160, 2.5)])
def test_orcascore_round_trip_gives_back_the_truth(tmp_path, size, thickness):
    settings = SynthSettings(seed=3, size=size, slice_thickness_mm=(thickness,))
    synth_orcascore(tmp_path / "orcascore", 4, settings)
    rows = convert_orcascore(tmp_path / "orcascore" / "images", tmp_path / "out")
    assert [r["status"] for r in rows] == ["converted"] * 4
    truth = read(tmp_path / "orcascore" / "truth" / "patients.tsv").set_index("patient_id")
    reference = read(tmp_path / "out" / "reference.tsv").set_index("patient_id")
    assert truth["agatston_total"].astype(float).sum() > 100
    for column in ["agatston_total", "volume_mm3"]:
        np.testing.assert_allclose(reference[column], truth[column].astype(float), atol=0.01)
    assert list(reference["risk_category"]) == list(truth["risk_category"])
    # orCaScore labels voxels by artery, not lesions: a calcium component that touches two
    # arteries' lesions (at a bifurcation) may go to the other of the two.
    for pid in truth.index:
        mixed = mixed_artery_score(tmp_path / "orcascore" / "truth" / f"{pid}.npz")
        for column in ARTERY_COLUMNS:
            assert float(reference.loc[pid, column]) == pytest.approx(
                float(truth.loc[pid, column]), abs=mixed + 0.01
            ), (pid, column)
    # The DICOM written from the MetaImage keeps its geometry.
    pid = truth.index[1]
    volume = volume_of(read_study(tmp_path / "out" / "dicom" / pid, pid).ct)
    assert volume.slice_spacing_mm == pytest.approx(thickness)
    assert volume.pixel_spacing_mm[0] == pytest.approx(
        float(truth.loc[pid, "pixel_spacing_mm"]), abs=1e-4
    )


def test_bad_orcascore_input_leaves_its_patient_out_with_a_reason(tmp_path):
    synth_orcascore(tmp_path / "o", 6, SynthSettings(seed=3, size=64))
    images = tmp_path / "o" / "images"
    (images / "SYN0001CTI.raw").unlink()
    raw = images / "SYN0002R.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    (images / "SYN0003R.mhd").unlink()
    (images / "SYN0003R.raw").unlink()
    header = images / "SYN0004R.mhd"
    header.write_text(
        re.sub(r"DimSize = (\d+) (\d+) (\d+)", r"DimSize = \1 \2 7", header.read_text())
    )
    (images / "SYN0005CTI.mhd").rename(tmp_path / "SYN0005CTI.mhd")
    assert "converted 1 of 6 patients" in convert("orcascore", images, tmp_path / "out")
    reasons = read(tmp_path / "out" / "conversion.tsv").set_index("patient_id")["reason"]
    assert reasons["SYN0001"] == "SYN0001CTI.mhd: its data file SYN0001CTI.raw is missing"
    assert reasons["SYN0002"].startswith(
        "SYN0002R.mhd: its data file SYN0002R.raw is short (100 of"
    )
    assert reasons["SYN0003"] == "SYN0003CTI.mhd: no reference SYN0003R.mhd beside it"
    assert reasons["SYN0004"].startswith("SYN0004R.mhd: label volume of (64, 64, 7) voxels")
    assert reasons["SYN0005"] == "SYN0005R.mhd: no image SYN0005CTI.mhd"
    assert reasons["SYN0006"] == ""
