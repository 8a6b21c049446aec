"""Record ROS 2 topics to an MCAP file (the ``ros2`` profile that Foxglove and rosbag2 read).

Messages are received serialized (``raw=True`` subscriptions: the CDR bytes as sent) and written
unchanged, with each type's full message definition (the ``.msg`` text and its dependencies,
``ros2msg`` schema encoding) read from the installed message packages' ``share/<pkg>/msg``.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap.writer import CompressionType, Writer
from rclpy.node import Node

from bronchonav.errors import InputError

PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
              "int32", "uint32", "int64", "uint64", "string", "wstring"}
SEPARATOR = "=" * 80


def _msg_file(package: str, name: str) -> Path:
    roots = [Path(sys.prefix) / "share"]
    roots += [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for root in roots:
        path = root / package / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    raise InputError(f"message definition {package}/msg/{name}.msg not found in "
                     f"{', '.join(map(str, roots))}")


def _field_types(text: str, package: str) -> list[tuple[str, str]]:
    """(package, name) of every non-primitive field type in a .msg text."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        ftype = line.split()[0]  # constants are primitives, filtered below
        base = re.sub(r"\[.*\]$", "", ftype)
        base = re.sub(r"<=\d+$", "", base)
        if base in PRIMITIVES:
            continue
        if "/" in base:
            parts = base.split("/")
            out.append((parts[0], parts[-1]))
        elif base == "Header":
            out.append(("std_msgs", "Header"))
        else:
            out.append((package, base))
    return out


def message_definition(type_name: str) -> str:
    """The full ``ros2msg`` definition of ``pkg/msg/Type``: its text, then each dependency's.

    Dependencies follow in depth-first order, each after a line of 80 ``=`` and a
    ``MSG: pkg/Type`` line (the layout rosbag2 and Foxglove read).
    """
    package, _, name = type_name.split("/")
    main = _msg_file(package, name).read_text()
    seen: set[tuple[str, str]] = set()
    parts: list[str] = []

    def visit(pkg: str, text: str) -> None:
        for dep in _field_types(text, pkg):
            if dep in seen:
                continue
            seen.add(dep)
            dep_text = _msg_file(*dep).read_text()
            parts.append(f"{SEPARATOR}\nMSG: {dep[0]}/{dep[1]}\n{dep_text.strip()}\n")
            visit(dep[0], dep_text)

    visit(package, main)
    return main.strip() + "\n" + "".join(parts)


def type_name(msg_class) -> str:
    """``pkg/msg/Type`` of a generated message class."""
    module = msg_class.__module__.split(".")
    return f"{module[0]}/msg/{msg_class.__name__}"


class McapRecorder(Node):
    """Subscribe to topics and write every message to an MCAP file.

    Parameters
    ----------
    path : str or Path
        Output ``.mcap`` file (its folder is created).
    topics : dict
        ``{topic: (message class, QoS profile)}``.
    node_name : str
        Name of the recorder node.
    **kwargs
        Passed to :class:`rclpy.node.Node`.

    Call :meth:`close` to finish the file (it is unreadable until then).
    """

    def __init__(self, path, topics: dict, node_name: str = "mcap_recorder", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="bronchonav mcap_recorder")
        self._lock = threading.Lock()
        self._closed = False
        self.counts: dict[str, int] = {}
        schemas: dict[str, int] = {}
        for topic, (cls, qos_profile) in topics.items():
            tname = type_name(cls)
            if tname not in schemas:
                schemas[tname] = self._writer.register_schema(
                    tname, SchemaEncoding.ROS2, message_definition(tname).encode())
            channel = self._writer.register_channel(topic, MessageEncoding.CDR, schemas[tname])
            self.counts[topic] = 0
            self.create_subscription(cls, topic, self._callback(topic, channel), qos_profile,
                                     raw=True)

    def _callback(self, topic: str, channel: int):
        def write(data: bytes) -> None:
            now = time.time_ns()
            with self._lock:
                if self._closed:
                    return
                self._writer.add_message(channel, log_time=now, data=bytes(data),
                                         publish_time=now, sequence=self.counts[topic])
                self.counts[topic] += 1
        return write

    def close(self) -> dict:
        """Finish the file; return the message count per topic."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._writer.finish()
                self._file.close()
        return dict(self.counts)
