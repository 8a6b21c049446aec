"""Catheter statics against published and analytic solutions (Mattiasson 1981, circular arcs,
tendon bending, Euler buckling, convergence with discretisation)."""

import numpy as np
import pytest
from scipy.special import ellipk
from scipy.optimize import brentq

from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams, Tendon

HUGE = 1e12  # EA, GA for the inextensible, unshearable limit


def rod(L=1.0, EI=1.0, EA=HUGE, GA=HUGE, tendons=None):
    return CatheterParams.uniform_rod(L, EI, EI / 1.3, EA, GA, tendons=tendons)


# Mattiasson 1981, cantilever under a dead tip load, alpha = P L^2 / EI: (w/L, u/L)
MATTIASSON = {1: (0.30172, 0.05643), 2: (0.49346, 0.16064), 5: (0.71379, 0.38763),
              10: (0.81061, 0.55500)}


@pytest.mark.parametrize("alpha", sorted(MATTIASSON))
def test_mattiasson_cantilever(alpha):
    L, EI = 0.5, 2e-3
    model = CatheterModel(rod(L, EI), n_nodes=50, deadline_s=5.0)
    P = alpha * EI / L ** 2
    state = model.step(CatheterCommand(insertion=L, tip_force=[P, 0.0, 0.0]))
    assert state.converged
    w, u = MATTIASSON[alpha]
    tip = state.tip_pose[:3, 3]
    assert abs(tip[0] / L - w) <= 1e-3
    assert abs((L - tip[2]) / L - u) <= 1e-3
    # equilibrium of the whole rod: the base moment balances the tip load's lever arm
    m0 = state.internal_moment[0]
    assert np.allclose(m0, np.cross(tip, [P, 0, 0]), rtol=1e-6, atol=1e-12)


def test_pure_end_moment_is_circular_arc():
    L, EI, M = 0.3, 1e-3, 5e-3  # kappa = 5 1/m -> 1.5 rad
    model = CatheterModel(rod(L, EI, EA=50.0, GA=20.0), n_nodes=40)
    state = model.step(CatheterCommand(insertion=L, tip_moment=[0.0, M, 0.0]))
    kappa = M / EI
    theta = kappa * state.arc_length
    expected = np.column_stack([(1 - np.cos(theta)) / kappa, 0 * theta, np.sin(theta) / kappa])
    assert np.max(np.linalg.norm(state.positions - expected, axis=1)) <= 1e-4 * L
    angle = np.arctan2(state.tip_pose[0, 2], state.tip_pose[2, 2])
    assert abs(angle / (kappa * L) - 1) <= 1e-4


@pytest.mark.parametrize("tau, degrees", [(4.0, 45.0), (8.0, 90.0)])
def test_single_tendon_constant_curvature(tau, degrees):
    E, d, r, L = 54e9, 1.4e-3, 0.010, 0.2
    I, A = np.pi * d ** 4 / 64, np.pi * d ** 2 / 4
    G = E / (2 * 1.3)
    params = CatheterParams.uniform_rod(L, E * I, G * 2 * I, E * A, G * A,
                                        tendons=[Tendon("t", r, 0.0, end_segment=0)])
    model = CatheterModel(params, n_nodes=50)
    state = model.step(CatheterCommand(insertion=L, tendon_tension=[tau]))
    theta_tip = tau * r * L / (E * I)
    assert np.degrees(theta_tip) == pytest.approx(degrees, abs=0.05)
    angle = np.arctan2(state.tip_pose[0, 2], state.tip_pose[2, 2])
    assert abs(angle / theta_tip - 1) <= 1e-4
    # arc of length L (1 - tau/EA) through the angle theta_tip
    rho = L * (1 - tau / (E * A)) / theta_tip
    expected_tip = [rho * (1 - np.cos(theta_tip)), 0.0, rho * np.sin(theta_tip)]
    assert np.linalg.norm(state.tip_pose[:3, 3] - expected_tip) <= 1e-4 * rho * theta_tip
    # constant curvature: every node sits on that circle
    centre = np.array([rho, 0.0, 0.0])
    assert np.allclose(np.linalg.norm(state.positions - centre, axis=1), rho, rtol=1e-6)
    # the rod is compressed by the tendon: internal force -tau along the tangent
    n_axial = np.einsum("ni,ni->n", state.internal_force, state.rotations[:, :, 2])
    assert np.allclose(n_axial[1:], -tau, rtol=1e-6)


def _ramped_tip_deflection(ratio, L=0.4, EI=1e-3, perturbation=1e-3):
    """Tip deflection of a clamped-free column ramped to ratio * P_cr with a tiny lateral load."""
    p_cr = np.pi ** 2 * EI / (4 * L ** 2)
    model = CatheterModel(rod(L, EI), n_nodes=50, deadline_s=5.0)
    Q = perturbation * p_cr
    for r in np.linspace(0.05, ratio, int(round(ratio / 0.05))):
        state = model.step(CatheterCommand(insertion=L, tip_force=[Q, 0.0, -r * p_cr]))
        assert state.converged, state.message
    return state.tip_pose[0, 3], Q, p_cr


def test_euler_buckling_below_critical_load_matches_beam_column():
    L, EI = 0.4, 1e-3
    delta, Q, p_cr = _ramped_tip_deflection(0.9, L, EI)
    P = 0.9 * p_cr
    lam = np.sqrt(P / EI)
    linear = Q * (np.tan(lam * L) - lam * L) / (P * lam)  # beam-column, small deflection
    assert delta == pytest.approx(linear, rel=0.02)
    assert delta / L < 0.02  # still essentially straight


def test_euler_buckling_above_critical_load_follows_elastica():
    L = 0.4
    delta, _, _ = _ramped_tip_deflection(1.1, L)
    # post-buckled elastica: K(k) = (pi/2) sqrt(P/P_cr), tip deflection / L = 2k / K(k)
    k = brentq(lambda k: ellipk(k * k) - np.pi / 2 * np.sqrt(1.1), 1e-6, 0.99)
    assert delta / L == pytest.approx(2 * k / ellipk(k * k), rel=0.03)
    assert delta / L > 0.4


def test_error_falls_with_discretisation():
    L, EI, M = 0.3, 1e-3, 1e-2  # a 3 rad bend
    kappa = M / EI
    errors = []
    for n in (4, 7, 13, 25):
        model = CatheterModel(rod(L, EI), n_nodes=n)
        state = model.step(CatheterCommand(insertion=L, tip_moment=[0.0, M, 0.0]))
        exact = np.array([(1 - np.cos(kappa * L)) / kappa, 0.0, np.sin(kappa * L) / kappa])
        errors.append(np.linalg.norm(state.tip_pose[:3, 3] - exact))
    errors = np.array(errors)
    assert np.all(errors[1:] < errors[:-1] / 4), errors  # RK4: about 16x per halving of h
    assert errors[-1] < 1e-6 * L
