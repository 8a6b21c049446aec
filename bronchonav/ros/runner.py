"""Start BronchoNav nodes without the ROS 2 launch system: one process or child processes.

The launch configurations ``plan``, ``hil`` and ``sim`` (nodes, arguments, which nodes are
required) come from :mod:`bronchonav.ros.launch_spec`, the table ``launch/*.launch.py`` read too:

- ``plan``: airway_map_server, route_planner
- ``hil``: airway_map_server, catheter_sim, route_planner, registration, tip_camera (an external
  controller drives ``catheter/command`` or ``catheter/joint_command``)
- ``sim``: everything in ``hil`` plus the built-in ``navigator``

:class:`InProcessGraph` builds the node objects in this process and spins each on an executor of
its own in a background thread; :func:`spawn_processes` starts each node as its own process with
``--ros-args --params-file``. :func:`run_processes` behaves as ``ros2 launch`` does: when a
required node exits, the others are stopped. SIGINT or SIGTERM stops everything cleanly (exit
code 0). robot_state_publisher and RViz are started when installed (ament index), otherwise a
one-line message says so.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bronchonav.errors import BronchoNavError, InputError
from bronchonav.ros import launch_spec
from bronchonav.ros.launch_spec import NODES, resolve_arguments
from bronchonav.ros.params import start_niceness

NODE_CLASSES = {name: spec.node_class for name, spec in NODES.items()}
"""Node name (= console script = YAML section) → ``"module:Class"`` (from the launch table)."""

LAUNCH_CONFIGS = {name: list(c.nodes) for name, c in launch_spec.LAUNCH_CONFIGS.items()}
"""Launch configuration → node names, as ``launch/<name>.launch.py`` starts them."""


_OWN_PROCESS_GROUP = ({"process_group": 0} if sys.version_info >= (3, 11)
                      else {"preexec_fn": os.setpgrp})
"""Popen arguments that start a child in a process group of its own, in this session."""

IN_PROCESS_OVERRIDES = {name: {"nice": 0} for name in
                        ("airway_map_server", "route_planner", "registration", "tip_camera")}
"""Parameters that differ when nodes share one process: niceness is per process, and a
best-effort node's would slow the catheter loop beside it."""


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
                    launch_args: dict | None = None, extra: dict | None = None,
                    namespace: str = "/") -> dict:
    """A node's parameters: the YAML file's section, then launch arguments, then ``extra``.

    ``launch_args`` may hold ``map`` (applied to the map-using nodes) and ``rate`` (the
    catheter_sim ``rate_hz``), checked and applied as the launch files do
    (:func:`bronchonav.ros.launch_spec.node_overrides`); None or empty values are unset.
    """
    from bronchonav.ros.params import load_yaml_params

    values = load_yaml_params(config or default_config(), node_name, namespace)
    given = {k: v for k, v in (launch_args or {}).items() if v not in (None, "")}
    values.update(launch_spec.node_overrides(
        node_name,
        launch_spec.check_map(given["map"]) if "map" in given else None,
        launch_spec.check_rate(given["rate"]) if "rate" in given else None))
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

    A stop signal during start-up shuts the context down (rclpy's handler), and an executor
    built on it raises ``RCLError`` half-built; rclpy's ``__del__`` then reads an attribute its
    ``__init__`` had not set yet, which printed an "Exception ignored" traceback on a clean
    Ctrl-C. The attribute is set beforehand, so that ``__del__`` has nothing to release.
    """
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor.__new__(SingleThreadedExecutor)
    executor._sigint_gc = None
    executor.__init__(context=context)
    executor.add_node(node)
    return executor


def _spin(executor, stopping: threading.Event) -> None:
    from rclpy._rclpy_pybind11 import InvalidHandle, RCLError
    from rclpy.executors import ExternalShutdownException

    try:
        executor.spin()
    except (ExternalShutdownException, RCLError):  # the context was shut down under us
        pass
    except InvalidHandle:  # a callback finished while stop() destroyed the executor's guard
        if not stopping.is_set():
            raise


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
    namespace : str, optional
        Namespace of every node (default the root); topics are relative, so they move with it.

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, node_names, config=None, launch_args=None, extra=None,
                 context=None, namespace: str = "/") -> None:
        self.node_names = list(node_names)
        self.namespace = namespace
        self.config = config
        self.launch_args = launch_args or {}
        self.extra = extra or {}
        self.context = context
        self.nodes: dict = {}
        self._executors: list = []
        self._spinning: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self) -> "InProcessGraph":
        """Create the nodes (in order) and start spinning them in background threads."""
        from bronchonav.ros.params import overrides

        self._stopping.clear()
        try:
            for name in self.node_names:
                values = node_parameters(name, self.config, self.launch_args,
                                         {**IN_PROCESS_OVERRIDES.get(name, {}),
                                          **self.extra.get(name, {})}, self.namespace)
                kwargs = {"parameter_overrides": overrides(values), "namespace": self.namespace}
                if self.context is not None:
                    kwargs["context"] = self.context
                self.nodes[name] = node_class(name)(**kwargs)
        except BaseException:
            self._destroy_nodes()
            raise
        # a fixed-rate loop in this process (catheter_sim's) must not see a full collection
        # walk every node's start-up objects: move them out of the collector's reach
        from bronchonav.catheter.runtime.loop import freeze_startup_heap

        freeze_startup_heap()
        for node in self.nodes.values():
            self.spin(node)
        return self

    def spin(self, node) -> None:
        """Spin ``node`` (one of the graph's, or another node of the same context) on an
        executor of its own until :meth:`stop`; the caller still owns a node it added."""
        executor = node_executor(node, self.context)
        thread = threading.Thread(target=_spin, args=(executor, self._stopping), daemon=True,
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
        self._stopping.set()
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

    The arguments are checked before anything starts (:class:`InputError` names a bad one). The
    signal handlers are installed before the nodes are built, so a signal during start-up also
    ends in a clean shutdown.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    values = resolve_arguments(config_name, _with_params_file(launch_args, config))
    ensure_local_ros_env()
    names = list(values.config.nodes)
    with _StopOnSignal() as stop:
        rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
        tools: dict = {}
        try:
            with InProcessGraph(names, values.params_file, _node_args(values),
                                namespace=values.namespace):
                print(f"bronchonav {config_name}: running {', '.join(names)} in one process "
                      f"(domain {os.environ['ROS_DOMAIN_ID']}, namespace {values.namespace}); "
                      "Ctrl-C to stop", file=sys.stderr, flush=True)
                tools = start_tools(values)
                while not stop.wait(0.5):
                    pass
        finally:
            stop_processes(tools)
            rclpy.try_shutdown()
    return 0


def _with_params_file(launch_args, config) -> dict:
    args = dict(launch_args or {})
    if config is not None:
        args["params_file"] = str(config)
    return args


def _node_args(values) -> dict:
    """The checked ``map`` / ``rate`` as launch_args for :func:`node_parameters`."""
    return {"map": values.map, "rate": values.rate_hz}


def _ros_executable(package: str, executable: str) -> Path | None:
    """``<prefix>/lib/<package>/<executable>`` of an installed ROS package, or None."""
    prefix = launch_spec.package_prefix(package)
    if prefix is None:
        return None
    path = prefix / "lib" / package / executable
    return path if path.is_file() else None


def start_tools(values) -> dict:
    """Start robot_state_publisher and RViz as the launch files do; ``{name: Popen}``.

    A tool that is not installed is skipped with the same one-line message as the launch files.
    """
    from bronchonav.ros.resources import data_file

    wanted = []
    if values.config.robot_model and values.robot_state_publisher:
        args = []  # not installed: the loop below says so
        if _ros_executable("robot_state_publisher", "robot_state_publisher") is not None:
            import yaml

            from bronchonav.fileio import write_text

            # one file per user, rewritten atomically (the same content every time)
            params = Path(tempfile.gettempdir()) / \
                f"bronchonav_{os.getuid()}_robot_description.yaml"
            write_text(params, yaml.safe_dump({"/**": {"ros__parameters": {
                "robot_description": data_file("urdf/bronchoscope.urdf").read_text()}}}))
            args = ["--ros-args", "--params-file", str(params)]
        wanted.append(("robot_state_publisher", "robot_state_publisher", args))
    if values.rviz:
        wanted.append(("rviz2", "rviz2", ["-d", str(data_file("config/bronchonav.rviz")),
                                           "--ros-args"]))
    procs = {}
    for package, executable, args in wanted:
        path = _ros_executable(package, executable)
        if path is None:
            print(launch_spec.missing_tool_message(package), file=sys.stderr, flush=True)
            continue
        if values.namespace != "/":
            args = args + ["-r", f"__ns:={values.namespace}"]
        procs[package] = subprocess.Popen([str(path), *args], **_OWN_PROCESS_GROUP)
    return procs


def node_command(node_name: str, config=None, launch_args=None, extra=None,
                 namespace: str = "/") -> list[str]:
    """The command line that starts ``node_name`` as a process with its parameters.

    The parameter file is passed with ``--params-file``; the launch arguments (``map``, ``rate``)
    and ``extra`` as ``-p`` overrides after it.
    """
    if node_name not in NODES:
        raise InputError(f"unknown node {node_name!r} (known: {', '.join(NODES)})")
    cmd = [sys.executable, "-m", "bronchonav.ros.node_main", node_name, "--ros-args",
           "--params-file", str(config or default_config())]
    if namespace != "/":
        cmd += ["-r", f"__ns:={namespace}"]
    given = {k: v for k, v in (launch_args or {}).items() if v not in (None, "")}
    values = launch_spec.node_overrides(
        node_name, launch_spec.check_map(given["map"]) if "map" in given else None,
        launch_spec.check_rate(given["rate"]) if "rate" in given else None)
    values.update(extra or {})
    for key, value in values.items():
        cmd += ["-p", f"{key}:={_ros_arg(value)}"]
    return cmd


def _ros_arg(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(float(v)) for v in value) + "]"
    return str(value)


def spawn_processes(node_names, config=None, launch_args=None, extra=None,
                    namespace: str = "/", own_session: bool = True) -> dict:
    """Start each node as a child process; return ``{name: Popen}``.

    A terminal's Ctrl-C reaches the runner only (see :func:`stop_processes`): each child runs in
    a session of its own, or with ``own_session`` false in a process group of its own in the
    runner's session, as ``ros2 launch`` keeps its nodes together. Where the kernel shares the
    CPU between sessions (autogroup, most desktop Linux) that decides the nodes' shares: a
    session per node gives each node the same share whatever its ``nice``; in one session the
    best-effort nodes' ``nice`` (map server, planner, registration, camera) lets the simulator
    go first. A node with a ``nice`` parameter starts at that niceness (``nice -n``, as the
    launch files start it), so it gives way while it imports too. The children stop when this
    process dies, by any signal (:mod:`bronchonav.ros.node_main`): call this from the thread
    that lives as long as they should (the kernel ties them to the calling thread).
    """
    from bronchonav.ros.node_main import PARENT_PID_ENV

    ensure_local_ros_env()
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
    procs = {}
    for name in node_names:
        node_extra = (extra or {}).get(name)
        niceness = start_niceness(node_parameters(name, config, launch_args, node_extra,
                                                  namespace))
        procs[name] = subprocess.Popen(
            launch_spec.niceness_prefix(niceness)
            + node_command(name, config, launch_args, node_extra, namespace), env=env,
            **({"start_new_session": True} if own_session else _OWN_PROCESS_GROUP))
    return procs


def stop_processes(procs: dict, timeout: float = 10.0) -> dict:
    """SIGTERM every child, wait, SIGKILL stragglers; return ``{name: exit code}``.

    Each child runs in a session or process group of its own (:func:`spawn_processes`): a
    terminal's Ctrl-C reaches the runner only, and this SIGTERM is the one signal a child gets
    (a second one during a node's start-up or teardown would end it untidily). Nothing waits
    for a child to stop by itself first: none was signalled.
    """
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
    """Run a launch configuration as child processes until SIGINT/SIGTERM or a required node
    exits (as ``ros2 launch`` with ``on_exit=Shutdown``); return the exit code.

    0 when stopped by a signal and every node exited cleanly; 1 when a required node exited by
    itself or a node ended with a non-zero code.
    """
    values = resolve_arguments(config_name, _with_params_file(launch_args, config))
    names = list(values.config.nodes)
    with _StopOnSignal() as stop:
        procs = spawn_processes(names, values.params_file, _node_args(values),
                                namespace=values.namespace, own_session=False)
        tools = start_tools(values)
        print(f"bronchonav {config_name}: started {', '.join(names)} as processes (domain "
              f"{os.environ['ROS_DOMAIN_ID']}, namespace {values.namespace}); Ctrl-C to stop",
              file=sys.stderr, flush=True)
        failed = False
        reported: set = set()
        try:
            while not stop.wait(0.2):
                for name, p in procs.items():
                    if p.poll() is not None and name not in reported:
                        reported.add(name)
                        print(f"{name} exited with code {p.returncode}", file=sys.stderr,
                              flush=True)
                        failed = failed or p.returncode != 0 or NODES[name].required
                required = [n for n in reported if NODES[n].required]
                if required:
                    print(f"required node {required[0]} exited: stopping the others",
                          file=sys.stderr, flush=True)
                    break
        finally:
            codes = stop_processes({**procs, **tools})
    bad = {n: codes[n] for n in procs if codes[n] != 0}
    for name, code in bad.items():
        print(f"{name} ended with exit code {code}", file=sys.stderr, flush=True)
    return 1 if failed or bad else 0


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, a KeyboardInterrupt (a signal during
    start-up can surface as another error, e.g. a C extension's import failing under it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def with_default_params_file(argv: list[str]) -> list[str]:
    """``argv`` with the installed ``config/bronchonav.yaml`` as the first parameter file when no
    ``--params-file`` is given, so ``ros2 run bronchonav NODE`` uses the same defaults as the
    launch files. Later ``--params-file`` and ``-p`` arguments override it (rcl applies them in
    order)."""
    if "--params-file" in argv:
        return list(argv)
    return [argv[0], "--ros-args", "--params-file", str(default_config()), "--", *argv[1:]]


def spin_node(factory, args=None, exit_code=None) -> None:
    """``main()`` body of a node console script: init, spin, clean shutdown on SIGINT/SIGTERM.

    As in ros2/examples: rclpy's signal handlers shut the context down and wake the executor,
    which ends with ExternalShutdownException (or KeyboardInterrupt: SIGTERM is made to raise it
    too, so a signal during a long start-up also ends it). A second signal during teardown (a
    terminal's Ctrl-C reaches the whole process group) is ignored. Exit code 0 then; errors a
    user can cause (bad parameter, missing map) print one line and exit with code 2. A node
    whose construction a signal interrupted may be left half-built inside rclpy; that the
    context's cleanup then fails on it is not reported. Once the node is destroyed and rclpy
    shut down the process ends at once (:func:`exit_without_finalization`).

    Nothing heavy is imported here, so a node's process loads only what its node uses (a node
    with a fixed-rate loop freezes its start-up heap itself, as catheter_sim does).

    Parameters
    ----------
    factory : callable
        Builds the node (after ``rclpy.init``); its ``__name__`` names the node in messages.
    args : list of str, optional
        Command line (default ``sys.argv``).
    exit_code : callable, optional
        ``exit_code(node) -> int``, called when the node stopped cleanly and before it is
        destroyed: non-zero when the node ended on an error of its own (it says why).
    """
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # rclpy chains to it
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import ExternalShutdownException

    argv = with_default_params_file(sys.argv if args is None else list(args))
    name = getattr(factory, "__name__", "node")
    node = None
    code = 0
    try:
        rclpy.init(args=argv)
        node = factory()
        node_executor(node).spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:  # a signal shut the context down while the executor was waiting
        pass
    except BronchoNavError as exc:
        if rclpy.ok():  # not an error a shutdown signal caused during start-up
            print(f"{name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
            code = 2
    except Exception as exc:
        if not (_interrupted(exc) or not rclpy.ok()):
            raise
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        try:
            if node is not None:
                if code == 0 and exit_code is not None:
                    code = exit_code(node)
                node.destroy_node()
        finally:
            try:
                rclpy.try_shutdown()
            except Exception:
                # a signal interrupted the node's construction inside rclpy (seen: between a
                # subscription and its event handlers); the context's cleanup of that half-built
                # node then fails, and the process is ending on the signal anyway
                if node is not None:
                    raise
    exit_without_finalization(code)


def exit_without_finalization(code: int) -> None:
    """End the process with ``code`` after flushing Python's logging and standard streams,
    without the interpreter's finalization (a node process, and the command line after a
    command that ran ROS in its process). The nodes and rclpy are shut down by then; what
    finalization would add is extension modules' teardown: open3d's C++ destructors print
    allocation statistics and, after a stop signal interrupted open3d during start-up, were seen
    to end the process with status 1 instead of 0."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
