"""``tip_camera``: the bronchoscope camera at the catheter tip, rendered from the map's lumen.

It keeps the newest tip pose and, at ``rate_hz``, renders what a camera at that pose sees
(:class:`bronchonav.imaging.camera.TipCamera`).

A node of its own so rendering stays off the catheter control loop: run it as a separate process
(it then also stays off the loop's interpreter lock); by default it casts rays on one thread and
lowers its process priority (``nice``) so the scheduler serves the catheter loop first, and the
frame rate gives way when the machine is busy. In an in-process graph set ``nice`` to 0:
niceness applies to the whole process.

Subscribes
    ``pose_topic`` (default ``catheter/tip_pose``; names are relative to the node's namespace), ``geometry_msgs/PoseStamped`` in the ``ct``
    frame (metres). The camera looks along the tip frame's +z axis (the catheter's distal
    tangent); its image x/y axes are the tip frame's x/y (optical frame convention).
Publishes (frame ``frame_id``, default ``catheter_tip_camera``)
    ``tip_camera/image_raw`` ``sensor_msgs/Image`` ``rgb8``;
    ``tip_camera/depth`` ``sensor_msgs/Image`` ``32FC1``, z-depth in metres, ``+inf`` where
    a ray leaves the mesh (REP 118);
    ``tip_camera/camera_info`` ``sensor_msgs/CameraInfo`` (``plumb_bob``).
Parameters
    see :data:`PARAMS` (``map``, ``rate_hz`` = 15, ``width``, ``height``, ``hfov`` (rad),
    ``k1``, ``k2``, ``depth_noise_std`` (m), ``color_noise_std``, ``auto_exposure``, ``seed``,
    ``render_threads`` = 1, ``nice`` = 10, ``pose_topic``, ``frame_id``).
"""

from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from bronchonav.ros import qos
from bronchonav.ros.conversions import pose_to_matrix
from bronchonav.ros.params import Param, declare, give_way, nice_param

PARAMS = [
    Param("map", "maps/phantom_default",
          "Map folder (or 'phantom:NAME') whose lumen mesh the camera renders"),
    Param("rate_hz", 15.0, "Frame rate (frames/s)", minimum=0.1, maximum=120.0),
    Param("width", 320, "Image width (pixels)", minimum=8, maximum=4096),
    Param("height", 240, "Image height (pixels)", minimum=8, maximum=4096),
    Param("hfov", float(np.radians(110.0)), "Horizontal field of view (rad)",
          minimum=0.1, maximum=3.0),
    Param("k1", 0.0, "Radial distortion coefficient k1 (plumb_bob)", minimum=-1.0, maximum=1.0),
    Param("k2", 0.0, "Radial distortion coefficient k2 (plumb_bob)", minimum=-1.0, maximum=1.0),
    Param("depth_noise_std", 0.0, "Depth noise standard deviation (m)", minimum=0.0, maximum=0.01),
    Param("color_noise_std", 0.0, "Colour noise standard deviation (fraction of full scale)",
          minimum=0.0, maximum=0.5),
    Param("auto_exposure", True, "Expose each frame for its median wall distance"),
    Param("seed", 0, "Seed of the noise generator", minimum=0),
    Param("render_threads", 1, "Ray-casting threads (0 = all cores); 1 leaves the other cores "
          "to the catheter loop", minimum=0, maximum=256),
    nice_param(),
    Param("pose_topic", "catheter/tip_pose",
          "Tip pose topic (geometry_msgs/PoseStamped, ct frame; relative to the namespace)"),
    Param("frame_id", "catheter_tip_camera", "Optical frame of the published images"),
]

IMAGE_TOPIC = "tip_camera/image_raw"
DEPTH_TOPIC = "tip_camera/depth"
INFO_TOPIC = "tip_camera/camera_info"


def camera_info(intrinsics, header: Header) -> CameraInfo:
    """``sensor_msgs/CameraInfo`` of :class:`~bronchonav.imaging.camera.CameraIntrinsics`."""
    K = intrinsics.K
    P = np.hstack([K, np.zeros((3, 1))])
    return CameraInfo(header=header, width=intrinsics.width, height=intrinsics.height,
                      distortion_model="plumb_bob", d=intrinsics.distortion.tolist(),
                      k=K.ravel().tolist(), r=np.eye(3).ravel().tolist(), p=P.ravel().tolist())


def image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """A ``sensor_msgs/Image`` holding ``array`` (H, W[, C]) with ``encoding``."""
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    msg = Image(header=header, height=height, width=width, encoding=encoding,
                is_bigendian=int(sys.byteorder == "big"), step=array.strides[0])
    msg.data = array.tobytes()
    return msg


class TipCameraNode(Node):
    """Renders the tip camera at a fixed rate from the newest tip pose.

    Parameters
    ----------
    **kwargs
        Passed to :class:`rclpy.node.Node` (e.g. ``parameter_overrides``, ``context``).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("tip_camera", **kwargs)
        self.params = p = declare(self, PARAMS)
        give_way(p["nice"])  # before the start-up work too (open3d, the ray-casting scene)
        from bronchonav.imaging.camera import CameraIntrinsics, CameraNoise, Shading, TipCamera
        from bronchonav.ros.resources import load_airway_map

        airway_map = load_airway_map(p["map"])
        self.camera = TipCamera.from_map(
            airway_map,
            intrinsics=CameraIntrinsics(p["width"], p["height"], p["hfov"], p["k1"], p["k2"]),
            shading=Shading(auto_exposure=p["auto_exposure"]),
            noise=CameraNoise(depth_std=p["depth_noise_std"], color_std=p["color_noise_std"]),
            seed=p["seed"], nthreads=p["render_threads"])
        self.camera.intrinsics.rays  # validate the distortion now, not in the first frame
        self.T_ct_cam: np.ndarray | None = None
        self.frames = 0
        self.image_pub = self.create_publisher(Image, IMAGE_TOPIC, qos.STATE)
        self.depth_pub = self.create_publisher(Image, DEPTH_TOPIC, qos.STATE)
        self.info_pub = self.create_publisher(CameraInfo, INFO_TOPIC, qos.STATE)
        self.create_subscription(PoseStamped, p["pose_topic"], self._on_pose, qos.STATE_SUB)
        self.create_timer(1.0 / p["rate_hz"], self._tick)
        self.get_logger().info(
            f"tip camera {p['width']}×{p['height']} at {p['rate_hz']} Hz on map "
            f"{airway_map.name!r} ({self.camera.n_triangles} triangles), pose from "
            f"{p['pose_topic']}")

    def _on_pose(self, msg: PoseStamped) -> None:
        if msg.header.frame_id not in ("ct", ""):
            self.get_logger().warning(f"ignoring tip pose in frame {msg.header.frame_id!r} "
                                      "(expected 'ct')", throttle_duration_sec=5.0)
            return
        T = pose_to_matrix(msg.pose)
        if np.all(np.isfinite(T)):
            self.T_ct_cam = T

    def _tick(self) -> None:
        T = self.T_ct_cam
        if T is None:
            return
        frame = self.camera.render(T)
        header = Header(frame_id=self.params["frame_id"], stamp=self.get_clock().now().to_msg())
        self.image_pub.publish(image_msg(frame.color, "rgb8", header))
        self.depth_pub.publish(image_msg(frame.depth.astype(np.float32), "32FC1", header))
        self.info_pub.publish(camera_info(self.camera.intrinsics, header))
        self.frames += 1


def main(args=None) -> None:
    """Console script ``tip_camera``."""
    from bronchonav.ros.runner import spin_node

    spin_node(TipCameraNode, args)


if __name__ == "__main__":
    main()
