"""The catheter model in a child process, fed with the newest command (no ROS imports).

The Cosserat solver is numba code that holds Python's global interpreter lock while it runs;
in its own process it cannot delay the simulation loop's publishing thread. The parent sends
:class:`~bronchonav.catheter.CatheterCommand` objects through a pipe; the child drains the pipe
to the newest command, solves it (warm-started) and sends back ``("state", CatheterState)`` or
``("rejected", reason)``. A step that fails (budget exceeded, no convergence) is retried with
the same command and a budget doubling up to ``recovery_deadline_s`` until it converges or a
newer command arrives; failed states are sent too (``converged`` False) so the parent can count
them.
"""

from __future__ import annotations

import multiprocessing as mp
import threading


def _serve(conn, map_spec: str, n_nodes: int, deadline_s: float, recovery_deadline_s: float):
    import os

    if hasattr(os, "sched_setscheduler"):  # do not inherit the loop's real-time priority
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass
    from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams
    from bronchonav.errors import CommandError
    from bronchonav.ros.resources import load_airway_map

    model = CatheterModel(CatheterParams.default(), tree=load_airway_map(map_spec).tree,
                          n_nodes=n_nodes, deadline_s=recovery_deadline_s)
    # warm-up: compile the numba kernels (bent, inserted, then back) before taking commands
    model.step(CatheterCommand(insertion=0.03, tendon_tension=[1.0, 0.0, 0.0, 0.0]))
    model.step(CatheterCommand(insertion=0.03, tendon_displacement=[5e-4, 0.0, -5e-4, 0.0]))
    state = model.step(CatheterCommand(insertion=0.0))
    model.deadline_s = deadline_s
    conn.send(("state", state))
    retry = None
    while True:
        if retry is None or conn.poll():
            command = conn.recv()
            while conn.poll():
                command = conn.recv()
        else:
            command = retry
        if command is None:
            break
        try:
            state = model.step(command)
        except CommandError as exc:
            conn.send(("rejected", str(exc)))
            continue
        if state.converged:
            retry = None
            model.deadline_s = deadline_s
        else:
            retry = command
            model.deadline_s = min(2.0 * model.deadline_s, recovery_deadline_s)
        conn.send(("state", state))
    conn.close()


class SolverProcess:
    """Run the catheter model for ``map_spec`` in a child process.

    Parameters
    ----------
    map_spec : str
        Map folder or ``phantom:NAME`` (see :func:`bronchonav.ros.resources.load_airway_map`).
    n_nodes : int
        Solver nodes.
    deadline_s, recovery_deadline_s : float
        Per-step budget, and the largest budget while retrying a failed step (s).
    on_message : callable
        Called from a receiver thread with ``("state", CatheterState)`` or
        ``("rejected", reason)``.
    """

    def __init__(self, map_spec: str, n_nodes: int, deadline_s: float,
                 recovery_deadline_s: float, on_message) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that runs ROS threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, map_spec, n_nodes, deadline_s,
                                                      recovery_deadline_s),
                                 name="catheter-solver", daemon=True)
        self._proc.start()
        child.close()
        self._on_message = on_message
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._receive, name="catheter-solver-rx",
                                        daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                return
            self._on_message(message)

    def send(self, command) -> None:
        """Queue a command (the child solves the newest one when it is free)."""
        with self._send_lock:
            self._conn.send(command)

    @property
    def alive(self) -> bool:
        """Whether the child process runs."""
        return self._proc.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child process."""
        try:
            self.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout)
        self._conn.close()
