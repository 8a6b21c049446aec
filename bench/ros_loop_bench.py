"""Benchmark of the catheter_sim loop through ROS 2: rate, jitter, deadline misses, latency.

Starts ``catheter_sim`` as its own process (the console-script module, the shared YAML, the map
given) and, in this process, an external controller node that streams forward commands
(``/catheter/command``) at 100 Hz — an insertion sweep with changing tendon pulls inside the
airway — and times each command until ``/joint_states`` shows it (command→state latency). The
loop's own statistics (rate, tick jitter, loop step time, deadline misses) and the solver's
(solve time, failures; the solver runs in its own process) come from its ``/diagnostics``.
Beside each measured run, :mod:`wakeup_probe` records on every CPU how late this machine wakes an
idle thread on the same schedule (``platform``): on a virtual machine the host's pauses reach
every program, so a missed tick within a period of such a stall counts in
``misses_during_platform_stalls`` and the rest in ``own_deadline_misses``. Then it searches the
highest rate the loop holds (achieved rate within 2 % of the target and no own deadline misses)
with short runs, from ``--rate`` up.

    .venv/bin/python bench/ros_loop_bench.py [--seconds 60] [--rate 200] [--map DIR]

Prints one JSON object: ``rate_hz``, ``achieved_rate_hz``, ``jitter_p99_ms``, ``step_p99_ms``,
``deadline_misses``, ``own_deadline_misses``, ``misses_during_platform_stalls``,
``latency_p99_ms``, ``latency_median_ms``, ``max_rate_hz``, the rates tried, ``platform`` and the
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from pathlib import Path

import numpy as np
from machine import machine_info

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(90 + os.getpid() % 10))


class Controller:
    """External controller: 100 Hz forward commands, latency from /joint_states."""

    def __init__(self, node, command_rate_hz: float = 100.0) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        from bronchonav.ros import qos

        self.node = node
        self.pub = node.create_publisher(Float64MultiArray, "/catheter/command", qos.COMMAND)
        node.create_subscription(JointState, "/joint_states", self._on_state, qos.STATE_SUB)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos.DEFAULT)
        self.Float64MultiArray = Float64MultiArray
        self.sent: dict[float, float] = {}
        self.latencies: list[float] = []
        self.diag: dict = {}
        self.states = 0
        self._lock = threading.Lock()
        self.period = 1.0 / command_rate_hz
        self._k = 0
        self.measure = False

    def command(self) -> None:
        """Send the next command: insertion 20→120 mm and back, tendons swept."""
        k = self._k
        self._k += 1
        phase = (k % 2000) / 2000.0
        insertion = round(0.02 + 0.10 * (1 - abs(2 * phase - 1)) + 1e-7 * (k % 1000), 9)
        bend = 1.5e-3 * np.sin(2 * np.pi * k / 400.0)
        disp = [bend, 0.0, -bend, 0.0]
        with self._lock:
            self.sent[insertion] = time.monotonic()
            if len(self.sent) > 500:
                for key in list(self.sent)[:250]:
                    del self.sent[key]
        self.pub.publish(self.Float64MultiArray(data=[insertion, 0.0, *disp]))

    def _on_state(self, msg) -> None:
        now = time.monotonic()
        self.states += 1
        q = round(msg.position[0], 9)
        with self._lock:
            t = self.sent.pop(q, None)
        if t is not None and self.measure:
            self.latencies.append(now - t)

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name.startswith("catheter_sim"):
                self.diag = {kv.key: kv.value for kv in s.values}


def during_stalls(misses: list[float], platform: list[dict], period: float) -> int:
    """How many of the loop's latest missed ticks (scheduled Unix times, s; up to 20) fell within
    a period of a stall an idle probe saw (a wake-up more than 1 ms late on some CPU, see
    :data:`wakeup_probe.STALL_S`)."""
    events = [e for p in platform for e in p["late_events"]]
    return sum(any(t - period <= m <= t + late + period for t, late in events) for m in misses)


def holds(result: dict) -> bool:
    """Whether the loop held its rate: achieved within 2 %, and no missed tick outside a stall
    of the platform itself."""
    return (result["achieved_rate_hz"] >= 0.98 * result["rate_hz"]
            and result["own_deadline_misses"] == 0)


def run(rate_hz: float, seconds: float, map_folder: str, warmup: float = 4.0,
        realtime_priority: int | None = None) -> dict:
    """One run at ``rate_hz``: start the sim process and a wake-up probe per CPU, stream
    commands, collect statistics."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from bronchonav.ros.runner import node_command

    extra = {"rate_hz": float(rate_hz), "map": map_folder, "diagnostics_rate_hz": 1.0,
             "watchdog_timeout_s": 1.0}
    if realtime_priority is not None:
        extra["realtime_priority"] = int(realtime_priority)
    cmd = node_command("catheter_sim", extra=extra)
    log = tempfile.TemporaryFile("w+")  # a pipe nobody reads would block the node when full
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log,
                            text=True)
    rclpy.init()
    node = rclpy.create_node("ros_loop_bench")
    ctl = Controller(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        deadline = time.monotonic() + 60
        while ctl.states == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"catheter_sim did not start: {log.read()[-2000:]}")
            time.sleep(0.1)
        t0 = time.monotonic()
        next_t = t0
        base_misses = None
        # the probes start with the warm-up: their own start-up must not fall in the measurement
        probers = [subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("wakeup_probe.py")),
             "--seconds", str(warmup + 1.2 + seconds + 1.0), "--rate", str(rate_hz),
             "--cpu", str(cpu)],
            stdout=subprocess.PIPE, text=True) for cpu in sorted(os.sched_getaffinity(0))]
        while True:
            now = time.monotonic()
            if now >= t0 + warmup and not ctl.measure:
                ctl.measure = True
                time.sleep(1.2)  # a fresh /diagnostics after the warm-up
                base_misses = int(ctl.diag.get("deadline_misses", 0))
                t_measure, unix_measure = time.monotonic(), time.time()
            if ctl.measure and now >= t_measure + seconds:
                break
            ctl.command()
            next_t += ctl.period
            time.sleep(max(0.0, next_t - time.monotonic()))
        time.sleep(1.5)  # the last /diagnostics
        d = dict(ctl.diag)
        platform = [json.loads(p.communicate(timeout=30)[0]) for p in probers]
        for p in platform:  # the measured window only
            p["late_events"] = [e for e in p["late_events"] if e[0] >= unix_measure - 0.1]
        misses = [float(t) for t in d.get("recent_misses_unix_s", "").split()
                  if float(t) >= unix_measure]
        stalled = during_stalls(misses, platform, 1.0 / rate_hz)
        total_misses = int(d.get("deadline_misses", 0)) - (base_misses or 0)
        lat = np.array(ctl.latencies) * 1e3
        return {
            "rate_hz": rate_hz,
            "achieved_rate_hz": float(d.get("rate_hz", "nan")),
            "jitter_p99_ms": float(d.get("jitter_p99_ms", "nan")),
            "step_median_ms": float(d.get("step_median_ms", "nan")),
            "step_p99_ms": float(d.get("step_p99_ms", "nan")),
            "step_max_ms": float(d.get("step_max_ms", "nan")),
            "solve_median_ms": float(d.get("solve_median_ms", "nan")),
            "solve_p99_ms": float(d.get("solve_p99_ms", "nan")),
            "solver_failures": int(d.get("solver_failures", 0)),
            "deadline_misses": total_misses,
            "own_deadline_misses": total_misses - stalled,
            "ticks": int(d.get("ticks", 0)),
            "commands_refused": int(d.get("commands_refused", 0)),
            "commands_refused_by_kind": {k[len("refused_"):]: int(v) for k, v in d.items()
                                         if k.startswith("refused_") and int(v)},
            "last_refusal": d.get("last_refusal", ""),
            "latency_median_ms": float(np.median(lat)) if len(lat) else float("nan"),
            "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "latency_samples": int(len(lat)),
            "seconds": seconds,
            "platform": platform,
            "miss_times_unix_s": misses,
            "misses_during_platform_stalls": stalled,
        }
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time at --rate (s)")
    parser.add_argument("--rate", type=float, default=200.0, help="main loop rate (Hz)")
    parser.add_argument("--search-seconds", type=float, default=8.0,
                        help="measured time of each max-rate trial (s)")
    parser.add_argument("--rates", default="300,400,500,700,1000",
                        help="rates tried for the highest rate held (Hz, ascending)")
    parser.add_argument("--realtime-priority", type=int, default=None,
                        help="catheter_sim SCHED_FIFO priority (default: the YAML's; 0 = off)")
    parser.add_argument("--map", default=None, help="map folder (default maps/phantom_default "
                                                    "or the phantom built on start)")
    args = parser.parse_args(argv)
    from bronchonav.ros.demo import default_map

    map_folder = args.map or default_map()
    main_run = run(args.rate, args.seconds, map_folder, realtime_priority=args.realtime_priority)
    trials = []
    max_rate = args.rate if holds(main_run) else 0.0
    for r in [float(x) for x in args.rates.split(",") if x]:
        if r <= args.rate:
            continue
        t = run(r, args.search_seconds, map_folder, realtime_priority=args.realtime_priority)
        trials.append({k: t[k] for k in ("rate_hz", "achieved_rate_hz", "jitter_p99_ms",
                                         "step_p99_ms", "deadline_misses", "own_deadline_misses",
                                         "latency_p99_ms")})
        if not holds(t):
            break
        max_rate = r
    out = {**main_run, "realtime_priority": args.realtime_priority, "max_rate_hz": max_rate,
           "max_rate_trials": trials, "map": map_folder, "machine": machine_info()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
