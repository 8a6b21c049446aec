"""Noise shared by the simulated sensors: seeded generators and gross outliers."""

from __future__ import annotations

import numpy as np


def as_generator(seed) -> np.random.Generator:
    """A generator from a seed (int or sequence of ints), or ``seed`` itself when it is one
    (so a sensor can draw from a simulation's generator in call order)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def gross_outliers(n: int, fraction: float, distance: tuple[float, float],
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``n`` readings are gross outliers, and their offsets.

    Each reading is an outlier with probability ``fraction``; its offset has a uniformly random
    direction and a length uniform in ``distance`` (m). Always draws ``n`` uniforms, ``n``
    3-vectors and ``n`` lengths from ``rng``, so the stream does not depend on the outcome.

    Returns
    -------
    mask : ndarray of bool, shape (n,)
    offsets : ndarray, shape (n, 3)
        The offset (m) of each outlier, zero for the others.

    Examples
    --------
    >>> import numpy as np
    >>> mask, offsets = gross_outliers(1000, 0.1, (0.01, 0.02), np.random.default_rng(0))
    >>> bool(np.all(np.linalg.norm(offsets[mask], axis=1) >= 0.01)), bool(np.all(offsets[~mask] == 0))
    (True, True)
    """
    mask = rng.random(n) < fraction
    d = rng.normal(size=(n, 3))
    d *= (rng.uniform(*distance, size=n) / np.linalg.norm(d, axis=1))[:, None]
    return mask, np.where(mask[:, None], d, 0.0)
