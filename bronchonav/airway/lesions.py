"""Lesions for a map: one given by its centre and radius, from a label image, or from a CSV.

Frames and units
----------------
Centres are CT-frame points (LPS, m) and radii in metres. A label image must be on the CT's
grid (the map's lung mask, when it has one, gives that grid); its components are read through
its own geometry, so its orientation does not matter.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk

from bronchonav.airway.tree import AirwayTree, Nodule
from bronchonav.ct.io import index_to_ct
from bronchonav.errors import InputError

CSV_COLUMNS = ("id", "x_m", "y_m", "z_m", "radius_m")
"""Header of a lesion CSV: id, centre (CT frame, m) and radius (m)."""


def nodule_lobe(tree: AirwayTree, center_ct: np.ndarray) -> str | None:
    """Lobe of the labelled branch nearest to a point (CT frame, m); ``None`` if no branch has
    a lobe."""
    labelled = [b for b in tree if b.lobe is not None]
    if not labelled:
        return None
    d = [np.min(np.linalg.norm(b.points - center_ct, axis=1)) for b in labelled]
    return labelled[int(np.argmin(d))].lobe


def make_nodule(nodule_id: str, center_ct, radius_m: float, tree: AirwayTree,
                note: str = "") -> Nodule:
    """A :class:`Nodule` with its lobe from the tree; :class:`InputError` on bad values."""
    center = np.asarray(center_ct, dtype=float).reshape(-1)
    if not nodule_id or not str(nodule_id).strip():
        raise InputError("a nodule needs a non-empty id")
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise InputError(f"nodule {nodule_id}: centre must be three finite numbers (m)")
    if not (np.isfinite(radius_m) and 0 < radius_m <= 0.1):
        raise InputError(f"nodule {nodule_id}: radius {radius_m!r} m is outside (0, 0.1] m")
    return Nodule(str(nodule_id), center, float(radius_m), nodule_lobe(tree, center), note)


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether two images sample the same physical grid (in any orientation of the file)."""
    a, b = sitk.DICOMOrient(a, "LPS"), sitk.DICOMOrient(b, "LPS")
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-3)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-2)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4))


def nodules_from_labels(path: str | Path, tree: AirwayTree, reference: sitk.Image | None,
                        prefix: str = "L") -> list[Nodule]:
    """One nodule per 26-connected component of a label image's nonzero voxels.

    The centre is the component's centroid (CT frame, m), the radius that of the sphere of
    the same volume; ids are ``prefix`` + 1, 2, ... in order of decreasing volume.

    Parameters
    ----------
    path : str or Path
        Label image (NIfTI, NRRD, MHA...) on the CT's grid.
    tree : AirwayTree
        For the lobes.
    reference : SimpleITK.Image or None
        An image on the CT's grid (the map's lung mask); the label image must match it.

    Raises
    ------
    InputError
        Unreadable file, a grid differing from ``reference``, or no labelled voxel.
    """
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"cannot read the label image {path}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path} is not a 3D label image")
    if reference is not None and not _same_grid(image, reference):
        raise InputError(f"{path} is not on the CT's grid (size {image.GetSize()}, spacing "
                         f"{image.GetSpacing()}; the map's CT grid has size "
                         f"{reference.GetSize()}, spacing {reference.GetSpacing()})")
    arr = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{path} holds non-finite values")
    labels, n = cc3d.connected_components(np.ascontiguousarray(arr != 0), connectivity=26,
                                          return_N=True)
    if n == 0:
        raise InputError(f"{path} has no labelled voxel")
    voxel_m3 = float(np.prod(image.GetSpacing())) * 1e-9
    stats = cc3d.statistics(labels)
    order = np.argsort(-stats["voxel_counts"][1:]) + 1
    out = []
    for k, lab in enumerate(order, start=1):
        centroid_kji = np.asarray(stats["centroids"][lab], float)  # array-axis order (z, y, x)
        center = index_to_ct(image, centroid_kji)[0]
        radius = (3.0 * stats["voxel_counts"][lab] * voxel_m3 / (4.0 * np.pi)) ** (1.0 / 3.0)
        out.append(make_nodule(f"{prefix}{k}", center, radius, tree,
                               f"from label image {path.name}"))
    return out


def nodules_from_csv(path: str | Path, tree: AirwayTree) -> list[Nodule]:
    """Nodules from a CSV with the header :data:`CSV_COLUMNS` (CT frame, metres)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the lesion CSV {path}: {exc}") from None
    if not rows or any(c not in header for c in CSV_COLUMNS):
        raise InputError(f"{path} must have the header {','.join(CSV_COLUMNS)} and one lesion "
                         "per row (CT frame, metres)")
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            center = [float(row["x_m"]), float(row["y_m"]), float(row["z_m"])]
            radius = float(row["radius_m"])
        except (TypeError, ValueError):
            raise InputError(f"{path} line {line}: centre and radius must be numbers") from None
        out.append(make_nodule(row["id"], center, radius, tree, f"from {path.name}"))
    return out
