"""Resampling thick-slice CT volumes to near-isotropic voxels.

Arrays are indexed ``[k, j, i]`` (slices first, as from ``sitk.GetArrayFromImage``); spacings
are given ``(x, y, z)`` in mm, as SimpleITK reports them.
"""

from __future__ import annotations

import numpy as np


def slice_factor(spacing_mm, max_anisotropy: float = 1.5) -> int:
    """Number of sub-slices per slice that makes the slice spacing at most ``max_anisotropy``
    times the in-plane pixel; 1 when the scan is already that close to isotropic.

    Examples
    --------
    >>> slice_factor((0.7, 0.7, 2.5)), slice_factor((0.7, 0.7, 1.0)), slice_factor((1, 1, 1))
    (4, 1, 1)
    """
    pixel = min(float(spacing_mm[0]), float(spacing_mm[1]))
    ratio = float(spacing_mm[2]) / pixel
    return 1 if ratio <= max_anisotropy else int(np.ceil(ratio - 1e-9))


def upsample_slices(volume: np.ndarray, factor: int) -> np.ndarray:
    """Interpolate ``factor - 1`` slices between consecutive slices (cubic, Catmull-Rom).

    Slice ``k`` of the input is slice ``k * factor`` of the output, which has
    ``(K - 1) * factor + 1`` slices; the interpolation reproduces linear ramps exactly and
    needs no global solve (unlike B-splines), so it costs a few passes over the volume.

    Parameters
    ----------
    volume : ndarray, shape (K, J, I)
    factor : int
        Sub-slices per slice (>= 1).

    Returns
    -------
    ndarray of float32, shape ((K - 1) * factor + 1, J, I)

    Examples
    --------
    >>> v = np.arange(3, dtype=float)[:, None, None] * np.ones((1, 2, 2))
    >>> upsample_slices(v, 4)[:, 0, 0].tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    vol = np.asarray(volume, dtype=np.float32)
    if factor == 1 or len(vol) < 2:
        return vol.copy()
    n = len(vol)
    out = np.empty(((n - 1) * factor + 1,) + vol.shape[1:], np.float32)
    # linear extrapolation of one ghost slice at each end keeps ramps exact at the borders
    padded = np.concatenate([2 * vol[:1] - vol[1:2], vol, 2 * vol[-1:] - vol[-2:-1]])
    out[::factor] = vol
    m = n - 1
    for r in range(1, factor):
        t = r / factor
        w = ((-t ** 3 + 2 * t ** 2 - t) / 2, (3 * t ** 3 - 5 * t ** 2 + 2) / 2,
             (-3 * t ** 3 + 4 * t ** 2 + t) / 2, (t ** 3 - t ** 2) / 2)
        dst = out[r::factor]
        dst[:] = w[0] * padded[0:m]
        dst += w[1] * padded[1:m + 1]
        dst += w[2] * padded[2:m + 2]
        dst += w[3] * padded[3:m + 3]
    return out
