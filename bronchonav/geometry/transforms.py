"""Rigid transforms as 4x4 homogeneous matrices.

A transform named ``T_a_b`` maps coordinates in frame ``b`` to frame ``a``:
``p_a = apply(T_a_b, p_b)``. Translations are in metres, angles in radians.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """The 4x4 transform with rotation matrix ``rotation`` (3, 3) and ``translation`` (3,) (m)."""
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = translation
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform: ``invert(T_a_b) == T_b_a``."""
    R = T[:3, :3]
    return make_transform(R.T, -R.T @ T[:3, 3])


def apply(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (3,) or (N, 3) (m) through ``T``."""
    points = np.asarray(points, dtype=float)
    return points @ T[:3, :3].T + T[:3, 3]


def rotate(T: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Rotate direction vectors (3,) or (N, 3) by the rotation part of ``T`` (no translation)."""
    return np.asarray(vectors, dtype=float) @ T[:3, :3].T


def rotation_angle(T: np.ndarray) -> float:
    """Angle of the rotation part of ``T`` (rad), in [0, pi]."""
    cos = (np.trace(T[:3, :3]) - 1.0) / 2.0
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def random_transform(rng: np.random.Generator, max_translation: float = 0.05,
                     max_rotation: float = np.radians(30.0)) -> np.ndarray:
    """A random rigid transform within bounds.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (seed it for repeatable transforms).
    max_translation : float
        Each translation component is uniform in ``[-max_translation, max_translation]`` (m).
    max_rotation : float
        Each of the three x-y-z Euler angles is uniform in ``[-max_rotation, max_rotation]``
        (rad); the total rotation angle can therefore exceed ``max_rotation``.

    Returns
    -------
    ndarray, shape (4, 4)
    """
    angles = rng.uniform(-max_rotation, max_rotation, size=3)
    R = Rotation.from_euler("xyz", angles).as_matrix()
    t = rng.uniform(-max_translation, max_translation, size=3)
    return make_transform(R, t)
