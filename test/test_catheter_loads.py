"""Point loads at any arc length, per-step gravity, sampled outputs, tendon pretension, zero
offset and wire stiffness, against closed forms and equivalent inputs."""

import copy

import numpy as np
import pytest

from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams, Tendon
from bronchonav.catheter.command import PointLoad
from bronchonav.errors import CommandError

HUGE = 1e12


def make(params, n_nodes, **kwargs):
    return CatheterModel(params, n_nodes=n_nodes, deadline_s=5.0, **kwargs)


def rod(L=0.3, EI=1e-3, tendons=None):
    return CatheterParams.uniform_rod(L, EI, EI / 1.3, HUGE, HUGE, tendons=tendons)


def test_point_moment_mid_length_bends_a_circular_arc_then_straight():
    L, EI, M, a = 0.3, 1e-3, 4e-3, 0.17  # not on an output node
    model = make(rod(L, EI), n_nodes=31)
    arcs = np.array([0.05, 0.1, 0.17, 0.25, 0.3])
    state = model.step(CatheterCommand(insertion=L, point_loads=[PointLoad(a, moment=[0, M, 0])],
                                       output_arc_lengths=arcs))
    assert state.converged
    k = M / EI

    def exact(s):
        th = k * min(s, a)
        p = np.array([(1 - np.cos(th)) / k, 0.0, np.sin(th) / k])
        return p + max(s - a, 0.0) * np.array([np.sin(k * a), 0.0, np.cos(k * a)])

    expected = np.array([exact(s) for s in arcs])
    assert np.max(np.linalg.norm(state.sample_positions - expected, axis=1)) < 1e-6 * L
    assert np.allclose(state.sample_arc_length, arcs)
    # the sampled frames' tangents
    assert np.allclose(state.sample_rotations[-1][:, 2], [np.sin(k * a), 0, np.cos(k * a)],
                       atol=1e-6)


def test_small_point_force_mid_length_matches_beam_theory():
    L, EI, a = 0.3, 1e-3, 0.12
    P = 1e-4 * EI / L ** 2  # tiny: linear theory holds to ~1e-8
    model = make(rod(L, EI), n_nodes=21)
    state = model.step(CatheterCommand(insertion=L, point_loads=[PointLoad(a, force=[P, 0, 0])]))
    # cantilever, load at a: tip deflection P a² (3L - a) / (6 EI)
    assert state.tip_position[0] == pytest.approx(P * a ** 2 * (3 * L - a) / (6 * EI), rel=1e-4)


def test_loads_at_the_tip_equal_tip_force_and_coincident_loads_add():
    params = rod()
    f = [0.004, -0.002, 0.0]
    a = make(params, 20).step(CatheterCommand(insertion=0.3, tip_force=f))
    b = make(params, n_nodes=20).step(CatheterCommand(
        insertion=0.3, point_loads=[PointLoad(0.3, force=np.array(f) / 2),
                                    PointLoad(0.3, force=np.array(f) / 2)]))
    assert np.allclose(a.positions, b.positions, atol=1e-12)


def test_gravity_per_step_overrides_the_model_gravity():
    params = CatheterParams.default()
    g = [0.0, 9.81, 0.0]
    ref = make(params, 20, gravity=g).step(CatheterCommand(insertion=0.15))
    model = make(params, n_nodes=20)
    got = model.step(CatheterCommand(insertion=0.15, gravity=g))
    assert np.allclose(got.positions, ref.positions, atol=1e-10)
    assert got.tip_position[1] > 1e-4  # it sags along +y
    back = model.step(CatheterCommand(insertion=0.15))  # no gravity again
    assert np.allclose(back.positions[:, :2], 0.0, atol=1e-12)


def test_point_loads_are_validated():
    model = make(rod(), n_nodes=10)
    with pytest.raises(CommandError, match="point_loads\\[0\\].arc_length"):
        model.step(CatheterCommand(insertion=0.2, point_loads=[PointLoad(0.25)]))
    with pytest.raises(CommandError, match="point_loads\\[1\\].force"):
        model.step(CatheterCommand(insertion=0.2, point_loads=[
            PointLoad(0.1), PointLoad(0.1, force=[np.nan, 0, 0])]))
    with pytest.raises(CommandError, match="output_arc_lengths"):
        model.step(CatheterCommand(insertion=0.2, output_arc_lengths=[0.1, 0.05]))


def tendon_params(**tendon):
    params = copy.deepcopy(CatheterParams.default())
    for k, v in tendon.items():
        setattr(params.tendons[0], k, v)
    return params


def test_pretension_adds_to_the_commanded_tension():
    ref = make(CatheterParams.default(), n_nodes=20).step(
        CatheterCommand(insertion=0.1, tendon_tension=[3.5, 0, 0, 0]))
    got = make(tendon_params(pretension=1.5), n_nodes=20).step(
        CatheterCommand(insertion=0.1, tendon_tension=[2.0, 0, 0, 0]))
    assert np.allclose(got.positions, ref.positions, atol=1e-12)
    assert got.tendon_tensions[0] == pytest.approx(3.5)


def test_zero_offset_shifts_the_displacement_command():
    ref = make(CatheterParams.default(), n_nodes=20).step(
        CatheterCommand(insertion=0.1, tendon_displacement=[2e-3, 0, 0, 0]))
    got = make(tendon_params(zero_offset=0.5e-3), n_nodes=20).step(
        CatheterCommand(insertion=0.1, tendon_displacement=[1.5e-3, 0, 0, 0]))
    assert got.converged
    assert np.allclose(got.positions, ref.positions, atol=1e-9)
    assert got.tendon_displacements[0] == pytest.approx(1.5e-3, abs=1e-9)
    # a negative offset is initial slack: a small pull leaves the wire slack and straight
    slack = make(tendon_params(zero_offset=-1e-3), n_nodes=20).step(
        CatheterCommand(insertion=0.1, tendon_displacement=[0.8e-3, 0, 0, 0]))
    assert slack.tendon_tensions[0] == pytest.approx(0.0, abs=1e-9)
    assert np.allclose(slack.positions[:, :2], 0.0, atol=1e-9)


def test_wire_stiffness_in_newton_per_metre_equals_the_matching_EA():
    params = CatheterParams.default()
    wire_length = params.length  # crimped at the tip: the wire runs the whole catheter
    EA = params.tendons[0].stiffness_EA
    cmd = CatheterCommand(insertion=0.1, tendon_tension=[4.0, 0, 0, 0])
    ref = make(params, n_nodes=20).step(cmd)
    got = make(tendon_params(wire_stiffness=EA / wire_length), 20).step(cmd)
    assert np.allclose(got.tendon_displacements, ref.tendon_displacements, atol=1e-12)
    soft = make(tendon_params(wire_stiffness=EA / wire_length / 2), 20).step(cmd)
    # half the stiffness: the wire's own stretch doubles, 4 N × length / EA more pull
    assert soft.tendon_displacements[0] - ref.tendon_displacements[0] == pytest.approx(
        4.0 * wire_length / EA, rel=1e-9)


def test_tendon_spanning_a_segment_with_a_tip_load_elsewhere_still_solves():
    t = Tendon("t", 2e-3, 0.0, end_segment=0)
    model = make(rod(tendons=[t]), n_nodes=15)
    state = model.step(CatheterCommand(insertion=0.3, tendon_tension=[1.0],
                                       point_loads=[PointLoad(0.1, force=[0, 0.01, 0])]))
    assert state.converged and state.tip_position[1] > 0


def test_interpolated_commands_carry_the_new_fields():
    from bronchonav.catheter.command import interpolate_commands, validate_command

    params = rod()
    a = validate_command(CatheterCommand(insertion=0.2, gravity=[0, 0, 0]), params)
    b = validate_command(CatheterCommand(
        insertion=0.3, gravity=[0, 9.0, 0], output_arc_lengths=[0.1, 0.2],
        point_loads=[PointLoad(0.15, force=[0.02, 0, 0], moment=[0, 0, 0.01])]), params)
    half = interpolate_commands(a, b, 0.5)
    assert half.insertion == pytest.approx(0.25)
    assert np.allclose(half.gravity, [0, 4.5, 0])
    assert np.allclose(half.load_arc, [0.15]) and np.allclose(half.load_force, [[0.01, 0, 0]])
    assert np.allclose(half.load_moment, [[0, 0, 0.005]])
    assert np.allclose(half.output_arc_lengths, [0.1, 0.2])
    end = interpolate_commands(a, b, 1.0)
    assert np.allclose(end.load_force, b.load_force) and np.allclose(end.gravity, b.gravity)
