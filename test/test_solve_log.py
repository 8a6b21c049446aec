"""The real-time simulator's record of what its solver did (no ROS): counts, the last failure
and snap-through, solve-time statistics, and reads that wait for a record being made."""

import dataclasses
import threading

import pytest

from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams
from bronchonav.catheter.runtime import SolveLog
from bronchonav.catheter.state import SNAP_THROUGH


@pytest.fixture(scope="module")
def solved():
    """A converged state of a free catheter (no airways)."""
    model = CatheterModel(CatheterParams.default(), n_nodes=10)
    state = model.step(CatheterCommand(insertion=0.05))
    assert state.converged and not state.message
    return state


def _failed(state, why):
    return dataclasses.replace(state, converged=False, message=f"solve failed ({why})")


def test_the_log_counts_failures_and_snap_throughs_and_keeps_their_last_messages(solved):
    log = SolveLog()
    assert log.counts().solves == 0 and log.counts().last_failure == ""
    snap = dataclasses.replace(solved, message=f"{SNAP_THROUGH}: relaxed through a fold")
    for state in (solved, _failed(solved, "a"), _failed(solved, "b")):
        log.record(state)
    n = log.counts()
    assert (n.solves, n.failures, n.consecutive_failures) == (3, 2, 2)
    assert n.last_failure == "solve failed (b)" and n.snap_throughs == 0
    log.record(snap)
    log.record(solved)
    n = log.counts()
    assert (n.solves, n.failures, n.consecutive_failures) == (5, 2, 0)
    assert n.last_failure == "solve failed (b)"  # kept after the solver recovered
    assert (n.snap_throughs, n.last_snap_through) == (1, snap.message)
    log.record(_failed(solved, "c"))
    assert log.counts().consecutive_failures == 1 and log.counts().failures == 3


def test_solve_time_statistics_are_over_the_recent_window(solved):
    log = SolveLog(window=100)
    for ms in range(1, 201):  # 1..200 ms; the window keeps 101..200
        log.record(dataclasses.replace(solved, solve_time_s=ms * 1e-3))
    n = log.counts()
    assert n.solves == 200
    assert n.solve_median_ms == pytest.approx(150.5)
    assert n.solve_max_ms == pytest.approx(200.0)
    assert 198.0 < n.solve_p99_ms < 200.0


class _HeldInRecord:
    """A state that holds the thread recording it in the middle of :meth:`SolveLog.record`:
    reading its solve time (after the solve was counted, before the failure is) waits until
    :attr:`release` is set."""

    def __init__(self, state):
        self._state = state
        self.inside = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._state, name)

    @property
    def solve_time_s(self):
        self.inside.set()
        self.release.wait(10.0)
        return self._state.solve_time_s


def test_a_reader_never_sees_a_record_half_made(solved):
    """While one thread is in the middle of recording a failure, another thread's read waits
    for it and then sees all of it (without the log's lock the read returned at once, with the
    solve counted and its failure not)."""
    log = SolveLog()
    held = _HeldInRecord(_failed(solved, "x"))
    writer = threading.Thread(target=log.record, args=(held,))
    writer.start()
    assert held.inside.wait(10.0)
    seen = []
    reader = threading.Thread(target=lambda: seen.append(log.counts()))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive() and not seen  # it waits for the record...
    held.release.set()
    writer.join(10.0)
    reader.join(10.0)
    n = seen[0]  # ...and then sees the whole of it
    assert (n.solves, n.failures, n.consecutive_failures) == (1, 1, 1)
    assert n.last_failure == "solve failed (x)"
