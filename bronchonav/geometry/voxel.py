"""Voxel indices ↔ CT-frame points, in metres.

A :class:`VoxelGrid` holds a volume's origin and spacing in metres and its direction cosines.
Indices are in numpy array order ``(k, j, i)`` = ``(z, y, x)``, as ``SimpleITK.GetArrayFromImage``
returns them. SimpleITK images store millimetres; :meth:`VoxelGrid.from_image` converts once,
so nothing downstream guesses the unit.

Examples
--------
>>> import numpy as np
>>> grid = VoxelGrid(origin_m=[0.01, 0.0, 0.0], spacing_m=[1e-3, 1e-3, 2e-3])
>>> grid.index_to_ct([[1, 2, 3]]).round(9).tolist()     # k=1 (z), j=2 (y), i=3 (x)
[[0.013, 0.002, 0.002]]
>>> grid.ct_to_index([0.013, 0.002, 0.002]).round(9).tolist()
[[1.0, 2.0, 3.0]]
>>> volume = np.arange(8).reshape(2, 2, 2)
>>> grid.lookup(volume, [[0.011, 0.001, 0.002], [1.0, 0, 0]]).tolist()   # outside → fill
[7, 0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VoxelGrid:
    """Geometry of a 3-D volume in the CT frame.

    Attributes
    ----------
    origin_m : ndarray, shape (3,)
        CT-frame position of voxel (0, 0, 0)'s centre (m).
    spacing_m : ndarray, shape (3,)
        Voxel size along the image's x, y, z axes (m).
    direction : ndarray, shape (3, 3)
        Columns are the image's x, y, z axes in the CT frame (orthonormal).
    """

    origin_m: np.ndarray
    spacing_m: np.ndarray
    direction: np.ndarray = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin_m", np.asarray(self.origin_m, dtype=float).reshape(3))
        object.__setattr__(self, "spacing_m", np.asarray(self.spacing_m, dtype=float).reshape(3))
        direction = np.eye(3) if self.direction is None else self.direction
        object.__setattr__(self, "direction", np.asarray(direction, dtype=float).reshape(3, 3))
        if np.any(self.spacing_m <= 0):
            raise ValueError(f"voxel spacing must be positive, got {self.spacing_m.tolist()} m")

    @classmethod
    def from_image(cls, image) -> "VoxelGrid":
        """The grid of a SimpleITK image, whose origin and spacing are in millimetres."""
        return cls(np.asarray(image.GetOrigin(), dtype=float) * 1e-3,
                   np.asarray(image.GetSpacing(), dtype=float) * 1e-3,
                   np.asarray(image.GetDirection(), dtype=float).reshape(3, 3))

    def index_to_ct(self, index_kji) -> np.ndarray:
        """Continuous indices (N, 3) or (3,) in ``(k, j, i)`` order → CT-frame points (N, 3) (m)."""
        idx_xyz = np.atleast_2d(np.asarray(index_kji, dtype=float))[:, ::-1]
        return self.origin_m + (idx_xyz * self.spacing_m) @ self.direction.T

    def ct_to_index(self, points_ct) -> np.ndarray:
        """CT-frame points (N, 3) or (3,) (m) → continuous indices (N, 3) in ``(k, j, i)`` order."""
        p = np.atleast_2d(np.asarray(points_ct, dtype=float))
        idx_xyz = ((p - self.origin_m) @ np.linalg.inv(self.direction).T) / self.spacing_m
        return idx_xyz[:, ::-1]

    def lookup(self, volume: np.ndarray, points_ct, fill=0) -> np.ndarray:
        """Value of ``volume`` (array order (z, y, x)) at the voxel nearest each CT-frame point
        (N, 3) (m); ``fill`` where the point falls outside the volume."""
        kji = np.rint(self.ct_to_index(points_ct)).astype(np.int64)
        inside = np.all((kji >= 0) & (kji < np.array(volume.shape)), axis=1)
        out = np.full(len(kji), fill, dtype=volume.dtype)
        k = kji[inside]
        out[inside] = volume[k[:, 0], k[:, 1], k[:, 2]]
        return out
