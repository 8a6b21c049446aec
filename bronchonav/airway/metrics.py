"""Airway extraction quality against ground truth (ATM'22 / EXACT'09 definitions).

All masks are boolean arrays on one voxel grid, indexed ``[k, j, i]``; trees are in the CT
frame (LPS, metres). Only the largest 26-connected component of the prediction is scored
(ATM'22 rule).

Definitions
-----------
* GT skeleton: the ground-truth centerlines rasterised onto the grid (each branch sampled every
  quarter voxel, each sample rounded to its voxel); a voxel belongs to the branch(es) whose
  centerline passes through it. The trachea is included.
* TD (tree length detected) = |pred ∩ skel(GT)| / |skel(GT)|.
* BD (branches detected): a GT branch counts when at least 80 % of its skeleton voxels lie inside
  the prediction; BD = detected / all GT branches.
* DSC = 2|P ∩ G| / (|P| + |G|); precision = |P ∩ G| / |P|.
* FPR (leakage, EXACT'09 style) = |P outside G dilated by one voxel (6-neighbourhood)| / |P|:
  predicted volume that is not airway and not just the airway's boundary voxel layer, as a
  fraction of the segmented volume. ``1 - precision`` is the strict variant.
* Centerline error: distance from each extracted centerline point (resampled every 0.5 mm) to
  the nearest GT centerline point (m): mean and 95th percentile.
* Radius error: extracted minus true lumen radius (m) at matched centerline points: extracted
  points (every 0.5 mm) whose nearest GT centerline point is closer than half the GT radius
  there and lies more than one GT radius from both ends of its GT branch (at bifurcations the
  radius of a branch is not defined). Median, 10th and 90th percentiles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bronchonav.airway.tree import AirwayTree
from bronchonav.geometry import VoxelGrid

BD_FRACTION = 0.8
"""A GT branch is detected when this fraction of its skeleton voxels is predicted."""


@dataclass
class AirwayMetrics:
    """Quality of an airway extraction against ground truth.

    Fractions are in 0–1; distances in metres.
    """

    td: float
    bd: float
    dsc: float
    precision: float
    fpr: float
    centerline_error_mean_m: float
    centerline_error_p95_m: float
    branches_detected: int
    branches_gt: int
    radius_error_median_m: float = float("nan")
    radius_error_p10_m: float = float("nan")
    radius_error_p90_m: float = float("nan")
    bifurcation_error_median_m: float = float("nan")
    """Median distance from the extracted tree's bifurcations to the nearest true one (m)."""
    bifurcation_error_p90_m: float = float("nan")

    def to_dict(self) -> dict:
        """Plain-float dict (JSON-serialisable)."""
        return {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (empty stays empty)."""
    if not mask.any():
        return mask.astype(bool)
    return cc3d.largest_k(np.ascontiguousarray(mask, dtype=bool), k=1, connectivity=26) > 0


def rasterise_centerlines(tree: AirwayTree, reference: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The tree's centerline voxels on ``reference``'s grid.

    Parameters
    ----------
    tree : AirwayTree
        Centerlines in the CT frame (m).
    reference : SimpleITK.Image
        Grid geometry (origin, spacing, direction, size).

    Returns
    -------
    voxels : ndarray of int, shape (M, 3)
        Unique ``(k, j, i)`` voxel indices inside the grid, per branch (a voxel shared by two
        branches appears once for each).
    branch_ids : ndarray of int, shape (M,)
        The branch each row belongs to.
    """
    step = 0.25 * min(reference.GetSpacing()) / 1000.0
    shape = np.array(reference.GetSize()[::-1])
    s = tree.samples(step)
    idx = np.rint(VoxelGrid.from_image(reference).ct_to_index(s.points)).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < shape), axis=1)
    idx, bid = idx[inside], s.branch_ids[inside]
    keyed = np.unique(np.column_stack([bid, idx]), axis=0)
    vox, ids = keyed[:, 1:], keyed[:, 0]
    return vox, ids


def centerline_error(pred: AirwayTree, gt: AirwayTree) -> tuple[float, float]:
    """Mean and 95th-percentile distance (m) from ``pred``'s centerline to ``gt``'s."""
    d, _ = gt.nearest(pred.samples().points)
    return float(np.mean(d)), float(np.percentile(d, 95))


def radius_error(pred: AirwayTree, gt: AirwayTree) -> np.ndarray:
    """Extracted minus true radius (m) at the matched centerline points (module docstring);
    empty when nothing matches."""
    s, g = pred.samples(), gt.samples()
    d, i = gt.nearest(s.points)
    r_gt = g.radii[i]
    length = np.array([gt[int(b)].length for b in g.branch_ids[i]])
    arc = g.arclength[i]
    matched = (d < 0.5 * r_gt) & (arc > r_gt) & (arc < length - r_gt)
    return s.radii[matched] - r_gt[matched]


def bifurcation_error(pred: AirwayTree, gt: AirwayTree) -> np.ndarray:
    """Distance (m) from each bifurcation of ``pred`` (the end of a branch with children) to
    the nearest bifurcation of ``gt``; empty when either tree has none."""
    ours = np.array([b.end for b in pred if b.children]).reshape(-1, 3)
    theirs = np.array([b.start for b in gt if b.parent is not None]).reshape(-1, 3)
    if not len(ours) or not len(theirs):
        return np.empty(0)
    return np.linalg.norm(ours[:, None] - theirs[None], axis=2).min(axis=1)


def airway_metrics(pred_mask: np.ndarray, gt_mask: np.ndarray, gt_tree: AirwayTree,
                   reference: sitk.Image, pred_tree: AirwayTree | None = None) -> AirwayMetrics:
    """Score a predicted airway mask (and optionally its tree) against ground truth.

    Parameters
    ----------
    pred_mask, gt_mask : ndarray of bool, shape (K, J, I)
        Prediction and ground-truth lumen masks on ``reference``'s grid.
    gt_tree : AirwayTree
        Ground-truth tree (CT frame, m); its centerlines define the GT skeleton and branches.
    reference : SimpleITK.Image
        Geometry of the masks' grid.
    pred_tree : AirwayTree, optional
        Extracted tree, for the centerline, radius and bifurcation errors (NaN without it).

    Returns
    -------
    AirwayMetrics
    """
    pred = largest_component(np.asarray(pred_mask, dtype=bool))
    gt = np.asarray(gt_mask, dtype=bool)
    if pred.shape != gt.shape or pred.shape != tuple(reference.GetSize()[::-1]):
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}, "
                         f"grid {tuple(reference.GetSize()[::-1])}")
    vox, ids = rasterise_centerlines(gt_tree, reference)
    hit = pred[tuple(vox.T)]
    _, first = np.unique(vox, axis=0, return_index=True)
    td = float(hit[first].mean()) if len(first) else 0.0
    branch_ids = np.array(sorted(b.id for b in gt_tree))
    frac = np.array([hit[ids == b].mean() if np.any(ids == b) else 0.0 for b in branch_ids])
    detected = int(np.sum(frac >= BD_FRACTION))
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    inter = int(np.count_nonzero(pred & gt))
    dsc = 2.0 * inter / (n_pred + n_gt) if n_pred + n_gt else 1.0
    precision = inter / n_pred if n_pred else 0.0
    union = pred | gt
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(union)) \
        if union.any() else (slice(0, 0),) * 3
    leak = int(np.count_nonzero(pred[box] & ~ndimage.binary_dilation(gt[box])))
    fpr = leak / n_pred if n_pred else 0.0
    err_mean, err_p95 = centerline_error(pred_tree, gt_tree) if pred_tree is not None else (np.nan, np.nan)
    r_err = radius_error(pred_tree, gt_tree) if pred_tree is not None else np.empty(0)
    r_med, r_p10, r_p90 = (float(v) for v in np.percentile(r_err, [50, 10, 90])) if len(r_err) \
        else (np.nan,) * 3
    b_err = bifurcation_error(pred_tree, gt_tree) if pred_tree is not None else np.empty(0)
    b_med, b_p90 = (float(v) for v in np.percentile(b_err, [50, 90])) if len(b_err) \
        else (np.nan,) * 2
    return AirwayMetrics(td=td, bd=detected / len(branch_ids), dsc=dsc, precision=precision, fpr=fpr,
                         centerline_error_mean_m=err_mean, centerline_error_p95_m=err_p95,
                         branches_detected=detected, branches_gt=len(branch_ids),
                         radius_error_median_m=r_med, radius_error_p10_m=r_p10,
                         radius_error_p90_m=r_p90, bifurcation_error_median_m=b_med,
                         bifurcation_error_p90_m=b_p90)


def label_agreement(pred: AirwayTree, gt: AirwayTree, attribute: str = "lobe") -> float:
    """Fraction of the extracted branches whose label (``attribute``: ``"lobe"`` or
    ``"segment"``) is the ground truth's.

    Each extracted branch is matched to the ground-truth branch nearest to the middle of its
    centerline (CT frame); branches whose match has the label (for lobes: lobar bronchi and
    below; for segments: branches whose territory lies in one segment) are counted, and agree
    when their own label is the same. NaN when none is counted.
    """
    g = gt.samples()
    agree, counted = 0, 0
    for b in pred:
        mid = b.points[len(b.points) // 2]
        _, i = gt.nearest(mid[None])
        truth = getattr(gt[int(g.branch_ids[int(np.atleast_1d(i)[0])])], attribute)
        if truth is None:
            continue
        counted += 1
        agree += getattr(b, attribute) == truth
    return agree / counted if counted else float("nan")


def lobe_agreement(pred: AirwayTree, gt: AirwayTree) -> float:
    """:func:`label_agreement` of the lobe labels."""
    return label_agreement(pred, gt, "lobe")
