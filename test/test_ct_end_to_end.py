"""A clinical-looking CT as a DICOM series, end to end: write the series (with a localizer beside
it, chosen past with ``--series``), build the map from it (lungs from the scan), add lesions (by centre, from a label image, from a CSV) and plan to one; a campaign names the
series too.

One reduced clinical phantom (1 mm pixels, 2.5 mm slices) per module.
"""

import contextlib
import io
import json

import numpy as np
import pytest
import SimpleITK as sitk

from bronchonav.campaign.spec import parse_spec
from bronchonav.campaign.stages import make_map
from bronchonav.cli import main
from bronchonav.ct.io import write_dicom_series
from bronchonav.errors import CTError, InputError
from bronchonav.ct.phantom import make_phantom, phantom_config
from bronchonav.maps import load_map


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def phantom():
    config = phantom_config("clinical", 0, slice_thickness_m=2.5e-3)
    config.spacing_m = 1.0e-3
    return make_phantom(config)


SERIES_UID, SCOUT_UID = "1.2.826.0.1.3680043.8.498.7", "1.2.826.0.1.3680043.8.498.8"


@pytest.fixture(scope="module")
def built(phantom, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    files = write_dicom_series(phantom.image, root / "dicom", series_uid=SERIES_UID)
    assert len(files) == phantom.image.GetSize()[2]
    # a one-slice localizer beside the axial series, as scanner exports have it
    scout = phantom.image[:, :, phantom.image.GetSize()[2] // 2:phantom.image.GetSize()[2] // 2 + 1]
    for f in write_dicom_series(scout, root / "scout", series_uid=SCOUT_UID, description="scout"):
        f.rename(root / "dicom" / f"scout_{f.name}")
    code, out, err = _run(["build-map", "--ct", str(root / "dicom"), "--series", SERIES_UID,
                           "--out", str(root / "map"), "--json"])
    assert code == 0, err
    return root, json.loads(out)


def _center_arg(c):
    return "--center=" + ",".join(f"{v:.6f}" for v in c)


def test_map_from_the_dicom_series_has_lungs_from_the_scan(built, phantom):
    root, summary = built
    m = load_map(root / "map")
    assert m.metadata["source"]["kind"] == "ct"
    assert m.metadata["source"]["series_uid"] == SERIES_UID
    assert summary["branches"] >= 30 and set(summary["lobes"]) == {"RUL", "RML", "RLL", "LUL", "LLL"}
    truth = sitk.GetArrayFromImage(phantom.lung_labels)
    labels = sitk.GetArrayFromImage(sitk.DICOMOrient(m.lung_mask, "LPS"))
    for value in (1, 2):
        a, b = labels == value, truth == value
        assert 2 * np.count_nonzero(a & b) / (a.sum() + b.sum()) > 0.9, value


def test_add_nodule_then_plan(built, phantom):
    root, _ = built
    folder = str(root / "map")
    n1 = next(n for n in phantom.nodules if n.id == "N1")
    code, out, err = _run(["add-nodule", folder, "--id", "N1", _center_arg(n1.center),
                           "--radius", f"{n1.radius:.6f}"])
    assert code == 0, err
    m = load_map(folder)  # hashes and metadata updated: the map is valid
    assert [n.id for n in m.nodules] == ["N1"] and m.nodule("N1").lobe == n1.lobe
    code, out, err = _run(["plan", "--map", folder, "--nodule", "N1", "--json"])
    assert code == 0, err
    route = json.loads(out)[0]
    assert route["feasible"] and route["lobe"] == n1.lobe
    assert np.linalg.norm(np.array(route["exit_point_m"]) - n1.center) < 0.03
    # the same id again is refused, and a centre outside the lungs (the map's own lung mask)
    code, _, err = _run(["add-nodule", folder, "--id", "N1", _center_arg(n1.center),
                         "--radius", "0.005"])
    assert code == 2 and "already has nodule" in err
    code, _, err = _run(["add-nodule", folder, "--id", "X", "--center=0,0.2,0", "--radius", "0.005"])
    assert code == 2 and "outside the lungs" in err
    assert [n.id for n in load_map(folder).nodules] == ["N1"]


def test_lesions_from_a_label_image_and_a_csv(built, phantom, tmp_path):
    root, _ = built
    folder = str(root / "map")
    grid = phantom.grid
    labels = np.zeros(grid.shape_zyx, np.uint8)
    z, y, x = np.meshgrid(grid.axis(2), grid.axis(1), grid.axis(0), indexing="ij")
    chosen = [n for n in phantom.nodules if n.id in ("N2", "N3")]
    for n in chosen:
        labels[(x - n.center[0]) ** 2 + (y - n.center[1]) ** 2 + (z - n.center[2]) ** 2
               <= n.radius ** 2] = 1
    # a label image on another grid is refused
    sitk.WriteImage(grid.to_sitk(labels[:, ::2, ::2].copy()), str(tmp_path / "coarse.nii.gz"))
    code, out, err = _run(["add-nodule", folder, "--from-labels", str(tmp_path / "coarse.nii.gz")])
    assert code == 2 and "not on the CT's grid" in err
    # the CT's grid written in another orientation: read through the file's own geometry
    sitk.WriteImage(sitk.DICOMOrient(grid.to_sitk(labels), "RAS"), str(tmp_path / "lesions.nii.gz"))
    code, out, err = _run(["add-nodule", folder, "--from-labels", str(tmp_path / "lesions.nii.gz")])
    assert code == 0, err
    got = {n.id: n for n in load_map(folder).nodules if n.id.startswith("L")}
    assert len(got) == 2
    for n in chosen:
        best = min(got.values(), key=lambda g: np.linalg.norm(g.center - n.center))
        assert np.linalg.norm(best.center - n.center) < 1e-3
        assert best.radius == pytest.approx(n.radius, rel=0.1)
        assert best.lobe == n.lobe
    csv = tmp_path / "lesions.csv"
    n4 = next(n for n in phantom.nodules if n.id == "N4")
    csv.write_text("id,x_m,y_m,z_m,radius_m\n" + f"C1,{n4.center[0]},{n4.center[1]},"
                   f"{n4.center[2]},{n4.radius}\n")
    code, out, err = _run(["add-nodule", folder, "--from-csv", str(csv)])
    assert code == 0, err
    assert load_map(folder).nodule("C1").lobe == n4.lobe
    csv.write_text("id,x,y\nC2,1,2\n")
    code, _, err = _run(["add-nodule", folder, "--from-csv", str(csv)])
    assert code == 2 and "header" in err


def test_centerlines_without_curls_and_bifurcations_where_the_truth_has_them(built, phantom):
    root, _ = built
    tree = load_map(root / "map").tree
    chord = [np.linalg.norm(b.end - b.start) for b in tree]
    tortuosity = np.array([b.length / c for b, c in zip(tree, chord)])
    assert tortuosity[0] < 1.05  # the trachea: straight, no curl
    assert tortuosity.max() < 1.6  # no branch loops back on itself
    assert tree.max_generation <= phantom.tree.max_generation
    # every bifurcation of the map is one of the truth's (2.5 mm slices: within 3 slices and
    # a pixel; most within 2 slices)
    truth = np.array([b.start for b in phantom.tree if b.parent is not None])
    d = np.array([np.min(np.linalg.norm(truth - b.end, axis=1)) for b in tree if b.children])
    assert d.max() <= 3 * 2.5e-3 + 1e-3 and np.mean(d < 5e-3) >= 0.8


def test_a_campaign_names_the_series_of_its_ct(built):
    """A campaign's CT subject is the DICOM folder with the series named: the map it makes is the
    one ``build-map --series`` made; without the series the subject is refused with the listing."""
    root, summary = built
    spec = parse_spec({"cohort": {"cts": [{"path": "dicom", "series": SERIES_UID}]},
                       "stages": ["map"]}, root)
    subject, = spec.subjects
    assert subject.series == SERIES_UID and subject.key == f"ct-dicom-series-{SERIES_UID}"
    assert parse_spec(spec.to_dict(), root) == spec
    m = make_map(subject)
    assert m.metadata["source"]["series_uid"] == SERIES_UID
    assert len(m.tree) == summary["branches"]
    unnamed, = parse_spec({"cohort": {"cts": ["dicom"]}, "stages": ["map"]}, root).subjects
    with pytest.raises(CTError, match=f"holds 2 DICOM series.*{SCOUT_UID}"):
        make_map(unnamed)
    for bad in ({"path": "dicom", "series": ""}, {"path": "dicom", "series": [1]},
                {"path": "dicom", "series": 1, "kernel": "B30f"}, {"series": 1}):
        with pytest.raises(InputError, match=r"cohort\.cts\[0\]"):
            parse_spec({"cohort": {"cts": [bad]}, "stages": ["map"]}, root)
