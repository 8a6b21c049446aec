"""The real-time simulator's record of what its solver did (no ROS): counts, the last failure
and snap-through, solve-time statistics, and totals that add up when threads record at once."""

import dataclasses
import threading

import numpy as np
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


def test_counts_add_up_when_threads_record_and_read_at_once(solved):
    log = SolveLog()
    fail = _failed(solved, "x")
    per_thread = 2000
    torn = []

    def writer():
        for k in range(per_thread):
            log.record(fail if k % 2 else solved)

    def reader():
        for _ in range(2000):
            n = log.counts()
            if (n.failures > 0) != (n.last_failure != "") or n.consecutive_failures > n.failures \
                    or n.failures > n.solves:
                torn.append(n)

    threads = [threading.Thread(target=writer) for _ in range(4)] + [threading.Thread(
        target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n = log.counts()
    assert n.solves == 4 * per_thread and n.failures == 2 * per_thread
    assert not torn
    assert np.isfinite(n.solve_median_ms)
