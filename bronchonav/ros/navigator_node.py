"""``navigator``: drives the catheter along the planned route — ROS messages in and out only.

The steering is :class:`bronchonav.navigation.NavigationController` (the one controller of the
core, also used by rehearsals and ``bronchonav catheter --demo``); this node translates:

- ``route`` (``nav_msgs/Path`` in ``ct``, latched; its last pose is the exit point) → a new
  controller for that route (the node's catheter model carries over); when ``route/status``
  names the route's nodule, the tip is finally aimed at the lesion centre;
- the observed tip pose → :meth:`~bronchonav.navigation.NavigationController.update` once per
  control period, once ``joint_states`` and ``tendon_states`` show that the simulator has
  carried out the previous command (else the pose would be older than the command), or after
  ``PLANT_WAIT_S`` with the report that it did not (the controller's model then steps back with
  the simulator instead of going on alone): ``catheter/tip_pose`` (the simulator's ground
  truth, ``pose_source: truth``) or
  ``registration/tip_pose`` (the EM pose mapped to ``ct`` by the registration,
  ``pose_source: registered``; the navigator waits while no registered pose arrives; the
  registration's own 1σ error estimate at the target, ``target_sigma_m`` on
  ``registration/quality``, widens the controller's off-route tests on that pose);
- ``catheter/backbone`` (``nav_msgs/Path`` in ``ct``: the catheter's shape, what a
  shape-sensing fibre reports; ``shape_sensing``) → the controller re-solves its model from
  the observed shape where the two have parted (one snapped through a fold, the other did not);
- the command → ``catheter/joint_command`` (``sensor_msgs/JointState``: ``position`` insertion m
  and roll rad, ``effort`` tendon tensions N; unused entries NaN), the interface a real
  controller uses;
- ``navigator/cancel`` (``std_srvs/Trigger``) stops following the route;
- progress → ``navigator/status`` (``std_msgs/String``, JSON: phase ``waiting``, ``drive``,
  ``recover``, ``aim``, ``done``; the outcome once done: reached, stuck, wrong_branch, timeout;
  ``update_s``, ``update_max_s``, ``update_total_s``: wall time of the last, the longest and
  all control steps on the route, mostly the controller's model solves).

The controller's catheter model (:class:`~bronchonav.catheter.CatheterModel` in the map's
airways) is stepped with the commands the node sends; its probe solves give the tip's
sensitivity to the tendons. ``pose_source`` may be changed at run time (e.g. after a
registration).
"""

from __future__ import annotations

import json
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from bronchonav.ros import conversions as conv
from bronchonav.ros import qos
from bronchonav.ros.params import Param, declare

PLANT_TOLERANCE_M = 2e-4
"""The simulator has carried out a command when its insertion is this close to it (m)..."""

PLANT_TOLERANCE_RAD = 1e-4
"""... its roll this close (rad) ..."""

PLANT_TOLERANCE_N = 1e-3
"""... and every tendon tension this close to the command's plus the tendon's pretension (N)."""

PLANT_WAIT_S = 0.5
"""Longest wait for the simulator to carry out a command (s); after it the command counts as
not carried out (the simulator kept its previous state) and the controller's model steps back
with it."""

POSE_TOPICS = {"truth": "catheter/tip_pose", "registered": "registration/tip_pose"}

PARAMS = [
    Param("map", "maps/phantom_default", "Map folder or 'phantom:NAME' (see airway_map_server)"),
    Param("control_rate_hz", 20.0, "Control steps per second (Hz)", minimum=1.0, maximum=200.0),
    Param("pose_source", "truth", "Tip pose steered on: 'truth' (catheter/tip_pose) or "
          "'registered' (registration/tip_pose); may be changed at run time",
          choices=tuple(POSE_TOPICS), dynamic=True),
    Param("n_nodes", 30, "Nodes of the controller's catheter model", minimum=5, maximum=200),
    Param("insertion_speed_mps", 0.02, "Insertion speed when aimed along the route (m/s)",
          minimum=1e-4, maximum=0.1),
    Param("lookahead_m", 0.008, "Aim this far ahead along the route (m)", minimum=1e-3,
          maximum=0.05),
    Param("max_mismatch_m", 0.006, "Follow-the-leader bound: insertion beyond the tip's "
          "progress along the route (m)", minimum=1e-3, maximum=0.05),
    Param("max_retries", 4, "Recoveries (retract, re-aim, retry) before giving up",
          minimum=0, maximum=20),
    Param("jam_refusals", 8, "Commands in a row the simulator does not show carried out (its "
          "joint states) after which the catheter counts as jammed: a recovery starts at once; "
          "a retraction ends", minimum=1, maximum=1000),
    Param("goal_tolerance_m", 0.002, "Driving ends within this distance of the exit point (m)",
          minimum=1e-4, maximum=0.02),
    Param("shape_sensing", True, "Re-synchronise the controller's catheter model from the "
          "observed shape on catheter/backbone where the two part (the navigation resync_m)"),
    Param("aim_steps", 150, "Most control steps of the final articulation towards the lesion "
          "(it ends sooner once the tip points at the lesion or stops turning)",
          minimum=0, maximum=1000),
]


class NavigatorNode(Node):
    """Route-following driver (see the module docstring).

    Parameters
    ----------
    **kwargs
        Passed to :class:`rclpy.node.Node`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("navigator", **kwargs)
        from bronchonav.catheter import CatheterModel, CatheterParams
        from bronchonav.navigation import NavigationConfig
        from bronchonav.ros.resources import load_airway_map

        self.params = p = declare(self, PARAMS)
        self.airway_map = load_airway_map(p["map"])
        device = CatheterParams.default()
        self.tendon_names = list(device.tendon_names)
        period = 1.0 / p["control_rate_hz"]
        self.config = NavigationConfig(
            step_m=p["insertion_speed_mps"] * period, control_period_s=period,
            lookahead_m=p["lookahead_m"], max_mismatch_m=p["max_mismatch_m"],
            max_retries=p["max_retries"], jam_refusals=p["jam_refusals"],
            goal_tolerance_m=p["goal_tolerance_m"],
            aim_steps=p["aim_steps"])
        # its steps keep pace with the simulated catheter: no seconds-long trace round a fold
        self.model = CatheterModel(device, self.airway_map.tree, n_nodes=p["n_nodes"],
                                   trace_folds=False)
        self.controller = None
        self._update_s: list[float] = []  # wall time of each control step on the route (s)
        self.pose_source = p["pose_source"]
        self._poses: dict[str, np.ndarray] = {}
        self._backbone: np.ndarray | None = None  # observed shape (N, 3), CT, m
        self._registration_sigma = 0.0  # the registration's 1σ error at the target (m)
        self.create_subscription(Float64MultiArray, "registration/quality",
                                 self._on_registration_quality, qos.LATCHED)
        if p["shape_sensing"]:
            self.create_subscription(Path, "catheter/backbone", self._on_backbone,
                                     qos.STATE_SUB)
        self.pub_cmd = self.create_publisher(JointState, "catheter/joint_command", qos.COMMAND)
        self.pub_status = self.create_publisher(String, "navigator/status", qos.LATCHED)
        self._route_status: dict = {}
        self.create_subscription(String, "route/status", self._on_route_status, qos.LATCHED)
        self.create_subscription(Path, "route", self._on_route, qos.LATCHED)
        self._pretension = np.array([t.pretension for t in device.tendons], dtype=float)
        self._plant_joints: np.ndarray | None = None  # insertion m, roll rad
        self._plant_tensions: np.ndarray | None = None  # N, tendon_names order
        # the last command sent, as the simulator will report it once carried out:
        # (insertion m and roll rad, tendon tensions N, sent at s monotonic)
        self._awaiting: tuple[np.ndarray, np.ndarray, float] | None = None
        self.create_subscription(JointState, "joint_states", self._on_joint_states,
                                 qos.STATE_SUB)
        self.create_subscription(JointState, "tendon_states", self._on_tendon_states,
                                 qos.STATE_SUB)
        for source, topic in POSE_TOPICS.items():
            self.create_subscription(PoseStamped, topic,
                                     lambda msg, source=source: self._on_pose(source, msg),
                                     qos.STATE_SUB)
        from std_srvs.srv import Trigger

        self._cancelled = ""
        self.create_service(Trigger, "navigator/cancel", self._on_cancel)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(period, self._control)
        self.create_timer(0.2, self._publish_status)
        self._publish_status()

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name != "pose_source":
                return SetParametersResult(successful=False, reason=f"{param.name} is read-only "
                                           "after start-up (only pose_source may change)")
            if param.value not in POSE_TOPICS:
                return SetParametersResult(successful=False, reason="pose_source must be one of "
                                           + ", ".join(POSE_TOPICS))
        for param in params:
            self.pose_source = param.value
            self.get_logger().info(f"steering on the {self.pose_source} tip pose "
                                   f"({POSE_TOPICS[self.pose_source]})")
        return SetParametersResult(successful=True)

    def _on_route(self, msg: Path) -> None:
        from bronchonav.errors import InputError
        from bronchonav.navigation import NavigationController, RouteTarget

        pts = conv.path_points(msg)
        if len(pts) < 2:
            self.controller = None
            self.get_logger().info("empty route: waiting for a feasible one")
            return
        lesion = self._lesion_for(pts[-1])
        try:
            target = RouteTarget.from_points(pts, lesion_center=lesion,
                                             tree=self.airway_map.tree)
        except (InputError, ValueError) as exc:
            self.controller = None
            self.get_logger().error(f"route refused: {exc}")
            return
        self.controller = NavigationController(target, self.model, self.config)
        self._update_s = []
        self._awaiting = None  # the new controller has sent nothing yet
        self._cancelled = ""
        self.get_logger().info(f"following a route of {target.length * 1e3:.1f} mm "
                               f"({len(pts)} waypoints), steering on the {self.pose_source} pose")
        self._publish_status()

    def cancel(self, reason: str) -> None:
        """Stop following the current route (the catheter holds its last command)."""
        if self.controller is not None:
            self._cancelled = reason
            self.controller = None
            self.get_logger().warn(f"navigation cancelled: {reason}")
            self._publish_status()

    def _on_cancel(self, request, response):
        if self.controller is None:
            response.success, response.message = False, "no route is being followed"
        else:
            self.cancel("requested on navigator/cancel")
            response.success, response.message = True, "navigation cancelled"
        return response

    def _on_route_status(self, msg: String) -> None:
        import dataclasses

        try:
            self._route_status = json.loads(msg.data)
        except ValueError:
            self._route_status = {}
        c = self.controller
        if c is not None and c.target.lesion_center is None:  # the route came first
            lesion = self._lesion_for(c.target.exit_point)
            if lesion is not None:
                c.target = dataclasses.replace(c.target, lesion_center=lesion)

    def _lesion_for(self, exit_point: np.ndarray):
        """The lesion centre (CT, m) of the planner's status when its route ends at
        ``exit_point`` and it names a nodule; else None."""
        st = self._route_status
        if st.get("nodule") is None or st.get("exit_point_m") is None or \
                not np.allclose(st["exit_point_m"], exit_point, atol=1e-9):
            return None
        return np.asarray(st["target_m"], dtype=float)

    def _on_joint_states(self, msg: JointState) -> None:
        names = list(msg.name)
        if {"insertion", "roll"} <= set(names) and len(msg.position) == len(names):
            self._plant_joints = np.array([msg.position[names.index("insertion")],
                                           msg.position[names.index("roll")]])

    def _on_tendon_states(self, msg: JointState) -> None:
        names = list(msg.name)
        if set(self.tendon_names) <= set(names) and len(msg.effort) == len(names):
            self._plant_tensions = np.array([msg.effort[names.index(n)]
                                             for n in self.tendon_names])

    def _plant_matches(self) -> bool | None:
        """Whether the simulator's last reported state is that of the last command sent
        (insertion, roll and — once ``tendon_states`` arrive — tendon tensions within
        ``PLANT_TOLERANCE_*``); None before the first command or the first joint states."""
        if self._awaiting is None or self._plant_joints is None:
            return None
        joints, tensions, _ = self._awaiting
        return bool(np.all(np.abs(self._plant_joints - joints)
                           <= (PLANT_TOLERANCE_M, PLANT_TOLERANCE_RAD))
                    and (self._plant_tensions is None or
                         np.all(np.abs(self._plant_tensions - tensions) <= PLANT_TOLERANCE_N)))

    def _plant_behind(self) -> bool:
        """Whether the simulator has not yet carried out the last command (then the observed
        pose is older than the command, and steering on it would overshoot) and may still:
        waiting ends after ``PLANT_WAIT_S``."""
        if self._plant_matches() is not False:
            return False
        return time.monotonic() - self._awaiting[2] < PLANT_WAIT_S

    def _on_pose(self, source: str, msg: PoseStamped) -> None:
        self._poses[source] = conv.pose_to_matrix(msg.pose)

    def _on_registration_quality(self, msg: Float64MultiArray) -> None:
        values = conv.labelled_values(msg)
        sigma = values.get("target_sigma_m", float("nan"))
        self._registration_sigma = float(sigma) if values.get("success") and \
            np.isfinite(sigma) and sigma >= 0 else 0.0

    def pose_sigma(self) -> float:
        """1σ error (m) of the pose steered on: the registration's estimate at the target on
        the registered pose (0 before a successful registration), 0 on the ground truth."""
        return self._registration_sigma if self.pose_source == "registered" else 0.0

    def _on_backbone(self, msg: Path) -> None:
        if msg.header.frame_id == "ct" and len(msg.poses) >= 2:
            self._backbone = conv.path_points(msg)

    def _control(self) -> None:
        c = self.controller
        T = self._poses.get(self.pose_source)
        if c is None or T is None or c.outcome is not None or self._plant_behind():
            return
        c.pose_sigma_m = self.pose_sigma()
        t0 = time.perf_counter()
        command = c.update(T, carried_out=self._plant_matches(), backbone_ct=self._backbone)
        self._update_s.append(time.perf_counter() - t0)
        self._awaiting = (np.array([command.insertion, command.roll]),
                          np.asarray(command.tendon_tension) + self._pretension, time.monotonic())
        if c.outcome is not None:
            self.get_logger().info(f"navigation {c.outcome.reason}")
            self._publish_status()
        nan = float("nan")
        n = len(self.tendon_names)
        self.pub_cmd.publish(JointState(
            name=["insertion", "roll", *self.tendon_names],
            position=[float(command.insertion), float(command.roll), *([nan] * n)],
            effort=[nan, nan, *[float(t) for t in command.tendon_tension]]))

    def status(self) -> dict:
        """The JSON status published on ``navigator/status``."""
        if self.controller is None:
            if self._cancelled:
                return {"phase": "done", "pose_source": self.pose_source,
                        "outcome": {"status": "cancelled", "reason": self._cancelled}}
            return {"phase": "waiting", "pose_source": self.pose_source,
                    "pose_sigma_m": self.pose_sigma()}
        times = self._update_s
        return {**self.controller.status(), "pose_source": self.pose_source,
                "pose_sigma_m": self.pose_sigma(),
                "update_s": times[-1] if times else None,
                "update_max_s": max(times) if times else None,
                "update_total_s": sum(times)}

    def _publish_status(self) -> None:
        self.pub_status.publish(String(data=json.dumps(self.status())))


def main(args=None) -> None:
    """Console script ``navigator``."""
    from bronchonav.ros.runner import spin_node

    spin_node(NavigatorNode, args)


if __name__ == "__main__":
    main()
