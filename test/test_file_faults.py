"""Fault injection on the files BronchoNav reads and writes (issue 15, "Files").

Each broken input gives one clear error (CTError / MapError / InputError) instead of a map or a
traceback; map writes are atomic and never replace a map unless forced. All cases use tiny
volumes and maps (well under a second each).
"""

import contextlib
import gzip
import hashlib
import io
import json
import locale
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

import bronchonav.maps as maps_module
from bronchonav.airway.tree import AirwayTree, Branch, Nodule
from bronchonav.cli import main
from bronchonav.ct.io import read_ct, write_dicom_series
from bronchonav.errors import CTError, InputError, MapError
from bronchonav.maps import AirwayMap, load_map, save_map


def _ct(shape=(20, 32, 40), spacing=(0.7, 0.8, 2.0)) -> sitk.Image:
    """A tiny 'CT': air with a block of soft tissue (HU), LPS."""
    a = np.full(shape, -1000, np.int16)
    a[5:15, 10:20, 10:30] = 40
    image = sitk.GetImageFromArray(a)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, -30.0))
    return image


def _map(name="m") -> AirwayMap:
    trachea = Branch(0, None, 0, [[0, 0, 0.1], [0, 0, 0]], [0.009, 0.009])
    left = Branch(1, 0, 1, [[0, 0, 0], [0.03, 0, -0.03]], [0.006, 0.006])
    right = Branch(2, 0, 1, [[0, 0, 0], [-0.03, 0, -0.03]], [0.006, 0.006])
    v = np.array([[0, 0, 0], [0.01, 0, 0], [0, 0.01, 0]], float)
    t = np.array([[0, 1, 2]])
    return AirwayMap(name, AirwayTree([trachea, left, right]),
                     [Nodule("N1", np.array([0.05, 0.0, -0.05]), 0.005)], v, t,
                     {"source": {"kind": "test"}})


def _rehash(folder: Path, key: str) -> None:
    meta = yaml.safe_load((folder / "map.yaml").read_text())
    path = folder / meta["files"][key]["path"]
    meta["files"][key]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "map.yaml").write_text(yaml.safe_dump(meta))


# -- CT files ------------------------------------------------------------------------------------

def test_nan_voxels_are_refused(tmp_path):
    image = sitk.Cast(_ct(), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(image)
    arr[3, 4, 5] = np.nan
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(image)
    sitk.WriteImage(bad, str(tmp_path / "nan.nii.gz"))
    with pytest.raises(CTError, match="1 non-finite"):
        read_ct(tmp_path / "nan.nii.gz")
    all_nan = sitk.GetImageFromArray(np.full(arr.shape, np.nan, np.float32))
    sitk.WriteImage(all_nan, str(tmp_path / "allnan.nrrd"))
    with pytest.raises(CTError, match="non-finite"):
        read_ct(tmp_path / "allnan.nrrd")


@pytest.mark.parametrize("cut", [0.02, 0.5])
def test_truncated_gzip_nifti_is_refused(tmp_path, cut):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_ct(), str(path), True)
    read_ct(path)  # intact: reads
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * (1 - cut))])
    with pytest.raises(CTError, match="truncated or corrupt"):
        read_ct(path)


def test_corrupt_gzip_stream_is_refused(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_ct(), str(path), True)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(CTError, match="gzip stream is truncated or corrupt"):
        read_ct(path)


def test_truncated_plain_nifti_is_refused(tmp_path):
    path = tmp_path / "ct.nii"
    sitk.WriteImage(_ct(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-500])
    with pytest.raises(CTError, match="truncated"):
        read_ct(path)


def test_plain_gzip_file_that_is_not_nifti(tmp_path):
    path = tmp_path / "ct.nii.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"hello" * 100)
    with pytest.raises(CTError, match="cannot read"):
        read_ct(path)


@pytest.fixture()
def dicom_folder(tmp_path):
    folder = tmp_path / "series"
    write_dicom_series(_ct(), folder, series_uid="1.2.826.0.1.3680043.8.498.1")
    return folder


def test_dicom_series_round_trip(dicom_folder):
    before = locale.setlocale(locale.LC_ALL)
    image = read_ct(dicom_folder)
    write_dicom_series(image, dicom_folder.parent / "again")
    assert locale.setlocale(locale.LC_ALL) == before  # GDCM sets "C": text files became ASCII
    ref = _ct()
    assert image.GetSize() == ref.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(ref))


def test_missing_dicom_slice_is_refused(dicom_folder):
    (dicom_folder / "slice_0010.dcm").unlink()
    with pytest.raises(CTError, match="misses slices: 1 gap"):
        read_ct(dicom_folder)


def test_truncated_dicom_slice_is_refused(dicom_folder):
    path = dicom_folder / "slice_0007.dcm"
    data = path.read_bytes()
    path.write_bytes(data[:-300])
    with pytest.raises(CTError, match="slice_0007.dcm"):
        read_ct(dicom_folder)


def _second_series(dicom_folder, into=None):
    """A second series (12 slices of another image, description "second") moved into
    ``into`` (default: beside the first); the image written."""
    other = _ct(shape=(12, 32, 40))
    other.SetOrigin((-10.0, 5.0, -80.0))
    write_dicom_series(other, dicom_folder.parent / "tmp2", series_uid=SECOND,
                       description="second")
    into = into or dicom_folder
    into.mkdir(parents=True, exist_ok=True)
    for f in (dicom_folder.parent / "tmp2").iterdir():
        f.rename(into / f"b_{f.name}")
    return other


FIRST, SECOND = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"


def test_two_series_in_one_folder_are_refused_and_listed(dicom_folder):
    _second_series(dicom_folder)
    with pytest.raises(CTError, match="2 DICOM series; choose one with --series") as info:
        read_ct(dicom_folder)
    message = str(info.value)
    assert f"[1] {FIRST} (20 files" in message
    assert f"[2] {SECOND} (12 files, second)" in message


@pytest.mark.parametrize("choice", ["2", SECOND])
def test_a_series_is_chosen_by_number_or_uid(dicom_folder, choice):
    """Each series of a shared folder reads back as the image it was written from, its own
    files only (the other series' slices are neither read nor taken for corrupt ones)."""
    second = _second_series(dicom_folder)
    image = read_ct(dicom_folder, series=choice)
    assert image.GetSize() == second.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), second.GetOrigin(), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(second))
    assert image.GetMetaData("0020|000e") == SECOND
    first = read_ct(dicom_folder, series="1")
    assert first.GetSize() == _ct().GetSize()


@pytest.mark.parametrize("choice", ["3", "0", "1.2.3"])
def test_a_series_that_is_not_there_is_refused_with_the_listing(dicom_folder, choice):
    _second_series(dicom_folder)
    with pytest.raises(CTError, match=f"no DICOM series '{choice}'.*from 1 to 2.*second"):
        read_ct(dicom_folder, series=choice)


def test_a_series_chosen_for_an_image_file_is_refused(tmp_path):
    path = tmp_path / "ct.mha"
    sitk.WriteImage(_ct(), str(path))
    with pytest.raises(CTError, match="is an image file"):
        read_ct(path, series="1")


def test_series_in_subfolders_are_found(dicom_folder):
    """An export that nests its series (STUDY/SERIES folders): the study folder is read; with
    two series in two subfolders the listing names each folder."""
    study = dicom_folder.parent / "study"
    study.mkdir()
    dicom_folder.rename(study / "SE1")
    image = read_ct(study)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(_ct()))
    _second_series(study / "SE1", into=study / "SE2")
    with pytest.raises(CTError, match="in SE2\\)") as info:
        read_ct(study)
    assert "in SE1)" in str(info.value)
    assert read_ct(study, series="2").GetSize() == (40, 32, 12)


def test_a_series_split_over_two_folders_is_one_series_in_slice_order(dicom_folder):
    """An export that splits a long series over folders (every other slice in a second one):
    one series, read back whole and in order."""
    study = dicom_folder.parent / "study"
    (study / "A").mkdir(parents=True)
    (study / "B").mkdir()
    for k, f in enumerate(sorted(dicom_folder.iterdir())):
        f.rename(study / ("A" if k % 2 else "B") / f.name)
    image = read_ct(study)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(_ct()))
    np.testing.assert_allclose(image.GetOrigin(), _ct().GetOrigin(), atol=1e-3)


def test_dicomdir_and_other_objects_beside_the_slices_are_not_slices(dicom_folder):
    """A DICOMDIR index and a DICOM object without pixels of another series (a dose report)
    beside the slices are passed over; a file that is not DICOM at all is still refused (it may
    be a slice cut short)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    report = Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"  # dose SR
    report.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID
    report.SeriesInstanceUID, report.Modality = generate_uid(), "SR"
    report.save_as(dicom_folder / "dose_report.dcm", enforce_file_format=True)
    (dicom_folder / "DICOMDIR").write_bytes(b"\0" * 200)
    image = read_ct(dicom_folder)
    assert image.GetSize() == _ct().GetSize()
    (dicom_folder / "notes.txt").write_text("not DICOM")
    with pytest.raises(CTError, match="not readable slices.*notes.txt"):
        read_ct(dicom_folder)


def test_build_map_series_needs_a_ct(tmp_path, capsys):
    code = main(["build-map", "--phantom", "default", "--series", "1", "--out",
                 str(tmp_path / "m")])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--series chooses a DICOM series of --ct" in err[0]
    assert not (tmp_path / "m").exists()


# -- map folders: reading ------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_map_paths_leaving_the_folder_are_refused(tmp_path, where):
    folder = save_map(_map(), tmp_path / "m")
    outside = tmp_path / "outside.json"
    outside.write_text((folder / "tree.json").read_text())
    meta = yaml.safe_load((folder / "map.yaml").read_text())
    if where == "absolute":
        meta["files"]["tree"]["path"] = str(outside)
    elif where == "dotdot":
        meta["files"]["tree"]["path"] = "../outside.json"
    else:
        (folder / "tree.json").unlink()
        os.symlink(outside, folder / "tree.json")
    (folder / "map.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(MapError, match="leaves the map folder|symbolic link"):
        load_map(folder)


def test_duplicate_branch_ids_are_refused(tmp_path):
    folder = save_map(_map(), tmp_path / "m")
    tree = json.loads((folder / "tree.json").read_text())
    tree["branches"][2]["id"] = 1
    (folder / "tree.json").write_text(json.dumps(tree))
    _rehash(folder, "tree")
    with pytest.raises(MapError, match="duplicate branch ids: 1"):
        load_map(folder)


@pytest.mark.parametrize("content", [
    b"this is not a mesh\n",
    b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
    b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
    b"garbage\n",
])
def test_unreadable_mesh_is_refused(tmp_path, content):
    folder = save_map(_map(), tmp_path / "m")
    (folder / "lumen.ply").write_bytes(content)
    _rehash(folder, "mesh")
    with pytest.raises(MapError, match="lumen.ply"):
        load_map(folder)


def test_unreadable_lung_mask_is_refused(tmp_path):
    m = _map()
    m.lung_mask = sitk.Image(4, 4, 4, sitk.sitkUInt8)
    folder = save_map(m, tmp_path / "m")
    (folder / "lung_mask.nii.gz").write_bytes(b"garbage")
    _rehash(folder, "lung_mask")
    with pytest.raises(MapError, match="lung_mask.nii.gz"):
        load_map(folder)


# -- map folders: writing ------------------------------------------------------------------------

def test_existing_map_is_not_replaced_without_force(tmp_path):
    folder = save_map(_map("old"), tmp_path / "m")
    with pytest.raises(InputError, match="--force"):
        save_map(_map("new"), folder)
    assert load_map(folder).name == "old"
    save_map(_map("new"), folder, force=True)
    assert load_map(folder).name == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary left behind


def test_failed_write_leaves_the_old_map_intact(tmp_path, monkeypatch):
    folder = save_map(_map("old"), tmp_path / "m")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(maps_module, "_write_mesh", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_map(_map("new"), folder, force=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert load_map(folder).name == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_build_map_refuses_an_existing_map_before_working(tmp_path):
    folder = save_map(_map("old"), tmp_path / "m")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["build-map", "--phantom", "default", "--out", str(folder)])
    assert code == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "--force" in lines[0]
    assert load_map(folder).name == "old"


def test_phantom_refuses_a_non_empty_folder_before_working(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["phantom", "--name", "default", "--out", str(tmp_path)])
    assert code == 2 and "--force" in err.getvalue()
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("argv, words", [
    (["--seed", "-1"], "seed must be >= 0"),
    (["--name", "clinical", "--slice-mm", "9"], "slice thickness"),
    (["--name", "clinical", "--pixel-mm", "nan"], "pixel spacing"),
    (["--name", "default", "--slice-mm", "1"], "clinical preset only"),
    (["--name", "clinical", "--emphysema", "nan"], "emphysema fraction"),
    (["--name", "default", "--emphysema", "0.2"], "clinical preset only"),
])
def test_phantom_options_are_checked_before_work(tmp_path, argv, words):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["phantom", *argv, "--out", str(tmp_path / "p")])
    assert code == 2 and words in err.getvalue()
    assert not (tmp_path / "p").exists()
