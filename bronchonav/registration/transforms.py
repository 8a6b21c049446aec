"""Random rigid transforms for simulated registration problems (the hidden patient pose).

The transform algebra (make, invert, apply, rotate, angle) is :mod:`bronchonav.geometry.transforms`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from bronchonav.geometry import make_transform


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
