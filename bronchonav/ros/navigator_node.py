"""``navigator``: a built-in driver that follows the planned route through ROS messages only.

It reads the route (``/route``, ``nav_msgs/Path`` in ``ct``; its last pose is the exit point)
and the tip pose (``/catheter/tip_pose``, ``PoseStamped`` in ``ct``), and commands the catheter
through the command interface a real controller would use: ``/catheter/joint_command``
(``sensor_msgs/JointState``: position = insertion m / roll rad, effort = tendon tension N).
Tension control keeps the antagonist tendons slack instead of asking the solver for a negative
pull.

Steering law, every control period ``dt``:

1. project the tip onto the route (arc position ``s_tip``, lateral distance ``e_lat``);
2. aim at the route point ``lookahead_m`` further on; express the aim direction in the tip frame
   (the catheter's material frame, z along the tip) → bend error angle ``θ`` and direction ``ψ``;
3. update the bend vector ``b`` (N of tendon tension, in the cross-section) by
   ``b += bend_gain · θ · (cos ψ, sin ψ) · Δq / 1 mm`` where ``Δq`` is this step's insertion
   advance (an integral law per millimetre inserted, so steering keeps pace with insertion and
   does not wind up while the catheter waits; only when a new tip pose has arrived), clamped
   to ``max_tension_n``; tendon
   ``k`` at angle ``α_k`` gets ``max(0, b · (cos α_k, sin α_k))``;
4. insert at ``insertion_speed_mps`` scaled by ``1 - θ / align_tolerance_rad`` (at least a
   quarter of it: corners need insertion while turning; a quarter too while
   ``e_lat > lateral_tolerance_m``), but never more than ``max_slack_m`` beyond the tip's route
   position ``s_tip`` (the catheter would buckle); held there for ``stuck_timeout_s``, back off
   by ``backoff_m`` and halve the bend; retract when the tip has left the route by
   more than ``off_route_m`` (it took a wrong branch) until it is back within
   ``lateral_tolerance_m``;
5. stop when the tip is within ``goal_tolerance_m`` of the exit point or has passed it.

``/navigator/status`` (``std_msgs/String``, JSON) reports the state (``waiting``, ``driving``,
``retracting``, ``reached``, ``stopped``), insertion, tip-to-exit distance and progress.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from bronchonav.ros import conversions as conv
from bronchonav.ros import qos
from bronchonav.ros.params import Param, declare

PARAMS = [
    Param("control_rate_hz", 50.0, "Command rate (Hz)", minimum=1.0, maximum=1000.0),
    Param("insertion_speed_mps", 0.02, "Insertion speed when aligned (m/s)", minimum=1e-4,
          maximum=0.2),
    Param("retract_speed_mps", 0.01, "Retraction speed after a wrong branch (m/s)",
          minimum=1e-4, maximum=0.2),
    Param("lookahead_m", 0.008, "Aim this far ahead along the route (m)", minimum=1e-3,
          maximum=0.1),
    Param("bend_gain", 2.0, "Integral gain of the bend law (N per rad of aim error per mm "
          "travelled)",
          minimum=0.0, maximum=50.0),
    Param("max_tension_n", 12.0, "Largest tendon tension commanded (N)", minimum=0.0,
          maximum=100.0),
    Param("align_tolerance_rad", 0.35, "Insert only while the tip is aimed within this (rad)",
          minimum=0.01, maximum=3.14),
    Param("lateral_tolerance_m", 4.0e-3, "Insert only while the tip is this close to the route (m)",
          minimum=1e-4, maximum=0.05),
    Param("off_route_m", 7.0e-3, "Retract when the tip is farther than this from the route (m)",
          minimum=1e-3, maximum=0.05),
    Param("max_slack_m", 0.01,
          "Do not insert further while the insertion exceeds the tip's route position by this (m)",
          minimum=1e-3, maximum=0.1),
    Param("stuck_timeout_s", 2.0,
          "Back off when the insertion has been held by max_slack_m for this long (s)",
          minimum=0.1, maximum=60.0),
    Param("backoff_m", 0.01, "Retraction of a back-off (m); the bend is halved too",
          minimum=0.0, maximum=0.1),
    Param("goal_tolerance_m", 2.0e-3, "Stop within this distance of the exit point (m)",
          minimum=1e-4, maximum=0.05),
]


def project_on_polyline(points: np.ndarray, cum: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Arc position (m) of the point of a polyline nearest to ``p`` and the distance to it (m)."""
    a, b = points[:-1], points[1:]
    d = b - a
    dd = np.maximum(np.einsum("ij,ij->i", d, d), 1e-18)
    t = np.clip(np.einsum("ij,ij->i", p - a, d) / dd, 0.0, 1.0)
    q = a + t[:, None] * d
    dist = np.linalg.norm(q - p, axis=1)
    i = int(np.argmin(dist))
    return float(cum[i] + t[i] * np.sqrt(dd[i])), float(dist[i])


def point_at(points: np.ndarray, cum: np.ndarray, s: float) -> np.ndarray:
    """The polyline point at arc position ``s`` (m), clamped to its ends."""
    s = float(np.clip(s, 0.0, cum[-1]))
    return np.array([np.interp(s, cum, points[:, k]) for k in range(3)])


class RouteFollower:
    """The steering law of the module docstring, without ROS (one instance per route).

    Parameters
    ----------
    route_ct : ndarray, shape (N, 3)
        Route waypoints in the CT frame (m); the last one is the exit point.
    tendon_angles : sequence of float
        Angular position of each tendon in the cross-section (rad), command order.
    max_insertion : float
        Insertion limit (m).
    params : dict
        The node's parameter values (see :data:`PARAMS`).
    insertion : float
        Insertion to start from (m).
    """

    def __init__(self, route_ct, tendon_angles, max_insertion: float, params: dict,
                 insertion: float = 0.0) -> None:
        self.route = np.asarray(route_ct, dtype=float).reshape(-1, 3)
        if len(self.route) < 2:
            raise ValueError("a route needs at least 2 waypoints")
        self.cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.route, axis=0),
                                                                   axis=1))])
        self.tendon_dirs = np.array([[np.cos(a), np.sin(a)] for a in tendon_angles])
        self.max_insertion = float(max_insertion)
        self.p = params
        self.insertion = float(insertion)
        self.bend = np.zeros(2)
        self.state = "driving"
        self.tip_to_exit = float("nan")
        self.s_tip = 0.0
        self.lateral = 0.0
        self.theta = 0.0
        self._last_tip: np.ndarray | None = None
        self._stuck = 0.0
        self.backoffs = 0

    @property
    def length(self) -> float:
        """Route length (m)."""
        return float(self.cum[-1])

    def tensions(self) -> np.ndarray:
        """Tendon tensions (N) for the current bend vector (tendons facing away stay slack)."""
        return np.maximum(self.tendon_dirs @ self.bend, 0.0)

    def update(self, T_ct_tip: np.ndarray, dt: float) -> None:
        """One control step from the measured tip pose (4×4, CT frame) over ``dt`` seconds."""
        if self.state not in ("driving", "retracting"):
            return
        p = self.p
        tip, R = T_ct_tip[:3, 3], T_ct_tip[:3, :3]
        self.s_tip, self.lateral = project_on_polyline(self.route, self.cum, tip)
        self.tip_to_exit = float(np.linalg.norm(tip - self.route[-1]))
        if self.tip_to_exit <= p["goal_tolerance_m"] or (
                self.s_tip >= self.length - 1e-4 and self.tip_to_exit <= p["off_route_m"]):
            self.state = "reached"
            return
        aim = point_at(self.route, self.cum, self.s_tip + p["lookahead_m"]) - tip
        local = R.T @ (aim / max(np.linalg.norm(aim), 1e-9))
        self.theta = theta = float(np.arctan2(np.hypot(local[0], local[1]), local[2]))
        psi = float(np.arctan2(local[1], local[0]))
        fresh = self._last_tip is None or not np.array_equal(self._last_tip, T_ct_tip)
        self._last_tip = np.array(T_ct_tip, dtype=float)
        if self.lateral > p["off_route_m"]:
            self.state = "retracting"
        elif self.state == "retracting" and self.lateral < p["lateral_tolerance_m"]:
            self.state = "driving"
        before = self.insertion
        if self.state == "retracting":
            self.insertion = max(0.0, self.insertion - p["retract_speed_mps"] * dt)
        else:
            # full speed when aimed, slower while turning (never zero: corners need insertion)
            scale = float(np.clip(1.0 - theta / p["align_tolerance_rad"], 0.25, 1.0))
            if self.lateral > p["lateral_tolerance_m"]:
                scale = 0.25
            limit = min(self.max_insertion, self.s_tip + p["max_slack_m"])
            if self.insertion < limit:
                self.insertion = min(limit, self.insertion + scale * p["insertion_speed_mps"] * dt)
                self._stuck = 0.0
            else:
                self._stuck += dt
            if self._stuck > p["stuck_timeout_s"]:  # back off and relax the bend, then retry
                self.insertion = max(0.0, self.insertion - p["backoff_m"])
                self.bend *= 0.5
                self._stuck = 0.0
                self.backoffs += 1
            if self.insertion >= self.max_insertion:
                self.state = "stopped"
        advanced_mm = max(self.insertion - before, 0.0) * 1e3
        if fresh and advanced_mm > 0:
            self.bend += (p["bend_gain"] * theta * advanced_mm
                          * np.array([np.cos(psi), np.sin(psi)]))
            norm = np.linalg.norm(self.bend)
            if norm > p["max_tension_n"]:
                self.bend *= p["max_tension_n"] / norm

    def status(self) -> dict:
        """JSON-serialisable progress."""
        return {"state": self.state, "insertion_m": self.insertion,
                "tip_to_exit_m": None if not np.isfinite(self.tip_to_exit) else self.tip_to_exit,
                "route_length_m": self.length, "s_tip_m": self.s_tip,
                "lateral_m": self.lateral, "theta_rad": self.theta, "bend_n": self.bend.tolist(),
                "backoffs": self.backoffs}


class NavigatorNode(Node):
    """Route-following driver (see the module docstring).

    Parameters
    ----------
    **kwargs
        Passed to :class:`rclpy.node.Node`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("navigator", **kwargs)
        self.params = p = declare(self, PARAMS)
        from bronchonav.catheter import CatheterParams

        device = CatheterParams.default()
        self.tendon_angles = [t.angle for t in device.tendons]
        self.tendon_names = list(device.tendon_names)
        self.max_insertion = float(device.limits.max_insertion)
        self.follower: RouteFollower | None = None
        self.T_tip: np.ndarray | None = None
        self.insertion = 0.0
        self.bend = np.zeros(2)
        self.pub_cmd = self.create_publisher(JointState, "/catheter/joint_command", qos.COMMAND)
        self.pub_status = self.create_publisher(String, "/navigator/status", qos.LATCHED)
        self.create_subscription(Path, "/route", self._on_route, qos.LATCHED)
        self.create_subscription(PoseStamped, "/catheter/tip_pose", self._on_tip, qos.STATE_SUB)
        self.dt = 1.0 / p["control_rate_hz"]
        self._last_control: float | None = None
        self.create_timer(self.dt, self._control)
        self.create_timer(0.2, self._publish_status)
        self._publish_status()

    def _on_route(self, msg: Path) -> None:
        pts = conv.path_points(msg)
        if self.follower is not None:
            self.insertion, self.bend = self.follower.insertion, self.follower.bend.copy()
        if len(pts) < 2:
            self.follower = None
            self.get_logger().info("empty route: waiting for a feasible one")
            return
        self.follower = RouteFollower(pts, self.tendon_angles, self.max_insertion, self.params,
                                      self.insertion)
        self.follower.bend = self.bend.copy()
        self.get_logger().info(f"following a route of {self.follower.length * 1e3:.1f} mm "
                               f"({len(pts)} waypoints)")
        self._publish_status()

    def _on_tip(self, msg: PoseStamped) -> None:
        self.T_tip = conv.pose_to_matrix(msg.pose)

    def _control(self) -> None:
        f = self.follower
        if f is None or self.T_tip is None:
            return
        # the time since the last step (a late timer must not slow the insertion down), at most
        # three periods (after a pause the catheter must not jump)
        now = time.monotonic()
        dt = self.dt if self._last_control is None else min(now - self._last_control, 3 * self.dt)
        self._last_control = now
        before = f.state
        f.update(self.T_tip, dt)
        if f.state != before:
            self.get_logger().info(f"navigator: {before} → {f.state} at insertion "
                                   f"{f.insertion * 1e3:.1f} mm, tip {f.tip_to_exit * 1e3:.2f} mm "
                                   f"from the exit point")
            self._publish_status()
        n = len(self.tendon_names)
        self.pub_cmd.publish(JointState(
            name=["insertion", "roll", *self.tendon_names],
            position=[float(f.insertion), 0.0, *([math.nan] * n)],  # NaN = not set
            effort=[math.nan, math.nan, *[float(t) for t in f.tensions()]]))

    def status(self) -> dict:
        """The JSON status published on ``/navigator/status``."""
        if self.follower is None:
            return {"state": "waiting", "insertion_m": self.insertion}
        return self.follower.status()

    def _publish_status(self) -> None:
        self.pub_status.publish(String(data=json.dumps(self.status())))


def main(args=None) -> None:
    """Console script ``navigator``."""
    from bronchonav.ros.runner import spin_node

    spin_node(NavigatorNode, args)


if __name__ == "__main__":
    main()
