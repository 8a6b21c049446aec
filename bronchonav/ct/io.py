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

import contextlib
import locale
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bronchonav.errors import CTError

MAX_SPACING_MM = 3.0
"""Largest voxel spacing accepted along any axis (mm); coarser scans lose the small airways."""

SERIES_UID_KEY = "0020|000e"
"""Metadata key under which an image read from a DICOM folder carries its series UID."""

GANTRY_TILT_KEY = "0018|1120"
"""Metadata key under which an image read from a tilted DICOM series carries the tilt (degrees)
that :func:`undo_gantry_tilt` took out."""

AIR_HU = -800.0
"""A CT in HU of a chest must contain voxels below this value (air in the lungs and airways)."""


@contextlib.contextmanager
def _keep_locale():
    """Restore the process locale after GDCM (SimpleITK's DICOM I/O), which sets it to "C" and
    so turns Python's default text encoding into ASCII for the rest of the process."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM image series found under a folder.

    Attributes
    ----------
    uid : str
        Its series instance UID (as GDCM groups the files).
    folders : tuple of Path
        The folders holding its files (more than one where an export splits a long series).
    files : tuple of str
        Its slice files, in slice order.
    description : str
        Series description (0008,103E), or "".
    """

    uid: str
    folders: tuple[Path, ...]
    files: tuple[str, ...]
    description: str = ""

    def summary(self, number: int, root: Path) -> str:
        """One line naming the series: its number in a listing, UID, file count, description
        and folders (relative to ``root``)."""
        where = ", ".join(f.relative_to(root).as_posix() for f in self.folders)
        return (f"[{number}] {self.uid} ({len(self.files)} files"
                f"{', ' + self.description if self.description else ''}"
                f"{', in ' + where if where != '.' else ''})")


def _description(path: str) -> str:
    info = sitk.ImageFileReader()
    info.SetFileName(path)
    try:
        info.ReadImageInformation()
        if info.HasMetaDataKey("0008|103e"):
            return info.GetMetaData("0008|103e").strip()
    except RuntimeError:
        pass
    return ""


def dicom_series(folder: str | Path) -> list[DicomSeries]:
    """Every DICOM image series in ``folder`` and its subfolders (as PACS and CD exports nest
    them), in a stable order: by first folder, then UID. A series whose files lie in several
    folders is one series, its files in slice order."""
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    parts: dict[str, list[tuple[Path, tuple[str, ...]]]] = {}
    with _keep_locale():
        for where in sorted([folder, *(p for p in folder.rglob("*") if p.is_dir())]):
            for sid in sorted(reader.GetGDCMSeriesIDs(str(where))):
                files = tuple(reader.GetGDCMSeriesFileNames(str(where), sid))
                parts.setdefault(sid, []).append((where, files))
        found = []
        for sid, where_files in parts.items():
            files = tuple(f for _, fs in where_files for f in fs)
            if len(where_files) > 1:
                files = _in_slice_order(folder, files)
            found.append(DicomSeries(sid, tuple(w for w, _ in where_files), files,
                                     _description(files[0])))
    return found


def _in_slice_order(folder: Path, files) -> tuple[str, ...]:
    """``files`` of one series (under ``folder``) sorted by their position along the slice
    normal; left as they are where that is not defined (a file without position, slices not
    parallel: the read refuses them)."""
    try:
        along = _slice_geometry(folder, files).along_normal
    except CTError:
        return tuple(files)
    return tuple(files[i] for i in np.argsort(along, kind="stable"))


def choose_series(found: list[DicomSeries], folder: Path, series: str | None) -> DicomSeries:
    """The series to read: the only one, or the one ``series`` names (its UID, or its number
    in the listing from 1); anything else is refused with the listing."""
    listed = "; ".join(s.summary(k, folder) for k, s in enumerate(found, start=1))
    if series is None:
        if len(found) == 1:
            return found[0]
        raise CTError(f"CT folder {folder} holds {len(found)} DICOM series; choose one with "
                      f"--series N or its UID (series= in Python): {listed}")
    text = str(series).strip()
    by_uid = [s for s in found if s.uid == text]
    if len(by_uid) == 1:
        return by_uid[0]
    if text.isdigit() and 1 <= int(text) <= len(found):
        return found[int(text) - 1]
    raise CTError(f"no DICOM series {text!r} in {folder} (give its number from 1 to "
                  f"{len(found)} or its UID): {listed}")


@dataclass(frozen=True)
class SliceGeometry:
    """Where the slices of a DICOM series lie (LPS, mm), in file order.

    Attributes
    ----------
    positions : ndarray (N, 3)
        Image position (patient) of each slice: its first pixel's centre.
    row, col : ndarray (3,)
        Unit vectors along a row (the image's i axis) and a column (j).
    """

    positions: np.ndarray
    row: np.ndarray
    col: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the slices (row × col)."""
        return np.cross(self.row, self.col)

    @property
    def along_normal(self) -> np.ndarray:
        """Position (mm) of every slice along the normal."""
        return self.positions @ self.normal

    @property
    def in_plane_offsets(self) -> np.ndarray:
        """(N, 2) offset (mm) of each slice along (row, col) from where it would lie if the
        slices were stacked along their normal from the first: zero but for a gantry tilt."""
        d = self.positions - self.positions[0]
        return np.column_stack([d @ self.row, d @ self.col])


def _slice_geometry(folder: Path, files) -> SliceGeometry:
    """The series' slice positions and orientation; refused where a slice has none or the
    slices are not all parallel."""
    ipps, iops = [], []
    for f in files:
        info = sitk.ImageFileReader()
        info.SetFileName(f)
        try:
            info.ReadImageInformation()
            ipps.append([float(v) for v in info.GetMetaData("0020|0032").split("\\")])
            iops.append([float(v) for v in info.GetMetaData("0020|0037").split("\\")])
        except (RuntimeError, ValueError):
            raise CTError(f"DICOM file {Path(f).name} has no readable image position or "
                          "orientation") from None
    iops = np.asarray(iops, dtype=float)
    if np.abs(iops - iops[0]).max() > 1e-3:
        raise CTError(f"the slices of the DICOM series in {folder} are not parallel (their "
                      "image orientations differ): not one volume")
    row, col = iops[0, :3], iops[0, 3:]
    return SliceGeometry(np.asarray(ipps, dtype=float), row / np.linalg.norm(row),
                         col / np.linalg.norm(col))


def _check_dicom_files(folder: Path, files, geometry: SliceGeometry) -> None:
    """Refuse gaps in the slice positions and slices whose pixel data are cut short."""
    import pydicom

    pos = np.sort(geometry.along_normal)
    if len(pos) >= 3:
        steps = np.diff(pos)
        step = float(np.median(steps))
        if step <= 0:
            raise CTError(f"the DICOM series in {folder} has several slices at one position")
        bad = np.flatnonzero((steps > 1.5 * step) | (steps < 0.5 * step))
        if len(bad):
            i = int(bad[0])
            raise CTError(f"the DICOM series in {folder} misses slices: {len(bad)} gap(s) in "
                          f"the slice positions, the first from {pos[i]:.2f} to "
                          f"{pos[i + 1]:.2f} mm where the spacing is {step:.2f} mm")
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=False)
            need = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8 * \
                int(getattr(ds, "SamplesPerPixel", 1))
            have = len(ds.PixelData)
        except Exception as exc:  # noqa: BLE001 - any failure is a broken slice
            raise CTError(f"DICOM file {Path(f).name} in {folder} is unreadable or truncated "
                          f"({type(exc).__name__})") from None
        compressed = ds.file_meta.TransferSyntaxUID.is_compressed
        if not compressed and have < need:
            raise CTError(f"DICOM file {Path(f).name} in {folder} is truncated: {have} bytes of "
                          f"pixel data for {need} expected")


def _not_a_slice_of(path: Path, uid: str) -> bool:
    """Whether ``path`` is a DICOM file that is plainly not an image slice of series ``uid``:
    a DICOMDIR index, or an object of another series or without pixel data (a dose report, a
    structured report). Files that do not parse as DICOM at all are not excused: they may be
    this series' slices cut short."""
    import pydicom

    if path.name.upper() == "DICOMDIR":
        return True
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - not DICOM, or broken: not excused
        return False
    return str(getattr(ds, "SeriesInstanceUID", "")) != uid or "Rows" not in ds


def _read_dicom_folder(folder: Path, series: str | None = None) -> sitk.Image:
    """Read one DICOM series of ``folder`` or its subfolders (HU, LPS): the only one, or the one
    ``series`` names (:func:`choose_series`)."""
    found = dicom_series(folder)
    if not found:
        if not any(folder.iterdir()):
            raise CTError(f"CT folder {folder} is empty")
        raise CTError(f"CT folder {folder} holds no readable DICOM series")
    chosen = choose_series(found, folder, series)
    files = list(chosen.files)
    paths = {str(Path(f)) for f in files}
    others = sorted(p.relative_to(folder).as_posix() for where in chosen.folders
                    for p in where.iterdir()
                    if p.is_file() and not p.name.startswith(".") and str(p) not in paths
                    and not _not_a_slice_of(p, chosen.uid))
    if others:
        raise CTError(f"{len(others)} file(s) in {folder} are not readable slices of its "
                      f"DICOM series (truncated or corrupt?): {', '.join(others[:5])}")
    geometry = _slice_geometry(folder, files)
    _check_dicom_files(folder, files, geometry)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise CTError(f"cannot read the DICOM series in {folder}: "
                      f"{str(exc).strip().splitlines()[-1]}") from None
    image = undo_gantry_tilt(image, geometry)
    image.SetMetaData(SERIES_UID_KEY, chosen.uid)
    return image


def undo_gantry_tilt(image: sitk.Image, geometry: SliceGeometry) -> sitk.Image:
    """The series ``image`` (as ITK reads it, slices in file order) with every voxel where
    the scan put it, for a series acquired with the gantry tilted.

    A tilted acquisition stacks its slices along the table (z), not along their normal, so each
    slice lies shifted in its own plane from the one before. ITK places slice k at k slice
    steps along the normal, and the volume comes out sheared: 15° of tilt puts a voxel 300 mm
    down the scan 80 mm from where it was. Each slice is shifted back in its plane (linear
    interpolation; what comes in from outside the field takes the scan's lowest value, as
    padding), the slice step is the step along the normal, and the tilt (degrees) is kept
    under :data:`GANTRY_TILT_KEY`. Slices stacked along their normal (within a tenth of a
    pixel over the series) are returned as read.
    """
    from scipy import ndimage

    offsets = geometry.in_plane_offsets  # (N, 2) mm along (row, col)
    dx, dy = image.GetSpacing()[:2]
    if np.abs(offsets / [dx, dy]).max() <= 0.1:
        return image
    along = geometry.along_normal - geometry.along_normal[0]
    step = float(np.median(np.diff(along)))
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(offsets[-1]), abs(along[-1]))))
    arr = sitk.GetArrayFromImage(image)  # [k, j, i]
    pad = float(arr.min())
    out = np.empty_like(arr)
    for k, (a, b) in enumerate(offsets):
        shifted = ndimage.shift(arr[k].astype(np.float32), (b / dy, a / dx), order=1,
                                mode="constant", cval=pad)
        out[k] = np.rint(shifted).astype(arr.dtype)
    fixed = sitk.GetImageFromArray(out)
    normal = geometry.normal * np.sign(step)
    fixed.SetSpacing((dx, dy, abs(step)))
    fixed.SetOrigin(tuple(geometry.positions[0]))
    fixed.SetDirection(tuple(np.column_stack([geometry.row, geometry.col, normal]).ravel()))
    fixed.SetMetaData(GANTRY_TILT_KEY, f"{tilt:.3f}")
    return fixed


def _check_nifti_stream(path: Path) -> None:
    """Refuse a NIfTI file whose (gzip) stream is corrupt or shorter than its header says, or
    whose floating-point voxels include NaN or infinity."""
    import gzip
    import zlib

    import nibabel as nib

    try:
        nifti = nib.load(str(path))
        header = nifti.header
        need = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * \
            int(header.get_data_dtype().itemsize)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on a bad header
        raise CTError(f"cannot read {path}: not a valid NIfTI header ({type(exc).__name__})") \
            from None
    have = 0
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    have += len(chunk)
        except (EOFError, OSError, zlib.error) as exc:
            raise CTError(f"cannot read {path}: the gzip stream is truncated or corrupt "
                          f"({str(exc)[:80]})") from None
    else:
        have = path.stat().st_size
    if have < need:
        raise CTError(f"cannot read {path}: the file is truncated ({have} bytes of {need} the "
                      "header announces)")
    if header.get_data_dtype().kind == "f":  # ITK's reader turns NaN into 0: look ourselves
        bad = int(np.count_nonzero(~np.isfinite(np.asanyarray(nifti.dataobj))))
        if bad:
            raise CTError(f"{path} has {bad} non-finite (NaN or infinite) voxels; a CT in "
                          "Hounsfield units has a finite value everywhere")


def read_ct(path: str | Path, series: str | None = None) -> sitk.Image:
    """Read and check a chest CT: a DICOM series folder, NIfTI, NRRD or MHA/MHD file.

    Parameters
    ----------
    path : str or Path
        A folder holding DICOM series, directly or in subfolders (as exports nest them), or an
        image file.
    series : str, optional
        Which DICOM series to read where the folder holds several (a localizer beside the
        axial reconstructions, say): its series instance UID or its number in the listing
        (from 1; :func:`dicom_series` gives the listing, and a folder with several series read
        without ``series`` is refused with it). Not for an image file.

    Returns
    -------
    SimpleITK.Image
        3D ``int16`` image in Hounsfield units with its true spacing, origin and direction
        (ITK convention: LPS, millimetres).

    Raises
    ------
    CTError
        Missing path, empty folder, several DICOM series and no ``series`` (or one that names
        none of them), missing or truncated DICOM slices, a
        truncated or corrupt (gzip) NIfTI, an unreadable file, or an image that fails
        :func:`check_ct`.
    """
    path = Path(path)
    if not path.exists():
        raise CTError(f"CT path not found: {path}")
    if path.is_dir():
        with _keep_locale():
            image = _read_dicom_folder(path, series)
    elif series is not None:
        raise CTError(f"a DICOM series ({series}) was chosen, but {path} is an image file, not "
                      "a DICOM folder")
    else:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_stream(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise CTError(f"cannot read {path}: unreadable or corrupt image file "
                          f"({str(exc).strip().splitlines()[-1][:120]})") from None
    check_ct(image, str(path))
    if image.GetPixelID() == sitk.sitkInt16:
        return image
    clamped = sitk.Clamp(image, sitk.sitkInt16, -32768, 32767)
    for key in (SERIES_UID_KEY, GANTRY_TILT_KEY):  # what this module noted on the image
        if image.HasMetaDataKey(key):
            clamped.SetMetaData(key, image.GetMetaData(key))
    return clamped


def check_ct(image: sitk.Image, name: str = "image") -> None:
    """Raise :class:`CTError` unless ``image`` looks like a 3D chest CT in Hounsfield units.

    Checks: one scalar component; 3 dimensions with at least 2 voxels along each (a single
    slice is refused); finite values (no NaN); every spacing positive and at most :data:`MAX_SPACING_MM`; intensities
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
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        bad = int(np.count_nonzero(~np.isfinite(sitk.GetArrayViewFromImage(image))))
        if bad:
            raise CTError(f"{name} has {bad} non-finite (NaN or infinite) voxels; a CT in "
                          "Hounsfield units has a finite value everywhere")
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


def write_dicom_series(image: sitk.Image, folder: str | Path, series_uid: str | None = None,
                       description: str = "BronchoNav CT") -> list[Path]:
    """Write a CT (HU) as a DICOM series: one file per axial slice, int16 with rescale 1/0.

    The image is reoriented to LPS index order first, so the slices are axial and the
    Image Position/Orientation (Patient) tags carry its geometry (mm, LPS); reading the folder
    back with :func:`read_ct` gives the same voxels at the same CT-frame points.

    Parameters
    ----------
    image : SimpleITK.Image
        3D CT in HU.
    folder : str or Path
        Output folder (created; files ``slice_0000.dcm`` ...).
    series_uid : str, optional
        Series Instance UID (a new one by default; pass one for reproducible files).

    Returns
    -------
    list of Path
        The files written, from inferior to superior.
    """
    import pydicom.uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = sitk.Cast(sitk.DICOMOrient(image, "LPS"), sitk.sitkInt16)
    series_uid = series_uid or pydicom.uid.generate_uid()
    study_uid = pydicom.uid.generate_uid(entropy_srcs=[series_uid, "study"])
    direction = lps.GetDirection()
    common = [("0008|0060", "CT"), ("0008|103e", description), ("0010|0010", "PHANTOM^CT"),
              ("0010|0020", "BN0001"), ("0020|000d", study_uid), ("0020|000e", series_uid),
              ("0020|0037", "\\".join(f"{v:.6f}" for v in direction[0::3] + direction[1::3])),
              ("0028|1052", "0"), ("0028|1053", "1"), ("0018|0050", f"{lps.GetSpacing()[2]:.4f}")]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    with _keep_locale():
        _write_slices(lps, folder, writer, common, series_uid, paths)
    return paths


def _write_slices(lps, folder: Path, writer, common, series_uid: str, paths: list) -> None:
    """Write each axial slice of ``lps`` as a DICOM file (see :func:`write_dicom_series`)."""
    import pydicom.uid

    for k in range(lps.GetDepth()):
        sl = lps[:, :, k]
        for key, value in common:
            sl.SetMetaData(key, value)
        position = lps.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.4f}" for v in position))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", pydicom.uid.generate_uid(entropy_srcs=[series_uid, str(k)]))
        path = folder / f"slice_{k:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(sl)
        paths.append(path)
