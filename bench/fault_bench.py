"""Fault-injection benchmark of the HIL link: the long cases of ``test/test_hil_faults.py``.

Starts ``catheter_sim`` as its own process (as on a HIL bench) and, in this process, a controller
and an operator node, then measures:

- ``flood``: a controller floods ``/catheter/command`` at ``--flood-hz`` for ``--flood-seconds``;
  the loop's achieved rate (its own count over 2 s windows, from ``/diagnostics``) against the
  rate in the same run before the flood (the issue asks within 2 %), and that every command sent
  is accounted for (accepted, refused over the rate limit, or lost unread in the queue);
- ``sigkill``: ``--kills`` SIGKILLs of the active solver process, each once the standby is ready:
  time to ERROR on ``/diagnostics`` and to recovery (solver running, state not stale);
- ``sigkill_no_standby``: the same with ``solver_standby`` false (a fresh solver starts: the
  catheter holds meanwhile, stamps stale, ERROR);
- ``sigstop``: the solver stops answering (SIGSTOP): killed after ``solver_hang_timeout_s`` and
  replaced;
- ``unreachable``: an in-limit insertion the solver cannot reach, held ``--hold-seconds``: how
  many ``/diagnostics`` said OK meanwhile (should be none);
- ``plan_route``: ``--requests`` requests in a burst to ``/plan_route``: how many were answered.

    .venv/bin/python bench/fault_bench.py [--map DIR] [--flood-seconds 20] [--kills 5] [--out F]

Prints one JSON object (see :func:`bench.machine.emit`). Timing figures depend on the machine's
load: run it on a quiet machine and read ``load_avg``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from machine import emit, machine_info

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", "64")


class Graph:
    """catheter_sim as a process, and an operator/controller node spinning in this process."""

    def __init__(self, map_folder: str, log: Path, **params) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        from bronchonav.ros import qos
        from bronchonav.ros.runner import node_command

        extra = {"map": map_folder, "diagnostics_rate_hz": 10.0, **params}
        self.log = open(log, "w")
        self.proc = subprocess.Popen(node_command("catheter_sim", extra=extra),
                                     start_new_session=True, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.node = rclpy.create_node(f"fault_bench_{os.getpid()}")
        self.diags: list = []
        self.states: list = []
        self.lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag,
                                      QoSProfile(depth=100))
        self.node.create_subscription(JointState, "/joint_states", self._on_state,
                                      qos.STATE_SUB)
        self.pub = self.node.create_publisher(Float64MultiArray, "/catheter/command",
                                              QoSProfile(depth=1000))
        self.Float64MultiArray = Float64MultiArray
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name.startswith("catheter_sim"):
                with self.lock:
                    self.diags.append((time.monotonic(), s.level, s.message,
                                       {kv.key: kv.value for kv in s.values}))

    def _on_state(self, msg) -> None:
        with self.lock:
            self.states.append((time.monotonic(), msg.position[0]))

    def command(self, insertion: float) -> None:
        self.pub.publish(self.Float64MultiArray(data=[insertion, 0.0, 0.0, 0.0, 0.0, 0.0]))

    def diag(self, predicate=lambda level, message, v: True, after=None, timeout=30.0):
        """The first status after ``after`` (default now) satisfying ``predicate``."""
        after = time.monotonic() if after is None else after
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for t, level, message, v in self.diags:
                    if t >= after and predicate(level, message, v):
                        return t, level, message, v
            time.sleep(0.005)
        raise TimeoutError("no suitable /diagnostics")

    def ready(self, timeout: float = 180.0) -> None:
        self.diag(lambda lv, m, v: True, after=0.0, timeout=timeout)
        self.diag(lambda lv, m, v: v["solver_standby"] == "true" or
                  self.params_standby is False, after=0.0, timeout=timeout)

    params_standby = True

    def close(self) -> int:
        self.executor.shutdown()
        self.node.destroy_node()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


def flood(g: Graph, rate_hz: float, seconds: float, target_hz: float) -> dict:
    """Flood and compare the loop's rate with the rate before, in 2 s windows."""
    keys = ("commands_accepted", "refused_rate_limit", "refused_queue_overflow")
    g.command(0.05)
    time.sleep(3.0)
    before = [g.diag(after=time.monotonic() + 2.0)[3] for _ in range(3)]
    from rclpy._rclpy_pybind11 import RCLError

    sent, failed, t0 = 0, 0, time.monotonic()
    rates = []
    next_diag = t0 + 2.0
    while time.monotonic() - t0 < seconds:
        target = int((time.monotonic() - t0) * rate_hz)
        while sent < target:
            try:
                g.command(0.05 + 1e-6 * (sent % 2))
            except RCLError:  # the writer's history is full of unacknowledged commands
                failed += 1
                break
            sent += 1
        if time.monotonic() > next_diag:
            with g.lock:
                rates.append(float(g.diags[-1][3]["rate_hz"]))
            next_diag += 2.0
        time.sleep(2e-4)
    elapsed = time.monotonic() - t0
    first = before[-1]
    _, _, _, after = g.diag(lambda lv, m, v: sum(int(v[k]) - int(first[k]) for k in keys) >= sent,
                            timeout=30.0)
    delta = {k: int(after[k]) - int(first[k]) for k in keys}
    rate_before = float(np.mean([float(v["rate_hz"]) for v in before]))
    return {"flood_hz": sent / elapsed, "seconds": elapsed, "sent": sent,
            "publish_calls_refused_by_dds": failed, **delta,
            "accounted": sum(delta.values()) == sent,
            "loop_rate_before_hz": rate_before, "loop_rate_during_min_hz": min(rates),
            "loop_rate_during_mean_hz": float(np.mean(rates)),
            "holds_within_2pct": min(rates) >= 0.98 * rate_before,
            "target_rate_hz": target_hz}


def kill_once(g: Graph, sig=signal.SIGKILL, standby: bool = True) -> dict:
    """Kill (or stop) the active solver; time ERROR and recovery; check stale stamps."""
    if standby:
        g.diag(lambda lv, m, v: v["solver_standby"] == "true", timeout=180.0)
    insertion = 0.06 + 0.01 * np.random.default_rng().integers(0, 5)
    g.command(insertion)
    g.diag(lambda lv, m, v: v["insertion_m"] == f"{insertion:.4f}" and v["state_stale"] == "false")
    _, _, _, v = g.diag()
    pid = int(v["solver_pid"])
    t_kill = time.monotonic()
    os.kill(pid, sig)
    if sig == signal.SIGSTOP:  # a hung solver shows once a command waits for it
        insertion += 0.005
        g.command(insertion)
    t_err, level, message, _ = g.diag(lambda lv, m, v: lv == b"\x02", after=t_kill,
                                      timeout=60.0)
    t_ok, _, _, v = g.diag(lambda lv, m, v: v["solver_status"] == "running"
                           and v["state_stale"] == "false" and v["solver_pid"] != str(pid),
                           after=t_kill, timeout=120.0)
    with g.lock:
        held = [q for t, q in g.states if t_kill <= t <= t_ok]
    if sig == signal.SIGSTOP:  # normally killed by the hang monitor already
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"error_after_s": t_err - t_kill, "recovered_after_s": t_ok - t_kill,
            "error_message": message, "held_insertion": bool(held) and
            all(abs(q - insertion) < 1e-9 for q in held)}


def unreachable(g: Graph, seconds: float) -> dict:
    """Hold an in-limit insertion the solver cannot reach; count OK diagnostics meanwhile."""
    t0 = time.monotonic()
    g.command(0.34)
    time.sleep(seconds)
    with g.lock:
        during = [(lv, m) for t, lv, m, v in g.diags if t > t0 + 0.5]
    g.command(0.05)
    return {"seconds": seconds, "diagnostics": len(during),
            "ok": sum(lv == b"\x00" for lv, _ in during),
            "warn": sum(lv == b"\x01" for lv, _ in during),
            "error": sum(lv == b"\x02" for lv, _ in during),
            "example": during[-1][1] if during else ""}


def plan_burst(map_folder: str, n: int) -> dict:
    import rclpy
    from nav_msgs.srv import GetPlan
    from rclpy.qos import QoSProfile

    from bronchonav.ros.resources import load_airway_map
    from bronchonav.ros.runner import InProcessGraph

    graph = InProcessGraph(["route_planner"], launch_args={"map": map_folder}).start()
    node = rclpy.create_node("plan_burst")
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor()
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    try:
        client = node.create_client(GetPlan, "/plan_route", qos_profile=QoSProfile(depth=n))
        client.wait_for_service(timeout_sec=30.0)
        nodules = load_airway_map(map_folder).nodules
        t0 = time.monotonic()
        futures = []
        for k in range(n):
            req = GetPlan.Request()
            c = nodules[k % len(nodules)].center
            req.goal.pose.position.x, req.goal.pose.position.y, req.goal.pose.position.z = \
                (float(x) for x in c)
            futures.append(client.call_async(req))
        while not all(f.done() for f in futures) and time.monotonic() - t0 < 300.0:
            time.sleep(0.01)
        return {"requests": n, "answered": sum(f.done() for f in futures),
                "seconds": time.monotonic() - t0}
    finally:
        ex.shutdown()
        node.destroy_node()
        graph.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", default="maps/phantom_default")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--flood-hz", type=float, default=10000.0)
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--hold-seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    import rclpy

    rclpy.init()
    tmp = Path(tempfile.mkdtemp(prefix="fault_bench_"))
    result = {"machine": machine_info(), "load_avg_start": os.getloadavg()}
    def case(name, func, *a, **kw):
        try:
            result[name] = func(*a, **kw)
        except Exception as exc:  # noqa: BLE001 — record the failed case, run the others
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}

    def kills(g):
        runs = [kill_once(g) for _ in range(args.kills)]
        return {"runs": runs, "error_after_max_s": max(k["error_after_s"] for k in runs),
                "recovered_after_max_s": max(k["recovered_after_s"] for k in runs),
                "held_in_every_run": all(k["held_insertion"] for k in runs)}

    def give_up(g):
        os.kill(int(g.diag()[3]["solver_pid"]), signal.SIGKILL)  # beyond max_restarts
        return g.diag(lambda lv, m, v: v["solver_status"] == "failed", timeout=10.0)[2]

    g = None
    try:
        g = Graph(args.map, tmp / "sim.log", rate_hz=args.rate,
                  solver_max_restarts=args.kills + 2, audit_log=str(tmp / "audit.jsonl"))
        g.ready()
        case("flood", flood, g, args.flood_hz, args.flood_seconds, args.rate)
        case("unreachable", unreachable, g, args.hold_seconds)
        case("sigkill", kills, g)
        case("sigstop", kill_once, g, signal.SIGSTOP)
        result["exit_code_healthy"], g = g.close(), None
        g = Graph(args.map, tmp / "sim_nostandby.log", rate_hz=args.rate, solver_standby=False,
                  solver_max_restarts=1, audit_log=str(tmp / "audit2.jsonl"))
        g.params_standby = False
        g.ready()
        case("sigkill_no_standby", kill_once, g, standby=False)
        case("give_up_message", give_up, g)
        result["exit_code_after_giving_up"], g = g.close(), None
        case("plan_route", plan_burst, args.map, args.requests)
    finally:
        if g is not None:
            g.close()
        rclpy.try_shutdown()
    result["load_avg_end"] = os.getloadavg()
    result["logs"] = str(tmp)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
