"""Bifurcations where the children's axes meet the parent (bronchonav.airway.junctions).

Independent expectations: a Y of two tubes whose lumens merge (no wall between them) has its
bifurcation at the point their axes meet, by construction; the skeleton alone puts it where
the lumens part, about ``r / tan(θ / 2)`` further down. Lines with a known meeting point.
"""

import numpy as np
import pytest
import SimpleITK as sitk

from bronchonav.airway.centerline import extract_tree
from bronchonav.airway.junctions import Axis, nearest_point_to_lines
from bronchonav.geometry.capsule import capsule_distance

RADIUS = 3.0e-3


def _y_mask(angle_deg: float, h: float = 0.5e-3) -> tuple[sitk.Image, list[np.ndarray]]:
    """A parent tube along -z ending at the origin and two children leaving it at
    ±angle/2 in the x-z plane, all of radius RADIUS, as one merged lumen mask (ITK mm)."""
    x = np.arange(-25e-3, 25e-3, h)
    y = np.arange(-8e-3, 8e-3, h)
    z = np.arange(-45e-3, 50e-3, h)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    p = np.stack([xx, yy, zz], -1)
    half = np.radians(angle_deg) / 2
    dirs = [np.array([np.sin(half), 0.0, -np.cos(half)]),
            np.array([-np.sin(half), 0.0, -np.cos(half)])]
    inside = capsule_distance(p, np.array([0.0, 0.0, 45e-3]), np.zeros(3), RADIUS) <= 0
    for d in dirs:
        inside |= capsule_distance(p, np.zeros(3), 40e-3 * d, RADIUS) <= 0
    image = sitk.GetImageFromArray(inside.astype(np.uint8))
    image.SetSpacing((h * 1e3,) * 3)
    image.SetOrigin((x[0] * 1e3, y[0] * 1e3, z[0] * 1e3))
    return image, dirs


@pytest.mark.parametrize("angle_deg", [20.0, 30.0, 45.0, 90.0])
def test_a_merged_y_bifurcates_where_the_axes_meet(angle_deg):
    image, dirs = _y_mask(angle_deg)
    tree = extract_tree(image)
    assert len(tree) == 3
    parent = tree.trachea
    assert np.linalg.norm(parent.end) < 0.5 * RADIUS  # the skeleton alone: 10.5 mm off at 20°
    for child in (tree[c] for c in parent.children):
        assert np.array_equal(child.start, parent.end)
        # the child's first 10 mm leave along its own axis
        along = child.points[np.argmin(np.abs(np.linalg.norm(child.points - child.start,
                                                             axis=1) - 10e-3))]
        u = (along - child.start) / np.linalg.norm(along - child.start)
        assert max(float(u @ d) for d in dirs) > np.cos(np.radians(5.0))


def _axis(point, direction):
    d = np.asarray(direction, float)
    return Axis(np.asarray(point, float), d / np.linalg.norm(d), RADIUS)


def test_lines_that_cross_meet_at_their_crossing_and_skew_lines_halfway():
    crossing = np.array([0.01, -0.02, 0.03])
    lines = [_axis(crossing + 0.05 * np.array([1.0, 0, 0]), [1.0, 0, 0]),
             _axis(crossing - 0.02 * np.array([0, 1.0, 1.0]), [0, 1.0, 1.0])]
    assert np.allclose(nearest_point_to_lines(lines), crossing, atol=1e-12)
    # x axis and a line along y at z = 2 mm: the common perpendicular's middle is (0, 0, 1 mm)
    skew = [_axis([0.0, 0, 0], [1.0, 0, 0]), _axis([0.0, 0, 2e-3], [0, 1.0, 0])]
    assert np.allclose(nearest_point_to_lines(skew), [0, 0, 1e-3], atol=1e-12)


def test_nearly_parallel_children_have_no_meeting_point():
    a = np.radians(5.0)
    lines = [_axis([0.0, 0, 0], [np.sin(a), 0, -np.cos(a)]), _axis([0.0, 0, 0], [0, 0, -1.0])]
    assert nearest_point_to_lines(lines) is None
