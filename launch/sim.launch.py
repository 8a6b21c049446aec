"""Full simulation: map server, catheter simulator, route planner, registration, navigator, tip
camera, plus robot_state_publisher and RViz.

    ros2 launch bronchonav sim.launch.py [map:=DIR|phantom:NAME] [namespace:=cath2] [rviz:=false] ...

The nodes and arguments come from one table, :mod:`bronchonav.ros.launch_spec`, which
``bronchonav launch sim`` (no ROS 2 launch install needed) reads too; ``ros2 launch bronchonav
sim.launch.py --show-args`` lists the arguments. Bad arguments stop the launch with one line
before any node starts; when a required node (map server, catheter simulator) exits, the launch
shuts everything down.
"""

from bronchonav.ros.launch_spec import launch_description


def generate_launch_description():
    return launch_description("sim")
