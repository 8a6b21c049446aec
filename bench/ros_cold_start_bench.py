"""Benchmark of the simulator's start-up: time to the first ``/joint_states`` and to the first
answered parameter request, on a fresh install (cold) and on a later start (warm), for
``catheter_sim`` alone and for the whole ``sim`` graph, on a quiet machine and with one core
kept busy by another program.

Each start runs the simulator as ``ros2 run`` does (``catheter_sim``: the console-script module
with the shared YAML) or as ``ros2 launch`` does (``sim``: ``bronchonav launch sim
--processes``, one process per node in the launcher's session), while a probe node in this
process waits for the first ``/joint_states`` and calls ``/catheter_sim/get_parameters`` until
it is answered. Times are from the process's start (``Popen``) to the probe receiving each; the
CPU time the started processes used by the first state is recorded too (in total and by
catheter_sim with its solver: on a shared machine it does not depend on the other load as the
wall time does); then the simulator is stopped (SIGTERM) and the stop timed, with its exit code.

- ``cold``: numba's cache (``NUMBA_CACHE_DIR``) is a fresh, empty folder that
  ``python -m bronchonav.warmup`` then fills, as an install does (``make install``,
  ``setup.py install``); the first start after it. ``warmup_s`` is what that step took.
- ``warm``: the following starts on the same cache (``--repeats`` of them).
- ``no_warmup``: with ``--no-warmup-run``, also one start of ``catheter_sim`` on an empty cache
  (what a user who skipped the install step sees: numba compiles on the first start).
- ``busy_core``: the same with ``python -c 'while 1: pass'`` running meanwhile in a session of
  its own (another program keeping one of the cores busy); ``--no-busy`` skips it.

The conditions are interleaved (quiet, then busy, for each target) so that a change in the
machine's other load shows in both; the 1-minute load average before each start is recorded.

    .venv/bin/python bench/ros_cold_start_bench.py [--repeats 2] [--no-warmup-run] [--no-busy]

Prints one JSON object (seconds) with the machine and a summary per condition.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from machine import emit, machine_info

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", "65")

TIMEOUT_S = 120.0
"""Longest wait for one start (s)."""
BAR_S = 5.0
"""The bar: first ``/joint_states`` within this long of a fresh install's first launch (s)."""


class Probe:
    """A node that records when the simulator first publishes a state and first answers a
    parameter request (monotonic times, s)."""

    def __init__(self, node) -> None:
        from rcl_interfaces.srv import GetParameters
        from sensor_msgs.msg import JointState

        from bronchonav.ros import qos

        self.node = node
        self.first_state: float | None = None
        self.first_param: float | None = None
        self.param_value = None
        self._pending = None
        self._request = GetParameters.Request(names=["rate_hz"])
        self.client = node.create_client(GetParameters, "/catheter_sim/get_parameters")
        self.subscription = node.create_subscription(JointState, "/joint_states",
                                                     self._on_state, qos.STATE_SUB)

    def _on_state(self, _msg) -> None:
        if self.first_state is None:
            self.first_state = time.monotonic()

    def poll_parameters(self) -> None:
        """Send a parameter request when the service is there and none is pending."""
        if self.first_param is not None or not self.client.service_is_ready():
            return
        if self._pending is None or (self._pending.done() and self.first_param is None):
            self._pending = self.client.call_async(self._request)
            self._pending.add_done_callback(self._answered)

    def _answered(self, future) -> None:
        if self.first_param is None and future.result() is not None:
            self.first_param = time.monotonic()
            self.param_value = future.result().values[0].double_value


def command(launch: str | None) -> list[str]:
    """The command that starts the simulator: ``catheter_sim`` alone (as ``ros2 run`` does), or
    the launch configuration ``launch`` with one process per node (as ``ros2 launch`` does)."""
    from bronchonav.ros.runner import node_command

    if launch is None:
        return node_command("catheter_sim")
    return [sys.executable, "-m", "bronchonav.cli", "launch", launch, "--processes"]


def _process_tree_cpu(root: int) -> dict:
    """CPU time (user + system, s) used so far by ``root`` and its descendants: in total and
    by ``catheter_sim`` with its solver processes (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[float, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            cmdline = (stat.parent / "cmdline").read_text()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(pid)
        stats[pid] = ((int(fields[11]) + int(fields[12])) / tick, cmdline)

    def tree(pid: int) -> list[int]:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    pids = [p for p in tree(root) if p in stats]
    sim = [p for p in pids if "catheter_sim" in stats[p][1]]
    sim_tree = {q for p in sim for q in tree(p) if q in stats}
    return {"total": round(sum(stats[p][0] for p in pids), 2),
            "catheter_sim": round(sum(stats[p][0] for p in sim_tree), 2),
            "processes": len(pids)}


def start_once(node, cache_dir: Path, launch: str | None = None) -> dict:
    """Start the simulator (see :func:`command`) with numba's cache in ``cache_dir``; time its
    first state and its first answered parameter request; stop it (SIGTERM) and time that too."""
    deadline = time.monotonic() + 15.0
    while node.count_publishers("/joint_states"):  # a previous start's simulator, leaving
        if time.monotonic() > deadline:
            raise RuntimeError("another simulator publishes /joint_states on this domain")
        time.sleep(0.1)
    probe = Probe(node)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    log = tempfile.TemporaryFile("w+")
    load = round(os.getloadavg()[0], 2)
    t0 = time.monotonic()
    proc = subprocess.Popen(command(launch), env=env, stdout=subprocess.DEVNULL, stderr=log,
                            text=True, start_new_session=True)
    try:
        while probe.first_state is None or probe.first_param is None:
            if proc.poll() is not None or time.monotonic() - t0 > TIMEOUT_S:
                log.seek(0)
                raise RuntimeError(f"the simulator did not start: {log.read()[-2000:]}")
            probe.poll_parameters()
            time.sleep(0.005)
        cpu = _process_tree_cpu(proc.pid)
        t_stop = time.monotonic()
        proc.terminate()
        code = proc.wait(30)
        t_end = time.monotonic()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        node.destroy_subscription(probe.subscription)
        node.destroy_client(probe.client)
    log.seek(0)
    tracebacks = log.read().count("Traceback (most recent call last)")
    return {"first_joint_states_s": round(probe.first_state - t0, 3),
            "first_parameter_answer_s": round(probe.first_param - t0, 3),
            "parameter_answered_before_first_state": probe.first_param < probe.first_state,
            "cpu_s_at_first_state": cpu, "stop_s": round(t_end - t_stop, 3),
            "exit_code": code, "tracebacks": tracebacks, "load_average_1min_before": load}


def warm_up(cache_dir: Path) -> float:
    """``python -m bronchonav.warmup`` into ``cache_dir`` (as an install does); its wall time."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "bronchonav.warmup"], check=True,
                   env=dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir)),
                   stderr=subprocess.DEVNULL)
    return round(time.monotonic() - t0, 3)


@contextmanager
def busy_core(enabled: bool):
    """Keep one core busy with another program (a Python busy loop in a session of its own)."""
    if not enabled:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while 1: pass"], start_new_session=True)
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def condition(node, root: Path, launch: str | None, repeats: int, busy: bool) -> dict:
    """A fresh cache filled by the install warm-up, the first (cold) start on it and
    ``repeats`` warm starts, with or without a busy core."""
    cache = root / f"{launch or 'catheter_sim'}_{'busy' if busy else 'quiet'}"
    out = {"warmup_s": warm_up(cache)}
    with busy_core(busy):
        out["cold"] = start_once(node, cache, launch)
        out["warm"] = [start_once(node, cache, launch) for _ in range(repeats)]
    warm = sorted(r["first_joint_states_s"] for r in out["warm"])
    out["summary"] = {
        "cold_first_joint_states_s": out["cold"]["first_joint_states_s"],
        "warm_first_joint_states_s": warm,
        "first_parameter_answer_s": sorted(r["first_parameter_answer_s"]
                                           for r in [out["cold"], *out["warm"]]),
        "cpu_s_at_first_state": [r["cpu_s_at_first_state"] for r in [out["cold"], *out["warm"]]],
        "stop_s_max": max(r["stop_s"] for r in [out["cold"], *out["warm"]]),
        "exit_codes": sorted({r["exit_code"] for r in [out["cold"], *out["warm"]]}),
        "tracebacks": sum(r["tracebacks"] for r in [out["cold"], *out["warm"]]),
        "within_bar": all(r["first_joint_states_s"] <= BAR_S for r in [out["cold"], *out["warm"]]),
    }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="warm starts after each cold one")
    parser.add_argument("--no-warmup-run", action="store_true",
                        help="also time one catheter_sim start on an empty numba cache (no "
                             "install warm-up)")
    parser.add_argument("--no-busy", action="store_true",
                        help="skip the runs with one core kept busy by another program")
    parser.add_argument("--targets", nargs="+", choices=["catheter_sim", "sim", "hil"],
                        default=["catheter_sim", "sim"],
                        help="catheter_sim alone and/or these launch configurations")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("ros_cold_start_bench")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    root = Path(tempfile.mkdtemp(prefix="bronchonav_numba_"))
    result: dict = {"machine": machine_info("numba"), "bar_s": BAR_S,
                    "commands": {t: " ".join(command(None if t == "catheter_sim" else t)[1:])
                                 for t in args.targets}}
    try:
        if args.no_warmup_run:
            result["no_warmup"] = start_once(node, root / "empty")
        for target in args.targets:
            launch = None if target == "catheter_sim" else target
            result[target] = {"quiet": condition(node, root, launch, args.repeats, False)}
            if not args.no_busy:
                result[target]["busy_core"] = condition(node, root, launch, args.repeats, True)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        shutil.rmtree(root, ignore_errors=True)
    result["summary"] = {f"{target} {load}": result[target][load]["summary"]
                         for target in args.targets for load in result[target]}
    result["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
