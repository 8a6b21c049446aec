"""Tendon friction: capstan closed forms and the hysteresis of pulling against releasing."""

import copy

import numpy as np
import pytest

from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams, Tendon

HUGE = 1e12


def capstan_rod(mu, offset=0.0, L=0.2, EI=1e-3):
    tendon = Tendon("t", offset, 0.0, end_segment=0, friction=mu)
    return CatheterParams.uniform_rod(L, EI, EI, HUGE, HUGE, tendons=[tendon])


@pytest.mark.parametrize("mu", [0.1, 0.3])
def test_capstan_ratio_on_a_constant_curvature_bend(mu):
    # a tendon on the axis does not bend the rod: the end moment alone makes a circular arc
    # of angle theta = M L / EI, around which the tendon wraps
    L, EI, M, tau = 0.2, 1e-3, 6e-3, 3.0
    model = CatheterModel(capstan_rod(mu, L=L, EI=EI), n_nodes=20, deadline_s=5.0)
    theta = M * L / EI
    pulled = model.step(CatheterCommand(insertion=L, tendon_tension=[tau], tip_moment=[0, M, 0]))
    assert pulled.converged
    assert pulled.tendon_wrap_angles[0] == pytest.approx(theta, rel=1e-6)
    assert pulled.tendon_distal_tensions[0] / tau == pytest.approx(np.exp(-mu * theta), rel=0.01)
    assert pulled.tendon_slip[0] == 1.0
    released = model.step(CatheterCommand(insertion=L, tendon_tension=[0.4 * tau],
                                          tip_moment=[0, M, 0]))
    assert released.tendon_distal_tensions[0] / (0.4 * tau) == pytest.approx(
        np.exp(mu * theta), rel=0.01)
    assert released.tendon_slip[0] == -1.0


def test_capstan_ratio_follows_the_bend_the_tendon_makes():
    # an offset tendon bends the rod itself; its total wrap is the tip's bend angle
    mu, tau = 0.2, 2.0  # 2 rad without friction
    model = CatheterModel(capstan_rod(mu, offset=5e-3), n_nodes=30, deadline_s=5.0)
    state = model.step(CatheterCommand(insertion=0.2, tendon_tension=[tau]))
    bend = np.arctan2(state.tip_pose[0, 2], state.tip_pose[2, 2])
    assert bend > 1.0
    assert state.tendon_distal_tensions[0] / tau == pytest.approx(np.exp(-mu * bend), rel=1e-4)
    # less tension reaches the tip than without friction: a smaller bend
    plain = CatheterModel(capstan_rod(0.0, offset=5e-3), n_nodes=30, deadline_s=5.0)
    free = plain.step(CatheterCommand(insertion=0.2, tendon_tension=[tau]))
    assert np.arctan2(free.tip_pose[0, 2], free.tip_pose[2, 2]) > bend * 1.1


def test_stuck_tendon_holds_its_distal_tension():
    def release(mu):
        model = CatheterModel(capstan_rod(mu, offset=5e-3), n_nodes=30, deadline_s=5.0)
        pulled = model.step(CatheterCommand(insertion=0.2, tendon_tension=[2.0]))
        # a 5 % release stays inside the stick band exp(±mu theta) when mu > 0
        return pulled, model.step(CatheterCommand(insertion=0.2, tendon_tension=[1.9]))

    pulled, stuck = release(0.2)
    assert stuck.tendon_slip[0] == 0.0
    assert stuck.tendon_distal_tensions[0] == pytest.approx(pulled.tendon_distal_tensions[0],
                                                            rel=1e-9)
    # only the slipping zone near the actuator relaxes: the tip barely moves
    moved = np.linalg.norm(stuck.tip_position - pulled.tip_position)
    free_pulled, free_released = release(0.0)
    assert moved < 0.1 * np.linalg.norm(free_released.tip_position - free_pulled.tip_position)
    # the stored profile: the releasing envelope 1.9·exp(+μθ) rises from the actuator until it
    # meets the stuck part, still on the earlier pulling envelope
    profile = stuck.tendon_tension_profile[:, 0]
    assert profile[0] == pytest.approx(1.9) and profile[1] > profile[0] and profile.max() > 1.92
    assert profile[-1] == pytest.approx(pulled.tendon_tension_profile[-1, 0], rel=1e-9)


def loop(params, tendon, mode, levels):
    model = CatheterModel(params, n_nodes=20, deadline_s=5.0)
    tips = []
    for v in levels:
        act = np.zeros(len(params.tendons))
        act[tendon] = v
        key = "tendon_tension" if mode == "tension" else "tendon_displacement"
        state = model.step(CatheterCommand(insertion=0.1, **{key: act}))
        assert state.converged, state.message
        tips.append(state.tip_position)
    return np.array(tips)


def with_friction(mu):
    params = copy.deepcopy(CatheterParams.default())
    for t in params.tendons:
        t.friction = mu
    return params


@pytest.mark.parametrize("mode, top", [("tension", 8.0), ("displacement", 4e-3)])
def test_hysteresis_loop_is_present_and_mirror_symmetric(mode, top):
    up = np.linspace(0.0, top, 9)
    levels = np.concatenate([up, up[::-1][1:]])
    params = with_friction(0.15)
    x0 = loop(params, 0, mode, levels)
    x2 = loop(params, 2, mode, levels)
    pull, release = x0[:9, 0], x0[8:, 0][::-1]
    width = np.max(np.abs(pull - release))
    assert width > 2e-4  # pulling and releasing branches differ
    if mode == "tension":  # released, more tension stays at the tip: more bend
        assert np.all(release[1:-1] >= pull[1:-1] - 1e-9)
    # the opposite tendon traces the mirror image of the loop
    assert np.allclose(x2[:, 0], -x0[:, 0], atol=1e-9)
    assert np.allclose(x2[:, 1:], x0[:, 1:], atol=1e-9)
    # no friction, no loop
    f0 = loop(with_friction(0.0), 0, mode, levels)
    assert np.max(np.abs(f0[:9, 0] - f0[8:, 0][::-1])) < 1e-9
