"""Multi-scale Hessian measure of dark tubes (airway lumens) in a CT volume.

For a dark tube the Hessian of the smoothed intensity has two large positive eigenvalues
(across the tube) and one near zero (along it). The measure is Sato et al.'s (1998) line filter
for dark lines: with the eigenvalues sorted ``l1 <= l2 <= l3`` it is ``sigma^2 * l2`` weighted by
``exp(-l1^2 / (2 (a l2)^2))`` (``a = 0.5`` when ``l1 < 0``, ``2`` when ``l1 > 0``), and 0 unless
``l2 > 0``; the maximum over the scales is kept. With the ``sigma^2`` normalisation the measure
is in HU: roughly the tube's contrast against its surroundings, so it is compared with the
scan's noise.

Arrays are indexed ``[k, j, i]``; spacings and scales are in mm (the voxel spacing may differ
per axis, the Gaussian scales are isotropic in mm).
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage


@numba.njit(cache=True, inline="always")
def _eigenvalues(a, b, c, d, e, f):
    """Ascending eigenvalues of the symmetric matrix [[a, d, e], [d, b, f], [e, f, c]]."""
    off = d * d + e * e + f * f
    q = (a + b + c) / 3.0
    if off <= 1e-12 * (a * a + b * b + c * c) + 1e-30:
        lo, mid, hi = a, b, c
        if lo > mid:
            lo, mid = mid, lo
        if mid > hi:
            mid, hi = hi, mid
        if lo > mid:
            lo, mid = mid, lo
        return lo, mid, hi
    p = np.sqrt(((a - q) ** 2 + (b - q) ** 2 + (c - q) ** 2 + 2.0 * off) / 6.0)
    b11, b22, b33 = (a - q) / p, (b - q) / p, (c - q) / p
    b12, b13, b23 = d / p, e / p, f / p
    r = 0.5 * (b11 * (b22 * b33 - b23 * b23) - b12 * (b12 * b33 - b23 * b13)
               + b13 * (b12 * b23 - b22 * b13))
    phi = np.pi / 3.0 if r <= -1.0 else (0.0 if r >= 1.0 else np.arccos(r) / 3.0)
    hi = q + 2.0 * p * np.cos(phi)
    lo = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    return lo, 3.0 * q - lo - hi, hi


@numba.njit(cache=True)
def _accumulate(smooth, where, spacing_kji, scale2, out):
    """``out = max(out, measure)`` at every interior voxel where ``where`` is set (finite
    differences of ``smooth``)."""
    nz, ny, nx = smooth.shape
    hz, hy, hx = spacing_kji[0], spacing_kji[1], spacing_kji[2]
    for k in range(1, nz - 1):
        for j in range(1, ny - 1):
            for i in range(1, nx - 1):
                if not where[k, j, i]:
                    continue
                c = smooth[k, j, i]
                dxx = (smooth[k, j, i + 1] - 2.0 * c + smooth[k, j, i - 1]) / (hx * hx)
                dyy = (smooth[k, j + 1, i] - 2.0 * c + smooth[k, j - 1, i]) / (hy * hy)
                dzz = (smooth[k + 1, j, i] - 2.0 * c + smooth[k - 1, j, i]) / (hz * hz)
                dxy = (smooth[k, j + 1, i + 1] - smooth[k, j + 1, i - 1] - smooth[k, j - 1, i + 1]
                       + smooth[k, j - 1, i - 1]) / (4.0 * hx * hy)
                dxz = (smooth[k + 1, j, i + 1] - smooth[k + 1, j, i - 1] - smooth[k - 1, j, i + 1]
                       + smooth[k - 1, j, i - 1]) / (4.0 * hx * hz)
                dyz = (smooth[k + 1, j + 1, i] - smooth[k + 1, j - 1, i] - smooth[k - 1, j + 1, i]
                       + smooth[k - 1, j - 1, i]) / (4.0 * hy * hz)
                l1, l2, _ = _eigenvalues(dxx, dyy, dzz, dxy, dxz, dyz)
                if l2 <= 0.0:
                    continue
                alpha = 0.5 if l1 < 0.0 else 2.0
                t = scale2 * l2 * np.exp(-l1 * l1 / (2.0 * (alpha * l2) ** 2))
                if t > out[k, j, i]:
                    out[k, j, i] = t


def dark_tubeness(hu: np.ndarray, spacing_mm, scales_mm, where: np.ndarray | None = None) -> np.ndarray:
    """Multi-scale dark-tube measure (HU) of a volume (module docstring).

    Parameters
    ----------
    hu : ndarray, shape (K, J, I)
        Intensities (HU).
    spacing_mm : sequence of 3 floats
        Voxel spacing ``(x, y, z)`` in mm.
    scales_mm : sequence of float
        Gaussian scales (mm), about the lumen radii to enhance.
    where : ndarray of bool, shape (K, J, I), optional
        Evaluate the measure only at these voxels (the Gaussian smoothing is done everywhere;
        the Hessian and its eigenvalues, the costly part, only here). All voxels by default.

    Returns
    -------
    ndarray of float32, shape (K, J, I)
        0 on the border voxels, where the measure is not defined, and outside ``where``.
    """
    vol = np.ascontiguousarray(hu, dtype=np.float32)
    spacing_kji = np.asarray(spacing_mm, dtype=np.float64)[::-1].copy()
    out = np.zeros(vol.shape, np.float32)
    if min(vol.shape) < 3:
        return out
    where = np.ones(vol.shape, bool) if where is None else np.ascontiguousarray(where, bool)
    smooth = np.empty_like(vol)
    for s in scales_mm:
        ndimage.gaussian_filter(vol, [float(s) / h for h in spacing_kji], output=smooth,
                                truncate=3.0)
        _accumulate(smooth, where, spacing_kji, float(s) ** 2, out)
    return out
