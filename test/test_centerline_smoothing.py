"""Centerlines and radii smoothed at the scale of the lumen (centerline.smooth_at_lumen_scale).

Independent expectations: a straight airway with voxel-scale zig-zag comes out straight; a
bend of a radius much larger than the lumen keeps its shape (a Gaussian of sigma s moves a
circle of radius R inwards by about s^2 / (2 R)); the ends never move.
"""

import numpy as np

from bronchonav.airway.centerline import smooth_at_lumen_scale
from bronchonav.airway.tree import Branch

STEP = 0.7e-3  # skeleton voxel (m)
LUMEN = 2.0e-3  # lumen radius (m)


def _zigzag(n=60, amplitude=0.35e-3):
    s = np.arange(n) * STEP
    wiggle = amplitude * (-1.0) ** np.arange(n)
    wiggle[0] = wiggle[-1] = 0.0
    return np.column_stack([wiggle, np.zeros(n), -s])


def test_a_straight_airway_with_voxel_zigzag_comes_out_straight_with_its_ends_fixed():
    points = _zigzag()
    radii = LUMEN + 0.3e-3 * (-1.0) ** np.arange(len(points))  # radius scatter of a voxel
    out = smooth_at_lumen_scale(Branch(3, 1, 2, points, radii), 1.0)
    assert np.array_equal(out.points[0], points[0]) and np.array_equal(out.points[-1], points[-1])
    middle = slice(10, -10)  # two sigmas from the ends, where the blend is complete
    assert np.abs(out.points[middle, 0]).max() < 0.02e-3  # was 0.35 mm
    assert np.abs(out.radii[middle] - LUMEN).max() < 0.05e-3  # was 0.3 mm
    assert (out.id, out.parent, out.generation) == (3, 1, 2)


def test_a_wide_bend_keeps_its_shape():
    bend = 30e-3  # radius of the bend (m): 15 lumen radii
    angle = np.arange(0, 60) * STEP / bend
    points = np.column_stack([bend * (1 - np.cos(angle)), np.zeros(len(angle)),
                              -bend * np.sin(angle)])
    out = smooth_at_lumen_scale(Branch(1, 0, 1, points, np.full(len(points), LUMEN)), 1.0)
    centre = np.array([bend, 0.0, 0.0])
    inward = bend - np.linalg.norm(out.points - centre, axis=1)
    assert inward.max() < LUMEN ** 2 / bend  # 2x the s^2 / (2R) of a Gaussian: 0.13 mm
    assert inward.min() > -1e-9  # never outwards


def test_no_smoothing_leaves_the_branch_alone():
    branch = Branch(1, 0, 1, _zigzag(), np.full(60, LUMEN))
    assert smooth_at_lumen_scale(branch, 0.0) is branch
