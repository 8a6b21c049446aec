"""The launch configurations as data: which nodes each starts, which arguments it takes.

One table read by both front-ends, so the two never disagree:

- ``launch/{plan,hil,sim}.launch.py`` (``ros2 launch bronchonav sim.launch.py``) call
  :func:`launch_description`, which turns the table into launch actions;
- :mod:`bronchonav.ros.runner` (``bronchonav launch sim``, no ROS 2 launch install needed) starts
  the same nodes in one process or as child processes.

Arguments arrive as strings (``map:=... rate:=200``); :func:`resolve_arguments` checks every one
before any node starts and raises :class:`~bronchonav.errors.InputError` naming the argument.
Node defaults live in one place, the parameter file ``config/bronchonav.yaml``: an argument left
empty (``map``, ``rate``) keeps the file's value.

Apart from :func:`launch_description` (which imports ``launch`` and ``launch_ros``) this module
imports nothing from ROS.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from bronchonav.errors import InputError

PACKAGE = "bronchonav"


@dataclass(frozen=True)
class NodeSpec:
    """One BronchoNav node of a launch configuration.

    Attributes
    ----------
    name : str
        Node name = console script (``ros2 run bronchonav NAME``) = section of the parameter file.
    node_class : str
        ``"module:Class"`` of the rclpy node, for the in-process runner.
    uses_map : bool
        Takes the ``map`` launch argument (its ``map`` parameter).
    required : bool
        The whole launch ends when this node exits (``on_exit=Shutdown``): the graph is useless
        without it.
    """

    name: str
    node_class: str
    uses_map: bool
    required: bool = False

    @property
    def module(self) -> str:
        """The node's module; its ``main`` runs the node (started through
        :mod:`bronchonav.ros.node_main`)."""
        return self.node_class.split(":")[0]


NODES = {s.name: s for s in [
    NodeSpec("airway_map_server", "bronchonav.ros.map_server_node:MapServerNode", True,
             required=True),
    NodeSpec("catheter_sim", "bronchonav.ros.catheter_sim_node:CatheterSimNode", True,
             required=True),
    NodeSpec("route_planner", "bronchonav.ros.route_planner_node:RoutePlannerNode", True),
    NodeSpec("registration", "bronchonav.ros.registration_node:RegistrationNode", True),
    NodeSpec("navigator", "bronchonav.ros.navigator_node:NavigatorNode", True),
    NodeSpec("tip_camera", "bronchonav.ros.tip_camera_node:TipCameraNode", True),
]}
"""Every BronchoNav node, by name."""


@dataclass(frozen=True)
class LaunchArgument:
    """One launch argument (``name:=value``); the value is always given as a string.

    Attributes
    ----------
    name : str
        Argument name.
    default : str
        Default value (``""`` = keep the parameter file's value).
    description : str
        What it does (shown by ``ros2 launch -s`` and the README table).
    """

    name: str
    default: str
    description: str


RATE_RANGE_HZ = (1.0, 2000.0)
"""Allowed ``rate`` (Hz): the bounds of catheter_sim's ``rate_hz`` parameter."""

ARGUMENTS = {a.name: a for a in [
    LaunchArgument("map", "", "Map folder (absolute, or relative to the working directory or the "
                   "package share directory) or phantom:NAME to build a phantom's map on start; "
                   "empty = the parameter file's map (maps/phantom_default)"),
    LaunchArgument("rate", "", "catheter_sim loop rate in Hz (1 to 2000); empty = the parameter "
                   "file's rate_hz (200)"),
    LaunchArgument("rviz", "true", "Start RViz with config/bronchonav.rviz (true/false); skipped "
                   "with a message when rviz2 is not installed"),
    LaunchArgument("robot_state_publisher", "true", "Start robot_state_publisher with "
                   "urdf/bronchoscope.urdf (true/false); skipped with a message when it is not "
                   "installed"),
    LaunchArgument("namespace", "", "ROS namespace of every node, e.g. cath2 for a second "
                   "catheter (topics are relative, so they move with it); empty = root"),
    LaunchArgument("params_file", "", "ROS 2 parameter YAML for the BronchoNav nodes; empty = "
                   "the installed config/bronchonav.yaml"),
]}
"""Every launch argument, by name."""


@dataclass(frozen=True)
class LaunchConfig:
    """A launch configuration.

    Attributes
    ----------
    name, description : str
        ``launch/<name>.launch.py`` and what it is for.
    nodes : tuple of str
        Its BronchoNav nodes, in start order.
    arguments : tuple of str
        Its launch arguments (names in :data:`ARGUMENTS`).
    robot_model : bool
        Whether it starts robot_state_publisher (the configurations with a catheter).
    """

    name: str
    description: str
    nodes: tuple[str, ...]
    arguments: tuple[str, ...]
    robot_model: bool = False


_COMMON = ("map", "rviz", "namespace", "params_file")
LAUNCH_CONFIGS = {c.name: c for c in [
    LaunchConfig("plan", "Planning only: the map server and the route planner",
                 ("airway_map_server", "route_planner"), _COMMON),
    LaunchConfig("hil", "Hardware in the loop: everything but the navigator, for an external "
                 "controller on catheter/command or catheter/joint_command",
                 ("airway_map_server", "catheter_sim", "route_planner", "registration",
                  "tip_camera"), _COMMON + ("rate", "robot_state_publisher"), robot_model=True),
    LaunchConfig("sim", "Full simulation: hil plus the built-in navigator",
                 ("airway_map_server", "catheter_sim", "route_planner", "registration",
                  "navigator", "tip_camera"), _COMMON + ("rate", "robot_state_publisher"),
                 robot_model=True),
]}
"""Every launch configuration, by name (``launch/NAME.launch.py``)."""


@dataclass(frozen=True)
class LaunchValues:
    """Checked launch arguments of one configuration.

    Attributes
    ----------
    config : LaunchConfig
        The configuration.
    map : str or None
        Map folder (absolute) or ``phantom:NAME``; None = the parameter file's.
    rate_hz : float or None
        catheter_sim loop rate (Hz); None = the parameter file's.
    rviz, robot_state_publisher : bool
        Start the optional tools.
    namespace : str
        Absolute namespace (``/`` for the root).
    params_file : Path
        The parameter YAML.
    """

    config: LaunchConfig
    map: str | None
    rate_hz: float | None
    rviz: bool
    robot_state_publisher: bool
    namespace: str
    params_file: Path

    def node_overrides(self, node_name: str) -> dict:
        """Parameters the arguments set on ``node_name`` (on top of the parameter file)."""
        return node_overrides(node_name, self.map, self.rate_hz)


def node_overrides(node_name: str, map_spec: str | None = None,
                   rate_hz: float | None = None) -> dict:
    """Parameters that the ``map`` and ``rate`` arguments set on ``node_name`` (None = unset)."""
    values: dict = {}
    if map_spec is not None and NODES[node_name].uses_map:
        values["map"] = map_spec
    if rate_hz is not None and node_name == "catheter_sim":
        values["rate_hz"] = float(rate_hz)
    return values


_NAMESPACE = re.compile(r"^/?([A-Za-z_][A-Za-z0-9_]*)(/[A-Za-z_][A-Za-z0-9_]*)*/?$")


def _bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise InputError(f"launch argument {name}:={text!r} must be true or false")


def _map(text: str) -> str:
    from bronchonav.ros.resources import PHANTOM_PREFIX, resolve_map

    if text.startswith(PHANTOM_PREFIX):
        from bronchonav.ct.phantom import phantom_config

        try:
            phantom_config(text[len(PHANTOM_PREFIX):])
        except InputError as exc:
            raise InputError(f"launch argument map:={text}: {exc}") from None
        return text
    try:
        folder = resolve_map(text)
    except InputError as exc:
        raise InputError(f"launch argument map:={text}: {exc}") from None
    if not Path(folder).is_dir():
        raise InputError(f"launch argument map:={text}: no such map folder")
    return folder


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise InputError(f"launch argument rate:={text!r} must be a number of Hz "
                         f"({RATE_RANGE_HZ[0]:g} to {RATE_RANGE_HZ[1]:g})") from None
    if not RATE_RANGE_HZ[0] <= rate <= RATE_RANGE_HZ[1]:  # also refuses nan
        raise InputError(f"launch argument rate:={text} is outside {RATE_RANGE_HZ[0]:g} to "
                         f"{RATE_RANGE_HZ[1]:g} Hz")
    return rate


def _namespace(text: str) -> str:
    if text in ("", "/"):
        return "/"
    if not _NAMESPACE.match(text):
        raise InputError(f"launch argument namespace:={text!r} is not a ROS namespace (letters, "
                         "digits and underscores, not starting with a digit, separated by /)")
    return "/" + text.strip("/")


def _params_file(text: str) -> Path:
    if not text:
        from bronchonav.ros.resources import data_file

        return data_file("config/bronchonav.yaml")
    path = Path(text).expanduser()
    if not path.is_file():
        raise InputError(f"launch argument params_file:={text}: no such file")
    return path.resolve()


def check_map(text: str) -> str:
    """The ``map`` argument checked: ``phantom:NAME`` of a known phantom, or an absolute folder."""
    return _map(str(text))


def check_rate(value) -> float:
    """The ``rate`` argument checked (Hz, within :data:`RATE_RANGE_HZ`)."""
    return _rate(str(value))


def niceness_prefix(niceness: int) -> list[str]:
    """The command prefix that starts a node's process at ``niceness`` (relative to the
    launcher's; none for 0): ``nice -n N``, as ``launch_ros`` ``Node(prefix=...)`` and the
    project's runner both use it (:func:`bronchonav.ros.params.start_niceness`)."""
    return ["nice", "-n", str(int(niceness))] if niceness > 0 else []


def missing_tool_message(package: str) -> str:
    """What a launch says when an optional tool (robot_state_publisher, rviz2) is missing."""
    argument = "rviz" if package == "rviz2" else package
    return (f"{package} is not installed: not started (install "
            f"ros-$ROS_DISTRO-{package.replace('_', '-')}, or pass {argument}:=false)")


def resolve_arguments(config_name: str, given: dict | None = None) -> LaunchValues:
    """Check the arguments of launch configuration ``config_name``.

    Parameters
    ----------
    config_name : str
        ``plan``, ``hil`` or ``sim``.
    given : dict, optional
        ``{argument: value}`` as strings (launch) or plain values (the CLI); a missing or None
        value takes the argument's default.

    Raises
    ------
    InputError
        Unknown configuration or argument, or a value that is malformed or names a missing file
        (the message names the argument).
    """
    if config_name not in LAUNCH_CONFIGS:
        raise InputError(f"unknown launch configuration {config_name!r} "
                         f"(known: {', '.join(LAUNCH_CONFIGS)})")
    config = LAUNCH_CONFIGS[config_name]
    raw = {name: ARGUMENTS[name].default for name in config.arguments}
    for name, value in (given or {}).items():
        if name not in raw:
            raise InputError(f"{config_name} takes no launch argument {name!r} "
                             f"(it takes: {', '.join(config.arguments)})")
        if value is not None:
            raw[name] = (("true" if value else "false") if isinstance(value, bool)
                         else str(value))
    return LaunchValues(
        config=config,
        map=_map(raw["map"]) if raw.get("map") else None,
        rate_hz=_rate(raw["rate"]) if raw.get("rate") else None,
        rviz=_bool("rviz", raw["rviz"]),
        robot_state_publisher=(_bool("robot_state_publisher", raw["robot_state_publisher"])
                               if "robot_state_publisher" in raw else False),
        namespace=_namespace(raw["namespace"]),
        params_file=_params_file(raw["params_file"]))


# -- the ros2 launch front-end ------------------------------------------------------------------

def package_prefix(package: str) -> Path | None:
    """The install prefix of ROS package ``package`` from the ament index, or None."""
    if not os.environ.get("AMENT_PREFIX_PATH"):
        return None
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        return Path(get_package_prefix(package))
    except PackageNotFoundError:
        return None


def _launch_actions(context, config_name: str) -> list:
    """The actions of ``config_name`` for the arguments in ``context`` (an OpaqueFunction)."""
    from launch.actions import LogInfo, Shutdown
    from launch_ros.actions import Node

    from bronchonav.ros.params import load_yaml_params, start_niceness

    config = LAUNCH_CONFIGS[config_name]
    given = {name: context.launch_configurations.get(name) for name in config.arguments}
    values = resolve_arguments(config_name, given)  # raises before any process starts
    # relative (or None for the root), so that it nests in an including file's namespace
    namespace = values.namespace.strip("/") or None
    actions = []
    for name in config.nodes:
        spec = NODES[name]
        overrides = values.node_overrides(name)
        niceness = start_niceness({**load_yaml_params(values.params_file, name,
                                                      values.namespace), **overrides})
        actions.append(Node(
            package=PACKAGE, executable=name, name=name, namespace=namespace, output="screen",
            parameters=[str(values.params_file)] + ([overrides] if overrides else []),
            prefix=" ".join(niceness_prefix(niceness)) or None,
            on_exit=Shutdown(reason=f"{name} exited (a required node)") if spec.required
            else None))
    from bronchonav.ros.resources import data_file

    tools = []
    if config.robot_model and values.robot_state_publisher:
        tools.append(("robot_state_publisher", lambda: Node(
            package="robot_state_publisher", executable="robot_state_publisher",
            name="robot_state_publisher", namespace=namespace, output="screen",
            parameters=[{"robot_description": data_file("urdf/bronchoscope.urdf").read_text()}])))
    if values.rviz:
        tools.append(("rviz2", lambda: Node(
            package="rviz2", executable="rviz2", name="rviz2", namespace=namespace,
            arguments=["-d", str(data_file("config/bronchonav.rviz"))])))
    for package, make in tools:
        if package_prefix(package) is not None:
            actions.append(make())
        else:
            actions.append(LogInfo(msg=missing_tool_message(package)))
    return actions


def launch_description(config_name: str):
    """The ``LaunchDescription`` of ``launch/<config_name>.launch.py``.

    Declares the configuration's arguments, then one ``OpaqueFunction`` that checks them (an
    exception with a one-line reason before any node starts) and returns the node actions, the
    required ones with ``on_exit=Shutdown``.
    """
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    config = LAUNCH_CONFIGS[config_name]
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=ARGUMENTS[name].default,
                               description=ARGUMENTS[name].description)
         for name in config.arguments]
        + [OpaqueFunction(function=_launch_actions, args=[config_name])])
