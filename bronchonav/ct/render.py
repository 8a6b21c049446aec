"""Rendering the phantom (airway tree, nodules, lungs, body) into a CT volume in HU.

Frames and units
----------------
Geometry is in the CT frame (LPS, metres). Arrays are in numpy ``(z, y, x)`` order, as
``SimpleITK.GetArrayFromImage`` returns them; :meth:`VolumeGrid.to_sitk` builds the SimpleITK
image with spacing and origin in millimetres (the SimpleITK convention) and identity direction,
so the physical point of a voxel in mm, divided by 1000, is its CT-frame position in m.

Partial volume
--------------
Airways are capsules along their centreline segments (radius interpolated along each segment);
the wall is a shell of thickness :meth:`PhantomConfig.wall_thickness` around the lumen. A voxel's
lumen (or tissue) fraction is a linear ramp of the signed distance of its centre to the surface
over one voxel, ``clip(0.5 − sd/h, 0, 1)``, which is the exact area fraction for a plane surface
crossing the voxel face-on. The composed volume is blurred by a Gaussian and Gaussian noise is
added, both seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from bronchonav.airway.tree import AirwayTree, Nodule
from bronchonav.ct.lungs import LungModel

_SLAB = 16
"""Slices composed at a time (bounds the temporary memory)."""


@dataclass(frozen=True)
class VolumeGrid:
    """A voxel grid in the CT frame with identity direction (axes along LPS x, y, z).

    Attributes
    ----------
    origin_m : tuple of 3 float
        CT-frame position (m) of the centre of voxel (x=0, y=0, z=0).
    spacing_m : tuple of 3 float
        Voxel size (m) along x, y, z.
    size : tuple of 3 int
        Number of voxels along x, y, z.
    """

    origin_m: tuple[float, float, float]
    spacing_m: tuple[float, float, float]
    size: tuple[int, int, int]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Array shape in numpy (z, y, x) order."""
        return self.size[2], self.size[1], self.size[0]

    def axis(self, k: int) -> np.ndarray:
        """Voxel-centre coordinates (m) along axis ``k`` (0 x, 1 y, 2 z)."""
        return self.origin_m[k] + self.spacing_m[k] * np.arange(self.size[k])

    def index_of(self, points_ct) -> np.ndarray:
        """Continuous voxel index (x, y, z) of CT-frame points (N, 3) in m."""
        return (np.atleast_2d(points_ct) - np.asarray(self.origin_m)) / np.asarray(self.spacing_m)

    def to_sitk(self, array_zyx: np.ndarray):
        """A SimpleITK image of ``array_zyx`` with this geometry (spacing/origin in mm, LPS)."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(array_zyx)
        image.SetSpacing([float(s) * 1e3 for s in self.spacing_m])
        image.SetOrigin([float(o) * 1e3 for o in self.origin_m])
        image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        return image


# -- rasterisation kernels ------------------------------------------------------------------------

@numba.njit(cache=True)
def _ramp(sd, h):
    f = 0.5 - sd / h
    if f <= 0.0:
        return 0
    if f >= 1.0:
        return 255
    return int(f * 255.0 + 0.5)


@numba.njit(cache=True)
def _rasterise_capsules(p0, p1, r0, r1, w0, w1, origin, spacing, h, lumen, tissue, mask):
    """Max-accumulate lumen and lumen+wall fractions (uint8, 255 = 1) of tapered capsules."""
    nz, ny, nx = lumen.shape
    dims = (nx, ny, nz)
    for s in range(p0.shape[0]):
        reach = max(r0[s] + w0[s], r1[s] + w1[s]) + h
        lo = np.empty(3, np.int64)
        hi = np.empty(3, np.int64)
        for a in range(3):
            low = min(p0[s, a], p1[s, a]) - reach
            high = max(p0[s, a], p1[s, a]) + reach
            lo[a] = max(int(np.floor((low - origin[a]) / spacing[a])), 0)
            hi[a] = min(int(np.ceil((high - origin[a]) / spacing[a])), dims[a] - 1)
        dx = p1[s, 0] - p0[s, 0]
        dy = p1[s, 1] - p0[s, 1]
        dz = p1[s, 2] - p0[s, 2]
        len2 = dx * dx + dy * dy + dz * dz
        for k in range(lo[2], hi[2] + 1):
            qz = origin[2] + k * spacing[2] - p0[s, 2]
            for j in range(lo[1], hi[1] + 1):
                qy = origin[1] + j * spacing[1] - p0[s, 1]
                for i in range(lo[0], hi[0] + 1):
                    qx = origin[0] + i * spacing[0] - p0[s, 0]
                    t = (qx * dx + qy * dy + qz * dz) / len2 if len2 > 0 else 0.0
                    t = min(max(t, 0.0), 1.0)
                    ex = qx - t * dx
                    ey = qy - t * dy
                    ez = qz - t * dz
                    dist = np.sqrt(ex * ex + ey * ey + ez * ez)
                    r = r0[s] + t * (r1[s] - r0[s])
                    w = w0[s] + t * (w1[s] - w0[s])
                    sd = dist - r
                    if sd - w >= 0.5 * h:
                        continue
                    if sd <= 0.0:
                        mask[k, j, i] = True
                    fl = _ramp(sd, h)
                    if fl > lumen[k, j, i]:
                        lumen[k, j, i] = fl
                    ft = _ramp(sd - w, h)
                    if ft > tissue[k, j, i]:
                        tissue[k, j, i] = ft


@numba.njit(cache=True)
def _rasterise_spheres(centers, radii, origin, spacing, h, tissue):
    """Max-accumulate the solid fraction (uint8) of spheres into ``tissue``."""
    nz, ny, nx = tissue.shape
    dims = (nx, ny, nz)
    for s in range(centers.shape[0]):
        lo = np.empty(3, np.int64)
        hi = np.empty(3, np.int64)
        for a in range(3):
            lo[a] = max(int(np.floor((centers[s, a] - radii[s] - h - origin[a]) / spacing[a])), 0)
            hi[a] = min(int(np.ceil((centers[s, a] + radii[s] + h - origin[a]) / spacing[a])),
                        dims[a] - 1)
        for k in range(lo[2], hi[2] + 1):
            qz = origin[2] + k * spacing[2] - centers[s, 2]
            for j in range(lo[1], hi[1] + 1):
                qy = origin[1] + j * spacing[1] - centers[s, 1]
                for i in range(lo[0], hi[0] + 1):
                    qx = origin[0] + i * spacing[0] - centers[s, 0]
                    f = _ramp(np.sqrt(qx * qx + qy * qy + qz * qz) - radii[s], h)
                    if f > tissue[k, j, i]:
                        tissue[k, j, i] = f


def rasterise_airways(tree: AirwayTree, grid: VolumeGrid, wall_thickness):
    """Partial-volume airway fractions on ``grid``.

    Parameters
    ----------
    tree : AirwayTree
        Airways in the CT frame (m).
    grid : VolumeGrid
        Target grid.
    wall_thickness : callable
        Wall thickness (m) as a function of lumen diameter (m), vectorised.

    Returns
    -------
    lumen : ndarray of uint8, shape grid.shape_zyx
        Lumen fraction × 255 of each voxel.
    tissue : ndarray of uint8
        Lumen-plus-wall fraction × 255.
    mask : ndarray of bool
        Voxels whose centre lies inside the lumen (distance to a centreline segment ≤ radius).
    """
    p0, p1, r0, r1 = [], [], [], []
    for b in tree:
        p0.append(b.points[:-1]), p1.append(b.points[1:])
        r0.append(b.radii[:-1]), r1.append(b.radii[1:])
    p0, p1 = np.vstack(p0), np.vstack(p1)
    r0, r1 = np.concatenate(r0), np.concatenate(r1)
    w0, w1 = wall_thickness(2 * r0), wall_thickness(2 * r1)
    lumen = np.zeros(grid.shape_zyx, np.uint8)
    tissue = np.zeros(grid.shape_zyx, np.uint8)
    mask = np.zeros(grid.shape_zyx, bool)
    spacing = np.asarray(grid.spacing_m, float)
    _rasterise_capsules(p0, p1, r0, r1, np.asarray(w0, float), np.asarray(w1, float),
                        np.asarray(grid.origin_m, float), spacing, float(spacing.mean()),
                        lumen, tissue, mask)
    return lumen, tissue, mask


def rasterise_nodules(nodules: list[Nodule], grid: VolumeGrid, tissue: np.ndarray) -> None:
    """Max-accumulate the nodules' solid fraction (× 255, uint8) into ``tissue`` in place."""
    if not nodules:
        return
    spacing = np.asarray(grid.spacing_m, float)
    _rasterise_spheres(np.array([n.center for n in nodules]), np.array([n.radius for n in nodules]),
                       np.asarray(grid.origin_m, float), spacing, float(spacing.mean()), tissue)


def lung_labels(lungs: LungModel, grid: VolumeGrid) -> np.ndarray:
    """Lung label (0 outside, 1 right, 2 left) of every voxel centre, uint8 (z, y, x)."""
    labels = np.zeros(grid.shape_zyx, np.uint8)
    lo, hi = lungs.bounds()
    sel = []
    for k in range(3):
        ax = grid.axis(k)
        idx = np.nonzero((ax >= lo[k]) & (ax <= hi[k]))[0]
        sel.append(slice(idx[0], idx[-1] + 1) if len(idx) else slice(0, 0))
    x, y = grid.axis(0)[sel[0]], grid.axis(1)[sel[1]]
    z = grid.axis(2)
    for k0 in range(sel[2].start or 0, sel[2].stop or 0, _SLAB):
        k1 = min(k0 + _SLAB, sel[2].stop)
        labels[k0:k1, sel[1], sel[0]] = lungs.labels_xyz(x[None, None, :], y[None, :, None],
                                                         z[k0:k1, None, None])
    return labels


def compose_ct(grid: VolumeGrid, labels: np.ndarray, lumen: np.ndarray, tissue: np.ndarray,
               body_center_m, body_semi_axes_m, hu_air: float, hu_tissue: float, hu_lung: float,
               blur_sigma_vox: float, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Compose, blur and add noise to the CT intensities; returns int16 HU in (z, y, x) order.

    The background is air outside the elliptic body cylinder (``body_center_m``,
    ``body_semi_axes_m``, x/y in m), lung parenchyma where ``labels`` > 0 and soft tissue
    elsewhere; the lumen fraction is air and the rest of the ``tissue`` fraction soft tissue.
    """
    from scipy.ndimage import gaussian_filter

    x, y = grid.axis(0), grid.axis(1)
    body = (((x[None, :] - body_center_m[0]) / body_semi_axes_m[0]) ** 2
            + ((y[:, None] - body_center_m[1]) / body_semi_axes_m[1]) ** 2) <= 1.0
    background = np.where(body, np.float32(hu_tissue), np.float32(hu_air))
    hu = np.empty(grid.shape_zyx, np.float32)
    for k0 in range(0, grid.shape_zyx[0], _SLAB):
        k1 = min(k0 + _SLAB, grid.shape_zyx[0])
        f_l = lumen[k0:k1].astype(np.float32) / 255
        f_t = np.maximum(tissue[k0:k1], lumen[k0:k1]).astype(np.float32) / 255
        base = np.where(labels[k0:k1] > 0, np.float32(hu_lung), background[None])
        hu[k0:k1] = f_l * hu_air + (f_t - f_l) * hu_tissue + (1 - f_t) * base
    if blur_sigma_vox > 0:
        gaussian_filter(hu, blur_sigma_vox, output=hu, mode="nearest", truncate=3.0)
    out = np.empty(grid.shape_zyx, np.int16)
    for k0 in range(0, grid.shape_zyx[0], _SLAB):
        k1 = min(k0 + _SLAB, grid.shape_zyx[0])
        slab = hu[k0:k1]
        if noise_hu > 0:
            slab += noise_hu * rng.standard_normal(slab.shape, dtype=np.float32)
        out[k0:k1] = np.clip(np.rint(slab), -32768, 32767)
    return out
