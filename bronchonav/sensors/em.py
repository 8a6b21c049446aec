"""A 6-DOF electromagnetic (EM) tip sensor in a breathing patient.

The sensor sits at the catheter tip. At time ``t`` it reports ``T_patient_sensor``: the tip pose
of the (static-CT) catheter state displaced by the breathing motion at the tip, expressed in the
``patient`` frame (the field generator's) through the hidden ``T_ct_patient``, with Gaussian
position noise (per axis) and a Gaussian rotation-vector orientation noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from bronchonav.sensors.breathing import BreathingModel


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
        Breathing phase at ``t`` (cycles, in [0, 1)).
    """

    T_patient_sensor: np.ndarray
    t: float
    phase: float

    @property
    def p_patient(self) -> np.ndarray:
        """Measured sensor position, patient frame (m)."""
        return self.T_patient_sensor[:3, 3]


class EMSensor:
    """An EM tip sensor (see the module docstring).

    Parameters
    ----------
    T_ct_patient : ndarray, shape (4, 4)
        The patient frame in the CT frame (hidden from registration).
    breathing : BreathingModel or None
        Respiratory motion (CT frame); ``None`` for a still patient.
    noise_m : float
        Position noise, standard deviation per axis (m).
    angle_noise_rad : float
        Orientation noise, standard deviation of each rotation-vector component (rad).
    seed : int
        Seed of the noise; the same seed and the same calls give the same readings.

    Examples
    --------
    >>> import numpy as np
    >>> sensor = EMSensor(np.eye(4), None, noise_m=0.0, angle_noise_rad=0.0, seed=0)
    >>> T = np.eye(4); T[:3, 3] = [0.01, 0.02, 0.03]
    >>> sensor.read(T, 0.0).p_patient.tolist()
    [0.01, 0.02, 0.03]
    """

    def __init__(self, T_ct_patient: np.ndarray, breathing: BreathingModel | None = None,
                 noise_m: float = 1e-3, angle_noise_rad: float = 0.01, seed: int = 0) -> None:
        T = np.asarray(T_ct_patient, dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError("T_ct_patient must be a finite 4x4 transform")
        if not (noise_m >= 0 and angle_noise_rad >= 0):
            raise ValueError("EM noise levels must be finite and >= 0")
        self.T_ct_patient = T
        self.T_patient_ct = np.linalg.inv(T)
        self.breathing = breathing
        self.noise_m = float(noise_m)
        self.angle_noise_rad = float(angle_noise_rad)
        self._rng = np.random.default_rng(seed)

    def moved_tip(self, T_ct_tip: np.ndarray, t: float) -> np.ndarray:
        """The true tip pose at time ``t``: ``T_ct_tip`` displaced by breathing (CT frame)."""
        T = np.array(T_ct_tip, dtype=float)
        if self.breathing is not None and self.breathing.amplitude > 0:
            phase = self.breathing.phase_at(t)
            T[:3, 3] = T[:3, 3] + self.breathing.displacement(T[:3, 3], phase)[0]
        return T

    def read(self, T_ct_tip: np.ndarray, t: float) -> EMReading:
        """The reading for a tip pose ``T_ct_tip`` (4×4, CT frame, breathing phase 0) at ``t`` (s)."""
        T = self.T_patient_ct @ self.moved_tip(T_ct_tip, t)
        if self.noise_m > 0:
            T[:3, 3] += self._rng.normal(0.0, self.noise_m, 3)
        if self.angle_noise_rad > 0:
            T[:3, :3] = Rotation.from_rotvec(
                self._rng.normal(0.0, self.angle_noise_rad, 3)).as_matrix() @ T[:3, :3]
        phase = 0.0 if self.breathing is None else float(self.breathing.phase_at(t))
        return EMReading(T, float(t), phase)
