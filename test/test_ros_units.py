"""The ROS layer's pieces without a running graph: parameters, conversions, URDF kinematics,
launch files against setup.py and the YAML, MCAP definitions, the fixed-rate loop."""

import ast
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bronchonav.errors import CommandError, InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_map():
    """The default phantom's ground-truth map (built in a few seconds)."""
    from bronchonav.ct.phantom import phantom_config, phantom_ground_truth_map

    return phantom_ground_truth_map(phantom_config("default"))


# -- parameters -----------------------------------------------------------------------------------

def test_param_validation_names_the_parameter():
    from bronchonav.ros.params import Param

    rate = Param("rate_hz", 200.0, "loop rate", minimum=1.0, maximum=2000.0)
    assert rate.check(500) == 500.0 and isinstance(rate.check(500), float)
    with pytest.raises(InputError, match="rate_hz.*above its maximum"):
        rate.check(5000.0)
    with pytest.raises(InputError, match="rate_hz.*finite"):
        rate.check(float("nan"))
    with pytest.raises(InputError, match="rate_hz.*number"):
        rate.check("fast")
    n = Param("n", 3, "count", minimum=1)
    with pytest.raises(InputError, match="integer"):
        n.check(2.5)
    frame = Param("frame_id", "ct", "frame", choices=("ct", "patient"))
    with pytest.raises(InputError, match="one of"):
        frame.check("world")


def test_yaml_has_every_declared_parameter_with_a_valid_value():
    """config/bronchonav.yaml: one section per node, only declared names, values in range."""
    from bronchonav.ros.params import load_yaml_params, yaml_node_name
    from bronchonav.ros.runner import NODE_CLASSES, node_class

    data = yaml.safe_load((ROOT / "config" / "bronchonav.yaml").read_text())
    assert {yaml_node_name(key) for key in data} == set(NODE_CLASSES)
    for name in NODE_CLASSES:
        module = __import__(node_class(name).__module__, fromlist=["PARAMS"])
        specs = {p.name: p for p in module.PARAMS}
        values = load_yaml_params(ROOT / "config" / "bronchonav.yaml", name)
        assert set(values) <= set(specs), f"{name}: undeclared {set(values) - set(specs)}"
        for key, value in values.items():
            specs[key].check(value)


def test_yaml_loader_merges_wildcard_and_rejects_bad_layout(tmp_path):
    from bronchonav.ros.params import load_yaml_params

    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters:\n    a: 1\n    b: 2\nnode:\n  ros__parameters:\n    b: 3\n")
    assert load_yaml_params(f, "node") == {"a": 1, "b": 3}
    f.write_text("node: [1, 2]\n")
    with pytest.raises(InputError, match="ros__parameters"):
        load_yaml_params(f, "node")
    with pytest.raises(InputError, match="not found"):
        load_yaml_params(tmp_path / "missing.yaml", "node")


# -- conversions ----------------------------------------------------------------------------------

def test_pose_and_transform_round_trip():
    from scipy.spatial.transform import Rotation

    from bronchonav.ros import conversions as conv

    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    T[:3, 3] = [0.01, -0.2, 0.3]
    assert np.allclose(conv.pose_to_matrix(conv.matrix_to_pose(T)), T, atol=1e-12)
    tf = conv.matrix_to_transform(T, "ct", "patient", conv.Time())
    assert tf.header.frame_id == "ct" and tf.child_frame_id == "patient"
    assert np.allclose(conv.transform_to_matrix(tf.transform), T, atol=1e-12)


def test_path_round_trip_and_transport_frames():
    from bronchonav.ros import conversions as conv

    s = np.linspace(0, np.pi, 30)
    pts = np.column_stack([np.cos(s), np.sin(s), 0.1 * s]) * 0.02
    msg = conv.path_message(pts, "ct", conv.Time())
    assert msg.header.frame_id == "ct" and len(msg.poses) == 30
    assert np.allclose(conv.path_points(msg), pts)
    from scipy.spatial.transform import Rotation

    o = [p.pose.orientation for p in msg.poses]
    R = Rotation.from_quat([[q.x, q.y, q.z, q.w] for q in o]).as_matrix()
    # z follows the helix's analytic tangent (central differences: O(h^2) inside, O(h) at ends)
    t = np.column_stack([-np.sin(s), np.cos(s), np.full_like(s, 0.1)])
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    err = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", R[:, :, 2], t), -1, 1)))
    assert err[1:-1].max() < 0.5 and err.max() < 5.0
    # parallel transport: each step turns about an axis perpendicular to the previous z (no twist)
    step = Rotation.from_matrix(np.einsum("nji,njk->nik", R[:-1], R[1:])).as_rotvec()
    assert np.abs(step[:, 2]).max() < 1e-9 and np.abs(step[:, :2]).max() > 0.05


def test_labelled_array_round_trip_and_layout():
    """Names ride in the layout's one dimension, comma-joined, values in the same order."""
    from std_msgs.msg import Float64MultiArray

    from bronchonav.ros import conversions as conv

    values = {"fitness": 0.9, "fre_m": 2.2e-3, "success": 1.0}
    msg = conv.labelled_array(values)
    assert msg.layout.dim[0].label == "fitness,fre_m,success" and msg.layout.dim[0].size == 3
    assert list(msg.data) == [0.9, 2.2e-3, 1.0]
    assert conv.labelled_values(msg) == values
    assert conv.labelled_values(Float64MultiArray(data=[1.0])) == {}


def test_command_parsing_rejects_bad_commands():
    from sensor_msgs.msg import JointState

    from bronchonav.ros import conversions as conv

    nan = math.nan
    assert conv.forward_command_values([0.1, 0.2, 1e-3, 0, 0, 0], 4) == conv.JointCommand(
        0.1, 0.2, [1e-3, 0, 0, 0], None)
    with pytest.raises(CommandError, match="needs 6 values"):
        conv.forward_command_values([0.1, 0.2], 4)
    with pytest.raises(CommandError, match="non-finite"):
        conv.forward_command_values([0.1, math.nan, 0, 0, 0, 0], 4)
    with pytest.raises(CommandError, match="roll 1e\\+06 rad is outside"):
        conv.forward_command_values([0.1, 1e6, 0, 0, 0, 0], 4)
    names = ["t0", "t1"]
    # ros2_control convention: NaN = this field is not set
    cmd = conv.joint_command_values(
        JointState(name=["insertion", "t0", "t1"], position=[0.05, nan, nan],
                   effort=[nan, 2.0, 0.5]), names)
    assert cmd == conv.JointCommand(insertion=0.05, tensions=[2.0, 0.5])
    cmd = conv.joint_command_values(JointState(name=["roll"], position=[-0.5]), names)
    assert cmd == conv.JointCommand(roll=-0.5)
    cases = [
        (JointState(), "names no joint"),
        (JointState(name=["insertion", "insertion"], position=[0.1, 0.2]), "more than once"),
        (JointState(name=["elbow"], position=[1.0]), "unknown joints"),
        (JointState(name=["t0"], position=[1e-3]), "all tendons"),
        (JointState(name=["insertion", "roll"], position=[1.0]), "1 position values for 2"),
        (JointState(name=["insertion"], position=[0.1], effort=[2.0]), "both a position"),
        (JointState(name=["insertion"], effort=[2.0]), "position-controlled"),
        (JointState(name=["insertion"], position=[nan]), "neither"),
        (JointState(name=["insertion"], position=[math.inf]), "infinite"),
        (JointState(name=["roll"], position=[1e300]), "roll .* outside"),
        (JointState(name=["t0", "t1"], position=[1e-3, nan], effort=[nan, 1.0]), "all by"),
    ]
    for msg, pattern in cases:
        with pytest.raises(CommandError, match=pattern):
            conv.joint_command_values(msg, names)


def test_command_guard_rate_charge_estop_and_counts(tmp_path):
    """The guard with a hand-driven clock: per-source token bucket, first accepted source in
    charge until its lease runs out or it is released, emergency stop, exact refusal counts and
    the audit log's records."""
    import json

    from bronchonav.catheter.runtime import AuditLog, CommandGuard

    now = [0.0]
    audit = AuditLog(tmp_path / "audit" / "a.jsonl")
    guard = CommandGuard(max_rate_hz=100.0, burst=5, lease_s=1.0, audit=audit,
                         clock=lambda: now[0])
    # a flood of 1000 commands at t = 0 from A: 5 pass (the burst), 995 refused
    results = [guard.admit("A") for _ in range(1000)]
    assert sum(r is None for r in results) == 5
    assert [r.log_now for r in results if r is not None].count(True) == 1  # logged once now
    guard.accepted("A")
    assert guard.controller == "A"
    now[0] = 0.1  # 10 tokens refilled (capped at the burst of 5) for A; B is refused
    assert guard.admit("B").kind == "not_in_charge"
    assert sum(guard.admit("A") is None for _ in range(10)) == 5
    lines = guard.report()
    # 995 + 5 refused: the first logged at once, the other 999 summed up in the report
    assert any(line.startswith("refused 999 more command(s) from A (rate_limit") for line in lines)
    assert guard.counts()["refused_rate_limit"] == 1000
    # the lease: A sends nothing for more than 1 s, B takes charge
    now[0] = 1.2
    assert guard.admit("B") is None
    guard.accepted("B")
    assert guard.controller == "B"
    # emergency stop refuses everyone; released, nobody is in charge
    guard.engage_estop("test")
    now[0] = 2.0
    assert guard.admit("B").kind == "emergency_stop"
    guard.release_estop("test")
    assert guard.controller is None and guard.admit("A") is None
    # the operator frees the slot
    guard.accepted("A")
    assert guard.release_control("operator") == "A" and guard.controller is None
    guard.report()
    audit.close()
    records = [json.loads(line) for line in (tmp_path / "audit" / "a.jsonl").read_text()
               .splitlines()]
    events = [r["event"] for r in records]
    assert events.count("source_seen") == 2
    assert [r["source"] for r in records if r["event"] == "control_taken"] == ["A", "B", "A"]
    assert "estop_engaged" in events and "estop_released" in events
    period = [r for r in records if r["event"] == "period" and r["source"] == "A"][0]
    assert period["refused"] == {"rate_limit": 1000} and period["accepted"] == 1


def test_markers_of_a_map(small_map):
    from visualization_msgs.msg import Marker

    from bronchonav.ros import conversions as conv

    tree_m = conv.tree_marker(small_map.tree, "ct", conv.Time())
    assert tree_m.type == Marker.LINE_LIST
    n_segments = sum(len(b.points) - 1 for b in small_map.tree)
    assert len(tree_m.points) == 2 * n_segments == len(tree_m.colors)
    mesh = conv.mesh_marker(small_map.mesh_vertices, small_map.mesh_triangles, "ct", conv.Time())
    assert len(mesh.points) == 3 * len(small_map.mesh_triangles)
    nod = conv.nodule_markers(small_map.nodules, "ct", conv.Time())
    spheres = [m for m in nod if m.type == Marker.SPHERE]
    assert [round(m.scale.x, 9) for m in spheres] == [round(2 * n.radius, 9)
                                                       for n in small_map.nodules]


# -- URDF -----------------------------------------------------------------------------------------

def test_committed_urdf_is_the_generated_one():
    from bronchonav.ros.urdf_gen import generate

    assert (ROOT / "urdf" / "bronchoscope.urdf").read_text() == generate()


def _urdf_points(robot, names, q, T_ct_base, n_links):
    robot.update_cfg(dict(zip(names, q)))
    frames = [f"link_{i}" for i in range(n_links)] + ["catheter_tip"]
    # link_i's origin is its proximal joint; catheter_tip is the distal end of the last link
    return np.array([(T_ct_base @ robot.get_transform(f, "base"))[:3, 3] for f in frames])


def test_urdf_forward_kinematics_matches_backbone(small_map):
    """FK of the committed URDF (parsed by yourdfpy) with the joint values catheter_sim
    publishes puts every link origin within 1 mm of the simulated backbone, tip included."""
    import yourdfpy

    from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams
    from bronchonav.catheter.kinematics import chain_joint_angles, link_joint_names
    from bronchonav.ros.urdf_gen import DEFAULT_CHAIN as chain

    robot = yourdfpy.URDF.load(str(ROOT / "urdf" / "bronchoscope.urdf"), load_meshes=False)
    names = ["insertion", "roll"] + link_joint_names(chain.n_links)
    assert set(names) == set(robot.actuated_joint_names)
    params = CatheterParams.default()
    assert chain.length >= params.limits.max_insertion
    model = CatheterModel(params, tree=small_map.tree, n_nodes=40, deadline_s=5.0)
    T_ct_base = model.base_pose_ct
    checked = 0
    for ins, roll, tension in [(0.0, 0.0, [0, 0, 0, 0]), (0.06, 0.4, [3.0, 0, 0, 0]),
                               (0.13, -0.3, [0, 4.0, 0, 1.0])]:
        state = model.step(CatheterCommand(insertion=ins, roll=roll, tendon_tension=tension))
        assert state.converged
        angles = chain_joint_angles(state.positions, T_ct_base, ins, roll, chain.n_links,
                                    chain.link_length)
        pts = _urdf_points(robot, names, [ins, roll, *angles], T_ct_base, chain.n_links)
        # the backbone, continued straight back along the insertion axis behind the entry
        behind = T_ct_base[:3, 3] - np.outer(np.linspace(0, chain.length, 400), T_ct_base[:3, 2])
        dense = _densify(np.vstack([behind[::-1], state.positions]))
        d = np.min(np.linalg.norm(pts[:, None, :] - dense[None], axis=2), axis=1)
        assert d.max() < 1e-3, (ins, d.max())
        assert np.linalg.norm(pts[-1] - state.tip_pose[:3, 3]) < 1e-3
        checked += 1
    assert checked == 3


def test_chain_forward_is_the_urdf_and_the_other_axis_order_is_not():
    """The chain written out in catheter.kinematics (Rx(pitch)·Ry(yaw) per link) equals the
    committed URDF's forward kinematics (yourdfpy) for random joint values; the opposite order
    Ry·Rx (the fit this project used to have twice) does not."""
    import yourdfpy

    from bronchonav.catheter.kinematics import chain_forward, link_joint_names
    from bronchonav.ros.urdf_gen import DEFAULT_CHAIN as chain

    robot = yourdfpy.URDF.load(str(ROOT / "urdf" / "bronchoscope.urdf"), load_meshes=False)
    rng = np.random.default_rng(7)
    names = ["insertion", "roll"] + link_joint_names(chain.n_links)
    for _ in range(3):
        ins, roll = rng.uniform(0, chain.length), rng.uniform(-np.pi, np.pi)
        angles = rng.uniform(-0.3, 0.3, 2 * chain.n_links)
        T_base = np.eye(4)
        T_base[:3, 3] = rng.normal(0, 0.05, 3)
        ours = chain_forward(T_base, ins, roll, angles, chain.link_length)
        urdf = _urdf_points(robot, names, [ins, roll, *angles], T_base, chain.n_links)
        assert np.abs(ours - urdf).max() < 1e-9
        swapped = angles.reshape(-1, 2)[:, ::-1].reshape(-1)  # yaw first = Ry·Rx
        urdf_swapped = _urdf_points(robot, names, [ins, roll, *swapped], T_base, chain.n_links)
        assert np.abs(ours - urdf_swapped).max() > 1e-3


def _densify(points, step=1e-4):
    out = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        n = max(int(np.linalg.norm(b - a) / step), 1)
        out.append(a + np.outer(np.arange(1, n + 1) / n, b - a))
    return np.vstack(out)


# -- launch files ---------------------------------------------------------------------------------

def _setup_nodes():
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODES":
            return ast.literal_eval(node.value)
    raise AssertionError("NODES not found in setup.py")


def test_setup_console_scripts_point_at_node_mains():
    import importlib

    for script, target in _setup_nodes().items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), script


# -- MCAP -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_name", ["visualization_msgs/msg/MarkerArray", "nav_msgs/msg/Path",
                                       "sensor_msgs/msg/JointState",
                                       "diagnostic_msgs/msg/DiagnosticArray"])
def test_message_definitions_parse(type_name):
    from mcap_ros2._dynamic import serialize_dynamic

    from bronchonav.ros.mcap_recorder import message_definition

    text = message_definition(type_name)
    assert type_name in serialize_dynamic(type_name, text)
    assert not re.search(r"^MSG: .*/msg/", text, flags=re.M)


# -- the loop -------------------------------------------------------------------------------------

def test_fixed_rate_loop_counts_ticks_and_misses():
    from bronchonav.catheter.runtime.loop import FixedRateLoop

    calls = []
    loop = FixedRateLoop(100.0, lambda t: calls.append(t), switch_interval_s=None).start()
    time.sleep(0.5)
    loop.stop()
    s = loop.stats()
    assert 35 <= s["ticks"] <= 60 and len(calls) == s["ticks"]
    assert 70 < s["rate_hz"] < 130

    def slow(t):
        time.sleep(0.025)
    loop = FixedRateLoop(100.0, slow, switch_interval_s=None).start()
    time.sleep(0.3)
    loop.stop()
    s = loop.stats()
    assert s["deadline_misses"] >= s["ticks"]
    missed = np.array(s["recent_misses_unix_s"])  # schedule times, skipped ticks included
    assert len(missed) == min(s["deadline_misses"], 20)
    assert np.all(np.diff(missed) > 0) and abs(missed[-1] - time.time()) < 1.0

    def boom(t):
        raise RuntimeError("bad tick")
    loop = FixedRateLoop(100.0, boom, switch_interval_s=None).start()
    time.sleep(0.1)
    assert loop.running
    loop.stop()
    assert loop.errors > 0 and "bad tick" in loop.last_error
