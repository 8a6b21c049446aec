"""Shared pytest set-up: keep ROS 2 traffic on this machine, in a domain of its own."""

import os

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
os.environ.setdefault("MPLBACKEND", "Agg")


# -- fixtures of the ROS graph tests (module scope: one map and one ROS context per module) --------

@pytest.fixture(scope="module")
def airway_map():
    """The default phantom's ground-truth map."""
    from bronchonav.ct.phantom import phantom_config, phantom_ground_truth_map

    return phantom_ground_truth_map(phantom_config("default"))


@pytest.fixture(scope="module")
def map_dir(airway_map, tmp_path_factory):
    """:func:`airway_map` saved as a map folder (path as str)."""
    from bronchonav.maps import save_map

    return str(save_map(airway_map, tmp_path_factory.mktemp("map") / "phantom"))


@pytest.fixture(scope="module")
def context():
    """A ROS context of its own, shut down after the module."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)
