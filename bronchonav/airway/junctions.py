"""Bifurcations where the child airways' axes meet the parent, not where their lumens part.

Where two children leave their parent at a small angle, their lumens touch for a distance of
about ``r / tan(θ / 2)`` (``r`` the lumen radius, ``θ`` the angle between them: 16 mm for
3.5 mm radii at 25°) unless the wall between them is resolved — and on thick slices or coarse
pixels it is not. The skeleton of such a merged lumen runs along the bisector and splits only
where the lumens part, so the bifurcation comes out that far down the parent, and the first
stretch of each child leaves it at the wrong angle.

:func:`relocate_junctions` moves such a bifurcation back to the point of the parent's
centerline nearest to where the children's axes — straight lines fitted to each child just
below the skeleton's junction — meet, and starts each child there. It leaves a bifurcation
alone when the axes do not meet within the parent's lumen, when the children are too close to
parallel for their meeting point to be defined, or when it would move forward or take most of
the parent away.

Frames and units: CT frame (LPS), metres.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bronchonav.airway.tree import Branch
from bronchonav.geometry.polyline import Polyline, arc_length, fit_line

MIN_ANGLE_RAD = np.radians(12.0)
"""Children closer to parallel than this (pairwise) give no meeting point."""
AXIS_WINDOW_RADII = (1.0, 4.0)
"""The stretch of a child its axis is fitted on: from 1 to 4 of its lumen radii below the
skeleton's junction (at least 4 mm long, at most 70 % of the child)."""
MIN_WINDOW_M = 4.0e-3
MIN_MOVE_M = 1.0e-3
"""Moves shorter than this are left alone (within the skeleton's own scatter)."""
KEEP_PARENT_FRACTION = 0.2
"""A bifurcation is not moved back into the first 20 % of its parent."""
ON_AXIS_RADII = 0.25
"""A moved child's leading points farther than this many of its radii from its axis (the
skeleton bending from the bisector onto the axis) are dropped."""


@dataclass(frozen=True)
class Axis:
    """A straight line fitted to the start of a child branch (CT frame, m)."""

    origin: np.ndarray
    direction: np.ndarray
    """Unit vector, pointing away from the bifurcation."""
    radius: float
    """Median lumen radius of the child (m)."""

    def distance(self, points) -> np.ndarray:
        """Distance (m) of each of ``points`` (K, 3) to the line."""
        rel = np.atleast_2d(points) - self.origin
        return np.linalg.norm(rel - np.outer(rel @ self.direction, self.direction), axis=1)


def child_axis(child: Branch) -> Axis | None:
    """The axis of ``child`` just below its start, or None where the child is too short."""
    r = float(np.median(child.radii))
    s = arc_length(child.points)
    lo = AXIS_WINDOW_RADII[0] * r
    hi = min(max(AXIS_WINDOW_RADII[1] * r, lo + MIN_WINDOW_M), 0.7 * s[-1])
    pts = child.points[(s >= lo) & (s <= hi)]
    if len(pts) < 3 or hi - lo < 0.5 * MIN_WINDOW_M:
        return None
    line = fit_line(pts)
    return Axis(line.origin, line.direction, r)


def nearest_point_to_lines(axes: list[Axis]) -> np.ndarray | None:
    """The point with the least summed squared distance to the lines, or None when two of
    them are closer to parallel than :data:`MIN_ANGLE_RAD` (no meeting point)."""
    dirs = np.array([a.direction for a in axes])
    cos = np.abs(dirs @ dirs.T)[np.triu_indices(len(axes), 1)]
    if np.any(cos > np.cos(MIN_ANGLE_RAD)):
        return None
    projectors = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]
    return np.linalg.solve(projectors.sum(axis=0),
                           np.einsum("kij,kj->i", projectors, np.array([a.origin for a in axes])))


def relocate_junctions(branches: list[Branch]) -> list[Branch]:
    """The tree's branches with each bifurcation moved back to where its children's axes meet
    the parent (see the module docstring); ids, parents and generations are unchanged, and
    each child still starts exactly at its parent's last point.

    Bifurcations are taken from the trachea down, so a child's axis is fitted after its own
    start has moved.
    """
    out = {b.id: replace(b, points=b.points.copy(), radii=b.radii.copy()) for b in branches}
    children: dict[int, list[int]] = {}
    for b in branches:
        if b.parent is not None:
            children.setdefault(b.parent, []).append(b.id)
    for b in branches:
        kids = [out[c] for c in children.get(b.id, [])]
        if len(kids) >= 2:
            _relocate(out[b.id], kids)
    return [out[b.id] for b in branches]


def _relocate(parent: Branch, kids: list[Branch]) -> None:
    """Move the bifurcation at the end of ``parent`` (in place, with its ``kids``) to the point
    of the parent's centerline nearest to where the kids' axes meet, when that point lies
    within the parent's end radius of both the centerline and every axis, at least
    :data:`MIN_MOVE_M` back and beyond :data:`KEEP_PARENT_FRACTION` of the parent."""
    axes = [child_axis(c) for c in kids]
    if any(a is None for a in axes):
        return
    meet = nearest_point_to_lines(axes)
    if meet is None:
        return
    line = Polyline(parent.points)
    at = line.project(meet)
    r_end = float(parent.radii[-1])
    spread = max(a.distance(meet)[0] for a in axes)
    if (at.distance > r_end or spread > r_end or line.length - at.s < MIN_MOVE_M
            or at.s < KEEP_PARENT_FRACTION * line.length):
        return
    r_at = float(np.interp(at.s, line.s, parent.radii))
    keep = at.segment + 1 if line.s[at.segment] < at.s else at.segment  # no repeated point
    parent.points = np.vstack([parent.points[:keep], at.point])
    parent.radii = np.append(parent.radii[:keep], r_at)
    for child, axis in zip(kids, axes):
        off = axis.distance(child.points) > ON_AXIS_RADII * axis.radius
        first = int(np.argmin(off)) if not off.all() else 1
        first = min(max(first, 1), len(child.points) - 1)
        child.points = np.vstack([at.point, child.points[first:]])
        child.radii = np.append(child.radii[first], child.radii[first:])
