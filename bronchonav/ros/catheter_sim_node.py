"""``catheter_sim``: the Cosserat catheter inside the airway map, in a fixed-rate loop.

Topic and service names are relative (a namespace, ``__ns:=/cath2``, runs a second catheter);
``/diagnostics`` and ``/tf_static`` stay absolute, as ROS tools expect. Frames: ``ct`` = CT/LPS,
metres.

Commands (ros2_control style):

- ``catheter/command`` (``std_msgs/Float64MultiArray``, forward command, sets everything):
  ``[insertion m, roll rad, displacement_1 m, …, displacement_T m]`` (tendons in
  ``tendon_names`` order).
- ``catheter/joint_command`` (``sensor_msgs/JointState``): names among ``insertion``, ``roll``
  and the tendon names, each once; each named joint sets exactly one of position and effort (the
  other NaN or the array empty, as ros2_control does): insertion (m) and roll (rad) by position,
  the tendons all by position (displacement, m) or all by effort (tension, N). Joints not named
  keep their set-point. A non-zero ``header.stamp`` more than ``command_max_age_s`` old or
  ``command_future_tolerance_s`` ahead of the node's clock is refused (zero = unstamped, refused
  only with ``require_command_stamp``).

The command contract (see :mod:`bronchonav.catheter.runtime.guard`): a rate limit per source
(``max_command_rate_hz``); one controller in charge (the first publisher whose command is
accepted; others are refused until it sends nothing for ``controller_lease_s``, the operator calls
``catheter/release_control`` (``std_srvs/Trigger``) or the emergency stop is released); every
value finite and within the device limits, roll within ``±max_abs_roll_rad``; a message that sets
nothing refused. A refused command changes nothing and does not feed the watchdog; it is counted
by kind in ``/diagnostics``, logged (the first of a kind per source and second at once, the rest
summed up with their exact count every second) and written to the audit log (``audit_log``, JSON
lines: sources seen, controller changes, emergency stops, per-second counts per source).
``catheter/emergency_stop`` (``std_srvs/SetBool``): true holds the catheter where it is and
refuses every command (diagnostics ERROR) until false.

State (from the loop thread every period, and with ``publish_on_update`` also as soon as a new
state is solved; publishing never waits for subscribers):

- ``joint_states``: ``insertion``, ``roll`` and the URDF link joints (``link_i_pitch/yaw``, see
  :mod:`bronchonav.catheter.kinematics`) — only joints of the URDF.
- ``tendon_states`` (``sensor_msgs/JointState``): the tendons (position = displacement m,
  effort = tension N).
- ``catheter/tip_pose`` (``PoseStamped``, ``ct``), ``catheter/backbone`` (``nav_msgs/Path``,
  ``ct``, at ``viz_rate_hz``), ``catheter/contact_wrench`` (``WrenchStamped``, ``ct``: total
  wall contact force, N), ``catheter/em_pose`` (``PoseStamped`` in ``patient``: a simulated
  EM tip sensor with breathing motion and noise, at ``em_rate_hz``; the patient→CT transform
  is hidden, drawn from ``patient_seed``), ``/diagnostics``.

Stamps say how fresh a state is: while the newest accepted command is solved (or being solved
for less than ``stale_after_s``) states carry the current time; otherwise — the solver dead,
restarting, failing or behind — they carry the time their state was solved, and
``/diagnostics`` says ERROR with the reason (``state_stale`` true, ``state_age_s``). Its values
also keep the reason of the last failed solve (``solver_last_failure``) and count the accepted
snap-throughs past folds of the quasi-static path (``solver_snap_throughs``,
``solver_last_snap_through``) and the long attempts at folds its retries could not pass
(``solver_long_attempts``, ``solver_long_attempts_passed``), so a recording says what the
solver did between two reports.

Threads and processes: subscriber callbacks (on a single-threaded executor) check a command and
pass it to the solver, which runs in a supervised child process
(:mod:`bronchonav.catheter.runtime.solver_process`: the numba solver holds the GIL; a warmed-up
standby child takes over with the last good command when the active one dies or hangs). The
solver's receiver thread turns each solved state into ready-to-publish messages once; the
fixed-rate loop thread only stamps and publishes the newest ones every period, so a slow solve or
a slow subscriber never delays the loop.

Start-up: the map is read (once: the solver processes are given its tree), the solver child is
started, and the node spins while the child warms up (parameter services answer; ``/diagnostics``
says WARN "starting"; commands are refused as ``solver_down``); the first state (the catheter at
rest, solved by the child) is published as soon as the child sends it. No state after
``SOLVER_START_TIMEOUT_S`` is an ERROR.

Exit code (console script): 0 when the node ended healthy, 1 when it ended on an error (the
solver gave up restarting or is down, or the loop raised), 2 for a bad parameter or map.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Vector3, Wrench, WrenchStamped
from nav_msgs.msg import Path
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from std_srvs.srv import SetBool, Trigger

from bronchonav.errors import CommandError
from bronchonav.ros import conversions as conv
from bronchonav.ros import qos
from bronchonav.ros.params import Param, declare

PARAMS = [
    Param("map", "maps/phantom_default", "Map folder or 'phantom:NAME' (see airway_map_server)"),
    Param("rate_hz", 200.0, "Simulation loop rate (Hz)", minimum=1.0, maximum=2000.0),
    Param("n_nodes", 30, "Backbone discretisation of the Cosserat solver (nodes)",
          minimum=5, maximum=400),
    Param("solver_deadline_s", 0.05,
          "Per-step solver time budget (s); a step over budget keeps the previous state",
          minimum=1e-4, maximum=1.0),
    Param("solver_recovery_deadline_s", 2.0,
          "After a failed step the budget doubles up to this (s) until a step converges again "
          "(the failed set-point is retried every tick)", minimum=1e-4, maximum=5.0),
    Param("solver_fold_deadline_s", 8.0,
          "When a retry with the whole solver_recovery_deadline_s fails, the catheter is held "
          "at a fold: one attempt of up to this long (s) follows the path of equilibria round "
          "it (once per held state; 0 = never)", minimum=0.0, maximum=60.0),
    Param("solver_standby", True,
          "Keep a warmed-up standby solver process that takes over at once when the active one "
          "dies (otherwise a fresh one starts, which takes seconds)"),
    Param("solver_max_restarts", 5,
          "Solver deaths tolerated within a minute before the node gives up (holds, ERROR, "
          "exit code 1)", minimum=0, maximum=1000),
    Param("solver_hang_timeout_s", 1.0,
          "A solver process that sends nothing this long beyond solver_recovery_deadline_s while "
          "a command waits is killed and replaced (s)", minimum=0.05, maximum=60.0),
    Param("stale_after_s", 0.1,
          "A state is stale once the newest accepted command has waited this long to be solved "
          "(s): stamps stop advancing and /diagnostics say ERROR", minimum=0.005, maximum=10.0),
    Param("realtime_priority", 50,
          "SCHED_FIFO priority of the loop thread (Linux; 0 = normal scheduling), as "
          "ros2_control's controller manager does. Other threads and the solver process stay at "
          "normal priority. Falls back to normal scheduling (with a warning) when not permitted "
          "(root, CAP_SYS_NICE or an rtprio limit)", minimum=0, maximum=99),
    Param("watchdog_timeout_s", 0.5,
          "Hold the last set-point and report WARN when no command arrives for this long (s)",
          minimum=0.01, maximum=3600.0),
    Param("max_command_rate_hz", 1000.0,
          "Largest sustained command rate of one source (Hz); the excess is refused and counted",
          minimum=1.0, maximum=100000.0),
    Param("command_burst", 20, "Commands a source may send at once above that rate",
          minimum=1, maximum=100000),
    Param("controller_lease_s", 2.0,
          "The controller in charge loses charge after this long without an accepted command "
          "(s)", minimum=0.01, maximum=3600.0),
    Param("max_abs_roll_rad", 3.141592653589793, "Largest commanded |roll| (rad)",
          minimum=0.0, maximum=100.0),
    Param("command_max_age_s", 0.5,
          "A stamped joint command older than this (node clock) is refused (s)",
          minimum=1e-3, maximum=3600.0),
    Param("command_future_tolerance_s", 0.05,
          "A stamped joint command more than this ahead of the node clock is refused (s)",
          minimum=0.0, maximum=60.0),
    Param("require_command_stamp", False,
          "Refuse joint commands with a zero (unset) header stamp"),
    Param("audit_log", "",
          "JSON-lines audit log of command sources and safety events ('' = "
          "<ROS log dir>/catheter_sim_audit_<pid>.jsonl)"),
    Param("publish_on_update", True,
          "Also publish joint_states and the tip pose as soon as a new state is solved "
          "(lower command→state latency; the loop still publishes every period)"),
    Param("viz_rate_hz", 30.0, "Rate of the backbone path and contact wrench (Hz)",
          minimum=0.1, maximum=1000.0),
    Param("em_rate_hz", 40.0, "Rate of the simulated EM sensor (Hz)", minimum=0.1, maximum=1000.0),
    Param("diagnostics_rate_hz", 2.0, "Rate of /diagnostics (Hz)", minimum=0.1, maximum=100.0),
    Param("em_noise_m", 1.0e-3, "EM sensor position noise, std per axis (m)",
          minimum=0.0, maximum=0.05),
    Param("em_angle_noise_rad", 0.01, "EM sensor orientation noise, std (rad)",
          minimum=0.0, maximum=1.0),
    Param("em_seed", 0, "Seed of the EM sensor noise", minimum=0),
    Param("patient_seed", 1, "Seed of the hidden patient→CT transform", minimum=0),
    Param("patient_max_translation_m", 0.05,
          "Bound of each component of the hidden patient→CT translation (m)",
          minimum=0.0, maximum=0.5),
    Param("patient_max_rotation_rad", 0.5236,
          "Bound of each Euler angle of the hidden patient→CT rotation (rad)",
          minimum=0.0, maximum=3.1416),
    Param("breathing_amplitude_m", 0.0,
          "Head-foot breathing motion of the lung base seen by the EM sensor (m)",
          minimum=0.0, maximum=0.05),
    Param("breathing_period_s", 4.0, "Breathing period (s)", minimum=0.5, maximum=30.0),
    Param("n_links", 70, "Links of the URDF chain (must match the URDF)", minimum=1,
          maximum=1000),
    Param("link_length_m", 0.005, "Length of each URDF link (m) (must match the URDF)",
          minimum=1e-4, maximum=0.1),
]

SOLVER_START_TIMEOUT_S = 120.0
"""A solver that has sent no state this long after start-up is reported as ERROR (s)."""
SOURCE_LOOKUP_S = 1.0
"""Longest wait (s) for a new publisher's node name to reach the graph (once per publisher)."""
FLOOD_READ_PAUSE_S = 2e-3
"""Pause after a rate-limited command (s): under a flood the node reads at most ~500 commands/s."""


@dataclass
class _Setpoint:
    """The command in force (validated by the model on use)."""

    insertion: float = 0.0
    roll: float = 0.0
    displacement: list | None = None
    tension: list | None = None

    def command(self):
        from bronchonav.catheter import CatheterCommand

        return CatheterCommand(insertion=self.insertion, roll=self.roll,
                               tendon_tension=self.tension,
                               tendon_displacement=self.displacement)

    def updated(self, cmd: conv.JointCommand) -> "_Setpoint":
        """This set-point with what ``cmd`` sets."""
        sp = _Setpoint(self.insertion if cmd.insertion is None else cmd.insertion,
                       self.roll if cmd.roll is None else cmd.roll,
                       self.displacement, self.tension)
        if cmd.displacements is not None:
            sp.displacement, sp.tension = cmd.displacements, None
        if cmd.tensions is not None:
            sp.displacement, sp.tension = None, cmd.tensions
        return sp


@dataclass
class _StateMessages:
    """A solved state and its ``joint_states``, ``tendon_states`` and tip pose messages, built
    once per solve (on the solver's receiver thread) so a loop period only stamps and publishes
    them."""

    state: object
    """The :class:`~bronchonav.catheter.CatheterState`."""
    T_ct_tip: np.ndarray
    """Tip pose in the CT frame (4×4, m)."""
    joints: JointState
    tendons: JointState
    tip: PoseStamped
    solved_stamp: Time
    """ROS time at which the state was solved (the stamp it carries once stale)."""

    def stamp(self, stamp) -> None:
        """Set every header's stamp."""
        self.joints.header.stamp = stamp
        self.tendons.header.stamp = stamp
        self.tip.header.stamp = stamp


class CatheterSimNode(Node):
    """The simulated robotic bronchoscope (see the module docstring for the interface).

    Parameters
    ----------
    **kwargs
        Passed to :class:`rclpy.node.Node`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("catheter_sim", **kwargs)
        self._t_start = time.monotonic()
        self.params = p = declare(self, PARAMS)
        from bronchonav.catheter import CatheterParams
        from bronchonav.catheter.runtime import SolveLog, SolverConfig, SolverSupervisor
        from bronchonav.ros.resources import load_airway_map

        self.catheter = CatheterParams.default()
        if p["n_links"] * p["link_length_m"] < self.catheter.limits.max_insertion - 1e-9:
            from bronchonav.errors import InputError

            raise InputError(f"the URDF chain (n_links × link_length_m = "
                             f"{p['n_links'] * p['link_length_m']} m) is shorter than the "
                             f"maximum insertion {self.catheter.limits.max_insertion} m")
        # state slots, written by the solver's receiver thread from now on
        self._lock = threading.Lock()
        self._valid = _Setpoint()
        self._last_command_time: float | None = None
        self._seq = 0
        self._unsolved: deque = deque()
        """(seq, monotonic accept time) of accepted commands not yet solved, oldest first."""
        self.holding = True
        self.solves = SolveLog()
        """Solves, failures and snap-throughs (recorded by the receiver thread)."""
        self.solver_event = ""
        self._long_attempt: int | None = None
        """The command of an announced long attempt at a fold, until its state arrives."""
        self.long_attempts = 0
        self.long_attempts_passed = 0
        """Long attempts at folds that ended, and those that passed the fold (receiver thread)."""
        self._latest: _StateMessages | None = None
        self._built = False
        """Whether the node can turn states into messages (set at the end of start-up)."""
        self._early_state = None
        """The solver's first state when it arrived before the node was built."""
        self._stale = False
        self._pub_lock = threading.Lock()
        """Held while choosing and publishing the newest state, so that with depth-1 QoS an
        older state never overwrites a newer one on ``joint_states``. The loop thread never
        waits for it: when the receiver holds it, that tick's state is being published."""
        # The map is read once, here (a bad one ends start-up before any solver process
        # starts); the solver processes get its tree with their configuration. The solver child
        # starts next: its start-up (interpreter, imports, numba cache, warm-up solves) is the
        # longest part of the node's and runs while the node builds itself and spins (parameter
        # services answer meanwhile); the first state is published as soon as it arrives.
        self.airway_map = load_airway_map(p["map"])
        config = SolverConfig(tree=self.airway_map.tree, n_nodes=p["n_nodes"],
                              deadline_s=p["solver_deadline_s"],
                              recovery_deadline_s=p["solver_recovery_deadline_s"],
                              fold_deadline_s=p["solver_fold_deadline_s"],
                              params=self.catheter)
        self.solver = SolverSupervisor(config, self._on_solver_state, self._on_solver_event,
                                       standby=p["solver_standby"],
                                       max_restarts=p["solver_max_restarts"],
                                       hang_timeout_s=p["solver_hang_timeout_s"])
        self.solver.start(timeout=0.0)  # the hang monitor; the first state comes when it comes
        try:
            self._build(p)
        except BaseException:  # a bad map or parameter, or a signal: no node, so no solver
            self.solver.close()
            raise

    def _build(self, p: dict) -> None:
        """The rest of start-up, while the solver warms up: sensors, guard, publishers,
        timers, subscriptions, services, the loop."""
        from bronchonav.catheter import base_pose_from_tree
        from bronchonav.catheter.kinematics import chain_joint_angles, link_joint_names
        from bronchonav.catheter.runtime import (AuditLog, CommandGuard, FixedRateLoop,
                                                 freeze_startup_heap)
        from bronchonav.sensors import BreathingModel, EMSensor, patient_transform

        self.tendon_names = list(self.catheter.tendon_names)
        self.T_ct_base = np.asarray(base_pose_from_tree(self.airway_map.tree), dtype=float)
        self._joint_angles = chain_joint_angles
        self.joint_names = ["insertion", "roll"] + link_joint_names(p["n_links"])
        self.T_ct_patient = patient_transform(p["patient_seed"], p["patient_max_translation_m"],
                                              p["patient_max_rotation_rad"])
        self.em_sensor = EMSensor(
            self.T_ct_patient, BreathingModel.for_tree(self.airway_map.tree,
                                                       p["breathing_amplitude_m"],
                                                       period=p["breathing_period_s"]),
            noise_m=p["em_noise_m"], angle_noise_rad=p["em_angle_noise_rad"], seed=p["em_seed"])
        self._sources: dict[bytes, str] = {}
        self._last_seq: dict[bytes, int] = {}
        """publisher gid → DDS sequence number of its latest command (gaps = commands lost
        unread)."""
        audit_path = p["audit_log"] or os.path.join(_ros_log_dir(),
                                                    f"catheter_sim_audit_{os.getpid()}.jsonl")
        self.guard = CommandGuard(p["max_command_rate_hz"], p["command_burst"],
                                  p["controller_lease_s"], AuditLog(audit_path))
        self.guard.audit.write("start", node=self.get_fully_qualified_name(), map=p["map"])

        self.pub_joints = self.create_publisher(JointState, "joint_states", qos.STATE)
        self.pub_tendons = self.create_publisher(JointState, "tendon_states", qos.STATE)
        self.pub_tip = self.create_publisher(PoseStamped, "catheter/tip_pose", qos.STATE)
        self.pub_path = self.create_publisher(Path, "catheter/backbone", qos.STATE)
        self.pub_wrench = self.create_publisher(WrenchStamped, "catheter/contact_wrench",
                                                qos.STATE)
        self.pub_em = self.create_publisher(PoseStamped, "catheter/em_pose", qos.STATE)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", qos.DEFAULT)
        self._publish_static_tf()

        self._t0 = time.monotonic()
        self.create_timer(1.0 / p["viz_rate_hz"], self._publish_backbone)
        self.create_timer(1.0 / p["em_rate_hz"], self._publish_em)
        self.create_timer(1.0 / p["diagnostics_rate_hz"], self._publish_diagnostics)
        self.create_timer(1.0, self._report_refusals)
        self.sub_forward = self.create_subscription(
            Float64MultiArray, "catheter/command",
            lambda msg, info: self._on_command(msg, info, self.sub_forward), qos.COMMAND)
        self.sub_joint = self.create_subscription(
            JointState, "catheter/joint_command",
            lambda msg, info: self._on_command(msg, info, self.sub_joint), qos.COMMAND)
        self.create_service(SetBool, "catheter/emergency_stop", self._on_emergency_stop)
        self.create_service(Trigger, "catheter/release_control", self._on_release_control)
        with self._lock:
            self._built = True
            early, self._early_state = self._early_state, None
        if early is not None:
            self._on_solver_state(-1, early)
        freeze_startup_heap()
        self.loop = FixedRateLoop(p["rate_hz"], self._tick, name="catheter-sim-loop",
                                  realtime_priority=p["realtime_priority"]).start()
        if p["realtime_priority"] and not self.loop.realtime:
            self.get_logger().warning("real-time scheduling not permitted: running the loop at "
                                   "normal priority (expect more jitter on a busy machine)")
        self.get_logger().info(
            f"catheter_sim at {p['rate_hz']:.0f} Hz on map {self.airway_map.name!r}: tendons "
            f"{self.tendon_names}, command {self.sub_forward.topic_name} [insertion, roll, "
            f"{len(self.tendon_names)} displacements] or {self.sub_joint.topic_name}; "
            f"audit log {audit_path}; the solver is "
            + ("running" if self._latest is not None else "warming up (states follow)"))

    # -- TF (only where tf2_msgs exists) ----------------------------------------------------------
    def _publish_static_tf(self) -> None:
        """``/tf_static``: ``ct`` → ``base`` (the robot's base at the airway entry), which joins
        the robot's TF tree (robot_state_publisher, from ``joint_states`` and the URDF, down to
        ``catheter_tip``) to the map's frame."""
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            return
        static = self.create_publisher(TFMessage, "/tf_static", qos.LATCHED)
        stamp = self.get_clock().now().to_msg()
        static.publish(TFMessage(transforms=[conv.matrix_to_transform(self.T_ct_base, "ct", "base",
                                                                      stamp)]))

    # -- commands (executor thread) -------------------------------------------------------------
    def _source(self, info, subscription) -> str:
        """Who sent a message: the fully qualified name of its publisher's node (so one
        controller may use both command topics), looked up in the graph once per publisher;
        ``publisher <gid> (topic)`` when the graph does not know it yet."""
        gid = bytes((info or {}).get("publisher_gid", {}).get("data", b""))
        name = self._sources.get(gid)
        if name is None:
            topic = subscription.topic_name
            name = f"publisher {gid.hex()} ({topic})"
            # the node's name may reach the graph a little after its first message (once per
            # publisher, wait up to SOURCE_LOOKUP_S for it: the identity must not change later)
            deadline = time.monotonic() + SOURCE_LOOKUP_S
            while True:
                found = [e for e in self.get_publishers_info_by_topic(topic)
                         if bytes(e.endpoint_gid)[:len(gid)] == gid
                         and e.node_name != "_NODE_NAME_UNKNOWN_"]
                if found or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            if found:
                name = f"{found[0].node_namespace.rstrip('/')}/{found[0].node_name}"
            self._sources[gid] = name
            self.guard.audit.write("publisher", source=name, topic=topic, gid=gid.hex())
        return name

    def _refused(self, refusal) -> None:
        if refusal.log_now:
            self.get_logger().warning(f"command refused ({refusal.kind}) from {refusal.source}: "
                                   f"{refusal.reason}")

    def _report_refusals(self) -> None:
        for line in self.guard.report():
            self.get_logger().warning(line)

    def _check_stamp(self, stamp) -> None:
        """Raise :class:`CommandError` for a stale or future stamp (zero = unstamped)."""
        p = self.params
        t = conv.stamp_seconds(stamp)
        if t == 0.0:
            if p["require_command_stamp"]:
                raise CommandError("joint command has no header stamp (require_command_stamp)")
            return
        age = self.get_clock().now().nanoseconds * 1e-9 - t
        if age > p["command_max_age_s"]:
            raise CommandError(f"joint command stamp is {age:.3f} s old (limit "
                               f"{p['command_max_age_s']} s)")
        if -age > p["command_future_tolerance_s"]:
            raise CommandError(f"joint command stamp is {-age:.3f} s in the future (tolerance "
                               f"{p['command_future_tolerance_s']} s)")

    def _on_command(self, msg, info, subscription) -> None:
        """Check a command (guard, format, stamp, limits) and hand it to the solver."""
        from bronchonav.catheter import validate_command

        source = self._source(info, subscription)
        seq = info.get("publication_sequence_number") if info else None
        if seq is not None:
            gid = bytes(info["publisher_gid"]["data"])
            last = self._last_seq.get(gid)
            self._last_seq[gid] = seq
            if last is not None and seq > last + 1:
                self._refused(self.guard.lost(
                    source, seq - last - 1, f"{seq - last - 1} command(s) overwritten in the "
                                            f"node's queue by newer ones before it read them"))
        refusal = self.guard.admit(source)
        if refusal is not None:
            self._refused(refusal)
            if refusal.kind == "rate_limit":
                # a flood: read it no faster than this (the rest is dropped by the queue and
                # counted from the sequence numbers), so the executor thread cannot hold the
                # GIL and a core and starve the loop thread
                time.sleep(FLOOD_READ_PAUSE_S)
            return
        max_roll = self.params["max_abs_roll_rad"]
        try:
            if isinstance(msg, JointState):
                cmd = conv.joint_command_values(msg, self.tendon_names, max_roll)
            else:
                cmd = conv.forward_command_values(msg.data, len(self.tendon_names), max_roll)
        except CommandError as exc:
            self._refused(self.guard.refuse(source, "invalid", str(exc)))
            return
        if isinstance(msg, JointState):
            try:
                self._check_stamp(msg.header.stamp)
            except CommandError as exc:
                self._refused(self.guard.refuse(source, "stamp", str(exc)))
                return
        with self._lock:
            sp = self._valid.updated(cmd)
        command = sp.command()
        try:
            validate_command(command, self.catheter)
        except CommandError as exc:
            self._refused(self.guard.refuse(source, "invalid", str(exc)))
            return
        if not self._send(sp, command):
            status = self.solver.health.status
            self._refused(self.guard.refuse(
                source, "solver_down",
                "the solver is starting (warming up): commands are taken once the first state "
                "is published" if status == "starting" else
                f"no solver is running ({status}); the catheter holds its last solved state"))
            return
        self.guard.accepted(source)

    def _send(self, sp: _Setpoint, command) -> bool:
        """Make ``sp`` the set-point in force and give it to the solver (False: no solver)."""
        if self.solver.health.status != "running":
            return False
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._valid = sp
            now = time.monotonic()
            self._last_command_time = now
            self._unsolved.append((seq, now))
        return self.solver.send(seq, command)

    def _on_emergency_stop(self, request: SetBool.Request, response: SetBool.Response):
        """True: hold the catheter where it is and refuse commands; false: accept again."""
        if request.data:
            self.guard.engage_estop("catheter/emergency_stop service")
            response.success = True
            latest = self._latest
            if latest is None:  # nothing was commanded yet: the catheter stays at rest
                response.message = "emergency stop engaged before the first state: at rest"
            else:
                st = latest.state
                hold = _Setpoint(float(st.insertion), float(st.roll),
                                 [float(d) for d in st.tendon_displacements], None)
                held = self._send(hold, hold.command())
                response.message = ("emergency stop engaged: holding insertion "
                                    f"{hold.insertion:.4f} m" + ("" if held else
                                                                 " (no solver running)"))
            self.get_logger().error(response.message)
        else:
            self.guard.release_estop("catheter/emergency_stop service")
            response.success = True
            response.message = "emergency stop released; the next controller takes charge"
            self.get_logger().warning(response.message)
        self._publish_diagnostics()
        return response

    def _on_release_control(self, request: Trigger.Request, response: Trigger.Response):
        """Free the controller-in-charge slot (an operator action)."""
        previous = self.guard.release_control("catheter/release_control service")
        response.success = True
        response.message = (f"released control from {previous}" if previous else
                            "no controller was in charge")
        self.get_logger().warning(response.message)
        return response

    # -- the loop (its own thread) --------------------------------------------------------------
    def _tick(self, now: float) -> None:
        """One loop period: watchdog, staleness, and the newest state stamped and published."""
        age = self.command_age(now)
        self.holding = age is None or age > self.params["watchdog_timeout_s"]
        if self._latest is None:  # the solver is still warming up
            return
        if self._pub_lock.acquire(blocking=False):  # else the receiver is publishing a newer one
            try:
                self._publish_state(self._latest, now)
            except Exception:
                if self.context.ok():
                    raise  # a loop error (counted, ERROR on /diagnostics, exit code 1)
                # else a signal shut the context down: the node is stopping, not failing
            finally:
                self._pub_lock.release()

    def command_age(self, now: float | None = None) -> float | None:
        """Seconds since the last valid command (monotonic clock), or None before the first."""
        with self._lock:
            last = self._last_command_time
        return None if last is None else (time.monotonic() if now is None else now) - last

    def unsolved_age(self, now: float | None = None) -> float:
        """Seconds the oldest accepted, not yet solved command has waited (0 if none)."""
        with self._lock:
            first = self._unsolved[0][1] if self._unsolved else None
        return 0.0 if first is None else (time.monotonic() if now is None else now) - first

    def is_stale(self, now: float | None = None) -> bool:
        """Whether the newest state no longer answers the set-point in force: no solver runs,
        or an accepted command has waited longer than ``stale_after_s``."""
        return (self.solver.health.status != "running"
                or self.unsolved_age(now) > self.params["stale_after_s"])

    # -- solver output (receiver threads) -------------------------------------------------------
    def _on_solver_state(self, seq: int, state) -> None:
        """A solved (or failed) state: keep converged ones, count and report failures."""
        self.solves.record(state)
        if seq == self._long_attempt:  # its outcome, said once
            self._long_attempt = None
            self.long_attempts += 1
            self.long_attempts_passed += bool(state.converged)
            outcome = (f"solver's long attempt at command {seq} "
                       f"{'passed' if state.converged else 'did not pass'} the fold in "
                       f"{state.solve_time_s:.2f} s: {state.message or 'solved plainly'}")
            self.guard.audit.write("solver_long_attempt", detail=outcome)
            self.solver_event = f"long attempt: {outcome}"
            if state.converged:
                self.get_logger().info(outcome)
            else:
                self.get_logger().warning(outcome)
        if not state.converged:
            return
        if seq >= 0:
            self.solver.good(seq)
            with self._lock:
                while self._unsolved and self._unsolved[0][0] <= seq:
                    self._unsolved.popleft()
        with self._lock:
            if not self._built:  # the node is still building itself: publish it once built
                self._early_state = state
                return
        messages = self._state_messages(state)
        with self._pub_lock:
            first = self._latest is None
            self._latest = messages
            if first:
                self.get_logger().info(f"first state after {time.monotonic() - self._t_start:.2f} s"
                                       " (publishing)")
            if first or self.params["publish_on_update"]:
                from rclpy._rclpy_pybind11 import RCLError

                try:
                    self._publish_state(messages, time.monotonic())
                except RCLError:  # the context is shutting down (SIGINT/SIGTERM)
                    pass

    def _on_solver_event(self, kind: str, detail) -> None:
        """Solver deaths, takeovers, give-ups, long attempts at a fold and refusals: logged
        and reported at once."""
        if kind != "tracing" and self._long_attempt is not None:  # it ends without its state
            seq, self._long_attempt = self._long_attempt, None
            self.long_attempts += 1
            ended = f"solver's long attempt at command {seq} did not end: the solver {kind}"
            self.guard.audit.write("solver_long_attempt", detail=ended)
            self.get_logger().warning(ended)
        if kind == "rejected":
            seq, reason = detail
            with self._lock:
                while self._unsolved and self._unsolved[0][0] <= seq:
                    self._unsolved.popleft()
            self.guard.refuse("solver", "solver_rejected", reason)
            self.get_logger().warning(f"solver refused command {seq}: {reason}")
            return
        if kind == "tracing":
            seq, budget = detail
            self._long_attempt = seq
            detail = (f"command {seq}: the retries could not pass a fold of the quasi-static "
                      f"path; one attempt of up to {budget:g} s follows it round (the catheter "
                      "holds meanwhile)")
        self.solver_event = f"{kind}: {detail}"
        if not self._built:  # during start-up: the supervisor restarts it; say so
            self.get_logger().error(f"solver {kind} during start-up: {detail}")
            return
        self.guard.audit.write(f"solver_{kind}", detail=str(detail))
        if kind == "tracing":
            self.get_logger().warning(f"solver {kind}: {detail}")
        elif kind == "restarted":
            with self._lock:  # the new child re-solves the last good command, then the newest
                if self._valid is not None and self._last_command_time is not None:
                    self._unsolved.appendleft((-1, time.monotonic()))
            self.get_logger().warning(f"solver {detail}")
        else:
            self.get_logger().error(f"solver {kind}: {detail}")
        try:
            self._publish_diagnostics()
        except Exception:  # noqa: BLE001 — the context may be shutting down
            pass

    @property
    def state(self):
        """The latest converged :class:`~bronchonav.catheter.CatheterState` (None until the
        solver's first state)."""
        latest = self._latest
        return None if latest is None else latest.state

    def _state_messages(self, st) -> _StateMessages:
        """The ``joint_states``, ``tendon_states`` and tip pose messages of a state (stamps set
        on publish)."""
        p = self.params
        ins, roll = float(st.insertion), float(st.roll)
        angles = self._joint_angles(st.positions, self.T_ct_base, ins, roll, p["n_links"],
                                    p["link_length_m"])
        T_tip = np.asarray(st.tip_pose, dtype=float)
        return _StateMessages(
            st, T_tip, conv.joint_state(self.joint_names, np.concatenate([[ins, roll], angles]),
                                        Time()),
            conv.joint_state(self.tendon_names, st.tendon_displacements, Time(),
                             st.tendon_tensions),
            conv.pose_stamped(T_tip, "ct", Time()), self.get_clock().now().to_msg())

    def _publish_state(self, messages: _StateMessages, now: float) -> None:
        """Stamp (now, or the solve time when stale) and publish the state messages."""
        self._stale = stale = self.is_stale(now)
        messages.stamp(messages.solved_stamp if stale else self.get_clock().now().to_msg())
        self.pub_joints.publish(messages.joints)
        self.pub_tendons.publish(messages.tendons)
        self.pub_tip.publish(messages.tip)

    # -- slower streams (executor timers, off the loop thread) -------------------------------------
    def _publish_backbone(self) -> None:
        """``catheter/backbone`` and ``catheter/contact_wrench`` (CT frame)."""
        if self._latest is None:
            return
        st = self._latest.state
        stamp = self.get_clock().now().to_msg()
        self.pub_path.publish(conv.path_message(st.positions, "ct", stamp,
                                                np.asarray(st.rotations)))
        f = np.asarray(st.contact_forces, dtype=float).reshape(-1, 3).sum(axis=0)
        self.pub_wrench.publish(WrenchStamped(
            header=Header(frame_id="ct", stamp=stamp),
            wrench=Wrench(force=Vector3(x=float(f[0]), y=float(f[1]), z=float(f[2])))))

    def _publish_em(self) -> None:
        """``/catheter/em_pose``: the simulated EM sensor (patient frame)."""
        if self._latest is None:
            return
        T_tip = self._latest.T_ct_tip
        self.pub_em.publish(conv.pose_stamped(self.em_pose(T_tip, time.monotonic() - self._t0),
                                              "patient", self.get_clock().now().to_msg()))

    def _publish_diagnostics(self) -> None:
        self.pub_diag.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                              status=[self.diagnostic_status()]))

    def em_pose(self, T_ct_tip: np.ndarray, t: float) -> np.ndarray:
        """The EM sensor reading ``T_patient_sensor`` for a tip pose (CT) at time ``t`` (s)
        (:class:`bronchonav.sensors.EMSensor`: breathing, patient frame, noise)."""
        return self.em_sensor.read(T_ct_tip, t).T_patient_sensor

    def loop_stats(self) -> dict:
        """Loop timing statistics (see :class:`bronchonav.catheter.runtime.FixedRateLoop`)."""
        return self.loop.stats()

    def health(self, counts=None) -> tuple[int, str]:
        """The node's ``(level, message)``: ERROR when the solver is down, failed or behind
        (state stale), the emergency stop is engaged or the loop raised; WARN while solves fail
        or the watchdog holds; else OK. ``counts``: the solve counts to judge by (a
        :class:`~bronchonav.catheter.runtime.SolveCounts` the caller also reports; read now if
        not given)."""
        h = self.solver.health
        age = self.command_age()
        if h.status == "starting":
            waited = time.monotonic() - self._t_start
            if waited > SOLVER_START_TIMEOUT_S:
                return (DiagnosticStatus.ERROR, f"the solver has not started after {waited:.0f} s"
                        + (f" ({h.last_death})" if h.last_death else ""))
            return DiagnosticStatus.WARN, f"starting: the solver is warming up ({waited:.1f} s)"
        if h.status == "failed":
            return DiagnosticStatus.ERROR, f"solver failed, holding: {h.last_death}"
        if h.status != "running":
            return (DiagnosticStatus.ERROR,
                    f"solver {h.status}, holding the last solved state: {h.last_death}")
        if self.loop.errors:
            return DiagnosticStatus.ERROR, f"loop errors: {self.loop.last_error}"
        if self.guard.estop:
            return DiagnosticStatus.ERROR, "emergency stop engaged: holding"
        n = self.solves.counts() if counts is None else counts
        if self.is_stale():
            return (DiagnosticStatus.ERROR,
                    f"solver behind: the set-point has waited {self.unsolved_age():.2f} s "
                    f"({n.consecutive_failures} failed solves in a row"
                    + (f": {n.last_failure}" if n.consecutive_failures else "")
                    + "); state stale")
        if n.consecutive_failures:
            return (DiagnosticStatus.WARN,
                    f"solver failing: {n.consecutive_failures} failed solves in a row "
                    f"({n.last_failure})")
        if self.holding:
            return DiagnosticStatus.WARN, (
                "holding: no command received yet" if age is None else
                f"holding: no command for {age:.2f} s (watchdog "
                f"{self.params['watchdog_timeout_s']} s)")
        return DiagnosticStatus.OK, "running"

    def diagnostic_status(self) -> DiagnosticStatus:
        """The node's ``diagnostic_msgs/DiagnosticStatus``."""
        age = self.command_age()
        s = self.loop.stats()
        n = self.solves.counts()
        h = self.solver.health
        level, message = self.health(n)
        latest = self._latest
        state_age = math.nan if latest is None else (
            self.get_clock().now().nanoseconds
            - (latest.solved_stamp.sec * 10**9 + latest.solved_stamp.nanosec)) * 1e-9
        state = None if latest is None else latest.state
        values = {
            "rate_hz": f"{s['rate_hz']:.2f}", "target_rate_hz": f"{s['target_rate_hz']:.2f}",
            "step_median_ms": f"{s['step_median_ms']:.3f}", "step_p99_ms": f"{s['step_p99_ms']:.3f}",
            "step_max_ms": f"{s['step_max_ms']:.3f}", "jitter_p99_ms": f"{s['jitter_p99_ms']:.3f}",
            "deadline_misses": str(s["deadline_misses"]), "ticks": str(s["ticks"]),
            "recent_misses_unix_s": " ".join(f"{t:.3f}" for t in s["recent_misses_unix_s"]),
            "command_age_s": "none" if age is None else f"{age:.3f}",
            "holding": str(self.holding).lower(),
            **{k: str(v).lower() if isinstance(v, bool) else str(v)
               for k, v in self.guard.counts().items()},
            "state_stale": str(self.is_stale()).lower(), "state_age_s": f"{state_age:.3f}",
            "solver_status": h.status, "solver_pid": str(self.solver.active_pid),
            "solver_deaths": str(h.deaths), "solver_restarts": str(h.restarts),
            "solver_standby": str(h.standby).lower(), "solver_last_death": h.last_death,
            "solver_failures": str(n.failures),
            "solver_consecutive_failures": str(n.consecutive_failures),
            "solver_last_failure": n.last_failure,
            "solver_snap_throughs": str(n.snap_throughs),
            "solver_last_snap_through": n.last_snap_through,
            "solver_long_attempts": str(self.long_attempts),
            "solver_long_attempts_passed": str(self.long_attempts_passed),
            "solves": str(n.solves),
            "solve_median_ms": f"{n.solve_median_ms:.3f}",
            "solve_p99_ms": f"{n.solve_p99_ms:.3f}",
            "solve_max_ms": f"{n.solve_max_ms:.3f}",
            "solver_residual": f"{float(getattr(state, 'residual', math.nan)):.3e}",
            "insertion_m": f"{float(getattr(state, 'insertion', math.nan)):.4f}",
            "setpoint_insertion_m": f"{float(self._valid.insertion):.4f}",
            "realtime": f"SCHED_FIFO {self.params['realtime_priority']}" if self.loop.realtime
                        else "normal",
        }
        name = self.get_fully_qualified_name().lstrip("/")
        return DiagnosticStatus(level=level, name=f"{name}: loop", message=message,
                                hardware_id="bronchonav_simulated_catheter",
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    @property
    def exit_code(self) -> int:
        """1 when the node is in an error it cannot leave by itself (solver given up or not
        running, loop errors), else 0."""
        if getattr(self, "loop", None) is None:
            return 0  # stopped during start-up: spin_node reports that
        status = self.solver.health.status
        if status == "starting":  # stopped while the solver warmed up: an error only if late
            return int(time.monotonic() - self._t_start > SOLVER_START_TIMEOUT_S)
        return int(status != "running" or self.loop.errors > 0)

    def destroy_node(self):
        """Stop the loop and the solver processes, close the audit log, then destroy the node
        (also a half-built one: a signal during start-up ends ``__init__`` early and rclpy still
        destroys the node)."""
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.stop()
        if getattr(self, "solver", None) is not None:
            self.solver.close()
        guard = getattr(self, "guard", None)
        if guard is not None:
            guard.report()
            if loop is not None:
                level, message = self.health()
                guard.audit.write("stop", message=message,
                                  level=ord(level) if isinstance(level, bytes) else int(level))
            guard.audit.close()
        return super().destroy_node()


def _ros_log_dir() -> str:
    """The ROS log folder (``ROS_LOG_DIR``, else ``$ROS_HOME/log``, else ``~/.ros/log``)."""
    if os.environ.get("ROS_LOG_DIR"):
        return os.environ["ROS_LOG_DIR"]
    home = os.environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
    return os.path.join(home, "log")


def main(args=None) -> None:
    """Console script ``catheter_sim`` (exit codes: see the module docstring)."""
    from bronchonav.ros.runner import spin_node

    def factory():
        return CatheterSimNode()
    factory.__name__ = "catheter_sim"

    def exit_code(node: CatheterSimNode) -> int:
        if node.exit_code:
            level, message = node.health()
            print(f"catheter_sim: ended on an error: {message}", file=sys.stderr)
        return node.exit_code

    spin_node(factory, args, exit_code)


if __name__ == "__main__":
    main()
