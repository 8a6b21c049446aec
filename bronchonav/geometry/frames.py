"""Tangents and parallel-transport frames along a polyline.

One convention everywhere: a frame's **z axis points forward** along the curve (as the
catheter's backbone and the camera's optical axis); x and y carry no twist from one point to
the next (the rotation-minimising, parallel-transport frame). Frames are rotation matrices
(N, 3, 3) whose columns are the frame's x, y, z axes in the curve's frame (e.g. CT, m).

Examples
--------
>>> import numpy as np
>>> pts = [[0, 0, 0], [0, 0, 1.0], [0, 1.0, 2.0]]
>>> F = transport_frames(tangents(pts))
>>> np.round(F[0], 6).tolist()            # starts at the identity for a +z tangent
[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
>>> np.round(F[-1][:, 2], 6).tolist()      # z follows the last tangent
[0.0, 0.707107, 0.707107]
>>> np.round(F[-1][:, 0], 6).tolist()      # x never turned: the bend is about x
[1.0, 0.0, 0.0]
"""

from __future__ import annotations

import numpy as np

from bronchonav.geometry.rotations import rotation_between


def tangents(points) -> np.ndarray:
    """Unit tangents (N, 3) of a polyline (N ≥ 2, 3) by central differences (one-sided at the
    ends: ``numpy.gradient``); a zero difference (repeated point) gives a zero row."""
    t = np.gradient(np.asarray(points, dtype=float).reshape(-1, 3), axis=0)
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def transport_frames(directions, first: np.ndarray | None = None) -> np.ndarray:
    """Parallel-transport frames (N, 3, 3) with z along ``directions`` (N, 3).

    Parameters
    ----------
    directions : ndarray, shape (N, 3)
        Forward directions (need not be unit length); a zero row keeps the previous direction
        (+z for a leading zero row).
    first : ndarray, shape (3, 3), optional
        The first frame; its z axis should be the first direction. By default the shortest
        rotation taking +z to the first direction.

    Returns
    -------
    ndarray, shape (N, 3, 3)
        Frame ``i`` is frame ``i - 1`` turned by the shortest rotation from direction ``i - 1``
        to direction ``i``.
    """
    d = np.asarray(directions, dtype=float).reshape(-1, 3)
    out = np.empty((len(d), 3, 3))
    prev = np.array([0.0, 0.0, 1.0])
    R = None
    for i, v in enumerate(d):
        n = np.linalg.norm(v)
        v = v / n if n > 1e-12 else prev
        if R is None:
            R = np.asarray(first, dtype=float) if first is not None else rotation_between(prev, v)
        else:
            R = rotation_between(prev, v) @ R
        out[i] = R
        prev = v
    return out
