"""Start BronchoNav nodes without the ROS 2 launch system: one process or child processes.

The three launch configurations mirror ``launch/*.launch.py`` (same nodes, same YAML file, same
arguments ``map``, ``rate``, ``rviz``):

- ``plan``: airway_map_server, route_planner
- ``hil``: airway_map_server, catheter_sim, route_planner, registration (an external controller
  drives ``/catheter/command`` or ``/catheter/joint_command``)
- ``sim``: everything in ``hil`` plus the built-in ``navigator``

:class:`InProcessGraph` builds the node objects in this process and spins each on an executor of
its own in a background thread; :func:`spawn_processes` starts each node as its own
console-script process with ``--ros-args --params-file``.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bronchonav.errors import BronchoNavError, InputError
from bronchonav.catheter.runtime.loop import freeze_startup_heap

NODE_CLASSES = {
    "airway_map_server": "bronchonav.ros.map_server_node:MapServerNode",
    "catheter_sim": "bronchonav.ros.catheter_sim_node:CatheterSimNode",
    "route_planner": "bronchonav.ros.route_planner_node:RoutePlannerNode",
    "registration": "bronchonav.ros.registration_node:RegistrationNode",
    "navigator": "bronchonav.ros.navigator_node:NavigatorNode",
    "tip_camera": "bronchonav.ros.tip_camera_node:TipCameraNode",
}
"""Node name (= console script = YAML section) → node class."""

LAUNCH_CONFIGS = {
    "plan": ["airway_map_server", "route_planner"],
    "hil": ["airway_map_server", "catheter_sim", "route_planner", "registration", "tip_camera"],
    "sim": ["airway_map_server", "catheter_sim", "route_planner", "registration", "navigator",
            "tip_camera"],
}
"""Launch configuration → node names, the same as ``launch/<name>.launch.py``."""

MAP_NODES = ("airway_map_server", "catheter_sim", "route_planner", "registration", "tip_camera")
"""Nodes that take the ``map`` launch argument."""


def default_config() -> Path:
    """``config/bronchonav.yaml`` from the package share directory or the source tree."""
    from bronchonav.ros.resources import data_file

    return data_file("config/bronchonav.yaml")


def ensure_local_ros_env(domain_id: int | None = None) -> None:
    """Keep ROS 2 discovery on this machine; set ``ROS_DOMAIN_ID`` if it is not set."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    else:
        os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))


def node_parameters(node_name: str, config: str | Path | None = None,
                    launch_args: dict | None = None, extra: dict | None = None) -> dict:
    """A node's parameters: the YAML file's section, then launch arguments, then ``extra``.

    ``launch_args`` may hold ``map`` (applied to the map-using nodes) and ``rate`` (the
    catheter_sim ``rate_hz``), as the launch files do.
    """
    from bronchonav.ros.params import load_yaml_params

    values = load_yaml_params(config or default_config(), node_name)
    launch_args = launch_args or {}
    if launch_args.get("map") and node_name in MAP_NODES:
        values["map"] = str(launch_args["map"])
    if launch_args.get("rate") and node_name == "catheter_sim":
        values["rate_hz"] = float(launch_args["rate"])
    values.update(extra or {})
    return values


def node_class(node_name: str):
    """The node class for ``node_name`` (see :data:`NODE_CLASSES`)."""
    if node_name not in NODE_CLASSES:
        raise InputError(f"unknown node {node_name!r} (known: {', '.join(NODE_CLASSES)})")
    module, cls = NODE_CLASSES[node_name].split(":")
    return getattr(importlib.import_module(module), cls)


def node_executor(node, context=None):
    """A single-threaded executor holding ``node``.

    One single-threaded executor per node: rclpy's multi-threaded executor rebuilds its wait set
    in Python while a worker thread has not yet taken a ready message, and under a message
    stream that busy loop holds the GIL most of the time (measured here: catheter_sim's loop
    made 143 of 200 Hz with jitter p99 67 ms, the demo's navigator timer 17 of 50 Hz, and a
    registration node on two threads slowed 500 Hz EM publishing in its process to 90 ms a
    message). A node's long callback (a registration, a rendered frame) only delays that node;
    its subscriptions queue meanwhile (see :data:`bronchonav.ros.qos.SAMPLES`).
    """
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return executor


def _spin(executor) -> None:
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import ExternalShutdownException

    try:
        executor.spin()
    except (ExternalShutdownException, RCLError):  # the context was shut down under us
        pass


class InProcessGraph:
    """Several BronchoNav nodes in this process, each spun by its own executor (see
    :func:`node_executor`) on a background thread.

    Parameters
    ----------
    node_names : list of str
        Which nodes to start, in order (e.g. ``LAUNCH_CONFIGS["sim"]``).
    config : path, optional
        ROS 2 parameter YAML (default ``config/bronchonav.yaml``).
    launch_args : dict, optional
        ``map`` and ``rate`` as for the launch files.
    extra : dict, optional
        Per-node parameter overrides ``{node_name: {param: value}}``.
    context : rclpy.context.Context, optional
        An initialised context (default: the global one, which must be initialised).

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, node_names, config=None, launch_args=None, extra=None,
                 context=None) -> None:
        self.node_names = list(node_names)
        self.config = config
        self.launch_args = launch_args or {}
        self.extra = extra or {}
        self.context = context
        self.nodes: dict = {}
        self._executors: list = []
        self._spinning: list[threading.Thread] = []

    def start(self) -> "InProcessGraph":
        """Create the nodes (in order) and start spinning them in background threads."""
        from bronchonav.ros.params import overrides

        try:
            for name in self.node_names:
                values = node_parameters(name, self.config, self.launch_args, self.extra.get(name))
                kwargs = {"parameter_overrides": overrides(values)}
                if self.context is not None:
                    kwargs["context"] = self.context
                self.nodes[name] = node_class(name)(**kwargs)
        except BaseException:
            self._destroy_nodes()
            raise
        freeze_startup_heap()
        for node in self.nodes.values():
            self.spin(node)
        return self

    def spin(self, node) -> None:
        """Spin ``node`` (one of the graph's, or another node of the same context) on an
        executor of its own until :meth:`stop`; the caller still owns a node it added."""
        executor = node_executor(node, self.context)
        thread = threading.Thread(target=_spin, args=(executor,), daemon=True,
                                  name=f"executor-{node.get_name()}")
        thread.start()
        self._executors.append(executor)
        self._spinning.append(thread)

    def _destroy_nodes(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.destroy_node()
        self.nodes.clear()

    def stop(self) -> None:
        """Stop spinning and destroy the nodes (idempotent)."""
        for executor in self._executors:
            executor.shutdown(timeout_sec=2.0)
        for thread in self._spinning:
            thread.join(timeout=5.0)
        self._executors, self._spinning = [], []
        self._destroy_nodes()

    def __enter__(self) -> "InProcessGraph":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _StopOnSignal:
    """Context manager: SIGINT/SIGTERM set :attr:`event` instead of killing the process."""

    def __enter__(self) -> threading.Event:
        self.event = threading.Event()
        self._previous = {s: signal.signal(s, lambda *_: self.event.set())
                          for s in (signal.SIGINT, signal.SIGTERM)}
        return self.event

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def run_in_process(config_name: str, config=None, launch_args=None) -> int:
    """Run a launch configuration in this process until SIGINT/SIGTERM; return the exit code.

    The signal handlers are installed before the nodes are built, so a signal during start-up
    also ends in a clean shutdown.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    if config_name not in LAUNCH_CONFIGS:
        raise InputError(f"unknown launch configuration {config_name!r} "
                         f"(known: {', '.join(LAUNCH_CONFIGS)})")
    ensure_local_ros_env()
    with _StopOnSignal() as stop:
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        try:
            with InProcessGraph(LAUNCH_CONFIGS[config_name], config, launch_args):
                print(f"bronchonav {config_name}: running {', '.join(LAUNCH_CONFIGS[config_name])}"
                      f" in one process (domain {os.environ['ROS_DOMAIN_ID']}); Ctrl-C to stop",
                      file=sys.stderr, flush=True)
                _maybe_rviz(launch_args)
                while not stop.wait(0.5):
                    pass
        finally:
            rclpy.try_shutdown()
    return 0


def _maybe_rviz(launch_args) -> subprocess.Popen | None:
    """Start rviz2 with ``config/bronchonav.rviz`` if asked and installed."""
    if not (launch_args or {}).get("rviz"):
        return None
    import shutil

    from bronchonav.ros.resources import data_file

    if shutil.which("rviz2") is None:
        print("rviz2 is not installed here; open config/bronchonav.rviz in RViz or use Foxglove",
              file=sys.stderr)
        return None
    return subprocess.Popen(["rviz2", "-d", str(data_file("config/bronchonav.rviz"))])


def node_command(node_name: str, config=None, launch_args=None, extra=None) -> list[str]:
    """The command line that starts ``node_name`` as a process with its parameters."""
    module = NODE_CLASSES[node_name].split(":")[0]
    cmd = [sys.executable, "-m", module, "--ros-args",
           "--params-file", str(config or default_config())]
    values = node_parameters(node_name, config, launch_args, extra)
    for key in ("map", "rate_hz"):
        if key in (extra or {}) or (launch_args or {}).get("map" if key == "map" else "rate"):
            if key in values:
                cmd += ["-p", f"{key}:={values[key]}"]
    for key, value in (extra or {}).items():
        if key not in ("map", "rate_hz"):
            cmd += ["-p", f"{key}:={_ros_arg(value)}"]
    return cmd


def _ros_arg(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(float(v)) for v in value) + "]"
    return str(value)


def spawn_processes(node_names, config=None, launch_args=None, extra=None) -> dict:
    """Start each node as a child process (own process group); return ``{name: Popen}``."""
    ensure_local_ros_env()
    procs = {}
    for name in node_names:
        procs[name] = subprocess.Popen(node_command(name, config, launch_args,
                                                    (extra or {}).get(name)),
                                       start_new_session=True)
    return procs


def stop_processes(procs: dict, timeout: float = 10.0) -> dict:
    """SIGTERM every child, wait, SIGKILL stragglers; return ``{name: exit code}``."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = {}
    deadline = time.monotonic() + timeout
    for name, p in procs.items():
        try:
            codes[name] = p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            codes[name] = p.wait()
    return codes


def run_processes(config_name: str, config=None, launch_args=None) -> int:
    """Run a launch configuration as child processes until SIGINT/SIGTERM or a child exits."""
    if config_name not in LAUNCH_CONFIGS:
        raise InputError(f"unknown launch configuration {config_name!r}")
    with _StopOnSignal() as stop:
        procs = spawn_processes(LAUNCH_CONFIGS[config_name], config, launch_args)
        _maybe_rviz(launch_args)
        try:
            while not stop.wait(0.5):
                dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
                if dead:
                    print(f"node(s) exited: {dead}; stopping the others", file=sys.stderr)
                    break
        finally:
            codes = stop_processes(procs)
    return 0 if all(c == 0 for c in codes.values()) else 1


def spin_node(factory, args=None) -> None:
    """``main()`` body of a node console script: init, spin, clean shutdown on SIGINT/SIGTERM.

    Errors a user can cause (bad parameter, missing map) print one line and exit with code 2.
    """
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = factory()
        freeze_startup_heap()
        node_executor(node).spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:  # a signal shut the context down while the executor was waiting
        pass
    except BronchoNavError as exc:
        print(f"{getattr(factory, '__name__', 'node')}: error: {exc}", file=sys.stderr)
        code = 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(code)
