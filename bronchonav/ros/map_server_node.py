"""``airway_map_server``: publishes an airway map for RViz/Foxglove and the other nodes.

Topics (all ``visualization_msgs/MarkerArray`` or ``std_msgs/String``, transient-local so late
subscribers get them; frame ``ct``, metres):

- ``/airway_map/markers``: the centerline tree (``LINE_LIST`` coloured by generation), the lumen
  surface (``TRIANGLE_LIST``, decimated to ``mesh_max_triangles``) and the nodules (spheres with
  labels).
- ``/airway_map/info``: a JSON summary (map name and path, branches, max generation, nodules with
  centres and radii).
"""

from __future__ import annotations

import json

import numpy as np
from rclpy.node import Node
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from bronchonav.ros import conversions as conv
from bronchonav.ros import qos
from bronchonav.ros.params import Param, declare

PARAMS = [
    Param("map", "maps/phantom_default",
          "Map folder (absolute, relative to the working directory or to the package share "
          "directory) or 'phantom:NAME' to build the phantom's ground-truth map on start"),
    Param("frame_id", "ct", "Frame of the map (the CT frame, LPS, metres)"),
    Param("mesh_max_triangles", 60000,
          "Lumen mesh triangles published at most (decimated above this; 0 = no mesh)",
          minimum=0, maximum=2_000_000),
    Param("republish_period_s", 0.0,
          "Republish the markers every this many seconds (0 = only once, latched)",
          minimum=0.0, maximum=3600.0),
]


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


class MapServerNode(Node):
    """Loads a map folder (or builds the phantom's) and publishes it as latched markers.

    Parameters
    ----------
    **kwargs
        Passed to :class:`rclpy.node.Node` (e.g. ``parameter_overrides``, ``context``).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("airway_map_server", **kwargs)
        self.params = declare(self, PARAMS)
        from bronchonav.ros.resources import load_airway_map, resolve_map

        self.map_path = resolve_map(self.params["map"])
        self.airway_map = load_airway_map(self.map_path)
        self.marker_pub = self.create_publisher(MarkerArray, "/airway_map/markers", qos.LATCHED)
        self.info_pub = self.create_publisher(String, "/airway_map/info", qos.LATCHED)
        self._markers = self._build_markers()
        self.publish()
        if self.params["republish_period_s"] > 0:
            self.create_timer(self.params["republish_period_s"], self.publish)
        tree = self.airway_map.tree
        self.get_logger().info(
            f"map {self.airway_map.name!r} from {self.map_path}: {len(tree)} branches, "
            f"generation ≤ {tree.max_generation}, {len(self.airway_map.nodules)} nodules, "
            f"{len(self._markers.markers)} markers on /airway_map/markers")

    def _build_markers(self) -> MarkerArray:
        frame = self.params["frame_id"]
        stamp = self.get_clock().now().to_msg()
        m = self.airway_map
        markers = [conv.tree_marker(m.tree, frame, stamp)]
        v, t = decimate(m.mesh_vertices, m.mesh_triangles, self.params["mesh_max_triangles"])
        if len(t):
            markers.append(conv.mesh_marker(v, t, frame, stamp))
        markers += conv.nodule_markers(m.nodules, frame, stamp)
        return MarkerArray(markers=markers)

    def info(self) -> dict:
        """The JSON summary published on ``/airway_map/info``."""
        m = self.airway_map
        return {"name": m.name, "path": self.map_path, "frame": self.params["frame_id"],
                "branches": len(m.tree), "max_generation": m.tree.max_generation,
                "nodules": [{"id": n.id, "center_m": n.center.tolist(), "radius_m": n.radius,
                             "lobe": n.lobe} for n in m.nodules]}

    def publish(self) -> None:
        """(Re)publish the markers and the summary."""
        self.marker_pub.publish(self._markers)
        self.info_pub.publish(String(data=json.dumps(self.info())))


def main(args=None) -> None:
    """Console script ``airway_map_server``."""
    from bronchonav.ros.runner import spin_node

    spin_node(MapServerNode, args)


if __name__ == "__main__":
    main()
