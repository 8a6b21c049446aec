"""The EM survey's arms (:func:`bronchonav.navigation.survey_arm`) on the default phantom's
ground truth, whose airways carry their anatomical names (trachea, RMB, LMB, ...)."""

import numpy as np
import pytest

from bronchonav.geometry import Polyline
from bronchonav.navigation import SurveyArm, survey_arm, survey_stops


def names(tree, arm):
    return [tree[b].name for b in arm.branch_ids]


def branch(tree, name):
    return next(b for b in tree if b.name == name)


def nodule_in(airway_map, lobe):
    return next(n for n in airway_map.nodules if n.lobe == lobe)


@pytest.mark.parametrize("lobe, same, other", [("RUL", "RMB", "LMB"), ("LLL", "LMB", "RMB")])
def test_the_arms_run_down_the_trachea_into_either_main_bronchus(airway_map, lobe, same, other):
    tree = airway_map.tree
    target = nodule_in(airway_map, lobe).center
    for same_side, name in ((True, same), (False, other)):
        arm = survey_arm(tree, target, same_side, margin_m=0.005)
        assert names(tree, arm) == ["trachea", name]
        main = branch(tree, name)
        # the whole trachea, then the main bronchus to 5 mm before its end, on its centerline
        assert arm.length == pytest.approx(tree.trachea.length + main.length - 0.005, abs=1e-9)
        assert Polyline(main.points).distance(arm.end[None])[0] < 1e-9
        assert np.linalg.norm(arm.end - main.end) == pytest.approx(0.005, abs=2e-4)
        assert np.array_equal(arm.points[:len(tree.trachea.points)], tree.trachea.points)


def test_an_arm_ends_at_least_half_way_along_its_main_bronchus(airway_map):
    tree = airway_map.tree
    target = nodule_in(airway_map, "LLL").center
    arm = survey_arm(tree, target, same_side=True, margin_m=1.0)
    assert arm.length == pytest.approx(tree.trachea.length + 0.5 * branch(tree, "LMB").length,
                                       abs=1e-9)


def straight_arm(length_m):
    return SurveyArm(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -length_m]]), (0, 1))


def test_after_an_ambiguous_registration_the_survey_goes_on_in_steps_before_the_exit_point():
    arm = straight_arm(0.10)
    # room for both extensions: 100, 120, 140 mm (the last 60 mm before a 200 mm route's end)
    assert survey_stops(0.20, arm, extension_m=0.02, max_extensions=2, reserve_m=0.02) == \
        pytest.approx((0.10, 0.12, 0.14))
    # the reserve caps them: on a 135 mm route with 20 mm kept, 120 mm is past 115 mm
    assert survey_stops(0.135, arm, extension_m=0.02, max_extensions=2, reserve_m=0.02) == \
        pytest.approx((0.10,))
    assert survey_stops(0.145, arm, extension_m=0.02, max_extensions=2, reserve_m=0.02) == \
        pytest.approx((0.10, 0.12))
    assert survey_stops(1.0, arm, extension_m=0.02, max_extensions=0) == pytest.approx((0.10,))


def test_the_head_of_a_polyline_ends_at_the_arc_length_asked_for():
    bent = Polyline([[0.0, 0.0, 0.0], [0.0, 0.0, 0.01], [0.01, 0.0, 0.01], [0.01, 0.02, 0.01]])
    for s in (0.005, 0.01, 0.015, 0.03, 0.04, 0.5):
        head = bent.head(s)
        assert head.length == pytest.approx(min(s, 0.04), abs=1e-12)
        np.testing.assert_allclose(head.points[-1], bent.point_at(s), atol=1e-12)
        assert np.all(bent.distance(head.points) < 1e-12)
