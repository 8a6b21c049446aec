"""How a node process starts: ``ros2 run bronchonav NODE``, ``ros2 launch`` and ``bronchonav
launch --processes`` run every node through :func:`run` (the console scripts below;
``python -m bronchonav.ros.node_main NODE [--ros-args ...]``).

A node's module imports rclpy, numpy and scipy before its ``main`` installs the node's signal
handling (:func:`bronchonav.ros.runner.spin_node`): a second or more, several on a busy machine
while a whole graph starts. A SIGINT (a terminal's Ctrl-C) or SIGTERM in that time ends the
process at once with exit code 0 — nothing has started yet: no ROS context, no file, no child
process — instead of a KeyboardInterrupt traceback or a death by SIGTERM.

A node started by the project's runner (:func:`bronchonav.ros.runner.spawn_processes`, whose
pid is in ``BRONCHONAV_PARENT_PID``) also stops when the runner dies, however it dies (a
SIGKILL, a crash): on Linux the kernel sends it SIGTERM then (``PR_SET_PDEATHSIG``), and a node
whose runner is already gone when it starts exits at once. A simulator left running after its
runner would go on publishing to whoever listens.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_while_importing(signum, frame) -> None:
    os._exit(0)


PARENT_PID_ENV = "BRONCHONAV_PARENT_PID"
"""Environment variable naming the runner process a node stops with."""

_PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process gets when its parent dies (Linux)."""


def _stop_with_parent() -> None:
    """SIGTERM when the runner in ``BRONCHONAV_PARENT_PID`` dies; exit now if it is gone."""
    parent = os.environ.get(PARENT_PID_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(parent):  # it died before the request took effect
        os._exit(0)


def run(name: str) -> None:
    """Import node ``name``'s module (a stop signal meanwhile ends the process, exit code 0),
    then run its ``main``."""
    previous = {s: signal.signal(s, _stop_while_importing) for s in _STOP_SIGNALS}
    _stop_with_parent()
    from bronchonav.ros.launch_spec import NODES

    module = importlib.import_module(NODES[name].module)
    for s, handler in previous.items():  # the node's main takes over (rclpy chains to these)
        signal.signal(s, handler)
    module.main()


def airway_map_server() -> None:
    """Console script ``airway_map_server``."""
    run("airway_map_server")


def catheter_sim() -> None:
    """Console script ``catheter_sim``."""
    run("catheter_sim")


def route_planner() -> None:
    """Console script ``route_planner``."""
    run("route_planner")


def registration() -> None:
    """Console script ``registration``."""
    run("registration")


def navigator() -> None:
    """Console script ``navigator``."""
    run("navigator")


def tip_camera() -> None:
    """Console script ``tip_camera``."""
    run("tip_camera")


if __name__ == "__main__":
    node_name = sys.argv[1]
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    run(node_name)
