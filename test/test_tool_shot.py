"""The tool advanced from the tip: its end and the in-lesion verdict against closed forms."""

import math

import numpy as np
import pytest

from bronchonav.navigation.tool import advance_tool


def _tip(p, yaw):
    """A tip at ``p`` whose axis (z) is turned by ``yaw`` about y from +z towards +x."""
    T = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    T[:3, 3] = p
    return T


def test_the_tool_leaves_along_the_tip_axis_by_its_length():
    T = _tip([0.01, 0.02, 0.03], math.radians(90))  # axis along +x
    shot = advance_tool(T, 0.03, [0.04, 0.024, 0.03], 0.005)
    np.testing.assert_allclose(shot.end_ct, [0.04, 0.02, 0.03], atol=1e-12)
    assert shot.miss_m == pytest.approx(0.004) and shot.in_lesion
    assert not advance_tool(T, 0.03, [0.04, 0.024, 0.03], 0.0039).in_lesion


def test_a_tip_turned_away_misses_by_the_chord():
    # the lesion 30 mm straight ahead of an untilted tip; the tip turned by a: the end lies on
    # a circle of 30 mm about the tip, 2 * 30 mm * sin(a / 2) from the centre
    for deg in (0, 5, 20, 90):
        a = math.radians(deg)
        shot = advance_tool(_tip([0, 0, 0], a), 0.03, [0, 0, 0.03], 0.01)
        assert shot.miss_m == pytest.approx(2 * 0.03 * math.sin(a / 2), abs=1e-12)
        assert shot.in_lesion == (2 * 0.03 * math.sin(a / 2) <= 0.01)


def test_the_planned_tool_length_is_the_straight_way_from_the_exit_point_to_the_centre():
    from bronchonav.geometry import Polyline
    from bronchonav.navigation import RouteTarget
    from bronchonav.navigation.tool import planned_tool_length

    exit_point, centre = np.array([0.01, 0.0, 0.0]), np.array([0.013, 0.004, 0.0])
    assert planned_tool_length(exit_point, centre) == pytest.approx(0.005, abs=1e-15)
    path = Polyline(np.array([[0.0, 0.0, 0.0], exit_point]))
    assert RouteTarget(path, (0,), centre).tool_length == pytest.approx(0.005, abs=1e-15)
    assert RouteTarget(path, (0,)).tool_length == 0.0
