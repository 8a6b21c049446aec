"""Shared by the ROS tests: :class:`Spinning` spins an executor on a thread until it is stopped,
and :class:`Probe` is a test node (spun that way) that records what arrives on topics and calls
services; messages are kept per topic with their receive time (``time.monotonic()``).
"""

import threading
import time

import rclpy


class Spinning:
    """An executor spun on a daemon thread until :meth:`stop`.

    ``stop`` shuts the executor down while a callback may still be running; rclpy then raises
    ``InvalidHandle`` in the spin thread (the executor's guard condition is being destroyed).
    That is expected during a stop and not reported; at any other time it is raised.
    """

    def __init__(self, executor):
        self.executor = executor
        self._closing = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        from rclpy.exceptions import InvalidHandle

        try:
            self.executor.spin()
        except InvalidHandle:
            if not self._closing.is_set():
                raise

    def stop(self, timeout=5.0):
        """Shut the executor down and wait for the spin thread to end (it must, within
        ``timeout`` s: its nodes are destroyed next)."""
        self._closing.set()
        self.executor.shutdown()
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), f"the executor still spins {timeout} s after stop()"


class Probe:
    """A test node on its own executor thread, recording (receive time, message) per topic."""

    def __init__(self, context, name="probe"):
        from rclpy.executors import SingleThreadedExecutor

        self.node = rclpy.create_node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.msgs: dict[str, list] = {}
        self.lock = threading.Lock()
        self.spinning = Spinning(self.executor)

    def listen(self, cls, topic, profile):
        self.msgs[topic] = []

        def cb(msg):
            with self.lock:
                self.msgs[topic].append((time.monotonic(), msg))
        self.node.create_subscription(cls, topic, cb, profile)

    def since(self, topic, t0):
        """(receive time, message) of everything received on ``topic`` at or after ``t0``."""
        with self.lock:
            return [(t, m) for t, m in self.msgs[topic] if t >= t0]

    def last(self, topic):
        """The latest message on ``topic`` (``None`` before the first)."""
        with self.lock:
            return self.msgs[topic][-1][1] if self.msgs[topic] else None

    def wait(self, topic, predicate=lambda m: True, timeout=20.0):
        """The latest message on ``topic`` that satisfies ``predicate``, waiting for one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for _, m in reversed(self.msgs[topic]):
                    if predicate(m):
                        return m
            time.sleep(0.01)
        raise AssertionError(f"nothing suitable on {topic} within {timeout} s")

    def wait_after(self, topic, after, predicate=lambda m: True, timeout=10.0):
        """(receive time, message) of the first message on ``topic`` received at or after
        ``after`` that satisfies ``predicate``, waiting for one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for t, m in self.msgs[topic]:
                    if t >= after and predicate(m):
                        return t, m
            time.sleep(0.01)
        raise AssertionError(f"nothing suitable on {topic} within {timeout} s")

    def call(self, srv, name, request, timeout=20.0, resend_s=None):
        """The reply of service ``name`` to ``request``, waiting up to ``timeout`` seconds.

        With ``resend_s``, a request not answered within that many seconds is sent again (for
        idempotent requests only, such as parameter reads): a request sent just after the
        service was discovered can be lost while the reply's reader is not matched yet. The
        first reply to arrive is returned.
        """
        client = self.node.create_client(srv, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), name
            futures = [client.call_async(request)]
            deadline = time.monotonic() + timeout
            sent = time.monotonic()
            while not any(f.done() for f in futures):
                now = time.monotonic()
                assert now < deadline, f"{name} did not answer ({len(futures)} requests)"
                if resend_s is not None and now - sent > resend_s:
                    futures.append(client.call_async(request))
                    sent = now
                time.sleep(0.005)
            return next(f for f in futures if f.done()).result()
        finally:
            self.node.destroy_client(client)

    def close(self):
        self.spinning.stop()  # the spin thread ends before the node goes
        self.node.destroy_node()


def sim_status(msg):
    """(status, {key: value}) of catheter_sim in a DiagnosticArray, or (None, {})."""
    for s in msg.status:
        if s.name.startswith("catheter_sim"):
            return s, {kv.key: kv.value for kv in s.values}
    return None, {}
