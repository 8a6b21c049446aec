"""A fixed-rate loop on a dedicated thread, with timing statistics (no ROS imports).

Each tick is scheduled at ``t0 + k / rate``; the thread sleeps until then, runs the tick
function and records

- *jitter*: how late the tick started relative to its schedule (s),
- *step time*: how long the tick function ran (s),
- a *deadline miss* when a tick finished after the next tick was due (start + period).

A loop that falls more than one period behind skips the missed ticks (they count as misses)
instead of bursting to catch up.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque

import numpy as np


def set_realtime(priority: int) -> bool:
    """Put the calling thread under ``SCHED_FIFO`` at ``priority`` (1–99; 0 means "do not").

    Returns whether it worked: it needs Linux and the permission (root, ``CAP_SYS_NICE`` or an
    ``rtprio`` limit, as for ros2_control's controller manager).
    """
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
    except (PermissionError, OSError):
        return False
    return True


def freeze_startup_heap() -> None:
    """Collect garbage once, then move every object alive (map, numba, rclpy: about 200 000)
    out of the garbage collector's reach (:func:`gc.freeze`).

    Call it when a process has finished starting and before a fixed-rate loop starts (again
    later is cheap). A full collection over those objects stops every thread of the process
    for about 90 ms (measured here), which a 200 Hz loop sees as 18 missed ticks.
    """
    import gc

    gc.collect()
    gc.freeze()


class _Ring:
    """The last ``size`` floats, in a preallocated array (no allocation per tick)."""

    def __init__(self, size: int) -> None:
        self._data = np.zeros(size)
        self._n = 0

    def append(self, value: float) -> None:
        self._data[self._n % len(self._data)] = value
        self._n += 1

    def values(self) -> np.ndarray:
        """A copy of the stored values (oldest first)."""
        size = len(self._data)
        if self._n <= size:
            return self._data[:self._n].copy()
        i = self._n % size
        return np.concatenate([self._data[i:], self._data[:i]])


class FixedRateLoop:
    """Run ``tick(now_s)`` at ``rate_hz`` on a background thread.

    Parameters
    ----------
    rate_hz : float
        Loop rate (Hz).
    tick : callable
        Called with the monotonic time (s) of the tick's start.
    window : int
        Number of recent ticks kept for the statistics.
    name : str
        Thread name.
    switch_interval_s : float or None
        If given, sets :func:`sys.setswitchinterval` (process-wide) so that the loop thread
        gets the GIL back quickly from busy Python threads (CPython's default is 5 ms, which
        alone would exceed a 1 kHz period).
    realtime_priority : int
        ``SCHED_FIFO`` priority of the loop thread only (0 = normal scheduling); see
        :func:`set_realtime`. Whether it took effect is :attr:`realtime` once the loop runs.
    """

    def __init__(self, rate_hz: float, tick, window: int = 20000, name: str = "fixed-rate-loop",
                 switch_interval_s: float | None = 2e-4, realtime_priority: int = 0) -> None:
        if not (rate_hz > 0 and np.isfinite(rate_hz)):
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        self.rate_hz = float(rate_hz)
        self.period = 1.0 / self.rate_hz
        self._tick = tick
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()
        self._jitter = _Ring(window)
        self._step = _Ring(window)
        self._starts = _Ring(window)
        self.ticks = 0
        self.deadline_misses = 0
        self.recent_misses: deque[float] = deque(maxlen=20)
        """Wall-clock (Unix, s) schedule times of the latest missed ticks (skipped ones too)."""
        self.skipped_ticks = 0
        self.errors = 0
        self.last_error: str = ""
        self._switch_interval = switch_interval_s
        self.realtime_priority = int(realtime_priority)
        self.realtime = False
        """Whether the loop thread runs under ``SCHED_FIFO``."""
        self.rate_window_s = 2.0
        """The achieved rate is measured over this many recent seconds."""

    def start(self) -> "FixedRateLoop":
        """Start the thread (returns once it runs, with :attr:`realtime` set)."""
        if self._switch_interval is not None:
            sys.setswitchinterval(min(sys.getswitchinterval(), self._switch_interval))
        self._thread.start()
        self._started.wait(5.0)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread.is_alive()

    def _run(self) -> None:
        self.realtime = set_realtime(self.realtime_priority)
        self._started.set()
        period = self.period
        next_t = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if next_t - now > 0:
                self._stop.wait(next_t - now) if next_t - now > 2e-3 else time.sleep(next_t - now)
                continue
            start = time.monotonic()
            try:
                self._tick(start)
            except Exception as exc:  # the loop must keep running; the error is reported
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            end = time.monotonic()
            with self._lock:
                self.ticks += 1
                self._jitter.append(start - next_t)
                self._step.append(end - start)
                self._starts.append(start)
                if end > next_t + period:
                    self.deadline_misses += 1
                    self.recent_misses.append(time.time() - (end - next_t))
            next_t += period
            behind = end - next_t
            if behind > period:
                skipped = int(behind // period)
                to_unix = time.time() - time.monotonic()
                with self._lock:
                    self.skipped_ticks += skipped
                    self.deadline_misses += skipped
                    self.recent_misses.extend(to_unix + next_t + k * period
                                              for k in range(skipped))
                next_t += skipped * period

    def stats(self) -> dict:
        """Statistics: the achieved rate over the last ``rate_window_s`` (Hz), jitter and step
        times over the recent ``window`` ticks (ms), counts since the start, and when the latest
        misses were scheduled (Unix time, s)."""
        with self._lock:
            jitter = self._jitter.values()
            step = self._step.values()
            starts = self._starts.values()
            ticks, misses, skipped = self.ticks, self.deadline_misses, self.skipped_ticks
            recent_misses = list(self.recent_misses)
        out = {"target_rate_hz": self.rate_hz, "ticks": ticks, "deadline_misses": misses,
               "skipped_ticks": skipped, "errors": self.errors,
               "recent_misses_unix_s": recent_misses}
        recent = starts[starts >= starts[-1] - self.rate_window_s] if len(starts) else starts
        if len(recent) >= 2:
            out["rate_hz"] = float((len(recent) - 1) / (recent[-1] - recent[0]))
        else:
            out["rate_hz"] = 0.0
        for key, arr in (("jitter", jitter), ("step", step)):
            if len(arr):
                p50, p99 = np.percentile(arr, [50, 99])
                out[f"{key}_median_ms"] = float(p50 * 1e3)
                out[f"{key}_p99_ms"] = float(p99 * 1e3)
                out[f"{key}_max_ms"] = float(arr.max() * 1e3)
            else:
                out[f"{key}_median_ms"] = out[f"{key}_p99_ms"] = out[f"{key}_max_ms"] = 0.0
        return out
