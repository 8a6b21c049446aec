"""Continue the terminal branches of a segmented airway tree along their direction.

On thick slices (2.5 mm) small airways lying near the slice plane read *brighter* than the
parenchyma (the slice profile averages their lumen with the walls above and below and with the
vessels beside them), so no threshold takes them without the parenchyma, and the pockets of
parenchyma between a bronchus and its artery look as dark as they do. What such an airway still
has is its continuation: it starts at the end of a segmented branch and keeps roughly that
branch's direction, while a vessel or a pocket beside a bronchus does not start at a branch's
end. :func:`track_from_ends` therefore starts a tracker at every terminal branch end of the
segmented tree and follows, step by step within a cone about the current direction, the
straight segment along which the lumen is darkest against its immediate surroundings (the mean
of a grey-level black top-hat along it). A track is kept only if its first two steps stand out
as much as those of trackers started at random points of the same scan's parenchyma would at a
1 % false-start rate, and it stops where two consecutive steps no longer do (the airway has
ended or left the scan's reach), so the thresholds follow the scan's noise and vessel clutter.

Frames and units
----------------
Arrays are indexed ``[k, j, i]`` (k towards the head, as in
:mod:`bronchonav.airway.segment`); spacings are ``(x, y, z)`` in mm, positions and
directions inside the tracker are in mm along ``(k, j, i)``. Intensities are in HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import edt
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bronchonav.airway.centerline import extract_tree
from bronchonav.errors import CTError


@dataclass
class TrackingParams:
    """Parameters of :func:`track_from_ends` (mm, degrees, percentiles).

    Attributes
    ----------
    segment_mm : float
        Length of the straight segment scored at each step (mm): two 2.5 mm slices, so a dark
        pocket confined to one slice does not score as a tube; about the length of one small
        airway between branchings.
    step_mm : float
        Distance advanced per step (mm), about two in-plane pixels.
    cone_deg : float
        Half-angle of the cone of directions tried at each step about the current direction
        (degrees): the larger child of a bifurcation leaves its parent within about 40°
        (Horsfield & Cumming 1967), and a curving airway turns much less over one step.
    max_length_mm : float
        Longest track (mm): about two generations of small airways (each about three
        diameters, 3–4 mm, long; Weibel 1963), beyond which a small airway narrows out of a
        thick-slice scan's reach.
    step_percentile : float
        A step continues while its best segment scores above this percentile of the best
        segment from random parenchyma points (the same cone about random directions).
    accept_percentile : float
        A track is kept when the mean score of its first two steps exceeds this percentile of
        the same mean for trackers started at random parenchyma points (a 1 % false start per
        terminal branch), and it stops before two consecutive steps whose mean does not.
    calibration_starts : int
        Number of random parenchyma points the thresholds are measured on.
    """

    segment_mm: float = 5.0
    step_mm: float = 1.5
    cone_deg: float = 40.0
    max_length_mm: float = 20.0
    step_percentile: float = 90.0
    accept_percentile: float = 99.0
    calibration_starts: int = 1500


@dataclass
class Tracking:
    """Outcome of :func:`track_from_ends`.

    Attributes
    ----------
    step_threshold_hu, accept_threshold_hu : float
        Mean top-hat (HU) a step needed to continue, and the first two steps to be kept.
    starts : int
        Terminal branch ends a tracker started from.
    tracks : int
        Tracks kept.
    length_mm : float
        Total length of the kept tracks (mm).
    added_voxels : int
        Voxels the tracks added to the mask.
    """

    step_threshold_hu: float
    accept_threshold_hu: float
    starts: int
    tracks: int
    length_mm: float
    added_voxels: int


def _cone(n: int, half_angle_deg: float) -> np.ndarray:
    """``n`` nearly uniform unit vectors (a Fibonacci lattice) within ``half_angle_deg`` of the
    first axis, shape (n, 3)."""
    i = np.arange(n) + 0.5
    c = 1.0 - (1.0 - np.cos(np.radians(half_angle_deg))) * i / n
    phi = np.pi * (1.0 + 5.0 ** 0.5) * i
    s = np.sqrt(1.0 - c * c)
    return np.stack([c, s * np.cos(phi), s * np.sin(phi)], axis=1)


def _frame(u: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) whose first column is the unit vector ``u``."""
    a = np.zeros(3)
    a[np.argmin(np.abs(u))] = 1.0
    b1 = np.cross(u, a)
    b1 /= np.linalg.norm(b1)
    return np.stack([u, b1, np.cross(u, b1)], axis=1)


class _Tracker:
    """Scores straight segments in a cone and follows the best one (module docstring)."""

    def __init__(self, tophat, hu, mask, spacing_kji, max_hu, params: TrackingParams):
        self.tophat, self.hu, self.mask = tophat, hu, mask
        self.spacing = np.asarray(spacing_kji, dtype=float)
        self.max_hu = float(max_hu)
        self.params = params
        self.ts = np.arange(0.5, params.segment_mm + 1e-9, 0.5)
        self.cone = _cone(48, params.cone_deg)
        self.shape = np.array(hu.shape)

    def scores(self, p_mm, u):
        """Mean top-hat along the segments from ``p_mm`` in the cone about ``u``; ``-inf`` for
        a segment that crosses tissue brighter than ``max_hu`` or lies mostly in the mask."""
        dirs = self.cone @ _frame(u).T
        pts = p_mm[None, None] + dirs[:, None] * self.ts[None, :, None]
        idx = (pts / self.spacing).reshape(-1, 3).T
        shape = (len(dirs), len(self.ts))
        th = ndimage.map_coordinates(self.tophat, idx, order=1, cval=0.0).reshape(shape)
        hu = ndimage.map_coordinates(self.hu, idx, order=1, cval=1e4).reshape(shape)
        inside = ndimage.map_coordinates(self.mask, idx, order=0, cval=0).reshape(shape)
        s = th.mean(axis=1)
        s[(hu > self.max_hu).any(axis=1) | (inside.mean(axis=1) > 0.5)] = -np.inf
        return s, dirs

    def run(self, p_mm, u, threshold, stop_in_mask=True, hold=-np.inf):
        """Follow the best segment from ``p_mm`` while it scores above ``threshold`` and the
        last two steps' mean above ``hold``.

        Returns the path (n + 1, 3) in mm and the n step scores."""
        p, path, scores = np.asarray(p_mm, float), [np.asarray(p_mm, float)], []
        for n in range(int(self.params.max_length_mm / self.params.step_mm)):
            s, dirs = self.scores(p, u)
            k = int(np.argmax(s))
            if not s[k] > threshold or (scores and 0.5 * (scores[-1] + s[k]) <= hold):
                break
            u = dirs[k]
            p = p + self.params.step_mm * u
            path.append(p)
            scores.append(float(s[k]))
            idx = np.rint(p / self.spacing).astype(int)
            if np.any(idx < 0) or np.any(idx >= self.shape):
                break
            if stop_in_mask and n >= 2 and self.mask[tuple(idx)]:
                break  # joined the segmented tree again
        return np.array(path), np.array(scores)


def _ends(mask: np.ndarray, spacing_mm) -> list[tuple[np.ndarray, np.ndarray]]:
    """End point (mm, k j i) and direction over its last ~4 mm of every terminal branch of the
    mask's tree (:func:`bronchonav.airway.centerline.extract_tree`, distance-transform radii)."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_mm))
    try:
        tree = extract_tree(image)
    except CTError:
        return []
    out = []
    for leaf in tree.leaves():
        pts = tree[leaf].points[:, ::-1] * 1e3  # CT frame of the box (m) → mm along (k, j, i)
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        back = pts[np.searchsorted(arc, arc[-1] - 4.0)] if arc[-1] > 0 else pts[0]
        u = pts[-1] - back
        if np.linalg.norm(u) > 1e-6:
            out.append((pts[-1], u / np.linalg.norm(u)))
    return out


def parenchyma_sample(hu: np.ndarray, mask: np.ndarray, lung_hu: float, noise_hu: float,
                      max_hu: float) -> np.ndarray:
    """The parenchyma on every other voxel along each axis (a sample of bounded memory).

    A voxel of ``hu[::2, ::2, ::2]`` is parenchyma when it is darker than ``max_hu``, brighter
    than ``lung_hu - 3 noise_hu`` (not the airway lumen) and outside ``mask``; the result has
    the shape of that sampled grid. The refinements and the tracker set their thresholds on it.
    """
    h = hu[::2, ::2, ::2]
    return (h > lung_hu - 3.0 * noise_hu) & (h < max_hu) & ~mask[::2, ::2, ::2]


def track_from_ends(hu: np.ndarray, tophat: np.ndarray, mask: np.ndarray, spacing_mm,
                    slice_mm: float, lung_hu: float, noise_hu: float, max_hu: float,
                    params: TrackingParams | None = None,
                    seed: int = 0) -> tuple[np.ndarray, Tracking | None]:
    """Add to ``mask`` the continuations of its terminal branches (module docstring).

    Thresholds come from the scan: ``params.calibration_starts`` random parenchyma points
    (darker than ``max_hu``, brighter than ``lung_hu - 3 noise_hu``, outside the mask) each
    take a random direction; the ``step_percentile`` of their best segment in the cone is the
    step threshold, and the ``accept_percentile`` of the mean of the first two steps of a
    tracker started there is the acceptance threshold, which every two consecutive steps of a
    kept track meet too. A kept track adds the voxels darker than ``max_hu`` within an
    ellipsoid about its path: one in-plane pixel across, half a slice (``slice_mm / 2``) along
    z. In-plane the path is known to about a pixel; along z a thick slice does not tell where
    within it the airway lies; and the lumen's edge cannot be measured (it reads brighter than
    the parenchyma), so only this core is added.

    Parameters
    ----------
    hu : ndarray (K, J, I)
        Smoothed CT (HU), near-isotropic voxels.
    tophat : ndarray (K, J, I)
        Its grey-level black top-hat (HU), as in
        :func:`bronchonav.airway.segment.refine_small_airways`.
    mask : ndarray of bool (K, J, I)
        The segmented airways (a connected tree).
    spacing_mm : sequence of 3 floats
        Voxel spacing ``(x, y, z)`` (mm).
    slice_mm : float
        Thickness of the scan's slices (mm) the sub-slices were interpolated from.
    lung_hu, noise_hu : float
        Parenchyma level and noise of the scan (HU).
    max_hu : float
        Tracks stay darker than this (HU): walls and vessels are brighter.
    params : TrackingParams, optional
    seed : int
        Seed of the random calibration points (the result is deterministic).

    Returns
    -------
    mask : ndarray of bool
        A superset of ``mask``.
    outcome : Tracking or None
        ``None`` when the mask has no terminal branch or the scan too little parenchyma
        (under ``calibration_starts`` on every other voxel); nothing is added then.
    """
    params = params or TrackingParams()
    spacing_kji = np.asarray(spacing_mm, dtype=float)[::-1]
    tophat = np.ascontiguousarray(tophat, dtype=np.float32)
    hu = np.ascontiguousarray(hu, dtype=np.float32)
    mask_u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    ends = _ends(mask, spacing_mm)
    lung = parenchyma_sample(hu, mask, lung_hu, noise_hu, max_hu)
    parenchyma = np.flatnonzero(lung)
    if not ends or len(parenchyma) < params.calibration_starts:
        return mask, None
    tracker = _Tracker(tophat, hu, mask_u8, spacing_kji, max_hu, params)
    rng = np.random.default_rng(seed)
    chosen = parenchyma[rng.choice(len(parenchyma), params.calibration_starts, replace=False)]
    starts = 2 * np.column_stack(np.unravel_index(chosen, lung.shape))
    dirs = rng.standard_normal((len(starts), 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    best = np.array([tracker.scores(p * spacing_kji, u)[0].max() for p, u in zip(starts, dirs)])
    best[~np.isfinite(best)] = -np.inf
    t_step = float(np.percentile(best, params.step_percentile))
    if not np.isfinite(t_step):
        return mask, None
    first = []
    for p, u in zip(starts, dirs):
        _, s = tracker.run(p * spacing_kji, u, t_step, stop_in_mask=False)
        first.append(s[:2].mean() if len(s) >= 2 else -np.inf)
    t_accept = float(np.percentile(first, params.accept_percentile))
    if not np.isfinite(t_accept):
        t_accept = t_step  # random trackers rarely make two steps: two steps are evidence enough
    core = np.zeros(mask.shape, dtype=bool)
    kept, length = 0, 0.0
    for p, u in ends:
        path, s = tracker.run(p, u, t_step, hold=t_accept)
        if len(s) < 2 or s[:2].mean() <= t_accept:
            continue
        kept += 1
        length += params.step_mm * len(s)
        dense = np.concatenate([np.linspace(a, b, 8) for a, b in zip(path[:-1], path[1:])])
        idx = np.rint(dense / spacing_kji).astype(int)
        idx = idx[np.all((idx >= 0) & (idx < mask.shape), axis=1)]
        core[tuple(idx.T)] = True
    out = mask.copy()
    if kept:
        pixel = min(spacing_mm[:2])
        scale = (pixel / (0.5 * slice_mm), 1.0, 1.0)  # the ellipsoid mapped to a ball of `pixel`
        pad = int(np.ceil(0.5 * slice_mm / spacing_kji.min())) + 1
        idx = np.argwhere(core)
        box = tuple(slice(max(int(a) - pad, 0), int(b) + pad + 1)
                    for a, b in zip(idx.min(axis=0), idx.max(axis=0)))
        near = edt.edt(~core[box], anisotropy=tuple(spacing_kji * scale), parallel=2) <= pixel
        out[box] |= near & (hu[box] < max_hu)
    return out, Tracking(t_step, t_accept, len(ends), kept, length, int(out.sum() - mask.sum()))
