"""The catheter model in a supervised child process, fed with the newest command (no ROS).

The Cosserat solver is numba code that holds Python's global interpreter lock while it runs; in
its own process it cannot delay the simulation loop's publishing thread. The parent sends
``(seq, CatheterCommand)`` pairs through a pipe; the child drains the pipe to the newest command,
solves it (warm-started) and answers ``("state", seq, CatheterState)`` or
``("rejected", seq, reason)``. A step that fails (budget exceeded, no convergence) is retried
with the same command and a budget doubling up to ``recovery_deadline_s`` (and the model's
offline fallbacks, within that budget) until it converges or a newer command arrives; failed
states are sent too (``converged`` False) so the parent can count and report them. When an
attempt with the whole recovery budget has failed too, the command gets one long attempt
(``fold_deadline_s``) that may also follow the path of equilibria round a fold
(:meth:`~bronchonav.catheter.CatheterModel._trace`, 0.5–3 s of work, more than a retry's
budget): the newest command if it pushes on, once per state the catheter is held in, announced
first with ``("tracing", seq, budget_s)``. The catheter holds its last state meanwhile, as it
does during any retry. A newer command that pulls the catheter back or holds it where it is (an
emergency stop's hold) ends the fallbacks of a failed step, long attempt or retry, between
their sub-steps: it never waits for them (a re-aim or a push waits).

:class:`SolverSupervisor` keeps one child *active* and, by default, a warmed-up *standby*: when
the active child dies (a crash, SIGKILL, out of memory) or stops answering, the standby takes
over at once and is given the last command that was solved, so the catheter comes back to its
last good state; a new standby starts in the background. Without a standby a fresh child is
started (a few seconds: interpreter, map, numba cache). After ``max_restarts`` deaths within
``restart_window_s`` the supervisor gives up and reports ``failed`` (the node then holds and
reports ERROR). Every event reaches the owner through ``on_event`` at once.

Children ignore SIGINT and SIGTERM from birth (a Ctrl-C to the process group is for the parent,
which kills them when it closes) and exit quietly when the parent's end of the pipe closes.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np


_PARENT_SIGNALS = {signal.SIGINT, signal.SIGTERM}
"""Signals meant for the parent (a terminal's Ctrl-C reaches the whole process group)."""


@dataclass(frozen=True)
class SolverConfig:
    """What a solver child needs (picklable: it is sent to a spawned process).

    Attributes
    ----------
    tree : AirwayTree or None
        The airways to solve in (pickled with the configuration: the child reads no map
        folder), or None for free space.
    n_nodes : int
        Solver nodes.
    deadline_s, recovery_deadline_s : float
        Per-step budget, and the largest budget while retrying a failed step (s).
    params : CatheterParams or None
        The device (None: :meth:`~bronchonav.catheter.CatheterParams.default`).
    offline_fallbacks : bool
        Let a failed step's retries use the model's offline fallbacks (trust-region solve,
        relaxation through a fold; see ``CatheterModel``), each attempt still bounded by its
        budget: with a budget that has grown to a second or so, the catheter passes a fold as
        in a rehearsal, instead of stalling there while a controller's own model (offline)
        walks on.
    fold_deadline_s : float
        Budget of the one long attempt, with the trace round a fold, given to a command whose
        retry with the whole ``recovery_deadline_s`` failed (s; 0: none). Needs
        ``offline_fallbacks``.
    """

    tree: object
    n_nodes: int = 40
    deadline_s: float = 0.004
    recovery_deadline_s: float = 0.2
    params: object = None
    offline_fallbacks: bool = True
    fold_deadline_s: float = 8.0


def _serve(conn, config: SolverConfig) -> None:
    """The child's main: warm up, say ``ready``, then solve the newest command until ``None``."""
    import os

    for s in _PARENT_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _PARENT_SIGNALS)
    if hasattr(os, "sched_setscheduler"):  # do not inherit the loop's real-time priority
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass
    try:
        _solve_forever(conn, config)
    except (EOFError, OSError, BrokenPipeError):  # the parent went away
        pass
    finally:
        conn.close()


def _solve_forever(conn, config: SolverConfig) -> None:
    from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams
    from bronchonav.catheter.command import same_command, validate_command
    from bronchonav.errors import CommandError

    params = config.params or CatheterParams.default()
    model = CatheterModel(params, tree=config.tree, n_nodes=config.n_nodes,
                          deadline_s=config.recovery_deadline_s,
                          offline_fallbacks=config.offline_fallbacks)
    # warm-up: compile the numba kernels (bent, inserted, then back) before taking commands
    model.step(CatheterCommand(insertion=0.03, tendon_tension=[1.0] + [0.0] * (len(params.tendons) - 1)))
    model.step(CatheterCommand(insertion=0.0))
    model.deadline_s = config.deadline_s
    conn.send(("ready", -1, model.state))
    retry = None
    exhausted = False  # the last attempt had the whole recovery budget, and failed
    long_from = None  # the state the last long attempt started from: one long attempt per state
    inbox = []  # commands received while a failed step's fallbacks ran
    solving = [None]  # the validated command being solved

    def pulled_back_or_held() -> bool:
        """Whether a command received meanwhile, other than the one being solved, pulls the
        catheter back from the held state or holds it there (an emergency stop's hold), or the
        parent is closing: that one does not wait for a failed step's fallbacks (a re-aim or a
        push waits). Reading the pipe here also keeps it from filling up while they run."""
        while conn.poll():
            item = conn.recv()
            inbox.append(item)
            if item is None:
                return True
            try:
                vc = validate_command(item[1], params)
            except CommandError:  # rejected when its turn comes
                continue
            if (vc.insertion < model.state.insertion or _holds(vc, model.state)) and \
                    not same_command(vc, solving[0]):
                return True
        return False

    model.interrupt = pulled_back_or_held
    while True:
        if inbox or retry is None or conn.poll():
            item = None if None in inbox else inbox[-1] if inbox else conn.recv()
            inbox.clear()
            while item is not None and conn.poll():
                item = conn.recv()
        else:
            item = retry
        if item is None:
            return
        seq, command = item
        try:
            solving[0] = validate_command(command, params)
        except CommandError as exc:
            retry = None
            conn.send(("rejected", seq, str(exc)))
            continue
        budget, held, trace_folds = model.deadline_s, model.state, model.trace_folds
        pushing = solving[0].insertion > held.insertion
        long_attempt = exhausted and pushing and long_from is not held and \
            config.fold_deadline_s > 0 and config.offline_fallbacks
        if long_attempt:
            # the catheter is held at a fold its retries cannot pass (the newest command pushes
            # on from the same state, so goes the same way): one long attempt
            conn.send(("tracing", seq, config.fold_deadline_s))
            model.deadline_s, model.trace_folds = config.fold_deadline_s, True
            long_from = held
        try:
            state = model.step(command)
        finally:
            model.deadline_s, model.trace_folds = budget, trace_folds
        if state.converged:
            retry = None
            exhausted = False
            model.deadline_s = config.deadline_s
        else:
            retry = item
            exhausted = budget >= config.recovery_deadline_s
            model.deadline_s = min(2.0 * budget, config.recovery_deadline_s)
        conn.send(("state", seq, state))


def _holds(vc, state) -> bool:
    """Whether the validated command ``vc`` asks for ``state`` itself: its insertion, roll and
    tendon displacements or tensions (an emergency stop's hold)."""
    if abs(vc.insertion - state.insertion) > 1e-9 or abs(vc.roll - state.roll) > 1e-9:
        return False
    if vc.displacement is not None:
        return bool(np.allclose(vc.displacement, state.tendon_displacements, atol=1e-9))
    return vc.tension is not None and bool(np.allclose(vc.tension, state.tendon_tensions,
                                                       atol=1e-9))


@contextmanager
def _main_not_rerun():
    """Keep a spawned child from importing the parent's ``__main__`` (multiprocessing does, to
    find functions defined there): :func:`_serve` lives here, and a node's main module would
    cost the child's start-up its ROS imports."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__.pop(k) for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__spec__ = None
    try:
        yield
    finally:
        del main.__spec__
        main.__dict__.update(saved)


class SolverProcess:
    """One solver child process and the thread that receives its messages.

    Parameters
    ----------
    config : SolverConfig
    on_message : callable
        Called from the receiver thread with ``(process, kind, seq, value)`` for each message
        (``kind`` ``"ready"``, ``"state"``, ``"tracing"`` or ``"rejected"``) and with
        ``(process, "died", -1, reason)`` once when the child ends without being closed.
    """

    def __init__(self, config: SolverConfig, on_message) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that runs ROS threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, config), name="catheter-solver",
                                 daemon=True)
        # the child is born with SIGINT/SIGTERM blocked (the mask is inherited): a Ctrl-C to the
        # process group while it starts cannot kill it; _serve then ignores and unblocks them
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _PARENT_SIGNALS)
        try:
            with _main_not_rerun():
                self._proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.close()
        self._on_message = on_message
        self._send_lock = threading.Lock()
        self._closing = False
        self.ready = threading.Event()
        self.last_message_time = time.monotonic()
        """Monotonic time (s) of the child's latest message (or of the start)."""
        self._thread = threading.Thread(target=self._receive, name="catheter-solver-rx",
                                        daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._proc.pid

    def _receive(self) -> None:
        while True:
            try:
                kind, seq, value = self._conn.recv()
            except (EOFError, OSError):
                break
            self.last_message_time = time.monotonic()
            if kind == "ready":
                self.ready.set()
            try:
                self._on_message(self, kind, seq, value)
            except Exception:  # noqa: BLE001 — a fault in the owner's handler is said, and
                # the next message still received (else the catheter would silently freeze)
                traceback.print_exc()
        if not self._closing:
            self._proc.join(1.0)
            code = self._proc.exitcode
            how = ("still running" if code is None else
                   f"killed by signal {-code}" if code < 0 else f"exit code {code}")
            self._on_message(self, "died", -1, f"solver process {self.pid} ended ({how})")

    def send(self, seq: int, command) -> bool:
        """Queue a command (the child solves the newest one when it is free); False if the
        child is gone."""
        try:
            with self._send_lock:
                self._conn.send((seq, command))
        except (OSError, BrokenPipeError, ValueError):
            return False
        return True

    @property
    def alive(self) -> bool:
        """Whether the child process runs."""
        return self._proc.is_alive()

    def kill(self) -> None:
        """SIGKILL the child (for a hung child; the receiver then reports ``died``)."""
        if self._proc.is_alive():
            self._proc.kill()

    def close(self, timeout: float = 1.0) -> None:
        """Stop the child process (no ``died`` event). It is killed: it holds nothing that
        needs a graceful end, and a numba process's interpreter teardown takes most of a
        second."""
        self._closing = True
        self.kill()
        self._proc.join(timeout)
        self._conn.close()


@dataclass
class SolverHealth:
    """The supervisor's account of the solver, for diagnostics.

    Attributes
    ----------
    status : str
        ``starting``, ``running``, ``restarting`` (no child answers yet) or ``failed``
        (gave up after too many deaths).
    deaths, restarts : int
        Children that died, and takeovers/restarts done.
    last_death : str
        Why the latest child ended (empty if none did).
    standby : bool
        Whether a warmed-up standby child is ready.
    """

    status: str = "starting"
    deaths: int = 0
    restarts: int = 0
    last_death: str = ""
    standby: bool = False
    death_times: list = field(default_factory=list)


class SolverSupervisor:
    """Keep a solver child running; restart it with the last good command when it dies.

    Parameters
    ----------
    config : SolverConfig
    on_state : callable
        ``on_state(seq, CatheterState)`` for every solved (or failed, ``converged`` False) state
        of the active child; ``seq`` is the sequence number given to :meth:`send` (-1 for the
        first state after start-up).
    on_event : callable
        ``on_event(kind, detail)`` with ``kind`` in ``"rejected"`` (detail ``(seq, reason)``),
        ``"tracing"`` (detail ``(seq, budget_s)``: a long attempt at a fold begins),
        ``"died"``, ``"restarted"``, ``"failed"`` (detail a sentence).
    standby : bool
        Keep a warmed-up second child to take over at once.
    max_restarts : int
        Deaths tolerated within ``restart_window_s`` before giving up.
    restart_window_s : float
        See ``max_restarts`` (s).
    hang_timeout_s : float
        A child that has an unanswered command and sends nothing for this long beyond its
        longest legitimate attempt (``recovery_deadline_s``, or the ``fold_deadline_s`` of a
        long attempt it announced) is killed, and so replaced (s).
    standby_delay_s : float
        The first standby starts this long after the first child is ready (s); later ones at
        once.
    """

    def __init__(self, config: SolverConfig, on_state, on_event, standby: bool = True,
                 max_restarts: int = 5, restart_window_s: float = 60.0,
                 hang_timeout_s: float = 1.0, standby_delay_s: float = 5.0) -> None:
        self.config = config
        self._on_state = on_state
        self._on_event = on_event
        self._use_standby = bool(standby)
        self.max_restarts = int(max_restarts)
        self.restart_window_s = float(restart_window_s)
        self.hang_timeout_s = float(hang_timeout_s) + config.recovery_deadline_s
        self._allowance_s = 0.0
        """Time beyond ``hang_timeout_s`` the active child announced it needs (a long
        attempt), until its next message."""
        self.standby_delay_s = float(standby_delay_s)
        self.health = SolverHealth()
        self._lock = threading.RLock()
        self._closing = False
        self._active: SolverProcess | None = None
        self._standby: SolverProcess | None = None
        self._last_sent: tuple[int, object] | None = None
        self._last_good: tuple[int, object] | None = None
        self._sent_at: float | None = None
        self._active = SolverProcess(config, self._on_message)
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="catheter-solver-watch",
                                         daemon=True)

    def start(self, timeout: float = 120.0) -> bool:
        """Wait until a child runs (returns whether one does: False after ``timeout`` or when
        the children kept dying), then start the hang monitor; the standby starts once the
        first child runs."""
        deadline = time.monotonic() + timeout
        while self.health.status not in ("running", "failed") and time.monotonic() < deadline:
            time.sleep(0.02)
        self._monitor.start()
        return self.health.status == "running"

    # -- commands ---------------------------------------------------------------------------
    def send(self, seq: int, command) -> bool:
        """Give the active child a command; False when no child can take it now."""
        with self._lock:
            self._last_sent = (seq, command)
            self._sent_at = time.monotonic()
            active = self._active if self.health.status == "running" else None
        return active is not None and active.send(seq, command)

    def good(self, seq: int) -> None:
        """Record that the command ``seq`` was solved (the owner calls this on a converged
        state): it is the one a restarted child is given."""
        with self._lock:
            if self._last_sent is not None and self._last_sent[0] == seq:
                self._last_good = self._last_sent
                self._sent_at = None

    # -- messages from children (receiver threads) ------------------------------------------
    def _on_message(self, proc: SolverProcess, kind: str, seq: int, value) -> None:
        with self._lock:
            role = ("active" if proc is self._active else
                    "standby" if proc is self._standby else "old")
        if kind == "died":
            self._died(proc, role, value)
        elif role != "active":
            if role == "standby" and kind == "ready":
                with self._lock:
                    self.health.standby = True
        elif kind == "tracing":
            with self._lock:
                self._allowance_s = float(value)
            self._on_event("tracing", (seq, value))
        elif kind == "rejected":
            with self._lock:
                self._allowance_s = 0.0
                if self._last_sent is not None and self._last_sent[0] == seq:
                    self._sent_at = None
            self._on_event("rejected", (seq, value))
        elif kind == "ready":
            with self._lock:
                status = self.health.status
                if status == "restarting":
                    self._resume(proc)
                fresh = self._last_sent is None  # no command yet: its state at rest is current
            if fresh:
                self._on_state(seq, value)
            if status == "starting":
                with self._lock:
                    self.health.status = "running"
                # the first standby waits a little: its warm-up (seconds of CPU) should not
                # compete with the start-up of the rest of the graph
                timer = threading.Timer(self.standby_delay_s, self._start_standby)
                timer.daemon = True
                timer.start()
        else:
            with self._lock:
                self._allowance_s = 0.0
            self._on_state(seq, value)

    def _died(self, proc: SolverProcess, role: str, reason: str) -> None:
        if self._closing:
            return
        now = time.monotonic()
        with self._lock:
            self.health.deaths += 1
            self.health.last_death = reason
            if role == "standby":
                self._standby = None
                self.health.standby = False
            if role != "active":
                give_up = False
            else:
                self.health.death_times = [t for t in self.health.death_times
                                           if now - t < self.restart_window_s] + [now]
                give_up = len(self.health.death_times) > self.max_restarts
                self._active = None
                self._allowance_s = 0.0
                self.health.status = "failed" if give_up else "restarting"
        if role != "active":
            if role == "standby":
                self._start_standby()
            return
        self._on_event("died", reason)
        if give_up:
            self._on_event("failed", f"{self.health.deaths} solver deaths, the last within "
                                     f"{self.restart_window_s:.0f} s of {self.max_restarts} "
                                     f"others; giving up ({reason})")
            return
        with self._lock:
            standby, self._standby = self._standby, None
            self.health.standby = False
            if standby is not None and standby.alive:
                self._active = standby
                if standby.ready.is_set():
                    self._resume(standby)
                # else _resume runs when it says "ready" (it is already warming up)
            else:
                self._active = SolverProcess(self.config, self._on_message)
        if self._use_standby:
            self._start_standby()

    def _resume(self, proc: SolverProcess) -> None:
        """Make ``proc`` the running child: give it the last good command, then the newest."""
        self.health.status = "running"
        self.health.restarts += 1
        for item in (self._last_good, self._last_sent):
            if item is not None:
                proc.send(*item)
        if self._last_sent is not None:
            self._sent_at = time.monotonic()
        self._on_event("restarted", f"solver process {proc.pid} took over "
                                    f"(restart {self.health.restarts})")

    def _start_standby(self) -> None:
        if not self._use_standby or self._closing:
            return
        with self._lock:
            if self._standby is None:
                self._standby = SolverProcess(self.config, self._on_message)

    def _watch(self) -> None:
        """Kill an active child that has an unanswered command and says nothing."""
        while not self._stop.wait(0.1):
            with self._lock:
                active, sent_at = self._active, self._sent_at
                timeout = self.hang_timeout_s + self._allowance_s
            if (active is not None and sent_at is not None and active.ready.is_set()
                    and time.monotonic() - max(sent_at, active.last_message_time) > timeout):
                active.kill()

    @property
    def active_pid(self) -> int | None:
        """Process id of the active child (None while restarting)."""
        with self._lock:
            return None if self._active is None else self._active.pid

    def close(self) -> None:
        """Stop every child (no further events)."""
        self._closing = True
        self._stop.set()
        with self._lock:
            procs = [p for p in (self._active, self._standby) if p is not None]
        for p in procs:
            p.close()
