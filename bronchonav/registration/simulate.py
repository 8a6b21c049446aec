"""Simulated intra-operative data: EM tip-sensor sweeps and a cone-beam CT surface, under breathing.

A :class:`Scenario` keeps what the registration may see (:class:`Observation`: samples in the
patient frame and the planned target in the twin's CT frame) apart from the hidden truth
(:class:`GroundTruth`: the patient→CT transform, the breathing model, the sample phases and the
target's true position), so that an evaluation can never feed the truth to the registration.

The patient is simulated from a ground-truth airway (a :class:`Twin` built from the phantom's
true tree and lumen mesh) and the sensors of :mod:`bronchonav.sensors`, composed: the sensor
positions of the EM sweeps are drawn along its centerlines (until the catheter simulation
supplies them) in the central airways (generation <= ``central_generation``) and in the airways
within ``local_radius`` of the target, offset inside the lumen, each read at a random breathing
phase by the :class:`~bronchonav.sensors.EMSensor` (breathing, the unknown rigid transform,
noise, a few gross outliers); a scenario with ``cbct_points > 0`` adds a breath-hold
:class:`~bronchonav.sensors.ConeBeamCT` scan of the lumen surface near the target. The camera
scenario (:mod:`bronchonav.imaging.camera_registration`) adds the
:class:`~bronchonav.sensors.TipCameraSensor` to the ``breathing`` scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bronchonav.airway.tree import Nodule
from bronchonav.errors import InputError
from bronchonav.geometry import apply, invert, random_perpendicular
from bronchonav.geometry.transforms import random_transform
from bronchonav.registration.twin import Twin
from bronchonav.sensors import BreathingModel, ConeBeamCT, ConeBeamCTConfig, EMSensor

SCENARIOS = ("rigid", "breathing", "cbct")
"""Scenario presets (:func:`scenario_config`): EM sweep without motion, EM sweep under
breathing, EM sweep and cone-beam CT surface under breathing."""


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of the simulated intra-operative data (SI units).

    Attributes
    ----------
    max_translation, max_rotation : float
        Bounds of the unknown patient→CT transform: each translation component within
        ``±max_translation`` (m), each x-y-z Euler angle within ``±max_rotation`` (rad).
    amplitude : float
        Breathing: head-foot motion of the lung base (m); 0 for no motion.
    eval_phase : float or None
        Breathing phase (cycles) at which the target error is evaluated; ``None`` draws it at
        random. The default 0.25 is mid-inspiration, the time-averaged position over the cycle.
    noise_std : float
        EM position noise, per axis (m).
    outlier_fraction : float
        Fraction of EM samples replaced by gross outliers.
    outlier_distance : (float, float)
        Range of the outliers' offsets (m).
    n_central, central_generation : int
        Number of central-sweep samples and the deepest generation swept.
    n_local : int
        Number of samples of the local sweep near the target.
    local_radius : float
        The local sweep covers centerlines within this distance of the target (m), widened until
        it holds enough airway when the target is far from the airways.
    local_min_radius : float
        Narrowest airway lumen radius the sensor enters (m).
    lumen_offset : float
        The sensor lies up to this fraction of the lumen radius off the centerline.
    direction_noise : float
        EM orientation noise: std of each rotation-vector component (rad).
    cbct_radius : float
        The cone-beam CT surface covers airways within this distance of the target (m), widened
        for targets far from the airways.
    cbct_min_airway_radius : float
        Airways narrower than this (m) are not resolved by the cone-beam CT.
    cbct_keep : float
        Fraction of that surface kept (the rest lost in patches, as by segmentation gaps).
    cbct_points, cbct_noise_std, cbct_outlier_fraction
        Number of surface points (0: no cone-beam CT), their noise per axis (m) and fraction of
        outliers.
    """

    max_translation: float = 0.05
    max_rotation: float = float(np.radians(30.0))
    amplitude: float = 0.0
    eval_phase: float | None = 0.25
    noise_std: float = 1e-3
    outlier_fraction: float = 0.02
    outlier_distance: tuple[float, float] = (0.01, 0.05)
    n_central: int = 600
    central_generation: int = 3
    n_local: int = 200
    local_radius: float = 0.03
    local_min_radius: float = 1e-3
    lumen_offset: float = 0.3
    direction_noise: float = float(np.radians(3.0))
    cbct_radius: float = 0.04
    cbct_min_airway_radius: float = 1e-3
    cbct_keep: float = 0.7
    cbct_points: int = 0
    cbct_noise_std: float = 5e-4
    cbct_outlier_fraction: float = 0.01


def scenario_config(kind: str, **overrides) -> SimulationConfig:
    """Default configuration of a scenario kind (see :data:`SCENARIOS`), with overrides.

    ``rigid``: no breathing. ``breathing``: 10 mm lower-lobe amplitude, evaluated at
    mid-inspiration. ``cbct``: 10 mm amplitude, a cone-beam CT of 2000 surface points taken and
    target evaluated at the same (random) breath-hold phase.
    """
    if kind not in SCENARIOS:
        raise InputError(f"unknown scenario {kind!r} (choose from {', '.join(SCENARIOS)})")
    base = {"rigid": {}, "breathing": {"amplitude": 0.010},
            "cbct": {"amplitude": 0.010, "eval_phase": None, "cbct_points": 2000}}[kind]
    return replace(SimulationConfig(**base), **overrides)


@dataclass
class Observation:
    """What the registration may use.

    Attributes
    ----------
    em_positions : ndarray, shape (N, 3)
        EM sensor positions in the patient frame (m).
    em_directions : ndarray, shape (N, 3)
        Unit sensor directions in the patient frame.
    em_local : ndarray of bool, shape (N,)
        Which samples belong to the local sweep near the target (the rest to the survey of the
        central airways); the navigation system knows this from when each was recorded.
    target_ct : ndarray, shape (3,)
        The planned target in the twin's CT frame (m), as the map gives it.
    cbct_points : ndarray, shape (M, 3) or None
        Cone-beam CT airway surface points in the patient frame (m).
    """

    em_positions: np.ndarray
    em_directions: np.ndarray
    em_local: np.ndarray
    target_ct: np.ndarray
    cbct_points: np.ndarray | None = None


@dataclass
class GroundTruth:
    """The hidden truth of a scenario (never given to the registration).

    Attributes
    ----------
    T_ct_patient : ndarray, shape (4, 4)
        True rigid transform patient → CT (the lungs at breathing phase 0, as in the CT).
    breathing : BreathingModel
        The deformation applied (CT frame).
    target_id : str
        Id of the target nodule.
    target_ct : ndarray, shape (3,)
        True target centre in the CT frame (m).
    eval_phase : float
        Breathing phase (cycles) of the target error evaluation.
    target_patient : ndarray, shape (3,)
        True target centre at ``eval_phase`` in the patient frame (m).
    em_phases : ndarray, shape (N,)
        Breathing phase of each EM sample (cycles).
    em_outliers : ndarray of bool, shape (N,)
        Which EM samples are gross outliers.
    """

    T_ct_patient: np.ndarray
    breathing: BreathingModel
    target_id: str
    target_ct: np.ndarray
    eval_phase: float
    target_patient: np.ndarray
    em_phases: np.ndarray
    em_outliers: np.ndarray

    def tre(self, T_ct_patient: np.ndarray, phase: float | None = None) -> float:
        """Target registration error (m) of an estimated T_ct_patient.

        The target's true patient-frame position at ``phase`` (default: the evaluation phase),
        mapped into the CT frame by the estimate, against its true CT position.
        """
        if phase is None:
            target_patient = self.target_patient
        else:
            moved = self.breathing.deform(self.target_ct, phase)[0]
            target_patient = apply(invert(self.T_ct_patient), moved)
        return float(np.linalg.norm(apply(T_ct_patient, target_patient) - self.target_ct))

    def tre_worst_phase(self, T_ct_patient: np.ndarray) -> float:
        """Largest target error (m) over the breathing cycle.

        The target moves along a straight line with the inspiration depth, so the error is
        largest at full expiration (phase 0) or full inspiration (phase 0.5).
        """
        return max(self.tre(T_ct_patient, 0.0), self.tre(T_ct_patient, 0.5))


@dataclass
class Scenario:
    """A simulated registration problem: ``observation`` for the registration, ``truth`` to score it.

    ``kind`` is the preset's name, a label only: what was sensed is in ``observation``."""

    kind: str
    observation: Observation
    truth: GroundTruth


def _em_indices(gt: Twin, target_ct: np.ndarray, cfg: SimulationConfig,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ground-truth centerline points visited by the central and the local sweeps,
    and which of them are local."""
    central = np.flatnonzero(gt.generations <= cfg.central_generation)
    reachable = gt.radii >= cfg.local_min_radius
    dist = np.linalg.norm(gt.points - target_ct, axis=1)
    radius = cfg.local_radius
    while np.count_nonzero(reachable & (dist <= radius)) < 40:
        if radius > 0.15:
            raise InputError("no airway reachable by the sensor within 150 mm of the target")
        radius *= 1.25
    local = np.flatnonzero(reachable & (dist <= radius))
    idx = np.concatenate([rng.choice(central, cfg.n_central), rng.choice(local, cfg.n_local)])
    return idx, np.arange(len(idx)) >= cfg.n_central


def simulate_scenario(kind: str, ground_truth: Twin, nodule: Nodule, target_ct: np.ndarray,
                      rng: np.random.Generator, config: SimulationConfig | None = None) -> Scenario:
    """Simulate one registration problem.

    Parameters
    ----------
    kind : str
        One of :data:`SCENARIOS`; chooses the defaults of :func:`scenario_config` and labels
        the scenario.
    ground_truth : Twin
        The patient's true airways (CT frame at rest): tree and lumen surface.
    nodule : Nodule
        The true target nodule (CT frame).
    target_ct : ndarray, shape (3,)
        The planned target as the twin's map gives it (CT frame, m); passed on to the
        observation unchanged.
    rng : numpy.random.Generator
        Source of all randomness (transform, phases, noise, outliers).
    config : SimulationConfig, optional
        Overrides the scenario's default configuration.

    Returns
    -------
    Scenario
    """
    cfg = config or scenario_config(kind)
    if kind not in SCENARIOS:
        raise InputError(f"unknown scenario {kind!r} (choose from {', '.join(SCENARIOS)})")
    T_patient_ct = random_transform(rng, cfg.max_translation, cfg.max_rotation)
    T_ct_patient = invert(T_patient_ct)
    breathing = BreathingModel.for_tree(ground_truth.tree, cfg.amplitude)
    eval_phase = float(rng.random()) if cfg.eval_phase is None else float(cfg.eval_phase)

    idx, is_local = _em_indices(ground_truth, nodule.center, cfg, rng)
    n = len(idx)
    tangents = ground_truth.tangents[idx]
    offset = random_perpendicular(tangents, rng) * (rng.uniform(0, cfg.lumen_offset, n)
                                              * ground_truth.radii[idx])[:, None]
    phases = rng.random(n)
    em = EMSensor(T_ct_patient, breathing, cfg.noise_std, cfg.direction_noise,
                  cfg.outlier_fraction, cfg.outlier_distance, seed=rng)
    sweep = em.sweep(ground_truth.points[idx] + offset, tangents, phases)
    order = rng.permutation(n)

    cbct = None
    if cfg.cbct_points > 0:
        surface = np.asarray(ground_truth.surface.points)
        airway_radius = ground_truth.radii[ground_truth.kdtree.query(surface)[1]]
        scanner = ConeBeamCT(surface, airway_radius, T_ct_patient, breathing, ConeBeamCTConfig(
            radius=cfg.cbct_radius, min_airway_radius=cfg.cbct_min_airway_radius,
            keep=cfg.cbct_keep, n_points=cfg.cbct_points, noise_m=cfg.cbct_noise_std,
            outlier_fraction=cfg.cbct_outlier_fraction, outlier_distance=cfg.outlier_distance),
            seed=rng)
        cbct = scanner.scan(nodule.center, eval_phase)

    target_patient = apply(T_patient_ct, breathing.deform(nodule.center, eval_phase)[0])
    observation = Observation(sweep.positions_patient[order], sweep.directions_patient[order],
                              is_local[order], np.asarray(target_ct, dtype=float), cbct)
    truth = GroundTruth(T_ct_patient, breathing, nodule.id, nodule.center.copy(), eval_phase,
                        target_patient, phases[order], sweep.outliers[order])
    return Scenario(kind, observation, truth)
