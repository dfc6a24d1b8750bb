"""`cacflow convert coca` on format-faithful synthetic fixtures (`cacflow synth --format
coca`): the round trip gives back the truth's lesions and per-artery scores, and each kind
of bad input leaves its patient out with its reason while the others convert."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cacflow.convert.coca import convert_coca, synth_coca
from cacflow.dicom.ingest import read_study, volume_of
from cacflow.scoring.agatston import THRESHOLD_HU
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

    proc = subprocess.run(
        [sys.executable, "-m", "cacflow.cli", "convert", "coca", str(tmp_path), "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "converted 3 of 9 patients" in proc.stderr
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
