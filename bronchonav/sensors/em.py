"""A 6-DOF electromagnetic (EM) tip sensor in a breathing patient.

The sensor sits at the catheter tip. At breathing phase ``phase`` it reports
``T_patient_sensor``: the tip pose of the (static-CT) catheter state carried by the breathing
motion (:meth:`EMSensor.moved_tip`), expressed in the ``patient`` frame (the field generator's)
through the hidden ``T_ct_patient``, with

- Gaussian position noise, ``noise_m`` per axis (m);
- Gaussian orientation noise: a rotation vector with ``angle_noise_rad`` per component, applied
  on the left (in the patient frame);
- optionally gross outliers (field distortion): a fraction ``outlier_fraction`` of the readings
  jumps by a random offset of length within ``outlier_distance`` (m).

:meth:`EMSensor.read` is one reading (a node streaming at a rate; :meth:`EMSensor.read_state`
from a catheter state); :meth:`EMSensor.sweep` reads many positions and sensor axes at once (a
recorded sweep), with the same noise model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from bronchonav.geometry.transforms import apply, invert, rotate
from bronchonav.sensors.breathing import BreathingModel
from bronchonav.sensors.noise import as_generator, gross_outliers


@dataclass(frozen=True)
class EMReading:
    """One EM sample.

    Attributes
    ----------
    T_patient_sensor : ndarray, shape (4, 4)
        Measured sensor pose in the patient frame (m).
    t : float
        Time of the sample (s).
    phase : float
        Breathing phase of the sample (cycles, in [0, 1)).
    outlier : bool
        Whether the reading is a gross outlier (hidden truth, for evaluation only).
    """

    T_patient_sensor: np.ndarray
    t: float
    phase: float
    outlier: bool = False

    @property
    def p_patient(self) -> np.ndarray:
        """Measured sensor position, patient frame (m)."""
        return self.T_patient_sensor[:3, 3]


@dataclass(frozen=True)
class EMSweep:
    """Many EM samples of a sweep (sensor positions and axes only).

    Attributes
    ----------
    positions_patient : ndarray, shape (N, 3)
        Measured sensor positions, patient frame (m).
    directions_patient : ndarray, shape (N, 3)
        Measured unit sensor axes (the tip's z axis), patient frame.
    outliers : ndarray of bool, shape (N,)
        Which samples are gross outliers (hidden truth, for evaluation only).
    """

    positions_patient: np.ndarray
    directions_patient: np.ndarray
    outliers: np.ndarray


class EMSensor:
    """An EM tip sensor (see the module docstring).

    Parameters
    ----------
    T_ct_patient : ndarray, shape (4, 4)
        The patient frame in the CT frame (hidden from registration), a rigid transform.
    breathing : BreathingModel or None
        Respiratory motion (CT frame); ``None`` for a still patient.
    noise_m : float
        Position noise, standard deviation per axis (m).
    angle_noise_rad : float
        Orientation noise, standard deviation of each rotation-vector component (rad).
    outlier_fraction : float
        Fraction of readings replaced by gross outliers (0 for none).
    outlier_distance : (float, float)
        Range of the outliers' offset lengths (m).
    seed : int, sequence of int or numpy.random.Generator
        Source of the noise: a seed, or a generator shared with a simulation (the sensor then
        draws from it in call order). The same seed and the same calls give the same readings.

    Examples
    --------
    >>> import numpy as np
    >>> sensor = EMSensor(np.eye(4), None, noise_m=0.0, angle_noise_rad=0.0, seed=0)
    >>> T = np.eye(4); T[:3, 3] = [0.01, 0.02, 0.03]
    >>> sensor.read(T, 0.0).p_patient.tolist()
    [0.01, 0.02, 0.03]
    """

    def __init__(self, T_ct_patient: np.ndarray, breathing: BreathingModel | None = None,
                 noise_m: float = 1e-3, angle_noise_rad: float = 0.01,
                 outlier_fraction: float = 0.0,
                 outlier_distance: tuple[float, float] = (0.01, 0.05),
                 seed: int | np.random.Generator = 0) -> None:
        T = np.asarray(T_ct_patient, dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError("T_ct_patient must be a finite 4x4 transform")
        if not (noise_m >= 0 and angle_noise_rad >= 0 and 0 <= outlier_fraction <= 1):
            raise ValueError("EM noise levels must be finite and >= 0, the outlier fraction in [0, 1]")
        self.T_ct_patient = T
        self.T_patient_ct = invert(T)
        self.breathing = breathing
        self.noise_m = float(noise_m)
        self.angle_noise_rad = float(angle_noise_rad)
        self.outlier_fraction = float(outlier_fraction)
        self.outlier_distance = (float(outlier_distance[0]), float(outlier_distance[1]))
        self._rng = as_generator(seed)

    def _moving(self) -> bool:
        return self.breathing is not None and self.breathing.amplitude > 0

    def phase_at(self, t: float) -> float:
        """Breathing phase (cycles) at time ``t`` (s); 0 for a still patient."""
        return float(self.breathing.phase_at(t)) if self.breathing is not None else 0.0

    def moved_tip(self, T_ct_tip: np.ndarray, phase: float) -> np.ndarray:
        """The true tip pose at breathing ``phase``: ``T_ct_tip`` (CT frame, phase 0) carried by
        the breathing deformation (:meth:`BreathingModel.carry`)."""
        T = np.asarray(T_ct_tip, dtype=float)
        return T.copy() if self.breathing is None else self.breathing.carry(T, phase)

    def read_state(self, state, t: float) -> EMReading:
        """The reading for a :class:`~bronchonav.catheter.state.CatheterState` (its
        ``tip_pose``, CT frame at phase 0) at time ``t`` (s)."""
        return self.read(state.tip_pose, t)

    def read(self, T_ct_tip: np.ndarray, t: float) -> EMReading:
        """The reading for a tip pose ``T_ct_tip`` (4×4, CT frame, breathing phase 0) at time
        ``t`` (s)."""
        return self.read_at_phase(T_ct_tip, self.phase_at(t), t)

    def read_at_phase(self, T_ct_tip: np.ndarray, phase: float, t: float = 0.0) -> EMReading:
        """The reading for a tip pose ``T_ct_tip`` (CT frame, phase 0) at breathing ``phase``
        (cycles), e.g. a respiratory-gated capture; ``t`` (s) is only recorded.

        Draws, in order: the orientation noise, the position noise, the outlier (when
        ``outlier_fraction`` > 0) — the order the camera scenario drew its EM pose noise in."""
        T = self.T_patient_ct @ self.moved_tip(T_ct_tip, phase)
        turn = Rotation.from_rotvec(self._rng.normal(0.0, self.angle_noise_rad, 3)).as_matrix()
        T[:3, 3] += self._rng.normal(0.0, self.noise_m, 3)
        T[:3, :3] = turn @ T[:3, :3]
        outlier = False
        if self.outlier_fraction > 0:
            mask, jump = gross_outliers(1, self.outlier_fraction, self.outlier_distance, self._rng)
            T[:3, 3] += jump[0]
            outlier = bool(mask[0])
        return EMReading(T, float(t), float(phase), outlier)

    def sweep(self, p_ct: np.ndarray, axes_ct: np.ndarray, phases: np.ndarray) -> EMSweep:
        """Readings of a sweep: the sensor at ``p_ct`` (N, 3; CT frame, phase 0, m) with unit
        axes ``axes_ct`` (N, 3), each read at its breathing phase ``phases`` (N,; cycles).

        Draws, in order: the position noise of all samples, their orientation noise, their
        outliers. (The model is that of :meth:`read_at_phase`; only the order of the draws in
        the stream differs, kept as the scenarios drew them before the sensors were factored
        out, so seeded figures did not move.)
        """
        p = np.atleast_2d(np.asarray(p_ct, dtype=float))
        axes = np.atleast_2d(np.asarray(axes_ct, dtype=float))
        phases = np.asarray(phases, dtype=float)
        n = len(p)
        if self._moving():
            axes = self.breathing.deform_directions(p, axes, phases)
            p = self.breathing.deform(p, phases)
        positions = apply(self.T_patient_ct, p) + self._rng.normal(0.0, self.noise_m, (n, 3))
        turns = Rotation.from_rotvec(self._rng.normal(0.0, self.angle_noise_rad, (n, 3)))
        directions = turns.apply(rotate(self.T_patient_ct, axes))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        outliers, jumps = gross_outliers(n, self.outlier_fraction, self.outlier_distance, self._rng)
        return EMSweep(positions + jumps, directions, outliers)
