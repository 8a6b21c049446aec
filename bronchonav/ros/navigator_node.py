"""``navigator``: a built-in driver that follows the planned route through ROS messages only.

It reads the route (``/route``, ``nav_msgs/Path`` in ``ct``; its last pose is the exit point)
and the tip pose (``/catheter/tip_pose``, ``PoseStamped`` in ``ct``), and commands the catheter
through the same forward-command topic a real controller would use (``/catheter/command``:
``[insertion m, roll rad, displacement_1 m, …]``).

Steering law, every control period ``dt``:

1. project the tip onto the route (arc position ``s_tip``, lateral distance ``e_lat``);
2. aim at the route point ``lookahead_m`` further on; express the aim direction in the tip frame
   (the catheter's material frame, z along the tip) → bend error angle ``θ`` and direction ``ψ``;
3. update the bend vector ``b`` (m of tendon pull, in the cross-section) by
   ``b += bend_gain · r · θ · (cos ψ, sin ψ)`` (``r`` = tendon offset; an integral law, since a
   pull of ``r·θ`` turns the tip by about ``θ``), clamped to ``max_displacement_m``; tendon ``k``
   at angle ``α_k`` gets ``b · (cos α_k, sin α_k)`` (antagonistic pairs);
4. insert at ``insertion_speed_mps`` while ``θ < align_tolerance_rad`` and
   ``e_lat < lateral_tolerance_m``; hold while turning; retract when the tip has left the route
   by more than ``off_route_m`` (it took a wrong branch) until it is back on it;
5. stop when the tip is within ``goal_tolerance_m`` of the exit point or has passed it.

``/navigator/status`` (``std_msgs/String``, JSON) reports the state (``waiting``, ``driving``,
``retracting``, ``reached``, ``stopped``), insertion, tip-to-exit distance and progress.
"""

from __future__ import annotations

import json

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, String

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
    Param("bend_gain", 0.5, "Integral gain of the bend law (1/step)", minimum=0.0, maximum=5.0),
    Param("max_displacement_m", 4.5e-3, "Largest tendon pull commanded (m)", minimum=0.0,
          maximum=0.05),
    Param("align_tolerance_rad", 0.35, "Insert only while the tip is aimed within this (rad)",
          minimum=0.01, maximum=3.14),
    Param("lateral_tolerance_m", 3.0e-3, "Insert only while the tip is this close to the route (m)",
          minimum=1e-4, maximum=0.05),
    Param("off_route_m", 5.0e-3, "Retract when the tip is farther than this from the route (m)",
          minimum=1e-3, maximum=0.05),
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
        self.tendon_dirs = np.array([[np.cos(t.angle), np.sin(t.angle)] for t in device.tendons])
        self.tendon_offset = float(max(t.offset for t in device.tendons))
        self.max_insertion = float(device.limits.max_insertion)
        self.route: np.ndarray | None = None
        self.cum: np.ndarray | None = None
        self.T_tip: np.ndarray | None = None
        self.insertion = 0.0
        self.bend = np.zeros(2)
        self.state = "waiting"
        self.tip_to_exit = float("nan")
        self.s_tip = 0.0
        self.pub_cmd = self.create_publisher(Float64MultiArray, "/catheter/command", qos.COMMAND)
        self.pub_status = self.create_publisher(String, "/navigator/status", qos.LATCHED)
        self.create_subscription(Path, "/route", self._on_route, qos.LATCHED)
        self.create_subscription(PoseStamped, "/catheter/tip_pose", self._on_tip, qos.STATE_SUB)
        self.dt = 1.0 / p["control_rate_hz"]
        self.create_timer(self.dt, self._control)
        self.create_timer(0.2, self._publish_status)
        self._publish_status()

    def _on_route(self, msg: Path) -> None:
        pts = conv.path_points(msg)
        if len(pts) < 2:
            self.route = None
            self.state = "waiting"
            self.get_logger().info("empty route: waiting for a feasible one")
            return
        self.route = pts
        self.cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        self.state = "driving"
        self.get_logger().info(f"following a route of {self.cum[-1] * 1e3:.1f} mm "
                               f"({len(pts)} waypoints)")

    def _on_tip(self, msg: PoseStamped) -> None:
        self.T_tip = conv.pose_to_matrix(msg.pose)

    def _control(self) -> None:
        if self.route is None or self.T_tip is None:
            return
        if self.state in ("driving", "retracting"):
            self._steer()
        self._send()

    def _steer(self) -> None:
        p = self.params
        tip, R = self.T_tip[:3, 3], self.T_tip[:3, :3]
        self.s_tip, lateral = project_on_polyline(self.route, self.cum, tip)
        exit_point = self.route[-1]
        self.tip_to_exit = float(np.linalg.norm(tip - exit_point))
        if self.tip_to_exit <= p["goal_tolerance_m"] or (
                self.s_tip >= self.cum[-1] - 1e-4 and self.tip_to_exit <= p["off_route_m"]):
            self.state = "reached"
            self.get_logger().info(f"exit point reached: tip {self.tip_to_exit * 1e3:.2f} mm "
                                   f"from it at insertion {self.insertion * 1e3:.1f} mm")
            return
        aim = point_at(self.route, self.cum, self.s_tip + p["lookahead_m"]) - tip
        local = R.T @ (aim / max(np.linalg.norm(aim), 1e-9))
        theta = float(np.arctan2(np.hypot(local[0], local[1]), local[2]))
        psi = float(np.arctan2(local[1], local[0]))
        self.bend += p["bend_gain"] * self.tendon_offset * theta * np.array([np.cos(psi), np.sin(psi)])
        norm = np.linalg.norm(self.bend)
        if norm > p["max_displacement_m"]:
            self.bend *= p["max_displacement_m"] / norm
        if lateral > p["off_route_m"]:
            self.state = "retracting"
        elif self.state == "retracting" and lateral < p["lateral_tolerance_m"]:
            self.state = "driving"
        if self.state == "retracting":
            self.insertion = max(0.0, self.insertion - p["retract_speed_mps"] * self.dt)
        elif theta < p["align_tolerance_rad"] and lateral < p["lateral_tolerance_m"]:
            self.insertion = min(self.max_insertion,
                                 self.insertion + p["insertion_speed_mps"] * self.dt)
        if self.insertion >= self.max_insertion:
            self.state = "stopped"
            self.get_logger().warn("maximum insertion reached before the exit point")

    def _send(self) -> None:
        disp = self.tendon_dirs @ self.bend
        self.pub_cmd.publish(Float64MultiArray(data=[float(self.insertion), 0.0,
                                                     *[float(d) for d in disp]]))

    def status(self) -> dict:
        """The JSON status published on ``/navigator/status``."""
        return {"state": self.state, "insertion_m": self.insertion,
                "tip_to_exit_m": None if not np.isfinite(self.tip_to_exit) else self.tip_to_exit,
                "route_length_m": None if self.cum is None else float(self.cum[-1]),
                "s_tip_m": self.s_tip, "bend_m": self.bend.tolist()}

    def _publish_status(self) -> None:
        self.pub_status.publish(String(data=json.dumps(self.status())))


def main(args=None) -> None:
    """Console script ``navigator``."""
    from bronchonav.ros.runner import spin_node

    spin_node(NavigatorNode, args)


if __name__ == "__main__":
    main()
