"""The launch configurations: the launch files, the XML front-end, the README table and the
project's own runner all follow one table (bronchonav/ros/launch_spec.py).

``launch`` and ``launch_ros`` are not installable here (not on PyPI), so the launch files are run
against a small recording stand-in of the few classes they use (DeclareLaunchArgument,
OpaqueFunction, LogInfo, Shutdown, Node): this checks what the files build, not the real launch
system's behaviour. The runner tests start real nodes and check the ROS graph.
"""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from bronchonav.errors import InputError
from bronchonav.ros import launch_spec
from bronchonav.ros.launch_spec import ARGUMENTS, LAUNCH_CONFIGS, NODES

ROOT = Path(__file__).resolve().parents[1]


class _Action:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def fake_launch(monkeypatch):
    """Recording stand-ins for the ``launch`` / ``launch_ros`` classes the launch files use."""
    classes = {name: type(name, (_Action,), {}) for name in
               ("LaunchDescription", "DeclareLaunchArgument", "OpaqueFunction", "LogInfo",
                "Shutdown", "Node")}
    modules = {
        "launch": {"LaunchDescription": classes["LaunchDescription"]},
        "launch.actions": {k: classes[k] for k in ("DeclareLaunchArgument", "OpaqueFunction",
                                                   "LogInfo", "Shutdown")},
        "launch_ros": {},
        "launch_ros.actions": {"Node": classes["Node"]},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    return classes


def _generate(name):
    spec = importlib.util.spec_from_file_location(f"launch_{name}", ROOT / "launch" /
                                                  f"{name}.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def _run_opaque(description, configurations):
    """Call the OpaqueFunction as ros2 launch would, with ``configurations`` set."""
    opaque = [a for a in description.args[0] if type(a).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    context = types.SimpleNamespace(launch_configurations=dict(configurations))
    return opaque[0].kwargs["function"](context, *opaque[0].kwargs.get("args", []))


def _defaults(name):
    return {a: ARGUMENTS[a].default for a in LAUNCH_CONFIGS[name].arguments}


@pytest.mark.parametrize("name", ["plan", "hil", "sim"])
def test_launch_file_declares_its_arguments_and_starts_the_table_nodes(name, fake_launch,
                                                                      monkeypatch):
    found = {"robot_state_publisher", "rviz2"}
    monkeypatch.setattr(launch_spec, "package_prefix",
                        lambda p: Path("/opt/ros/x") if p in found else None)
    description = _generate(name)
    declared = [a for a in description.args[0] if type(a).__name__ == "DeclareLaunchArgument"]
    assert [d.args[0] for d in declared] == list(LAUNCH_CONFIGS[name].arguments)
    for d in declared:
        assert d.kwargs["default_value"] == ARGUMENTS[d.args[0]].default
        assert len(d.kwargs["description"]) > 20

    actions = _run_opaque(description, _defaults(name) | {"namespace": "cath2"})
    nodes = [a.kwargs for a in actions if type(a).__name__ == "Node"]
    ours = [n for n in nodes if n["package"] == "bronchonav"]
    assert [n["name"] for n in ours] == list(LAUNCH_CONFIGS[name].nodes)
    # relative, so that it nests under an including launch file's push-ros-namespace
    assert all(n["executable"] == n["name"] and n["namespace"] == "cath2" for n in ours)
    config = yaml.safe_load((ROOT / "config" / "bronchonav.yaml").read_text())
    for n in ours:  # empty map/rate keep the parameter file's values: no overrides
        assert [Path(p) for p in n["parameters"]] == [ROOT / "config" / "bronchonav.yaml"]
        # a best-effort node starts at the file's niceness, the simulator and navigator at ours
        nice = config[f"/**/{n['name']}"]["ros__parameters"].get("nice", 0)
        assert n["prefix"] == (f"nice -n {nice}" if nice else None), n["name"]
        assert (n["prefix"] is None) == (n["name"] in ("catheter_sim", "navigator"))
        if NODES[n["name"]].required:
            assert type(n["on_exit"]).__name__ == "Shutdown"
        else:
            assert n["on_exit"] is None
    others = {n["package"] for n in nodes} - {"bronchonav"}
    assert others == ({"robot_state_publisher", "rviz2"} if name != "plan" else {"rviz2"})
    assert all(n["namespace"] == "cath2" for n in nodes)
    if name != "plan":
        rsp = next(n for n in nodes if n["package"] == "robot_state_publisher")
        assert rsp["parameters"][0]["robot_description"].startswith("<?xml")


def test_required_nodes_are_the_map_server_and_the_simulator():
    assert {n for n, s in NODES.items() if s.required} == {"airway_map_server", "catheter_sim"}


def test_the_map_argument_reaches_every_node_that_has_a_map_parameter():
    """A node that loads a map (a ``map`` parameter) must get the launch's ``map``: a navigator
    left on the parameter file's map steered its model through another patient's airways than
    the simulator's (found in the demo with ``--map``)."""
    for name, spec in NODES.items():
        declared = {p.name for p in importlib.import_module(spec.module).PARAMS}
        assert spec.uses_map == ("map" in declared), name
        overrides = launch_spec.node_overrides(name, "phantom:seed3")
        assert overrides.get("map") == ("phantom:seed3" if "map" in declared else None), name


def test_launch_arguments_reach_the_nodes(fake_launch, monkeypatch, tmp_path):
    monkeypatch.setattr(launch_spec, "package_prefix", lambda p: None)
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters: {}\n")
    actions = _run_opaque(_generate("hil"), _defaults("hil") | {
        "map": "phantom:default", "rate": "500", "params_file": str(params),
        "robot_state_publisher": "false", "rviz": "false"})
    nodes = {a.kwargs["name"]: a.kwargs for a in actions if type(a).__name__ == "Node"}
    assert set(nodes) == set(LAUNCH_CONFIGS["hil"].nodes)  # tools off: no messages either
    assert not [a for a in actions if type(a).__name__ == "LogInfo"]
    for name, n in nodes.items():
        assert n["parameters"][0] == str(params.resolve())
        expected = {"map": "phantom:default"} if NODES[name].uses_map else {}
        if name == "catheter_sim":
            expected["rate_hz"] = 500.0
        assert n["parameters"][1:] == ([expected] if expected else [])
        assert n["namespace"] is None  # the root, or the including file's namespace
        assert n["prefix"] is None  # this parameter file sets no niceness


def test_missing_tools_give_a_message_not_an_abort(fake_launch, monkeypatch):
    monkeypatch.setattr(launch_spec, "package_prefix", lambda p: None)  # nothing installed
    actions = _run_opaque(_generate("sim"), _defaults("sim"))
    messages = [a.kwargs["msg"] for a in actions if type(a).__name__ == "LogInfo"]
    assert len(messages) == 2
    assert "robot_state_publisher is not installed" in messages[0]
    assert "robot_state_publisher:=false" in messages[0]
    assert "rviz2 is not installed" in messages[1] and "rviz:=false" in messages[1]
    nodes = [a.kwargs["package"] for a in actions if type(a).__name__ == "Node"]
    assert set(nodes) == {"bronchonav"} and len(nodes) == len(LAUNCH_CONFIGS["sim"].nodes)


@pytest.mark.parametrize("argument, value, message", [
    ("rate", "fast", "rate:='fast' must be a number"),
    ("rate", "5000", "outside 1 to 2000 Hz"),
    ("rate", "nan", "outside"),
    ("rviz", "maybe", "rviz:='maybe' must be true or false"),
    ("map", "/no/such/map", "map:=/no/such/map"),
    ("map", "phantom:huge", "unknown phantom 'huge'"),
    ("namespace", "2cath", "not a ROS namespace"),
    ("params_file", "/no/such.yaml", "params_file:=/no/such.yaml: no such file"),
])
def test_bad_arguments_stop_the_launch_before_any_node(fake_launch, argument, value, message):
    description = _generate("sim")
    with pytest.raises(InputError, match=re.escape(message)):
        _run_opaque(description, _defaults("sim") | {argument: value})


def test_a_map_argument_may_name_the_maps_yaml_file():
    """``map:=…/map.yaml`` (as nav2's map server is given its YAML file) is the map's folder,
    the same absolute folder the nodes get for ``map:=…``; any other file is refused."""
    folder = ROOT / "maps" / "phantom_default"
    assert launch_spec._map(str(folder / "map.yaml")) == launch_spec._map(str(folder)) == \
        str(folder.resolve())
    with pytest.raises(InputError, match="no such map folder"):
        launch_spec._map(str(folder / "tree.json"))


def test_rate_range_is_the_simulator_parameter_range():
    from bronchonav.ros.catheter_sim_node import PARAMS

    rate = next(p for p in PARAMS if p.name == "rate_hz")
    assert launch_spec.RATE_RANGE_HZ == (rate.minimum, rate.maximum)


def test_xml_front_end_matches_the_python_launch_file():
    root = ET.parse(ROOT / "launch" / "sim.launch.xml").getroot()
    declared = {a.get("name"): a for a in root.findall("arg")}
    assert list(declared) == list(LAUNCH_CONFIGS["sim"].arguments)
    for name, element in declared.items():
        assert element.get("default") == ARGUMENTS[name].default
        assert element.get("description") == ARGUMENTS[name].description
    (include,) = root.findall("include")
    assert include.get("file") == "$(find-pkg-share bronchonav)/launch/sim.launch.py"
    passed = {a.get("name"): a.get("value") for a in include.findall("arg")}
    assert passed == {name: f"$(var {name})" for name in declared}


def test_every_launch_argument_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name, argument in ARGUMENTS.items():
        row = re.search(rf"^\|\s*`{name}`\s*\|([^\n]*)$", readme, re.MULTILINE)
        assert row, f"README has no table row for launch argument {name!r}"
        default = argument.default or "(empty)"
        assert f"`{default}`" in row.group(1), (name, row.group(1))


def test_launch_files_are_installed_by_setup():
    text = (ROOT / "setup.py").read_text()
    assert 'data_tree("launch")' in text and 'data_tree("config")' in text
    assert {p.name for p in (ROOT / "launch").iterdir()} >= {
        "plan.launch.py", "hil.launch.py", "sim.launch.py", "sim.launch.xml"}
    scripts = dict(re.findall(r'^\s+"(\w+)": "bronchonav\.ros\.node_main:(\w+)",$', text,
                              re.MULTILINE))
    assert scripts == {name: name for name in NODES}  # ros2 run NAME
    from bronchonav.ros import node_main

    for name, spec in NODES.items():  # each script runs its node's main
        assert callable(getattr(node_main, name)) and callable(
            importlib.import_module(spec.module).main)


# -- the project's own runner ---------------------------------------------------------------------

def test_runner_refuses_bad_arguments_with_one_line():
    cli = os.path.join(os.path.dirname(sys.executable), "bronchonav")
    out = subprocess.run([cli, "launch", "hil", "rate:=fast", "--processes"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == ("bronchonav launch: error: launch argument rate:='fast' must "
                                  "be a number of Hz (1 to 2000)")


@pytest.fixture(scope="module")
def context():
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, args=[])
    yield ctx
    rclpy.try_shutdown(context=ctx)


@pytest.fixture(scope="module")
def probe(context):
    from ros_probe import Probe

    probe = Probe(context, "launch_probe")
    yield probe
    probe.close()


def _wait_graph(probe, names, namespace, topics=(), services=(), timeout=90.0):
    """Wait until every node of ``names`` is in ``namespace`` and the names exist."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = set(probe.node.get_node_names_and_namespaces())
        have_topics = {t for t, _ in probe.node.get_topic_names_and_types()}
        have_services = {s for s, _ in probe.node.get_service_names_and_types()}
        missing = ({(n, namespace) for n in names} - nodes, set(topics) - have_topics,
                   set(services) - have_services)
        if not any(missing):
            return nodes
        assert time.monotonic() < deadline, f"missing from the graph: {missing}"
        time.sleep(0.2)


def test_runner_plan_in_one_process_namespaced_lifecycle_map_server(context, probe):
    """plan in one process under /cath2: the nodes of the table, the map server's relative
    topics and lifecycle services in the namespace, and its load_map service."""
    from lifecycle_msgs.srv import GetState
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from std_srvs.srv import Trigger

    from bronchonav.ros.runner import LAUNCH_CONFIGS as RUNNER_CONFIGS
    from bronchonav.ros.runner import InProcessGraph

    assert RUNNER_CONFIGS == {n: list(c.nodes) for n, c in LAUNCH_CONFIGS.items()}
    with InProcessGraph(RUNNER_CONFIGS["plan"], context=context, namespace="/cath2") as graph:
        server = "/cath2/airway_map_server"
        _wait_graph(probe, RUNNER_CONFIGS["plan"], "/cath2",
                    topics=["/cath2/airway_map/markers", "/cath2/airway_map/info"],
                    services=[f"{server}/get_state", f"{server}/change_state",
                              f"{server}/load_map"])
        state = probe.call(GetState, f"{server}/get_state", GetState.Request())
        assert state.current_state.label == "active"

        def set_map(value):
            p = Parameter(name="map", value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                           string_value=value))
            reply = probe.call(SetParameters, f"{server}/set_parameters",
                               SetParameters.Request(parameters=[p]))
            assert reply.results[0].successful, reply.results[0].reason

        served = graph.nodes["airway_map_server"].map_path
        set_map("/no/such/map")
        reply = probe.call(Trigger, f"{server}/load_map", Trigger.Request())
        assert not reply.success and "/no/such/map" in reply.message
        assert graph.nodes["airway_map_server"].map_path == served  # the old map stays
        set_map("maps/phantom_default")
        reply = probe.call(Trigger, f"{server}/load_map", Trigger.Request())
        assert reply.success and "205 branches" in reply.message, reply.message


def _descendants(pid):
    """Live (not zombie) descendants of process ``pid``."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state ppid ...
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    out, todo = [], [pid]
    while todo:
        pid = todo.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        out += children
        todo += children
    return out


def _alive(pids):
    alive = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.append(pid)
        except OSError:
            pass
    return alive


def _stop(proc, processes=()):
    """After a failure: let the runner stop its nodes (SIGTERM), then kill what is left."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in _alive(processes):
        os.kill(pid, signal.SIGKILL)


def _start_cli(*args):
    cli = os.path.join(os.path.dirname(sys.executable), "bronchonav")
    return subprocess.Popen([cli, "launch", *args, "--processes", "--no-rviz"],
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_node_processes_import_only_what_their_node_uses():
    """Every node's main runs through the runner: importing it loads neither the catheter
    solver (numba) nor open3d, so a best-effort node's process does not pay for them at start
    and the simulator's start-up is not slowed by six processes loading them."""
    probe = ("import sys, bronchonav.ros.runner, bronchonav.ros.map_server_node; "
             "print(sorted(m for m in ('numba', 'open3d', 'bronchonav.catheter') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (``SigCgt`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_a_node_imports_ends_it_quietly(signum):
    """A node process signalled while it still imports its module (it handles SIGTERM already,
    rclpy's extension is not loaded yet: before the node's own signal handling) ends at once
    with exit code 0 and no traceback (not killed by SIGTERM, no KeyboardInterrupt traceback).
    A start signalled only after rclpy was loaded (a slow poll) is tried again, up to 3."""
    from bronchonav.ros.runner import node_command

    for _ in range(3):
        proc = subprocess.Popen(node_command("route_planner"), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 30.0
            while not _catches(proc.pid, signal.SIGTERM):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.002)
            importing = "_rclpy_pybind11" not in Path(f"/proc/{proc.pid}/maps").read_text()
            t0 = time.monotonic()
            proc.send_signal(signum)
            output, _ = proc.communicate(timeout=20)
            elapsed = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, output[-2000:]
        assert "Traceback" not in output and elapsed < 2.0, output[-2000:]
        if importing:
            break
    assert importing, "never signalled during the imports"


HALF_BUILT_NODE = """
import rclpy
from rclpy.node import Node

from bronchonav.ros.runner import spin_node


def half_built():
    node = Node("half_built")  # tracked by the context from here on
    raise KeyboardInterrupt  # a stop signal in the middle of the node's construction


shut_down = rclpy.try_shutdown


def cleanup_fails():  # as rclpy's cleanup of a node half-built by the signal did (CI, once)
    shut_down()
    raise ValueError("list.remove(x): x not in list")


rclpy.try_shutdown = cleanup_fails
spin_node(half_built, ["half_built"])
"""


def test_a_node_half_built_when_a_stop_signal_came_ends_quietly():
    """A stop signal during a node's construction can leave it half-built inside rclpy, and
    the context's cleanup then fails on it (seen in a fresh CI run: ``ValueError`` from
    ``destroy_subscription`` in ``rclpy.try_shutdown``, exit code 1 with a traceback). The
    process ends on the signal as any other: exit code 0, no traceback."""
    proc = subprocess.run([sys.executable, "-c", HALF_BUILT_NODE], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def _node_processes(runner_pid: int, names, timeout: float = 60.0) -> dict:
    """``{node name: pid}`` of the runner's node processes once all of ``names`` run."""
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for pid in _descendants(runner_pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
            except OSError:
                continue
            if "bronchonav.ros.node_main" in cmdline:
                found[cmdline[cmdline.index("bronchonav.ros.node_main") + 1]] = pid
        if set(names) <= set(found):
            return found
        assert time.monotonic() < deadline, f"node processes {sorted(found)} of {sorted(names)}"
        time.sleep(0.05)


def _gone_within(pids, seconds: float) -> list:
    """Wait until none of ``pids`` lives, at most ``seconds``; those still alive."""
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _alive(pids)


@pytest.mark.parametrize("when", ["importing", "running"])
def test_node_processes_stop_when_their_runner_is_killed(when):
    """A runner killed outright (SIGKILL: no clean-up of its own) takes the node processes it
    started with it, whether they were still importing or already spinning: none is left
    running (a simulator left behind would go on publishing). The runner here is a Python
    process that spawns two nodes as ``bronchonav launch --processes`` does."""
    code = ("import time; from bronchonav.ros.runner import spawn_processes; "
            "spawn_processes(['airway_map_server', 'route_planner']); time.sleep(300)")
    runner = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    nodes = {}
    try:
        nodes = _node_processes(runner.pid, ["airway_map_server", "route_planner"])
        if when == "running":  # the map server spins once its node has created its services
            deadline = time.monotonic() + 60.0
            while "_rclpy_pybind11" not in Path(f"/proc/{nodes['route_planner']}/maps") \
                    .read_text():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(2.0)
        runner.kill()
        runner.wait()
        left = _gone_within(list(nodes.values()), 10.0)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        for pid in _alive(list(nodes.values())):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"node processes left running after their runner died: {left}"


def test_demo_stops_cleanly_on_sigterm(tmp_path):
    """``bronchonav demo`` sent SIGTERM (``kill``, ``timeout``) once its simulator runs stops
    as on Ctrl-C: exit code 130 with one line saying so, no traceback, the simulator process
    it started stopped by it."""
    cli = os.path.join(os.path.dirname(sys.executable), "bronchonav")
    proc = subprocess.Popen([cli, "demo", "--pose", "truth", "--nodule", "N3",
                             "--out", str(tmp_path / "demo")], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    nodes = {}
    try:
        nodes = _node_processes(proc.pid, ["catheter_sim"])
        time.sleep(3.0)
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        left = _gone_within(list(nodes.values()), 5.0)
    finally:
        _stop(proc, list(nodes.values()))
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == \
        "bronchonav demo: interrupted", err[-3000:]
    assert left == []


@pytest.mark.parametrize("with_rclpy", [True, False])
def test_the_command_line_skips_finalization_only_after_ros_ran_in_it(with_rclpy):
    """The console script ends a command that ran ROS in its process (rclpy loaded) without
    the interpreter's finalization, whose teardown of rclpy's C++ objects once aborted a demo
    stopped by SIGTERM (status -6): the exit code stands and the output is flushed, but exit
    hooks do not run. Any other command ends normally (its exit hooks run, e.g. Ray's)."""
    script = "\n".join([
        "import atexit, sys",
        "import rclpy" if with_rclpy else "",
        "atexit.register(lambda: print('finalized', flush=True))",
        "sys.argv = ['bronchonav', 'plan', '--map', '/nonexistent/map']",
        "from bronchonav.cli import run",
        "print('before exit', flush=False)",
        "run()"])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "before exit" in proc.stdout and "error" in proc.stderr
    assert ("finalized" in proc.stdout) is not with_rclpy


def _scheduling(pid: int) -> tuple[int, int, int]:
    """(process group, session, nice) of a process, from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[2]), int(fields[3]), int(fields[16])


def test_a_best_effort_node_process_starts_niced_before_its_imports():
    """The runner starts a best-effort node under ``nice -n`` (its parameter file's ``nice``):
    the Python process already runs at that niceness when it begins importing (rclpy, numpy,
    scipy), seconds before the node reads its parameters — on two cores the simulator then
    gets the CPU during the whole graph's start-up. The simulator starts at the runner's."""
    from bronchonav.ros.runner import spawn_processes, stop_processes

    config = yaml.safe_load((ROOT / "config" / "bronchonav.yaml").read_text())
    expected = config["/**/route_planner"]["ros__parameters"]["nice"]
    assert expected > 0
    own = os.nice(0)
    procs = spawn_processes(["route_planner"])
    try:
        pid = procs["route_planner"].pid
        deadline = time.monotonic() + 30.0
        # the pid is `nice` until it execs Python with the node's command line
        while Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0] != sys.executable:
            assert time.monotonic() < deadline, "the node process never started"
            time.sleep(0.001)
        importing = "_rclpy_pybind11" not in Path(f"/proc/{pid}/maps").read_text()
        nice = _scheduling(pid)[2]
        while not _catches(pid, signal.SIGTERM):  # stopped before that, Python dies of it
            assert time.monotonic() < deadline, "the node never handled SIGTERM"
            time.sleep(0.002)
    finally:
        codes = stop_processes(procs)
    assert importing, "sampled only after rclpy was loaded"
    assert nice == min(19, own + expected)
    assert codes == {"route_planner": 0}


@pytest.mark.parametrize("started_at, target", [(0, 5), (7, 5), (3, 0)])
def test_give_way_raises_the_niceness_to_its_parameter_only(started_at, target):
    """``give_way(n)``: a process below niceness n is raised to it, one started at or above it
    (by a launcher's ``nice -n``) keeps its niceness; called twice, it does not add up."""
    code = ("import os; from bronchonav.ros.params import give_way; "
            f"give_way({target}); give_way({target}); print(os.nice(0))")
    own = os.nice(0)
    out = subprocess.run(["nice", "-n", str(started_at), sys.executable, "-c", code],
                         capture_output=True, text=True, check=True, timeout=60)
    assert int(out.stdout) == min(19, max(own + started_at, target))


def test_runner_hil_processes_stop_cleanly_on_ctrl_c(probe):
    """hil as processes under /cath2: the table's nodes with namespaced topics, each in a
    process group of its own inside the runner's session (as ros2 launch keeps them: one
    scheduling group where the kernel groups by session), the best-effort nodes at the
    parameter file's niceness and the simulator at the runner's; a terminal Ctrl-C (SIGINT to
    the runner's process group; the runner stops the nodes) stops every node and the solver
    child in < 2 s, exit code 0, no traceback."""

    from bronchonav.ros.runner import default_config
    from sensor_msgs.msg import JointState

    from bronchonav.ros import qos

    states = []
    # the simulator's first state: catheter/joint_states relative to the namespace (or at the
    # root while the simulator still publishes an absolute /joint_states)
    subs = [probe.node.create_subscription(JointState, topic, states.append, qos.STATE_SUB)
            for topic in ("/cath2/joint_states", "/joint_states")]
    proc = _start_cli("hil", "namespace:=cath2")
    processes = []
    try:
        _wait_graph(probe, LAUNCH_CONFIGS["hil"].nodes, "/cath2", timeout=120.0,
                    topics=["/cath2/airway_map/markers", "/cath2/registration/status",
                            "/cath2/tip_camera/image_raw"],
                    services=["/cath2/registration/trigger",
                              "/cath2/airway_map_server/load_map"])
        deadline = time.monotonic() + 120.0
        while not states:
            assert time.monotonic() < deadline, "no state from catheter_sim"
            time.sleep(0.1)
        processes = _descendants(proc.pid)
        assert len(processes) >= len(LAUNCH_CONFIGS["hil"].nodes) + 1  # + the solver child
        nodes = {name: _scheduling(pid) + (pid,) for name, pid in
                 _node_processes(proc.pid, LAUNCH_CONFIGS["hil"].nodes, timeout=0.0).items()}
        runner_nice = _scheduling(proc.pid)[2]
        config = yaml.safe_load(default_config().read_text())
        assert sorted(nodes) == sorted(LAUNCH_CONFIGS["hil"].nodes)
        for name, (group, session, nice, pid) in nodes.items():
            expected = config[f"/**/{name}"]["ros__parameters"].get("nice", 0)
            assert (group, session, nice) == (pid, proc.pid, runner_nice + expected), name
        assert nodes["catheter_sim"][2] == runner_nice and nodes["registration"][2] > runner_nice
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=20)
        elapsed = time.monotonic() - t0
        print(f"hil stopped in {elapsed:.2f} s after Ctrl-C (load {os.getloadavg()})")
        output = proc.stdout.read()
    finally:
        for sub in subs:
            probe.node.destroy_subscription(sub)
        _stop(proc, processes)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    time.sleep(0.5)  # multiprocessing's resource tracker leaves after its parent
    assert _alive(processes) == []
    assert elapsed < 2.0, f"stopped in {elapsed:.2f} s"


def test_runner_ends_when_a_required_node_dies(probe):
    """plan as processes: killing the map server (required) stops the planner too, exit 1."""
    proc = _start_cli("plan")
    processes = []
    try:
        _wait_graph(probe, LAUNCH_CONFIGS["plan"].nodes, "/", timeout=90.0)
        processes = _descendants(proc.pid)
        server = next(p for p in processes if "airway_map_server" in
                      Path(f"/proc/{p}/cmdline").read_text().split("\0"))
        os.kill(server, signal.SIGKILL)
        code = proc.wait(timeout=20)
        output = proc.stdout.read()
    finally:
        _stop(proc, processes)
    assert code == 1
    assert "required node airway_map_server exited: stopping the others" in output, output
    assert _alive(processes) == []


def test_runner_sim_in_one_process_starts_the_table_nodes(context, probe):
    from bronchonav.ros.runner import InProcessGraph

    with InProcessGraph(LAUNCH_CONFIGS["sim"].nodes, context=context, namespace="/sim1"):
        _wait_graph(probe, LAUNCH_CONFIGS["sim"].nodes, "/sim1",
                    topics=["/sim1/airway_map/markers", "/sim1/tip_camera/image_raw",
                            "/sim1/registration/transform"])


# -- ros2_control ---------------------------------------------------------------------------------

def test_ros2_control_urdf_is_generated_and_names_urdf_joints():
    from bronchonav.ros.urdf_gen import COMMANDED_JOINTS, generate_ros2_control

    text = (ROOT / "urdf" / "bronchoscope_ros2_control.urdf").read_text()
    assert text == generate_ros2_control()
    robot = ET.fromstring(text)
    urdf_joints = {j.get("name"): j.get("type") for j in robot.findall("joint")}
    (block,) = robot.findall("ros2_control")
    hardware = block.find("hardware")
    assert hardware.find("plugin").text == \
        "joint_state_topic_hardware_interface/JointStateTopicSystem"
    params = {p.get("name"): p.text for p in hardware.findall("param")}
    assert params["joint_commands_topic"] == "/catheter/joint_command"
    assert params["joint_states_topic"] == "/joint_states"
    joints = {j.get("name"): j for j in block.findall("joint")}
    movable = {n for n, t in urdf_joints.items() if t != "fixed"}
    assert set(joints) == movable  # every movable URDF joint, nothing else (no tendons)
    commanded = {n for n, j in joints.items() if j.find("command_interface") is not None}
    assert commanded == set(COMMANDED_JOINTS) == {"insertion", "roll"}
    limit = robot.find("joint[@name='insertion']/limit")
    cmd = {p.get("name"): float(p.text) for p in
           joints["insertion"].find("command_interface").findall("param")}
    assert (cmd["min"], cmd["max"]) == (float(limit.get("lower")), float(limit.get("upper")))


def test_ros2_control_controllers_use_the_commanded_joints():
    from bronchonav.ros.urdf_gen import COMMANDED_JOINTS

    config = yaml.safe_load((ROOT / "config" / "ros2_control_controllers.yaml").read_text())
    manager = config["controller_manager"]["ros__parameters"]
    controllers = {k: v["type"] for k, v in manager.items() if isinstance(v, dict)}
    assert set(controllers) == set(config) - {"controller_manager"}
    for name in controllers:
        assert config[name]["ros__parameters"]["joints"] == list(COMMANDED_JOINTS)
    assert config["joint_state_broadcaster"]["ros__parameters"]["use_local_topics"] is True


# -- ros2 run: the parameter file by default ------------------------------------------------------

def test_default_params_file_goes_first_so_later_arguments_win():
    from bronchonav.ros.runner import default_config, with_default_params_file

    argv = with_default_params_file(["tip_camera", "--ros-args", "-p", "nice:=3"])
    assert argv == ["tip_camera", "--ros-args", "--params-file", str(default_config()), "--",
                    "--ros-args", "-p", "nice:=3"]
    given = ["tip_camera", "--ros-args", "--params-file", "/x.yaml"]
    assert with_default_params_file(given) == given


def test_a_node_started_alone_reads_the_installed_parameter_file(probe, tmp_path):
    """``ros2 run bronchonav tip_camera`` (here its module): the parameter file of the installed
    package (found through the ament index, as after ``colcon build``) is its default parameter
    file — here an installed copy whose ``width`` and ``nice`` differ from the node's declared
    defaults — and a ``-p`` on the command line still wins; also in a namespace (``/**/tip_camera``
    section)."""
    from rcl_interfaces.srv import GetParameters

    from bronchonav.ros.tip_camera_node import PARAMS

    prefix = tmp_path / "install"
    share = prefix / "share" / "bronchonav"
    (share / "config").mkdir(parents=True)
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "bronchonav").write_text("")
    sections = yaml.safe_load((ROOT / "config" / "bronchonav.yaml").read_text())
    camera = sections["/**/tip_camera"]["ros__parameters"]
    declared = {p.name: p.default for p in PARAMS}
    camera.update(width=96, nice=3)
    assert (declared["width"], declared["nice"]) != (96, 3)
    (share / "config" / "bronchonav.yaml").write_text(yaml.safe_dump(sections))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix))
    cases = [(["-p", "height:=64", "-r", "__ns:=/cam2"], "/cam2/tip_camera", [3, 96, 64])]
    for extra, name, expected in cases:
        proc = subprocess.Popen([sys.executable, "-m", "bronchonav.ros.tip_camera_node",
                                 "--ros-args", *extra], cwd=tmp_path, start_new_session=True,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            reply = probe.call(GetParameters, f"{name}/get_parameters",
                               GetParameters.Request(names=["nice", "width", "height"]),
                               timeout=90.0, resend_s=5.0)
        except AssertionError as exc:
            reply, failure = None, str(exc)
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=20)
            output = proc.stdout.read()[-2000:]
        assert reply is not None, f"{failure}; the node printed:\n{output}"
        assert [v.integer_value for v in reply.values] == expected, output
        assert code == 0, output


def test_demo_refuses_a_nodule_the_map_does_not_have(tmp_path):
    """``bronchonav demo --nodule`` with an id not in the map: one line naming the map's
    nodules and exit code 2 (was "no feasible route to NOPE", as if the planner had tried)."""
    cli = os.path.join(os.path.dirname(sys.executable), "bronchonav")
    proc = subprocess.run([cli, "demo", "--nodule", "NOPE", "--out", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "bronchonav demo: error: unknown nodule id 'NOPE' in map 'phantom_default' "
        "(known: N1, N2, N3, N4, N5, N6)")
    assert "Traceback" not in proc.stderr
