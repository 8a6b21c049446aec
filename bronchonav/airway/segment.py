"""Airway lumen segmentation: automatic trachea seed and explosion-controlled region growing.

The classical approach (Mori et al. 1996; Kiraly et al. 2002): grow the region of voxels darker
than an upper threshold, connected to a seed in the trachea, and raise the threshold step by step
while the segmented volume grows smoothly. When the airway wall gives way somewhere the region
floods the lung parenchyma and the volume jumps ("explosion"); the last threshold before the jump
is kept. A refinement pass then adds thin peripheral airways that are darker than their
surroundings (a grey-level black top-hat), but only where they connect to the grown tree and
stay thin.

Frames and units
----------------
The input is a SimpleITK image in HU (ITK LPS geometry, mm). The output mask has the same
geometry as the input; the seed is reported both as a voxel index ``(k, j, i)`` (array order)
and as a point in the CT frame (LPS, metres). Thresholds are in HU, volumes in m^3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bronchonav.ct.io import ct_to_index, index_to_ct
from bronchonav.errors import CTError


@dataclass
class SegmentationParams:
    """Parameters of :func:`segment_airways` (HU, mm, dimensionless ratios).

    Attributes
    ----------
    smoothing_sigma_mm : float
        Gaussian smoothing of the CT before thresholding (mm), to tame noise.
    seed_air_hu : float
        Voxels darker than this are trachea candidates in the seed search (HU).
    seed_search_mm : float
        Height of the slab below the top of the body searched for the trachea (mm).
    threshold_start_hu, threshold_stop_hu, threshold_step_hu : float
        Range and coarse step of the upper threshold search (HU).
    explosion_ratio : float
        A step whose volume exceeds the previous one by more than this factor is a leak.
    refine : bool
        Run the small-airway refinement (black top-hat) after region growing.
    tophat_radius_mm : float
        Radius of the top-hat's structuring ball (mm): airways up to about this radius are
        enhanced.
    tophat_min_hu : float
        Minimum top-hat contrast (HU) for a voxel to join as a small-airway candidate.
    refine_max_hu : float
        Candidates must also be darker than this (HU).
    """

    smoothing_sigma_mm: float = 0.5
    seed_air_hu: float = -900.0
    seed_search_mm: float = 40.0
    threshold_start_hu: float = -960.0
    threshold_stop_hu: float = -500.0
    threshold_step_hu: float = 20.0
    explosion_ratio: float = 1.5
    refine: bool = True
    tophat_radius_mm: float = 2.0
    tophat_min_hu: float = 100.0
    refine_max_hu: float = -700.0


@dataclass
class Segmentation:
    """Result of :func:`segment_airways`.

    Attributes
    ----------
    mask : SimpleITK.Image
        ``uint8`` airway lumen mask (1 inside), same geometry as the input CT.
    seed_index : tuple of int
        Trachea seed voxel ``(k, j, i)`` in the input's array order.
    seed_ct : ndarray, shape (3,)
        The seed in the CT frame (m).
    threshold_hu : float
        Upper HU threshold chosen by the explosion control.
    volume_curve : list of (float, float)
        ``(threshold HU, segmented volume m^3)`` for every threshold tried.
    refined_volume : float
        Volume added by the small-airway refinement (m^3).
    """

    mask: sitk.Image
    seed_index: tuple[int, int, int]
    seed_ct: np.ndarray
    threshold_hu: float
    volume_curve: list[tuple[float, float]] = field(default_factory=list)
    refined_volume: float = 0.0

    def array(self) -> np.ndarray:
        """The mask as a boolean array indexed ``[k, j, i]``."""
        return sitk.GetArrayViewFromImage(self.mask).astype(bool)


# -- helpers -----------------------------------------------------------------------------------

def _bbox(mask: np.ndarray, pad: int, shape) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` grown by ``pad`` voxels and clipped to ``shape``."""
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(i) == 0 for i in idx):
        raise CTError("no airway or lung region found in the CT")
    return tuple(slice(max(int(i[0]) - pad, 0), min(int(i[-1]) + pad + 1, n))
                 for i, n in zip(idx, shape))


def _outside_air(dark: np.ndarray) -> np.ndarray:
    """Dark voxels connected to the volume's lateral or anterior/posterior faces (air around the
    patient), as a boolean mask."""
    labels = cc3d.connected_components(dark, connectivity=6)
    border = np.unique(np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    border = border[border > 0]
    return np.isin(labels, border)


def find_trachea_seed(hu: np.ndarray, spacing_mm, params: SegmentationParams) -> tuple[int, int, int]:
    """Find a voxel inside the trachea, in an array oriented LPS (index k increases superiorly).

    The top slab of the body (``params.seed_search_mm`` high) is searched for dark regions
    (below ``params.seed_air_hu``) that do not touch the volume's sides (those are air around the
    patient). Each candidate 3D component is scored as a vertical tube: it must span at least a
    third of the slab, with a mean cross-section of 4–30 mm equivalent diameter, and candidates
    nearer the body's left-right centre win.

    Parameters
    ----------
    hu : ndarray, shape (K, J, I)
        Smoothed CT in HU, array order ``[k, j, i]`` with k towards the head.
    spacing_mm : sequence of 3 floats
        Voxel spacing (x, y, z) in mm.
    params : SegmentationParams

    Returns
    -------
    tuple of int
        Seed index ``(k, j, i)``.

    Raises
    ------
    CTError
        If no trachea-like region is found.
    """
    sx, sy, sz = spacing_mm
    body = hu > -400
    body_k = np.flatnonzero(body.any(axis=(1, 2)))
    if len(body_k) == 0:
        raise CTError("no body found in the CT (no voxel above -400 HU)")
    top = int(body_k[-1])
    n_slab = max(int(round(params.seed_search_mm / sz)), 3)
    lo = max(top - n_slab + 1, 0)
    slab = hu[lo:top + 1]
    dark = slab < params.seed_air_hu
    dark &= ~_outside_air(dark)
    labels = cc3d.connected_components(dark, connectivity=6)
    if labels.max() == 0:
        raise CTError("no trachea found: no air region inside the body in the top "
                      f"{params.seed_search_mm:g} mm of the scan")
    body_cols = np.flatnonzero(body[lo:top + 1].any(axis=(0, 1)))
    centre_i = 0.5 * (body_cols[0] + body_cols[-1])
    best, best_score = None, -np.inf
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == lab
        areas = comp.sum(axis=(1, 2)) * sx * sy
        present = areas > 0
        if present.sum() < max(len(slab) // 3, 2):
            continue
        diameter = 2.0 * np.sqrt(areas[present].mean() / np.pi)
        if not 4.0 <= diameter <= 30.0:
            continue
        _, _, ii = np.nonzero(comp)
        off_centre_mm = abs(ii.mean() + sl[2].start - centre_i) * sx
        score = present.sum() - off_centre_mm / sz
        if score > best_score:
            best, best_score = (lab, sl), score
    if best is None:
        raise CTError("no trachea found: no round, vertical air region in the top "
                      f"{params.seed_search_mm:g} mm of the body")
    lab, sl = best
    comp = labels[sl] == lab
    ks = np.flatnonzero(comp.any(axis=(1, 2)))
    k = int(ks[len(ks) // 2])
    jj, ii = np.nonzero(comp[k])
    # the component voxel nearest the cross-section's centroid (the centroid may fall outside)
    c = np.array([jj.mean(), ii.mean()])
    n = int(np.argmin((jj - c[0]) ** 2 + (ii - c[1]) ** 2))
    return (lo + sl[0].start + k, sl[1].start + int(jj[n]), sl[2].start + int(ii[n]))


def _grow(image: sitk.Image, seed_kji, upper: float) -> np.ndarray:
    seed_xyz = [int(v) for v in seed_kji[::-1]]
    region = sitk.ConnectedThreshold(image, seedList=[seed_xyz], lower=-5000.0, upper=float(upper))
    return sitk.GetArrayFromImage(region).astype(bool)


def explosion_controlled_growing(image: sitk.Image, seed_kji, params: SegmentationParams,
                                 voxel_volume: float):
    """Region growing with the upper threshold raised until the volume explodes.

    The threshold goes from ``threshold_start_hu`` up in coarse steps; at the first step whose
    volume exceeds the previous one by more than ``explosion_ratio`` the search goes back and
    refines with quarter steps; the largest threshold before the explosion is kept.

    Returns
    -------
    mask : ndarray of bool
        The region at the chosen threshold.
    threshold : float
        The chosen upper threshold (HU).
    curve : list of (float, float)
        ``(threshold, volume m^3)`` for each threshold tried.
    """
    curve = []

    def run(t):
        m = _grow(image, seed_kji, t)
        curve.append((float(t), float(m.sum() * voxel_volume)))
        return m

    best_t = params.threshold_start_hu
    best = run(best_t)
    if not best.any():
        raise CTError(f"the trachea seed is not darker than {best_t:g} HU")
    step = params.threshold_step_hu
    t = best_t + step
    while t <= params.threshold_stop_hu + 1e-9 and step >= params.threshold_step_hu / 4 - 1e-9:
        m = run(t)
        if m.sum() > params.explosion_ratio * best.sum():
            step /= 4  # explosion: refine between the last good threshold and this one
            t = best_t + step
            continue
        best, best_t = m, t
        t += step
    return best, best_t, sorted(curve)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill cavities: background components not touching the volume border join the mask."""
    labels = cc3d.connected_components(~mask, connectivity=6)
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    outside = np.unique(np.concatenate([f.ravel() for f in faces]))
    return ~np.isin(labels, outside[outside > 0])


def refine_small_airways(hu: np.ndarray, mask: np.ndarray, spacing_mm,
                         params: SegmentationParams) -> np.ndarray:
    """Add thin airways darker than their surroundings and connected to ``mask``.

    Candidates are voxels whose grey-level black top-hat (closing minus image, with a ball of
    ``tophat_radius_mm``) exceeds ``tophat_min_hu`` and that are darker than ``refine_max_hu``.
    The union with ``mask`` is restricted to its component containing ``mask``; components of
    candidates thicker than the top-hat ball (parenchyma rather than an airway) are dropped.

    Returns
    -------
    ndarray of bool
        The refined mask (a superset of ``mask``).
    """
    sx, sy, sz = spacing_mm
    rad = [max(int(round(params.tophat_radius_mm / s)), 1) for s in (sz, sy, sx)]
    zz, yy, xx = np.ogrid[-rad[0]:rad[0] + 1, -rad[1]:rad[1] + 1, -rad[2]:rad[2] + 1]
    ball = (zz * sz) ** 2 + (yy * sy) ** 2 + (xx * sx) ** 2 <= params.tophat_radius_mm ** 2
    near = ndimage.binary_dilation(mask, iterations=2)
    box = _bbox(near, 0, mask.shape)
    sub = hu[box].astype(np.float32)
    tophat = ndimage.grey_closing(sub, footprint=ball) - sub
    cand = (tophat > params.tophat_min_hu) & (sub < params.refine_max_hu) & ~mask[box]
    union = cand | mask[box]
    labels = cc3d.connected_components(union, connectivity=26)
    keep = np.unique(labels[mask[box]])
    out = mask.copy()
    out[box] |= np.isin(labels, keep[keep > 0])
    return out


def segment_airways(image: sitk.Image, params: SegmentationParams | None = None) -> Segmentation:
    """Segment the airway lumen of a chest CT.

    Steps: reorient to LPS index order (lossless), smooth, crop to the body, find the trachea
    seed, explosion-controlled region growing, optional small-airway refinement, keep the
    component of the seed and fill internal holes.

    Parameters
    ----------
    image : SimpleITK.Image
        3D CT in HU (as returned by :func:`bronchonav.ct.io.read_ct`).
    params : SegmentationParams, optional

    Returns
    -------
    Segmentation
    """
    params = params or SegmentationParams()
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    lps = sitk.DICOMOrient(image, "LPS")
    spacing = lps.GetSpacing()
    smoothed = sitk.SmoothingRecursiveGaussian(sitk.Cast(lps, sitk.sitkFloat32),
                                               [params.smoothing_sigma_mm] * 3)
    hu = sitk.GetArrayViewFromImage(smoothed)
    inside = hu < -400
    inside &= ~_outside_air(inside)
    box = _bbox(inside, 3, hu.shape)
    hu_box = np.ascontiguousarray(hu[box])
    del inside
    seed_box = find_trachea_seed(hu_box, spacing, params)
    sub_image = sitk.GetImageFromArray(hu_box)
    voxel_volume = float(np.prod(spacing)) * 1e-9
    mask_box, threshold, curve = explosion_controlled_growing(sub_image, seed_box, params, voxel_volume)
    grown = int(mask_box.sum())
    if params.refine:
        mask_box = refine_small_airways(hu_box, mask_box, spacing, params)
    refined = float((mask_box.sum() - grown) * voxel_volume)
    mask_box = _fill_holes(mask_box)
    full = np.zeros(hu.shape, dtype=np.uint8)
    full[box] = mask_box
    mask = sitk.GetImageFromArray(full)
    mask.CopyInformation(lps)
    mask = sitk.DICOMOrient(mask, orientation)
    seed_lps = tuple(int(s + b.start) for s, b in zip(seed_box, box))
    seed_ct = index_to_ct(lps, seed_lps)[0]
    seed_index = tuple(int(round(v)) for v in ct_to_index(image, seed_ct)[0])
    return Segmentation(mask, seed_index, seed_ct, float(threshold), curve, refined)
