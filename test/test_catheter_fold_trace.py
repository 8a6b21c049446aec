"""A catheter driven into a fold of its quasi-static path is traced round it
(:meth:`bronchonav.catheter.CatheterModel.step`, :mod:`bronchonav.catheter.arclength`), on a
recorded case: phantom seed 8, nodule N5, the 3.5 mm catheter. Before the trace its model jammed
there at an insertion of 203 mm (1.3 N on the wall; no equilibrium for 0.02 mm more insertion,
every relaxation unsettled) and the route ended stuck 19.6 mm from the exit point."""

import numpy as np
import pytest

from bronchonav.campaign.builtin import catheter_params, device_constraints
from bronchonav.campaign.spec import CatheterVariant
from bronchonav.catheter import CatheterModel
from bronchonav.ct.phantom import phantom_config, phantom_ground_truth_map
from bronchonav.navigation import NavigationController, RouteTarget
from bronchonav.planning.planner import RoutePlanner


@pytest.fixture(scope="module")
def drive():
    airway_map = phantom_ground_truth_map(phantom_config("default", seed=8))
    variant = CatheterVariant(name="d3.5mm", diameter_m=3.5e-3)
    route = RoutePlanner(airway_map, device_constraints(variant)).plan("N5")[0]
    assert route.feasible
    model = CatheterModel(catheter_params(variant), airway_map.tree, n_nodes=30)
    nav = NavigationController(RouteTarget.from_points(route.waypoints, route.branch_ids), model)
    traced = []
    while nav.outcome is None:
        nav.update(model.state.tip_pose)
        step = nav.last_step
        if step is not None and step.converged and "traced round a fold" in step.message:
            traced.append(step)
    return airway_map, route, nav, traced


def test_the_route_past_the_fold_is_reached(drive):
    airway_map, route, nav, traced = drive
    assert nav.outcome.status == "reached", nav.outcome.reason
    assert np.linalg.norm(nav.model.state.tip_position - route.exit_point) < 3e-3
    assert traced, "no step went round a fold"
    assert nav.failed_steps == 0


def test_each_state_beyond_a_fold_is_a_catheter_in_the_airways(drive):
    airway_map, _, _, traced = drive
    for state in traced:
        assert state.snapped_through
        # every node inside the lumen, allowing the contact model's penetration (0.5 mm)
        assert airway_map.tree.inside_lumen(state.positions, margin=-0.5e-3).all()
        chord = np.linalg.norm(np.diff(state.positions, axis=0), axis=1).sum()
        assert chord == pytest.approx(state.insertion, rel=0.02)
