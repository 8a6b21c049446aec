"""Hardware in the loop: map server, catheter simulator, route planner, registration, tip camera
— no navigator.

    ros2 launch bronchonav hil.launch.py [map:=DIR|phantom:default] [rate:=200.0] [rviz:=true]

Without a ROS 2 install (no ``launch``/``ros2`` CLI), ``bronchonav hil`` or
``bronchonav launch hil`` starts the same nodes with the same YAML and arguments
(``--map``, ``--rate``, ``--rviz``; see ``bronchonav/ros/runner.py``).
An external controller drives ``/catheter/command`` (Float64MultiArray ``[insertion m, roll rad,
tendon displacements m]``) or ``/catheter/joint_command`` (JointState). Also starts
robot_state_publisher with ``urdf/bronchoscope.urdf`` and, with ``rviz:=true``,
RViz with ``config/bronchonav.rviz``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

NODES = ["airway_map_server", "catheter_sim", "route_planner", "registration", "tip_camera"]
MAP_NODES = ["airway_map_server", "catheter_sim", "route_planner", "registration",
             "tip_camera"]


def generate_launch_description():
    share = get_package_share_directory("bronchonav")
    config = os.path.join(share, "config", "bronchonav.yaml")
    with open(os.path.join(share, "urdf", "bronchoscope.urdf")) as f:
        robot_description = f.read()
    map_folder = LaunchConfiguration("map")
    rate = ParameterValue(LaunchConfiguration("rate"), value_type=float)
    actions = [
        DeclareLaunchArgument("map", default_value=os.path.join(share, "maps", "phantom_default"),
                              description="Map folder, or phantom:NAME to build it on start"),
        DeclareLaunchArgument("rate", default_value="200.0",
                              description="catheter_sim loop rate (Hz)"),
        DeclareLaunchArgument("rviz", default_value="false", description="Start RViz"),
    ]
    for name in NODES:
        overrides = {}
        if name in MAP_NODES:
            overrides["map"] = map_folder
        if name == "catheter_sim":
            overrides["rate_hz"] = rate
        actions.append(Node(package="bronchonav", executable=name, name=name, output="screen",
                            parameters=[config, overrides]))
    actions += [
        Node(package="robot_state_publisher", executable="robot_state_publisher",
             name="robot_state_publisher", output="screen",
             parameters=[{"robot_description": robot_description}]),
        Node(package="rviz2", executable="rviz2", name="rviz2",
             arguments=["-d", os.path.join(share, "config", "bronchonav.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ]
    return LaunchDescription(actions)
