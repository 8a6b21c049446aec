"""Declared, described and validated node parameters, and the shared YAML parameter file.

Each node lists its parameters as :class:`Param` specs; :func:`declare` declares them on the node
with a description (shown by ``ros2 param describe``), reads the values (from the launch file's
YAML or ``parameter_overrides``) and validates them, raising :class:`~bronchonav.errors.InputError`
naming the parameter when a value is out of range. Parameters are read-only after start-up unless
declared ``dynamic``.

The one parameter file ``config/bronchonav.yaml`` uses the ROS 2 layout
``node_name: {ros__parameters: {...}}`` (with an optional ``/**`` section applying to every node);
:func:`load_yaml_params` reads it for the in-process runner the same way ``ros2 launch`` would.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from bronchonav.errors import InputError


@dataclass(frozen=True)
class Param:
    """One node parameter.

    Attributes
    ----------
    name : str
        Parameter name.
    default : bool, int, float, str or list of float
        Default value; its type is the parameter's type.
    description : str
        What it means, with its unit (SI).
    minimum, maximum : float or None
        Inclusive bounds for numbers (each element for lists).
    choices : tuple or None
        Allowed values for strings.
    dynamic : bool
        Settable at run time (``ros2 param set``); the node checks and applies the new value.
        Parameters are read-only otherwise.
    """

    name: str
    default: object
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    dynamic: bool = False

    def check(self, value):
        """Return ``value`` (ints promoted to float for float parameters) or raise InputError."""
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise InputError(f"parameter {self.name!r} must be true or false, got {value!r}")
            return value
        if isinstance(self.default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"parameter {self.name!r} must be a number, got {value!r}")
            if isinstance(self.default, int) and not isinstance(value, int):
                raise InputError(f"parameter {self.name!r} must be an integer, got {value!r}")
            self._check_range(value)
            return type(self.default)(value)
        if isinstance(self.default, str):
            if not isinstance(value, str):
                raise InputError(f"parameter {self.name!r} must be a string, got {value!r}")
            if self.choices is not None and value not in self.choices:
                raise InputError(f"parameter {self.name!r} must be one of {list(self.choices)}, "
                                 f"got {value!r}")
            return value
        values = [float(v) for v in value]
        for v in values:
            self._check_range(v)
        return values

    def _check_range(self, value: float) -> None:
        if not math.isfinite(value):
            raise InputError(f"parameter {self.name!r} must be finite, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise InputError(f"parameter {self.name!r} = {value!r} is below its minimum "
                             f"{self.minimum!r}")
        if self.maximum is not None and value > self.maximum:
            raise InputError(f"parameter {self.name!r} = {value!r} is above its maximum "
                             f"{self.maximum!r}")

    def describe(self) -> str:
        """The description with the allowed range appended."""
        text = self.description
        if self.minimum is not None or self.maximum is not None:
            text += f" [range {self.minimum if self.minimum is not None else '-inf'} .. " \
                    f"{self.maximum if self.maximum is not None else 'inf'}]"
        if self.choices:
            text += f" [one of {', '.join(map(str, self.choices))}]"
        return text


def nice_param(default: int = 10) -> Param:
    """The ``nice`` parameter of a best-effort node (map server, route planner, registration,
    tip camera): see :func:`give_way`."""
    return Param("nice", default,
                 "Niceness the process runs at, so that the scheduler serves the catheter "
                 "simulator and its solver first (0 = unchanged): the launchers start the "
                 "process at it (before its imports); started otherwise, the node raises its "
                 "niceness to it before the start-up work. The in-process runner sets 0 "
                 "(niceness applies to the whole process)",
                 minimum=0, maximum=19)


def give_way(niceness: int) -> None:
    """Run this process at niceness ``niceness`` or above: raise it when it is lower (it cannot
    be lowered again without privileges), leave it when a launcher started the process there
    already (:func:`start_niceness`): a best-effort node gives way to the catheter simulator."""
    current = os.nice(0)
    if niceness > current:
        os.nice(niceness - current)


def start_niceness(parameters: dict) -> int:
    """The niceness a launcher starts a node's process at, from the node's parameters (its
    ``nice``; 0 for a node without one): a best-effort node then gives way from its first
    instruction, while it imports rclpy, numpy and scipy, not only once its parameters are
    read (on two cores, five nodes importing beside the simulator delay its first state by
    seconds)."""
    value = parameters.get("nice", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 19:
        raise InputError(f"parameter nice must be an integer from 0 to 19, got {value!r}")
    return value


def declare(node, specs: list[Param]) -> dict:
    """Declare ``specs`` on an rclpy ``node`` (described; read-only unless ``dynamic``) and return
    validated values.

    Raises
    ------
    InputError
        If a value given by the launch file / overrides is of the wrong type or out of range.
    """
    from rcl_interfaces.msg import ParameterDescriptor

    values = {}
    for spec in specs:
        node.declare_parameter(spec.name, spec.default,
                               ParameterDescriptor(description=spec.describe(),
                                                   read_only=not spec.dynamic))
        values[spec.name] = spec.check(node.get_parameter(spec.name).value)
    return values


def defaults(specs: list[Param]) -> dict:
    """The default value of every spec, by name."""
    return {s.name: s.default for s in specs}


def load_yaml_params(path: str | Path, node_name: str, namespace: str = "/") -> dict:
    """Parameters for node ``node_name`` in ``namespace`` from a ROS 2 parameter YAML file.

    Sections apply as rcl applies them: ``/**`` to every node, then ``/**/NAME`` (the node in
    any namespace; the layout of ``config/bronchonav.yaml``, so that ``namespace:=cath2`` keeps
    the defaults), then ``NAME`` or ``/NAME`` (root namespace only) and ``/NS/NAME``, each
    overriding the previous. Raises :class:`InputError` if the file is missing or not in the
    ROS 2 layout.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must map node names to {{ros__parameters: ...}}")
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    keys = ["/**", f"/**/{node_name}", f"{ns}/{node_name}"]
    if not ns:
        keys.insert(2, node_name)
    out: dict = {}
    for key in keys:
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters", {}), dict):
            raise InputError(f"{path}: section {key!r} must hold a 'ros__parameters' mapping")
        out.update(section.get("ros__parameters") or {})
    return out


def yaml_node_name(key: str) -> str:
    """The node name of a parameter-file section key (``/**/catheter_sim`` → ``catheter_sim``)."""
    return key.rsplit("/", 1)[-1]


def overrides(values: dict) -> list:
    """``rclpy.parameter.Parameter`` objects for a Node's ``parameter_overrides`` argument."""
    from rclpy.parameter import Parameter

    return [Parameter(name, value=value) for name, value in values.items()]
