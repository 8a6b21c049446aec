"""The ``tip_camera`` node in a real rclpy graph: pose in, rgb8 + 32FC1 depth + CameraInfo out."""

import time

import numpy as np
import pytest

import rclpy  # fails, not skips, without ROS 2 (source its setup first)

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from bronchonav.errors import InputError  # noqa: E402
from bronchonav.imaging.camera import CameraIntrinsics, Shading, TipCamera, look_at  # noqa: E402
from bronchonav.imaging.tube_mesh import tube_mesh  # noqa: E402
from bronchonav.maps import AirwayMap, save_map  # noqa: E402
from bronchonav.ros.conversions import pose_stamped  # noqa: E402
from bronchonav.ros.params import overrides  # noqa: E402
from bronchonav.ros.tip_camera_node import DEPTH_TOPIC, IMAGE_TOPIC, INFO_TOPIC, TipCameraNode  # noqa: E402
from test_camera import y_tree  # noqa: E402


@pytest.fixture(scope="module")
def y_map(tmp_path_factory):
    tree = y_tree()
    v, t = tube_mesh(tree, spacing=6e-4)
    return str(save_map(AirwayMap("y", tree, [], v, t), tmp_path_factory.mktemp("ymap") / "y"))


def test_tip_camera_node_publishes_images_at_its_rate(y_map):
    context = rclpy.Context()
    rclpy.init(context=context)
    node = TipCameraNode(context=context, parameter_overrides=overrides(
        {"map": y_map, "rate_hz": 15.0, "width": 160, "height": 120, "nice": 0}))
    peer = rclpy.create_node("camera_test_peer", context=context)
    got = {"rgb": [], "depth": [], "info": []}
    peer.create_subscription(Image, IMAGE_TOPIC, lambda m: got["rgb"].append(m), 10)
    peer.create_subscription(Image, DEPTH_TOPIC, lambda m: got["depth"].append(m), 10)
    peer.create_subscription(CameraInfo, INFO_TOPIC, lambda m: got["info"].append(m), 10)
    pose_pub = peer.create_publisher(PoseStamped, "/catheter/tip_pose", 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    T = look_at([0.0, 0.0, 0.03], [0.0, 0.0, -1.0])
    try:
        t_end = time.monotonic() + 8.0
        while time.monotonic() < t_end and len(got["depth"]) < 3:
            pose_pub.publish(pose_stamped(T, "ct", peer.get_clock().now().to_msg()))
            executor.spin_once(timeout_sec=0.05)
        assert len(got["depth"]) >= 3, "no frames received"
        n0, t0 = len(got["depth"]), time.monotonic()
        while time.monotonic() - t0 < 2.0:
            executor.spin_once(timeout_sec=0.02)
        rate = (len(got["depth"]) - n0) / (time.monotonic() - t0)
    finally:
        executor.remove_node(node)
        executor.remove_node(peer)
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()
        rclpy.shutdown(context=context)
    assert 8.0 < rate < 20.0
    rgb, depth, info = got["rgb"][-1], got["depth"][-1], got["info"][-1]
    assert (rgb.encoding, rgb.width, rgb.height, rgb.step) == ("rgb8", 160, 120, 480)
    assert (depth.encoding, depth.step) == ("32FC1", 640)
    assert rgb.header.frame_id == "catheter_tip_camera"
    d = np.frombuffer(bytes(depth.data), dtype=np.float32).reshape(120, 160)
    intr = CameraIntrinsics(160, 120)
    reference = TipCamera(*tube_mesh(y_tree(), spacing=6e-4), intrinsics=intr,
                          shading=Shading(auto_exposure=True)).render(T)
    assert np.allclose(d, reference.depth, atol=1e-6)
    assert np.allclose(np.array(info.k).reshape(3, 3), intr.K)
    assert info.distortion_model == "plumb_bob" and len(info.d) == 5


def test_tip_camera_node_rejects_a_folding_lens(y_map):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(InputError):
            TipCameraNode(context=context, parameter_overrides=overrides(
                {"map": y_map, "k1": -0.9, "nice": 0}))
    finally:
        rclpy.shutdown(context=context)
