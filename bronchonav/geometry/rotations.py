"""Rotations: skew matrices, axis-angle, shortest rotations, quaternions, perpendiculars.

Rotation matrices are (3, 3) and act on column vectors (``v' = R @ v``); quaternions are
``(x, y, z, w)`` (the ROS order) and unit length; angles are in radians.

Examples
--------
>>> import numpy as np
>>> R = rotation_about([0, 0, 1], np.pi / 2)
>>> np.round(R @ [1.0, 0, 0], 12).tolist()
[0.0, 1.0, 0.0]
>>> q = matrix_to_quat(R)
>>> np.round(q, 6).tolist()
[0.0, 0.0, 0.707107, 0.707107]
>>> bool(np.allclose(quat_to_matrix(q), R))
True
"""

from __future__ import annotations

import numpy as np


def skew(v) -> np.ndarray:
    """The cross-product matrix ``[v]x`` (3, 3) of ``v`` (3,): ``skew(v) @ u == cross(v, u)``.

    >>> skew([1.0, 2.0, 3.0]) @ [4.0, 5.0, 6.0]
    array([-3.,  6., -3.])
    """
    x, y, z = np.asarray(v, dtype=float)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def rotation_about(axis, angle: float) -> np.ndarray:
    """Rotation matrix (3, 3) by ``angle`` (rad, right-handed) about ``axis`` (3,) (Rodrigues).

    The axis need not be unit length; it must not be zero.

    >>> np.round(rotation_about([1.0, 0, 0], np.pi / 2) @ [0, 1.0, 0], 12).tolist()
    [0.0, 0.0, 1.0]
    """
    axis = np.asarray(axis, dtype=float)
    K = skew(axis / np.linalg.norm(axis))
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def perpendicular(v) -> np.ndarray:
    """A unit vector perpendicular to each of ``v`` ((3,) or (N, 3), non-zero), chosen
    deterministically: ``v × x̂`` unless ``v`` is within ~25° of x̂, then ``v × ŷ``.

    >>> perpendicular([0, 0, 1.0]).tolist()
    [0.0, 1.0, 0.0]
    >>> perpendicular([[1.0, 0, 0], [0, 0, 2.0]]).tolist()
    [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    """
    v = np.asarray(v, dtype=float)
    rows = np.atleast_2d(v)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    helper = np.where(np.abs(unit[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    p = np.cross(unit, helper)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return p.reshape(v.shape)


def rotation_between(a, b) -> np.ndarray:
    """The smallest rotation matrix (3, 3) taking the direction of ``a`` onto that of ``b``.

    Opposite vectors give the half turn about :func:`perpendicular` ``(a)``.

    >>> np.round(rotation_between([1.0, 0, 0], [0, 0, 1.0]) @ [1.0, 0, 0], 12).tolist()
    [0.0, 0.0, 1.0]
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    c = float(a @ b)
    if c < -1.0 + 1e-12:
        p = perpendicular(a)
        return 2.0 * np.outer(p, p) - np.eye(3)
    K = skew(np.cross(a, b))
    return np.eye(3) + K + (K @ K) / (1.0 + c)


def quat_to_matrix(q) -> np.ndarray:
    """Rotation matrix (3, 3) of the quaternion ``q`` = (x, y, z, w) (normalised here), or of
    each of ``q`` (N, 4) → (N, 3, 3). (For the rod's (w, x, y, z) order pass ``q[..., [1, 2, 3, 0]]``.)"""
    q = np.asarray(q, dtype=float)
    x, y, z, w = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    R = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=-2)
    return R


def matrix_to_quat(R) -> np.ndarray:
    """Unit quaternion (x, y, z, w) with ``w >= 0`` of the rotation matrix ``R`` (3, 3)
    (Shepperd's method: accurate for every angle), or of each of ``R`` (N, 3, 3) → (N, 4)."""
    R = np.asarray(R, dtype=float)
    if R.ndim == 3:
        return np.array([matrix_to_quat(r) for r in R]).reshape(-1, 4)
    t = np.trace(R)
    if t > 0:
        s = 2.0 * np.sqrt(1.0 + t)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = np.empty(4)
        q[i] = s / 4
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
        q[3] = (R[k, j] - R[j, k]) / s
    q = np.asarray(q, dtype=float)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def random_perpendicular(v, rng: np.random.Generator) -> np.ndarray:
    """Random unit vectors perpendicular to ``v`` ((3,) or (N, 3)): ``v × g`` normalised, with
    ``g`` drawn from ``rng.normal`` (one (3,) draw per row; seed ``rng`` for repeatable vectors).

    >>> p = random_perpendicular([0, 0, 1.0], np.random.default_rng(0))
    >>> abs(round(float(p[2]), 12)), round(float(np.linalg.norm(p)), 12)
    (0.0, 1.0)
    """
    v = np.asarray(v, dtype=float)
    p = np.cross(v, rng.normal(size=v.shape))
    return p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
