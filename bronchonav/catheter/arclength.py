"""Pseudo-arclength continuation: follow a path of equilibria round its folds.

A quasi-static catheter path ``r(x, w) = 0`` (unknowns ``x``, command parameter ``w``) can fold:
as ``w`` grows, the equilibrium reaches a limit point where ``dx/dw`` is infinite, the path turns
back (an unstable branch) and turns forward again on another stable branch — the catheter snaps
through. Stepping in ``w`` stops at the first limit point. Keller's pseudo-arclength method
parametrises the path by its own arc length instead: from a point ``y = (x, w)`` with unit tangent
``t`` it predicts ``y + ds t`` and corrects with Newton on ``r(y) = 0, t · (y - y_pred) = 0``, a
system that stays regular at limit points. Followed until ``w`` comes back up to the target, it
gives the equilibrium on the far branch: the state the snap lands in, on the path the catheter
takes, rather than wherever a relaxation settles.

Keller, H. B. (1977) Numerical solution of bifurcation and nonlinear eigenvalue problems, in
*Applications of Bifurcation Theory*, 359–384. Finite-difference Jacobians; deterministic
(bounded by steps and residual evaluations), unless a real-time caller also gives a deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Corrector iterations per arclength step with the last point's Jacobian (chord method)...
CHORD_ITERATIONS = 4
#: ...and then, if those do not converge, with fresh finite-difference Jacobians (Newton).
CORRECTOR_ITERATIONS = 8
#: Corrections of an accepted point onto the path as ``accepted`` moved it, at most.
SETTLE_ROUNDS = 3


@dataclass
class ArcTrace:
    """Outcome of :func:`trace_past_fold`.

    Attributes
    ----------
    y : ndarray
        The last point of the path, ``(x, w)``; when it reached the target (:attr:`reached`),
        interpolated to ``w = target`` between the last two points (a starting guess for a plain
        solve there).
    turned : bool
        The path turned back (``w`` decreased): there was a fold.
    steps : int
        Accepted arclength steps.
    evaluations : int
        Residual evaluations, including those of the finite-difference Jacobians.
    reason : str
        ``"passed"``, ``"no fold"`` (reached the target without turning back), ``"stalled"`` (the
        corrector failed down to the smallest step), ``"went back"`` (below ``floor``),
        ``"moved"`` (what ``accepted`` updated moved the path away from the point, and it did not
        settle), ``"steps"`` or ``"evaluations"`` (budget), ``"time"`` (past the caller's deadline),
        ``"stopped"`` (the caller's ``stop`` said so).
    """

    y: np.ndarray
    turned: bool
    steps: int
    evaluations: int
    reason: str

    @property
    def passed(self) -> bool:
        """The path came back to ``w >= target`` after turning back at least once."""
        return self.reason == "passed"

    @property
    def reached(self) -> bool:
        """The path got to ``w >= target``, round a fold or not."""
        return self.reason in ("passed", "no fold")


def trace_past_fold(residual: Callable[[np.ndarray], np.ndarray], y0: np.ndarray, target: float,
                    *, tol: float = 1e-8, ds: float = 0.02, ds_min: float = 1e-5,
                    ds_max: float = 0.2, max_steps: int = 600, max_evaluations: int = 40000,
                    accepted: Callable[[np.ndarray], None] | None = None,
                    floor: float = -np.inf, deadline: float = np.inf,
                    stop: Callable[[], bool] | None = None) -> ArcTrace:
    """Follow the solution path of ``residual(y) = 0`` from ``y0`` towards larger ``w = y[-1]``
    until ``w`` reaches ``target`` again after a fold.

    Parameters
    ----------
    residual : callable
        ``residual(y)`` for ``y = (x, w)`` of size ``m + 1``; returns ``m`` values. The unknowns
        should be scaled so that their steps are comparable with those of ``w``.
    y0 : ndarray (m + 1,)
        A solution (``residual(y0) ≈ 0``), with ``w0 < target``.
    target : float
        Parameter value to come back to.
    tol : float
        Corrector tolerance on the max-norm of the residual.
    ds, ds_min, ds_max : float
        First, smallest and largest arclength step (in the units of ``y``); a step whose
        corrector fails is halved, one that succeeds grows by half.
    max_steps, max_evaluations : int
        Bounds on accepted steps and on residual evaluations; the evaluations are checked
        before each step, which takes at most ``c + m + 2`` of them without ``accepted`` and
        ``(R + 1)(c + 1) + m + 1`` with it, where ``c`` = :data:`CHORD_ITERATIONS` + 1 +
        (:data:`CORRECTOR_ITERATIONS` + 1)(``m`` + 2) (one correction) and ``R`` =
        :data:`SETTLE_ROUNDS`.
    accepted : callable, optional
        Called with each accepted point, right after the residual's last evaluation, which was
        at that point (e.g. to update contact tracking for the next step); the residual is
        evaluated there again after it, and if what it updated moved the path away from the
        point, the point is corrected onto the moved path and ``accepted`` called again.
    floor : float
        Give up when the path goes back below ``w = floor`` (it is not coming back near).
    deadline : float
        Wall-clock bound for a real-time caller: ``time.perf_counter()`` value after which no
        further step starts (default none: offline, bounded by steps and evaluations alone).
    stop : callable, optional
        Asked before each step; True ends the trace (a real-time caller's newer command that
        should not wait for it).

    Returns
    -------
    ArcTrace
    """
    y = np.asarray(y0, dtype=float).copy()
    counter = [0]

    def fun(v):
        counter[0] += 1
        return np.asarray(residual(v), dtype=float)

    def jacobian(v, f0):
        J = np.empty((f0.size, v.size))
        for j in range(v.size):
            h = 1e-6 * max(1.0, abs(v[j]))
            vp = v.copy()
            vp[j] += h
            J[:, j] = (fun(vp) - f0) / h
        return J

    def tangent(J, previous):
        t = np.linalg.svd(J)[2][-1]  # the null direction of the m × (m+1) Jacobian
        if previous is None:
            return t if t[-1] >= 0 else -t
        return t if t @ previous >= 0 else -t

    def correct(J, y_pred, t, reach, start=None):
        """Solve ``residual = 0, t · (z - y_pred) = 0`` from ``start`` (default ``y_pred``):
        first with ``J`` (the last point's Jacobian, a chord method), then, if that does not
        converge, by Newton with a fresh Jacobian at each iterate. Returns ``(z, residual(z))``
        or ``(None, None)``; also ``(None, None)`` when ``z`` lies farther than ``reach`` (the
        step) from ``y_pred``: it went to another part of the path."""
        for fresh, iterations in ((False, CHORD_ITERATIONS), (True, CORRECTOR_ITERATIONS)):
            z = (y_pred if start is None else start).copy()
            for i in range(iterations + 1):
                fz = fun(z)
                g = np.append(fz, t @ (z - y_pred))
                if np.max(np.abs(g)) < tol:
                    return (z, fz) if np.linalg.norm(z - y_pred) <= reach else (None, None)
                if i == iterations or not np.all(np.isfinite(g)):
                    break
                if fresh:
                    J = jacobian(z, fz)
                try:
                    z = z - np.linalg.solve(np.vstack([J, t]), g)
                except np.linalg.LinAlgError:
                    break
                if not np.all(np.isfinite(z)):
                    break
        return None, None

    def settle(z, y_pred, J, t, reach):
        """Tell ``accepted`` of the point ``z``; when what it updated moved the path away from
        ``z`` (residual above ``sqrt(tol)``), correct onto the moved path on the same
        hyperplane and tell it again (:data:`SETTLE_ROUNDS` times at most). Returns
        ``(z, residual(z))``, or ``(None, None)`` when the path does not settle there."""
        for rounds in range(SETTLE_ROUNDS + 1):
            accepted(z)
            fz = fun(z)  # the residual may depend on what ``accepted`` updated
            if np.max(np.abs(fz)) < np.sqrt(tol):
                return z, fz
            if rounds == SETTLE_ROUNDS:
                break
            z, fz = correct(J, y_pred, t, reach, start=z)
            if z is None:
                break
        return None, None

    J = jacobian(y, fun(y))
    t = tangent(J, None)
    turned = False
    steps = 0
    reason = "steps"
    while steps < max_steps:
        if counter[0] > max_evaluations:
            reason = "evaluations"
            break
        if time.perf_counter() > deadline:
            reason = "time"
            break
        if stop is not None and stop():
            reason = "stopped"
            break
        y_pred = y + ds * t
        z, fz = correct(J, y_pred, t, ds)
        if z is None:
            ds *= 0.5
            if ds < ds_min:
                reason = "stalled"
                break
            continue
        if accepted is not None:
            z, fz = settle(z, y_pred, J, t, ds)
            if z is None:
                reason = "moved"
                break
        steps += 1
        y_prev, y = y, z
        turned = turned or y[-1] < y_prev[-1]
        if y[-1] < floor:
            reason = "went back"
            break
        if y[-1] >= target:
            a = (target - y_prev[-1]) / (y[-1] - y_prev[-1])
            point = y_prev + a * (y - y_prev)
            point[-1] = target  # exactly, not within rounding
            return ArcTrace(point, turned, steps, counter[0], "passed" if turned else "no fold")
        J = jacobian(y, fz)
        t = tangent(J, t)
        ds = min(1.5 * ds, ds_max)
    return ArcTrace(y, turned, steps, counter[0], reason)
