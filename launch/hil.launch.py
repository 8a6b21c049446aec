"""Hardware in the loop: map server, catheter simulator, route planner, registration, tip camera
(no navigator; an external controller drives catheter/command or catheter/joint_command), plus
robot_state_publisher and RViz.

    ros2 launch bronchonav hil.launch.py [map:=DIR|phantom:NAME] [namespace:=cath2] [rviz:=false] ...

The nodes and arguments come from one table, :mod:`bronchonav.ros.launch_spec`, which
``bronchonav launch hil`` (no ROS 2 launch install needed) reads too; ``ros2 launch bronchonav
hil.launch.py --show-args`` lists the arguments. Bad arguments stop the launch with one line
before any node starts; when a required node (map server, catheter simulator) exits, the launch
shuts everything down.
"""

from bronchonav.ros.launch_spec import launch_description


def generate_launch_description():
    return launch_description("hil")
