"""Benchmark of the catheter simulator's start-up: time to the first ``/joint_states`` and to the
first answered parameter request, on a fresh install (cold) and on a later start (warm).

Each start runs ``catheter_sim`` as its own process, as ``ros2 run`` does (the console-script
module with the shared YAML), while a probe node in this process waits for the node's first
``/joint_states`` and calls ``/catheter_sim/get_parameters`` until it is answered. Times are
from the process's start (``Popen``) to the probe receiving each.

- ``cold``: numba's cache (``NUMBA_CACHE_DIR``) is a fresh, empty folder that
  ``python -m bronchonav.warmup`` then fills, as an install does (``make install``,
  ``setup.py install``); the first start after it. ``warmup_s`` is what that step took.
- ``warm``: the following starts on the same cache (``--repeats`` of them).
- ``no_warmup``: with ``--no-warmup-run``, also one start on an empty cache (what a user who
  skipped the install step sees: numba compiles on the first start).

    .venv/bin/python bench/ros_cold_start_bench.py [--repeats 3] [--no-warmup-run]

Prints one JSON object (seconds) with the machine; the 1-minute load average is in it, as other
work on a shared machine lengthens every start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine import emit, machine_info

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", "65")

TIMEOUT_S = 120.0
"""Longest wait for one start (s)."""


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


def start_once(node, cache_dir: Path, launch: str | None = None) -> dict:
    """Start the simulator (see :func:`command`) with numba's cache in ``cache_dir``; time its
    first state and its first answered parameter request; stop it (SIGTERM) and time that too."""
    probe = Probe(node)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    log = tempfile.TemporaryFile("w+")
    t0 = time.monotonic()
    proc = subprocess.Popen(command(launch), env=env, stdout=subprocess.DEVNULL, stderr=log,
                            text=True, start_new_session=True)
    try:
        while probe.first_state is None or probe.first_param is None:
            if proc.poll() is not None or time.monotonic() - t0 > TIMEOUT_S:
                log.seek(0)
                raise RuntimeError(f"catheter_sim did not start: {log.read()[-2000:]}")
            probe.poll_parameters()
            time.sleep(0.005)
        t_stop = time.monotonic()
        proc.terminate()
        code = proc.wait(30)
        t_end = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        node.destroy_subscription(probe.subscription)
        node.destroy_client(probe.client)
    return {"first_joint_states_s": round(probe.first_state - t0, 3),
            "first_parameter_answer_s": round(probe.first_param - t0, 3),
            "parameter_answered_before_first_state": probe.first_param < probe.first_state,
            "stop_s": round(t_end - t_stop, 3), "exit_code": code}


def warm_up(cache_dir: Path) -> float:
    """``python -m bronchonav.warmup`` into ``cache_dir`` (as an install does); its wall time."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "bronchonav.warmup"], check=True,
                   env=dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir)),
                   stderr=subprocess.DEVNULL)
    return round(time.monotonic() - t0, 3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm starts (after the cold one)")
    parser.add_argument("--no-warmup-run", action="store_true",
                        help="also time one start on an empty numba cache (no install warm-up)")
    parser.add_argument("--launch", choices=["hil", "sim"], default=None,
                        help="start this launch configuration (one process per node, "
                             "`bronchonav launch NAME --processes`) instead of catheter_sim alone")
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
    result: dict = {"machine": machine_info("numba"),
                    "started": " ".join(command(args.launch)[1:])}
    try:
        if args.no_warmup_run:
            result["no_warmup"] = start_once(node, root / "empty", args.launch)
        cache = root / "installed"
        result["warmup_s"] = warm_up(cache)
        result["cold"] = start_once(node, cache, args.launch)
        result["warm"] = [start_once(node, cache, args.launch) for _ in range(args.repeats)]
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        shutil.rmtree(root, ignore_errors=True)
    warm = sorted(r["first_joint_states_s"] for r in result["warm"])
    result["warm_first_joint_states_median_s"] = warm[len(warm) // 2] if warm else None
    result["bar_s"] = 5.0
    result["cold_within_bar"] = result["cold"]["first_joint_states_s"] <= 5.0
    result["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
