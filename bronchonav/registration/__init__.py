"""Registration of simulated intra-operative sensing to the twin, under breathing.

Frames: the patient/sensor frame (EM field generator or cone-beam CT) and the twin's CT frame
(LPS, m). A registration estimates ``T_ct_patient``.

Public API
----------
- :func:`register_em` — EM sensor samples (positions, optional directions) → RegistrationResult:
  initial alignment without a guess, trimmed centerline ICP, optional local refinement around a
  target.
- :func:`register_em_extended` — a survey refused as ambiguous, its pose chosen with a longer
  sweep and fitted to the survey.
- :func:`register_cbct` — cone-beam CT surface cloud → RegistrationResult (point-to-plane ICP
  against the lumen surface; FPFH + RANSAC when no initial transform is given).
- :class:`RegistrationResult`, :class:`RegistrationConfig`, :class:`Twin` (prepare a map once).
- Simulation: :func:`simulate_scenario` composes the sensors of :mod:`bronchonav.sensors` (EM,
  cone-beam CT; :class:`BreathingModel`) into a :class:`Scenario` (``observation`` for the
  registration, ``truth`` hidden for scoring); :func:`scenario_config` gives the presets.
- :class:`~bronchonav.registration.samples.EMSampleAccumulator` — EM samples kept one per grid
  cell, streaming (the registration node) or in bulk (:func:`register_em`).
- :class:`~bronchonav.registration.tracker.RegistrationTracker` — a registration refitted from
  the pose in use as samples keep coming, keeping it when a refit fails (the registration node).
- Evaluation: :func:`run_trials`, :func:`summarize`, :func:`ground_truth_for`.
"""

from bronchonav.geometry import apply, invert  # re-exported: the registration API maps points
from bronchonav.sensors.breathing import BreathingModel
from bronchonav.registration.evaluate import ground_truth_for, run_trials, summarize
from bronchonav.registration.register import (RegistrationConfig, register_cbct, register_em,
                                              register_em_extended)
from bronchonav.registration.result import RegistrationResult
from bronchonav.registration.simulate import (SCENARIOS, GroundTruth, Observation, Scenario,
                                              SimulationConfig, scenario_config, simulate_scenario)
from bronchonav.geometry.transforms import random_transform
from bronchonav.registration.twin import Twin

__all__ = [
    "BreathingModel", "GroundTruth", "Observation", "RegistrationConfig", "RegistrationResult",
    "SCENARIOS", "Scenario", "SimulationConfig", "Twin", "apply", "ground_truth_for", "invert",
    "random_transform", "register_cbct", "register_em", "register_em_extended", "run_trials",
    "scenario_config", "simulate_scenario", "summarize",
]
