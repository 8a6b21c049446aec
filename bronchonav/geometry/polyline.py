"""A 3-D polyline parametrised by arc length: projection, interpolation, tangents.

Examples
--------
>>> import numpy as np
>>> line = Polyline([[0, 0, 0], [0, 0, 1.0], [1.0, 0, 1.0]])
>>> float(line.length)
2.0
>>> p = line.project([0.5, 0.2, 1.0])
>>> round(p.s, 6), round(p.distance, 6)
(1.5, 0.2)
>>> line.point_at(0.25).tolist()
[0.0, 0.0, 0.25]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class Projection:
    """The point of a polyline nearest to a query point.

    Attributes
    ----------
    s : float
        Arc length of the nearest point from the first vertex (m).
    distance : float
        Distance from the query point to it (m).
    point : ndarray, shape (3,)
        The nearest point (same frame as the polyline).
    segment : int
        Index of the segment holding it (``points[segment]`` → ``points[segment + 1]``).
    """

    s: float
    distance: float
    point: np.ndarray
    segment: int


def arc_length(points) -> np.ndarray:
    """Cumulative arc length (N,) (m) at each vertex of a polyline (N, 3), from 0 at the first.

    >>> arc_length([[0, 0, 0], [3.0, 4.0, 0], [3.0, 4.0, 1.0]]).tolist()
    [0.0, 5.0, 6.0]
    """
    seg = np.linalg.norm(np.diff(np.asarray(points, dtype=float).reshape(-1, 3), axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)])


class Polyline:
    """Vertices ``points`` (N ≥ 2, m) with cumulative arc length ``s`` (m).

    Zero-length segments are kept; they never win a projection against a neighbour.
    """

    def __init__(self, points) -> None:
        pts = np.asarray(points, dtype=float).reshape(-1, 3)
        if len(pts) < 2:
            raise ValueError("a polyline needs at least 2 points")
        if not np.all(np.isfinite(pts)):
            raise ValueError("polyline points must be finite")
        self.points = pts
        self.s = arc_length(pts)

    @property
    def length(self) -> float:
        """Total arc length (m)."""
        return float(self.s[-1])

    @cached_property
    def _seg(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = self.points[:-1]
        d = self.points[1:] - a
        dd = np.einsum("ij,ij->i", d, d)
        return a, d, dd

    def project(self, p) -> Projection:
        """Nearest point of the polyline to ``p`` (3,)."""
        d_all, t, q = self._project_many(np.asarray(p, dtype=float).reshape(1, 3))
        i = int(np.argmin(d_all[0]))
        seg_len = self.s[i + 1] - self.s[i]
        return Projection(float(self.s[i] + t[0, i] * seg_len), float(d_all[0, i]),
                          q[0, i].copy(), i)

    def distance(self, points) -> np.ndarray:
        """Distance (m) from each of ``points`` (K, 3) to the polyline, shape (K,)."""
        d_all, _, _ = self._project_many(np.atleast_2d(np.asarray(points, dtype=float)))
        return d_all.min(axis=1)

    def _project_many(self, q: np.ndarray):
        a, d, dd = self._seg
        rel = q[:, None, :] - a[None]
        t = np.where(dd > 0, np.einsum("kij,ij->ki", rel, d) / np.maximum(dd, 1e-300), 0.0)
        t = np.clip(t, 0.0, 1.0)
        foot = a[None] + t[..., None] * d[None]
        dist = np.linalg.norm(foot - q[:, None, :], axis=2)
        return dist, t, foot

    def point_at(self, s) -> np.ndarray:
        """Point(s) at arc length ``s`` (m), clamped to the ends: shape (3,) or (K, 3)."""
        s_arr = np.clip(np.asarray(s, dtype=float), 0.0, self.length)
        out = np.stack([np.interp(s_arr, self.s, self.points[:, k]) for k in range(3)], axis=-1)
        return out

    def first_at_distance(self, q, r: float, s_from: float = 0.0) -> float:
        """Arc length (m) of the first point at or beyond ``s_from`` that lies ``r`` (m) or
        farther from ``q`` (3,): where the polyline leaves the ball of radius ``r`` around
        ``q``, as pure pursuit chooses its goal; the length where it never does.

        The squared distance along a segment is a convex quadratic, so it exceeds ``r`` inside a
        segment only if it does at the segment's far end: the crossing lies on the segment ending
        at the first such vertex, and is solved there exactly.

        >>> u_turn = Polyline([[0, 0, 0], [0, 0, -10], [4, 0, -10], [4, 0, 0]])
        >>> u_turn.first_at_distance([0, 0, -8], 5.0, s_from=8.0)  # up the far leg, not 13
        19.0
        """
        q = np.asarray(q, dtype=float)
        s_from = float(np.clip(s_from, 0.0, self.length))
        if np.linalg.norm(self.point_at(s_from) - q) >= r:
            return s_from
        beyond = np.flatnonzero(self.s > s_from)
        far = beyond[np.linalg.norm(self.points[beyond] - q, axis=1) >= r]
        if len(far) == 0:
            return self.length
        i = int(far[0])  # the crossing lies on the segment (i - 1, i), after s_from
        s0 = max(float(self.s[i - 1]), s_from)
        a = self.point_at(s0)
        d = self.points[i] - a
        # |a + t d - q|² = r², the root in (0, 1]: t² dd + 2 t d·(a-q) + |a-q|² - r² = 0
        dd, b, c = float(d @ d), float(d @ (a - q)), float((a - q) @ (a - q)) - r * r
        t = (-b + np.sqrt(max(b * b - dd * c, 0.0))) / dd
        return s0 + float(np.clip(t, 0.0, 1.0)) * (float(self.s[i]) - s0)

    def tangent_at(self, s: float) -> np.ndarray:
        """Unit tangent (3,) of the segment at arc length ``s`` (m), clamped to the ends."""
        s = float(np.clip(s, 0.0, self.length))
        i = int(np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.points) - 2))
        d = self.points[i + 1] - self.points[i]
        while np.linalg.norm(d) == 0 and i > 0:
            i -= 1
            d = self.points[i + 1] - self.points[i]
        n = np.linalg.norm(d)
        return d / n if n > 0 else np.array([0.0, 0.0, 1.0])

    def head(self, s: float) -> "Polyline":
        """The polyline from its start to arc length ``s`` (m; clamped to the length), ending
        exactly there.

        >>> Polyline([[0, 0, 0], [0, 0, 2], [0, 0, 4]]).head(3.0).points[:, 2].tolist()
        [0.0, 2.0, 3.0]
        """
        s = float(np.clip(s, 0.0, self.length))
        return Polyline(np.vstack([self.points[self.s < s], self.point_at(s)]))

    def resample(self, step: float) -> "Polyline":
        """The same curve with vertices ``step`` (m) apart or closer (equal parts)."""
        return Polyline(resample_polyline(self.points, np.zeros(len(self.points)), step).points)


class Resampled(NamedTuple):
    """A polyline and per-vertex values resampled at a uniform arc-length step."""

    points: np.ndarray
    """(M, 3) vertices (m, frame of the input)."""
    values: np.ndarray
    """(M,) or (M, K) values interpolated linearly in arc length."""
    s: np.ndarray
    """(M,) arc length of each vertex from the first (m)."""


def resample_polyline(points, values, step: float) -> Resampled:
    """Resample a polyline (N ≥ 2, 3) and per-vertex ``values`` ((N,) or (N, K)) every ``step``
    metres or closer: the length is cut into ``ceil(length / step)`` equal parts, so both ends
    are kept.

    >>> r = resample_polyline([[0, 0, 0], [0, 0, 1.0]], [1.0, 3.0], 0.4)
    >>> r.s.tolist(), r.values.tolist()
    ([0.0, 0.3333333333333333, 0.6666666666666666, 1.0], [1.0, 1.6666666666666665, 2.333333333333333, 3.0])
    """
    line = Polyline(points)
    n = max(int(np.ceil(line.length / step)), 1) + 1
    s = np.linspace(0.0, line.length, n)
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        out_v = np.interp(s, line.s, values)
    else:
        out_v = np.column_stack([np.interp(s, line.s, values[:, k]) for k in range(values.shape[1])])
    return Resampled(line.point_at(s), out_v, s)


class Line(NamedTuple):
    """A straight line (frame of the points it was fitted to)."""

    origin: np.ndarray
    """(3,) a point on it: the centroid of the fitted points (m)."""
    direction: np.ndarray
    """(3,) unit vector, pointing from the first fitted point's end towards the last's."""


def fit_line(points) -> Line:
    """The least-squares (total, orthogonal) line through ``points`` (N ≥ 2, 3), directed from
    the first point towards the last.

    >>> line = fit_line([[0, 0, 3.0], [0, 0, 2.0], [0, 0, 1.0]])
    >>> line.origin.tolist(), bool(np.allclose(line.direction, [0, 0, -1]))
    ([0.0, 0.0, 2.0], True)
    """
    pts = np.asarray(points, dtype=float)
    origin = pts.mean(axis=0)
    direction = np.linalg.svd(pts - origin, full_matrices=False)[2][0]
    if direction @ (pts[-1] - pts[0]) < 0:
        direction = -direction
    return Line(origin, direction)
