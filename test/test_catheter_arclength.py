"""Pseudo-arclength continuation round folds (bronchonav.catheter.arclength), on paths whose
folds and far branches are known in closed form."""

import time

import numpy as np
import pytest

from bronchonav.catheter.arclength import (CHORD_ITERATIONS, CORRECTOR_ITERATIONS,
                                           trace_past_fold)


def s_curve(y):
    """``w = x³ - 3x``: limit points at (x, w) = (-1, 2) and (1, -2)."""
    x, w = y
    return np.array([x ** 3 - 3.0 * x - w])


def test_the_trace_follows_an_s_curve_round_both_folds_to_the_far_branch():
    x0 = -2.1
    path = trace_past_fold(s_curve, np.array([x0, x0 ** 3 - 3 * x0]), 2.5)
    assert path.passed and path.turned and path.reason == "passed"
    assert path.y[1] == 2.5  # exactly at the target, for a plain solve there
    far = max(r.real for r in np.roots([1.0, 0.0, -3.0, -2.5]) if abs(r.imag) < 1e-12)
    # interpolated between two points of the path 0.2 apart at most: close to the root
    assert path.y[0] == pytest.approx(far, abs=2e-2)
    assert path.y[0] > 1.0  # beyond the second fold, not on the branch it started on


def test_every_accepted_point_is_on_the_path_and_the_path_turns_at_the_limit_points():
    points = []
    trace_past_fold(s_curve, np.array([-2.1, -2.961]), 2.5, accepted=points.append)
    points = np.array(points)
    assert np.max(np.abs(points[:, 0] ** 3 - 3 * points[:, 0] - points[:, 1])) < 1e-7
    # it climbs to the first limit point (w = 2 at x = -1), comes back down to the second
    # (w = -2 at x = 1), and climbs again; steps of at most 0.2 straddle each, so a point lies
    # within 0.1 of each limit point in x, where w is within 3·0.1² = 0.03 of it
    left = points[points[:, 0] < 0]
    top = int(np.argmax(left[:, 1]))
    assert left[top, 1] == pytest.approx(2.0, abs=0.035)
    assert left[top, 0] == pytest.approx(-1.0, abs=0.15)
    right = points[points[:, 0] > 0]
    low = int(np.argmin(right[:, 1]))
    assert right[low, 1] == pytest.approx(-2.0, abs=0.035)
    assert right[low, 0] == pytest.approx(1.0, abs=0.15)


def test_without_a_fold_the_trace_reaches_the_target_and_says_so():
    def line(y):  # x = 2 w: no fold
        return np.array([y[0] - 2.0 * y[1]])

    path = trace_past_fold(line, np.array([0.0, 0.0]), 1.0)
    assert not path.passed and not path.turned and path.reason == "no fold"
    assert path.y == pytest.approx([2.0, 1.0], abs=1e-6)


def test_a_path_that_never_comes_back_ends_within_its_budget():
    def circle(y):  # x² + w² = 1 from (−1, 0): turns at w = 1 and never gets to w = 2
        return np.array([y[0] ** 2 + y[1] ** 2 - 1.0])

    path = trace_past_fold(circle, np.array([-1.0, 0.0]), 2.0, max_steps=200,
                           max_evaluations=5000)
    assert not path.passed and path.turned
    assert path.reason in ("steps", "evaluations")
    m = 1  # one residual, one unknown besides w: the last step may overrun by this much
    assert path.evaluations <= 5000 + CHORD_ITERATIONS + 1 + \
        (CORRECTOR_ITERATIONS + 1) * (m + 2) + m + 2
    assert np.hypot(*path.y) == pytest.approx(1.0, abs=1e-6)  # it stayed on the path


def test_a_deadline_ends_the_trace_where_it_is_on_the_path():
    """A real-time caller's deadline: no step starts after it (the initial Jacobian only)."""
    x0 = -2.1
    start = np.array([x0, x0 ** 3 - 3 * x0])
    path = trace_past_fold(s_curve, start, 2.5, deadline=time.perf_counter() - 1.0)
    assert path.reason == "time" and path.steps == 0 and not path.reached
    assert path.evaluations == 3  # the residual at the start and its 2-column Jacobian
    assert np.array_equal(path.y, start)


def test_a_point_whose_acceptance_moves_the_path_is_corrected_onto_it():
    """``accepted`` shifts the curve by a step of a function of the accepted point
    (``w = x³ - 3x + c``, ``c`` = 1e-3 × round(4x): as contact re-tracked from a shape shifts
    the rod's residual a little): each point the shift moved the curve away from is corrected
    onto the shifted curve (the next point told is a correction of it, not the next step's,
    which lie 0.02 or more apart) before the trace goes on, and it still gets round both
    folds."""
    shift = [0.0]

    def curve(y):
        return np.array([y[0] ** 3 - 3.0 * y[0] + shift[0] - y[1]])

    went_on = []

    def accepted(y):
        shift[0] = 1e-3 * np.round(4.0 * y[0])
        went_on.append((y.copy(), shift[0]))

    path = trace_past_fold(curve, np.array([-2.1, -2.961]), 2.5, accepted=accepted)
    assert path.passed
    off = [i for i, (y, c) in enumerate(went_on) if abs(y[0] ** 3 - 3 * y[0] + c - y[1]) > 1e-6]
    assert len(off) > 5  # the curve moved away from many points...
    for i in off:  # ...and each was corrected: the next point told is near it, on the curve
        y, _ = went_on[i]
        z, c = went_on[i + 1]
        assert np.linalg.norm(z - y) < 0.01 and abs(z[0] ** 3 - 3 * z[0] + c - z[1]) < 1e-6


def test_a_point_whose_acceptance_moves_the_path_far_away_ends_the_trace():
    """``accepted`` moves the curve by 10 after the third point (as a contact re-tracked to
    another tube changes the problem): no point of the moved curve lies within a step, so the
    trace ends there ("moved") instead of going on from a point that is no solution."""
    shift = [0.0]
    count = [0]

    def curve(y):
        return np.array([y[0] ** 3 - 3.0 * y[0] + shift[0] - y[1]])

    def accepted(y):
        count[0] += 1
        if count[0] == 3:
            shift[0] = 10.0

    path = trace_past_fold(curve, np.array([-2.1, -2.961]), 2.5, accepted=accepted)
    assert path.reason == "moved" and path.steps == 2 and not path.reached


def test_the_caller_can_stop_the_trace_between_steps():
    asked = [0]

    def stop():
        asked[0] += 1
        return asked[0] > 3

    path = trace_past_fold(s_curve, np.array([-2.1, -2.961]), 2.5, stop=stop)
    assert path.reason == "stopped" and path.steps == 3 and asked[0] == 4
