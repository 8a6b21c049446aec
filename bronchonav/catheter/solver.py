"""Newton–Broyden root finding with warm start, bounded iterations and a wall-clock deadline.

Used by the shooting method: the unknowns are the base loads (and, in displacement control, the
tendon tensions); the residual is the tip boundary condition. A stream of slowly changing commands
converges in one or two residual evaluations by reusing the previous step's solution and Jacobian
(Broyden's rank-one updates keep it current); a finite-difference Jacobian is rebuilt only when the
updated one stops reducing the residual.

Where the catheter presses on the wall the residual is strongly nonlinear and a line search along
the Newton direction can stall in a local minimum of the residual norm that is not a root (the
Jacobian nearly singular there). :func:`solve` then retries from the same start with a trust-region
least-squares method (scipy's ``trf``), which moves between the Newton and the steepest-descent
directions and gets out of such valleys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares


@dataclass
class SolveResult:
    """Outcome of :func:`newton_broyden`.

    Attributes
    ----------
    x : ndarray
        Last iterate (the root if ``converged``).
    jacobian : ndarray
        Jacobian estimate at ``x`` (to warm-start the next solve).
    residual : float
        Max-norm of the residual at ``x``.
    iterations : int
        Newton/Broyden iterations taken.
    evaluations : int
        Residual evaluations, including those of finite-difference Jacobians.
    converged : bool
    reason : str
        ``"converged"``, ``"max_iterations"``, ``"deadline"``, ``"stalled"`` or ``"singular"``.
    """

    x: np.ndarray
    jacobian: np.ndarray
    residual: float
    iterations: int
    evaluations: int
    converged: bool
    reason: str


def fd_jacobian(fun, x, f0, steps):
    """Forward-difference Jacobian of ``fun`` at ``x`` with per-unknown ``steps``."""
    n = x.size
    J = np.empty((f0.size, n))
    for j in range(n):
        xp = x.copy()
        xp[j] += steps[j]
        J[:, j] = (fun(xp) - f0) / steps[j]
    return J


def newton_broyden(fun, x0, tol, max_iter, deadline, jacobian=None, fd_rel=1e-7):
    """Solve ``fun(x) = 0`` (scaled so that ``tol`` is a max-norm tolerance).

    Parameters
    ----------
    fun : callable
        ``fun(x) -> ndarray`` of the same size as ``x``.
    x0 : ndarray
        Initial guess (warm start).
    tol : float
        Convergence: ``max|fun(x)| <= tol``.
    max_iter : int
        Iteration bound.
    deadline : float
        ``time.perf_counter()`` value after which the solve gives up.
    jacobian : ndarray or None
        Initial Jacobian (e.g. the previous step's); a finite-difference one is built if ``None``
        or of the wrong shape.
    fd_rel : float
        Finite-difference step relative to ``max(|x_j|, 1)``.
    """
    x = np.array(x0, dtype=float)
    n_eval = 1
    f = fun(x)
    norm = float(np.max(np.abs(f))) if f.size else 0.0
    merit = float(np.linalg.norm(f))  # line-search merit: 2-norm (Newton's descent norm)
    if norm <= tol:
        J = jacobian if jacobian is not None else np.eye(x.size)
        return SolveResult(x, J, norm, 0, n_eval, True, "converged")

    def fresh(xc, fc):
        steps = fd_rel * np.maximum(np.abs(xc), 1.0)
        return fd_jacobian(fun, xc, fc, steps), x.size

    J = jacobian
    is_fresh = False
    if J is None or J.shape != (f.size, x.size) or not np.all(np.isfinite(J)):
        J, extra = fresh(x, f)
        n_eval += extra
        is_fresh = True
    for it in range(1, max_iter + 1):
        if time.perf_counter() > deadline:
            return SolveResult(x, J, norm, it - 1, n_eval, False, "deadline")
        try:
            dx = np.linalg.solve(J, -f)
        except np.linalg.LinAlgError:
            dx = None
        if dx is None or not np.all(np.isfinite(dx)):
            if is_fresh:
                return SolveResult(x, J, norm, it, n_eval, False, "singular")
            J, extra = fresh(x, f)
            n_eval += extra
            is_fresh = True
            continue
        lam = 1.0
        accepted = False
        for _ in range(8):
            x1 = x + lam * dx
            f1 = fun(x1)
            n_eval += 1
            n1 = float(np.max(np.abs(f1)))
            m1 = float(np.linalg.norm(f1))
            if np.isfinite(m1) and m1 < (1.0 - 1e-4 * lam) * merit:
                accepted = True
                break
            if not is_fresh:
                break  # a stale Jacobian: rebuild it rather than line-searching
            lam *= 0.5
        if not accepted:
            if is_fresh:
                return SolveResult(x, J, norm, it, n_eval, False, "stalled")
            J, extra = fresh(x, f)
            n_eval += extra
            is_fresh = True
            continue
        s = x1 - x
        y = f1 - f
        J = J + np.outer(y - J @ s, s) / float(s @ s)
        slow = m1 > 0.5 * merit
        x, f, norm, merit = x1, f1, n1, m1
        is_fresh = False
        if norm <= tol:
            return SolveResult(x, J, norm, it, n_eval, True, "converged")
        if slow:
            J, extra = fresh(x, f)
            n_eval += extra
            is_fresh = True
    return SolveResult(x, J, norm, max_iter, n_eval, False, "max_iterations")


def solve(fun, x0, tol, max_iter, deadline, jacobian=None, fallback=True) -> SolveResult:
    """:func:`newton_broyden`, then — with ``fallback``, if it stalled or ran out of iterations
    — a trust-region least-squares solve from the same start (at most ``2 · max_iter`` residual
    evaluations, plus those of its finite-difference Jacobians). The fallback cannot be
    interrupted, so it runs only without a deadline (``deadline = inf``: offline use); a
    real-time solve ends with Newton's answer. The result counts the work of both."""
    first = newton_broyden(fun, x0, tol, max_iter, deadline, jacobian)
    if not fallback or first.converged or first.reason in ("deadline", "singular") or \
            np.isfinite(deadline):
        return first
    x_start = np.array(x0, dtype=float)
    try:
        fit = least_squares(fun, x_start, method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15,
                            max_nfev=2 * max_iter)
    except ValueError:  # a residual that is not finite at the start
        return first
    norm = float(np.max(np.abs(fit.fun)))
    evaluations = first.evaluations + int(fit.nfev) + x_start.size * int(fit.njev or 0)
    iterations = first.iterations + int(fit.nfev)
    if norm <= tol and np.all(np.isfinite(fit.x)):
        return SolveResult(fit.x, np.asarray(fit.jac), norm, iterations, evaluations, True,
                           "converged")
    return SolveResult(first.x, first.jacobian, first.residual, iterations, evaluations, False,
                       first.reason)
