"""The secant predictor of the next solve's start: exact on a linear path, silent where there is
nothing to extrapolate, and never the reason for a different equilibrium."""

import numpy as np
import pytest

from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams
from bronchonav.catheter.command import validate_command
from bronchonav.catheter.predictor import MAX_EXTRAPOLATION, Solved, secant_guess


@pytest.fixture(scope="module")
def params():
    return CatheterParams.default()


def _vc(params, insertion, roll=0.0, tension=(0.0, 0.5, 0.0, 0.0), displacement=None):
    if displacement is not None:
        return validate_command(CatheterCommand(insertion=insertion, roll=roll,
                                                tendon_displacement=list(displacement)), params)
    return validate_command(CatheterCommand(insertion=insertion, roll=roll,
                                            tendon_tension=list(tension)), params)


def _x(insertion, tension):
    """Unknowns that depend linearly on the command (a made-up linear map)."""
    return np.array([1.0, -2.0, 0.5, 3.0, 0.0, 1.0]) * insertion + 0.1 * tension


def test_the_guess_is_exact_where_the_unknowns_move_linearly_along_the_step(params):
    before = Solved(_vc(params, 0.100), _x(0.100, 0.5))
    last = Solved(_vc(params, 0.101), _x(0.101, 0.5))
    for insertion in (0.1015, 0.102, 0.103):
        guess = secant_guess(before, last, _vc(params, insertion))
        np.testing.assert_allclose(guess, _x(insertion, 0.5), rtol=0, atol=1e-12)
    # a step along insertion and tension together, extrapolated along the same direction
    before = Solved(_vc(params, 0.100, tension=(0, 0.5, 0, 0)), _x(0.100, 0.5))
    last = Solved(_vc(params, 0.101, tension=(0, 0.6, 0, 0)), _x(0.101, 0.6))
    guess = secant_guess(before, last, _vc(params, 0.103, tension=(0, 0.8, 0, 0)))
    np.testing.assert_allclose(guess, _x(0.103, 0.8), rtol=0, atol=1e-12)


def test_extrapolation_is_bounded_and_only_along_the_last_step(params):
    before = Solved(_vc(params, 0.100), _x(0.100, 0.5))
    last = Solved(_vc(params, 0.101), _x(0.101, 0.5))
    far = secant_guess(before, last, _vc(params, 0.120))  # 19 steps ahead
    np.testing.assert_allclose(far, last.x + MAX_EXTRAPOLATION * (last.x - before.x))
    # a step across the last one (roll only) has nothing to extrapolate
    assert secant_guess(before, last, _vc(params, 0.101, roll=0.3)) is None
    # backwards along the last step: no extrapolation either (the last solution is the start)
    assert secant_guess(before, last, _vc(params, 0.100)) is None


def test_no_guess_without_two_comparable_solutions(params):
    last = Solved(_vc(params, 0.101), _x(0.101, 0.5))
    assert secant_guess(None, last, _vc(params, 0.102)) is None
    assert secant_guess(last, last, _vc(params, 0.102)) is None  # no step to extrapolate
    before = Solved(_vc(params, 0.100), _x(0.100, 0.5))
    displaced = _vc(params, 0.102, displacement=(0.0, 1e-3, 0.0, 0.0))
    assert secant_guess(before, last, displaced) is None  # another tendon mode
    shorter = Solved(_vc(params, 0.100), _x(0.100, 0.5)[:5])
    assert secant_guess(shorter, last, _vc(params, 0.102)) is None


def _stream(model):
    """Insert into the shipped phantom's airways while pulling one tendon ever harder."""
    states = []
    for k in range(60):
        state = model.step(CatheterCommand(insertion=0.02 + 0.002 * k,
                                           tendon_tension=[0.0, 0.02 * k, 0.0, 0.0]))
        assert state.converged, state.message
        states.append(state)
    return states


def test_predicted_starts_reach_the_same_states_with_fewer_evaluations(params, monkeypatch):
    """The prediction only chooses where Newton starts: along a stream of commands into the
    airways (contact from the 27th step on) every state is the one the last solution alone
    leads to, and the solves take fewer residual evaluations in total."""
    from bronchonav.catheter import model as model_module
    from bronchonav.maps import load_map

    tree = load_map("maps/phantom_default").tree
    predicted = _stream(CatheterModel(params, tree, n_nodes=30))
    monkeypatch.setattr(model_module, "secant_guess", lambda *args: None)
    plain = _stream(CatheterModel(params, tree, n_nodes=30))
    for a, b in zip(predicted, plain):
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-9)
    used = sum(s.evaluations for s in predicted)
    without = sum(s.evaluations for s in plain)
    assert used < 0.9 * without, (used, without)


def test_a_prediction_solve_leaves_the_predictor_as_it_was(params):
    """``predict`` (the controller's probe solves) restores the secant's two solutions too: the
    next step is the one it would have been without the probe."""
    probed = CatheterModel(params, n_nodes=20)
    alone = CatheterModel(params, n_nodes=20)
    for k in range(3):  # a tip force, so that the base loads (the unknowns) are not zero
        command = CatheterCommand(insertion=0.05 + 0.004 * k, tendon_tension=[0, 0.3 * k, 0, 0],
                                  tip_force=[0.02 * k, 0.0, 0.0])
        probed.step(command)
        alone.step(command)
    probed.predict(CatheterCommand(insertion=0.05, roll=0.4, tendon_tension=[0.5, 0, 0, 0]))
    command = CatheterCommand(insertion=0.066, tendon_tension=[0, 1.2, 0, 0],
                              tip_force=[0.08, 0.0, 0.0])
    a, b = probed.step(command), alone.step(command)
    # the same start, so bit for bit the same state (a start from the probe's points differs)
    assert a.evaluations == b.evaluations
    np.testing.assert_array_equal(a.positions, b.positions)
