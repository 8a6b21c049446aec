"""Fit device parameters to a recording (nonlinear least squares on tip and shape errors).

Parameters that can be fitted (names as given to :func:`calibrate`):

``stiffness:<segment>``
    Scale of that segment's bending and torsional stiffness (EI, GJ); starts at 1.
``friction`` / ``friction:<tendon>``
    Tendon friction coefficient of all tendons / of one.
``offset:<tendon>``
    Tendon zero offset (m).
``pretension:<tendon>``
    Tendon pretension (N).
``base_x, base_y, base_z``
    Position of ``catheter_base`` in the measurement frame (m).
``base_rx, base_ry, base_rz``
    Its orientation as a rotation vector (rad).

Every row is replayed in order through one model (tendon friction is history-dependent); the
first ``1 - holdout`` of the rows are fitted, the rest are held out. Uncertainties are one
standard deviation from the Gauss–Newton covariance ``s² (JᵀJ)⁻¹`` at the optimum (``s²``: residual
variance), so they hold for small, unbiased measurement noise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from bronchonav.calibration.recording import Recording
from bronchonav.catheter.model import CatheterModel
from bronchonav.catheter.params import CatheterParams
from bronchonav.errors import InputError

_BASE = {"base_x": 0, "base_y": 1, "base_z": 2, "base_rx": 3, "base_ry": 4, "base_rz": 5}
_SCALE = {"stiffness": 1.0, "friction": 0.1, "offset": 1e-3, "pretension": 1.0,
          "base_x": 1e-2, "base_y": 1e-2, "base_z": 1e-2, "base_rx": 0.1, "base_ry": 0.1,
          "base_rz": 0.1}
"""Typical magnitude of each parameter kind (the optimiser's unit)."""


MIN_STIFFNESS_SCALE = 0.05
"""Stiffness scales are clamped to at least this (friction and pretension to >= 0): the fit is
unconstrained, the model is not."""


def _kind(name: str) -> tuple[str, str]:
    kind, _, target = name.partition(":")
    return kind, target


def parameter_values(params: CatheterParams, names: list[str]) -> np.ndarray:
    """Current values of the named parameters (stiffness scales are 1)."""
    seg = {s.name: s for s in params.segments}
    ten = {t.name: t for t in params.tendons}
    pose = np.concatenate([params.base_pose[:3, 3],
                           Rotation.from_matrix(params.base_pose[:3, :3]).as_rotvec()])
    out = []
    for name in names:
        kind, target = _kind(name)
        if kind == "stiffness":
            if target not in seg:
                raise InputError(f"fit parameter {name}: no segment {target!r} "
                                 f"(segments: {', '.join(seg)})")
            out.append(1.0)
        elif kind in ("friction", "offset", "pretension"):
            attr = {"friction": "friction", "offset": "zero_offset",
                    "pretension": "pretension"}[kind]
            if kind == "friction" and not target:
                out.append(float(np.mean([getattr(t, attr) for t in params.tendons])))
                continue
            if target not in ten:
                raise InputError(f"fit parameter {name}: no tendon {target!r} "
                                 f"(tendons: {', '.join(ten)})")
            out.append(getattr(ten[target], attr))
        elif name in _BASE:
            out.append(pose[_BASE[name]])
        else:
            raise InputError(f"unknown fit parameter {name!r} (stiffness:<segment>, friction, "
                             f"friction:<tendon>, offset:<tendon>, pretension:<tendon>, "
                             f"base_x/y/z, base_rx/ry/rz)")
    return np.array(out, dtype=float)


def apply_parameters(params: CatheterParams, names: list[str],
                     values: np.ndarray) -> CatheterParams:
    """A copy of ``params`` with the named parameters set (stiffness scales multiply)."""
    p = copy.deepcopy(params)
    seg = {s.name: s for s in p.segments}
    ten = {t.name: t for t in p.tendons}
    pose = np.concatenate([p.base_pose[:3, 3],
                           Rotation.from_matrix(p.base_pose[:3, :3]).as_rotvec()])
    for name, v in zip(names, values):
        kind, target = _kind(name)
        if kind == "stiffness":
            seg[target].EI *= max(float(v), MIN_STIFFNESS_SCALE)
            seg[target].GJ *= max(float(v), MIN_STIFFNESS_SCALE)
        elif kind == "friction" and not target:
            for t in p.tendons:
                t.friction = max(float(v), 0.0)
        elif kind == "friction":
            ten[target].friction = max(float(v), 0.0)
        elif kind == "offset":
            ten[target].zero_offset = float(v)
        elif kind == "pretension":
            ten[target].pretension = max(float(v), 0.0)
        else:
            pose[_BASE[name]] = v
    p.base_pose = np.eye(4)
    p.base_pose[:3, 3] = pose[:3]
    p.base_pose[:3, :3] = Rotation.from_rotvec(pose[3:]).as_matrix()
    return p


@dataclass
class Prediction:
    """Model predictions for a recording, measurement frame (m); ``failed`` unconverged rows."""

    tip: np.ndarray
    shape: np.ndarray
    failed: int


def predict(params: CatheterParams, rec: Recording, n_nodes: int = 15) -> Prediction:
    """Replay every row of ``rec`` in order through a fresh model of ``params``."""
    model = CatheterModel(params, n_nodes=n_nodes, deadline_s=60.0)
    R, t = params.base_pose[:3, :3], params.base_pose[:3, 3]
    tip = np.zeros((len(rec), 3))
    shape = np.zeros_like(rec.shape)
    failed = 0
    for k, cmd in enumerate(rec.commands()):
        state = model.step(cmd)
        failed += not state.converged
        tip[k] = R @ state.tip_position + t
        if rec.shape_s.shape[1]:
            order = np.argsort(rec.shape_s[k])
            shape[k, order] = state.sample_positions @ R.T + t
    return Prediction(tip, shape, failed)


@dataclass
class CalibrationResult:
    """Fitted parameters and errors.

    Attributes
    ----------
    names : list of str
    initial, values, std : ndarray
        Starting values, fitted values and their standard deviations (parameter units).
    params : CatheterParams
        The device with the fitted values.
    n_fit, n_holdout : int
        Rows fitted and held out.
    holdout_tip_error_before, holdout_tip_error_after : float
        Mean tip distance (m) on the held-out rows with the initial and fitted parameters.
    fit_tip_error_before, fit_tip_error_after : float
        The same on the fitted rows.
    failed_rows : int
        Rows whose solve did not converge with the fitted parameters.
    """

    names: list
    initial: np.ndarray
    values: np.ndarray
    std: np.ndarray
    params: CatheterParams
    n_fit: int
    n_holdout: int
    holdout_tip_error_before: float
    holdout_tip_error_after: float
    fit_tip_error_before: float
    fit_tip_error_after: float
    failed_rows: int = 0
    message: str = field(default="")

    def to_dict(self) -> dict:
        """JSON/YAML-serialisable summary."""
        return {
            "parameters": {n: {"initial": float(i), "value": float(v), "std": float(s)}
                           for n, i, v, s in zip(self.names, self.initial, self.values,
                                                 self.std)},
            "rows_fitted": self.n_fit, "rows_held_out": self.n_holdout,
            "holdout_mean_tip_error_m": {"before": self.holdout_tip_error_before,
                                         "after": self.holdout_tip_error_after},
            "fit_mean_tip_error_m": {"before": self.fit_tip_error_before,
                                     "after": self.fit_tip_error_after},
            "failed_rows": self.failed_rows, "optimizer": self.message,
        }


def _errors(pred: Prediction, rec: Recording, rows: slice) -> np.ndarray:
    return np.linalg.norm(pred.tip[rows] - rec.tip[rows], axis=1)


def calibrate(params: CatheterParams, rec: Recording, names: list[str], holdout: float = 0.3,
              n_nodes: int = 15, max_evaluations: int = 60) -> CalibrationResult:
    """Fit the parameters ``names`` of ``params`` to the recording ``rec``.

    Parameters
    ----------
    params : CatheterParams
        The device (starting values).
    rec : Recording
    names : list of str
        Parameters to fit (see the module docstring).
    holdout : float
        Fraction of rows (the last ones) held out of the fit, in [0, 0.9].
    n_nodes : int
        Output nodes of the model (accuracy against speed).
    max_evaluations : int
        Bound on the optimiser's function evaluations (each replays every row).

    Raises
    ------
    InputError
        For an unknown parameter, a bad holdout or too few rows.
    """
    if not names:
        raise InputError("give at least one parameter to fit")
    if not 0.0 <= holdout <= 0.9:
        raise InputError(f"holdout must be in [0, 0.9], got {holdout}")
    n = len(rec)
    n_fit = n - int(round(holdout * n))
    n_res = 3 * n_fit + 3 * n_fit * rec.shape_s.shape[1]
    if n_res <= len(names):
        raise InputError(f"{n_fit} fitted rows cannot determine {len(names)} parameters")
    initial = parameter_values(params, names)
    scale = np.array([_SCALE[_kind(nm)[0]] for nm in names])
    fit = slice(0, n_fit)

    def residual(u: np.ndarray) -> np.ndarray:
        pred = predict(apply_parameters(params, names, initial + u * scale), rec, n_nodes)
        parts = [(pred.tip[fit] - rec.tip[fit]).ravel()]
        if rec.shape_s.shape[1]:
            parts.append((pred.shape[fit] - rec.shape[fit]).ravel())
        return np.concatenate(parts)

    sol = least_squares(residual, np.zeros(len(names)), diff_step=1e-4, max_nfev=max_evaluations)
    values = initial + sol.x * scale
    J = sol.jac * (1.0 / scale)[None, :]  # d residual / d parameter
    dof = max(len(sol.fun) - len(names), 1)
    s2 = float(sol.fun @ sol.fun) / dof
    cov = s2 * np.linalg.pinv(J.T @ J)
    fitted = apply_parameters(params, names, values)
    before = predict(params, rec, n_nodes)
    after = predict(fitted, rec, n_nodes)
    held = slice(n_fit, n)
    mean = (lambda e: float(np.mean(e)) if len(e) else float("nan"))
    return CalibrationResult(
        list(names), initial, values, np.sqrt(np.maximum(np.diag(cov), 0.0)), fitted, n_fit,
        n - n_fit, mean(_errors(before, rec, held)), mean(_errors(after, rec, held)),
        mean(_errors(before, rec, fit)), mean(_errors(after, rec, fit)), after.failed,
        str(sol.message))
