"""Initial alignment of sensor samples to the twin without a hand-given guess.

Anatomical alignment first: the trachea is the longest straight airway of a central-airway
survey, so the run of samples along one line that covers the most length and has a free end
(the mouth side, with no other airway beyond it) is taken as the trachea (candidate lines through
pairs of samples and along sensor directions, refitted to their runs as locally optimised RANSAC
does; see :func:`trachea_hypotheses`). Matching its axis to the twin's trachea leaves the roll
about the axis and the carina's depth along the run unknown: every roll (``n_roll`` angles) and
depth (every ``depth_step``) is scored by the mean distance of the mapped samples to the twin's
centerlines, and the best few are polished by a short coarse ICP (open3d, point-to-point) and
scored again. When no tracheal run is found, or the fit stays poor, the 24 proper rotations that
map the samples' principal axes onto those of the twin's central airways are tried the same way.
Nothing here depends on the patient's orientation on the table.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from bronchonav.geometry import apply, make_transform, rotation_about, rotation_between
from bronchonav.registration.twin import Twin

COARSE_SCHEDULE = ((0.025, 15), (0.012, 15))
"""Coarse ICP stages: (maximum correspondence distance (m), iterations)."""


def _principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and principal axes (columns, decreasing variance) of ``points``."""
    c = points.mean(axis=0)
    _, _, Vt = np.linalg.svd(points - c, full_matrices=False)
    return c, Vt.T


def _signed_permutations() -> list[np.ndarray]:
    """The 48 signed 3x3 permutation matrices (rotations and reflections)."""
    maps = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            P = np.zeros((3, 3))
            P[list(range(3)), list(perm)] = signs
            maps.append(P)
    return maps


_AXIS_MAPS = _signed_permutations()


def _longest_runs(samples: np.ndarray, origins: np.ndarray, axes: np.ndarray, tolerance: float,
                  max_gap: float) -> np.ndarray:
    """For each line (origin, unit axis), the mask (L, N) of the samples in its longest run.

    A run is a set of samples within ``tolerance`` of the line whose positions along it have no
    gap longer than ``max_gap``; "longest" counts samples.
    """
    n = len(samples)
    rel = samples[None, :, :] - origins[:, None, :]                  # (L, N, 3)
    t = np.einsum("lnk,lk->ln", rel, axes)
    inside = np.einsum("lnk,lnk->ln", rel, rel) - t * t < tolerance ** 2
    far = 1e6  # samples off the line sort last and fall into a run of their own
    order = np.argsort(np.where(inside, t, far), axis=1)
    t_sorted = np.take_along_axis(np.where(inside, t, far), order, axis=1)
    run_sorted = np.concatenate([np.zeros((len(t), 1), int),
                                 np.cumsum(np.diff(t_sorted, axis=1) > max_gap, axis=1)], axis=1)
    run_sorted = np.where(t_sorted < far, run_sorted, n + 1)
    rows = np.arange(len(t))[:, None]
    counts = np.bincount((rows * (n + 2) + run_sorted).ravel(),
                         minlength=len(t) * (n + 2)).reshape(len(t), n + 2)[:, :n + 1]
    best = np.argmax(counts, axis=1)
    mask = np.zeros_like(inside)
    mask[rows, order] = run_sorted == best[:, None]
    return mask


def _refit(samples: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and principal axis of the masked samples of each line (a line without samples
    gets an arbitrary axis; it covers nothing and is never chosen)."""
    w = masks.astype(float)
    n = np.maximum(w.sum(axis=1), 1.0)
    c = (w @ samples) / n[:, None]
    second = (w @ (samples[:, :, None] * samples[:, None, :]).reshape(-1, 9)).reshape(-1, 3, 3)
    cov = second / n[:, None, None] - c[:, :, None] * c[:, None, :]
    _, vecs = np.linalg.eigh(cov)
    return c, vecs[:, :, -1]


def find_trachea(samples: np.ndarray, directions: np.ndarray | None = None, **kwargs):
    """The most likely tracheal run (see :func:`trachea_hypotheses`), or ``None``."""
    found = trachea_hypotheses(samples, directions, n_best=1, **kwargs)
    return found[0] if found else None


def trachea_hypotheses(samples: np.ndarray, directions: np.ndarray | None = None,
                       tolerance: float = 4e-3, max_gap: float = 0.02, n_lines: int = 80,
                       n_check: int = 20, max_free_end: int = 3, n_best: int = 2, seed: int = 0):
    """Candidate tracheal runs of a central-airway sweep: free end and axis (patient frame, m).

    Candidate lines go through random pairs of samples 20-200 mm apart and, with directions,
    along the sensor direction at random samples; each is refitted to the samples of its
    longest run (as locally optimised RANSAC does). The trachea is the run covering the most
    length (in 2 mm bins, so that a densely swept short stretch does not win) that has a free
    end (the mouth side, with no other airway beyond it). The run may continue past the carina
    into a main bronchus, so where along it the carina lies is left to the caller.

    Parameters
    ----------
    samples : ndarray, shape (N, 3)
        Sensor positions (m).
    directions : ndarray, shape (N, 3), optional
        Unit sensor directions.
    tolerance : float
        Samples within this distance (m) of a candidate line belong to it.
    max_gap : float
        A run along the line ends at a gap longer than this (m).
    n_lines : int
        Candidate lines from pairs (and as many again from directions, when given).
    n_check : int
        The lines whose runs cover the most length that are checked for a free end.
    max_free_end : int
        An end is free when at most this many samples off the line lie within 25 mm of it
        beyond it.
    n_best : int
        Number of distinct hypotheses returned (a local sweep far out in a lobe can also form a
        long run with a free peripheral end).
    seed : int
        Seed of the sampling of candidates (fixed, so the result is repeatable).

    Returns
    -------
    list of (mouth, axis, length)
        Best first: ``mouth`` (3,) the free end of the run, ``axis`` (3,) the unit direction
        from it along the run, ``length`` the run's length (m). Empty when no run of at least
        40 mm with a free end is found.
    """
    rng = np.random.default_rng(seed)
    n = len(samples)
    i, j = rng.integers(n, size=(2, 6 * n_lines))
    d = np.linalg.norm(samples[j] - samples[i], axis=1)
    keep = (d > 0.02) & (d < 0.2)
    i, j, d = i[keep][:n_lines], j[keep][:n_lines], d[keep][:n_lines]
    origins, axes = samples[i], (samples[j] - samples[i]) / d[:, None]
    if directions is not None:
        k = rng.integers(n, size=n_lines)
        origins, axes = np.vstack([origins, samples[k]]), np.vstack([axes, directions[k]])
    if len(origins) == 0:
        return []
    origins, axes = _refit(samples, _longest_runs(samples, origins, axes, 1.5 * tolerance, max_gap))
    masks = _longest_runs(samples, origins, axes, tolerance, max_gap)
    # coverage: the number of 2 mm bins along the line holding a sample of the run, so that a
    # densely swept short stretch does not outrank the long trachea
    t_all = np.einsum("lnk,lk->ln", samples[None] - origins[:, None], axes)
    bins = np.sort(np.where(masks, np.floor(t_all / 2e-3), 1e9), axis=1)
    distinct = 1 + np.sum(np.diff(bins, axis=1) > 0, axis=1)
    coverage = np.where(masks.any(axis=1), distinct - (~masks).any(axis=1), 0)
    found = []
    for line in np.argsort(-coverage)[:n_check]:
        on = masks[line]
        t = t_all[line]
        lo, hi = t[on].min(), t[on].max()
        if hi - lo < 0.04:
            continue
        rel = samples - origins[line]
        off_line = np.einsum("nk,nk->n", rel, rel) - t * t >= tolerance ** 2
        ends = []  # samples of other airways near and beyond each end
        for end, outward in ((hi, 1.0), (lo, -1.0)):
            near = np.linalg.norm(samples - (origins[line] + end * axes[line]), axis=1) < 0.025
            ends.append(np.count_nonzero(off_line & near & (outward * (t - end) > -2e-3)))
        if min(ends) > max_free_end:
            continue  # no free (mouth) end: not the trachea
        # the axis points from the free (mouth) end towards the busier end
        axis = axes[line] if ends[0] >= ends[1] else -axes[line]
        mouth = origins[line] + (lo if ends[0] >= ends[1] else hi) * axes[line]
        if any(np.linalg.norm(mouth - m) < 0.02 and axis @ a > np.cos(np.radians(20))
               for m, a, _ in found):
            continue  # the same run as a better one
        # the run may bend on into a main bronchus: refit the axis on its first 70 mm
        along = (samples - mouth) @ axis
        head = on & (along <= 0.07)
        if np.count_nonzero(head) >= 10:
            c, V = _principal_axes(samples[head])
            axis = V[:, 0] if V[:, 0] @ axis > 0 else -V[:, 0]
            mouth = c + (((mouth - c) @ axis) * axis)
        found.append((mouth, axis, float(hi - lo)))
        if len(found) == n_best:
            break
    return found


def _median_distance(twin: Twin, points: np.ndarray) -> float:
    return float(np.median(twin.kdtree.query(points, distance_upper_bound=0.05)[0].clip(max=0.05)))


def _scores(src: np.ndarray, twin: Twin, candidates: np.ndarray, n_score: int) -> np.ndarray:
    """Mean distance (m, each capped at 50 mm) of ~``n_score`` mapped samples to the twin's
    centerline points (thinned to 2 mm), per candidate transform (C, 4, 4).

    The mean, not the median: where more than half of a survey's samples lie on the trachea,
    which fits every roll about its axis alike, the median does not see the main bronchi, and
    on one recorded survey (test/data/survey_tip_positions_built3_N6_ct.csv) every candidate
    kept was turned by 150–175° about the trachea, which the registration then took. (Read from
    a 2 mm distance grid, most candidates tied at 2.0 mm and the right pose ranked 42nd of 312
    on another survey.)"""
    sub = src[:: max(1, len(src) // n_score)]
    mapped = np.einsum("cij,nj->cni", candidates[:, :3, :3], sub) + candidates[:, None, :3, 3]
    d = twin.coarse_kdtree.query(mapped.reshape(-1, 3), distance_upper_bound=0.05)[0]
    d = d.clip(max=0.05)
    return np.mean(d.reshape(len(candidates), -1), axis=1)


def distinct(a: np.ndarray, b: np.ndarray, centre: np.ndarray, angle: float = np.radians(10.0),
              shift: float = 0.01) -> bool:
    """Whether two transforms differ by more than ``angle`` (rad) or move ``centre`` more than
    ``shift`` (m) apart."""
    dR = a[:3, :3] @ b[:3, :3].T
    rot = np.arccos(np.clip((np.trace(dR) - 1.0) / 2.0, -1.0, 1.0))
    return bool(rot > angle or np.linalg.norm(apply(a, centre) - apply(b, centre)) > shift)


def _best_candidates(src: np.ndarray, twin: Twin, candidates, n_best: int,
                     n_keep: int = 12) -> list[np.ndarray]:
    """The ``n_best`` mutually distinct candidate transforms whose mapped samples lie closest to
    the twin: all are scored on 40 samples, the best ``n_keep`` again on 150, and near
    duplicates of a better one (within 10 degrees and 10 mm) are skipped."""
    Ts = np.asarray(candidates)
    order = np.argsort(_scores(src, twin, Ts, 40))
    centre = src.mean(axis=0)
    keep = []
    for k in order:
        if all(distinct(Ts[k], Ts[j], centre) for j in keep):
            keep.append(k)
        if len(keep) == n_keep:
            break
    keep = np.asarray(keep)
    best = keep[np.argsort(_scores(src, twin, Ts[keep], 150))[:n_best]]
    return [Ts[k] for k in best]


def _polish(src: np.ndarray, twin: Twin, candidates) -> list[tuple[np.ndarray, float]]:
    """Coarse ICP from each candidate transform: (transform, median distance (m)) for each."""
    reg = o3d.pipelines.registration
    source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(src))
    out = []
    for T in candidates:
        for max_distance, iterations in COARSE_SCHEDULE:
            T = reg.registration_icp(source, twin.coarse_cloud, max_distance, T,
                                     reg.TransformationEstimationPointToPoint(),
                                     reg.ICPConvergenceCriteria(1e-6, 1e-6, iterations)).transformation
        out.append((np.asarray(T), _median_distance(twin, apply(T, src))))
    return out


@dataclass
class InitialAlignment:
    """A coarse T_ct_patient and the other poses the samples might have come from.

    Attributes
    ----------
    T_ct_patient : ndarray, shape (4, 4)
    score : float
        Median distance (m) of the samples to the twin's centerlines after the coarse ICP.
    alternatives : list of (ndarray (4, 4), float)
        The other polished candidates that are different poses (more than 10 degrees or 10 mm
        from the best and from each other at the samples' centroid), with their scores, best
        first. One nearly as good as the best may mean the samples do not determine the pose
        (e.g. a single path that fits several similar branches); the coarse score also ranks
        basins only roughly, so the registration refines them before judging.
    """

    T_ct_patient: np.ndarray
    score: float
    alternatives: list = field(default_factory=list)


def initial_alignment(samples_patient: np.ndarray, twin: Twin,
                      directions_patient: np.ndarray | None = None, max_points: int = 250,
                      n_roll: int = 24, depth_step: float = 0.008, n_polish: int = 10,
                      good_score: float = 3e-3) -> InitialAlignment:
    """Coarse T_ct_patient from the samples alone.

    Parameters
    ----------
    samples_patient : ndarray, shape (N, 3)
        Sensor positions in the patient frame (m), finite, N >= 3.
    twin : Twin
        The twin (CT frame).
    directions_patient : ndarray, shape (N, 3), optional
        Unit sensor directions; they help find the trachea.
    max_points : int
        The samples are thinned to at most this many (every k-th) for the coarse ICP.
    n_roll : int
        Roll angles about the tracheal axis tried, for each tracheal hypothesis.
    depth_step : float
        The carina is tried every ``depth_step`` (m) along the run, from 40 mm below its free
        end to its far end.
    n_polish : int
        The best-scoring mutually distinct candidates (median distance of the mapped samples to
        the twin) that get a coarse ICP. The scores rank the basins only roughly: on the
        surveys of test/data/survey_tip_positions*.csv (trachea and both main bronchi), poses
        turned about the sweep, which swap the main bronchi, ranked above the right one, and
        with 3 polished candidates (and exact scores) 3 of 80 noisy sweeps ended there (none
        with 10, which the registration then refines and judges, :func:`register_em`).
    good_score : float
        If the best anatomical candidate leaves a median sample-to-centerline distance above this
        (m), the principal-axes candidates are tried too.

    Returns
    -------
    InitialAlignment
    """
    src = np.ascontiguousarray(samples_patient[:: max(1, len(samples_patient) // max_points)])
    thin = max(1, len(samples_patient) // 300)
    found = trachea_hypotheses(samples_patient[::thin],
                               None if directions_patient is None else directions_patient[::thin])
    trachea = twin.tree.trachea
    axis_t = (trachea.end - trachea.start) / np.linalg.norm(trachea.end - trachea.start)
    candidates = []
    for mouth, axis_s, length in found:
        R0 = rotation_between(axis_s, axis_t)
        for angle in np.arange(n_roll) * 2 * np.pi / n_roll:
            R = rotation_about(axis_t, angle) @ R0
            for depth in np.arange(0.04, length + depth_step, depth_step):
                candidates.append(make_transform(R, trachea.end - R @ (mouth + depth * axis_s)))
    solutions = _polish(src, twin, _best_candidates(src, twin, candidates, n_polish)) if candidates else []
    if not solutions or min(score for _, score in solutions) > good_score:
        c_s, V_s = _principal_axes(src)
        c_t, V_t = _principal_axes(np.asarray(twin.central_cloud.points))
        candidates = [make_transform(R, c_t - R @ c_s)
                      for R in (V_t @ P @ V_s.T for P in _AXIS_MAPS) if np.linalg.det(R) > 0]
        solutions += _polish(src, twin, _best_candidates(src, twin, candidates, 2 * n_polish))
    solutions.sort(key=lambda s: s[1])
    centre = src.mean(axis=0)
    kept = []
    for T, score in solutions:
        if all(distinct(T, other, centre) for other, _ in kept):
            kept.append((T, score))
    return InitialAlignment(kept[0][0], kept[0][1], kept[1:])
