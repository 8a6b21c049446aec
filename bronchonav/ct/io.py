"""Reading and checking chest CT scans.

Frames and units
----------------
SimpleITK reads every supported format (DICOM series, NIfTI, NRRD, MHA/MHD) into the ITK
convention: the physical frame is the scan's patient frame in **LPS** (+x towards the patient's
left, +y posterior, +z towards the head), in millimetres. For NIfTI files, whose header is RAS,
the reader flips x and y for us; nibabel, in contrast, reports RAS. BronchoNav's CT frame
(``ct``) is this LPS frame in **metres**: a voxel's point in the CT frame is
``(origin + direction @ (spacing * index_xyz)) / 1000``.

Arrays taken from images (``sitk.GetArrayFromImage``) are indexed ``[z, y, x]`` (``[k, j, i]``);
the helpers here take and return index triples in that ``(k, j, i)`` order.

Intensities are Hounsfield units: SimpleITK (GDCM) applies DICOM rescale slope and intercept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bronchonav.errors import CTError

MAX_SPACING_MM = 3.0
"""Largest voxel spacing accepted along any axis (mm); coarser scans lose the small airways."""

AIR_HU = -800.0
"""A CT in HU of a chest must contain voxels below this value (air in the lungs and airways)."""


def _read_dicom_folder(folder: Path) -> sitk.Image:
    """Read the largest DICOM series in ``folder`` (HU, LPS)."""
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        if not any(folder.iterdir()):
            raise CTError(f"CT folder {folder} is empty")
        raise CTError(f"CT folder {folder} holds no readable DICOM series")
    files = max((reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids), key=len)
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise CTError(f"cannot read the DICOM series in {folder}: "
                      f"{str(exc).strip().splitlines()[-1]}") from None


def read_ct(path: str | Path) -> sitk.Image:
    """Read and check a chest CT: a DICOM series folder, NIfTI, NRRD or MHA/MHD file.

    Parameters
    ----------
    path : str or Path
        A folder holding one DICOM series (the largest series is read if there are several),
        or an image file.

    Returns
    -------
    SimpleITK.Image
        3D ``int16`` image in Hounsfield units with its true spacing, origin and direction
        (ITK convention: LPS, millimetres).

    Raises
    ------
    CTError
        Missing path, empty folder, unreadable or corrupt file, or an image that fails
        :func:`check_ct`.
    """
    path = Path(path)
    if not path.exists():
        raise CTError(f"CT path not found: {path}")
    if path.is_dir():
        image = _read_dicom_folder(path)
    else:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise CTError(f"cannot read {path}: unreadable or corrupt image file "
                          f"({str(exc).strip().splitlines()[-1][:120]})") from None
    check_ct(image, str(path))
    if image.GetPixelID() == sitk.sitkInt16:
        return image
    return sitk.Clamp(image, sitk.sitkInt16, -32768, 32767)


def check_ct(image: sitk.Image, name: str = "image") -> None:
    """Raise :class:`CTError` unless ``image`` looks like a 3D chest CT in Hounsfield units.

    Checks: one scalar component; 3 dimensions with at least 2 voxels along each (a single
    slice is refused); every spacing positive and at most :data:`MAX_SPACING_MM`; intensities
    that look like HU (some voxels below :data:`AIR_HU`, i.e. air, and not an 8-bit range).
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CTError(f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                      "(a colour/vector image), not a CT in Hounsfield units")
    size = image.GetSize()
    if image.GetDimension() != 3:
        raise CTError(f"{name} is a {image.GetDimension()}D image of size {size}; a 3D CT is needed")
    if min(size) < 2:
        raise CTError(f"{name} is a single slice (size {size}); a 3D CT volume is needed")
    spacing = np.asarray(image.GetSpacing())
    if np.any(spacing <= 0):
        raise CTError(f"{name} has a non-positive voxel spacing {tuple(spacing)} mm")
    if np.any(spacing > MAX_SPACING_MM):
        raise CTError(f"{name} has voxel spacing {tuple(np.round(spacing, 3))} mm; at most "
                      f"{MAX_SPACING_MM} mm along every axis is supported (too coarse for airways)")
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    lo, hi = stats.GetMinimum(), stats.GetMaximum()
    if image.GetPixelID() in (sitk.sitkUInt8, sitk.sitkInt8) or (lo >= 0 and hi <= 255):
        raise CTError(f"{name} holds values in [{lo:g}, {hi:g}]: an 8-bit picture, "
                      "not a CT in Hounsfield units")
    if lo > AIR_HU:
        raise CTError(f"{name} has no air (minimum {lo:g} > {AIR_HU:g}): not a chest CT in "
                      "Hounsfield units (raw values without rescale slope/intercept?)")


# -- index <-> CT frame --------------------------------------------------------------------------

def _geometry(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    origin = np.asarray(image.GetOrigin(), dtype=float)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return origin, spacing, direction


def index_to_ct(image: sitk.Image, index_kji: np.ndarray) -> np.ndarray:
    """Voxel indices ``(k, j, i)`` (array order, may be fractional) → CT-frame points (m, LPS).

    Parameters
    ----------
    image : SimpleITK.Image
        Gives the geometry (origin, spacing, direction).
    index_kji : ndarray, shape (N, 3) or (3,)
        Continuous voxel indices in numpy array order ``[z, y, x]``.

    Returns
    -------
    ndarray, shape (N, 3)
        Points in the CT frame (m).
    """
    origin, spacing, direction = _geometry(image)
    idx_xyz = np.atleast_2d(np.asarray(index_kji, dtype=float))[:, ::-1]
    return (origin + (idx_xyz * spacing) @ direction.T) / 1000.0


def ct_to_index(image: sitk.Image, points_ct: np.ndarray) -> np.ndarray:
    """Inverse of :func:`index_to_ct`: CT-frame points (m) → continuous indices ``(k, j, i)``."""
    origin, spacing, direction = _geometry(image)
    p_mm = np.atleast_2d(np.asarray(points_ct, dtype=float)) * 1000.0
    idx_xyz = ((p_mm - origin) @ np.linalg.inv(direction).T) / spacing
    return idx_xyz[:, ::-1]


def spacing_m(image: sitk.Image) -> tuple[float, float, float]:
    """Voxel spacing (x, y, z) in metres."""
    return tuple(float(s) / 1000.0 for s in image.GetSpacing())
