"""The closed-loop demo, headless, through the ROS graph.

Starts the ``sim`` configuration with the shared YAML: ``catheter_sim`` as its own process (its
real-time loop then has a Python interpreter to itself), the map server, route planner,
registration and navigator in this process (one executor each), plus a demo client node and an
MCAP recorder; then — talking to the nodes only through topics, services and parameters —

1. reads the map summary (``airway_map/info``) and asks the planner for a route to every nodule
   (``route_planner/goal_nodule``); unless a nodule is given, it takes the feasible route with
   the smallest bifurcation bend;
2. surveys the central airways on the simulator's ground-truth pose — a stand-in for the
   physician driving under the camera: the navigator drives into the main bronchus on the other
   side, then into the one on the target's side (``route_planner/goal_point``;
   :func:`~bronchonav.navigation.survey_arm`);
3. registers the EM sweep (``registration/trigger``) and, if that succeeds, switches the
   navigator to the registered EM pose (parameter ``pose_source: registered``); refused as
   ambiguous, it lets the navigator drive on along the route and registers again
   (:func:`~bronchonav.navigation.survey_stops`);
4. lets the navigator drive the route to the nodule until ``navigator/status`` says ``done``;
5. reads the loop statistics from ``diagnostics``,

and writes ``summary.json``, ``demo.png`` and ``demo.mcap`` into the output folder. The summary's
``ok`` is true only when registration succeeded and the exit point was reached; ``failure``
says why not.

Evaluation only (never fed back into the graph): the tip-to-exit distance (when driving ended,
before the final aim at the lesion swings the tip, as a rehearsal measures it) and the
tool-in-lesion check (after the aim) use the simulator's ground-truth tip pose; the
registration TRE at the nodule compares the
estimated ``T_ct_patient`` with the simulator's hidden one, recomputed from ``patient_seed``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np

from bronchonav.errors import InputError
from bronchonav.geometry import Polyline
from bronchonav.navigation import survey_arm, survey_stops
from bronchonav.navigation.tool import advance_tool, planned_tool_length

REACHED_TOLERANCE_M = 5e-3
"""The demo counts the exit point as reached when the tip is this close (m)."""


def default_map() -> str:
    """``maps/phantom_default`` when it exists, else the phantom built on start."""
    from bronchonav.ros.resources import share_dirs

    for root in share_dirs():
        if (root / "maps" / "phantom_default" / "map.yaml").is_file():
            return str(root / "maps" / "phantom_default")
    return "phantom:default"


def _recorded_topics() -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped, TransformStamped, WrenchStamped
    from nav_msgs.msg import Path as PathMsg
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String
    from visualization_msgs.msg import MarkerArray

    from bronchonav.ros import qos

    return {
        "/robot_description": (String, qos.LATCHED),
        "/airway_map/markers": (MarkerArray, qos.LATCHED),
        "/airway_map/info": (String, qos.LATCHED),
        "/route": (PathMsg, qos.LATCHED),
        "/route/markers": (MarkerArray, qos.LATCHED),
        "/route/status": (String, qos.LATCHED),
        "/joint_states": (JointState, qos.STATE_SUB),
        "/catheter/tip_pose": (PoseStamped, qos.STATE_SUB),
        "/catheter/backbone": (PathMsg, qos.STATE_SUB),
        "/catheter/em_pose": (PoseStamped, qos.STATE_SUB),
        "/catheter/contact_wrench": (WrenchStamped, qos.STATE_SUB),
        "/catheter/command": (Float64MultiArray, qos.DEFAULT),
        "/catheter/joint_command": (JointState, qos.DEFAULT),
        "/diagnostics": (DiagnosticArray, qos.DEFAULT),
        "/navigator/status": (String, qos.LATCHED),
        "/registration/transform": (TransformStamped, qos.LATCHED),
        "/registration/quality": (Float64MultiArray, qos.LATCHED),
        "/registration/status": (String, qos.LATCHED),
        "/registration/tip_pose": (PoseStamped, qos.STATE_SUB),
    }


class DemoClient:
    """The demo's own node: latest messages of the topics it watches, and service calls."""

    def __init__(self, context=None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PointStamped, PoseStamped, TransformStamped
        from nav_msgs.msg import Path as PathMsg
        from rclpy.node import Node
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from bronchonav.ros import qos
        from bronchonav.ros.resources import data_file

        kwargs = {} if context is None else {"context": context}
        self.node = node = Node("bronchonav_demo", **kwargs)
        self._cond = threading.Condition()
        self.latest: dict = {}
        self.registrations: dict[int, dict] = {}  # registration/status by attempt number
        self.em_samples: list[np.ndarray] = []
        self.loop_status: dict = {}
        self.drive_end_tip = None  # ground-truth tip pose when the navigator last ended driving
        self._nav_phase = None

        def keep(topic):
            return lambda msg: self._keep(topic, msg)

        for topic, cls, profile in [("/airway_map/info", String, qos.LATCHED),
                                    ("/route/status", String, qos.LATCHED),
                                    ("/route", PathMsg, qos.LATCHED),
                                    ("/registration/transform", TransformStamped, qos.LATCHED),
                                    ("/catheter/tip_pose", PoseStamped, qos.STATE_SUB),
                                    ("/catheter/backbone", PathMsg, qos.STATE_SUB)]:
            node.create_subscription(cls, topic, keep(topic), profile)
        node.create_subscription(String, "/navigator/status", self._on_navigator, qos.LATCHED)
        node.create_subscription(String, "/registration/status", self._on_registration,
                                 qos.LATCHED)
        node.create_subscription(PoseStamped, "/catheter/em_pose", self._on_em, qos.STATE_SUB)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos.DEFAULT)
        self.pub_goal = node.create_publisher(String, "/route_planner/goal_nodule", qos.DEFAULT)
        self.pub_point = node.create_publisher(PointStamped, "/route_planner/goal_point",
                                               qos.DEFAULT)
        self.pub_description = node.create_publisher(String, "/robot_description", qos.LATCHED)
        self.pub_description.publish(String(data=data_file("urdf/bronchoscope.urdf").read_text()))
        self.trigger = node.create_client(Trigger, "/registration/trigger")

    def _on_navigator(self, msg) -> None:
        """Keep the status; on the step driving ends (phase ``aim`` or ``done`` after another
        phase), keep the ground-truth tip pose as ``drive_end_tip`` (None while driving)."""
        phase = _json(msg)["phase"]
        with self._cond:
            if phase not in ("aim", "done"):
                self.drive_end_tip = None  # driving (again)
            elif self._nav_phase not in ("aim", "done"):
                self.drive_end_tip = self.latest.get("/catheter/tip_pose")
            self._nav_phase = phase
            self._keep("/navigator/status", msg)  # the condition's lock is re-entrant

    def _on_registration(self, msg) -> None:
        """Keep the status as the latest, and by its attempt number (the demo's trigger waits
        for its own attempt, whatever automatic refits the node publishes meanwhile)."""
        attempt = _json(msg).get("attempt")
        with self._cond:
            if attempt is not None:
                self.registrations[int(attempt)] = _json(msg)
            self._keep("/registration/status", msg)

    def registration(self, attempt: int, timeout: float = 5.0) -> dict:
        """The ``registration/status`` of attempt number ``attempt`` (JSON); InputError if it
        has not come within ``timeout`` s."""
        return self._wait(lambda: self.registrations.get(attempt), timeout,
                          f"no registration/status of attempt {attempt}")

    def _keep(self, topic: str, msg) -> None:
        """Keep ``msg`` as the latest on ``topic`` and wake :meth:`wait_for`."""
        with self._cond:
            self.latest[topic] = msg
            self._cond.notify_all()

    def _on_em(self, msg) -> None:
        p = msg.pose.position
        self.em_samples.append(np.array([p.x, p.y, p.z]))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("catheter_sim"):
                with self._cond:
                    self.loop_status = {kv.key: kv.value for kv in status.values}

    def wait_for(self, topic: str, predicate=lambda m: True, timeout: float = 30.0):
        """The latest message on ``topic`` satisfying ``predicate``; InputError on timeout."""
        def suitable():
            msg = self.latest.get(topic)
            return msg if msg is not None and predicate(msg) else None

        return self._wait(suitable, timeout, f"nothing suitable on {topic}")

    def _wait(self, found, timeout: float, what: str):
        """``found()`` (under the lock) once it is not None, waking with every message kept;
        InputError saying ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = found()
                if value is not None:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise InputError(f"demo: {what} within {timeout:.0f} s")
                self._cond.wait(min(left, 0.5))

    def call_trigger(self, timeout: float = 30.0):
        """Call ``/registration/trigger``; return the response."""
        from std_srvs.srv import Trigger

        if not self.trigger.wait_for_service(timeout_sec=timeout):
            raise InputError("demo: /registration/trigger is not available")
        future = self.trigger.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise InputError("demo: /registration/trigger did not answer")
            time.sleep(0.02)
        return future.result()


def _json(msg) -> dict:
    return json.loads(msg.data)


def _drive(client, timeout_s: float) -> dict:
    """Wait until the navigator has finished the current route; its last status."""
    time.sleep(0.5)  # let the navigator take the new route
    try:
        return _json(client.wait_for("/navigator/status",
                                     lambda m: _json(m)["phase"] == "done",
                                     timeout=max(timeout_s, 1.0)))
    except InputError:
        return _json(client.latest["/navigator/status"])


def _drive_to_point(client, point: np.ndarray, timeout_s: float) -> dict:
    """Plan a route to ``point`` (CT, m) and drive it; the navigator's last status."""
    from geometry_msgs.msg import Point, PointStamped
    from std_msgs.msg import Header

    client.pub_point.publish(PointStamped(header=Header(frame_id="ct"), point=Point(
        x=float(point[0]), y=float(point[1]), z=float(point[2]))))
    client.wait_for("/route/status", lambda m: _json(m).get("nodule") is None
                    and _json(m).get("feasible") and np.allclose(_json(m)["target_m"], point,
                                                                 atol=1e-9))
    return _drive(client, timeout_s)


def _refused_as_ambiguous(client, response) -> bool:
    """Whether the registration a ``registration/trigger`` ``response`` answers (the
    ``registration/status`` of the attempt its message names) was refused as ambiguous; one that
    published no status (too few or degenerate samples) was not."""
    from bronchonav.ros.registration_node import ATTEMPT_PREFIX

    match = re.match(rf"{ATTEMPT_PREFIX}(\d+): ", response.message)
    if match is None:
        return False
    return bool(client.registration(int(match.group(1))).get("ambiguous"))


def run_demo(out_dir: str | Path = "out/demo", map_spec: str | None = None,
             nodule: str | None = None, timeout_s: float = 300.0, rate_hz: float | None = None,
             pose_source: str = "registered", progress=print) -> dict:
    """Run the closed-loop scenario; return the summary dict (also written to ``summary.json``).

    Parameters
    ----------
    out_dir : path
        Output folder (created): ``summary.json``, ``demo.png``, ``demo.mcap``.
    map_spec : str, optional
        Map folder or ``phantom:NAME`` (default: :func:`default_map`).
    nodule : str, optional
        Nodule id to navigate to (default: the feasible route with the gentlest bends).
    timeout_s : float
        Longest time each drive may take (s).
    rate_hz : float, optional
        catheter_sim loop rate (default: the YAML's).
    pose_source : {"registered", "truth"}
        What the navigator steers on to the nodule: the registered EM pose (after the survey
        and a registration) or the simulator's ground truth (after the same survey of the other
        main bronchus; the whole sweep is registered when driving has ended, so that it too is
        a Y rather than a single path).
    progress : callable
        Receives one-line progress messages.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from bronchonav.ros import conversions as conv
    from bronchonav.ros.mcap_recorder import McapRecorder
    from bronchonav.ros.runner import (InProcessGraph, ensure_local_ros_env, node_parameters,
                                       spawn_processes, stop_processes)
    from bronchonav.sensors import patient_transform

    if pose_source not in ("registered", "truth"):
        raise InputError(f"pose_source must be 'registered' or 'truth', got {pose_source!r}")
    t_start = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ensure_local_ros_env()
    map_spec = map_spec or default_map()
    launch_args = {"map": map_spec, "rate": rate_hz}
    extra = {"registration": {"auto_register": False}, "navigator": {"pose_source": "truth"}}
    context = Context()
    rclpy.init(context=context)
    graph = recorder = client = None
    procs: dict = {}
    sim_codes: dict = {}
    response = None
    try:
        client = DemoClient(context)
        recorder = McapRecorder(out / "demo.mcap", _recorded_topics(), context=context)
        progress(f"starting the ROS graph (domain {os.environ['ROS_DOMAIN_ID']}, map {map_spec})")
        procs = spawn_processes(["catheter_sim"], launch_args=launch_args)
        graph = InProcessGraph(["airway_map_server", "route_planner", "registration",
                                "navigator"], launch_args=launch_args, extra=extra,
                               context=context)
        graph.start()
        graph.spin(client.node)
        graph.spin(recorder)
        client.wait_for("/catheter/tip_pose", timeout=60.0)
        info = _json(client.wait_for("/airway_map/info"))
        progress(f"map {info['name']!r}: {info['branches']} branches, "
                 f"{len(info['nodules'])} nodules")

        # -- plan ----------------------------------------------------------------------------
        from std_msgs.msg import String

        from bronchonav.ros.resources import load_airway_map

        known = [n["id"] for n in info["nodules"]]
        if nodule and nodule not in known:
            raise InputError(f"unknown nodule id {nodule!r} in map {info['name']!r} (known: "
                             f"{', '.join(known) or 'none'})")
        candidates = [nodule] if nodule else known
        statuses = {}
        for nid in candidates:
            client.pub_goal.publish(String(data=nid))
            st = _json(client.wait_for("/route/status",
                                       lambda m, nid=nid: _json(m).get("nodule") == nid))
            statuses[nid] = st
            progress(f"plan to {nid}: " + (f"feasible, {st['length_m'] * 1e3:.1f} mm, largest "
                                           f"bend {np.degrees(st['max_bend_rad']):.0f}°"
                                           if st["feasible"] else
                                           "infeasible: " + "; ".join(st["reasons"])))
        feasible = [nid for nid, st in statuses.items() if st["feasible"]]
        if not feasible:
            raise InputError(f"no feasible route to {', '.join(candidates)}")
        chosen = min(feasible, key=lambda nid: statuses[nid]["max_bend_rad"])
        status = statuses[chosen]
        target = np.asarray(status["target_m"])
        tree = load_airway_map(map_spec).tree

        # -- survey, registration, drive to the nodule ------------------------------------------
        t_nav = time.monotonic()
        # the other main bronchus first: with the target's side next the EM sweep is a Y,
        # which a rigid registration can pin down (a single path it cannot)
        point = survey_arm(tree, target, same_side=False).end
        progress("survey (ground-truth pose): into the main bronchus on the other side")
        _drive_to_point(client, point, timeout_s)
        client.pub_goal.publish(String(data=chosen))
        client.wait_for("/route/status", lambda m: _json(m).get("nodule") == chosen)
        route_msg = client.wait_for("/route", lambda m: len(m.poses) > 1
                                    and np.allclose(conv.path_points(m)[-1],
                                                    status["exit_point_m"], atol=1e-9))
        route = conv.path_points(route_msg)
        survey_extensions = 0
        if pose_source == "registered":
            # approach on the ground truth through the target side's main bronchus (the second
            # arm of the EM survey), then register and steer on the registered pose
            stops = survey_stops(Polyline(route).length, survey_arm(tree, target, True))
            progress(f"navigating to {chosen}: survey of its main bronchus (ground-truth pose, "
                     f"first {stops[0] * 1e3:.0f} mm)")
            time.sleep(0.5)
            for survey_extensions, switch_s in enumerate(stops):
                if survey_extensions:
                    progress(f"surveying on along the route to {switch_s * 1e3:.0f} mm "
                             f"(ground-truth pose) to register again")
                # (not while it withdraws from the first arm: projected on this route, the tip
                # in the other main bronchus can already be that far along)
                client.wait_for("/navigator/status", lambda m, s=switch_s: (
                    _json(m)["phase"] == "done" or (_json(m)["phase"] == "drive" and (
                        _json(m).get("s_tip_m") or 0.0) >= s)), timeout=timeout_s)
                response = client.call_trigger()
                progress(f"registration: {response.message}")
                if response.success or not _refused_as_ambiguous(client, response):
                    break
            if response.success:
                refused = [r.reason for r in graph.nodes["navigator"].set_parameters(
                    [Parameter("pose_source", value="registered")]) if not r.successful]
                if refused:
                    graph.nodes["navigator"].cancel("the registered pose was refused: "
                                                    + "; ".join(refused))
                else:
                    progress("navigating on the registered EM pose")
            else:
                graph.nodes["navigator"].cancel("registration failed")
        else:
            progress(f"navigating to {chosen} on the ground-truth pose")
        nav = _drive(client, timeout_s)
        nav_s = time.monotonic() - t_nav
        time.sleep(0.3)  # let the last commands settle
        exit_point = np.asarray(status["exit_point_m"])
        T_tip = conv.pose_to_matrix(client.latest["/catheter/tip_pose"].pose)
        end = client.drive_end_tip
        p_end = T_tip[:3, 3] if end is None else conv.pose_to_matrix(end.pose)[:3, 3]
        tip_to_exit = float(np.linalg.norm(p_end - exit_point))
        outcome = nav.get("outcome") or {}
        reached = route is not None and outcome.get("status") == "reached" and \
            tip_to_exit <= REACHED_TOLERANCE_M
        radius = load_airway_map(map_spec).nodule(chosen).radius
        tool = advance_tool(T_tip, planned_tool_length(exit_point, target), target, radius)
        progress(f"navigator: {outcome.get('reason', nav['phase'])} after {nav_s:.1f} s; tip "
                 f"{tip_to_exit * 1e3:.2f} mm from the exit point; tool "
                 f"{'in' if tool.in_lesion else 'NOT in'} the lesion "
                 f"({tool.miss_m * 1e3:.1f} mm from its centre)")

        if pose_source == "truth":  # register the survey and the drive, a Y like the other's
            response = client.call_trigger()
            progress(f"registration: {response.message}")

        tre_mm = fre_mm = None
        T_est = None
        if "/registration/transform" in client.latest or response.success:
            tf = client.wait_for("/registration/transform", timeout=5.0)
            T_est = conv.transform_to_matrix(tf.transform)
            from bronchonav.ros.catheter_sim_node import PARAMS as SIM_PARAMS
            from bronchonav.ros.params import defaults

            p = {**defaults(SIM_PARAMS), **node_parameters("catheter_sim", launch_args=launch_args)}
            T_true = patient_transform(p["patient_seed"], p["patient_max_translation_m"],
                                       p["patient_max_rotation_rad"])
            c_est = (T_est @ np.linalg.inv(T_true) @ np.append(target, 1.0))[:3]
            tre_mm = float(np.linalg.norm(c_est - target) * 1e3)
        reg = graph.nodes["registration"].result
        if reg is not None:
            fre_mm = float(reg.fre * 1e3)

        # -- loop statistics (from /diagnostics) ---------------------------------------------
        time.sleep(0.6)
        loop = dict(client.loop_status)
        backbone = conv.path_points(client.latest["/catheter/backbone"])
        em = np.array(client.em_samples).reshape(-1, 3)
    finally:
        counts = recorder.close() if recorder is not None else {}
        sim_codes = stop_processes(procs)
        if graph is not None:
            graph.stop()
        for node in (client.node if client else None, recorder):
            if node is not None:
                node.destroy_node()
        rclpy.try_shutdown(context=context)

    failure = ""
    steered_on = nav.get("pose_source", "none")
    if not response.success:
        failure = f"registration failed: {response.message}"
    elif steered_on != pose_source:
        failure = (f"the navigator steered on the {steered_on} pose, not the {pose_source} one: "
                   f"{outcome.get('reason', nav['phase'])}")
    elif not reached:
        failure = (f"exit point not reached: {outcome.get('reason', nav['phase'])}; tip "
                   f"{tip_to_exit * 1e3:.1f} mm from it")
    summary = {
        "ok": not failure,
        "failure": failure,
        "nodule": status["nodule"],
        "pose_source": steered_on,
        "reached": bool(reached),
        "tip_to_exit_mm": round(tip_to_exit * 1e3, 3),
        "tool_in_lesion": tool.in_lesion,
        "tool_miss_mm": round(tool.miss_m * 1e3, 3),
        "route_length_m": status["length_m"],
        "exit_point_m": exit_point.tolist(),
        "navigation_outcome": outcome.get("status", nav["phase"]),
        "navigation_reason": outcome.get("reason", ""),
        "navigation_retries": outcome.get("retries"),
        "navigation_s": round(nav_s, 2),
        "registration_success": bool(response.success),
        "registration_message": response.message,
        "survey_extensions": survey_extensions,
        "registration_tre_mm": None if tre_mm is None else round(tre_mm, 3),
        "registration_fre_mm": None if fre_mm is None else round(fre_mm, 3),
        "em_samples": int(len(em)),
        "loop_rate_hz": float(loop.get("rate_hz", "nan")),
        "target_rate_hz": float(loop.get("target_rate_hz", "nan")),
        "step_median_ms": float(loop.get("step_median_ms", "nan")),
        "step_p99_ms": float(loop.get("step_p99_ms", "nan")),
        "jitter_p99_ms": float(loop.get("jitter_p99_ms", "nan")),
        "deadline_misses": int(loop.get("deadline_misses", -1)),
        "commands_accepted": int(loop.get("commands_accepted", -1)),
        "commands_refused": int(loop.get("commands_refused", -1)),
        "solve_median_ms": float(loop.get("solve_median_ms", "nan")),
        "solve_p99_ms": float(loop.get("solve_p99_ms", "nan")),
        "solver_failures": int(loop.get("solver_failures", -1)),
        "solver_last_failure": loop.get("solver_last_failure", ""),
        "solver_snap_throughs": int(loop.get("solver_snap_throughs", -1)),
        "solver_long_attempts": int(loop.get("solver_long_attempts", -1)),
        "solver_long_attempts_passed": int(loop.get("solver_long_attempts_passed", -1)),
        "catheter_sim_exit_code": sim_codes.get("catheter_sim"),
        "map": map_spec,
        "ros_domain_id": int(os.environ["ROS_DOMAIN_ID"]),
        "mcap": str(out / "demo.mcap"),
        "mcap_messages": counts,
        "png": str(out / "demo.png"),
        "em_samples_csv": str(out / "em_samples_patient.csv"),
        "json": str(out / "summary.json"),
        "seconds": round(time.monotonic() - t_start, 1),
    }
    from bronchonav.viz.demo_picture import demo_picture

    demo_picture(out / "demo.png", load_airway_map(map_spec), route, backbone, em, T_est, summary)
    from bronchonav.fileio import atomic_open, write_text

    with atomic_open(out / "em_samples_patient.csv") as f:
        np.savetxt(f, em, delimiter=",", header="x_m,y_m,z_m (patient)")
    write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def format_summary(s: dict) -> str:
    """The summary as a few human-readable lines."""
    tre, fre = s["registration_tre_mm"], s["registration_fre_mm"]
    tre_text = "n/a" if tre is None else f"{tre:.2f} mm"
    fre_text = "n/a" if fre is None else f"{fre:.2f} mm"
    reg = "ok" if s["registration_success"] else "FAILED"
    return "\n".join([
        f"result            {'OK' if s['ok'] else 'FAILED: ' + s['failure']}",
        f"nodule            {s['nodule']}  (route {s['route_length_m'] * 1e3:.1f} mm, steered "
        f"on the {s['pose_source']} pose)",
        f"exit point        {'REACHED' if s['reached'] else 'NOT reached'}: tip "
        f"{s['tip_to_exit_mm']:.2f} mm from it ({s['navigation_outcome']}, "
        f"{s['navigation_retries']} retries, {s['navigation_s']:.1f} s); tool "
        f"{'in' if s['tool_in_lesion'] else 'NOT in'} the lesion ({s['tool_miss_mm']:.1f} mm "
        f"from its centre)",
        f"registration      {reg}: TRE {tre_text} at the nodule, FRE {fre_text}, "
        f"{s['em_samples']} EM samples",
        f"catheter loop     {s['loop_rate_hz']:.1f} Hz (target {s['target_rate_hz']:.0f}), step "
        f"median {s['step_median_ms']:.2f} ms / p99 {s['step_p99_ms']:.2f} ms, jitter p99 "
        f"{s['jitter_p99_ms']:.2f} ms, {s['deadline_misses']} deadline misses; solver median "
        f"{s['solve_median_ms']:.2f} ms / p99 {s['solve_p99_ms']:.2f} ms, "
        f"{s['solver_failures']} failed steps retried, {s['solver_snap_throughs']} "
        f"snap-throughs, {s['solver_long_attempts']} long attempts at folds "
        f"({s['solver_long_attempts_passed']} passed)"
        + (f"; last failed step: {s['solver_last_failure']}" if s["solver_last_failure"] else ""),
        f"outputs           {s['json']}  {s['png']}  {s['mcap']}",
    ])
