"""A real rclpy graph (no mocks): nodes in this process and in child processes talk over
Fast DDS on this machine only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), in a domain of this
module's own."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(1 + (os.getpid() * 7) % 99)

import rclpy  # noqa: E402  (fails, not skips, without ROS 2: source its setup first)

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseStamped, TransformStamped  # noqa: E402
from nav_msgs.srv import GetPlan  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from bronchonav.ros import conversions as conv  # noqa: E402
from bronchonav.ros import qos  # noqa: E402
from bronchonav.sensors import patient_transform  # noqa: E402
from recorded_surveys import (AMBIGUOUS_TRIALS, ROOT, default_map, error_at,  # noqa: E402
                              extended_readings)
from ros_probe import Probe, Spinning, sim_status  # noqa: E402

SIM_RATE = 200.0


# -- in-process: map server, planner, registration ------------------------------------------------

def test_map_planner_registration_in_one_process(context, map_dir, airway_map):
    from bronchonav.geometry.transforms import random_transform
    from bronchonav.ros.runner import InProcessGraph

    graph = InProcessGraph(["airway_map_server", "route_planner", "registration"],
                           launch_args={"map": map_dir}, context=context,
                           extra={"registration": {"auto_register": False}}).start()
    probe = Probe(context)
    try:
        time.sleep(0.5)  # subscribe late: transient-local QoS must still deliver the map
        probe.listen(MarkerArray, "/airway_map/markers", qos.LATCHED)
        probe.listen(String, "/airway_map/info", qos.LATCHED)
        probe.listen(String, "/route/status", qos.LATCHED)
        markers = probe.wait("/airway_map/markers")
        namespaces = {m.ns for m in markers.markers}
        assert {"airway_tree", "lumen", "nodules"} <= namespaces
        info = json.loads(probe.wait("/airway_map/info").data)
        assert info["branches"] == len(airway_map.tree)
        assert [n["id"] for n in info["nodules"]] == [n.id for n in airway_map.nodules]

        # GetPlan to a reachable nodule: a path from the top of the trachea to the exit point
        near = next(n for n in airway_map.nodules if n.note == "near airway")
        req = GetPlan.Request()
        req.goal.pose.position.x, req.goal.pose.position.y, req.goal.pose.position.z = \
            (float(v) for v in near.center)
        plan = probe.call(GetPlan, "/plan_route", req).plan
        pts = conv.path_points(plan)
        assert plan.header.frame_id == "ct" and len(pts) > 10
        assert np.linalg.norm(pts[0] - airway_map.tree.trachea.start) < 2e-3
        status = json.loads(probe.wait("/route/status", lambda m: json.loads(m.data)
                                       .get("target_m") is not None).data)
        assert status["feasible"] and np.allclose(status["exit_point_m"], pts[-1])
        assert np.all(airway_map.tree.inside_lumen(pts))

        # the far nodule: empty path, the reason on /route/status
        far = next(n for n in airway_map.nodules if n.note == "far from airways")
        req.goal.pose.position.x, req.goal.pose.position.y, req.goal.pose.position.z = \
            (float(v) for v in far.center)
        assert len(probe.call(GetPlan, "/plan_route", req).plan.poses) == 0
        status = json.loads(probe.wait("/route/status",
                                       lambda m: not json.loads(m.data)["feasible"]).data)
        assert any("exit_distance" in r for r in status["reasons"])

        # registration: refused without samples, then recovers a known transform
        reply = probe.call(Trigger, "/registration/trigger", Trigger.Request())
        assert not reply.success and "points" in reply.message
        T_ct_patient = random_transform(np.random.default_rng(3), 0.04, math.radians(20))
        T_patient_ct = np.linalg.inv(T_ct_patient)
        pub = probe.node.create_publisher(PoseStamped, "/catheter/em_pose", qos.STATE)
        samples = airway_map.tree.samples(2e-3)
        central = np.isin(samples.branch_ids, [b.id for b in airway_map.tree
                                               if b.generation <= 3])
        rng = np.random.default_rng(0)
        time.sleep(0.5)
        # a catheter at rest in the trachea: 300 readings with 1 mm noise add only the cubes of
        # the noise's ball (one sample per 1.5 mm cube: about 40)
        at_rest = np.eye(4)
        at_rest[:3, 3] = airway_map.tree.trachea.points[len(airway_map.tree.trachea.points) // 2]
        for _ in range(300):
            T = at_rest.copy()
            T[:3, 3] += rng.normal(0, 1e-3, 3)
            pub.publish(conv.pose_stamped(T_patient_ct @ T, "patient", conv.Time()))
            time.sleep(0.002)
        time.sleep(0.3)
        assert 1 <= graph.nodes["registration"].n_samples <= 50
        for p, t in zip(samples.points[central], samples.tangents[central]):
            T = np.eye(4)
            T[:3, 2] = t
            T[:3, 0] = np.cross([0, 1, 0], t) / max(np.linalg.norm(np.cross([0, 1, 0], t)), 1e-9)
            T[:3, 1] = np.cross(t, T[:3, 0])
            T[:3, 3] = p + rng.normal(0, 5e-4, 3)
            pub.publish(conv.pose_stamped(T_patient_ct @ T, "patient", conv.Time()))
            time.sleep(0.002)
        time.sleep(0.5)
        assert graph.nodes["registration"].n_samples > 100  # one per 1.5 mm cube
        reply = probe.call(Trigger, "/registration/trigger", Trigger.Request(), timeout=60)
        assert reply.success, reply.message
        T_est = graph.nodes["registration"].result.T_ct_patient
        c = near.center
        err = np.linalg.norm((T_est @ T_patient_ct @ np.append(c, 1))[:3] - c)
        assert err < 2e-3

        # a refit on readings that fit nowhere (half of them 300 mm away) is refused, and the
        # registration in use stays: same transform on registration/transform and in the node
        probe.listen(String, "/registration/status", qos.LATCHED)
        probe.listen(TransformStamped, "/registration/transform", qos.LATCHED)
        for p in rng.uniform(-0.05, 0.05, (150, 3)) + [0.3, 0.0, 0.0]:
            T = np.eye(4)
            T[:3, 3] = p
            pub.publish(conv.pose_stamped(T_patient_ct @ T, "patient", conv.Time()))
            time.sleep(0.002)
        time.sleep(0.5)
        reply = probe.call(Trigger, "/registration/trigger", Trigger.Request(), timeout=60)
        assert not reply.success and "in use is kept" in reply.message, reply.message
        assert graph.nodes["registration"].result.T_ct_patient is T_est
        status = json.loads(probe.wait("/registration/status",
                                       lambda m: not json.loads(m.data)["in_use"]).data)
        assert not status["success"] and status["refits_refused"] == 1 and status["refits"] == 0
        # the reply names the attempt whose status this is (the second registration run)
        assert reply.message.startswith("attempt 2: ") and status["attempt"] == 2, reply.message
        assert status["ambiguous"] is False  # refused as not fitting: sweeping on won't help
        tf = probe.wait("/registration/transform", lambda m: True)
        assert np.allclose(conv.transform_to_matrix(tf.transform), T_est)
    finally:
        probe.close()
        graph.stop()


def _first_automatic_registration(context, trial):
    """Feed the registration node (the shipped YAML's parameters) the EM readings of the
    recorded survey towards N3 and the 20 mm after it, one message at a time as its subscription
    would, running its automatic-registration timer after each. Returns (row of the reading
    after which it first registered, its result); the node is not spun."""
    from bronchonav.ros.params import overrides
    from bronchonav.ros.registration_node import RegistrationNode
    from bronchonav.ros.runner import node_parameters

    values = node_parameters("registration",
                             launch_args={"map": str(ROOT / "maps" / "phantom_default")})
    node = RegistrationNode(context=context, parameter_overrides=overrides(values))
    try:
        nodule = node.airway_map.nodule("N3").center
        node._on_route(String(data=json.dumps({"feasible": True, "target_m": nodule.tolist()})))
        samples, _ = extended_readings(trial)
        for row, p_patient in enumerate(samples):
            T = np.eye(4)
            T[:3, 3] = p_patient
            node._on_em(conv.pose_stamped(T, "patient", node.get_clock().now().to_msg()))
            node._auto()
            if node.tracker.last_attempt is not None:
                return row, node.tracker.last_attempt
        raise AssertionError("the node never registered automatically")
    finally:
        node.destroy_node()


@pytest.mark.parametrize("trial", AMBIGUOUS_TRIALS)
def test_the_registration_node_registers_a_survey_by_itself(context, trial):
    """With its shipped parameters the node registers the survey of both main bronchi on its
    own: not before the survey has swept the target side's main bronchus (its last 20 % of
    samples), within ten control steps (10 mm of insertion) after it, and right (under 5 mm at
    the nodule). The two patient and noise draws are those whose survey is refused as ambiguous
    in 3 mm cells (test_registration_survey.py), the node's cell size before."""
    row, result = _first_automatic_registration(context, trial)
    _, in_survey = extended_readings(trial)
    n_survey = int(in_survey.sum())
    assert 0.8 * n_survey <= row < n_survey + 10, (row, n_survey)
    assert result.success, result.message
    nodule = default_map().nodule("N3").center
    assert error_at(result, patient_transform(1000 + trial), nodule) < 5e-3


# -- catheter_sim while its solver warms up -------------------------------------------------------

def test_catheter_sim_answers_while_its_solver_warms_up(context, map_dir):
    """The node spins before its solver's first state: parameter requests are answered,
    /diagnostics says it is starting (WARN), commands are refused with that reason, and no state
    is published; the first state is published as soon as the solver sends it. The solver child
    is held (SIGSTOP) right after the node is built, which takes a fraction of the child's
    start-up (a fresh interpreter, imports, the map, numba's cache)."""
    from rcl_interfaces.srv import GetParameters

    from bronchonav.ros.catheter_sim_node import CatheterSimNode
    from bronchonav.ros.params import overrides
    from bronchonav.ros.runner import node_executor, node_parameters

    values = node_parameters("catheter_sim", extra={"map": map_dir, "solver_standby": False,
                                                     "diagnostics_rate_hz": 10.0},
                             namespace="/warm")
    node = CatheterSimNode(context=context, namespace="/warm",
                           parameter_overrides=overrides(values))
    child = node.solver.active_pid
    os.kill(child, signal.SIGSTOP)
    stopped = node.state is None  # checked after the SIGSTOP: nothing can arrive meanwhile
    spinning = probe = None
    try:
        spinning = Spinning(node_executor(node, context))
        probe = Probe(context, "warm_probe")
        assert stopped, "the solver sent its first state before the node was built"
        probe.listen(JointState, "/warm/joint_states", qos.STATE_SUB)
        probe.listen(DiagnosticArray, "/diagnostics", qos.DEFAULT)
        reply = probe.call(GetParameters, "/warm/catheter_sim/get_parameters",
                           GetParameters.Request(names=["rate_hz", "n_nodes"]), resend_s=5.0)
        assert [reply.values[0].double_value, reply.values[1].integer_value] == \
            [values["rate_hz"], values["n_nodes"]]
        diag = probe.wait("/diagnostics", lambda m: any(
            st.name.startswith("warm/catheter_sim") for st in m.status))
        status = next(st for st in diag.status if st.name.startswith("warm/catheter_sim"))
        fields = {kv.key: kv.value for kv in status.values}
        assert status.level == DiagnosticStatus.WARN and "warming up" in status.message
        assert fields["solver_status"] == "starting" and fields["insertion_m"] == "nan"
        pub = probe.node.create_publisher(Float64MultiArray, "/warm/catheter/command",
                                          qos.COMMAND)
        deadline = time.monotonic() + 10.0
        while node.guard.counts()["refused_solver_down"] == 0:
            assert time.monotonic() < deadline, "the command was not refused"
            pub.publish(Float64MultiArray(data=[0.05, 0.0, 0.0, 0.0, 0.0, 0.0]))
            time.sleep(0.1)
        assert "starting" in node.guard.counts()["last_refusal"]
        assert probe.msgs["/warm/joint_states"] == [] and node.state is None
        t_cont = time.monotonic()
        os.kill(child, signal.SIGCONT)
        first = probe.wait("/warm/joint_states", timeout=60.0)
        print(f"first state {time.monotonic() - t_cont:.2f} s after the solver resumed")
        assert first.position[0] == 0.0 and node.solver.health.status == "running"
    finally:
        os.kill(child, signal.SIGCONT)
        if probe is not None:
            probe.close()
        if spinning is not None:
            spinning.stop()
        node.destroy_node()


def test_catheter_sim_refuses_a_bad_map_before_starting_a_solver(context):
    """The simulator reads its map once, before its solver processes start (they are handed
    the tree): a bad map ends start-up with the reason and leaves no solver process behind."""
    import multiprocessing

    from bronchonav.errors import MapError
    from bronchonav.ros.catheter_sim_node import CatheterSimNode
    from bronchonav.ros.params import overrides

    before = {p.pid for p in multiprocessing.active_children()}
    with pytest.raises(MapError, match="map folder not found: /no/such/map"):
        CatheterSimNode(context=context, namespace="/badmap",
                        parameter_overrides=overrides({"map": "/no/such/map"}))
    assert {p.pid for p in multiprocessing.active_children()} == before


# -- catheter_sim as its own process, driven by an external controller ----------------------------

@pytest.fixture(scope="module")
def sim_process(map_dir):
    from bronchonav.ros.runner import node_command

    cmd = node_command("catheter_sim", extra={"map": map_dir, "rate_hz": SIM_RATE,
                                              "watchdog_timeout_s": 0.3,
                                              "diagnostics_rate_hz": 5.0})
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_catheter_sim_process_rate_latency_safety_watchdog(context, sim_process):
    from bronchonav.ros.urdf_gen import DEFAULT_CHAIN

    probe = Probe(context, "controller")
    try:
        probe.listen(JointState, "/joint_states", qos.STATE_SUB)
        probe.listen(DiagnosticArray, "/diagnostics", qos.DEFAULT)
        probe.listen(PoseStamped, "/catheter/tip_pose", qos.STATE_SUB)
        probe.wait("/joint_states", timeout=60.0)
        first = probe.last("/joint_states")
        links = [f"link_{i}_{a}" for i in range(DEFAULT_CHAIN.n_links) for a in ("pitch", "yaw")]
        assert first.name == ["insertion", "roll", *links]  # URDF joints only
        probe.listen(JointState, "/tendon_states", qos.STATE_SUB)
        assert probe.wait("/tendon_states").name == ["tendon_0", "tendon_1", "tendon_2",
                                                     "tendon_3"]

        time.sleep(1.0)
        # it publishes at its rate: the loop's own count, and what arrives here (a best-effort
        # subscriber in a busy Python process may drop some)
        n0, t0 = len(probe.msgs["/joint_states"]), time.monotonic()
        time.sleep(2.0)
        received = (len(probe.msgs["/joint_states"]) - n0) / (time.monotonic() - t0)
        diag = probe.wait("/diagnostics", lambda m: sim_status(m)[0] is not None)
        loop_rate = float(sim_status(diag)[1]["rate_hz"])
        assert abs(loop_rate - SIM_RATE) < 0.25 * SIM_RATE, (loop_rate, os.getloadavg())
        assert received > 0.1 * SIM_RATE, received  # a Python subscriber may drop some

        # an external controller at 100 Hz: command → /joint_states latency, once the standby
        # solver has warmed up (its start-up, seconds of CPU, is not the steady state)
        probe.wait("/diagnostics", lambda m: sim_status(m)[1].get("solver_standby") == "true",
                   timeout=90.0)
        pub = probe.node.create_publisher(Float64MultiArray, "/catheter/command", qos.COMMAND)
        jpub = probe.node.create_publisher(JointState, "/catheter/joint_command", qos.COMMAND)
        time.sleep(0.5)
        sent, published, to_probe = {}, [], []

        def on_state(msg):
            t = sent.pop(round(msg.position[0], 9), None)
            if t is not None:  # latency (ms) to the simulator's publication and to this probe
                published.append((conv.stamp_seconds(msg.header.stamp) - t[1]) * 1e3)
                to_probe.append((time.monotonic() - t[0]) * 1e3)
        deep = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)  # drop nothing
        probe.node.create_subscription(JointState, "/joint_states", on_state, deep)
        next_t = time.monotonic()
        for k in range(400):  # stamped joint commands at 100 Hz, insertion 20 → 120 mm
            q = round(0.02 + 0.1 * k / 400 + 1e-7, 9)
            cmd = JointState(name=["insertion"], position=[q])
            cmd.header.stamp = probe.node.get_clock().now().to_msg()
            sent[q] = (time.monotonic(), conv.stamp_seconds(cmd.header.stamp))
            jpub.publish(cmd)
            next_t += 0.01
            time.sleep(max(0.0, next_t - time.monotonic()))
        time.sleep(0.3)
        last_q = q
        assert len(published) > 100, len(published)  # superseded commands (solver busy) skipped
        max_ms = max(to_probe)
        print(f"command→state latency p99 {np.percentile(published, 99):.1f} ms to the "
              f"simulator's publication (issue #6: ≤ 10 ms), {np.percentile(to_probe, 99):.1f} ms "
              f"to this subscriber, max {max_ms:.0f} ms (load {os.getloadavg()})")
        assert abs(probe.last("/joint_states").position[0] - last_q) < 1e-9

        # bad commands are rejected with a reason; the loop keeps running at the same set-point
        for bad in ([math.nan, 0.0, 0, 0, 0, 0], [0.05, 0.0], [1.0, 0.0, 0, 0, 0, 0],
                    [0.05, 0.0, 0.5, 0, 0, 0]):
            pub.publish(Float64MultiArray(data=bad))
            time.sleep(0.05)
        diag = probe.wait("/diagnostics",
                          lambda m: int(sim_status(m)[1].get("refused_invalid", 0)) >= 4)
        values = sim_status(diag)[1]
        assert "tendon_displacement" in values["last_refusal"]
        ticks0 = int(values["ticks"])
        later = probe.wait("/diagnostics", lambda m: int(sim_status(m)[1].get("ticks", 0))
                           > ticks0 + 0.5 * SIM_RATE, timeout=5.0)  # the loop keeps running
        assert sim_status(later)[1]["insertion_m"] == f"{last_q:.4f}"
        assert abs(probe.last("/joint_states").position[0] - last_q) < 1e-9

        # tension commands through the JointState interface (effort = N)
        nan = math.nan  # not set (the ros2_control convention)
        jpub.publish(JointState(name=["insertion", "tendon_0", "tendon_1", "tendon_2",
                                      "tendon_3"],
                                position=[0.05, nan, nan, nan, nan],
                                effort=[nan, 2.0, 0.0, 0.0, 0.0]))
        probe.wait("/joint_states", lambda m: abs(m.position[0] - 0.05) < 1e-9)
        ts = probe.wait("/tendon_states", lambda m: abs(m.effort[0] - 2.0) < 1e-6)
        assert ts.effort[1:] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)

        # watchdog: no command for longer than 0.3 s → hold and WARN
        diag = probe.wait("/diagnostics", lambda m: sim_status(m)[0] is not None
                          and sim_status(m)[0].level == DiagnosticStatus.WARN, timeout=5.0)
        status, values = sim_status(diag)
        assert "holding" in status.message and values["holding"] == "true"
        assert abs(probe.last("/joint_states").position[0] - 0.05) < 1e-9
    finally:
        probe.close()
    # SIGTERM: a clean exit
    sim_process.send_signal(signal.SIGTERM)
    assert sim_process.wait(timeout=15) == 0, sim_process.stdout.read()[-3000:]
    # Liveness: the simulator answers every command within a quarter of a second (its state's
    # stamp against the command's), also on a loaded machine. Issue #6's p99 ≤ 10 ms (printed
    # above) is a wall-clock figure that other work on the two cores pushes to 10-16 ms
    # (measured with load 3); bench/ros_loop_bench.py (latency_p99_ms) measures it with the
    # machine to itself. What this test process's own callbacks add (``max_ms``, to this
    # subscriber) is not the simulator's: at load 3.2 it once reached 809 ms.
    assert max(published) <= 250.0, (max(published), max_ms, os.getloadavg())


# -- the CLI runner as a child process ------------------------------------------------------------

def test_cli_launch_plan_runs_and_stops_on_sigterm(context, map_dir):
    cli = os.path.join(os.path.dirname(sys.executable), "bronchonav")
    proc = subprocess.Popen([cli, "launch", "plan", "--map", map_dir], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    probe = Probe(context, "cli_probe")
    try:
        probe.listen(String, "/airway_map/info", qos.LATCHED)
        info = json.loads(probe.wait("/airway_map/info", timeout=60.0).data)
        assert info["path"] == map_dir
    finally:
        probe.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    assert code == 0, proc.stdout.read()[-3000:]


# -- the map server's lifecycle -------------------------------------------------------------------

def test_map_server_lifecycle_refuses_a_bad_map_with_its_reason(context, map_dir):
    from rclpy.lifecycle import TransitionCallbackReturn

    from bronchonav.errors import MapError
    from bronchonav.ros.map_server_node import MapServerNode
    from bronchonav.ros.params import overrides

    with pytest.raises(MapError, match="map folder not found: /no/such/map"):
        MapServerNode(context=context, parameter_overrides=overrides({"map": "/no/such/map",
                                                                      "nice": 0}))
    node = MapServerNode(context=context, parameter_overrides=overrides(
        {"map": "/no/such/map", "autostart": False, "nice": 0}))
    try:
        assert node.airway_map is None  # nothing loaded before configure
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert "/no/such/map" in node.last_error and node.airway_map is None
        node.set_parameters(overrides({"map": map_dir}))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.map_path == map_dir and not node.marker_pub.is_activated
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.marker_pub.is_activated and node.info_pub.is_activated
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert not node.marker_pub.is_activated
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.airway_map is None
    finally:
        node.destroy_node()


def test_an_executor_on_a_context_a_stop_signal_shut_down_fails_without_a_traceback(monkeypatch):
    """A Ctrl-C during a node's start-up shuts its context down (rclpy's signal handler) before
    the node's executor is built: building it raises RCLError, and nothing else is printed
    (rclpy's half-built executor once reported an AttributeError from its ``__del__``)."""
    import gc

    from rclpy._rclpy_pybind11 import RCLError

    from bronchonav.ros.runner import node_executor

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("stopping_node", context=context)
    rclpy.shutdown(context=context)  # what the signal handler does
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(RCLError):
        node_executor(node, context)
    gc.collect()
    assert unraisable == []
    node.destroy_node()
