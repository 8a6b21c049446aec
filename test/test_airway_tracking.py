"""Tracking from the terminal branches on thick slices: a small airway continuing a segmented
branch is followed, a vessel and a dark tube beside the branch (not at its end) are not.

The scene is rendered finely along z, integrated over a 2.5 mm slice profile, sampled every
2.5 mm with noise, smoothed and interpolated back to sub-slices as the segmentation does.
"""

import numpy as np
from scipy import ndimage

from bronchonav.airway.tracking import track_from_ends
from bronchonav.ct.resample import upsample_slices

PIXEL, THICK, FINE = 0.7, 2.5, 0.25  # mm
LUNG, WALL, VESSEL = -850.0, 0.0, 40.0  # HU


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _distance(points, a, b):
    """Distance (mm) from points (..., 3) to the segment a-b (x, y, z mm)."""
    d = b - a
    t = np.clip(((points - a) @ d) / (d @ d), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[..., None] * d), axis=-1)


# x, y, z (mm): a parent airway tilted 45 deg from z ending at END, its child continuing 25 deg
# further from z (70 deg: near the slice plane), a vessel 9 mm beside the child and a dark
# tube leaving the parent's side 12 mm above its end
END = np.array([-10.0, 0.0, 0.0])
PARENT = (END - 18.0 * _unit([1, 0, -1]), END, 2.0, 0.8)
CHILD = (END, END + 16.0 * _unit([np.sin(np.radians(70)), 0, -np.cos(np.radians(70))]), 1.5, 0.6)
VES = (END + [0.0, 9.0, 0.0], CHILD[1] + [0.0, 9.0, 0.0], 1.5)
SIDE_START = END - 12.0 * _unit([1, 0, -1]) + [0.0, 2.8, 0.0]
SIDE = (SIDE_START, SIDE_START + [0.0, 14.0, 0.0], 1.5, 0.6)


def _scene(noise_hu=30.0, seed=0, child=True):
    n_xy, n_z = 58, 160
    x = (np.arange(n_xy) - n_xy // 2) * PIXEL
    z = (np.arange(n_z) - n_z // 2) * FINE
    pts = np.stack(np.meshgrid(z, x, x, indexing="ij")[::-1], axis=-1)  # (z, y, x, 3) as x,y,z
    ct = np.full(pts.shape[:3], LUNG)
    airways = (PARENT, CHILD, SIDE) if child else (PARENT, SIDE)
    for a, b, r, w in airways:
        d = _distance(pts, a, b)
        ct[(d < r + w) & (ct < WALL)] = WALL
    ct[_distance(pts, *VES[:2]) < VES[2]] = VESSEL
    for a, b, r, w in airways:
        ct[_distance(pts, a, b) < r] = -1000.0
    # slice profile (Gaussian, FWHM = thickness), one slice every thickness, noise
    step = int(round(THICK / FINE))
    thick = ndimage.gaussian_filter1d(ct, THICK / 2.3548 / FINE, axis=0)[::step]
    thick += noise_hu * np.random.default_rng(seed).standard_normal(thick.shape)
    thick = ndimage.gaussian_filter(thick, (0.5 / THICK, 0.5 / PIXEL, 0.5 / PIXEL))
    factor = 4
    hu = upsample_slices(thick, factor)
    z_sub = z[::step][0] + np.arange(len(hu)) * THICK / factor
    sub_pts = np.stack(np.meshgrid(z_sub, x, x, indexing="ij")[::-1], axis=-1)
    return hu, sub_pts, (PIXEL, PIXEL, THICK / factor)


def _tophat(hu, spacing):
    r = 1.5
    ry, rx = (int(round(r / s)) for s in spacing[1::-1])
    yy, xx = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    disk = ((yy * spacing[1]) ** 2 + (xx * spacing[0]) ** 2 <= r * r)[None]
    return ndimage.grey_closing(hu, footprint=disk) - hu


def test_the_continuation_of_a_branch_is_tracked_and_vessels_and_side_tubes_are_not():
    hu, pts, spacing = _scene()
    parent = _distance(pts, *PARENT[:2]) < PARENT[2]
    a, b = CHILD[:2]
    # the premise: through the slice profile the child's axis reads brighter than the
    # parenchyma, so no threshold below the parenchyma takes it
    far = np.min([_distance(pts, *seg[:2]) for seg in (PARENT, CHILD, VES, SIDE)], axis=0) > 5.0
    assert np.median(hu[_distance(pts, a, b) < 0.5]) > np.median(hu[far])
    out, outcome = track_from_ends(hu, _tophat(hu, spacing), parent, spacing, THICK, lung_hu=LUNG,
                                   noise_hu=10.0, max_hu=0.5 * (LUNG - 500.0))
    assert outcome is not None and outcome.starts == 1 and outcome.tracks == 1
    added = out & ~parent
    # the child's axis (its first 80 %, past the parent's lumen) is in the mask
    axis = a + np.linspace(0.15, 0.8, 30)[:, None] * (b - a)
    idx = np.rint([[(p[2] - pts[0, 0, 0, 2]) / spacing[2], (p[1] - pts[0, 0, 0, 1]) / spacing[1],
                    (p[0] - pts[0, 0, 0, 0]) / spacing[0]] for p in axis]).astype(int)
    near_axis = ndimage.binary_dilation(out, iterations=1)[tuple(idx.T)]
    assert near_axis.mean() >= 0.8
    # everything added lies along the child, none on the vessel or in the side tube
    assert np.all(_distance(pts[added], a, b) < CHILD[2] + CHILD[3] + 1.0)
    assert not np.any(_distance(pts[added], *VES[:2]) < VES[2] + 1.0)
    assert not np.any(_distance(pts[added], *SIDE[:2]) < SIDE[2] + SIDE[3])


def test_without_a_continuation_nothing_is_added():
    """The same scene without the child: the tracker from the parent's end finds nothing it
    would keep (the vessel is brighter than the parenchyma, the side tube is behind the end)."""
    hu, pts, spacing = _scene(seed=1, child=False)
    parent = _distance(pts, *PARENT[:2]) < PARENT[2]
    out, outcome = track_from_ends(hu, _tophat(hu, spacing), parent, spacing, THICK, lung_hu=LUNG,
                                   noise_hu=10.0, max_hu=0.5 * (LUNG - 500.0))
    assert outcome is not None and outcome.tracks == 0
    assert np.array_equal(out, parent)

