"""Depth image → point cloud in the camera's optical frame.

The optical frame is the camera's (+z along the optical axis, +x right, +y down, metres); depth
images hold z-depth (m) with ``+inf``/NaN for pixels without a surface, as rendered by
:class:`~bronchonav.imaging.camera.TipCamera`.
"""

from __future__ import annotations

import numpy as np

from bronchonav.errors import InputError
from bronchonav.imaging.camera import CameraIntrinsics


def depth_to_points(depth: np.ndarray, intrinsics: CameraIntrinsics, stride: int = 1,
                    max_depth: float = np.inf) -> np.ndarray:
    """Back-project a depth image to 3-D points in the camera frame.

    Parameters
    ----------
    depth : ndarray, shape (H, W)
        z-depth per pixel (m); non-finite or non-positive values are skipped.
    intrinsics : CameraIntrinsics
        The intrinsics the image was taken with (distortion included: each pixel's ray is the
        undistorted one).
    stride : int
        Keep every ``stride``-th pixel in both directions.
    max_depth : float
        Skip pixels deeper than this (m).

    Returns
    -------
    ndarray, shape (N, 3)
        Points in the camera's optical frame (m).
    """
    depth = np.asarray(depth, dtype=float)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise InputError(f"depth image is {depth.shape[::-1]} (W, H) but the intrinsics are "
                         f"{intrinsics.width}×{intrinsics.height}")
    if int(stride) < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    rays = intrinsics.rays.reshape(intrinsics.height, intrinsics.width, 3)[::stride, ::stride]
    z = depth[::stride, ::stride]
    keep = np.isfinite(z) & (z > 0) & (z <= max_depth)
    r = rays[keep]
    return r * (z[keep] / r[:, 2])[:, None]
