"""The EM survey's arms (:func:`bronchonav.navigation.survey_arm`) on the default phantom's
ground truth, whose airways carry their anatomical names (trachea, RMB, LMB, ...)."""

import numpy as np
import pytest

from bronchonav.geometry import Polyline
from bronchonav.navigation import survey_arm


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
