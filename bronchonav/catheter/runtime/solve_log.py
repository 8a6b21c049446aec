"""What the solver did: counts of solves, failures and snap-throughs, kept across threads.

The real-time simulator receives solved states on a receiver thread and reports them from its
timer and diagnostics callbacks. :class:`SolveLog` is the one place those counts live: states
are recorded under a lock and read back as one consistent :class:`SolveCounts` (a failure
count always goes with the message of that failure, never with an older one).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SolveCounts:
    """A consistent snapshot of a :class:`SolveLog`.

    Attributes
    ----------
    solves : int
        States recorded (converged or not).
    failures : int
        Failed solves (the catheter kept its previous state).
    consecutive_failures : int
        Failed solves since the last converged one.
    last_failure : str
        The message of the last failed solve ("" if none); kept after the solver recovers.
    snap_throughs : int
        Converged states reached by a snap-through past a fold of the quasi-static path.
    last_snap_through : str
        The message of the last of them ("" if none).
    solve_median_ms, solve_p99_ms, solve_max_ms : float
        Solve-time statistics over the recent solves (ms; 0 before the first).
    """

    solves: int
    failures: int
    consecutive_failures: int
    last_failure: str
    snap_throughs: int
    last_snap_through: str
    solve_median_ms: float
    solve_p99_ms: float
    solve_max_ms: float


class SolveLog:
    """Thread-safe record of solved states (:class:`~bronchonav.catheter.CatheterState`).

    Parameters
    ----------
    window : int
        How many recent solve times the statistics are taken over.
    """

    def __init__(self, window: int = 20000) -> None:
        self._lock = threading.Lock()
        self._times: deque[float] = deque(maxlen=window)
        self._solves = 0
        self._failures = 0
        self._consecutive = 0
        self._last_failure = ""
        self._snaps = 0
        self._last_snap = ""

    def record(self, state) -> None:
        """Count one solved (or failed) state: its solve time, and whether it failed or came
        by a snap-through."""
        with self._lock:
            self._solves += 1
            self._times.append(float(state.solve_time_s))
            if not state.converged:
                self._failures += 1
                self._consecutive += 1
                self._last_failure = state.message
                return
            self._consecutive = 0
            if state.snapped_through:
                self._snaps += 1
                self._last_snap = state.message

    def counts(self) -> SolveCounts:
        """The counts and solve-time statistics as of now, read together."""
        with self._lock:  # copy under the lock, compute outside it (record() must not wait)
            t = np.fromiter(self._times, dtype=float, count=len(self._times)) * 1e3
            counts = (self._solves, self._failures, self._consecutive, self._last_failure,
                      self._snaps, self._last_snap)
        stats = np.percentile(t, [50, 99, 100]) if len(t) else np.zeros(3)
        return SolveCounts(*counts, *(float(v) for v in stats))
