"""ICP stages: trimmed, weighted centerline ICP and point-to-plane surface ICP.

The centerline ICP is a small loop of its own (nearest twin centerline point through a cached
KD-tree, trimming by a correspondence-distance schedule and by direction agreement, weighted
Kabsch/Umeyama update) because the local refinement needs per-sample weights, which open3d's
point-to-point estimation does not take, and because open3d rebuilds the target's KD-tree on
every call. The surface stages use open3d's registration pipeline (point-to-plane ICP with a
robust kernel, FPFH features and RANSAC). All transforms map the source (patient) frame to the
twin (CT) frame; distances are in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from bronchonav.errors import RegistrationError
from bronchonav.geometry import apply, make_transform, rotate
from bronchonav.registration.twin import Twin

DEFAULT_SCHEDULE = ((0.010, 30), (0.005, 50))
"""Centerline ICP stages: (maximum correspondence distance (m), maximum iterations)."""


@dataclass
class IcpOutcome:
    """Result of an ICP stage (transforms patient → CT, distances in m)."""

    T: np.ndarray
    fitness: float
    """Fraction of source points that are inliers at the last stage."""
    rmse: float
    """RMS inlier distance (m)."""
    iterations: int
    inliers: np.ndarray
    """(N,) bool inlier mask at the last iteration."""
    matches: np.ndarray
    """(N,) index of each point's twin correspondence (meaningful where ``inliers``)."""


def weighted_kabsch(source: np.ndarray, target: np.ndarray, weights: np.ndarray,
                    translation_only: bool = False) -> np.ndarray:
    """The rigid transform minimising ``sum w |R s + t - d|^2`` (4x4), reflection-safe.

    With ``translation_only`` the rotation is held at identity.
    """
    w = weights / weights.sum()
    cs, ct = w @ source, w @ target
    if translation_only:
        return make_transform(np.eye(3), ct - cs)
    H = (source - cs).T @ ((target - ct) * w[:, None])
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return make_transform(R, ct - R @ cs)


def centerline_icp(source: np.ndarray, twin: Twin, init: np.ndarray, *,
                   directions: np.ndarray | None = None, weights: np.ndarray | None = None,
                   schedule=DEFAULT_SCHEDULE, min_cos: float = 0.5,
                   tolerance: float = 1e-5, translation_only: bool = False) -> IcpOutcome:
    """Point-to-point ICP of sensor samples to the twin's centerline points.

    Parameters
    ----------
    source : ndarray, shape (N, 3)
        Sample positions in the patient frame (m).
    twin : Twin
        The twin (CT frame).
    init : ndarray, shape (4, 4)
        Initial T_ct_patient.
    directions : ndarray, shape (N, 3), optional
        Unit sensor directions (patient frame); a pair is rejected when the sample direction and
        the twin tangent make an angle with ``|cos| < min_cos``.
    weights : ndarray, shape (N,), optional
        Non-negative per-sample weights (default all 1).
    schedule : sequence of (float, int)
        (maximum correspondence distance (m), maximum iterations) per stage; pairs farther apart
        are trimmed.
    tolerance : float
        A stage ends when an update moves no point by more than this (m, approximately).
    translation_only : bool
        Update only the translation (the rotation stays that of ``init``).

    Returns
    -------
    IcpOutcome
    """
    T = np.array(init, dtype=float)
    w_all = np.ones(len(source)) if weights is None else np.asarray(weights, dtype=float)
    scale = float(np.max(np.linalg.norm(source - source.mean(axis=0), axis=1)))
    iterations = 0
    for max_distance, max_iter in schedule:
        for _ in range(max_iter):
            moved = apply(T, source)
            dist, idx = twin.kdtree.query(moved, distance_upper_bound=max_distance)
            ok = np.isfinite(dist)
            idx = np.where(ok, idx, 0)
            if directions is not None:
                cos = np.abs(np.einsum("ij,ij->i", rotate(T, directions), twin.tangents[idx]))
                ok &= cos >= min_cos
            ok &= w_all > 0
            if ok.sum() < 6:
                raise RegistrationError(
                    f"ICP lost the twin: only {int(ok.sum())} samples within "
                    f"{max_distance * 1e3:.0f} mm of a centerline (need 6)")
            dT = weighted_kabsch(moved[ok], twin.points[idx[ok]], w_all[ok], translation_only)
            T = dT @ T
            iterations += 1
            step = np.linalg.norm(dT[:3, 3]) + scale * np.linalg.norm(dT[:3, :3] - np.eye(3))
            if step < tolerance:
                break
    moved = apply(T, source)
    dist, idx = twin.kdtree.query(moved, distance_upper_bound=schedule[-1][0])
    inliers = np.isfinite(dist) & (w_all > 0)
    rmse = float(np.sqrt(np.mean(dist[inliers] ** 2))) if inliers.any() else float("inf")
    return IcpOutcome(T, float(inliers.mean()), rmse, iterations, inliers, np.where(inliers, idx, 0))


def target_sigma(source: np.ndarray, twin: Twin, outcome: IcpOutcome, target_ct: np.ndarray,
                 weights: np.ndarray | None = None) -> float:
    """Estimated 1-sigma error (m) of ``outcome.T`` at ``target_ct`` from the ICP normal equations.

    Each inlier constrains the transform only across its twin centerline (point-to-line
    residual), so the 6x6 information matrix is ``sum w J^T (I - t t^T) J / s^2`` with
    ``J = [-[q - target]_x, I]`` and ``s^2`` the residual variance per constrained direction.
    The returned value is ``sqrt(trace)`` of the translation block of its inverse (the error of a
    point at the target). Returns ``inf`` when the samples leave the transform unconstrained.
    """
    ok = outcome.inliers
    w = np.ones(len(source)) if weights is None else np.asarray(weights, dtype=float)
    w = w[ok]
    q = apply(outcome.T, source[ok]) - target_ct
    t = twin.tangents[outcome.matches[ok]]
    r = apply(outcome.T, source[ok]) - twin.points[outcome.matches[ok]]
    P = np.eye(3)[None] - t[:, :, None] * t[:, None, :]
    r_perp = np.einsum("nij,nj->ni", P, r)
    s2 = float(np.sum(w * np.einsum("ij,ij->i", r_perp, r_perp)) / (2.0 * w.sum()))
    skew = np.zeros((len(q), 3, 3))
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -q[:, 2], q[:, 1], -q[:, 0]
    skew[:, 1, 0], skew[:, 2, 0], skew[:, 2, 1] = q[:, 2], -q[:, 1], q[:, 0]
    J = np.concatenate([-skew, np.broadcast_to(np.eye(3), skew.shape)], axis=2)  # (n, 3, 6)
    H = np.einsum("n,nki,nkl,nlj->ij", w, J, P, J) / max(s2, 1e-12)
    # The effective number of independent samples is smaller than the count when the weights
    # are uneven; scale the information by n_eff / sum(w).
    n_eff = w.sum() ** 2 / np.sum(w ** 2)
    H *= n_eff / w.sum()
    if np.linalg.cond(H) > 1e12:
        return float("inf")
    cov = np.linalg.inv(H)
    return float(np.sqrt(np.trace(cov[3:, 3:])))


def surface_icp(source: o3d.geometry.PointCloud, target: o3d.geometry.PointCloud, init: np.ndarray,
                schedule=((0.006, 30), (0.003, 30), (0.002, 40))):
    """Point-to-plane ICP (open3d, Tukey robust kernel) of a surface cloud to the twin surface.

    ``target`` must have normals. Returns the open3d ``RegistrationResult`` of the last stage.
    """
    reg = o3d.pipelines.registration
    T = np.array(init, dtype=float)
    result = None
    for max_distance, max_iter in schedule:
        method = reg.TransformationEstimationPointToPlane(reg.TukeyLoss(k=max_distance))
        result = reg.registration_icp(source, target, max_distance, T, method,
                                      reg.ICPConvergenceCriteria(1e-7, 1e-7, max_iter))
        T = result.transformation
    return result


def fpfh_ransac(source: o3d.geometry.PointCloud, target: o3d.geometry.PointCloud, voxel: float,
                seed: int = 0) -> np.ndarray:
    """Global surface alignment without a guess: FPFH features + RANSAC (open3d).

    Both clouds are downsampled to ``voxel`` (m) and get normals estimated from their
    neighbourhoods. Returns T target←source (4x4).
    """
    reg = o3d.pipelines.registration
    o3d.utility.random.seed(seed)
    feats, clouds = [], []
    for cloud in (source, target):
        down = cloud.voxel_down_sample(voxel)
        down.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=3 * voxel, max_nn=30))
        feats.append(reg.compute_fpfh_feature(
            down, o3d.geometry.KDTreeSearchParamHybrid(radius=5 * voxel, max_nn=100)))
        clouds.append(down)
    checkers = [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9),
                reg.CorrespondenceCheckerBasedOnDistance(1.5 * voxel)]
    result = reg.registration_ransac_based_on_feature_matching(
        clouds[0], clouds[1], feats[0], feats[1], False, 1.5 * voxel,
        reg.TransformationEstimationPointToPoint(False), 3, checkers,
        reg.RANSACConvergenceCriteria(100000, 0.999))
    return np.asarray(result.transformation)


def global_surface(source: o3d.geometry.PointCloud, target: o3d.geometry.PointCloud,
                   hypotheses=((3e-3, 0), (3e-3, 1), (2e-3, 0))):
    """Surface registration without a guess: several FPFH + RANSAC runs, each refined by
    :func:`surface_icp`; the refined result with the highest inlier fraction (then the lowest
    RMSE) wins, since airway tubes are self-similar and a single RANSAC run can lock onto the
    wrong branch.

    Parameters
    ----------
    hypotheses : sequence of (float, int)
        (voxel size (m), RANSAC seed) of each run.

    Returns
    -------
    open3d RegistrationResult of the chosen refinement.
    """
    best, best_key = None, None
    for voxel, seed in hypotheses:
        result = surface_icp(source, target, fpfh_ransac(source, target, voxel, seed))
        key = (round(result.fitness, 2), -result.inlier_rmse)
        if best_key is None or key > best_key:
            best, best_key = result, key
    return best
