"""``airway_map_server``: a lifecycle node that serves an airway map to RViz/Foxglove and the
other nodes, as nav2's map_server serves an occupancy grid.

Topics (relative to the node's namespace; transient-local so late subscribers get them; frame
``ct``, metres), published while the node is *active*:

- ``airway_map/markers`` (``visualization_msgs/MarkerArray``): the centerline tree
  (``LINE_LIST`` coloured by generation), the lumen surface (``TRIANGLE_LIST``, decimated to
  ``mesh_max_triangles``) and the nodules (spheres with labels).
- ``airway_map/info`` (``std_msgs/String``): a JSON summary (map name and path, branches, max
  generation, nodules with centres and radii).

Lifecycle (``lifecycle_msgs``; ``ros2 lifecycle set /airway_map_server configure`` ...): the map
is loaded in ``on_configure`` (a failure is logged with its reason and the node stays
unconfigured), published in ``on_activate``, dropped in ``on_cleanup``. With ``autostart`` (the
default, like nav2's lifecycle manager) the node configures and activates itself on start, and a
map that cannot be loaded ends the node with one line (exit code 2).

Loading another map (nav2_msgs/LoadMap is not available without nav2, so this node uses
standard types): set the ``map`` parameter, then call ``~/load_map`` (``std_srvs/Trigger``)::

    ros2 param set /airway_map_server map /data/maps/patient7
    ros2 service call /airway_map_server/load_map std_srvs/srv/Trigger

The service loads the folder named by ``map`` (read again from disk), republishes when active
and answers ``success`` with a summary, or ``success: false`` with the reason while the previous
map stays served. The other nodes read their own ``map`` parameter at start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from bronchonav.errors import BronchoNavError, MapError
from bronchonav.ros import conversions as conv
from bronchonav.ros import qos
from bronchonav.ros.params import Param, declare, give_way, nice_param

PARAMS = [
    Param("map", "maps/phantom_default",
          "Map folder (absolute, relative to the working directory or to the package share "
          "directory) or 'phantom:NAME' to build the phantom's ground-truth map; settable at run "
          "time, applied by the ~/load_map service", dynamic=True),
    Param("frame_id", "ct", "Frame of the map (the CT frame, LPS, metres)"),
    Param("mesh_max_triangles", 60000,
          "Lumen mesh triangles published at most (decimated above this; 0 = no mesh)",
          minimum=0, maximum=2_000_000),
    Param("republish_period_s", 0.0,
          "Republish the markers every this many seconds while active (0 = only once, latched)",
          minimum=0.0, maximum=3600.0),
    Param("autostart", True,
          "Configure and activate on start (false: wait for lifecycle transitions)"),
    nice_param(),
]

MARKERS_TOPIC = "airway_map/markers"
INFO_TOPIC = "airway_map/info"


def decimate(vertices: np.ndarray, triangles: np.ndarray, max_triangles: int):
    """The mesh reduced to at most ``max_triangles`` (quadric decimation, open3d)."""
    if max_triangles <= 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    if len(triangles) <= max_triangles:
        return vertices, triangles
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices),
                                     o3d.utility.Vector3iVector(triangles.astype(np.int32)))
    mesh = mesh.simplify_quadric_decimation(int(max_triangles))
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles, dtype=np.int64)


@dataclass(frozen=True)
class ServedMap:
    """A loaded map with its markers, ready to publish."""

    airway_map: object
    path: str
    markers: MarkerArray


class MapServerNode(LifecycleNode):
    """Loads a map folder (or builds the phantom's) and publishes it as latched markers.

    Parameters
    ----------
    **kwargs
        Passed to :class:`rclpy.lifecycle.LifecycleNode` (e.g. ``parameter_overrides``,
        ``context``, ``namespace``).

    Raises
    ------
    MapError
        With ``autostart``, when the map cannot be loaded.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("airway_map_server", **kwargs)
        self.params = declare(self, PARAMS)
        give_way(self.params["nice"])  # before the start-up work (map, markers)
        self.served: ServedMap | None = None
        self.last_error = ""
        self._timer = None
        self.add_on_set_parameters_callback(self._check_parameters)
        self.marker_pub = self.create_lifecycle_publisher(MarkerArray, MARKERS_TOPIC, qos.LATCHED)
        self.info_pub = self.create_lifecycle_publisher(String, INFO_TOPIC, qos.LATCHED)
        self.create_service(Trigger, "~/load_map", self._on_load_map)
        if self.params["autostart"]:
            try:
                if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                    raise MapError(self.last_error)
                self.trigger_activate()
            except BaseException:  # a bad map, or a stop signal during start-up: no node
                self.destroy_node()
                raise

    @property
    def airway_map(self):
        """The served :class:`~bronchonav.maps.AirwayMap` (None before configure)."""
        return None if self.served is None else self.served.airway_map

    @property
    def map_path(self) -> str | None:
        """Absolute folder (or ``phantom:NAME``) of the served map."""
        return None if self.served is None else self.served.path

    def _check_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult

        specs = {p.name: p for p in PARAMS}
        for param in params:
            if param.name in specs and specs[param.name].dynamic:
                try:
                    specs[param.name].check(param.value)
                except BronchoNavError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _load(self, spec: str, fresh: bool) -> ServedMap:
        from bronchonav.ros.resources import load_airway_map, resolve_map

        path = resolve_map(spec)
        airway_map = load_airway_map(path, fresh=fresh)
        return ServedMap(airway_map, path, self._build_markers(airway_map))

    # -- lifecycle ------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        spec = self.get_parameter("map").value
        try:
            self.served = self._load(spec, fresh=False)
        except BronchoNavError as exc:
            self.last_error = str(exc)
            self.get_logger().error(f"cannot load map {spec!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        tree = self.served.airway_map.tree
        self.get_logger().info(
            f"map {self.served.airway_map.name!r} from {self.served.path}: {len(tree)} branches, "
            f"generation ≤ {tree.max_generation}, {len(self.served.airway_map.nodules)} nodules")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # activates the lifecycle publishers
        self.publish()
        if self.params["republish_period_s"] > 0:
            self._timer = self.create_timer(self.params["republish_period_s"], self.publish)
        self.get_logger().info(f"{len(self.served.markers.markers)} markers on "
                               f"{self.marker_pub.topic_name}")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.served = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.served = None
        return TransitionCallbackReturn.SUCCESS

    # -- load_map -------------------------------------------------------------------------------
    def _on_load_map(self, request, response: Trigger.Response):
        spec = self.get_parameter("map").value
        if self.served is None:
            response.success = False
            response.message = "not configured: configure the node first (lifecycle)"
            return response
        try:
            served = self._load(spec, fresh=True)
        except BronchoNavError as exc:
            response.success = False
            response.message = f"map {spec!r} not loaded: {' '.join(str(exc).split())}; still " \
                               f"serving {self.served.path}"
            self.get_logger().warn(response.message)
            return response
        self.served = served
        if self.marker_pub.is_activated:
            self.publish()
        tree = served.airway_map.tree
        response.success = True
        response.message = (f"loaded {served.airway_map.name!r} from {served.path}: {len(tree)} "
                            f"branches, {len(served.airway_map.nodules)} nodules")
        self.get_logger().info(response.message)
        return response

    def _build_markers(self, airway_map) -> MarkerArray:
        frame = self.params["frame_id"]
        stamp = self.get_clock().now().to_msg()
        m = airway_map
        markers = [conv.tree_marker(m.tree, frame, stamp)]
        v, t = decimate(m.mesh_vertices, m.mesh_triangles, self.params["mesh_max_triangles"])
        if len(t):
            markers.append(conv.mesh_marker(v, t, frame, stamp))
        markers += conv.nodule_markers(m.nodules, frame, stamp)
        return MarkerArray(markers=markers)

    def info(self) -> dict:
        """The JSON summary published on ``airway_map/info``."""
        m = self.served.airway_map
        return {"name": m.name, "path": self.served.path, "frame": self.params["frame_id"],
                "branches": len(m.tree), "max_generation": m.tree.max_generation,
                "nodules": [{"id": n.id, "center_m": n.center.tolist(), "radius_m": n.radius,
                             "lobe": n.lobe} for n in m.nodules]}

    def publish(self) -> None:
        """(Re)publish the markers and the summary (only while active)."""
        self.marker_pub.publish(self.served.markers)
        self.info_pub.publish(String(data=json.dumps(self.info())))


def main(args=None) -> None:
    """Console script ``airway_map_server``."""
    from bronchonav.ros.runner import spin_node

    spin_node(MapServerNode, args)


if __name__ == "__main__":
    main()
