"""Lumen surface of an airway tree's tube model: the union of its branches' capsules.

Each centerline segment of radius ``r`` contributes the signed distance ``dist(p, segment) - r``
(a capsule); the surface is the zero level of the minimum over all segments, contoured by
marching cubes. This is the ground-truth geometry of a tree given only by centerlines and
radii (CT frame, m) — useful to render a tree that has no segmented mesh and to check the camera
against exact tube geometry.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import marching_cubes

from bronchonav.airway.tree import AirwayTree
from bronchonav.errors import InputError
from bronchonav.geometry import capsule_distance, resample_polyline


def tube_mesh(tree: AirwayTree, spacing: float = 5e-4, step: float = 2e-3,
              margin: float = 2e-3, open_root: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh of the union of the tree's capsules.

    Parameters
    ----------
    tree : AirwayTree
        Centerlines and radii, CT frame (m).
    spacing : float
        Grid spacing of the distance field (m); the surface error is well below it.
    step : float
        Centerline resampling step for the capsule segments (m).
    margin : float
        Grid margin around the tubes (m).
    open_root : bool
        Cut the grid at the trachea's proximal end so the tube is open there, as in a CT whose
        top slice crosses the trachea.

    Returns
    -------
    vertices : ndarray, shape (V, 3)
        CT frame (m).
    triangles : ndarray of int, shape (F, 3)
    """
    if spacing <= 0 or step <= 0:
        raise InputError("tube_mesh needs positive spacing and step")
    segments = []
    for b in tree:
        p, r, _ = resample_polyline(b.points, b.radii, step)
        for i in range(len(p) - 1):
            segments.append((p[i], p[i + 1], max(r[i], r[i + 1])))
    lo = np.min([np.minimum(a, c) - rad for a, c, rad in segments], axis=0) - margin
    hi = np.max([np.maximum(a, c) + rad for a, c, rad in segments], axis=0) + margin
    shape = np.ceil((hi - lo) / spacing).astype(int) + 1
    axes = [lo[k] + spacing * np.arange(shape[k]) for k in range(3)]
    sdf = np.full(shape, np.inf, dtype=np.float32)
    for a, c, rad in segments:
        blo = np.maximum(((np.minimum(a, c) - rad - 2 * spacing - lo) / spacing).astype(int), 0)
        bhi = np.minimum(((np.maximum(a, c) + rad + 2 * spacing - lo) / spacing).astype(int) + 2,
                         shape)
        grid = np.stack(np.meshgrid(*[axes[k][blo[k]:bhi[k]] for k in range(3)], indexing="ij"),
                        axis=-1)
        d = capsule_distance(grid, a, c, rad).astype(np.float32)
        view = sdf[blo[0]:bhi[0], blo[1]:bhi[1], blo[2]:bhi[2]]
        np.minimum(view, d, out=view)
    sdf[~np.isfinite(sdf)] = 1.0
    mask = None
    if open_root:
        root = tree.trachea
        axis = (root.points[1] - root.points[0]) / np.linalg.norm(root.points[1] - root.points[0])
        height = sum(((axes[k] - root.start[k]) * axis[k]).astype(np.float32).reshape(
            [-1 if j == k else 1 for j in range(3)]) for k in range(3))
        mask = np.broadcast_to(height >= 0, shape)
    verts, faces, _, _ = marching_cubes(sdf, level=0.0, spacing=(spacing,) * 3,
                                        allow_degenerate=False, mask=mask)
    return verts + lo, faces.astype(np.int64)
