"""The simulated patient on the table: where the EM field generator's frame sits in the CT."""

from __future__ import annotations

import numpy as np

from bronchonav.geometry.transforms import random_transform
from bronchonav.sensors.noise import as_generator


def patient_transform(seed: int | np.random.Generator, max_translation: float = 0.05,
                      max_rotation: float = 0.5236) -> np.ndarray:
    """The simulated patient's ``T_ct_patient`` (4×4, m) for a seed — the registration target.

    Each translation component is uniform in ``±max_translation`` (m), each x-y-z Euler angle in
    ``±max_rotation`` (rad). ``seed`` may be a generator shared with a simulation. Only
    evaluation code (the demo's scoring, tests) should read it; a navigation run must recover
    it by registration.

    Examples
    --------
    >>> import numpy as np
    >>> T = patient_transform(1)
    >>> bool(np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3))), bool(np.all(abs(T[:3, 3]) <= 0.05))
    (True, True)
    """
    return random_transform(as_generator(seed), max_translation, max_rotation)
