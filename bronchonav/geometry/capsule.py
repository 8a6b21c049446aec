"""Distances to segments and capsules (a segment swept by a sphere of radius r).

Points and segment ends share one frame (m).

Examples
--------
>>> import numpy as np
>>> float(segment_distance([1.0, 0, 0.5], [0, 0, 0], [0, 0, 1.0]))
1.0
>>> float(capsule_distance([0, 0, 3.0], [0, 0, 0], [0, 0, 1.0], 0.5))   # past the end cap
1.5
"""

from __future__ import annotations

import numpy as np


def segment_distance(p, a, b) -> np.ndarray:
    """Distance (m) from points ``p`` (..., 3) to the segment ``a``–``b`` (each (3,)); a
    zero-length segment is the point ``a``."""
    p = np.asarray(p, dtype=float)
    a = np.asarray(a, dtype=float)
    ab = np.asarray(b, dtype=float) - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-30), 0.0, 1.0)
    return np.linalg.norm(p - a - t[..., None] * ab, axis=-1)


def capsule_distance(p, a, b, radius: float) -> np.ndarray:
    """Signed distance (m) from points ``p`` (..., 3) to the surface of the capsule of
    ``radius`` (m) around the segment ``a``–``b``: negative inside."""
    return segment_distance(p, a, b) - radius
