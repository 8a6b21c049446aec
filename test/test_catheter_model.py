"""CatheterModel behaviour: displacement control, rigid motions, command validation, failure
handling and parameters (the rigid-link URDF chain is tested against the URDF in
test_ros_units.py)."""

import numpy as np
import pytest

from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams
from bronchonav.errors import CommandError
from trees import tree_with_trachea


@pytest.fixture(scope="module")
def params():
    return CatheterParams.default()


def test_default_params_describe_a_bronchoscope(params):
    assert params.outer_diameter == pytest.approx(3.5e-3)
    assert params.channel_diameter == pytest.approx(2.0e-3)
    assert params.tendon_names == ["tendon_0", "tendon_1", "tendon_2", "tendon_3"]
    angles = np.sort([t.angle for t in params.tendons])
    assert np.allclose(np.diff(angles), np.pi / 2)
    assert params.max_articulation >= np.pi - 1e-9
    assert params.min_bend_radius == pytest.approx(0.04 / params.max_articulation)
    assert params.segments[0].EI > params.segments[-1].EI  # stiff shaft, soft tip
    assert params.limits.max_insertion <= params.length


def test_max_tension_bends_the_tip_by_max_articulation(params):
    model = CatheterModel(params, n_nodes=40)
    tau = params.limits.tension_max
    state = model.step(CatheterCommand(insertion=0.1, tendon_tension=[tau, 0, 0, 0]))
    tip_axis = state.tip_pose[:3, 2]
    bend = np.arccos(np.clip(tip_axis[2], -1, 1))
    assert bend == pytest.approx(params.max_articulation, abs=1e-3)
    assert tip_axis[0] > 0 or bend > np.pi - 1e-2  # tendon_0 at +x bends towards +x


def test_displacement_control_reproduces_tension_control(params):
    model = CatheterModel(params, n_nodes=40, gravity=[0.0, 9.81, 0.0])
    tension = np.array([4.0, 1.5, 0.0, 0.0])
    ref = model.step(CatheterCommand(insertion=0.12, tendon_tension=tension,
                                     tip_force=[0.0, 0.02, 0.0]))
    assert ref.converged
    fresh = CatheterModel(params, n_nodes=40, gravity=[0.0, 9.81, 0.0])
    got = fresh.step(CatheterCommand(insertion=0.12, tendon_displacement=ref.tendon_displacements,
                                     tip_force=[0.0, 0.02, 0.0]))
    assert got.converged, got.message
    assert np.allclose(got.tendon_tensions, tension, atol=1e-5)
    assert np.max(np.linalg.norm(got.positions - ref.positions, axis=1)) < 1e-7
    assert np.allclose(got.tendon_displacements, ref.tendon_displacements, atol=1e-9)


def test_pulled_tendon_shortens_and_opposite_one_lengthens(params):
    model = CatheterModel(params, n_nodes=30)
    state = model.step(CatheterCommand(insertion=0.1, tendon_tension=[5.0, 0, 0, 0]))
    d = state.tendon_displacements
    r, theta = params.tendons[0].offset, np.arccos(state.tip_pose[2, 2])
    assert d[0] > 0 > d[2]
    # path shortening on one side, lengthening on the other, plus the pulled wire's stretch
    stretch = 5.0 * params.length / params.tendons[0].stiffness_EA
    assert d[0] - d[2] == pytest.approx(2 * r * theta + stretch, rel=0.02)


def test_roll_is_a_rigid_rotation_about_the_base_axis(params):
    cmd = dict(insertion=0.1, tendon_tension=[3.0, 0.0, 0.0, 1.0], tip_force=[0.0, 0.0, 0.0])
    s0 = CatheterModel(params, n_nodes=40).step(CatheterCommand(roll=0.0, **cmd))
    a = 0.7
    s1 = CatheterModel(params, n_nodes=40).step(CatheterCommand(roll=a, **cmd))
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    assert np.allclose(s1.positions, s0.positions @ Rz.T, atol=1e-10)
    assert np.allclose(s1.rotations, Rz[None] @ s0.rotations, atol=1e-10)


def test_insertion_is_a_rigid_translation_in_free_space(params):
    model = CatheterModel(params, n_nodes=40)
    s0 = model.step(CatheterCommand(insertion=0.08, tendon_tension=[3.0, 1.0, 0.0, 0.0]))
    s1 = model.step(CatheterCommand(insertion=0.13, tendon_tension=[3.0, 1.0, 0.0, 0.0]))
    # (to the integration error of two different node spacings)
    assert np.allclose(s1.tip_pose[:3, 3] - s0.tip_pose[:3, 3], [0, 0, 0.05], rtol=0, atol=1e-7)
    assert np.allclose(s1.tip_pose[:3, :3], s0.tip_pose[:3, :3], rtol=0, atol=1e-6)
    # the shaft stays straight on the insertion axis
    shaft = s1.arc_length <= 0.13 - 0.04
    assert np.allclose(s1.positions[shaft, :2], 0.0, atol=1e-12)


@pytest.mark.parametrize("kwargs, field", [
    (dict(insertion=float("nan")), "insertion"),
    (dict(insertion=-0.01), "insertion"),
    (dict(insertion=0.36), "insertion"),
    (dict(insertion=0.1, roll=float("inf")), "roll"),
    (dict(insertion=0.1, tendon_tension=[1.0, -0.5, 0.0, 0.0]), "tendon_tension[1]"),
    (dict(insertion=0.1, tendon_tension=[1.0, 0.0, float("inf"), 0.0]), "tendon_tension[2]"),
    (dict(insertion=0.1, tendon_tension=[100.0, 0.0, 0.0, 0.0]), "tendon_tension[0]"),
    (dict(insertion=0.1, tendon_tension=[1.0, 0.0]), "tendon_tension"),
    (dict(insertion=0.1, tendon_displacement=[0.0, 0.0, 0.0, 0.02]), "tendon_displacement[3]"),
    (dict(insertion=0.1, tendon_displacement=[float("nan"), 0, 0, 0]), "tendon_displacement[0]"),
    (dict(insertion=0.1, tip_force=[0.0, float("nan"), 0.0]), "tip_force[1]"),
])
def test_bad_commands_raise_and_keep_the_last_state(params, kwargs, field):
    model = CatheterModel(params, n_nodes=20)
    good = model.step(CatheterCommand(insertion=0.1, tendon_tension=[2.0, 0, 0, 0]))
    before = good.positions.copy()
    with pytest.raises(CommandError, match=field.replace("[", r"\[").replace("]", r"\]")):
        model.step(CatheterCommand(**kwargs))
    assert model.state is good
    assert np.array_equal(model.state.positions, before)
    nxt = model.step(CatheterCommand(insertion=0.1, tendon_tension=[2.0, 0, 0, 0]))
    assert nxt.converged and nxt.iterations == 0  # warm start intact


def test_a_step_that_misses_its_deadline_keeps_the_previous_state(params):
    model = CatheterModel(params, n_nodes=30, gravity=[9.81, 0, 0])
    good = model.step(CatheterCommand(insertion=0.1))
    assert good.converged
    model.deadline_s = 0.0
    bad = model.step(CatheterCommand(insertion=0.3, tip_force=[0.5, 0.0, 0.0]))
    assert not bad.converged and "deadline" in bad.message
    assert np.array_equal(bad.positions, good.positions)
    assert model.state is good
    model.deadline_s = 1.0
    assert model.step(CatheterCommand(insertion=0.3, tip_force=[0.5, 0.0, 0.0])).converged


def test_an_offline_step_that_failed_fails_again_from_the_same_state_without_solving(params):
    import copy

    model = CatheterModel(params, n_nodes=20)
    good = model.step(CatheterCommand(insertion=0.1))
    assert good.converged
    model.max_iter = 0  # no solve can converge: every fallback runs and fails
    hard = CatheterCommand(insertion=0.12, tip_force=[0.5, 0.0, 0.0])
    first = model.step(hard)
    assert not first.converged and first.evaluations > 0
    fresh = copy.deepcopy(model)
    fresh._refused = None  # what solving it again gives
    resolved = fresh.step(hard)
    again = model.step(CatheterCommand(insertion=0.12, tip_force=[0.5, 0.0, 0.0]))
    assert not again.converged and again.evaluations == 0
    assert again.message == first.message == resolved.message
    assert np.array_equal(again.positions, good.positions) and model.state is good
    model.predict(CatheterCommand(insertion=0.1, tip_force=[0.1, 0.0, 0.0]))  # a probe...
    assert model.step(hard).evaluations == 0  # ...forgets nothing
    model.max_iter = 1  # with another setting it is solved again
    assert model.step(hard).evaluations > 0
    model.max_iter = 0
    # another command, or the same one from another state, is solved
    other = model.step(CatheterCommand(insertion=0.12, tip_force=[0.6, 0.0, 0.0]))
    assert other.evaluations > 0
    model.max_iter = 50
    assert model.step(CatheterCommand(insertion=0.11)).converged
    model.max_iter = 0
    assert model.step(hard).evaluations > 0


@pytest.mark.parametrize("trace_folds, deadline_s, traced", [
    (None, None, True), (None, 60.0, False), (True, 60.0, True), (False, None, False)])
def test_a_failed_step_traces_the_fold_without_a_deadline_or_when_asked(
        params, trace_folds, deadline_s, traced):
    model = CatheterModel(params, n_nodes=20, trace_folds=trace_folds, deadline_s=deadline_s,
                          offline_fallbacks=True)
    assert model.step(CatheterCommand(insertion=0.1)).converged
    model.max_iter = 0  # every solve fails, the relaxation's too
    failed = model.step(CatheterCommand(insertion=0.12, tip_force=[0.5, 0.0, 0.0]))
    assert not failed.converged and "relaxation did not settle" in failed.message
    # a free rod's path has no fold: traced to the command, where the plain solve fails
    assert ("traced to the command" in failed.message) == traced


def test_zero_insertion_puts_every_node_at_the_base(params):
    state = CatheterModel(params, n_nodes=10).step(CatheterCommand(insertion=0.0))
    assert state.converged and np.allclose(state.positions, 0.0)


def test_insertion_axis_is_the_tracheas_axis_despite_a_wiggling_top():
    from bronchonav.catheter import base_pose_from_tree

    axis = np.array([0.08, -0.05, -1.0])
    axis /= np.linalg.norm(axis)
    lateral = np.cross(axis, [0.0, 1.0, 0.0])
    lateral /= np.linalg.norm(lateral)
    top = np.array([0.01, 0.02, 0.11])
    s = np.linspace(0.0, 0.11, 111)
    straight = top + s[:, None] * axis
    # an extracted centerline's top end: 1 mm to one side from 8 to 20 mm (the shipped map's)
    wiggle = np.where((s > 0.008) & (s < 0.02), 1e-3, 0.0)
    wiggling = straight + wiggle[:, None] * lateral

    T = base_pose_from_tree(tree_with_trachea(straight))
    assert np.allclose(T[:3, 2], axis, atol=1e-9)
    assert np.allclose(T[:3, 3], top, atol=1e-9)
    assert np.allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-12)
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)

    T = base_pose_from_tree(tree_with_trachea(wiggling))
    tilt = np.degrees(np.arccos(np.clip(T[:3, 2] @ axis, -1.0, 1.0)))
    assert tilt < 1.0  # the first 10 mm alone would tilt it by 5.7°
    off_axis = (T[:3, 3] - top) - ((T[:3, 3] - top) @ axis) * axis
    assert np.linalg.norm(off_axis) < 0.5e-3


def test_a_recorded_jam_of_newton_creeping_at_the_wall_is_driven_through():
    """Recorded case (bench/navigation_bench.py's campaign: seed-2 phantom, N3, 3.5 mm catheter,
    registered pose): 270 mm in, with the tip section on the wall, Newton crept towards the root
    and stopped at 30 iterations with the residual at 4·10⁻⁵; every fallback failed after it,
    and the drive jammed 3 mm short of the exit point with 119 failed steps. With the iteration
    bound at 60 the same drive reaches the exit point."""
    from bronchonav.campaign.cases import expand_cases, select_nodules
    from bronchonav.campaign.spec import parse_spec
    from bronchonav.campaign.stages import make_map, run_case

    spec = parse_spec({
        "name": "navigation_s0-7_truth+registered", "seed": 2026,
        "cohort": {"phantoms": {"name": "default", "seeds": [2], "map": "ground_truth"}},
        "nodules": {"select": "all"},
        "catheters": [{"name": "d3.5mm", "diameter_m": 0.0035}],
        "stages": ["map", "plan", "rehearse"],
        "stage_options": {"rehearse": {"poses": "registered"}}})
    subject = spec.subjects[0]
    airway_map = make_map(subject)
    case = next(c for c in expand_cases(spec, {subject.key: select_nodules(airway_map,
                                                                           spec.nodules)})
                if c.key == "phantom-default-s2/N3/d3.5mm")
    row = run_case(case, airway_map, spec.stage_options)
    assert row["status"] == "ok", row.get("error")
    assert row["rehearse_registered_reached"], row["rehearse_registered_reason"]
    assert row["rehearse_registered_failed_steps"] < 20
