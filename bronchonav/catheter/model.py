"""The catheter model: ``CatheterModel.step(command) -> CatheterState``.

Quasi-static Cosserat rod + tendons (see :mod:`bronchonav.catheter.rod`) solved by shooting: the
unknowns are the composite base force and moment (and, in displacement control, the tendon
tensions); the residual is the tip boundary condition. Each step is warm-started from the secant
prediction through the last two solutions (:mod:`bronchonav.catheter.predictor`), then, if that
fails, from the previous solution, with the previous Jacobian (:mod:`bronchonav.catheter.solver`),
and has a bounded iteration count; a step that fails keeps the previous valid state, returned
with ``converged=False`` and a ``message``. Before giving up, a failed step is retried as an
adaptive continuation from the last valid command (sub-steps halved on failure, grown on
success, each started from the secant through the last two on the way, contact tracking carried
from sub-step to sub-step). Offline (no deadline, unless ``offline_fallbacks`` says otherwise)
more fallbacks run: a trust-region solve when Newton's line search stalls
(:func:`bronchonav.catheter.solver.solve`), and, where the quasi-static path folds (no
equilibrium near the last one: the tip slips off a wall, the shaft snaps to another shape), a
pseudo-transient relaxation to the equilibrium beyond (:meth:`CatheterModel._relax`) and, if
that settles nowhere, the path of equilibria followed round the fold by pseudo-arclength
continuation (:meth:`CatheterModel._trace`, :mod:`bronchonav.catheter.arclength`; without a
deadline, unless ``trace_folds`` says otherwise); the state then says ``snap-through`` in its
``message``. A snap-through that ends with the backbone doubled back through the tree (a
hairpin through a carina: :mod:`bronchonav.catheter.course`) fails the step instead. A
pull-back that finds no path back from the held state (it can sit past a fold that the way
out does not fold back through) is solved from the last state accepted at or below the
commanded insertion on the way in, as a snap-through (``message`` says so): a catheter can
always be pulled back.

Offline use (the Python API, rehearsal, campaigns) has no wall-clock deadline by default, so the
same commands give the same states whatever the machine load. A real-time loop passes
``deadline_s``: a step that overruns it fails (previous state kept, ``message`` says so).

Frames
------
``catheter_base``: origin at the insertion point (the top of the trachea when a tree is given),
``z`` along the insertion axis pointing into the patient, roll measured about ``z``. With an
airway tree the states are reported in the CT frame via :attr:`CatheterModel.base_pose_ct`.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Callable, NamedTuple

import numpy as np

from bronchonav.airway.tree import AirwayTree, resample_polyline
from bronchonav.catheter.arclength import trace_past_fold
from bronchonav.catheter.command import (CatheterCommand, ValidCommand, interpolate_commands,
                                         same_command, validate_command)
from bronchonav.catheter.contact import WallModel
from bronchonav.catheter.course import double_back
from bronchonav.catheter.layout import Layout, build_layout, grid_with_points
from bronchonav.catheter.params import CatheterParams
from bronchonav.catheter.predictor import Solved, secant_guess
from bronchonav.catheter.rod import Outputs, Pieces, PointLoads, TendonLoads, Wall, integrate
from bronchonav.catheter.solver import solve
from bronchonav.catheter.state import SNAP_THROUGH, CatheterState
from bronchonav.errors import InputError
from bronchonav.geometry.polyline import arc_length, fit_line

MIN_INSERTION = 1e-4
"""Below this inserted length (m) the catheter is treated as not inserted (all nodes at the
base)."""

MAX_SUBSTEPS = 24
"""Most sub-step solves of one continuation (bounds the work of a failing step, not by time)."""

RELAX_DRAG = 1.0
"""Initial relaxation spring per node, in units of the rod's stiffness scale EI_min/L³."""

RELAX_STEPS = 40
"""Most pseudo-steps of one relaxation (bounds the work of a step through a fold)."""

RELAX_STIFFEN = 4
"""Most times the relaxation springs are stiffened (×4) after a failed pseudo-step."""

RELAX_SETTLED_M = 1e-5
"""A relaxation has settled once a pseudo-step moves no node by more than this (m)."""

RESYNC_DRAGS = (10.0, 100.0)
"""Springs (units of EI_min/L³) holding the nodes to an observed backbone in the first solve of a
re-synchronisation (:meth:`CatheterModel.resync`), tried in turn from the model's base loads
and from none: stiff enough that the solve stays with the observed shape rather than the
model's own, soft enough for the shooting to converge."""

RELAX_EVALUATIONS = 2000
"""Most residual evaluations one relaxation may spend (a deterministic bound on its work; under
a real-time deadline, the deadline bounds it too)."""

COMPLEMENTARITY_SCALE = 1e-3
"""m per N: weighs tension against displacement in the slack-wire complementarity residual."""

TRACE_EVALUATIONS = 8000
"""Residual evaluations one trace round a fold may take (:meth:`CatheterModel._trace`; the
traces that got round in the cohort took 1 000–5 200, in up to 330 arclength steps)."""

TRACE_RETREAT = 4.0
"""How far back a trace's path may go, in commanded steps (``w`` below ``-TRACE_RETREAT``): a
snap-through is local, and a path that retreats farther is not coming back within reach (the
traces that got round went back 0–3 steps; those that did not, 7–110 before a 600-step
bound)."""

_TRACED_ALONG = "traced along the quasi-static path"  # to the command without a fold

PULL_BACK_HISTORY = 64
"""Accepted states kept as starts for a pull-back the held state has no path for (at the
navigator's 1 mm steps, the last 64 mm of the way)."""


TRACHEA_AXIS_FRACTION = 0.75
"""Part of the trachea (from its top, by arc length) whose least-squares line is the insertion
axis (:func:`base_pose_from_tree`). On six maps extracted from phantom CTs the axis over the
first 10 mm was 0–5.5° off the generator's straight trachea, over the upper half 0–1.0°, over
three quarters 0–0.6°, over the whole 0.1–0.4°; the lowest quarter is left out because a real
trachea bends there (the aortic arch, the carina), which the phantom's does not."""


def base_pose_from_tree(tree: AirwayTree) -> np.ndarray:
    """The ``catheter_base`` → CT transform for a tree (4×4).

    ``z`` is the least-squares line through the upper three quarters of the trachea's
    centerline (:data:`TRACHEA_AXIS_FRACTION`), pointing into the patient; the origin is the first
    centerline point projected onto that line. ``x`` is the CT ``x`` axis (patient left) made
    orthogonal to ``z`` (CT ``y`` if the trachea runs along CT ``x``); ``y = z × x``.

    A line over most of the trachea rather than its first centimetre: an extracted centerline's
    top end wiggles by a millimetre or curls where the scan starts, and the first 10 mm of it
    tilted the shipped map's insertion axis by 5.5° (docs/navigation.md).
    """
    trachea = tree.trachea
    p, _, s = resample_polyline(trachea.points, trachea.radii, 5e-4)
    axis = fit_line(p[s <= TRACHEA_AXIS_FRACTION * s[-1]])
    z = axis.direction
    ref = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = ref - (ref @ z) * z
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2] = x, np.cross(z, x), z
    T[:3, 3] = axis.origin + ((p[0] - axis.origin) @ z) * z
    return T


def _quat_z(angle: float) -> np.ndarray:
    return np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])


def _quat_to_rot(q: np.ndarray) -> np.ndarray:
    """(N, 4) unit quaternions (w, x, y, z) → (N, 3, 3) rotation matrices."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


_KERNELS_READY = False

_NO_LOADS = PointLoads(np.zeros((0, 3)), np.zeros((0, 3)))
_NO_SAMPLES_POS, _NO_SAMPLES_QUAT = np.zeros((0, 3)), np.zeros((0, 4))
_EMPTY_1D, _EMPTY_2D = np.zeros(0), np.zeros((0, 0))
"""Read-only placeholders for kernel outputs and inputs a solve does not use."""


def _warm_up_kernels() -> None:
    """Compile (or load from numba's cache) the kernels once per process, outside any deadline."""
    global _KERNELS_READY
    if _KERNELS_READY:
        return
    params = CatheterParams.uniform_rod(0.1, 1.0, 1.0, 1e3, 1e3)
    from bronchonav.airway.tree import Branch
    tree = AirwayTree([Branch(0, None, 0, [[0, 0, 0], [0, 0, -0.2]], [0.01, 0.01])])
    _KERNELS_READY = True
    for t in (None, tree):
        model = CatheterModel(params, tree=t, n_nodes=3, deadline_s=60.0)
        model.step(CatheterCommand(insertion=0.1, tip_force=[0.1, 0.0, 0.0]))


class _Problem:
    """One shooting problem: a validated command on a layout, with frozen contact tracking.

    Tendon friction memory (the previous state's tension profiles) is read from ``model.state``;
    see :meth:`_previous_profile`.
    """

    def __init__(self, model: "CatheterModel", vc: ValidCommand, layout: Layout, tracking,
                 ref=None, drag: float = 0.0):
        self.vc = vc
        self.layout = layout
        n_t = self.n_t = len(model.params.tendons)
        R_bo = model._R_base_out
        g = R_bo @ (model.gravity if vc.gravity is None else vc.gravity)
        fdist = np.ascontiguousarray(layout.mass[:, None] * g[None, :]
                                     + (R_bo @ vc.distributed_force)[None, :])
        self.pieces = Pieces(layout.kse, layout.kbt, layout.ustar, fdist, layout.act)
        L = layout.length
        if len(vc.load_arc) == 0:
            self.f_tip, self.l_tip = R_bo @ vc.tip_force, R_bo @ vc.tip_moment
            self.loads = _NO_LOADS
            self.grid = grid_with_points(layout, vc.load_arc, vc.output_arc_lengths) \
                if len(vc.output_arc_lengths) else layout.grid
        else:
            tol = 1e-9 * max(L, 1e-9)
            at_tip = vc.load_arc >= L - tol
            inside = (vc.load_arc > tol) & ~at_tip
            self.f_tip = R_bo @ (vc.tip_force + vc.load_force[at_tip].sum(axis=0))
            self.l_tip = R_bo @ (vc.tip_moment + vc.load_moment[at_tip].sum(axis=0))
            self.loads = PointLoads(np.ascontiguousarray(vc.load_force[inside] @ R_bo.T),
                                    np.ascontiguousarray(vc.load_moment[inside] @ R_bo.T))
            self.grid = grid_with_points(layout, vc.load_arc[inside], vc.output_arc_lengths)
        self.q0 = _quat_z(vc.roll)
        self.F_s = layout.min_EI / L ** 2
        self.M_s = self.F_s * L
        self.disp = vc.displacement is not None
        self.tau = np.zeros(n_t) if self.disp else vc.tension + layout.pretension
        self.mu = layout.friction
        self.track = layout.track_friction
        self.td = TendonLoads(model._tendon_r, self.tau, self.mu,
                              self._previous_profile(model.state, L), self.track)
        n, n_s = len(layout.arc), len(vc.output_arc_lengths)
        if self.track:
            friction = (np.zeros((n, n_t)), np.zeros(n_t), np.zeros(n_t), np.zeros(n_t))
        else:  # not written by the kernel
            friction = (_EMPTY_2D, _EMPTY_1D, _EMPTY_1D, _EMPTY_1D)
        samples = (np.empty((n_s, 3)), np.empty((n_s, 4))) if n_s else (_NO_SAMPLES_POS,
                                                                         _NO_SAMPLES_QUAT)
        self.out = Outputs(np.empty((n, 3)), np.empty((n, 4)), np.empty((n, 3)), np.empty((n, 3)),
                           np.zeros((n, 6)), np.zeros((n, 3)), *samples, np.zeros(n_t),
                           friction[0], friction[1], friction[2], friction[3], np.zeros(6))
        self.pos, self.quat, self.VU, self.Fc = self.out.pos, self.out.quat, self.out.VU, \
            self.out.Fc
        wall = model._wall
        window = int(model.contact_window)
        fric = np.array([model.friction if ref is not None else 0.0, model.friction_slip])
        ref = np.zeros((n, 3)) if ref is None else np.ascontiguousarray(ref, dtype=float)
        if wall is None or tracking is None:
            none = np.zeros((n, 0), dtype=np.int64)
            self.wall = Wall(none, none, window, np.zeros(1, dtype=np.int64), np.zeros((1, 3)),
                             np.zeros(1), 0.0, 0.0, 1.0, ref, fric, float(drag))
        else:
            h = L / (n - 1)
            self.wall = Wall(tracking[0], tracking[1], window, wall.b_off, wall.bp, wall.br,
                             float(wall.r_cath), float(model.contact_stiffness * h),
                             float(model.contact_smoothing), ref, fric, float(drag))

    # unknowns: z = [N0/F_s, M0/M_s, tau_disp/1 N]
    def unpack(self, z: np.ndarray):
        x = np.empty(6)
        x[:3] = z[:3] * self.F_s
        x[3:] = z[3:6] * self.M_s
        if self.disp:
            self.tau[:] = z[6:]
        return x

    def pack(self, x: np.ndarray, tau: np.ndarray) -> np.ndarray:
        z = np.concatenate([x[:3] / self.F_s, x[3:] / self.M_s])
        return np.concatenate([z, tau]) if self.disp else z

    def physical(self, z: np.ndarray) -> np.ndarray:
        """Base force, moment (and tensions in displacement control) from scaled unknowns."""
        x = self.unpack(z)
        return np.concatenate([x, z[6:]]) if self.disp else x

    def _previous_profile(self, prev, L: float) -> np.ndarray:
        """The tendons' tension profiles of the previous state at this grid's breakpoints (N).

        Tendon friction memory: a tendon's material points are fixed relative to the tip, so the
        profile is carried over at equal distance from the tip (the newly inserted proximal part
        takes the most proximal value). No previous profile: zero (the first pull slips).
        """
        if not self.track:
            return _EMPTY_2D
        if prev is None or prev.tendon_tension_profile is None:
            return np.zeros((len(self.grid.s_pts), self.n_t))
        d_prev = (prev.insertion - prev.arc_length)[::-1]
        d_new = L - self.grid.s_pts
        values = prev.tendon_tension_profile[::-1]
        return np.ascontiguousarray(np.column_stack(
            [np.interp(d_new, d_prev, values[:, i]) for i in range(self.n_t)]))

    def run(self, z: np.ndarray, full: bool) -> None:
        x = self.unpack(z)
        integrate(x, self.q0, self.grid, self.pieces, self.td, self.loads, self.wall, self.out,
                  full)

    def displacements(self) -> np.ndarray:
        """Tendon pulls (m) of the last run, relative to each tendon's zero offset (see
        :class:`CatheterState`)."""
        lay = self.layout
        if self.track:  # the wire stretches by the local tension along its acting span
            mean = (self.tau * (lay.wire_length - lay.ref_span) + self.out.tint) / lay.wire_length
        else:
            mean = self.tau
        return (lay.ref_span - self.out.tlen) + lay.out_compression @ self.tau \
            + lay.wire_compliance * mean - lay.zero_offset

    def residual(self, z: np.ndarray) -> np.ndarray:
        self.run(z, False)
        res = self.out.res
        out = np.empty(6 + (self.n_t if self.disp else 0))
        out[:3] = (res[:3] - self.f_tip) / self.F_s
        out[3:6] = (res[3:] - self.l_tip) / self.M_s
        if self.disp:
            gap = self.displacements() - self.vc.displacement
            out[6:] = np.minimum(self.tau * COMPLEMENTARITY_SCALE, gap) / COMPLEMENTARITY_SCALE
        return out


class _RelaxStart(NamedTuple):
    """Where a relaxation starts (:meth:`CatheterModel._relax`): the shape (positions, arc;
    base frame) its springs are anchored to, the occupied branch ids, base loads ``x`` and
    Jacobian ``J`` of a solve held to it, and the spring stiffness ``drag`` (N/m per node)."""

    shape: tuple
    prefer: np.ndarray | None
    x: np.ndarray
    J: np.ndarray | None
    drag: float


class CatheterModel:
    """A tendon-driven catheter inserted through a fixed base, optionally inside an airway tree.

    Parameters
    ----------
    params : CatheterParams
    tree : AirwayTree or None
        Airway tree (CT frame). When given, the base is at the top of the trachea along its axis
        (:func:`base_pose_from_tree`), the wall contact is on, and states are in the CT frame.
    n_nodes : int
        Output nodes along the inserted length (>= 3).
    deadline_s : float or None
        Wall-clock budget per step (s) for real-time use; a step that overruns it fails (previous
        state kept). ``None`` (default): no deadline, results independent of machine load.
    offline_fallbacks : bool or None
        Whether a failed step may try the trust-region solve and the relaxation through a fold
        (see the module docstring). ``None`` (default): only without a deadline (offline use).
        ``True``: under a deadline too, each fallback still stopping at it — the real-time
        simulator retries a failed step with growing budgets, and so passes folds as the
        offline model does instead of stalling at them. ``False``: never.
    max_iter : int
        Newton/Broyden iteration bound per solve. Where the catheter presses on the wall Newton
        can creep the last decades to the tolerance (a step of a recorded jam stopped at 30
        iterations with the residual at 4·10⁻⁵ and converged with more); a real-time caller's
        deadline bounds a solve before this does.
    gravity : sequence of 3 float or None
        Gravitational acceleration (m/s²) in the output frame; ``None`` for no gravity.
    contact_stiffness : float
        Wall penalty stiffness per unit catheter length (N/m²).
    contact_smoothing : float
        Penetration over which the penalty stiffens smoothly (m).
    tol : float
        Convergence tolerance on the scaled residual (force / (EI_min/L²), moment / (EI_min/L)).
    max_jump_m : float or None
        Largest move of any backbone node (at equal arc length from the base) accepted in one
        solve (m). A Newton solve can converge to a far-away equilibrium (the distal catheter
        folded back); such a solve is retried in continuation sub-steps, each held to this
        bound, so the model follows the quasi-static path. A move that persists at the
        smallest sub-step (a genuine snap-through) fails the step. ``None`` disables the check.
    friction : float
        Wall friction coefficient (0: frictionless). Quasi-static and incremental: each node's
        friction opposes the move of its material point since the previous state (or sub-step),
        regularised over ``friction_slip`` (m) of slip.
    trace_folds : bool or None
        Whether a step whose relaxation settles nowhere follows the path of equilibria round
        the fold (:meth:`_trace`, 0.6–3 s of work). ``None`` (default): only without a
        deadline. ``True``: under a deadline too, stopping at it — the real-time simulator's
        solver gives one long attempt to a step that its retries could not solve
        (:mod:`bronchonav.catheter.runtime.solver_process`). ``False``: never (a controller's
        model in the ROS graph, whose steps must keep pace with the catheter).

    Examples
    --------
    >>> model = CatheterModel(CatheterParams.default(), n_nodes=30)
    >>> state = model.step(CatheterCommand(insertion=0.1, tendon_tension=[3.0, 0, 0, 0]))
    >>> bool(state.converged), state.positions.shape
    (True, (30, 3))
    """

    def __init__(self, params: CatheterParams, tree: AirwayTree | None = None, n_nodes: int = 50,
                 deadline_s: float | None = None, max_iter: int = 60, gravity=None,
                 contact_stiffness: float = 1.0e5, contact_smoothing: float = 8.0e-4,
                 tol: float = 1e-8, friction: float = 0.0, friction_slip: float = 5e-5,
                 max_jump_m: float | None = 15e-3,
                 offline_fallbacks: bool | None = None,
                 trace_folds: bool | None = None) -> None:
        if int(n_nodes) < 3:
            raise InputError("n_nodes must be >= 3")
        self.params = params
        self.tree = tree
        self.n_nodes = int(n_nodes)
        self.deadline_s = None if deadline_s is None else float(deadline_s)
        self.offline_fallbacks = offline_fallbacks
        self.trace_folds = trace_folds
        self.interrupt: Callable[[], bool] | None = None
        """Asked between the sub-steps of a failed step's fallbacks (continuation, relaxation,
        trace round a fold); True ends them, failing the step — a real-time caller's newer
        command that should not wait for them (:mod:`~bronchonav.catheter.runtime.solver_process`)."""
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.max_jump_m = None if max_jump_m is None else float(max_jump_m)
        self._jumped = False
        self._was_interrupted = False
        self._probing = False  # inside predict(): no offline fallbacks (a probe may fail)
        self.gravity = np.zeros(3) if gravity is None else np.asarray(gravity, float).reshape(3)
        self.contact_stiffness = float(contact_stiffness)
        self.contact_smoothing = float(contact_smoothing)
        self.contact_window = 8
        self.friction = float(friction)
        self.friction_slip = float(friction_slip)
        self._tendon_r = np.ascontiguousarray([t.offset_body for t in params.tendons],
                                              dtype=float).reshape(-1, 3)
        if tree is not None:
            self.base_pose_ct = base_pose_from_tree(tree)
            T_base_ct = np.linalg.inv(self.base_pose_ct)
            self._wall = WallModel.from_tree(tree, T_base_ct, params.radius)
            self.frame = "ct"
        else:
            self.base_pose_ct = np.eye(4)
            self._wall = None
            self.frame = "catheter_base"
        self._R_base_out = self.base_pose_ct[:3, :3].T
        self._layout_cache: tuple[float, Layout] | None = None
        self.reset()
        _warm_up_kernels()

    # -- public -----------------------------------------------------------------------------
    @property
    def state(self) -> CatheterState | None:
        """The last valid state (``None`` before the first successful step)."""
        return self._state

    def reset(self) -> None:
        """Forget the previous state and warm start."""
        self._state: CatheterState | None = None
        self._vc: ValidCommand | None = None
        self._x: np.ndarray | None = None
        self._J: np.ndarray | None = None
        self._pos_base: np.ndarray | None = None
        self._arc: np.ndarray | None = None
        self._last: Solved | None = None
        """The last solve's command and unknowns, and the one before it on a continuous path
        (the secant predictor's two points; ``_before`` is dropped after a jump)."""
        self._before: Solved | None = None
        self._refused: tuple | None = None
        """The last step that failed without a deadline: (the state it started from, the
        model's settings, its command, the failed state)."""
        self._history: collections.deque = collections.deque(maxlen=PULL_BACK_HISTORY)
        """(insertion m, :meth:`snapshot`) of the last accepted steps, oldest first."""

    def step(self, command: CatheterCommand) -> CatheterState:
        """Solve the equilibrium for ``command`` (warm-started from the previous step).

        Raises
        ------
        CommandError
            If the command is invalid (the model state is unchanged).

        Returns
        -------
        CatheterState
            The new state, or — when the solve fails within the iteration bound and deadline —
            the previous valid state with ``converged=False`` and a ``message``.
        """
        t0 = time.perf_counter()
        vc = validate_command(command, self.params)
        deadline = np.inf if self.deadline_s is None else t0 + self.deadline_s
        if vc.insertion < MIN_INSERTION:
            return self._accept(self._retracted_state(vc), vc, None, None, t0)
        self._jumped = False
        self._was_interrupted = False
        if self._x is None and vc.displacement is not None:
            # cold start in displacement control: every tendon sits at the slack/taut boundary,
            # where the complementarity residual is not smooth; solve all-slack first
            self._cold_start(vc, deadline, t0)
        offline = (self.deadline_s is None if self.offline_fallbacks is None
                   else bool(self.offline_fallbacks)) and not self._probing
        trace = offline and (self.deadline_s is None if self.trace_folds is None
                             else bool(self.trace_folds))
        refused = self._refused
        if self.deadline_s is None and refused is not None and refused[0] is self._state and \
                refused[1] == self._settings() and same_command(refused[2], vc):
            # without a clock the solve is a function of the state, the model's settings and
            # the command: the same again fails again, after the same (costly) fallbacks
            return dataclasses.replace(refused[3], iterations=0, evaluations=0,
                                       solve_time_s=time.perf_counter() - t0)
        res, prob, iters, evals = self._solve_from(
            vc, secant_guess(self._before, self._last, vc), self._x, self._J, deadline,
            fallback=offline)
        snap = ""
        if not res.converged:
            res, prob, iters, evals = self._continuation(vc, deadline, res, prob, iters, evals)
            if not res.converged and self._jumped and not self._interrupted():
                # the move persists at the smallest sub-step: a genuine snap-through
                res, prob, iters, evals = self._snap(vc, deadline, iters, evals)
                snap = res.reason if res.converged else ""
            if not res.converged and self._state is not None and offline and \
                    not self._interrupted():
                # no equilibrium near the last one (a fold of the quasi-static path): relax
                # from the last valid state to the full command (starting from the
                # continuation's furthest sub-step instead was measured and did not help)
                res, prob, iters, evals = self._relax(vc, deadline, iters, evals)
                if not res.converged and self._vc is not None and trace and \
                        not self._interrupted():
                    # the relaxation settles nowhere: follow the equilibrium path round the fold
                    res, prob, iters, evals = self._trace(vc, deadline, res, prob, iters, evals)
                snap = res.reason if res.converged and res.reason != _TRACED_ALONG else ""
        held = None
        if not res.converged and not self._probing and not self._interrupted():
            pulled = self._pull_back(vc, deadline, offline, iters, evals)
            if pulled is not None:  # converged from an earlier state
                res, prob, iters, evals, held = pulled
                snap = res.reason
        if not res.converged and self._was_interrupted:
            res.reason += "; interrupted by a newer command"
        state = self._conclude(vc, res, prob, iters, evals, t0,
                               f"{SNAP_THROUGH}: {snap}" if snap else "", held)
        if not self._probing:  # a probe has no fallbacks: its failures say nothing of a step's
            self._refused = None if state.converged or self.deadline_s is not None else \
                (self._state, self._settings(), vc, state)
            if state.converged:
                self._history.append((state.insertion, self.snapshot()))
        return state

    def _pull_back(self, vc: ValidCommand, deadline: float, offline: bool, iters: int,
                   evals: int):
        """Solve a pull-back that failed from the held state from the last accepted state at or
        below its insertion instead; None if ``vc`` is no pull-back or there is no such state.

        Returns ``(result, problem, iters, evals, held)``, converged, with the model restored
        to that start (``held``: the snapshot to go back to if the step is still refused);
        ``result.reason`` says where it was solved from.
        """
        if self._state is None or vc.insertion >= self._state.insertion - 1e-9:
            return None
        start = next(((ins, snap) for ins, snap in reversed(self._history)
                      if ins <= vc.insertion + 1e-9), None)
        if start is None:
            return None
        held, held_insertion = self.snapshot(), self._state.insertion
        self.restore(start[1])
        res, prob, it, ev = self._solve_from(vc, None, self._x, self._J, deadline,
                                             fallback=offline)
        iters, evals = iters + it, evals + ev
        if not res.converged and not self._interrupted():
            res, prob, iters, evals = self._continuation(vc, deadline, res, prob, iters, evals)
        if not res.converged:
            self.restore(held)
            return None
        res.reason = (f"pulled back from the state at insertion {start[0] * 1e3:.1f} mm (the "
                      f"held state at {held_insertion * 1e3:.1f} mm had no path back)")
        return res, prob, iters, evals, held

    def _interrupted(self) -> bool:
        """Whether the real-time caller's :attr:`interrupt` ends this step's fallbacks (once it
        has, for the rest of the step)."""
        self._was_interrupted = self._was_interrupted or (
            self.interrupt is not None and self.interrupt())
        return self._was_interrupted

    def _settings(self) -> tuple:
        """What else a step's outcome depends on besides the state and the command."""
        return (self.max_iter, self.tol, self.max_jump_m, self.offline_fallbacks,
                self.trace_folds, self.friction, self.friction_slip, self.contact_stiffness,
                self.contact_smoothing, self.contact_window, tuple(self.gravity))

    def resync(self, command: CatheterCommand, positions_ct: np.ndarray) -> CatheterState:
        """Solve ``command`` from an observed backbone instead of the model's last state.

        A controller's model and the catheter it mirrors can settle on different equilibria for
        the same commands where the quasi-static path folds (one snaps through, the other does
        not: the shaft loops in a wide airway, the tip falls back into another branch); from
        then on the model's predictions are of a catheter that is not there. This re-starts the
        model from what a shape sensor sees: the contact is tracked from the observed shape (the
        airways its nodes are in), and the rod is relaxed from it (every node held by a spring
        to its observed position, re-anchored each pseudo-step until the shape settles, as the
        relaxation through a fold), then ``command`` is solved plainly from there.

        Parameters
        ----------
        command : CatheterCommand
            The command the observed catheter holds.
        positions_ct : ndarray (N, 3)
            Observed backbone from the base to the tip, in the model's output frame (CT with a
            tree; m); N >= 2, any spacing (arc lengths are taken from the polyline).

        Returns
        -------
        CatheterState
            The new state (``message`` says it was re-synchronised); if no equilibrium is found
            from the observed shape, the previous state with ``converged=False`` (model
            unchanged).
        """
        t0 = time.perf_counter()
        vc = validate_command(command, self.params)
        observed = np.asarray(positions_ct, dtype=float)
        if observed.ndim != 2 or observed.shape[1] != 3 or len(observed) < 2 or \
                not np.all(np.isfinite(observed)):
            raise InputError("an observed backbone is an (N >= 2, 3) array of finite positions")
        if vc.insertion < MIN_INSERTION:
            return self.step(command)
        T = self.base_pose_ct
        p_base = (observed - T[:3, 3]) @ T[:3, :3]
        shape = (p_base, arc_length(p_base))
        prefer = None if self._wall is None else np.unique(self._wall.track(p_base, None)[2])
        deadline = np.inf if self.deadline_s is None else t0 + self.deadline_s
        lay = self._layout(vc.insertion)
        iters = evals = 0
        start = None
        # held to the observed shape (a solve that ends farther than the jump bound from it
        # has found the model's own equilibrium, or another, and does not count)
        for x0, J0 in ((self._x, self._J), (None, None)):
            for k in RESYNC_DRAGS:
                drag = k * lay.min_EI / lay.length ** 3
                r, p, it, ev = self._solve_tracked(vc, x0, J0, deadline, shape, prefer, drag)
                iters, evals = iters + it, evals + ev
                if r.converged:
                    start = _RelaxStart(shape, prefer, p.physical(r.x), r.jacobian, drag)
                    break
            if start is not None:
                break
        if start is None:
            return self._failed("no solve stays with the observed backbone", r.residual, iters,
                                evals, t0)
        res, prob, iters, evals = self._relax(vc, deadline, iters, evals, start)
        return self._conclude(vc, res, prob, iters, evals, t0,
                              "re-synchronised with an observed backbone")

    def _conclude(self, vc: ValidCommand, res, prob: _Problem, iters: int, evals: int,
                  t0: float, message: str, held: tuple | None = None) -> CatheterState:
        """Accept a converged, physical solve as the new state (with ``message``); else fail,
        keeping ``held`` if given (the :meth:`snapshot` a pull-back solved from elsewhere left:
        a refused pull-back leaves the catheter where it was)."""
        if not res.converged:
            return self._failed(res.reason, res.residual, iters, evals, t0, held)
        prob.run(res.x, True)
        state = self._make_state(prob, res.residual, iters, evals, t0)
        state.message = message
        problem = self._unphysical(state)
        if not problem and state.snapped_through and state.branch_ids is not None:
            fold = double_back(state.branch_ids, self.tree)
            if fold is not None:  # a hairpin through a carina, not a catheter's shape
                problem = f"{message} refused: {fold}"
        if problem:
            return self._failed(problem, res.residual, iters, evals, t0, held)
        # a snap-through or a re-synchronisation jumps: no secant across it
        return self._accept(state, vc, prob.physical(res.x), res.jacobian, t0,
                            continuous=not message)

    def _snap(self, vc: ValidCommand, deadline: float, iters: int, evals: int):
        """Solve ``vc`` from the last valid state without the jump bound (a snap-through)."""
        bound, self.max_jump_m = self.max_jump_m, None
        try:
            res, prob, it, ev = self._solve_tracked(vc, self._x, self._J, deadline)
        finally:
            self.max_jump_m = bound
        if res.converged:
            res.reason = "the backbone moved more than the jump bound at the smallest sub-step"
        return res, prob, iters + it, evals + ev

    def _relax(self, vc: ValidCommand, deadline: float, iters: int, evals: int,
               start: _RelaxStart | None = None):
        """Solve ``vc`` past a fold of the quasi-static path by relaxation.

        Where the path folds (the tip slips off a wall, the shaft snaps to another shape) there
        is no equilibrium near the last one and continuation stops short. Pseudo-transient
        relaxation walks to the equilibrium beyond: every node is held by a spring of stiffness
        ``drag`` to where it was at the previous pseudo-step (a regularised problem near the
        fold); after each pseudo-step the springs are re-anchored, so their force vanishes as
        the catheter settles. Once a pseudo-step moves no node by more than
        :data:`RELAX_SETTLED_M`, ``vc`` is solved plainly from there. It starts from the last
        valid state, or from ``start`` (:meth:`resync`: an observed shape, its contact, and the
        base loads and drag of a solve held to it). The drag starts at :data:`RELAX_DRAG` × the
        rod's bending stiffness scale ``EI_min / L³`` (or ``start``'s) and is stiffened (×4,
        :data:`RELAX_STIFFEN` times at most) when a pseudo-step fails. At most
        :data:`RELAX_STEPS` pseudo-steps and :data:`RELAX_EVALUATIONS` residual evaluations,
        and by the deadline of a real-time caller (``offline_fallbacks``).
        """
        lay = self._layout(vc.insertion)
        drag = RELAX_DRAG * lay.min_EI / lay.length ** 3
        bound, self.max_jump_m = self.max_jump_m, None
        x, J = self._x, self._J
        shape = prefer = None
        if start is not None:
            shape, prefer, x, J, drag = start
        res = prob = None
        stiffened = 0
        try:
            budget = evals + RELAX_EVALUATIONS
            for _ in range(RELAX_STEPS):
                if evals > budget or self._interrupted():
                    break
                r, p, it, ev = self._solve_tracked(vc, x, J, deadline, shape, prefer, drag)
                iters += it
                evals += ev
                if not r.converged:
                    if stiffened == RELAX_STIFFEN:
                        break
                    stiffened += 1
                    drag *= 4.0
                    continue
                moved = float(np.max(np.linalg.norm(p.pos - p.wall.ref, axis=1)))
                x, J = p.physical(r.x), r.jacobian
                shape, prefer = self._shape_of(p, p.prefer)
                if moved <= RELAX_SETTLED_M:
                    res, prob, it, ev = self._solve_tracked(vc, x, J, deadline, shape, prefer)
                    iters += it
                    evals += ev
                    break
        finally:
            self.max_jump_m = bound
        if res is None:
            res, prob = r, p
            res.converged, res.reason = False, "relaxation did not settle"
        elif res.converged:
            res.reason = "relaxed through a fold of the quasi-static path"
        return res, prob, iters, evals

    def _trace(self, vc: ValidCommand, deadline: float, res, prob, iters: int, evals: int):
        """Solve ``vc`` past a fold by following the equilibrium path round it.

        The path from the last valid command to ``vc`` (:meth:`_interpolate`, parameter ``w``
        from 0 to 1) is traced by pseudo-arclength continuation
        (:func:`~bronchonav.catheter.arclength.trace_past_fold`) in the base loads (scaled by
        the rod's force and moment scales; tensions in displacement control) and ``w``, with the
        contact re-tracked from each point's shape (without wall friction: a model with friction
        does not trace). Where it comes back to ``w = 1`` beyond the fold, ``vc`` is solved
        plainly from there without the jump bound (a snap-through); where it gets there without
        turning back, with it.
        Bounded by :data:`TRACE_EVALUATIONS` and :data:`TRACE_RETREAT`, and by ``deadline``
        (``time.perf_counter()``; ``inf`` offline). Returns the given failed
        ``res, prob``, its reason saying why, when there is no trace, when the path does not get
        to ``w = 1``, or when the plain solve there fails.
        """
        start = self._vc
        if self._x is None or start.insertion < MIN_INSERTION or self.friction > 0:
            res.reason += "; not traced (from a retracted state, or with wall friction)"
            return res, prob, iters, evals
        lay = self._layout(start.insertion)
        F_s = lay.min_EI / lay.length ** 2
        n_t = len(self.params.tendons)
        disp = vc.displacement is not None
        scale = np.concatenate([np.full(3, F_s), np.full(3, F_s * lay.length),
                                np.ones(n_t if disp else 0)])
        if self._x.size != scale.size:
            res.reason += "; not traced (the last solution has another tendon mode)"
            return res, prob, iters, evals
        x0 = self._x
        track = {"shape": (self._pos_base, self._arc), "prefer": None if self._state is None
                 or self._state.branch_ids is None else np.unique(self._state.branch_ids),
                 "prob": None}

        def residual(y):
            sub = self._interpolate(start, vc, float(y[-1]))
            tracking = None
            if self._wall is not None:
                arc = np.linspace(0.0, sub.insertion, self.n_nodes)
                tracking = self._wall.track(self._guess_positions(arc, track["shape"]),
                                            track["prefer"])
            p = _Problem(self, sub, self._layout(sub.insertion), tracking)
            x = y[:-1] * scale
            track["prob"] = p
            return p.residual(p.pack(x[:6], x[6:]))

        def accepted(y):  # the residual was last evaluated at y: track["prob"] is y's
            track["shape"], track["prefer"] = self._shape_of(track["prob"], track["prefer"])

        path = trace_past_fold(residual, np.append(x0 / scale, 0.0), 1.0,
                               max_evaluations=TRACE_EVALUATIONS, accepted=accepted,
                               floor=-TRACE_RETREAT, deadline=deadline, stop=self._interrupted)
        evals += path.evaluations
        if not path.reached:
            res.reason = f"{res.reason}; the equilibrium path did not come back ({path.reason})"
            return res, prob, iters, evals
        bound = self.max_jump_m
        if path.turned:  # beyond a fold the catheter has snapped: no jump bound
            self.max_jump_m = None
        try:
            r, p, it, ev = self._solve_tracked(vc, path.y[:-1] * scale, None, deadline,
                                               track["shape"], track["prefer"])
        finally:
            self.max_jump_m = bound
        iters, evals = iters + it, evals + ev
        if r.converged:
            r.reason = "traced round a fold of the quasi-static path" if path.turned else \
                _TRACED_ALONG
            return r, p, iters, evals
        res.reason = f"{res.reason}; traced to the command, but {r.reason} there"
        return res, prob, iters, evals

    def _shape_of(self, prob: _Problem, prefer):
        """A solved problem's shape (base frame: positions, arc lengths) and the branches its
        nodes occupy (tracked from ``prefer``; None without a tree), to start the next solve
        from."""
        shape = (prob.pos.copy(), prob.layout.arc.copy())
        if self._wall is None:
            return shape, None
        return shape, np.unique(self._wall.track(prob.pos, prefer)[2])

    def predict(self, command: CatheterCommand) -> CatheterState:
        """The state :meth:`step` would return for ``command``, without changing the model.

        Warm-started from the current state like :meth:`step`; used by controllers to probe the
        sensitivity of the tip to a command. A probe does not use the offline fallbacks
        (trust-region solve, relaxation): it costs at most a continuation.
        """
        saved = self.snapshot()
        self._probing = True
        try:
            return self.step(command)
        finally:
            self._probing = False
            self.restore(saved)

    def snapshot(self) -> tuple:
        """What the next step starts from (last valid state, command, solution, Jacobian,
        shape and the secant predictor's two solutions), for :meth:`restore`: a controller
        undoes a step of its own model that the sensors contradict."""
        return (self._state, self._vc, self._x, self._J, self._pos_base, self._arc,
                self._last, self._before)

    def restore(self, snapshot: tuple) -> None:
        """Go back to a :meth:`snapshot` of this model."""
        (self._state, self._vc, self._x, self._J, self._pos_base, self._arc, self._last,
         self._before) = snapshot

    def _cold_start(self, vc: ValidCommand, deadline: float, t0: float) -> None:
        """Accept the all-slack state at ``vc``'s insertion and roll as the warm start."""
        n_t = len(self.params.tendons)
        slack = dataclasses.replace(vc, tension=np.zeros(n_t), displacement=None)
        res, prob, iters, evals = self._solve_tracked(slack, None, None, deadline)
        if res.converged:
            prob.run(res.x, True)
            state = self._make_state(prob, res.residual, iters, evals, t0)
            x = np.concatenate([prob.physical(res.x), np.zeros(n_t)])
            self._accept(state, slack, x, None, t0)

    def _unphysical(self, state: CatheterState) -> str:
        """Why a converged state cannot be right ('' when it can): non-finite values, or a
        backbone longer than the inserted length allows (more than 10 % extension)."""
        arrays = (state.positions, state.rotations, state.internal_force, state.contact_forces)
        if not all(np.all(np.isfinite(a)) for a in arrays):
            return "non-finite state"
        chord = np.linalg.norm(np.diff(state.positions, axis=0), axis=1).sum()
        if chord > 1.1 * state.insertion + 1e-6:
            return f"backbone {chord * 1e3:.1f} mm longer than the insertion"
        return ""

    # -- solving ----------------------------------------------------------------------------
    def _layout(self, insertion: float) -> Layout:
        if self._layout_cache is None or self._layout_cache[0] != insertion:
            self._layout_cache = (insertion, build_layout(self.params, insertion, self.n_nodes))
        return self._layout_cache[1]

    def _guess_positions(self, arc: np.ndarray, shape=None) -> np.ndarray:
        """Backbone guess at arc lengths ``arc`` from ``shape = (positions, arc)`` (base frame),
        by default the last valid shape."""
        if shape is None:
            shape = (self._pos_base, self._arc)
        p, s = shape
        if p is None:
            return np.column_stack([np.zeros_like(arc), np.zeros_like(arc), arc])
        out = np.column_stack([np.interp(arc, s, p[:, k]) for k in range(3)])
        beyond = arc > s[-1]
        if np.any(beyond):
            d = p[-1] - p[-2]
            d /= max(np.linalg.norm(d), 1e-12)
            out[beyond] = p[-1] + (arc[beyond] - s[-1])[:, None] * d
        return out

    def _solve_once(self, vc, x_prev, J_prev, deadline, tracking, ref=None, drag=0.0,
                    fallback=False):
        """One Newton–Broyden solve from physical base loads ``x_prev`` (or zero); ``ref``:
        previous positions of the nodes' material points (friction, relaxation drag ``drag``
        in N/m), base frame."""
        prob = _Problem(self, vc, self._layout(vc.insertion), tracking, ref, drag)
        n_t = len(self.params.tendons)
        x0 = np.zeros(6) if x_prev is None else x_prev[:6]
        if x_prev is not None and x_prev.size == 6 + n_t:
            tau0 = x_prev[6:]
        elif self._state is not None:
            tau0 = self._state.tendon_tensions
        else:
            tau0 = np.zeros(n_t)
        res = solve(prob.residual, prob.pack(x0, tau0), self.tol, self.max_iter, deadline, J_prev,
                    fallback)
        return res, prob

    def _solve_from(self, vc, guess, x_prev, J_prev, deadline, shape=None, prefer=None,
                    fallback=False):
        """:meth:`_solve_tracked` from the predicted unknowns ``guess``
        (:func:`~bronchonav.catheter.predictor.secant_guess`), then, if that fails or there is
        no guess, from the last solution ``x_prev``. The work of both attempts is counted; a
        failed predicted attempt does not count as a jump. Under a wall-clock deadline the
        predicted attempt has half the time left, so the attempt from the last solution always
        has the other half."""
        iters = evals = 0
        if guess is not None:
            jumped = self._jumped
            now = time.perf_counter()
            first = deadline if not np.isfinite(deadline) else now + 0.5 * (deadline - now)
            res, prob, iters, evals = self._solve_tracked(vc, guess, J_prev, first, shape,
                                                          prefer)
            if res.converged:
                return res, prob, iters, evals
            self._jumped = jumped
        res, prob, it, ev = self._solve_tracked(vc, x_prev, J_prev, deadline, shape, prefer,
                                                fallback=fallback)
        return res, prob, iters + it, evals + ev

    def _solve_tracked(self, vc, x_prev, J_prev, deadline, shape=None, prefer=None, drag=0.0,
                       fallback=False):
        """Solve with contact tracking; re-track and re-solve (up to 3 times) if it changed.

        ``shape`` (positions, arc; base frame) and ``prefer`` (occupied branch ids) default to
        the last valid state's. ``drag`` (N/m): nodes are held by springs to where their
        material points were in ``shape`` (relaxation, :meth:`_relax`). ``fallback``: try the
        trust-region solve when Newton stalls (:func:`bronchonav.catheter.solver.solve`).
        """
        iters = evals = 0
        tracking = ref = None
        arc = np.linspace(0.0, vc.insertion, self.n_nodes)
        if self._wall is not None:
            if prefer is None and self._state is not None and self._state.branch_ids is not None:
                prefer = np.unique(self._state.branch_ids)
            tracking = self._wall.track(self._guess_positions(arc, shape), prefer)
        previous = shape if shape is not None else (self._pos_base, self._arc)
        if ((self.friction > 0 and self._wall is not None) or drag > 0) and \
                previous[0] is not None:
            # material now at arc s was at s - Δ (it slid in through the base)
            moved_in = vc.insertion - previous[1][-1]
            ref = self._guess_positions(np.maximum(arc - moved_in, 0.0), previous)
        new = None  # the tracking of the last solve's shape
        for _ in range(4):
            res, prob = self._solve_once(vc, x_prev, J_prev, deadline, tracking, ref, drag,
                                         fallback)
            prob.tracking, prob.prefer = tracking, prefer
            iters += res.iterations
            evals += res.evaluations
            if not res.converged or self._wall is None:
                break
            new = self._wall.track(prob.pos, prefer)
            same = np.array_equal(new[0], tracking[0]) and \
                np.all(np.abs(new[1] - tracking[1]) <= self.contact_window // 2)
            if same:
                break
            tracking = new
            x_prev, J_prev = prob.physical(res.x), res.jacobian
        if res.converged and previous[0] is not None:
            reference = self._guess_positions(prob.layout.arc, previous)
            if self.max_jump_m is not None:
                jump = float(np.max(np.linalg.norm(prob.pos - reference, axis=1)))
                if jump > self.max_jump_m:
                    res.converged, res.reason = False, f"jump of {jump * 1e3:.1f} mm"
                    self._jumped = True
            if res.converged and self._wall is not None:
                crossed = self._wall.crossing(reference, self._wall.track(reference, prefer)[2],
                                              prob.pos, new[2])
                if crossed is not None:
                    node, a, b = crossed
                    res.converged = False
                    res.reason = (f"node {node} would pass through the carina from airway {a} "
                                  f"into airway {b}")
        return res, prob, iters, evals

    def _continuation(self, vc: ValidCommand, deadline: float, res, prob, iters: int,
                      evals: int):
        """Retry by walking from the last valid command to ``vc`` in adaptive sub-steps (an
        increment is halved when its solve fails and grown by half when it succeeds).

        Returns the last attempt (``res, prob``: the given failed ones if there was no time).
        """
        start = self._vc if self._vc is not None else ValidCommand(
            vc.insertion, vc.roll, np.zeros(len(self.params.tendons)), None,
            np.zeros(3), np.zeros(3), np.zeros(3))
        x_start = self._x if self._vc is not None else None
        J_start = self._J if self._vc is not None else None
        # adaptive continuation: advance w from 0 to 1, halving the increment on failure; each
        # sub-step starts from the secant through the last two solutions on the way
        x, J = x_start, J_start
        before, last = self._before, self._last  # None until there are solutions to extrapolate
        shape = prefer = None
        w, dw = 0.0, 0.5
        attempts = 0
        while w < 1.0 and dw >= 1.0 / 512 and attempts < MAX_SUBSTEPS and \
                time.perf_counter() < deadline and not self._interrupted():
            attempts += 1
            w_try = min(1.0, w + dw)
            sub = self._interpolate(start, vc, w_try)
            r, p, it, ev = self._solve_from(sub, secant_guess(before, last, sub), x, J,
                                            deadline, shape, prefer)
            iters += it
            evals += ev
            if not r.converged:
                dw *= 0.5
                continue
            res, prob, w = r, p, w_try
            x, J = prob.physical(res.x), res.jacobian
            before, last = last, Solved(sub, x)
            if self._wall is not None:  # track the next sub-step from this one's shape
                shape, prefer = self._shape_of(prob, prob.prefer)
            dw *= 1.5
        if w < 1.0 and res.converged:  # ran out of time or increments short of the command
            res.converged, res.reason = False, "continuation"
        return res, prob, iters, evals

    def _interpolate(self, a: ValidCommand, b: ValidCommand, w: float) -> ValidCommand:
        st = self._state
        tension_a = None
        if st is not None:
            tension_a = st.tendon_tensions - np.array([t.pretension for t in self.params.tendons])
        return interpolate_commands(a, b, w, tension_a=tension_a,
                                    displacement_a=None if st is None else st.tendon_displacements)

    # -- states -----------------------------------------------------------------------------
    def _to_out(self, p_base: np.ndarray) -> np.ndarray:
        T = self.base_pose_ct
        return p_base @ T[:3, :3].T + T[:3, 3]

    def _make_state(self, prob: _Problem, residual: float, iters: int, evals: int,
                    t0: float) -> CatheterState:
        lay = prob.layout
        Rb = _quat_to_rot(prob.quat)
        node_j = np.flatnonzero(lay.node_of >= 0)
        node_piece = lay.piece_of[np.maximum(node_j - 1, 0)]
        v, u = prob.VU[:, :3], prob.VU[:, 3:]
        n_body = lay.kse[node_piece] * (v - np.array([0.0, 0.0, 1.0]))
        m_body = lay.kbt[node_piece] * (u - lay.ustar[node_piece])
        Ro = self.base_pose_ct[:3, :3]
        rotations = Ro[None] @ Rb
        tip = np.eye(4)
        tip[:3, :3] = rotations[-1]
        positions = self._to_out(prob.pos)
        tip[:3, 3] = positions[-1]
        tau = np.maximum(prob.tau, 0.0) if prob.disp else prob.tau.copy()
        branch_ids = None
        if self._wall is not None:
            branch_ids = self._wall.track(prob.pos, getattr(prob, "prefer", None))[2]
        self._pending_base = (prob.pos.copy(), lay.arc.copy())
        return CatheterState(
            positions=positions, rotations=rotations, tip_pose=tip,
            internal_force=np.einsum("nij,nj->ni", rotations, n_body),
            internal_moment=np.einsum("nij,nj->ni", rotations, m_body),
            tendon_tensions=tau, tendon_displacements=prob.displacements(),
            contact_forces=prob.Fc @ Ro.T, arc_length=lay.arc.copy(), residual=float(residual),
            iterations=int(iters), converged=True, solve_time_s=0.0,
            insertion=float(prob.vc.insertion), roll=float(prob.vc.roll), frame=self.frame,
            branch_ids=branch_ids, evaluations=int(evals), **self._friction_and_samples(prob))

    def _friction_and_samples(self, prob: _Problem) -> dict:
        """State fields for the tendon friction memory and the sampled outputs."""
        tau = np.maximum(prob.tau, 0.0)
        out = dict(tendon_distal_tensions=tau, tendon_wrap_angles=None,
                   tendon_slip=np.zeros(prob.n_t), tendon_tension_profile=None)
        if prob.track:
            wrap, dist = prob.out.wrap, prob.out.tdist
            pulled = np.isclose(dist, tau * np.exp(-prob.mu * wrap), rtol=1e-9, atol=1e-12)
            released = np.isclose(dist, tau * np.exp(prob.mu * wrap), rtol=1e-9, atol=1e-12)
            out.update(tendon_distal_tensions=dist.copy(), tendon_wrap_angles=wrap.copy(),
                       tendon_slip=pulled.astype(float) - released.astype(float),
                       tendon_tension_profile=prob.out.node_tension.copy())
        if len(prob.vc.output_arc_lengths):
            out.update(sample_arc_length=prob.vc.output_arc_lengths.copy(),
                       sample_positions=self._to_out(prob.out.sample_pos),
                       sample_rotations=self.base_pose_ct[None, :3, :3]
                       @ _quat_to_rot(prob.out.sample_quat))
        return out

    def _retracted_state(self, vc: ValidCommand) -> CatheterState:
        n, n_t = self.n_nodes, len(self.params.tendons)
        R = self.base_pose_ct[:3, :3] @ _quat_to_rot(_quat_z(vc.roll)[None])[0]
        tip = np.eye(4)
        tip[:3, :3], tip[:3, 3] = R, self.base_pose_ct[:3, 3]
        self._pending_base = (np.zeros((n, 3)), np.linspace(0.0, vc.insertion, n))
        tension = vc.tension if vc.tension is not None else np.zeros(n_t)
        branch = None if self._wall is None else np.full(n, self._wall.branch_ids[self._wall.root])
        return CatheterState(
            positions=np.repeat(self.base_pose_ct[None, :3, 3], n, 0),
            rotations=np.repeat(R[None], n, 0), tip_pose=tip, internal_force=np.zeros((n, 3)),
            internal_moment=np.zeros((n, 3)), tendon_tensions=tension.copy(),
            tendon_displacements=np.zeros(n_t), contact_forces=np.zeros((n, 3)),
            arc_length=np.linspace(0.0, vc.insertion, n), residual=0.0, iterations=0,
            converged=True, solve_time_s=0.0, insertion=vc.insertion, roll=vc.roll,
            frame=self.frame, branch_ids=branch)

    def _accept(self, state, vc, x, J, t0, continuous: bool = True) -> CatheterState:
        state.solve_time_s = time.perf_counter() - t0
        self._state, self._vc = state, vc
        if x is not None:
            self._x, self._J = x, J
        self._before = self._last if x is not None and continuous else None
        self._last = Solved(vc, x) if x is not None else None
        self._pos_base, self._arc = self._pending_base
        return state

    def _failed(self, reason, residual, iters, evals, t0, held: tuple | None = None
                ) -> CatheterState:
        """The state kept (the last valid one, after going back to ``held`` if given) reported
        as a failed step with ``reason``."""
        if held is not None:
            self.restore(held)
        msg = f"solve failed ({reason}, residual {residual:.2e}); previous state kept"
        if self._state is None:
            n_t = len(self.params.tendons)
            base = self._retracted_state(ValidCommand(0.0, 0.0, np.zeros(n_t), None,
                                                      np.zeros(3), np.zeros(3), np.zeros(3)))
            self._pending_base = None
            prev = base
        else:
            prev = self._state
        out = CatheterState(**{**prev.__dict__})
        out.converged, out.message = False, msg
        out.residual, out.iterations, out.evaluations = float(residual), int(iters), int(evals)
        out.solve_time_s = time.perf_counter() - t0
        return out
