"""Seeded registration trials against a map and their statistics (TRE, FRE, success, time).

Each trial draws a new unknown patient→CT transform, breathing phases, noise and outliers
(seeded by ``(seed, trial)``), simulates the patient from the ground truth and registers to the
twin (the map). Targets cycle through the nodules that the map and the ground truth share. The
target error is computed from the hidden :class:`~bronchonav.registration.simulate.GroundTruth`
only after the registration has returned.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from bronchonav.airway.tree import Nodule
from bronchonav.errors import InputError, RegistrationError
from bronchonav.maps import AirwayMap
from bronchonav.registration.register import RegistrationConfig, register_cbct, register_em
from bronchonav.registration.simulate import Scenario, SimulationConfig, scenario_config, simulate_scenario
from bronchonav.geometry import rotation_angle
from bronchonav.registration.twin import Twin

SUCCESS_TRE = 5e-3
"""A trial succeeds when the registration reports success and the target error is below this (m)."""


@dataclass
class GroundTruthSource:
    """The simulated patient's true anatomy (CT frame at rest) and where it came from."""

    twin: Twin
    nodules: list[Nodule]
    description: str


def ground_truth_for(airway_map: AirwayMap) -> GroundTruthSource:
    """The ground truth behind a map.

    For a map built from the phantom (metadata ``source.kind == "phantom"``), the phantom's
    ground-truth map (true tree, nodules and lumen mesh) regenerated from its name and seed;
    otherwise the map itself (a perfect twin).
    """
    source = airway_map.metadata.get("source") or {}
    if source.get("kind") == "phantom":
        from bronchonav.ct.phantom import phantom_config, phantom_ground_truth_map

        name, seed = source.get("name", "default"), int(source.get("seed", 0))
        truth = phantom_ground_truth_map(phantom_config(name, seed))
        return GroundTruthSource(Twin.of(truth), list(truth.nodules),
                                 f"phantom {name!r} seed {seed} (true tree and lumen mesh)")
    return GroundTruthSource(Twin.of(airway_map), list(airway_map.nodules), "the map itself")


@dataclass
class TrialRecord:
    """One trial's outcome (distances in mm, times in ms; ``time_ms`` wall, ``cpu_ms`` CPU)."""

    trial: int
    target_id: str
    success: bool
    registered: bool
    message: str
    quality: str
    tre_mm: float
    tre_global_mm: float
    tre_worst_phase_mm: float
    fre_mm: float
    target_sigma_mm: float | None
    time_ms: float
    cpu_ms: float
    iterations: int | None
    rotation_deg: float
    translation_mm: float


def run_trial(scenario: Scenario, twin: Twin, trial: int,
              reg_config: RegistrationConfig | None = None) -> TrialRecord:
    """Register one simulated scenario and score it against its hidden truth.

    EM sweeps alone (``rigid``, ``breathing``): :func:`register_em` with the target and the
    local sweep marked (global stage on the survey, then the local refinement). With a
    cone-beam CT scan (``cbct``): the global EM registration of the survey, then
    :func:`register_cbct` from it (from scratch if it failed). ``tre_global_mm`` is the TRE of the stage before the final one.
    """
    obs = scenario.observation
    cpu0 = time.process_time()
    try:
        if obs.cbct_points is not None:
            em = register_em(obs.em_positions[~obs.em_local], twin, None,
                             obs.em_directions[~obs.em_local], config=reg_config)
            # start from the EM registration, or from scratch (FPFH + RANSAC) if it failed
            result = register_cbct(obs.cbct_points, twin, obs.target_ct,
                                   init=em.T_ct_patient if em.success else None, config=reg_config)
            result.time_s += em.time_s
            global_T = em.T_ct_patient
        else:
            result = register_em(obs.em_positions, twin, obs.target_ct, obs.em_directions,
                                 local_mask=obs.em_local, config=reg_config)
            global_T = (result.global_result or result).T_ct_patient
    except RegistrationError as exc:
        nan = float("nan")
        return TrialRecord(trial, scenario.truth.target_id, False, False, str(exc), "failed", nan, nan,
                           nan, nan, None, nan, nan, None, nan, nan)
    cpu_ms = (time.process_time() - cpu0) * 1e3
    truth = scenario.truth
    tre = truth.tre(result.T_ct_patient)
    T_true = truth.T_ct_patient
    return TrialRecord(
        trial, truth.target_id, bool(result.success and tre < SUCCESS_TRE), result.success,
        result.message, result.quality, tre * 1e3, truth.tre(global_T) * 1e3,
        truth.tre_worst_phase(result.T_ct_patient) * 1e3, result.fre * 1e3,
        None if result.target_sigma is None else result.target_sigma * 1e3, result.time_s * 1e3,
        cpu_ms, result.iterations, float(np.degrees(rotation_angle(T_true))),
        float(np.linalg.norm(T_true[:3, 3]) * 1e3))


def run_trials(airway_map: AirwayMap, kind: str, n_trials: int, seed: int,
               sim_config: SimulationConfig | None = None,
               reg_config: RegistrationConfig | None = None,
               ground_truth: GroundTruthSource | None = None, twin: Twin | None = None,
               target_ids: list[str] | None = None, on_trial=None) -> list[TrialRecord]:
    """Run ``n_trials`` seeded trials of scenario ``kind`` on ``airway_map``.

    Parameters
    ----------
    airway_map : AirwayMap
        The twin's map (registration target) and the planned targets (its nodules).
    kind : str
        ``"rigid"``, ``"breathing"`` or ``"cbct"``.
    n_trials, seed : int
        Trial ``k`` is seeded with ``(seed, k)``.
    sim_config, reg_config : optional
        Simulation and registration parameters (scenario defaults otherwise).
    ground_truth : GroundTruthSource, optional
        Defaults to :func:`ground_truth_for` the map.
    twin : Twin, optional
        A prepared twin of ``airway_map`` (built once here otherwise).
    target_ids : list of str, optional
        Nodule ids to cycle through (default: every nodule in both the map and the truth).
    on_trial : callable, optional
        Called with each :class:`TrialRecord` as it completes (for progress output).
    """
    if n_trials < 1:
        raise InputError(f"the number of trials must be at least 1, got {n_trials}")
    gt = ground_truth or ground_truth_for(airway_map)
    tw = twin or Twin.of(airway_map)
    truth_nodules = {n.id: n for n in gt.nodules}
    planned = {n.id: n for n in airway_map.nodules}
    shared = [i for i in planned if i in truth_nodules]
    ids = shared if target_ids is None else list(target_ids)
    for i in ids:
        if i not in shared:
            raise InputError(f"target {i!r} is not a nodule of both the map and its ground truth "
                             f"(shared: {', '.join(shared) or 'none'})")
    if not ids:
        raise InputError("the map has no nodule to use as a target")
    cfg = sim_config or scenario_config(kind)
    records = []
    for k in range(n_trials):
        rng = np.random.default_rng([seed, k])
        target = ids[k % len(ids)]
        scenario = simulate_scenario(kind, gt.twin, truth_nodules[target], planned[target].center,
                                     rng, cfg)
        record = run_trial(scenario, tw, k, reg_config)
        records.append(record)
        if on_trial is not None:
            on_trial(record)
    return records


def _median(values) -> float | None:
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    return float(np.median(a)) if a.size else None


def _p95(values) -> float | None:
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    return float(np.percentile(a, 95)) if a.size else None


def summarize(records: list[TrialRecord], kind: str) -> dict:
    """Statistics of a set of trials (distances in mm, times in ms).

    Keys: ``trials``, ``success_rate`` (registration succeeded and TRE < 5 mm),
    ``registered_rate`` (the registration reported success), ``tre_median_mm``, ``tre_p95_mm``,
    ``tre_max_mm``, ``fre_median_mm``, ``ms_median``, ``ms_p95`` (wall time per registration),
    ``cpu_ms_median`` (CPU time of the process, all threads), ``tre_global_median_mm`` and
    ``tre_local_median_mm`` (the stage before the final one, and the final one),
    ``gain_median_mm`` (median per-trial reduction of the TRE by the final stage),
    ``local_better_rate``, ``tre_worst_phase_median_mm`` (the largest TRE over the breathing
    cycle), ``target_sigma_median_mm`` and ``per_target`` medians.
    """
    ok = [r for r in records if np.isfinite(r.tre_mm)]
    tre = [r.tre_mm for r in records]
    out = {
        "scenario": kind,
        "trials": len(records),
        "success_rate": float(np.mean([r.success for r in records])),
        "registered_rate": float(np.mean([r.registered for r in records])),
        "tre_median_mm": _median(tre),
        "tre_p95_mm": _p95(tre),
        "tre_max_mm": max(r.tre_mm for r in ok) if ok else None,
        "fre_median_mm": _median(r.fre_mm for r in records),
        "ms_median": _median(r.time_ms for r in records),
        "ms_p95": _p95(r.time_ms for r in records),
        "cpu_ms_median": _median(r.cpu_ms for r in records),
        "tre_global_median_mm": _median(r.tre_global_mm for r in records),
        "tre_local_median_mm": _median(tre),
        "gain_median_mm": _median(r.tre_global_mm - r.tre_mm for r in records),
        "local_better_rate": float(np.mean([r.tre_mm < r.tre_global_mm for r in ok])) if ok else None,
        "tre_worst_phase_median_mm": _median(r.tre_worst_phase_mm for r in records),
        "target_sigma_median_mm": _median(r.target_sigma_mm for r in records),
        "iterations_median": _median(r.iterations for r in records if r.iterations is not None),
        "quality_counts": {q: sum(r.quality == q for r in records)
                           for q in ("good", "fair", "poor", "failed")},
        "per_target": {},
    }
    for target in sorted({r.target_id for r in records}):
        rs = [r for r in records if r.target_id == target]
        out["per_target"][target] = {"trials": len(rs), "tre_median_mm": _median(r.tre_mm for r in rs),
                                     "tre_global_median_mm": _median(r.tre_global_mm for r in rs),
                                     "success_rate": float(np.mean([r.success for r in rs]))}
    return out


def json_safe(value):
    """``value`` with every non-finite float (NaN, inf) replaced by ``None``, recursively
    through dicts, lists and tuples, so that it serialises as strict JSON."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def records_as_dicts(records: list[TrialRecord]) -> list[dict]:
    """The trial records as JSON-serialisable dicts (NaN for a failed trial becomes ``None``)."""
    return [json_safe(asdict(r)) for r in records]
