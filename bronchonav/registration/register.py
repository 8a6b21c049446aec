"""Registration entry points: EM samples to the twin's centerlines, cone-beam CT surface to its lumen.

``register_em`` runs: input checks → spatial thinning (one sample per grid cell, so that a
catheter dwelling in one place — stuck, pressed against a wall — does not outweigh the rest of
the sweep) → initial alignment without a guess (:mod:`.initial`) →
global trimmed centerline ICP (of the survey of the central airways when the local sweep's
samples are marked, of all samples otherwise) → optionally a local refinement around the target
on all samples, weighted by their proximity to the target (a Gaussian of the distance, with a
small floor so the central airways still anchor the rotation), as in localized registration for
navigated bronchoscopy. ``register_cbct`` aligns a surface cloud to the twin's lumen surface
near the target by point-to-plane ICP, starting from a given transform (e.g. the EM
registration) or, without one, from FPFH + RANSAC.

Transforms are T_ct_patient (patient/sensor frame → CT frame); distances in metres.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from bronchonav.errors import RegistrationError
from bronchonav.registration.icp import (DEFAULT_SCHEDULE, IcpOutcome, centerline_icp,
                                         global_surface, surface_icp, target_sigma)
from bronchonav.registration.initial import InitialAlignment, distinct, initial_alignment
from bronchonav.registration.result import RegistrationResult
from bronchonav.geometry import apply, inside_tubes
from bronchonav.registration.samples import EMSampleAccumulator
from bronchonav.registration.twin import Twin


@dataclass(frozen=True)
class RegistrationConfig:
    """Parameters of the registration (SI units).

    Attributes
    ----------
    schedule : sequence of (float, int)
        Global centerline ICP: (maximum correspondence distance (m), maximum iterations) per stage.
    local_schedule : sequence of (float, int)
        The same for the local refinement.
    min_cos : float
        Pairs whose sensor direction and twin tangent make ``|cos| < min_cos`` are rejected.
    local_sigma : float
        Scale (m) of the Gaussian weight of samples by their distance to the target; widened to
        the target's distance from the nearest twin centerline when that is larger (a target far
        from the airways has no airway close by to lean on).
    local_floor : float
        Weight of samples far from the target in the local refinement.
    local_translation_only : bool
        The local refinement corrects only the translation (breathing moves a small region
        mostly as a whole), keeping the global rotation.
    thin_voxel : float
        The samples are thinned to the first one in each cell of a grid of this size (m) before
        registering (:meth:`EMSampleAccumulator.thin`); 0 keeps all. A catheter held still streams readings that differ only by
        sensor noise, and without thinning such a dwell dominates every fit.
    min_points : int
        Fewer samples than this (before or after thinning) is an error.
    min_fitness : float
        An EM registration with a smaller inlier fraction fails.
    min_inside : float
        An EM registration fails when, at the global stage, a smaller fraction of the samples
        lies inside the airways (within the local radius plus ``lumen_margin`` of the nearest
        centerline point). Unlike the inlier fraction (samples within 5 mm of a centerline) it
        does not count a catheter against the wall of a wide airway as a miss. Measured here:
        right fits of three recorded demo sweeps kept 0.96–1.0 inside (one of them only 0.73
        within 5 mm), a wrong pose of a single path 0.70; 80 simulated rigid and 10 mm
        breathing trials all pass.
    lumen_margin : float
        Allowance (m) beyond the airway radius for sensor noise and segmentation error.
    min_surface_fitness : float
        A cone-beam CT registration with a smaller inlier fraction fails (a surface that fits
        is matched almost everywhere; a wrong branch matches only in part).
    max_fre : float
        A registration with a larger FRE (m) fails.
    min_rival_ratio, rival_inside_margin : float
        Without a given initial transform, every pose the initial alignment polished with a
        coarse score under ``min_rival_ratio`` times the best one's is refined by the same
        centerline ICP, and the fit with the most samples inside the airways (see
        ``min_inside``; within ``rival_inside_margin`` of the most, the smallest median
        distance) is taken. The registration fails as ambiguous when a different pose (still
        more than 10 degrees or 10 mm away) fits with a median distance less than
        ``min_rival_ratio`` times the best one's, a fraction inside at most
        ``rival_inside_margin`` below it, *and* distances not significantly larger (see
        ``rival_p_value``). A wrong pose that lies close to the airways along most of a single
        path still leaves part of it outside them; 1 mm EM noise alone blurs the median
        distances, not that fraction.
    rival_p_value : float
        A rival is significantly worse when a one-sided Wilcoxon signed-rank test of its
        per-sample distances against the best fit's, sample by sample, gives a p-value below
        this. (On surveys of the trachea and both main bronchi, poses turned about the sweep
        came within the ratio — median 2.1–2.3 against 1.5–1.7 mm — and were rejected as
        ambiguous although the best fit was right; their distances were larger at p < 1e-5.)
    cbct_radius : float
        Without an initial transform, the twin surface within this distance (m) of the target is
        registered to the cone-beam CT; with one, the radius covers the mapped cloud (its 98th
        percentile distance from the target) plus 10 mm.
    cbct_voxel : float
        The cone-beam CT cloud is thinned to one point per voxel of this size (m).
    """

    schedule: tuple = DEFAULT_SCHEDULE
    local_schedule: tuple = ((0.005, 50),)
    min_cos: float = 0.5
    local_sigma: float = 0.02
    local_floor: float = 0.02
    local_translation_only: bool = False
    thin_voxel: float = 1.5e-3
    min_points: int = 20
    min_fitness: float = 0.6
    min_inside: float = 0.8
    lumen_margin: float = 2e-3
    min_surface_fitness: float = 0.7
    max_fre: float = 0.004
    min_rival_ratio: float = 1.5
    rival_inside_margin: float = 0.03
    rival_p_value: float = 1e-3
    cbct_radius: float = 0.05
    cbct_voxel: float = 1.5e-3


def check_points(points: np.ndarray, min_points: int, what: str) -> np.ndarray:
    """Validate an (N, 3) point array; raise :class:`RegistrationError` naming the problem.

    Rejects: a wrong shape, non-finite values, fewer than ``min_points`` points, and points
    that all lie on one line (their second principal spread below 0.1% of the first, which
    leaves the rotation about that line undetermined).
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise RegistrationError(f"{what} must be an (N, 3) array, got shape {pts.shape}")
    bad = ~np.all(np.isfinite(pts), axis=1)
    if bad.any():
        raise RegistrationError(f"{what}: {int(bad.sum())} of {len(pts)} points are NaN or infinite "
                                f"(first at row {int(np.flatnonzero(bad)[0])}); drop them first")
    if len(pts) < min_points:
        raise RegistrationError(f"{what}: {len(pts)} points, need at least {min_points}")
    spread = np.linalg.svd(pts - pts.mean(axis=0), compute_uv=False)
    if spread[0] == 0 or spread[1] < 1e-3 * spread[0]:
        raise RegistrationError(f"{what}: all points lie on one line (or coincide), so the "
                                "rotation about it is undetermined; sweep more than one airway")
    return pts


def _check_transform(T) -> np.ndarray:
    """A finite 4x4 rigid transform, or :class:`RegistrationError`."""
    T = np.asarray(T, dtype=float)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise RegistrationError(f"the initial transform must be a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
        raise RegistrationError("the initial transform's rotation part is not a rotation matrix")
    return T


def quality_flag(success: bool, fitness: float, fre: float, sigma: float | None) -> str:
    """``failed`` if not successful; ``good`` when fitness >= 0.9, FRE <= 2.5 mm and (with a
    target) sigma <= 1 mm; ``poor`` when fitness < 0.75, FRE > 3.5 mm or sigma > 2.5 mm;
    ``fair`` otherwise."""
    if not success:
        return "failed"
    s = 0.0 if sigma is None else sigma
    if fitness >= 0.9 and fre <= 2.5e-3 and s <= 1e-3:
        return "good"
    if fitness < 0.75 or fre > 3.5e-3 or s > 2.5e-3:
        return "poor"
    return "fair"


def inside_fraction(points_ct: np.ndarray, twin: Twin, margin: float,
                    weights: np.ndarray | None = None) -> float:
    """(Weighted) fraction of points (CT frame, m) inside the twin's lumen widened by
    ``margin`` (m): the union-of-tubes test :func:`bronchonav.geometry.inside_tubes`."""
    inside = inside_tubes(points_ct, twin.kdtree, twin.radii, clearance=-margin)
    return float(np.average(inside, weights=weights))


def _judge(fitness: float, fre: float, cfg: RegistrationConfig,
           min_fitness: float | None = None, inside: float | None = None) -> tuple[bool, str]:
    min_fitness = cfg.min_fitness if min_fitness is None else min_fitness
    if fitness < min_fitness:
        return False, (f"only {fitness:.0%} of the points match the twin (need "
                       f"{min_fitness:.0%}): the data do not fit this map")
    if inside is not None and inside < cfg.min_inside:
        return False, (f"only {inside:.0%} of the samples lie inside the airways (need "
                       f"{cfg.min_inside:.0%}): a wrong pose, or data that do not fit this map")
    if fre > cfg.max_fre:
        return False, f"FRE {fre * 1e3:.1f} mm exceeds {cfg.max_fre * 1e3:.1f} mm"
    return True, f"{fitness:.0%} inliers, FRE {fre * 1e3:.2f} mm"


def local_weights(samples_ct: np.ndarray, target_ct: np.ndarray, cfg: RegistrationConfig,
                  twin: Twin | None = None) -> np.ndarray:
    """Weights of samples (CT frame, m) for the local refinement around ``target_ct``:
    ``floor + (1 - floor) exp(-d^2 / 2 sigma^2)`` with ``d`` the distance to the target and
    ``sigma`` = ``cfg.local_sigma``, or, given the ``twin``, the larger of that and the
    target's distance to the twin's centerlines."""
    sigma = cfg.local_sigma
    if twin is not None:
        sigma = max(sigma, float(twin.kdtree.query(target_ct)[0]))
    d2 = np.sum((samples_ct - target_ct) ** 2, axis=1)
    return cfg.local_floor + (1.0 - cfg.local_floor) * np.exp(-0.5 * d2 / sigma ** 2)


def register_em(samples_patient: np.ndarray, twin, target_ct: np.ndarray | None = None,
                directions_patient: np.ndarray | None = None, local_mask: np.ndarray | None = None,
                init: np.ndarray | None = None,
                config: RegistrationConfig | None = None) -> RegistrationResult:
    """Register EM sensor samples to the twin's centerlines.

    Parameters
    ----------
    samples_patient : ndarray, shape (N, 3)
        Sensor positions collected in the airways, patient/sensor frame (m), in the order
        collected; thinned to the first in each :attr:`RegistrationConfig.thin_voxel` cell.
    twin : Twin, AirwayMap or AirwayTree
        The twin (CT frame). Pass a :class:`Twin` to reuse its preprocessing across calls.
    target_ct : ndarray, shape (3,), optional
        Planned target in the CT frame (m). When given, a local refinement weights the samples
        near it, and the result's ``global_result`` holds the global stage.
    directions_patient : ndarray, shape (N, 3), optional
        Unit sensor directions (patient frame); used to find the trachea and to reject
        mismatched pairs.
    local_mask : ndarray of bool, shape (N,), optional
        Which samples come from a local sweep near the target. The global stage then uses only
        the others (the survey of the central airways), as a navigation system registers the
        survey first; the local refinement uses all samples. By default every sample takes
        part in both stages.
    init : ndarray, shape (4, 4), optional
        Initial T_ct_patient; by default it is found from the samples alone.
    config : RegistrationConfig, optional

    Returns
    -------
    RegistrationResult
        ``success`` False (with the reason in ``message``) when the fit is unacceptable (too
        few inliers, FRE too large), ambiguous (another pose fits nearly as well: sweep more
        airways) or lost (no sample near the twin).

    Raises
    ------
    RegistrationError
        On degenerate input: too few points, NaN/inf, all points on one line, mismatched arrays.
    """
    t0 = time.perf_counter()
    cfg = config or RegistrationConfig()
    tw = Twin.of(twin)
    pts = check_points(samples_patient, cfg.min_points, "EM samples")
    dirs = None
    if directions_patient is not None:
        dirs = np.asarray(directions_patient, dtype=float)
        if dirs.shape != pts.shape or not np.all(np.isfinite(dirs)):
            raise RegistrationError(f"EM directions must be finite and shaped like the samples "
                                    f"{pts.shape}, got {dirs.shape}")
        dirs = dirs / np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
    if target_ct is not None:
        target_ct = np.asarray(target_ct, dtype=float).reshape(3)
        if not np.all(np.isfinite(target_ct)):
            raise RegistrationError("the target position is NaN or infinite")
    survey = np.ones(len(pts), dtype=bool)
    if local_mask is not None:
        local_mask = np.asarray(local_mask, dtype=bool)
        if local_mask.shape != (len(pts),):
            raise RegistrationError(f"local_mask must have one entry per sample ({len(pts)}), "
                                    f"got shape {local_mask.shape}")
        survey = ~local_mask
    keep = EMSampleAccumulator.thin(pts, cfg.thin_voxel)
    pts, survey = pts[keep], survey[keep]
    dirs = None if dirs is None else dirs[keep]
    check_points(pts, cfg.min_points,
                 f"EM samples (one per {cfg.thin_voxel * 1e3:g} mm cell: a sweep that barely moved)")
    if local_mask is not None:
        check_points(pts[survey], cfg.min_points, "EM survey samples (outside the local sweep)")
    g_pts, g_dirs = pts[survey], None if dirs is None else dirs[survey]
    method, start = "given-init", None
    if init is None:
        start = initial_alignment(g_pts, tw, g_dirs)
        init, method = start.T_ct_patient, "initial"
    else:
        init = _check_transform(init)
    try:
        glob = centerline_icp(g_pts, tw, init, directions=g_dirs, schedule=cfg.schedule,
                              min_cos=cfg.min_cos)
    except RegistrationError as exc:  # the samples do not overlap the twin: a failed fit
        return RegistrationResult(init, False, str(exc), 0.0, float("inf"), len(g_pts), 0, 0,
                                  time.perf_counter() - t0, "failed", None,
                                  method + "+centerline")
    ambiguity = None
    if start is not None:
        glob, ambiguity = _choose(g_pts, g_dirs, tw, glob, start, cfg)
    ok, msg = _judge(glob.fitness, glob.rmse, cfg,
                     inside=inside_fraction(apply(glob.T, g_pts), tw, cfg.lumen_margin))
    ambiguous = ok and ambiguity is not None
    if ambiguous:
        ok, msg = False, ambiguity
    sigma = None if target_ct is None else target_sigma(g_pts, tw, glob, target_ct)
    global_result = RegistrationResult(glob.T, ok, msg, glob.fitness, glob.rmse, len(g_pts),
                                       int(glob.inliers.sum()), glob.iterations,
                                       time.perf_counter() - t0,
                                       quality_flag(ok, glob.fitness, glob.rmse, sigma), sigma,
                                       method + "+centerline", ambiguous=ambiguous)
    if target_ct is None or not ok:
        return global_result
    weights = local_weights(apply(glob.T, pts), target_ct, cfg, tw)
    try:
        loc = centerline_icp(pts, tw, glob.T, directions=dirs, weights=weights,
                             schedule=cfg.local_schedule, min_cos=cfg.min_cos,
                             translation_only=cfg.local_translation_only)
    except RegistrationError as exc:
        return RegistrationResult(glob.T, False, f"local refinement failed: {exc}", 0.0,
                                  float("inf"), len(pts), 0, glob.iterations,
                                  time.perf_counter() - t0, "failed", None,
                                  method + "+centerline+local", global_result)
    fre = float(np.sqrt(np.average(_residuals(pts, tw, loc) ** 2, weights=weights * loc.inliers)))
    fitness = float(np.average(loc.inliers, weights=weights))
    ok, msg = _judge(fitness, fre, cfg)  # the pose itself was judged at the global stage
    sigma = target_sigma(pts, tw, loc, target_ct, weights)
    return RegistrationResult(loc.T, ok, msg + " (weighted near the target)", fitness, fre, len(pts),
                              int(loc.inliers.sum()), glob.iterations + loc.iterations,
                              time.perf_counter() - t0, quality_flag(ok, fitness, fre, sigma), sigma,
                              method + "+centerline+local", global_result)


def register_em_extended(survey_patient: np.ndarray, swept_patient: np.ndarray, twin,
                         target_ct: np.ndarray | None = None,
                         survey_directions: np.ndarray | None = None,
                         swept_directions: np.ndarray | None = None,
                         config: RegistrationConfig | None = None) -> RegistrationResult:
    """Register a survey that was refused as ambiguous, with a longer sweep to choose the pose.

    The pose is found from ``swept_patient`` — every sample so far, the survey's and those of
    the airways swept since — and then the survey alone is fitted from it (as with a given
    ``init``) and judged as usual. The longer sweep decides between the poses the survey left
    open (a lobar bronchus on one side breaks a Y's symmetry) but is not what the pose is fitted
    to: measured on the default phantom's route to N3 (12 EM noise and patient draws, 3 mm
    cells), a fit of the survey plus 20 mm further along the route put the error at the lesion at
    3.8–5.8 mm against 1.9–3.5 mm for the survey alone, the catheter cutting the corner into the
    lobar bronchus; fitted from the longer sweep's pose, the survey gave its own figures
    (1.9–3.5 mm).

    Parameters are those of :func:`register_em`; the result is that of the survey's fit, or
    the longer sweep's when that one failed (still ambiguous, or not fitting the map).
    """
    chosen = register_em(swept_patient, twin, target_ct=target_ct,
                         directions_patient=swept_directions, config=config)
    if not chosen.success:
        return chosen
    result = register_em(survey_patient, twin, target_ct=target_ct,
                         directions_patient=survey_directions, init=chosen.T_ct_patient,
                         config=config)
    result.method = "extended+" + result.method
    result.message += f" (the pose chosen with {chosen.n_points} samples of a longer sweep)"
    return result


@dataclass
class _Fit:
    """A refined pose and how it fits: per-sample distances (m), their median, the fraction of
    samples inside the airways."""

    outcome: IcpOutcome
    distances: np.ndarray
    median: float
    inside: float


def _choose(pts: np.ndarray, dirs: np.ndarray | None, tw: Twin, first: IcpOutcome,
            start: InitialAlignment, cfg: RegistrationConfig) -> tuple[IcpOutcome, str | None]:
    """Refine the initial alignment's alternatives that fit nearly as well as its best (coarse
    score under ``min_rival_ratio`` times the best's), take the best refined fit and, if a
    different pose fits about as well, say why the result is ambiguous (see
    :attr:`RegistrationConfig.min_rival_ratio`)."""
    outcomes = [first]
    for T, score in start.alternatives:
        if score >= cfg.min_rival_ratio * start.score:
            break  # this one and the rest fit clearly worse even before refining
        try:
            outcomes.append(centerline_icp(pts, tw, T, directions=dirs, schedule=cfg.schedule,
                                           min_cos=cfg.min_cos))
        except RegistrationError:  # it does not even overlap the twin
            continue
    fits = []
    for o in outcomes:
        d = _residuals(pts, tw, o)
        fits.append(_Fit(o, d, float(np.median(d)),
                         inside_fraction(apply(o.T, pts), tw, cfg.lumen_margin)))
    margin = cfg.rival_inside_margin
    top = max(f.inside for f in fits)
    best = min((f for f in fits if f.inside >= top - margin), key=lambda f: f.median)
    centre = pts.mean(axis=0)
    rivals = [f for f in fits if f.inside >= best.inside - margin
              and f.median < cfg.min_rival_ratio * best.median
              and distinct(f.outcome.T, best.outcome.T, centre)
              and not _significantly_worse(f, best, cfg.rival_p_value)]
    if not rivals:
        return best.outcome, None
    rival = min(rivals, key=lambda f: f.median)
    return best.outcome, (f"ambiguous: another pose fits the samples almost as well (median "
                          f"distance {rival.median * 1e3:.2f} vs {best.median * 1e3:.2f} mm, "
                          f"inside the airways {rival.inside:.0%} vs {best.inside:.0%}); sweep "
                          f"more airways")


def _significantly_worse(fit: _Fit, best: _Fit, p_value: float) -> bool:
    """Whether ``fit``'s per-sample distances are larger than ``best``'s (one-sided Wilcoxon
    signed-rank test on the paired samples, p < ``p_value``)."""
    from scipy.stats import wilcoxon

    diff = fit.distances - best.distances
    if not np.any(diff):
        return False
    return bool(wilcoxon(diff, alternative="greater").pvalue < p_value)


def _residuals(pts: np.ndarray, tw: Twin, outcome) -> np.ndarray:
    """Distance (m) of each transformed sample to its matched twin point."""
    return np.linalg.norm(apply(outcome.T, pts) - tw.points[outcome.matches], axis=1)


def register_cbct(points_patient: np.ndarray, twin, target_ct: np.ndarray,
                  init: np.ndarray | None = None,
                  config: RegistrationConfig | None = None) -> RegistrationResult:
    """Register a cone-beam CT airway surface cloud to the twin's lumen surface near the target.

    Parameters
    ----------
    points_patient : ndarray, shape (M, 3)
        Airway surface points in the patient frame (m).
    twin : Twin, AirwayMap or AirwayTree
        The twin (CT frame); its lumen mesh (or tube surface) around ``target_ct`` is the
        registration target (see :attr:`RegistrationConfig.cbct_radius`).
    target_ct : ndarray, shape (3,)
        Target in the CT frame (m), around which the cone-beam CT was taken.
    init : ndarray, shape (4, 4), optional
        Initial T_ct_patient (e.g. an EM registration). Without one, FPFH features + RANSAC
        (several runs, see :func:`~bronchonav.registration.icp.global_surface`) give the initial
        alignment (slower, about a second).

    Returns
    -------
    RegistrationResult
    """
    t0 = time.perf_counter()
    cfg = config or RegistrationConfig()
    tw = Twin.of(twin)
    pts = check_points(points_patient, cfg.min_points, "cone-beam CT points")
    target_ct = np.asarray(target_ct, dtype=float).reshape(3)
    radius = cfg.cbct_radius
    if init is not None:
        init = _check_transform(init)
        reach = np.linalg.norm(apply(init, pts) - target_ct, axis=1)
        radius = float(np.percentile(reach, 98)) + 0.01
    surface = tw.surface_near(target_ct, radius)
    if len(surface.points) < cfg.min_points:
        raise RegistrationError(f"the twin has only {len(surface.points)} surface points within "
                                f"{radius * 1e3:.0f} mm of the target")
    source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)).voxel_down_sample(cfg.cbct_voxel)
    if init is None:
        res, method = global_surface(source, surface), "fpfh-ransac+surface"
    else:
        res, method = surface_icp(source, surface, init), "given-init+surface"
    T = np.asarray(res.transformation)
    fitness, fre = float(res.fitness), float(res.inlier_rmse)
    ok, msg = _judge(fitness, fre, cfg, cfg.min_surface_fitness)
    return RegistrationResult(T, ok, msg, fitness, fre, len(source.points), len(res.correspondence_set),
                              None, time.perf_counter() - t0, quality_flag(ok, fitness, fre, None),
                              None, method)
