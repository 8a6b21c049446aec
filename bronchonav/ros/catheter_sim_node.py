"""``catheter_sim``: the Cosserat catheter inside the airway map, in a fixed-rate loop.

Command interface (ros2_control style; frames: ``ct`` = CT/LPS, metres):

- ``/catheter/command`` (``std_msgs/Float64MultiArray``, forward command):
  ``[insertion m, roll rad, displacement_1 m, …, displacement_T m]`` (tendons in
  ``tendon_names`` order).
- ``/catheter/joint_command`` (``sensor_msgs/JointState``): names among ``insertion``, ``roll``
  and the tendon names; position = insertion (m) / roll (rad) / tendon displacement (m), or
  effort = tendon tension (N). Joints not named keep their previous set-point.

State (``/joint_states`` and tip pose every loop period from the loop thread, and with
``publish_on_update`` also as soon as a new state is solved; the slower streams from executor
timers; publishing never waits for subscribers):

- ``/joint_states``: ``insertion``, ``roll``, the URDF link joints (``link_i_pitch/yaw``, see
  :mod:`bronchonav.ros.kinematics`) and the tendons (position = displacement m, effort = N).
- ``/catheter/tip_pose`` (``PoseStamped``, ``ct``), ``/catheter/backbone`` (``nav_msgs/Path``,
  ``ct``, at ``viz_rate_hz``), ``/catheter/contact_wrench`` (``WrenchStamped``, ``ct``: total
  wall contact force, N), ``/catheter/em_pose`` (``PoseStamped`` in ``patient``: a simulated
  EM tip sensor with breathing motion and noise, at ``em_rate_hz``; the patient→CT transform
  is hidden, drawn from ``patient_seed``), ``/diagnostics`` (loop rate, step time, jitter,
  deadline misses, command age, rejections, watchdog state).

Threads and processes: subscriber callbacks (on a single-threaded executor) validate a command and
pass it to the solver, which runs in a child process (:mod:`bronchonav.ros.solver_process`: the
numba solver holds the GIL) and solves the newest command as soon as it is free (warm-started,
per-step budget ``solver_deadline_s``; a failed step is retried with a budget doubling up to
``solver_recovery_deadline_s``). The solver's receiver thread turns each solved state into
ready-to-publish messages once; the fixed-rate loop thread only stamps and publishes the newest
ones every period, so a slow solve or a slow subscriber never delays the loop. ``/diagnostics``
reports loop timing (``step_*`` = one loop period's work) and solver timing (``solve_*``)
separately.

Safety: a command that is non-finite, malformed or outside the device limits is rejected with a
logged reason and the last valid command stays in force; the loop keeps running. If no command
arrives within ``watchdog_timeout_s`` the catheter holds its last valid set-point and the
diagnostics turn WARN ("holding") until commands resume.
"""

from __future__ import annotations

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

from bronchonav.errors import CommandError
from bronchonav.ros import conversions as conv
from bronchonav.ros import qos
from bronchonav.ros.params import Param, declare

PARAMS = [
    Param("map", "maps/phantom_default", "Map folder or 'phantom:NAME' (see airway_map_server)"),
    Param("rate_hz", 200.0, "Simulation loop rate (Hz)", minimum=1.0, maximum=2000.0),
    Param("n_nodes", 40, "Backbone discretisation of the Cosserat solver (nodes)",
          minimum=5, maximum=400),
    Param("solver_deadline_s", 0.004,
          "Per-step solver time budget (s); a step over budget keeps the previous state",
          minimum=1e-4, maximum=1.0),
    Param("solver_recovery_deadline_s", 0.2,
          "After a failed step the budget doubles up to this (s) until a step converges again "
          "(the failed set-point is retried every tick)", minimum=1e-4, maximum=5.0),
    Param("realtime_priority", 50,
          "SCHED_FIFO priority of the loop thread (Linux; 0 = normal scheduling), as "
          "ros2_control's controller manager does. Other threads and the solver process stay at "
          "normal priority. Falls back to normal scheduling (with a warning) when not permitted "
          "(root, CAP_SYS_NICE or an rtprio limit)", minimum=0, maximum=99),
    Param("watchdog_timeout_s", 0.5,
          "Hold the last set-point and report WARN when no command arrives for this long (s)",
          minimum=0.01, maximum=3600.0),
    Param("publish_on_update", True,
          "Also publish /joint_states and the tip pose as soon as a new state is solved "
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


@dataclass
class _StateMessages:
    """A solved state and its ``/joint_states`` and tip pose messages, built once per solve (on
    the solver's receiver thread) so a loop period only stamps and publishes them."""

    state: object
    """The :class:`~bronchonav.catheter.CatheterState`."""
    T_ct_tip: np.ndarray
    """Tip pose in the CT frame (4×4, m)."""
    joints: JointState
    tip: PoseStamped

    def stamp(self, stamp) -> None:
        """Set every header's stamp."""
        self.joints.header.stamp = stamp
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
        self.params = p = declare(self, PARAMS)
        from bronchonav.catheter import CatheterParams, base_pose_from_tree
        from bronchonav.sensors import BreathingModel, EMSensor, patient_transform
        from bronchonav.ros.kinematics import chain_joint_angles, link_joint_names
        from bronchonav.ros.loop import FixedRateLoop, freeze_startup_heap
        from bronchonav.ros.resources import load_airway_map

        self.airway_map = load_airway_map(p["map"])
        self.catheter = CatheterParams.default()
        if p["n_links"] * p["link_length_m"] < self.catheter.limits.max_insertion - 1e-9:
            from bronchonav.errors import InputError

            raise InputError(f"the URDF chain (n_links × link_length_m = "
                             f"{p['n_links'] * p['link_length_m']} m) is shorter than the "
                             f"maximum insertion {self.catheter.limits.max_insertion} m")
        self.tendon_names = list(self.catheter.tendon_names)
        self.T_ct_base = np.asarray(base_pose_from_tree(self.airway_map.tree), dtype=float)
        self._joint_angles = chain_joint_angles
        self.joint_names = (["insertion", "roll"] + link_joint_names(p["n_links"])
                            + self.tendon_names)
        self.T_ct_patient = patient_transform(p["patient_seed"], p["patient_max_translation_m"],
                                              p["patient_max_rotation_rad"])
        self.em_sensor = EMSensor(
            self.T_ct_patient, BreathingModel.for_tree(self.airway_map.tree,
                                                       p["breathing_amplitude_m"],
                                                       period=p["breathing_period_s"]),
            noise_m=p["em_noise_m"], angle_noise_rad=p["em_angle_noise_rad"], seed=p["em_seed"])

        # command slot, written by subscriber callbacks, read by the loop thread
        self._lock = threading.Lock()
        self._valid = _Setpoint()
        self._last_command_time: float | None = None
        self.commands_received = 0
        self.commands_rejected = 0
        self.last_rejection = ""
        self.holding = False
        self.solver_failures = 0
        self._solve_times = deque(maxlen=20000)
        self._latest: _StateMessages | None = None
        self._pub_lock = threading.Lock()
        """Held while choosing and publishing the newest state, so that with depth-1 QoS an
        older state never overwrites a newer one on ``/joint_states``. The loop thread never
        waits for it: when the receiver holds it, that tick's state is being published."""
        self._first_state = threading.Event()
        from bronchonav.ros.solver_process import SolverProcess

        self.pub_joints = self.create_publisher(JointState, "/joint_states", qos.STATE)
        self.pub_tip = self.create_publisher(PoseStamped, "/catheter/tip_pose", qos.STATE)
        self.pub_path = self.create_publisher(Path, "/catheter/backbone", qos.STATE)
        self.pub_wrench = self.create_publisher(WrenchStamped, "/catheter/contact_wrench", qos.STATE)
        self.pub_em = self.create_publisher(PoseStamped, "/catheter/em_pose", qos.STATE)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", qos.DEFAULT)
        self._publish_static_tf()

        self.solver = SolverProcess(p["map"], p["n_nodes"], p["solver_deadline_s"],
                                    p["solver_recovery_deadline_s"], self._on_solver)
        if not self._first_state.wait(120.0):
            self.solver.close()
            raise RuntimeError("the catheter solver process did not start")
        self._t0 = time.monotonic()
        self.create_timer(1.0 / p["viz_rate_hz"], self._publish_backbone)
        self.create_timer(1.0 / p["em_rate_hz"], self._publish_em)
        self.create_timer(1.0 / p["diagnostics_rate_hz"], self._publish_diagnostics)
        self.create_subscription(Float64MultiArray, "/catheter/command", self._on_forward,
                                 qos.COMMAND)
        self.create_subscription(JointState, "/catheter/joint_command", self._on_joint_command,
                                 qos.COMMAND)
        self.holding = True
        freeze_startup_heap()
        self.loop = FixedRateLoop(p["rate_hz"], self._tick, name="catheter-sim-loop",
                                  realtime_priority=p["realtime_priority"]).start()
        if p["realtime_priority"] and not self.loop.realtime:
            self.get_logger().warn("real-time scheduling not permitted: running the loop at "
                                   "normal priority (expect more jitter on a busy machine)")
        self.get_logger().info(
            f"catheter_sim at {p['rate_hz']:.0f} Hz on map {self.airway_map.name!r}: tendons "
            f"{self.tendon_names}, command /catheter/command [insertion, roll, "
            f"{len(self.tendon_names)} displacements] or /catheter/joint_command")

    # -- TF (only where tf2_msgs exists) ----------------------------------------------------------
    def _publish_static_tf(self) -> None:
        """``/tf_static``: ``ct`` → ``base`` (the robot's base at the airway entry), which joins
        the robot's TF tree (robot_state_publisher, from ``/joint_states`` and the URDF, down to
        ``catheter_tip``) to the map's frame."""
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            return
        static = self.create_publisher(TFMessage, "/tf_static", qos.LATCHED)
        stamp = self.get_clock().now().to_msg()
        static.publish(TFMessage(transforms=[conv.matrix_to_transform(self.T_ct_base, "ct", "base",
                                                                      stamp)]))

    # -- commands (executor threads) ------------------------------------------------------------
    def _reject(self, reason: str) -> None:
        with self._lock:
            self.commands_rejected += 1
            self.last_rejection = reason
        self.get_logger().warn(f"command rejected: {reason}", throttle_duration_sec=1.0)

    def _accept(self, sp: _Setpoint) -> None:
        """Validate a set-point against the device limits and hand it to the solver."""
        from bronchonav.catheter import validate_command

        command = sp.command()
        try:
            validate_command(command, self.catheter)
        except CommandError as exc:
            self._reject(str(exc))
            return
        with self._lock:
            self._valid = sp
            self._last_command_time = time.monotonic()
            self.commands_received += 1
        self.solver.send(command)

    def _on_forward(self, msg: Float64MultiArray) -> None:
        try:
            ins, roll, disp = conv.forward_command_values(msg.data, len(self.tendon_names))
        except CommandError as exc:
            self._reject(str(exc))
            return
        self._accept(_Setpoint(ins, roll, disp, None))

    def _on_joint_command(self, msg: JointState) -> None:
        try:
            ins, roll, disp, tens = conv.joint_command_values(msg, self.tendon_names)
        except CommandError as exc:
            self._reject(str(exc))
            return
        with self._lock:
            base = self._valid
        sp = _Setpoint(base.insertion if ins is None else ins, base.roll if roll is None else roll,
                       base.displacement, base.tension)
        if disp is not None:
            sp.displacement, sp.tension = disp, None
        if tens is not None:
            sp.displacement, sp.tension = None, tens
        self._accept(sp)

    # -- the loop (its own thread) --------------------------------------------------------------
    def _tick(self, now: float) -> None:
        """One loop period: watchdog, and the newest state stamped and published."""
        age = self.command_age(now)
        self.holding = age is None or age > self.params["watchdog_timeout_s"]
        if self._pub_lock.acquire(blocking=False):  # else the receiver is publishing a newer one
            try:
                self._publish_state(self._latest, self.get_clock().now().to_msg())
            finally:
                self._pub_lock.release()

    def command_age(self, now: float | None = None) -> float | None:
        """Seconds since the last valid command (monotonic clock), or None before the first."""
        with self._lock:
            last = self._last_command_time
        return None if last is None else (time.monotonic() if now is None else now) - last

    def _on_solver(self, message) -> None:
        """Solver process output (receiver thread): keep converged states, count failures."""
        kind, value = message
        if kind == "rejected":
            self._reject(value)
            return
        self._solve_times.append(value.solve_time_s)
        if not value.converged:
            self.solver_failures += 1
            return
        messages = self._state_messages(value)
        with self._pub_lock:
            self._latest = messages
            if self._first_state.is_set() and self.params["publish_on_update"]:
                from rclpy._rclpy_pybind11 import RCLError

                try:
                    self._publish_state(messages, self.get_clock().now().to_msg())
                except RCLError:  # the context is shutting down (SIGINT/SIGTERM)
                    pass
        self._first_state.set()

    @property
    def state(self):
        """The latest converged :class:`~bronchonav.catheter.CatheterState`."""
        return self._latest.state

    def solver_stats(self) -> dict:
        """Solve-time statistics over the recent solves (ms) and the failure count."""
        t = np.array(self._solve_times) * 1e3
        out = {"solves": len(t), "solver_failures": self.solver_failures}
        for key, q in (("solve_median_ms", 50), ("solve_p99_ms", 99), ("solve_max_ms", 100)):
            out[key] = float(np.percentile(t, q)) if len(t) else 0.0
        return out

    def _state_messages(self, st) -> _StateMessages:
        """The ``/joint_states`` and tip pose messages of a state (stamps set on publish)."""
        p = self.params
        ins, roll = float(st.insertion), float(st.roll)
        angles = self._joint_angles(st.positions, self.T_ct_base, ins, roll, p["n_links"],
                                    p["link_length_m"])
        disp = np.asarray(st.tendon_displacements, dtype=float)
        tens = np.asarray(st.tendon_tensions, dtype=float)
        positions = np.concatenate([[ins, roll], angles, disp])
        efforts = np.concatenate([[0.0, 0.0], np.zeros(len(angles)), tens])
        T_tip = np.asarray(st.tip_pose, dtype=float)
        return _StateMessages(st, T_tip, conv.joint_state(self.joint_names, positions, Time(),
                                                          efforts),
                              conv.pose_stamped(T_tip, "ct", Time()))

    def _publish_state(self, messages: _StateMessages, stamp) -> None:
        """Stamp and publish ``/joint_states`` and ``/catheter/tip_pose``."""
        messages.stamp(stamp)
        self.pub_joints.publish(messages.joints)
        self.pub_tip.publish(messages.tip)

    # -- slower streams (executor timers, off the loop thread) -------------------------------------
    def _publish_backbone(self) -> None:
        """``/catheter/backbone`` and ``/catheter/contact_wrench`` (CT frame)."""
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
        """Loop timing statistics (see :class:`bronchonav.ros.loop.FixedRateLoop`)."""
        return self.loop.stats()

    def diagnostic_status(self) -> DiagnosticStatus:
        """The loop's ``diagnostic_msgs/DiagnosticStatus``."""
        age = self.command_age()
        s = self.loop.stats()
        solver = self.solver_stats()
        with self._lock:
            received, rejected, reason = (self.commands_received, self.commands_rejected,
                                          self.last_rejection)
        level, message = DiagnosticStatus.OK, "running"
        if self.holding:
            level = DiagnosticStatus.WARN
            message = ("holding: no command received yet" if age is None else
                       f"holding: no command for {age:.2f} s (watchdog "
                       f"{self.params['watchdog_timeout_s']} s)")
        if self.loop.errors:
            level, message = DiagnosticStatus.ERROR, f"loop errors: {self.loop.last_error}"
        values = {
            "rate_hz": f"{s['rate_hz']:.2f}", "target_rate_hz": f"{s['target_rate_hz']:.2f}",
            "step_median_ms": f"{s['step_median_ms']:.3f}", "step_p99_ms": f"{s['step_p99_ms']:.3f}",
            "step_max_ms": f"{s['step_max_ms']:.3f}", "jitter_p99_ms": f"{s['jitter_p99_ms']:.3f}",
            "deadline_misses": str(s["deadline_misses"]), "ticks": str(s["ticks"]),
            "recent_misses_unix_s": " ".join(f"{t:.3f}" for t in s["recent_misses_unix_s"]),
            "command_age_s": "none" if age is None else f"{age:.3f}",
            "commands_received": str(received), "commands_rejected": str(rejected),
            "last_rejection": reason, "holding": str(self.holding).lower(),
            "solver_failures": str(self.solver_failures),
            "solves": str(solver["solves"]),
            "solve_median_ms": f"{solver['solve_median_ms']:.3f}",
            "solve_p99_ms": f"{solver['solve_p99_ms']:.3f}",
            "solve_max_ms": f"{solver['solve_max_ms']:.3f}",
            "solver_residual": f"{float(getattr(self.state, 'residual', 0.0)):.3e}",
            "insertion_m": f"{float(self.state.insertion):.4f}",
            "realtime": f"SCHED_FIFO {self.params['realtime_priority']}" if self.loop.realtime
                        else "normal",
        }
        return DiagnosticStatus(level=level, name="catheter_sim: loop", message=message,
                                hardware_id="bronchonav_simulated_catheter",
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def destroy_node(self):
        """Stop the loop and solver threads, then destroy the node (also a half-built one: a
        signal during start-up ends ``__init__`` early and rclpy still destroys the node)."""
        if getattr(self, "loop", None) is not None:
            self.loop.stop()
        if getattr(self, "solver", None) is not None:
            self.solver.close()
        return super().destroy_node()


def main(args=None) -> None:
    """Console script ``catheter_sim``."""
    from bronchonav.ros.runner import spin_node

    spin_node(CatheterSimNode, args)


if __name__ == "__main__":
    main()
