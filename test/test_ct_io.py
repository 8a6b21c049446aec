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


def _ct_slice(study: str, series: str, k: int, pixels: np.ndarray, intercept: float = -1024.0,
              slope: float = 1.0):
    """Slice ``k`` of a minimal CT series (pydicom dataset; unsigned stored values ``pixels``);
    the caller sets its position, orientation and spacing."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

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
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def _write_dicom_series(folder, stored, intercept=-1024.0, slope=1.0):
    """A minimal CT series written with pydicom (one file per slice, unsigned stored values)."""
    from pydicom.uid import generate_uid

    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    for k in range(stored.shape[0]):
        ds = _ct_slice(study, series, k, stored[k], intercept, slope)
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SPACING[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = SPACING[2]
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


def _write_tilted_series(folder, hu_kji, tilt_deg, step_mm=2.0, pixel_mm=1.0):
    """A CT series acquired with the gantry tilted by ``tilt_deg`` about x: slice planes turned
    about x, stacked along the table (z) ``step_mm`` apart, as a tilted scanner writes them.
    Slice k's pixel (i, j) lies at (0, 0, k step) + i pixel row + j pixel col (LPS, mm)."""
    from pydicom.uid import generate_uid

    t = np.radians(tilt_deg)
    row, col = [1.0, 0.0, 0.0], [0.0, float(np.cos(t)), float(-np.sin(t))]
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    for k in range(hu_kji.shape[0]):
        ds = _ct_slice(study, series, k, hu_kji[k] + 1024)
        ds.ImagePositionPatient = [0.0, 0.0, k * step_mm]
        ds.ImageOrientationPatient = [*row, *col]
        ds.PixelSpacing = [pixel_mm, pixel_mm]
        ds.SliceThickness = step_mm
        ds.GantryDetectorTilt = tilt_deg
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)


def test_a_gantry_tilted_series_puts_every_voxel_where_it_was_scanned(tmp_path):
    """A bright rod along z at x = 10, y = 20 mm (3 mm across), scanned with a 15° gantry tilt
    over 40 slices 2 mm apart: every slice sees it at the same pixel (20 mm along the tilted
    column is pixel 20/cos t). Read back, every rod voxel lies within the rod's width of
    x = 10, y = 20 mm in the CT frame, over more than 60 mm of z; stacked along the slices'
    normal, as ITK reads them, the rod drifts 20 mm in y. The tilt is reported."""
    tilt, step, n = 15.0, 2.0, 40
    t = np.radians(tilt)
    hu = np.full((n, 64, 32), -1000, np.int16)
    hu[:, 8:56, 2:30] = -850  # lung
    for k in range(n):
        # the rod's point in slice k: y = 20 mm on the column axis (0, cos t, -sin t) from
        # (0, 0, k step): j cos t = 20 → j, and z = k step - j sin t
        j = int(round(20.0 / np.cos(t)))
        hu[k, j - 1:j + 2, 9:12] = 400  # 3 pixels across: the shift interpolates
    _write_tilted_series(tmp_path / "tilted", hu, tilt, step)
    image = read_ct(tmp_path / "tilted")
    assert float(image.GetMetaData("0018|1120")) == pytest.approx(tilt, abs=0.01)
    arr = sitk.GetArrayFromImage(image)
    rod = np.argwhere(arr > 100)
    assert len(np.unique(rod[:, 0])) == n  # in every slice
    p = index_to_ct(image, rod) * 1e3  # mm
    np.testing.assert_allclose(p[:, 0], 10.0, atol=1.1)  # within the rod's 3 pixels
    np.testing.assert_allclose(p[:, 1], 20.0, atol=1.6)
    assert np.ptp(p[:, 2]) > 60.0
    # as ITK reads it (stacked along the normal), the rod drifts in y by k step sin t
    from bronchonav.ct.io import SliceGeometry, undo_gantry_tilt

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "tilted")))
    raw = reader.Execute()
    q = index_to_ct(raw, np.argwhere(sitk.GetArrayFromImage(raw) > 100)) * 1e3
    assert np.ptp(q[:, 1]) > 15.0
    # slices stacked along their normal come back as read
    flat = SliceGeometry(np.array([[0.0, 0.0, 2.0 * k] for k in range(n)]),
                         np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    assert undo_gantry_tilt(raw, flat) is raw


def test_a_series_whose_slices_are_not_parallel_is_refused(tmp_path):
    import pydicom

    hu = np.full((6, 16, 16), -1000, np.int16)
    hu[:, 4:12, 4:12] = -850
    _write_tilted_series(tmp_path / "mixed", hu, 0.0)
    path = tmp_path / "mixed" / "slice003.dcm"
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal slice among axial ones
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(CTError, match="not parallel"):
        read_ct(tmp_path / "mixed")
