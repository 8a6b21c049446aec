"""A pull-back always has a way out: when the held state has no path back (every solve from it
fails), the model solves the pull-back from the last state it accepted at or below the commanded
insertion on the way in (:meth:`bronchonav.catheter.CatheterModel.step`). Found in the real-time
demo on a map with smoothed centerlines: past a fold near a carina, 2 mm retractions from the
held state failed every fallback (and so did a re-synchronisation to the held backbone cut back
by 2 mm), while the same retraction from the state the catheter had 3 mm earlier converged at
once; the navigator's recoveries (retract, re-aim, retry) then jammed.

The held state is made one with no path back by failing every solve that starts from it."""

import numpy as np
import pytest

from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams
from trees import y_tree

TENSION = [0.0, 0.6, 0.0, 0.0]


def _drive(model, insertions):
    for insertion in insertions:
        state = model.step(CatheterCommand(insertion=insertion, tendon_tension=TENSION))
        assert state.converged, state.message
    return state


@pytest.fixture
def stuck(monkeypatch):
    """A model driven 60 → 120 mm into a Y, whose held state at 120 mm then has no way out
    (its solves and continuations fail; no relaxation or trace, as in a real-time step)."""
    model = CatheterModel(CatheterParams.default(), y_tree(), n_nodes=20,
                          offline_fallbacks=False)
    held = _drive(model, np.arange(0.060, 0.1201, 0.004))
    solve_from, continuation = CatheterModel._solve_from, CatheterModel._continuation

    def no_way_from_the_held_state(self, vc, guess, x_prev, J_prev, deadline, **kwargs):
        res, prob, it, ev = solve_from(self, vc, guess, x_prev, J_prev, deadline, **kwargs)
        if self._state is held:
            res.converged, res.reason = False, "no way out (test)"
        return res, prob, it, ev

    def no_continuation_from_the_held_state(self, vc, deadline, res, prob, iters, evals):
        if self._state is held:
            return res, prob, iters, evals
        return continuation(self, vc, deadline, res, prob, iters, evals)

    monkeypatch.setattr(CatheterModel, "_solve_from", no_way_from_the_held_state)
    monkeypatch.setattr(CatheterModel, "_continuation", no_continuation_from_the_held_state)
    return model, held


def test_a_pull_back_the_held_state_has_no_path_for_starts_from_the_way_in(stuck):
    model, held = stuck
    state = model.step(CatheterCommand(insertion=0.1025, tendon_tension=TENSION))
    assert state.converged and state.snapped_through, state.message
    assert "pulled back from the state at insertion 100.0 mm" in state.message
    assert "held state at 120.0 mm had no path back" in state.message
    # the same command from that state in a catheter that never went deeper
    fresh = CatheterModel(CatheterParams.default(), y_tree(), n_nodes=20,
                          offline_fallbacks=False)
    _drive(fresh, np.arange(0.060, 0.1001, 0.004))
    expected = fresh.step(CatheterCommand(insertion=0.1025, tendon_tension=TENSION))
    np.testing.assert_allclose(state.positions, expected.positions, rtol=0, atol=1e-9)
    assert state.insertion == pytest.approx(0.1025)


def test_a_push_the_held_state_has_no_path_for_still_fails(stuck):
    model, held = stuck
    for command in (CatheterCommand(insertion=0.1205, tendon_tension=TENSION),
                    CatheterCommand(insertion=0.120, tendon_tension=[0.0, 0.9, 0.0, 0.0])):
        state = model.step(command)
        assert not state.converged and "no way out (test)" in state.message
        assert model.state is held  # nothing moved


def test_a_pull_back_below_everything_on_record_still_fails(stuck):
    model, held = stuck
    state = model.step(CatheterCommand(insertion=0.050, tendon_tension=TENSION))
    assert not state.converged and model.state is held


def test_a_pull_back_whose_state_is_refused_leaves_the_catheter_where_it_was(stuck, monkeypatch):
    """A pull-back solved from the way in but then refused (here: every state it reaches is
    called unphysical) reports the failure and keeps the held state: the model stands at
    120 mm as before, and its next step starts from there."""
    model, held = stuck
    before = model.snapshot()
    monkeypatch.setattr(model, "_unphysical", lambda state: "refused (test)")
    state = model.step(CatheterCommand(insertion=0.1025, tendon_tension=TENSION))
    assert not state.converged
    assert "refused (test)" in state.message
    assert model.state is held and state.insertion == pytest.approx(0.120)
    np.testing.assert_array_equal(state.positions, held.positions)
    assert all(a is b for a, b in zip(model.snapshot(), before))
