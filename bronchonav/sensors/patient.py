"""The simulated patient on the table: where the EM field generator's frame sits in the CT."""

from __future__ import annotations

import numpy as np

from bronchonav.geometry.transforms import random_transform


def patient_transform(seed: int, max_translation: float = 0.05,
                      max_rotation: float = 0.5236) -> np.ndarray:
    """The simulated patient's ``T_ct_patient`` (4×4, m) for a seed — the registration target.

    Each translation component is uniform in ``±max_translation`` (m), each x-y-z Euler angle in
    ``±max_rotation`` (rad). Only evaluation code (the demo's scoring, tests) should read it; a
    navigation run must recover it by registration.
    """
    return random_transform(np.random.default_rng(seed), max_translation, max_rotation)
