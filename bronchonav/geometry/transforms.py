"""Rigid transforms as 4x4 homogeneous matrices.

A transform named ``T_a_b`` maps coordinates in frame ``b`` to frame ``a``:
``p_a = apply(T_a_b, p_b)``, and transforms chain as ``T_a_c = T_a_b @ T_b_c``. Translations
are in metres, angles in radians.

Examples
--------
>>> import numpy as np
>>> from bronchonav.geometry.rotations import rotation_about
>>> T_ct_patient = make_transform(rotation_about([0, 0, 1.0], np.pi / 2), [0.1, 0, 0])
>>> p_ct = apply(T_ct_patient, [1.0, 0, 0])
>>> np.round(p_ct, 12).tolist()
[0.1, 1.0, 0.0]
>>> np.round(apply(invert(T_ct_patient), p_ct), 12).tolist()
[1.0, 0.0, 0.0]
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def make_transform(rotation, translation) -> np.ndarray:
    """``T_a_b`` (4, 4) from the rotation matrix (3, 3) of frame ``b``'s axes in frame ``a`` and
    the position (3,) of ``b``'s origin in ``a`` (m)."""
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = translation
    return T


def invert(T) -> np.ndarray:
    """Inverse of a rigid transform: ``invert(T_a_b) == T_b_a``."""
    T = np.asarray(T, dtype=float)
    R = T[:3, :3]
    return make_transform(R.T, -R.T @ T[:3, 3])


def apply(T, points) -> np.ndarray:
    """Map points (3,) or (N, 3) (m) from frame ``b`` to frame ``a`` through ``T_a_b``."""
    T = np.asarray(T, dtype=float)
    return np.asarray(points, dtype=float) @ T[:3, :3].T + T[:3, 3]


def rotate(T, vectors) -> np.ndarray:
    """Direction vectors (3,) or (N, 3) from frame ``b`` to frame ``a`` through the rotation
    part of ``T_a_b`` (no translation)."""
    return np.asarray(vectors, dtype=float) @ np.asarray(T, dtype=float)[:3, :3].T


def rotation_angle(T) -> float:
    """Angle (rad, in [0, pi]) of the rotation part of ``T`` (4, 4) or of a rotation (3, 3).

    >>> from bronchonav.geometry.rotations import rotation_about
    >>> round(rotation_angle(rotation_about([1.0, 1.0, 0], 0.3)), 12)
    0.3
    """
    R = np.asarray(T, dtype=float)[:3, :3]
    cos = (np.trace(R) - 1.0) / 2.0
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
