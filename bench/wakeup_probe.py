"""How punctually this machine wakes a lone thread at a fixed rate: the platform's own floor.

A process with one thread and nothing else to do sleeps until each tick of a ``--rate`` Hz
schedule and records how late it woke (pinned to one CPU with ``--cpu``: a virtual CPU can be
paused alone). On a virtual machine the host may pause the virtual CPU
for milliseconds; such pauses reach every program and are not the loop's own misses.
:mod:`ros_loop_bench` runs this probe beside the simulation for the same time.

    .venv/bin/python bench/wakeup_probe.py [--seconds 60] [--rate 200] [--cpu N]

Prints one JSON object: ``late_p99_ms``, ``late_max_ms``, ``late_over_period`` (wake-ups later
than one period: a loop doing no work would have missed its deadline), ``late_events``
([scheduled Unix time s, lateness s] of the wake-ups more than ``STALL_S`` late: stalls),
``ticks``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

STALL_S = 1e-3
"""A wake-up this late (s) counts as a stall: an idle thread's p99 lateness here is 0.13-0.19 ms,
and a pause that began before the wake-up was due shows only its tail."""


def probe(seconds: float, rate_hz: float, realtime_priority: int = 0,
          cpu: int | None = None) -> dict:
    """Sleep to a ``rate_hz`` schedule for ``seconds`` (on ``cpu`` only, if given); lateness
    statistics (ms)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if realtime_priority > 0:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime_priority))
    period = 1.0 / rate_hz
    n = int(seconds * rate_hz)
    late = np.empty(n)
    events = []
    next_t = time.monotonic()
    for k in range(n):
        next_t += period
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        late[k] = time.monotonic() - next_t
        if late[k] > STALL_S:
            events.append([time.time() - late[k], float(late[k])])
    late_ms = late * 1e3
    return {"rate_hz": rate_hz, "seconds": seconds, "ticks": n,
            "late_p99_ms": float(np.percentile(late_ms, 99)), "late_max_ms": float(late_ms.max()),
            "late_over_period": int(np.sum(late > period)), "late_events": events,
            "realtime_priority": realtime_priority, "cpu": cpu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=200.0, help="Hz")
    parser.add_argument("--realtime-priority", type=int, default=0,
                        help="SCHED_FIFO priority (0 = normal scheduling)")
    parser.add_argument("--cpu", type=int, default=None, help="run on this CPU only")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.seconds, args.rate, args.realtime_priority, args.cpu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
