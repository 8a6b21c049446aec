"""A catheter driven into a fold of its quasi-static path is traced round it
(:meth:`bronchonav.catheter.CatheterModel.step`, :mod:`bronchonav.catheter.arclength`), on a
recorded case: phantom seed 8, nodule N5, the 3.5 mm catheter. Before the trace its model jammed
there at an insertion of 203 mm (1.3 N on the wall; no equilibrium for 0.02 mm more insertion,
every relaxation unsettled) and the route ended stuck 19.6 mm from the exit point. The same
commands replayed to the real-time simulator's solver process
(:mod:`bronchonav.catheter.runtime.solver_process`) pass the fold there too."""

import dataclasses
import threading
import time

import numpy as np
import pytest

from bronchonav.campaign.builtin import catheter_params, device_constraints
from bronchonav.campaign.spec import CatheterVariant
from bronchonav.catheter import CatheterCommand, CatheterModel
from bronchonav.catheter.runtime import SolverConfig, SolverSupervisor
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
    traced, commands = [], []
    while nav.outcome is None:
        command = nav.update(model.state.tip_pose)
        step = nav.last_step
        if step is not None:
            commands.append(command)
        if step is not None and step.converged and "traced round a fold" in step.message:
            traced.append(step)
    return airway_map, route, nav, traced, commands


def test_the_route_past_the_fold_is_reached(drive):
    airway_map, route, nav, traced, _ = drive
    assert nav.outcome.status == "reached", nav.outcome.reason
    assert np.linalg.norm(nav.model.state.tip_position - route.exit_point) < 3e-3
    assert traced, "no step went round a fold"
    assert nav.failed_steps == 0


def test_each_state_beyond_a_fold_is_a_catheter_in_the_airways(drive):
    airway_map, _, _, traced, _ = drive
    for state in traced:
        assert state.snapped_through
        # every node inside the lumen, allowing the contact model's penetration (0.5 mm)
        assert airway_map.tree.inside_lumen(state.positions, margin=-0.5e-3).all()
        chord = np.linalg.norm(np.diff(state.positions, axis=0), axis=1).sum()
        assert chord == pytest.approx(state.insertion, rel=0.02)


class Replay:
    """The simulator's solver process (a real child, 50 ms per step, retries up to 0.2 s,
    a long attempt of up to 30 s) under its supervisor, which replaces a child silent for
    0.1 s beyond a retry's budget; every state and event recorded as ``(kind, seq, value)``."""

    def __init__(self, airway_map):
        config = SolverConfig(tree=airway_map.tree, n_nodes=30, deadline_s=0.05,
                              recovery_deadline_s=0.2, fold_deadline_s=30.0,
                              params=catheter_params(CatheterVariant(name="d3.5mm",
                                                                     diameter_m=3.5e-3)))
        self.messages = []
        self.arrived = threading.Condition()
        self.solver = SolverSupervisor(config, lambda seq, state: self._record("state", seq, state),
                                       self._on_event, standby=False, hang_timeout_s=0.1)
        assert self.solver.start(timeout=120), "the solver process did not start"

    def _record(self, kind, seq, value):
        with self.arrived:
            self.messages.append((kind, seq, value))
            self.arrived.notify_all()

    def _on_event(self, kind, detail):
        self._record(kind, *(detail if kind in ("tracing", "rejected") else (-1, detail)))

    def wait(self, predicate, timeout):
        with self.arrived:
            return self.arrived.wait_for(lambda: predicate(self.messages), timeout)

    def solve(self, seq, command, timeout=90):
        """Send ``command`` and wait for its converged state."""
        self.solver.send(seq, command)
        assert self.wait(lambda ms: any(k == "state" and q == seq and v.converged
                                        for k, q, v in ms), timeout), \
            f"command {seq} (insertion {command.insertion * 1e3:.1f} mm) not solved"

    def states(self, seq, converged):
        return [v for k, q, v in self.messages if k == "state" and q == seq and
                v.converged == converged]

    def faults(self):
        return [m for m in self.messages if m[0] in ("died", "restarted", "failed", "rejected")]


def test_the_real_time_solver_passes_the_fold_in_one_long_attempt(drive):
    """The drive's commands replayed, one at a time, to the simulator's solver process: no
    retry's budget passes the fold; once one with the whole budget has failed, the child
    announces one long attempt, traces round the fold, and then follows the commands to where
    the offline drive ended. Before the long attempt existed the fold's command never converged
    there; the supervisor lets the announced attempt run (without that it killed the child)."""
    airway_map, _, nav, _, commands = drive
    replay = Replay(airway_map)
    try:
        for seq, command in enumerate(commands):
            replay.solve(seq, command)
    finally:
        replay.solver.close()
    assert not replay.faults()
    tracing = [q for k, q, _ in replay.messages if k == "tracing"]
    assert tracing, "no long attempt"
    after = replay.states(tracing[0], converged=True)
    assert after[0].snapped_through and "traced round a fold" in after[0].message
    # failed attempts of that command before it: the retries, up to the whole budget
    assert len(replay.states(tracing[0], converged=False)) >= 3  # 50, 100 and 200 ms
    final = next(v for k, q, v in reversed(replay.messages) if k == "state" and v.converged)
    assert final.insertion == pytest.approx(nav.model.state.insertion, abs=1e-9)
    assert np.linalg.norm(final.tip_position - nav.model.state.tip_position) < 1e-3


@pytest.mark.parametrize("how", ["pull back 5 mm", "hold"])
def test_a_withdrawal_or_a_hold_does_not_wait_for_the_long_attempt(drive, how):
    """Sent as soon as the long attempt is announced, a command 5 mm back — or one that holds
    the catheter in its held state, as an emergency stop does (its insertion, roll and tendon
    displacements) — ends it (the fold's command fails, its message says it was interrupted)
    and is carried out within a second, where the attempt takes seconds; a command that
    pushes on waits for it (the test above)."""
    airway_map, _, _, _, commands = drive
    replay = Replay(airway_map)
    try:
        seq = 0
        while not any(k == "tracing" for k, _, _ in replay.messages):
            replay.solver.send(seq, commands[seq])
            assert replay.wait(lambda ms: any(k == "tracing" or (k == "state" and q == seq
                                                                 and v.converged)
                                              for k, q, v in ms), 90), f"command {seq}"
            seq += 1
        fold = seq - 1
        held = replay.states(fold - 1, converged=True)[-1]
        back = dataclasses.replace(commands[fold], insertion=held.insertion - 5e-3) \
            if how != "hold" else CatheterCommand(
                insertion=held.insertion, roll=held.roll,
                tendon_displacement=held.tendon_displacements)
        sent = time.monotonic()
        replay.solve(fold + 1, back, timeout=30)
        waited = time.monotonic() - sent
    finally:
        replay.solver.close()
    assert not replay.faults()
    ended = replay.states(fold, converged=False)[-1]
    assert "interrupted by a newer command" in ended.message
    assert not replay.states(fold, converged=True)
    assert replay.states(fold + 1, converged=True)[0].insertion == \
        pytest.approx(back.insertion, abs=1e-9)
    assert waited < 1.0
