"""Fault injection on the hardware-in-the-loop link, in a real rclpy graph on this machine.

``catheter_sim`` runs as its own process (as on a HIL bench); two controller nodes, an operator
and the fault injector live in this process. The tests run in file order against the same
simulator: the command contract, a command flood, a solver that cannot reach its set-point, a
SIGKILLed solver (recovery), a second SIGKILL (give up, exit code 1). The route planner's service
is tested in-process. Longer runs of the same faults (repeated kills, no standby, a minute-long
flood) are in ``bench/fault_bench.py``.
"""

import json
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TransformStamped
from nav_msgs.srv import GetPlan
from rcl_interfaces.srv import GetParameters
from rclpy.qos import QoSProfile
from ros_probe import Probe, sim_status
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header, String
from std_srvs.srv import SetBool, Trigger

from bronchonav.ros import conversions as conv
from bronchonav.ros import qos

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(1 + (os.getpid() * 13) % 99)

ROOT = Path(__file__).resolve().parents[1]
RATE = 200.0
MAX_RATE = 100.0
BURST = 10


def refused_total(values):
    """Sum of catheter_sim's refusal counters in a /diagnostics status."""
    return sum(int(v) for k, v in values.items() if k.startswith("refused_"))


class Bench:
    """The simulator process and the nodes around it, shared by the tests in file order."""

    def __init__(self, context, map_dir, tmp):
        from bronchonav.ros.runner import node_command

        self.audit = tmp / "audit.jsonl"
        self.log_path = tmp / "sim.log"
        cmd = node_command("catheter_sim", extra={
            "map": map_dir, "rate_hz": RATE, "diagnostics_rate_hz": 10.0,
            "watchdog_timeout_s": 0.3, "audit_log": str(self.audit),
            "max_command_rate_hz": MAX_RATE, "command_burst": BURST,
            "controller_lease_s": 60.0, "stale_after_s": 0.1, "solver_max_restarts": 1})
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, start_new_session=True, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True)
        self.probe = Probe(context, "operator")
        self.probe.listen(JointState, "/joint_states", qos.STATE_SUB)
        self.probe.listen(JointState, "/tendon_states", qos.STATE_SUB)
        self.probe.listen(DiagnosticArray, "/diagnostics", QoSProfile(depth=100))
        self.a = Probe(context, "ctl_a")
        self.b = Probe(context, "ctl_b")
        self.a_joint = self.a.node.create_publisher(JointState, "/catheter/joint_command",
                                                    qos.COMMAND)
        self.b_fwd = self.b.node.create_publisher(Float64MultiArray, "/catheter/command",
                                                  QoSProfile(depth=1000))

    def diag(self, predicate=lambda s, v: True, timeout=5.0, after=None):
        """The first catheter_sim status received after ``after`` (default: now) that
        satisfies ``predicate(status, values)``: (receive time, status, values)."""
        after = time.monotonic() if after is None else after
        t, m = self.probe.wait_after("/diagnostics", after,
                                     lambda m: sim_status(m)[0] is not None
                                     and predicate(*sim_status(m)), timeout)
        return (t, *sim_status(m))

    def insertion(self):
        return self.probe.msgs["/joint_states"][-1][1].position[0]

    def close(self):
        for p in (self.a, self.b, self.probe):
            p.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def bench(context, map_dir, tmp_path_factory):
    b = Bench(context, map_dir, tmp_path_factory.mktemp("hil"))
    b.probe.wait("/joint_states", timeout=120.0)  # the solver is warm (any test may run alone)
    b.diag(timeout=30.0)  # the executor spins (commands before that wait in the queue)
    yield b
    b.close()


def _forward(insertion):
    return Float64MultiArray(data=[insertion, 0.0, 0.0, 0.0, 0.0, 0.0])


def _joint(node, **fields):
    msg = JointState(**fields)
    if "header" not in fields:
        msg.header.stamp = node.get_clock().now().to_msg()
    return msg


# -- the command contract -------------------------------------------------------------------------

def test_the_command_contract(bench):
    b, nan = bench, math.nan

    # controller A takes charge with a stamped joint command
    b.a_joint.publish(_joint(b.a.node, name=["insertion"], position=[0.05]))
    b.probe.wait("/joint_states", lambda m: abs(m.position[0] - 0.05) < 1e-9, timeout=10.0)
    _, status, v = b.diag(lambda s, v: v["controller"].startswith("/ctl_a"))
    assert v["commands_accepted"] == "1"

    now = b.a.node.get_clock().now().to_msg()
    bad = [  # (message, refusal kind)
        (JointState(), "invalid"),  # sets nothing
        (_joint(b.a.node, name=["insertion", "insertion"], position=[0.1, 0.2]), "invalid"),
        (_joint(b.a.node, name=["insertion"], position=[0.1], effort=[1.0]), "invalid"),
        (_joint(b.a.node, name=["insertion"], effort=[1.0]), "invalid"),
        (_joint(b.a.node, name=["insertion"], position=[math.inf]), "invalid"),
        (_joint(b.a.node, name=["insertion"], position=[nan]), "invalid"),
        (_joint(b.a.node, name=["insertion"], position=[1.0]), "invalid"),  # beyond 0.35 m
        (_joint(b.a.node, name=["roll"], position=[1e6]), "invalid"),
        (_joint(b.a.node, name=["roll"], position=[1e300]), "invalid"),
        (_joint(b.a.node, name=["tendon_0", "tendon_1", "tendon_2", "tendon_3"],
                effort=[1.0, 1.0, nan, 1.0], position=[nan, nan, 1e-4, nan]), "invalid"),
        (_joint(b.a.node, name=["insertion"], position=[0.06],
                header=Header(stamp=conv.Time(sec=1))), "stamp"),
        (_joint(b.a.node, name=["insertion"], position=[0.06],
                header=Header(stamp=conv.Time(sec=now.sec + 3600,
                                                                     nanosec=now.nanosec))),
         "stamp"),
    ]
    for msg, kind in bad:  # one at a time, each counted before the next (keep-last-1 queue)
        _, _, v0 = b.diag()
        if msg.name and kind != "stamp":  # stamped now (the empty one has no stamp)
            msg.header.stamp = b.a.node.get_clock().now().to_msg()
        b.a_joint.publish(msg)
        b.diag(lambda s, v: refused_total(v) > refused_total(v0))
    _, status, v = b.diag()
    assert int(v["refused_invalid"]) == sum(k == "invalid" for _, k in bad)
    assert int(v["refused_stamp"]) == 2 and v["refused_queue_overflow"] == "0"
    # empty commands for 0.6 s do not feed the watchdog; each is refused, or counted as
    # overwritten unread by the next one
    t_empty = time.monotonic()
    n_empty = 0
    while time.monotonic() - t_empty < 0.6:
        b.a_joint.publish(JointState())
        n_empty += 1
        time.sleep(0.02)
    n_before = len(bad) - 2  # the invalid ones above (the other 2 were refused for stamps)
    _, status, v1 = b.diag(lambda s, v: int(v["refused_invalid"])
                           + int(v["refused_queue_overflow"]) >= n_before + n_empty, timeout=5.0)
    assert int(v1["refused_invalid"]) + int(v1["refused_queue_overflow"]) == n_before + n_empty
    assert v1["commands_accepted"] == "1" and v1["holding"] == "true"
    assert float(v1["command_age_s"]) > 0.6
    assert abs(b.insertion() - 0.05) < 1e-9

    # a second controller is refused while A is in charge
    for _ in range(5):
        _, _, v0 = b.diag()
        b.b_fwd.publish(_forward(0.08))
        b.diag(lambda s, v: refused_total(v) > refused_total(v0))
    _, status, v = b.diag(lambda s, v: v["refused_not_in_charge"] == "5")
    assert v["controller"].startswith("/ctl_a") and abs(b.insertion() - 0.05) < 1e-9
    # the operator releases control: B takes charge with its next command
    assert b.probe.call(Trigger, "/catheter/release_control", Trigger.Request(),
                        timeout=10.0).success
    b.b_fwd.publish(_forward(0.08))
    b.probe.wait("/joint_states", lambda m: abs(m.position[0] - 0.08) < 1e-9, timeout=10.0)
    _, status, v = b.diag(lambda s, v: v["controller"].startswith("/ctl_b"))

    # emergency stop: ERROR, the catheter holds, every command refused until released
    reply = b.probe.call(SetBool, "/catheter/emergency_stop", SetBool.Request(data=True),
                         timeout=10.0)
    assert reply.success and "holding insertion 0.0800" in reply.message
    _, status, v = b.diag(lambda s, v: s.level == DiagnosticStatus.ERROR)
    assert "emergency stop" in status.message
    b.b_fwd.publish(_forward(0.10))
    _, status, v = b.diag(lambda s, v: v["refused_emergency_stop"] == "1")
    time.sleep(0.3)
    assert abs(b.insertion() - 0.08) < 1e-9
    b.probe.call(SetBool, "/catheter/emergency_stop", SetBool.Request(data=False), timeout=10.0)
    b.b_fwd.publish(_forward(0.10))
    b.probe.wait("/joint_states", lambda m: abs(m.position[0] - 0.10) < 1e-9, timeout=10.0)

    # every refusal is in the log: one line each, or counted in a once-a-second summary
    time.sleep(1.3)
    _, status, v = b.diag()
    log = b.log_path.read_text()
    for kind in ("invalid", "stamp", "not_in_charge", "emergency_stop"):
        single = len(re.findall(rf"command refused \({kind}\)", log))
        summed = sum(int(n) for n in re.findall(rf"refused (\d+) more command\(s\) from "
                                                rf".*\({kind};", log))
        assert single + summed == int(v[f"refused_{kind}"]), (kind, single, summed)
    # the audit log names every source, the controllers in charge and the emergency stop
    records = [json.loads(line) for line in b.audit.read_text().splitlines()]
    seen = [r["source"] for r in records if r["event"] == "source_seen"]
    assert any(s.startswith("/ctl_a") for s in seen) and any(s.startswith("/ctl_b") for s in seen)
    taken = [r["source"].split(" ")[0] for r in records if r["event"] == "control_taken"]
    assert taken == ["/ctl_a", "/ctl_b", "/ctl_b"]  # B again after the emergency stop
    events = [r["event"] for r in records]
    assert events.index("estop_engaged") < events.index("estop_released")


def _policy_allowed(node_name):
    """{(kind, absolute name)} the policy allows ``node_name`` (kind: publish, subscribe,
    reply, request)."""
    policy = ElementTree.parse(ROOT / "config" / "sros2" / "policy.xml")
    profile = next(p for p in policy.iter("profile") if p.get("node") == node_name)
    out = set()
    for group in profile:
        for kind in ("publish", "subscribe", "reply", "request"):
            if group.get(kind) == "ALLOW":
                out |= {(kind, "/" + e.text.strip().lstrip("/")) for e in group}
    return out


def test_sros2_policy_covers_every_name_in_the_node_code():
    """Each topic/service name written in a node's create_publisher/subscription/service/client
    call (a string or a module constant) is allowed for that node in config/sros2/policy.xml."""
    import ast

    kinds = {"create_publisher": "publish", "create_subscription": "subscribe",
             "create_service": "reply", "create_client": "request"}
    checked = 0
    for path in sorted((ROOT / "bronchonav" / "ros").glob("*_node.py")):
        tree = ast.parse(path.read_text())
        consts = {n.targets[0].id: n.value.value for n in tree.body
                  if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
                  and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
        init = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Attribute) and n.func.attr == "__init__"
                    and n.args and isinstance(n.args[0], ast.Constant))
        node_name = init.args[0].value
        allowed = _policy_allowed(node_name)
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr in kinds and len(call.args) >= 2):
                continue
            arg = call.args[1]
            name = (arg.value if isinstance(arg, ast.Constant) else
                    consts.get(arg.id) if isinstance(arg, ast.Name) else None)
            if name is None:  # a parameter (tip_camera's pose_topic): its default is listed
                continue
            if name.startswith("~/"):  # private: under the node's name
                name = f"{node_name}/{name[2:]}"
            key = (kinds[call.func.attr], "/" + name.lstrip("/"))
            assert key in allowed, f"{path.name}: {key} not in the policy for {node_name}"
            checked += 1
    assert checked >= 30


def test_sros2_policy_covers_the_running_simulator(bench):
    """Every topic and service catheter_sim has in the graph is allowed for it in the policy."""
    allowed = _policy_allowed("catheter_sim")
    node = bench.probe.node
    deadline = time.monotonic() + 90.0  # discovered (when this test runs first)
    while ("catheter_sim", "/") not in node.get_node_names_and_namespaces():
        assert time.monotonic() < deadline, "catheter_sim never appeared in the graph"
        time.sleep(0.1)
    bench.diag(timeout=90.0)  # it runs (publishes its diagnostics)
    pubs = {n for n, _ in node.get_publisher_names_and_types_by_node("catheter_sim", "/")}
    subs = {n for n, _ in node.get_subscriber_names_and_types_by_node("catheter_sim", "/")}
    srvs = {n for n, _ in node.get_service_names_and_types_by_node("catheter_sim", "/")}
    assert "/catheter/emergency_stop" in srvs and "/tendon_states" in pubs
    assert {("publish", n) for n in pubs} <= allowed
    assert {("subscribe", n) for n in subs} <= allowed
    assert {("reply", n) for n in srvs} <= allowed


# -- a flood --------------------------------------------------------------------------------------

def test_command_flood_is_refused_and_counted_and_the_loop_holds(bench):
    """B (in charge) floods 10 kHz for 2 s: the excess over 100 Hz is refused and counted, what
    the node could not even read is counted from the sender's sequence numbers, and the loop
    keeps its rate (its own measurement over the last 2 s, from /diagnostics)."""
    b = bench
    b.diag(lambda s, v: v["solver_standby"] == "true", timeout=90.0)  # not warming up meanwhile
    _, _, before = b.diag(after=time.monotonic() + 1.0)
    # 20000 commands paced at 10 kHz against the clock (a pause of this process is made up at
    # once, as a real flood would be); the flood lasts until the last one is sent
    flood = [_forward(0.10), _forward(0.10 + 1e-6)]
    sent, total, t0 = 0, 20000, time.monotonic()
    while sent < total:
        target = min(total, int((time.monotonic() - t0) * 10000.0) + 1)
        while sent < target:
            b.b_fwd.publish(flood[sent % 2])
            sent += 1
        t_last = time.monotonic()
        time.sleep(2e-4)
    elapsed = t_last - t0
    _, status, during = b.diag()
    keys = ("commands_accepted", "refused_rate_limit", "refused_queue_overflow")
    # once the queue is drained and the once-a-second report is out
    _, status, after = b.diag(lambda s, v: sum(int(v[k]) - int(before[k]) for k in keys) >= sent,
                              timeout=10.0)
    _, status, after = b.diag(after=time.monotonic() + 1.2)
    delta = {k: int(after[k]) - int(before[k]) for k in keys}
    rate, rate_before = float(during["rate_hz"]), float(before["rate_hz"])
    print(f"flood {sent / elapsed:.0f} Hz for {elapsed:.2f} s: {sent} sent, {delta}; loop "
          f"{rate:.1f} Hz ({rate_before:.1f} Hz before; load {os.getloadavg()})")
    assert sent / elapsed > 8000, sent / elapsed  # the flood really was ~10 kHz
    # every command sent is accounted for: accepted, refused over the rate, or lost unread
    assert sum(delta.values()) == sent
    assert delta["refused_rate_limit"] > 0
    assert delta["commands_accepted"] <= MAX_RATE * (elapsed + 1.2) + BURST
    # the loop's own rate over the flood's last 2 s against the 2 s before it: the machine
    # running the tests is shared and oversubscribed (the rate without a flood varies by 10 %
    # here), so CI asserts the flood costs under 10 % (before this fix: 13 %);
    # bench/fault_bench.py measures the 2 % on a quiet machine
    assert rate >= 0.90 * rate_before, (rate, rate_before, os.getloadavg())
    log = b.log_path.read_text()
    for kind in ("rate_limit", "queue_overflow"):
        summed = sum(int(n) for n in re.findall(rf"refused (\d+) more command\(s\) from /ctl_b"
                                                rf".*\({kind};", log))
        single = len(re.findall(rf"command refused \({kind}\) from /ctl_b", log))
        n_lost = sum(int(n) for n in re.findall(rf"command refused \({kind}\) from /ctl_b.*: "
                                                rf"(\d+) command\(s\) overwritten", log))
        # a queue overflow's first line stands for all the commands lost in that gap
        # B's refusals of these kinds all happened during the flood
        assert (single if kind == "rate_limit" else n_lost) + summed == delta[f"refused_{kind}"]


# -- the solver -----------------------------------------------------------------------------------

def test_unreachable_setpoint_is_reported_not_ok(bench):
    """An in-limit insertion the solver cannot reach: WARN/ERROR with the reason, stale stamps."""
    b = bench
    time.sleep(0.2)
    t0 = time.monotonic()
    b.b_fwd.publish(_forward(0.34))
    t, status, v = b.diag(lambda s, v: s.level == DiagnosticStatus.ERROR, after=t0, timeout=3.0)
    assert t - t0 < 1.5 and "solver behind" in status.message and v["state_stale"] == "true"
    assert int(v["solver_consecutive_failures"]) >= 1 and "failed" in status.message
    # the state still published is the last solved one, with the stamp of its solve
    t_js, js = b.probe.msgs["/joint_states"][-1]
    age = b.probe.node.get_clock().now().nanoseconds * 1e-9 - conv.stamp_seconds(js.header.stamp)
    assert js.position[0] < 0.34 - 1e-3 and age > 0.1
    b.b_fwd.publish(_forward(0.10))
    _, _, v = b.diag(lambda s, v: v["state_stale"] == "false" and
                     s.level != DiagnosticStatus.ERROR, timeout=5.0)
    assert abs(b.insertion() - 0.10) < 1e-9
    # recovered: the reason of the last failure stays on record
    assert v["solver_consecutive_failures"] == "0" and "failed" in v["solver_last_failure"]


def test_solver_sigkill_error_within_1s_recovery_within_2s(bench):
    b = bench
    _, status, v = b.diag(lambda s, v: v["solver_standby"] == "true", timeout=90.0)
    b.b_fwd.publish(_forward(0.12))
    b.probe.wait("/joint_states", lambda m: abs(m.position[0] - 0.12) < 1e-9, timeout=10.0)
    _, status, v = b.diag()
    pid = int(v["solver_pid"])
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    t_err, status, v = b.diag(lambda s, v: s.level == DiagnosticStatus.ERROR, after=t_kill)
    assert t_err - t_kill < 1.0 and "killed by signal 9" in status.message
    t_ok, status, v = b.diag(lambda s, v: v["solver_status"] == "running"
                             and v["state_stale"] == "false" and v["solver_pid"] != str(pid),
                             after=t_err, timeout=5.0)
    print(f"SIGKILL: ERROR after {t_err - t_kill:.3f} s, recovered after {t_ok - t_kill:.3f} s")
    assert t_ok - t_kill < 2.0 and int(v["solver_pid"]) != pid
    assert v["solver_restarts"] == "1" and v["insertion_m"] == "0.1200"
    # the catheter held its state through the takeover (the new solver re-solved the last
    # good command: the same insertion)
    held = [m.position[0] for t, m in b.probe.since("/joint_states", t_kill) if t <= t_ok + 0.05]
    assert held and all(abs(q - 0.12) < 1e-9 for q in held)
    b.b_fwd.publish(_forward(0.13))
    b.probe.wait_after("/joint_states", t_ok, lambda m: abs(m.position[0] - 0.13) < 1e-9)


def test_second_death_gives_up_holds_and_exits_1(bench):
    """solver_max_restarts is 1: a second death within a minute is final: ERROR, commands
    refused (solver_down), and the process exits 1 on SIGTERM."""
    b = bench
    _, status, v = b.diag()
    os.kill(int(v["solver_pid"]), signal.SIGKILL)
    _, status, v = b.diag(lambda s, v: v["solver_status"] == "failed")
    assert status.level == DiagnosticStatus.ERROR and "solver failed" in status.message
    t_failed = time.monotonic()
    stamp_failed = b.probe.node.get_clock().now().nanoseconds * 1e-9
    b.b_fwd.publish(_forward(0.05))
    _, status, v = b.diag(lambda s, v: int(v["refused_solver_down"]) >= 1)
    assert abs(b.insertion() - 0.13) < 1e-9
    # the held state goes on being published, with the stamp of its solve: visibly stale
    time.sleep(0.3)
    after = b.probe.since("/joint_states", t_failed)
    assert len(after) > 5
    assert all(conv.stamp_seconds(m.header.stamp) < stamp_failed for _, m in after)
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=15) == 1
    assert "catheter_sim: ended on an error: solver failed" in b.log_path.read_text()


# -- the route planner's service ------------------------------------------------------------------

def test_plan_route_answers_a_burst_and_refuses_unknown_frames(context, map_dir, airway_map):
    from bronchonav.geometry.transforms import random_transform
    from bronchonav.ros.runner import InProcessGraph

    graph = InProcessGraph(["route_planner"], launch_args={"map": map_dir},
                           context=context).start()
    probe = Probe(context, "planner_client")
    try:
        probe.listen(String, "/route/status", QoSProfile(depth=1000))
        client = probe.node.create_client(GetPlan, "/plan_route",
                                          qos_profile=QoSProfile(depth=1000))
        assert client.wait_for_service(timeout_sec=20.0)
        near = [n for n in airway_map.nodules if n.note == "near airway"]

        def request(point, frame="ct"):
            req = GetPlan.Request()
            req.goal.header.frame_id = frame
            req.goal.pose.position.x, req.goal.pose.position.y, req.goal.pose.position.z = \
                (float(x) for x in point)
            return req
        reference = probe.call(GetPlan, "/plan_route", request(near[0].center), timeout=30.0)
        ref_pts = conv.path_points(reference.plan)
        assert len(ref_pts) > 10

        # 100 requests at once: every one answered, the node stays responsive meanwhile
        t0 = time.monotonic()
        futures = [client.call_async(request(near[k % len(near)].center)) for k in range(100)]
        params = probe.node.create_client(GetParameters, "/route_planner/get_parameters")
        t_param = time.monotonic()
        reply = probe.call(GetParameters, "/route_planner/get_parameters",
                           GetParameters.Request(names=["alternatives"]), timeout=10.0)
        param_latency = time.monotonic() - t_param
        while not all(f.done() for f in futures) and time.monotonic() - t0 < 60.0:
            time.sleep(0.02)
        answered = sum(f.done() for f in futures)
        print(f"plan_route burst: {answered}/100 answered in {time.monotonic() - t0:.2f} s; "
              f"get_parameters during the burst {param_latency * 1e3:.0f} ms")
        assert answered == 100
        same_goal = [f.result().plan for k, f in enumerate(futures) if k % len(near) == 0]
        assert all(np.allclose(conv.path_points(p), ref_pts) for p in same_goal)
        assert reply.values and param_latency < 1.0
        probe.node.destroy_client(params)

        # frames: 'map' refused; 'patient' refused until a registration is known, then used
        T_ct_patient = random_transform(np.random.default_rng(5), 0.03, 0.3)
        in_patient = (np.linalg.inv(T_ct_patient) @ np.append(near[0].center, 1.0))[:3]
        for frame in ("map", "patient"):
            reply = probe.call(GetPlan, "/plan_route", request(in_patient, frame), timeout=10.0)
            assert len(reply.plan.poses) == 0
            probe.wait("/route/status", lambda m: f"frame {frame!r}" in m.data
                       and '"feasible": false' in m.data, timeout=10.0)
        pub = probe.node.create_publisher(TransformStamped, "/registration/transform",
                                          qos.LATCHED)
        pub.publish(conv.matrix_to_transform(T_ct_patient, "ct", "patient", conv.Time()))
        deadline = time.monotonic() + 10.0
        while graph.nodes["route_planner"].T_ct_patient is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        reply = probe.call(GetPlan, "/plan_route", request(in_patient, "patient"), timeout=10.0)
        assert np.allclose(conv.path_points(reply.plan), ref_pts, atol=1e-9)
    finally:
        probe.close()
        graph.stop()
