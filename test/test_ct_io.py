"""CT input: formats, HU, geometry (RAS vs LPS), and every bad input through the CLI."""

import datetime

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from bronchonav.cli import main
from bronchonav.ct.io import ct_to_index, index_to_ct, read_ct
from bronchonav.errors import CTError

SPACING = (0.8, 0.9, 1.25)  # x, y, z (mm)
ORIGIN = (-30.0, 12.0, -250.0)  # LPS (mm)


def _volume(shape=(20, 24, 28)):
    """A CT-like int16 volume [k, j, i] with air around, -850 lungs and a bright marker voxel.

    The marker sits at index (k, j, i) = (5, 7, 20): left of centre, i.e. at +x in LPS.
    """
    rng = np.random.default_rng(3)
    arr = np.full(shape, 40, dtype=np.int16)
    arr[:, :, :3] = -1000
    arr[:, 6:18, 4:24] = -850
    arr += rng.integers(-5, 5, size=shape, dtype=np.int16)
    arr[5, 7, 20] = 1500
    return arr


MARKER = (5, 7, 20)


def _marker_lps_mm():
    k, j, i = MARKER
    return np.array(ORIGIN) + np.array([i, j, k]) * np.array(SPACING)


def _itk_image(arr):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    return img


def _write_nifti_ras(arr, path):
    """Write with nibabel in its own RAS convention: flip x and y of the LPS geometry."""
    data = np.transpose(arr, (2, 1, 0))  # [i, j, k]
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    affine[:3, 3] = [-ORIGIN[0], -ORIGIN[1], ORIGIN[2]]
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return affine


def _marker_ct(image):
    arr = sitk.GetArrayFromImage(image)
    idx = np.unravel_index(np.argmax(arr), arr.shape)
    return index_to_ct(image, np.array(idx))[0]


def test_same_volume_in_ras_nifti_and_lps_mha_nrrd_maps_to_the_same_ct_point(tmp_path):
    arr = _volume()
    affine = _write_nifti_ras(arr, tmp_path / "ras.nii.gz")
    sitk.WriteImage(_itk_image(arr), str(tmp_path / "lps.mha"))
    sitk.WriteImage(_itk_image(arr), str(tmp_path / "lps.nrrd"))
    expected_ct = _marker_lps_mm() / 1000.0
    # nibabel's own view of the NIfTI: RAS, so x and y are the negated LPS ones
    k, j, i = MARKER
    ras_mm = affine @ np.array([i, j, k, 1.0])
    np.testing.assert_allclose(ras_mm[:3] * [-1, -1, 1] / 1000.0, expected_ct)
    for name in ("ras.nii.gz", "lps.mha", "lps.nrrd"):
        img = read_ct(tmp_path / name)
        assert img.GetPixelID() == sitk.sitkInt16
        np.testing.assert_allclose(img.GetSpacing(), SPACING, rtol=1e-6)
        np.testing.assert_allclose(_marker_ct(img), expected_ct, atol=1e-9, err_msg=name)
        # the marker is on the patient's left (+x in LPS) of the volume's centre
        centre = index_to_ct(img, (np.array(img.GetSize()[::-1]) - 1) / 2.0)[0]
        assert _marker_ct(img)[0] > centre[0]


def test_index_ct_round_trip_with_oblique_direction():
    img = _itk_image(_volume())
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
    idx = np.array([[1.5, 2.0, 3.25], [10, 0, 7]])
    p = index_to_ct(img, idx)
    # SimpleITK's own index → physical conversion agrees (it takes x, y, z order, mm)
    for row, q in zip(idx, p):
        ref = img.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in row[::-1]))
        np.testing.assert_allclose(q * 1000.0, ref, atol=1e-9)
    np.testing.assert_allclose(ct_to_index(img, p), idx, atol=1e-9)


def _write_dicom_series(folder, stored, intercept=-1024.0, slope=1.0):
    """A minimal CT series written with pydicom (one file per slice, unsigned stored values)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    for k in range(stored.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Phantom^Test", "0"
        ds.StudyDate = datetime.date(2026, 1, 1).strftime("%Y%m%d")
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SPACING[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = SPACING[2]
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
        ds.PixelData = stored[k].astype("<u2").tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)


def test_dicom_series_is_rescaled_to_hu_with_geometry(tmp_path):
    hu = _volume().astype(np.int32)
    _write_dicom_series(tmp_path / "dicom", (hu + 1024).astype(np.uint16))
    img = read_ct(tmp_path / "dicom")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), hu)
    np.testing.assert_allclose(img.GetSpacing(), SPACING, rtol=1e-5)
    np.testing.assert_allclose(img.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(_marker_ct(img), _marker_lps_mm() / 1000.0, atol=1e-7)


# -- bad input: one line on stderr, non-zero exit, no traceback ------------------------------------

def _bad_inputs(tmp_path):
    cases = {}
    cases["missing"] = tmp_path / "does_not_exist.nii.gz"
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    cases["corrupt"] = corrupt
    truncated = tmp_path / "truncated.mha"
    sitk.WriteImage(_itk_image(_volume()), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:-5000])
    cases["truncated"] = truncated
    img2d = sitk.GetImageFromArray(_volume()[5])
    sitk.WriteImage(img2d, str(tmp_path / "flat.mha"))
    cases["2d"] = tmp_path / "flat.mha"
    sitk.WriteImage(_itk_image(_volume()[5:6]), str(tmp_path / "one_slice.mha"))
    cases["single slice"] = tmp_path / "one_slice.mha"
    photo = (np.random.default_rng(1).random((20, 24, 28)) * 255).astype(np.uint8)
    sitk.WriteImage(_itk_image(photo), str(tmp_path / "photo.nrrd"))
    cases["8-bit"] = tmp_path / "photo.nrrd"
    raw = _itk_image((_volume().astype(np.int32) + 1024).astype(np.int16))  # no rescale applied
    sitk.WriteImage(raw, str(tmp_path / "raw.mha"))
    cases["no air"] = tmp_path / "raw.mha"
    coarse = _itk_image(_volume())
    coarse.SetSpacing((0.7, 0.7, 5.0))
    sitk.WriteImage(coarse, str(tmp_path / "coarse.mha"))
    cases["spacing"] = tmp_path / "coarse.mha"
    (tmp_path / "empty").mkdir()
    cases["empty folder"] = tmp_path / "empty"
    (tmp_path / "notdicom").mkdir()
    (tmp_path / "notdicom" / "readme.txt").write_text("no images here")
    cases["folder without DICOM"] = tmp_path / "notdicom"
    return cases


EXPECTED_WORDS = {"missing": "not found", "corrupt": "cannot read", "truncated": "cannot read",
                  "2d": "2D", "single slice": "single slice", "8-bit": "8-bit", "no air": "no air",
                  "spacing": "spacing", "empty folder": "empty",
                  "folder without DICOM": "no readable DICOM"}


def test_each_bad_input_raises_cterror(tmp_path):
    for case, path in _bad_inputs(tmp_path).items():
        with pytest.raises(CTError, match=EXPECTED_WORDS[case]):
            read_ct(path)


def test_each_bad_input_gives_one_stderr_line_through_the_cli(tmp_path, capsys):
    for case, path in _bad_inputs(tmp_path).items():
        code = main(["build-map", "--ct", str(path), "--out", str(tmp_path / "map_out")])
        out, err = capsys.readouterr()
        assert code != 0, case
        assert out == "", case
        lines = err.splitlines()
        assert len(lines) == 1, (case, err)
        assert lines[0].startswith("bronchonav build-map: error:"), (case, err)
        assert EXPECTED_WORDS[case] in lines[0], (case, err)
        assert "Traceback" not in err


def test_cli_subprocess_bad_input_has_no_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "bronchonav"
    proc = subprocess.run([str(exe), "build-map", "--ct",
                           str(tmp_path / "nope.mha"), "--out", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr
