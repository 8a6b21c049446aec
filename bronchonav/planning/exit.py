"""Exit point and tool path: reach, angle and the pleura check.

The tool (needle, biopsy forceps) leaves the catheter at an exit point on an airway centerline
and travels straight to the lesion centre. Coordinates in the CT frame (LPS, m), angles in rad.
"""

from __future__ import annotations

import numpy as np

from bronchonav.errors import InputError
from bronchonav.geometry import VoxelGrid


def tool_geometry(exit_points: np.ndarray, exit_tangents: np.ndarray, center: np.ndarray):
    """Length and angle of the straight tool paths from exit points to a lesion centre.

    Parameters
    ----------
    exit_points : ndarray, shape (M, 3)
        Candidate exit points, CT frame (m).
    exit_tangents : ndarray, shape (M, 3)
        Unit airway directions (distal) at the exit points.
    center : ndarray, shape (3,)
        Lesion centre, CT frame (m).

    Returns
    -------
    length : ndarray, shape (M,)
        Tool path length (m).
    angle : ndarray, shape (M,)
        Angle between the tool path and the airway direction (rad, in [0, pi]); 0 where the
        exit point is the lesion centre.
    """
    d = np.asarray(center, dtype=float)[None, :] - exit_points
    length = np.linalg.norm(d, axis=1)
    cosang = np.einsum("ij,ij->i", d, exit_tangents) / np.maximum(length, 1e-12)
    angle = np.where(length > 1e-9, np.arccos(np.clip(cosang, -1.0, 1.0)), 0.0)
    return length, angle


class LungRegion:
    """Lung labels (0 outside, 1 right, 2 left) looked up at CT-frame points.

    Built from the map's SimpleITK lung mask (geometry in millimetres, as SimpleITK stores it;
    :meth:`bronchonav.geometry.VoxelGrid.from_image` converts to metres).

    Parameters
    ----------
    image : SimpleITK.Image
        Integer label image with its origin, spacing and direction (LPS).
    """

    def __init__(self, image) -> None:
        import SimpleITK as sitk

        self.labels = sitk.GetArrayFromImage(image)  # (z, y, x)
        if self.labels.ndim != 3:
            raise InputError("lung mask must be a 3D image")
        self.grid = VoxelGrid.from_image(image)

    def label_at(self, points_ct: np.ndarray) -> np.ndarray:
        """Label at each point (nearest voxel), 0 outside the image. Points (K, 3) in m."""
        return self.grid.lookup(self.labels, points_ct, fill=0)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounding box (min, max) of the labelled voxels, CT frame (m)."""
        lung = self.labels > 0
        ranges = []
        for axis in (2, 1, 0):  # x, y, z index ranges of the lung voxels
            hit = np.flatnonzero(lung.any(axis=tuple(a for a in range(3) if a != axis)))
            if not hit.size:
                raise InputError("lung mask has no lung voxels")
            ranges.append((hit[0], hit[-1]))
        corners_xyz = np.array(np.meshgrid(*ranges, indexing="ij"), dtype=float).reshape(3, -1).T
        pts = self.grid.index_to_ct(corners_xyz[:, ::-1])
        return pts.min(axis=0), pts.max(axis=0)


def pleura_crossing(start: np.ndarray, end: np.ndarray, lung: LungRegion, in_lumen,
                    step: float = 5e-4) -> float:
    """Length of the tool path that lies outside the lesion's lung (m); 0 when it stays inside.

    A point of the path counts as inside when it is in the same lung as the lesion centre, or
    inside the airway lumen (``in_lumen(points) -> bool array``), where the tool starts.

    Parameters
    ----------
    start, end : ndarray, shape (3,)
        Exit point and lesion centre, CT frame (m).
    lung : LungRegion
        Lung labels.
    in_lumen : callable
        Lumen membership test on (K, 3) CT-frame points.
    step : float
        Sampling step along the path (m).
    """
    length = float(np.linalg.norm(end - start))
    n = max(int(np.ceil(length / step)), 1) + 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = start[None, :] * (1.0 - t) + end[None, :] * t
    lesion_label = lung.label_at(end[None])[0]
    labels = lung.label_at(pts)
    ok = (labels == lesion_label) & (labels > 0) if lesion_label > 0 else labels > 0
    bad = ~ok
    if bad.any():
        bad &= ~in_lumen(pts)
    return float(bad.sum()) * length / max(n - 1, 1)
