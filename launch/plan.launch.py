"""Planning only: the map server and the route planner.

    ros2 launch bronchonav plan.launch.py [map:=DIR|phantom:NAME] [namespace:=NS] [rviz:=false]

The nodes and arguments come from one table, :mod:`bronchonav.ros.launch_spec`, which
``bronchonav launch plan`` (no ROS 2 launch install needed) reads too; ``ros2 launch bronchonav
plan.launch.py --show-args`` lists the arguments. Bad arguments stop the launch with one line
before any node starts; when the map server (a required node) exits, the launch shuts
everything down. Plan with ``ros2 service call /plan_route nav_msgs/srv/GetPlan ...``.
"""

from bronchonav.ros.launch_spec import launch_description


def generate_launch_description():
    return launch_description("plan")
