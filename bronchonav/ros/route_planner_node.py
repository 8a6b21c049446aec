"""``route_planner``: device-aware routes to lung nodules as ROS messages.

Interfaces (metres; names relative, so a namespace works):

- service ``plan_route`` (``nav_msgs/srv/GetPlan``): ``goal.pose.position`` is the target (a
  lesion centre; ``start`` is ignored: routes start at the top of the trachea) in the frame
  ``goal.header.frame_id``: ``ct`` (or empty), or ``patient`` once the registration's
  ``T_ct_patient`` is known (``registration/transform``); any other frame is refused. The
  response path (frame ``ct``) is the route's waypoints to the exit point, or empty when the
  goal is refused, the queue is full or no feasible route exists; the reason goes to the log and
  to ``route/status`` (with ``"request"``, the request's number). Requests are queued (up to
  ``max_pending``; beyond, refused at once) and planned one after another on a worker thread,
  so the node's other callbacks (topics, parameters) keep being served during a long plan.
- ``route_planner/goal_nodule`` (``std_msgs/String``): plan to a nodule id of the map.
- ``route_planner/goal_point`` (``geometry_msgs/PointStamped``, frame ``ct`` or ``patient`` as
  above): plan to a point.

Every plan publishes ``route`` (``nav_msgs/Path``, transient-local; the last pose is the exit
point), ``route/markers`` (``visualization_msgs/MarkerArray``: route, alternatives, exit point,
tool path, target) and ``route/status`` (``std_msgs/String``, JSON: the route summary with
``feasible`` and ``reasons``).
"""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from geometry_msgs.msg import Point, PointStamped, Pose, PoseStamped, Quaternion, TransformStamped
from nav_msgs.msg import Path
from nav_msgs.srv import GetPlan
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header, String
from visualization_msgs.msg import Marker, MarkerArray

from bronchonav.errors import BronchoNavError
from bronchonav.ros import conversions as conv
from bronchonav.ros import qos
from bronchonav.ros.params import Param, declare, give_way, nice_param

PARAMS = [
    Param("map", "maps/phantom_default", "Map folder or 'phantom:NAME' (see airway_map_server)"),
    Param("catheter_diameter_m", 0.0,
          "Catheter outer diameter (m); 0 = the default catheter's (CatheterParams.default())",
          minimum=0.0, maximum=0.05),
    Param("diameter_margin_m", 0.5e-3, "Airway diameter needed beyond the catheter's (m)",
          minimum=0.0, maximum=0.02),
    Param("tool_max_length_m", 0.03, "Longest tool path from the exit point to the lesion (m)",
          minimum=1e-3, maximum=0.2),
    Param("tool_max_angle_rad", math.radians(60.0),
          "Largest angle between tool path and airway at the exit (rad)", minimum=0.01,
          maximum=math.pi),
    Param("check_tip_turn", True,
          "Allow no larger tool angle than the tip can turn to in the lumen at the exit"),
    Param("alternatives", 3, "Routes computed per target (best + alternatives, shown as markers)",
          minimum=1, maximum=20),
    Param("frame_id", "ct", "Frame of targets and routes (the CT frame)"),
    Param("max_pending", 1000, "plan_route requests queued at most; beyond, refused at once",
          minimum=1, maximum=100000),
    nice_param(),
]

SERVICE_QOS = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE)
"""Deep request queue: a burst of requests waits instead of being dropped by the middleware."""


class _Done:
    """Awaitable for a :class:`concurrent.futures.Future` inside an rclpy coroutine callback
    (the executor resumes the coroutine when woken: trigger a guard condition on completion)."""

    def __init__(self, future) -> None:
        self.future = future

    def __await__(self):
        while not self.future.done():
            yield
        return self.future.result()


class RoutePlannerNode(Node):
    """Plans routes on the map with :class:`bronchonav.planning.RoutePlanner`.

    Parameters
    ----------
    **kwargs
        Passed to :class:`rclpy.node.Node`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("route_planner", **kwargs)
        self.params = p = declare(self, PARAMS)
        give_way(p["nice"])  # before the start-up work (imports, map)
        from bronchonav.planning.constraints import DeviceConstraints
        from bronchonav.planning.planner import RoutePlanner
        from bronchonav.ros.resources import load_airway_map

        self.airway_map = load_airway_map(p["map"])
        overrides = {"diameter_margin": p["diameter_margin_m"],
                     "tool_max_length": p["tool_max_length_m"],
                     "tool_max_angle": p["tool_max_angle_rad"],
                     "check_tip_turn": p["check_tip_turn"]}
        if p["catheter_diameter_m"] > 0:
            overrides["outer_diameter"] = p["catheter_diameter_m"]
        from bronchonav.catheter import CatheterParams

        constraints = DeviceConstraints.from_catheter(CatheterParams.default(), **overrides)
        self.planner = RoutePlanner(self.airway_map, constraints)
        self.last_routes: list = []
        self.T_ct_patient: np.ndarray | None = None
        """The registration's result (4×4, m), once ``registration/transform`` has said it."""
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="route-planner")
        # a waiting request occupies its callback group until answered: the service gets a
        # reentrant group of its own (many requests wait at once, other callbacks stay free)
        # and the wake-up guard another (it must run while requests wait)
        self._wake = self.create_guard_condition(
            lambda: None, callback_group=MutuallyExclusiveCallbackGroup())
        """Triggered when a plan is done, so the executor resumes the waiting request."""
        self._plan_lock = threading.Lock()
        self._pending = 0
        self._requests = 0
        self.requests_refused = 0
        self.pub_path = self.create_publisher(Path, "route", qos.LATCHED)
        self.pub_markers = self.create_publisher(MarkerArray, "route/markers", qos.LATCHED)
        self.pub_status = self.create_publisher(String, "route/status", qos.LATCHED)
        self.create_service(GetPlan, "plan_route", self._on_get_plan, qos_profile=SERVICE_QOS,
                            callback_group=ReentrantCallbackGroup())
        self.create_subscription(String, "route_planner/goal_nodule", self._on_nodule, qos.DEFAULT)
        self.create_subscription(PointStamped, "route_planner/goal_point", self._on_point,
                                 qos.DEFAULT)
        self.create_subscription(TransformStamped, "registration/transform", self._on_registration,
                                 qos.LATCHED)
        self.get_logger().info(f"route_planner ready on map {self.airway_map.name!r} "
                               f"({len(self.airway_map.nodules)} nodules): service plan_route")

    # -- planning ---------------------------------------------------------------------------------
    def plan(self, target) -> list:
        """Plan to a nodule id or CT point (m), publish the result, return the routes.

        Errors in the target (unknown nodule, point outside the body, NaN) are logged and
        published as an infeasible status with the reason; the node keeps running.
        """
        try:
            with self._plan_lock:
                routes = self.planner.plan(target, k=self.params["alternatives"])
        except BronchoNavError as exc:
            self.get_logger().error(f"cannot plan to {target!r}: {exc}")
            self.pub_status.publish(String(data=json.dumps(
                {"nodule": target if isinstance(target, str) else None, "feasible": False,
                 "reasons": [f"input: {exc}"]})))
            self.last_routes = []
            self._publish_path(None)
            return []
        self.last_routes = routes
        best = routes[0]
        summary = best.summary()
        summary.pop("waypoints", None)
        summary["alternatives"] = len(routes) - 1 if best.feasible else 0
        self.pub_status.publish(String(data=json.dumps(summary)))
        if best.feasible:
            self.get_logger().info(
                f"route to {best.target_id or np.round(best.target_center * 1e3, 1).tolist()}: "
                f"{best.length * 1e3:.1f} mm, exit generation {best.exit_generation}, exit → "
                f"lesion {best.exit_distance_center * 1e3:.1f} mm ({best.planning_ms:.1f} ms)")
        else:
            self.get_logger().warning(f"no feasible route to {best.target_id or target!r}: "
                                   + "; ".join(str(r) for r in best.reasons))
        self._publish_path(best if best.feasible else None)
        self.pub_markers.publish(self._markers(routes))
        return routes

    def path_of(self, route) -> Path:
        """A route as a ``nav_msgs/Path`` in the CT frame (empty for None/infeasible)."""
        stamp = self.get_clock().now().to_msg()
        header = Header(frame_id=self.params["frame_id"], stamp=stamp)
        if route is None or not route.feasible:
            return Path(header=header)
        pos, quat = route.to_path_poses()
        return Path(header=header, poses=[PoseStamped(header=header, pose=Pose(
            position=Point(x=float(a), y=float(b), z=float(c)),
            orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))))
            for (a, b, c), q in zip(pos, quat)])

    def _publish_path(self, route) -> None:
        self.pub_path.publish(self.path_of(route))

    def _markers(self, routes) -> MarkerArray:
        frame = self.params["frame_id"]
        stamp = self.get_clock().now().to_msg()
        out = [Marker(header=Header(frame_id=frame, stamp=stamp), action=Marker.DELETEALL)]
        best = routes[0]
        out.append(conv.sphere_marker(best.target_center, max(2 * best.target_radius, 2e-3), frame,
                                      stamp, "route_target", (0.9, 0.2, 0.2, 0.5)))
        for i, r in enumerate(routes):
            if not r.feasible:
                continue
            rgba = (0.1, 1.0, 0.2, 1.0) if i == 0 else (0.9, 0.9, 0.1, 0.5)
            out.append(conv.polyline_marker(r.waypoints, frame, stamp, "route", rgba,
                                            width=2e-3 if i == 0 else 1e-3, marker_id=i))
            if i == 0:
                out.append(conv.sphere_marker(r.exit_point, 3e-3, frame, stamp, "exit_point",
                                              (1.0, 0.5, 0.0, 1.0)))
                out.append(conv.polyline_marker(np.vstack([r.tool_start, r.tool_end]), frame,
                                                stamp, "tool_path", (1.0, 0.0, 1.0, 1.0), 1e-3))
        return MarkerArray(markers=out)

    # -- ROS interfaces ---------------------------------------------------------------------------
    def target_in_ct(self, point, frame_id: str) -> np.ndarray:
        """A goal point (m) given in ``frame_id`` as a CT point.

        Raises
        ------
        BronchoNavError
            For a frame other than ``ct`` (or empty), or ``patient`` before the registration's
            transform is known.
        """
        p = np.array([point.x, point.y, point.z], dtype=float)
        ct = self.params["frame_id"]
        if frame_id in ("", ct):
            return p
        if frame_id == "patient":
            if self.T_ct_patient is None:
                raise BronchoNavError("goal in frame 'patient' but no registration "
                                      "(registration/transform) is known yet; give it in 'ct'")
            return (self.T_ct_patient @ np.append(p, 1.0))[:3]
        raise BronchoNavError(f"goal in frame {frame_id!r}: no transform to {ct!r} is known "
                              f"(give it in {ct!r} or 'patient')")

    def _refuse_request(self, number: int, reason: str) -> None:
        self.requests_refused += 1
        self.get_logger().error(f"plan_route request {number} refused: {reason}")
        self.pub_status.publish(String(data=json.dumps(
            {"request": number, "feasible": False, "reasons": [f"refused: {reason}"]})))

    async def _on_get_plan(self, request: GetPlan.Request, response: GetPlan.Response):
        """Queue the request on the worker and answer when it is planned; refuse at once a goal
        in an unknown frame or beyond ``max_pending``."""
        self._requests += 1
        number = self._requests
        response.plan = self.path_of(None)
        try:
            target = self.target_in_ct(request.goal.pose.position, request.goal.header.frame_id)
        except BronchoNavError as exc:
            self._refuse_request(number, str(exc))
            return response
        if self._pending >= self.params["max_pending"]:
            self._refuse_request(number, f"{self._pending} requests are already queued "
                                         f"(max_pending)")
            return response
        self._pending += 1
        try:
            future = self._worker.submit(self.plan, target)
            future.add_done_callback(lambda _: self._wake.trigger())
            routes = await _Done(future)
        finally:
            self._pending -= 1
        response.plan = self.path_of(routes[0] if routes else None)
        return response

    def _on_registration(self, msg: TransformStamped) -> None:
        if (msg.header.frame_id, msg.child_frame_id) != (self.params["frame_id"], "patient"):
            self.get_logger().error(f"registration/transform from {msg.header.frame_id!r} to "
                                    f"{msg.child_frame_id!r} ignored (expected "
                                    f"{self.params['frame_id']!r} → 'patient')")
            return
        self.T_ct_patient = conv.transform_to_matrix(msg.transform)

    def _on_nodule(self, msg: String) -> None:
        self._worker.submit(self.plan, msg.data.strip())

    def _on_point(self, msg: PointStamped) -> None:
        try:
            target = self.target_in_ct(msg.point, msg.header.frame_id)
        except BronchoNavError as exc:
            self.get_logger().error(f"goal point refused: {exc}")
            self.pub_status.publish(String(data=json.dumps(
                {"feasible": False, "reasons": [f"refused: {exc}"]})))
            return
        self._worker.submit(self.plan, target)

    def destroy_node(self):
        """Stop the planning worker (queued plans are dropped), then destroy the node (also a
        half-built one: a signal during start-up ends ``__init__`` early and rclpy still
        destroys the node)."""
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)
        return super().destroy_node()


def main(args=None) -> None:
    """Console script ``route_planner``."""
    from bronchonav.ros.runner import spin_node

    spin_node(RoutePlannerNode, args)


if __name__ == "__main__":
    main()
