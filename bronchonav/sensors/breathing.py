"""A smooth respiratory deformation of the lungs over the breathing cycle.

Displacement (CT frame, m) of a point ``p = (x, y, z)`` at breathing phase ``phase`` (cycles)::

    d(p, phase) = A * s(phase) * w(p) * (lateral * (x - x_c) / half_width, -ap, -1)
    s(phase)    = (1 - cos(2 pi phase)) / 2                                    in [0, 1]
    w(p)        = apex + (1 - apex) * smoothstep((z_top - z) / (z_top - z_base))
                                    * smoothstep(|p - hilum| / tether)

so the lung base (``z_base``) moves ``A`` caudally (-z, LPS) at the peak of the cycle, while the
trachea and the hilum (the main carina, where the mediastinum tethers the central airways) move
only ``apex * A``; the motion grows caudally and with the distance from the hilum, with a
smaller anterior (-y) component and a lateral expansion about ``x_c``. At phase 0 the lungs are
where the CT shows them. The field is smooth (C1), so it moves centerlines, surfaces and nodules
consistently, and it is not rigid: no single rigid transform undoes it everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from bronchonav.airway.tree import AirwayTree
from bronchonav.geometry.transforms import make_transform


@dataclass(frozen=True)
class BreathingModel:
    """Respiratory motion of the airway tree, in the CT frame.

    Attributes
    ----------
    amplitude : float
        Head-foot displacement of the lung base at the peak of the cycle (m); 0 disables motion.
    z_top, z_base : float
        Heights (CT z, m) of the least-moving top (trachea) and the most-moving base.
    x_center, half_width : float
        Centre and half width (m) of the lungs along x, for the lateral expansion.
    hilum : tuple of float
        Position (CT frame, m) of the tethered hilum (the main carina).
    tether : float
        Distance from the hilum (m) beyond which the tethering no longer reduces the motion.
    apex : float
        Weight of the motion at ``z_top`` relative to the base (dimensionless).
    ap : float
        Anterior (-y) motion as a fraction of the head-foot motion.
    lateral : float
        Lateral expansion at ``x_center +- half_width`` as a fraction of the head-foot motion.
    period : float
        Breathing period (s), for :meth:`phase_at`.
    phase_offset : float
        Phase (cycles) at time 0.
    """

    amplitude: float
    z_top: float
    z_base: float
    x_center: float = 0.0
    half_width: float = 0.1
    hilum: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tether: float = 0.08
    apex: float = 0.2
    ap: float = 0.25
    lateral: float = 0.1
    period: float = 4.0
    phase_offset: float = 0.0

    @classmethod
    def for_tree(cls, tree: AirwayTree, amplitude: float, **kwargs) -> "BreathingModel":
        """A model spanning ``tree``'s bounding box (CT frame): top of trachea to lung base,
        tethered at the main carina (the trachea's distal end)."""
        lo, hi = tree.bounds()
        return cls(amplitude=amplitude, z_top=float(hi[2]), z_base=float(lo[2]),
                   x_center=float((lo[0] + hi[0]) / 2), half_width=float((hi[0] - lo[0]) / 2),
                   hilum=tuple(float(v) for v in tree.trachea.end), **kwargs)

    def phase_at(self, t: np.ndarray | float) -> np.ndarray:
        """Breathing phase (cycles, in [0, 1)) at time ``t`` (s)."""
        return np.mod(np.asarray(t, dtype=float) / self.period + self.phase_offset, 1.0)

    @staticmethod
    def cycle(phase: np.ndarray | float) -> np.ndarray:
        """Normalised inspiration depth ``(1 - cos 2 pi phase) / 2`` in [0, 1]."""
        return (1.0 - np.cos(2.0 * np.pi * np.asarray(phase, dtype=float))) / 2.0

    @staticmethod
    def _smoothstep(u: np.ndarray) -> np.ndarray:
        u = np.clip(u, 0.0, 1.0)
        return u * u * (3.0 - 2.0 * u)

    def weight(self, points_ct: np.ndarray) -> np.ndarray:
        """Spatial weight (N,) in [apex, 1] of CT-frame points (N, 3): larger caudally and away
        from the hilum."""
        p = np.atleast_2d(np.asarray(points_ct, dtype=float))
        caudal = self._smoothstep((self.z_top - p[:, 2]) / (self.z_top - self.z_base))
        free = self._smoothstep(np.linalg.norm(p - np.asarray(self.hilum), axis=1) / self.tether)
        return self.apex + (1.0 - self.apex) * caudal * free

    def displacement(self, points_ct: np.ndarray, phase: np.ndarray | float) -> np.ndarray:
        """Displacement (m) of CT-frame points (N, 3) at ``phase`` (scalar or (N,) cycles)."""
        p = np.atleast_2d(np.asarray(points_ct, dtype=float))
        mag = self.amplitude * self.cycle(phase) * self.weight(p)
        direction = np.column_stack([self.lateral * (p[:, 0] - self.x_center) / self.half_width,
                                     np.full(len(p), -self.ap), np.full(len(p), -1.0)])
        return mag[:, None] * direction

    def deform(self, points_ct: np.ndarray, phase: np.ndarray | float) -> np.ndarray:
        """Positions (N, 3) (m, CT frame) of the points at ``phase``."""
        p = np.atleast_2d(np.asarray(points_ct, dtype=float))
        return p + self.displacement(p, phase)

    def deform_directions(self, points_ct: np.ndarray, directions: np.ndarray,
                          phase: np.ndarray | float, h: float = 1e-4) -> np.ndarray:
        """Unit directions (N, 3) of curve tangents ``directions`` at ``points_ct`` after deformation."""
        p = np.atleast_2d(np.asarray(points_ct, dtype=float))
        d = np.atleast_2d(np.asarray(directions, dtype=float))
        moved = self.deform(p + h * d, phase) - self.deform(p, phase)
        return moved / np.linalg.norm(moved, axis=1, keepdims=True)

    def carry(self, T_ct: np.ndarray, phase: float) -> np.ndarray:
        """A pose (4×4, CT frame at phase 0) carried by the deformation to ``phase`` (cycles):
        the origin displaced, the frame turned by the smallest rotation that takes its z axis
        (a tip's or a camera's forward axis) to the deformed axis. Unchanged when
        ``amplitude`` is 0."""
        T = np.array(T_ct, dtype=float)
        if self.amplitude == 0:
            return T
        eye, fwd = T[:3, 3], T[:3, 2]
        new_fwd = self.deform_directions(eye[None], fwd[None], phase)[0]
        axis = np.cross(fwd, new_fwd)
        angle = np.arctan2(np.linalg.norm(axis), fwd @ new_fwd)
        turn = Rotation.from_rotvec(axis / max(np.linalg.norm(axis), 1e-15) * angle).as_matrix()
        return make_transform(turn @ T[:3, :3], self.deform(eye, phase)[0])
