"""The MCAP recorder (real rclpy publishers, the file read back with the mcap reader) and the
catheter solver process's retry of a failed step and its receiver's survival of a faulty handler
(real child processes)."""

import threading
import time

import numpy as np
import pytest
import rclpy  # fails, not skips, without ROS 2 (source its setup first)

from bronchonav.airway.tree import AirwayTree, Branch
from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams
from bronchonav.maps import AirwayMap, save_map
from ros_probe import Spinning


def _wait(predicate, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_mcap_recorder_writes_what_was_published(tmp_path):
    """Five poses and three strings published on two topics come back from the MCAP file with
    the same fields, in order (reliable QoS, depth 10: none may be dropped), under the ros2
    profile with each type's message definition."""
    from geometry_msgs.msg import PoseStamped
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from bronchonav.ros import qos
    from bronchonav.ros.mcap_recorder import McapRecorder

    ctx = Context()
    rclpy.init(context=ctx)
    path = tmp_path / "run.mcap"
    spinning = None
    try:
        recorder = McapRecorder(path, {"/test/pose": (PoseStamped, qos.DEFAULT),
                                       "/test/text": (String, qos.DEFAULT)}, context=ctx)
        talker = rclpy.create_node("mcap_test_talker", context=ctx)
        pub_pose = talker.create_publisher(PoseStamped, "/test/pose", qos.DEFAULT)
        pub_text = talker.create_publisher(String, "/test/text", qos.DEFAULT)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(recorder)
        spinning = Spinning(executor)
        assert _wait(lambda: pub_pose.get_subscription_count() and pub_text.get_subscription_count(), 10)
        poses = []
        for k in range(5):
            msg = PoseStamped()
            msg.header.frame_id = "patient"
            msg.header.stamp.sec, msg.header.stamp.nanosec = 100 + k, 250 * k
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = 0.01 * k, -0.02, 0.5 + k
            msg.pose.orientation.w = 1.0
            poses.append(msg)
            pub_pose.publish(msg)
            time.sleep(0.01)
        texts = [f"status {k}" for k in range(3)]
        for text in texts:
            pub_text.publish(String(data=text))
            time.sleep(0.01)
        assert _wait(lambda: recorder.counts == {"/test/pose": 5, "/test/text": 3}, 10), recorder.counts
        counts = recorder.close()
    finally:
        if spinning is not None:
            spinning.stop()
        rclpy.shutdown(context=ctx)
    assert counts == {"/test/pose": 5, "/test/text": 3}

    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        got = {"/test/pose": [], "/test/text": []}
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            got[channel.topic].append(decoded)
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            assert schema.name == {"/test/pose": "geometry_msgs/msg/PoseStamped",
                                   "/test/text": "std_msgs/msg/String"}[channel.topic]
            if channel.topic == "/test/pose":  # dependencies included for the reader
                assert "MSG: geometry_msgs/Pose" in schema.data.decode()
    assert [m.data for m in got["/test/text"]] == texts
    assert len(got["/test/pose"]) == 5
    for sent, back in zip(poses, got["/test/pose"]):
        assert back.header.frame_id == "patient"
        assert (back.header.stamp.sec, back.header.stamp.nanosec) == \
            (sent.header.stamp.sec, sent.header.stamp.nanosec)
        assert (back.pose.position.x, back.pose.position.y, back.pose.position.z) == \
            (sent.pose.position.x, sent.pose.position.y, sent.pose.position.z)
        assert back.pose.orientation.w == 1.0


@pytest.fixture(scope="module")
def y_map_folder(tmp_path_factory):
    trachea = Branch(0, None, 0, [[0, 0, 0.1], [0, 0, 0.0]], [0.009, 0.009], name="trachea")
    left = Branch(1, 0, 1, [[0, 0, 0.0], [0.03, 0, -0.04]], [0.006, 0.006])
    right = Branch(2, 0, 1, [[0, 0, 0.0], [-0.03, 0, -0.04]], [0.006, 0.006])
    return save_map(AirwayMap("y", AirwayTree([trachea, left, right])),
                    tmp_path_factory.mktemp("maps") / "y")


def test_solver_process_retries_a_failed_step_with_a_doubling_budget(y_map_folder):
    """A 10 us budget cannot solve a 40 mm insertion with a lateral tip load (unloaded, the
    catheter is solved by the zero base load guess itself, with no iteration to time out): the
    child reports the failed attempts (converged False) and retries the same command
    by itself, its budget doubling up to the recovery budget (2 s), until the step converges at
    the commanded insertion — at most log2(2 s / 10 us) + 1 = 19 failures — in the state an
    offline model (no deadline) gives for that command. A bad command is rejected with a
    reason."""
    from bronchonav.catheter.runtime import SolverConfig, SolverProcess
    from bronchonav.ros.resources import load_airway_map

    messages = []
    lock = threading.Lock()

    def on_message(process, kind, seq, value):
        with lock:
            messages.append((kind, seq, value))

    tree = load_airway_map(str(y_map_folder)).tree
    config = SolverConfig(tree=tree, n_nodes=20, deadline_s=1e-5, recovery_deadline_s=2.0)
    solver = SolverProcess(config, on_message)
    try:
        assert _wait(lambda: len(messages) >= 1, 60), "the solver process did not start"
        kind, _, ready = messages[0]
        assert kind == "ready" and ready.converged and ready.insertion == 0.0
        command = CatheterCommand(insertion=0.04, tip_force=[0.05, 0.0, 0.0])
        solver.send(1, command)
        assert _wait(lambda: any(k == "state" and s.converged for k, _, s in messages[1:]), 30)
        with lock:
            after = list(messages[1:])
        first_ok = next(i for i, (k, _, s) in enumerate(after) if k == "state" and s.converged)
        failed = after[:first_ok]
        assert 1 <= len(failed) <= 19
        assert all(k == "state" and q == 1 and not s.converged for k, q, s in failed)
        assert after[first_ok][2].insertion == pytest.approx(0.04)
        offline = CatheterModel(CatheterParams.default(), tree, n_nodes=20)
        offline.step(CatheterCommand(insertion=0.0))
        expected = offline.step(command)
        assert expected.converged and expected.tip_position[0] != pytest.approx(0.0, abs=1e-3)
        assert np.allclose(after[first_ok][2].tip_position, expected.tip_position, atol=1e-6)
        n = len(messages)
        solver.send(2, CatheterCommand(insertion=float("nan")))
        assert _wait(lambda: len(messages) > n, 10)
        kind, seq, reason = messages[n]
        assert kind == "rejected" and seq == 2 and "insertion" in reason
        assert solver.alive
    finally:
        solver.close()
    assert not solver.alive


def test_a_fault_in_the_owner_s_handler_is_said_and_the_next_message_still_arrives(
        y_map_folder, capfd):
    """The handler raises on the child's first message (a bug in the owner): the traceback is
    printed and the receiver goes on, so the next command's state still arrives (before, the
    receiving thread died and the catheter froze with no state and no word)."""
    from bronchonav.catheter.runtime import SolverConfig, SolverProcess
    from bronchonav.ros.resources import load_airway_map

    states = []

    def on_message(process, kind, seq, value):
        if kind == "ready":
            raise RuntimeError("a bug in the handler")
        states.append((kind, seq, value))

    config = SolverConfig(tree=load_airway_map(str(y_map_folder)).tree, n_nodes=20)
    solver = SolverProcess(config, on_message)
    try:
        assert solver.ready.wait(60), "the solver process did not start"
        solver.send(1, CatheterCommand(insertion=0.02))
        assert _wait(lambda: any(k == "state" and q == 1 for k, q, _ in states), 30)
    finally:
        solver.close()
    assert "RuntimeError: a bug in the handler" in capfd.readouterr().err
