"""Planning only: the map server and the route planner.

    ros2 launch bronchonav plan.launch.py [map:=DIR|phantom:default] [rviz:=true]

Without a ROS 2 install, ``bronchonav launch plan`` starts the same nodes with the same YAML
(``bronchonav plan`` is the planner's own command line, not a launch). Plan with
``ros2 service call /plan_route nav_msgs/srv/GetPlan`` or publish a nodule id on
``/route_planner/goal_nodule``. The ``rate`` argument is accepted for symmetry with the other
launch files and unused here.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

NODES = ["airway_map_server", "route_planner"]


def generate_launch_description():
    share = get_package_share_directory("bronchonav")
    config = os.path.join(share, "config", "bronchonav.yaml")
    map_folder = LaunchConfiguration("map")
    actions = [
        DeclareLaunchArgument("map", default_value=os.path.join(share, "maps", "phantom_default"),
                              description="Map folder, or phantom:NAME to build it on start"),
        DeclareLaunchArgument("rate", default_value="200.0", description="Unused here"),
        DeclareLaunchArgument("rviz", default_value="false", description="Start RViz"),
    ]
    for name in NODES:
        actions.append(Node(package="bronchonav", executable=name, name=name, output="screen",
                            parameters=[config, {"map": map_folder}]))
    actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                        arguments=["-d", os.path.join(share, "config", "bronchonav.rviz")],
                        condition=IfCondition(LaunchConfiguration("rviz"))))
    return LaunchDescription(actions)
