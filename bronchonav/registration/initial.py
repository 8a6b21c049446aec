"""Initial alignment of sensor samples to the twin without a hand-given guess.

Anatomical alignment first: the trachea is the longest straight, densely swept airway of a
central-airway survey, so the longest contiguous run of samples along one line (found by
sampling candidate lines through pairs of samples, as RANSAC does) is taken as the trachea. Its
distal end (the carina) is the end with other samples beyond it. Matching that axis and carina
to the twin's trachea fixes five degrees of freedom; the roll about the tracheal axis is found
by trying ``n_roll`` angles, polishing each with a short coarse ICP (open3d, point-to-point)
against the twin's centerlines and keeping the one whose samples lie closest to the twin
(median distance). When no tracheal run is found, or the fit stays poor, the 24 proper
rotations that map the samples' principal axes onto those of the twin's central airways are
tried the same way. Nothing here depends on the patient's orientation on the table.
"""

from __future__ import annotations

import itertools

import numpy as np
import open3d as o3d

from bronchonav.registration.transforms import apply, make_transform
from bronchonav.registration.twin import Twin

COARSE_SCHEDULE = ((0.025, 15), (0.012, 15))
"""Coarse ICP stages: (maximum correspondence distance (m), iterations)."""


def _principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and principal axes (columns, decreasing variance) of ``points``."""
    c = points.mean(axis=0)
    _, _, Vt = np.linalg.svd(points - c, full_matrices=False)
    return c, Vt.T


def _proper_axis_maps() -> list[np.ndarray]:
    """The 48 signed 3x3 permutation matrices (rotations and reflections)."""
    maps = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            P = np.zeros((3, 3))
            P[list(range(3)), list(perm)] = signs
            maps.append(P)
    return maps


_AXIS_MAPS = _proper_axis_maps()


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``a`` onto unit vector ``b``."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-12:  # opposite: turn 180 degrees about any perpendicular axis
        p = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        p /= np.linalg.norm(p)
        return 2 * np.outer(p, p) - np.eye(3)
    K = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + K + K @ K / (1 + c)


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` (rad) about unit ``axis`` (Rodrigues)."""
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


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
    """Centroid and principal axis of the masked samples of each line (lines with < 2 keep NaN)."""
    w = masks.astype(float)
    n = np.maximum(w.sum(axis=1), 1.0)
    c = (w @ samples) / n[:, None]
    second = (w @ (samples[:, :, None] * samples[:, None, :]).reshape(-1, 9)).reshape(-1, 3, 3)
    cov = second / n[:, None, None] - c[:, :, None] * c[:, None, :]
    _, vecs = np.linalg.eigh(cov)
    return c, vecs[:, :, -1]


def find_trachea(samples: np.ndarray, directions: np.ndarray | None = None,
                 tolerance: float = 4e-3, max_gap: float = 0.012, n_lines: int = 100,
                 n_check: int = 20, max_free_end: int = 3, seed: int = 0):
    """The tracheal run of a central-airway sweep: its axis and carina end (patient frame, m).

    Candidate lines go through random pairs of samples 20-200 mm apart and, with directions,
    along the sensor direction at random samples; each is refitted twice to the samples of its
    longest run (as locally optimised RANSAC does). Among the runs with the most samples, the
    trachea is the one covering the most length that has a free end (the mouth side, with no
    other samples beyond it); its other end is the carina.

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
        The lines with the most samples in one run that are checked for coverage and a free end.
    max_free_end : int
        An end is free when at most this many other samples lie within 25 mm of it beyond it.
    seed : int
        Seed of the sampling of candidates (fixed, so the result is repeatable).

    Returns
    -------
    (carina, axis, length) or None
        ``carina`` (3,) the distal end of the run, ``axis`` (3,) the unit direction from the
        proximal end towards the carina, ``length`` the run's length (m); ``None`` when no run
        of at least 40 mm with a free end is found.
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
        return None
    for _ in range(2):
        origins, axes = _refit(samples, _longest_runs(samples, origins, axes, 1.5 * tolerance, max_gap))
    masks = _longest_runs(samples, origins, axes, tolerance, max_gap)
    best, best_coverage = None, 0
    for line in np.argsort(-masks.sum(axis=1))[:n_check]:
        on = masks[line]
        t = (samples - origins[line]) @ axes[line]
        lo, hi = t[on].min(), t[on].max()
        coverage = len(np.unique(np.floor(t[on] / 2e-3)))  # 2 mm bins holding a sample
        if hi - lo < 0.04 or coverage <= best_coverage:
            continue
        ends = []
        for end, outward in ((hi, 1.0), (lo, -1.0)):
            near = np.linalg.norm(samples - (origins[line] + end * axes[line]), axis=1) < 0.025
            ends.append(np.count_nonzero(~on & near & (outward * (t - end) > -2e-3)))
        if min(ends) > max_free_end:
            continue  # no free (mouth) end: not the trachea
        best_coverage = coverage
        axis = axes[line] if ends[0] >= ends[1] else -axes[line]   # towards the busier end
        end = hi if ends[0] >= ends[1] else lo
        best = (origins[line] + end * axes[line], axis, float(hi - lo))
    return best


def _median_distance(twin: Twin, points: np.ndarray) -> float:
    return float(np.median(twin.kdtree.query(points, distance_upper_bound=0.05)[0].clip(max=0.05)))


def _best_candidates(src: np.ndarray, twin: Twin, candidates, n_best: int, n_score: int = 60):
    """The ``n_best`` candidate transforms whose mapped samples lie closest to the twin."""
    sub = src[:: max(1, len(src) // n_score)]
    Ts = np.asarray(candidates)
    mapped = np.einsum("cij,nj->cni", Ts[:, :3, :3], sub) + Ts[:, None, :3, 3]
    d = twin.kdtree.query(mapped.reshape(-1, 3), distance_upper_bound=0.05)[0].clip(max=0.05)
    scores = np.median(d.reshape(len(Ts), -1), axis=1)
    return [candidates[k] for k in np.argsort(scores)[:n_best]]


def _polish(src: np.ndarray, twin: Twin, candidates) -> tuple[np.ndarray, float]:
    """Coarse ICP from each candidate transform; the best one and its median distance (m)."""
    reg = o3d.pipelines.registration
    source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(src))
    best_T, best_score = np.eye(4), np.inf
    for T in candidates:
        for max_distance, iterations in COARSE_SCHEDULE:
            T = reg.registration_icp(source, twin.coarse_cloud, max_distance, T,
                                     reg.TransformationEstimationPointToPoint(),
                                     reg.ICPConvergenceCriteria(1e-6, 1e-6, iterations)).transformation
        score = _median_distance(twin, apply(T, src))
        if score < best_score:
            best_T, best_score = np.asarray(T), score
    return best_T, best_score


def initial_alignment(samples_patient: np.ndarray, twin: Twin,
                      directions_patient: np.ndarray | None = None, max_points: int = 250,
                      n_roll: int = 24, n_polish: int = 3,
                      good_score: float = 3e-3) -> tuple[np.ndarray, float]:
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
        Roll angles about the tracheal axis tried (each also with the carina moved 0-20 mm up
        the axis, since the swept run can continue into a main bronchus).
    n_polish : int
        The best-scoring candidates (median distance of the mapped samples to the twin) that
        get a coarse ICP.
    good_score : float
        If the best anatomical candidate leaves a median sample-to-centerline distance above this
        (m), the principal-axes candidates are tried too.

    Returns
    -------
    T_ct_patient : ndarray, shape (4, 4)
    score : float
        Median distance (m) of the samples to the twin's centerlines after the coarse ICP.
    """
    src = np.ascontiguousarray(samples_patient[:: max(1, len(samples_patient) // max_points)])
    best_T, best_score = np.eye(4), np.inf
    thin = max(1, len(samples_patient) // 400)
    found = find_trachea(samples_patient[::thin],
                         None if directions_patient is None else directions_patient[::thin])
    if found is not None:
        carina_s, axis_s, _ = found
        trachea = twin.tree.trachea
        axis_t = trachea.end - trachea.start
        axis_t /= np.linalg.norm(axis_t)
        R0 = _rotation_between(axis_s, axis_t)
        candidates = []
        for angle in np.arange(n_roll) * 2 * np.pi / n_roll:
            R = _axis_rotation(axis_t, angle) @ R0
            for back in (0.0, 0.01, 0.02):
                candidates.append(make_transform(R, trachea.end - R @ (carina_s - back * axis_s)))
        best_T, best_score = _polish(src, twin, _best_candidates(src, twin, candidates, n_polish))
    if best_score > good_score:
        c_s, V_s = _principal_axes(src)
        c_t, V_t = _principal_axes(np.asarray(twin.central_cloud.points))
        candidates = [make_transform(R, c_t - R @ c_s)
                      for R in (V_t @ P @ V_s.T for P in _AXIS_MAPS) if np.linalg.det(R) > 0]
        T, score = _polish(src, twin, _best_candidates(src, twin, candidates, 2 * n_polish))
        if score < best_score:
            best_T, best_score = T, score
    return best_T, best_score
