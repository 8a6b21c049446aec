"""The airway lumen as a union of tubes: the one inside-lumen test and the one
"does the catheter fit" predicate.

A tube tree is given by dense centerline samples (points, CT frame, m) with a lumen radius
each; the lumen is the union of the spheres of those radii around the samples (at a 0.5 mm
sample step this is the union of the branch tubes to well under 0.1 mm).

Examples
--------
>>> import numpy as np
>>> from scipy.spatial import cKDTree
>>> centers = np.column_stack([np.zeros(101), np.zeros(101), np.linspace(0, 0.05, 101)])
>>> radii = np.full(101, 0.004)
>>> inside_tubes([[0.003, 0, 0.02], [0.005, 0, 0.02]], cKDTree(centers), radii).tolist()
[True, False]
>>> inside_tubes([[0.005, 0, 0.02]], cKDTree(centers), radii, clearance=-0.002).tolist()
[True]
>>> catheter_fits(np.array([0.002, 0.0015]), catheter_radius=0.00175).tolist()
[True, False]
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

_NEIGHBOURS = 64
"""Samples checked per query point: the nearest 64 within the largest radius."""


def inside_tubes(points, kdtree: cKDTree, radii: np.ndarray, clearance: float = 0.0) -> np.ndarray:
    """Whether each point lies inside the union of the sample spheres, at least ``clearance``
    (m) from their surface.

    Checking the union rather than only the nearest sample matters at bifurcations, where a
    narrow child's axis can be nearer than the wide parent's wall.

    Parameters
    ----------
    points : ndarray, shape (3,) or (K, 3)
        Query points (frame of the samples, m).
    kdtree : scipy.spatial.cKDTree
        Built on the centerline samples (M, 3).
    radii : ndarray, shape (M,)
        Lumen radius at each sample (m).
    clearance : float
        Required depth inside the wall (m); negative values widen the lumen by that much.

    Returns
    -------
    ndarray of bool, shape (K,)
    """
    q = np.atleast_2d(np.asarray(points, dtype=float))
    radii = np.asarray(radii, dtype=float)
    k = min(_NEIGHBOURS, len(radii))
    reach = float(radii.max()) - min(clearance, 0.0)
    d, i = kdtree.query(q, k=k, distance_upper_bound=reach)
    d, i = d.reshape(len(q), k), i.reshape(len(q), k)
    found = i < len(radii)
    r = np.where(found, radii[np.minimum(i, len(radii) - 1)], -np.inf)
    return np.any(found & (d <= r - clearance), axis=1)


def catheter_fits(lumen_radius, catheter_radius: float, clearance: float = 0.0) -> np.ndarray:
    """Whether a catheter of outer radius ``catheter_radius`` (m) passes a lumen of radius
    ``lumen_radius`` (m, scalar or array) with at least ``clearance`` (m) of radial room:
    ``lumen_radius >= catheter_radius + clearance`` (to 1e-12 m)."""
    return np.asarray(lumen_radius, dtype=float) >= catheter_radius + clearance - 1e-12
