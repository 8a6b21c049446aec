"""An intra-operative cone-beam CT: a partial, noisy airway lumen surface around the target.

A breath-hold scan at one breathing phase sees the lumen wall within a field of view around the
target (widened for targets far from the airways), resolves only airways wider than a minimum
radius, loses patches of it (segmentation gaps), and reports a subsample of the rest in the
``patient`` frame (the scanner registered to the EM field generator) with Gaussian noise and a
few gross outliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bronchonav.errors import InputError
from bronchonav.geometry.transforms import apply, invert
from bronchonav.sensors.breathing import BreathingModel
from bronchonav.sensors.noise import as_generator, gross_outliers


@dataclass(frozen=True)
class ConeBeamCTConfig:
    """Parameters of the simulated cone-beam CT (SI units).

    Attributes
    ----------
    radius : float
        Field of view: the surface within this distance of the target (m), widened by 25 % steps
        until it holds ``min_points`` resolved points (at most 100 mm).
    min_points : int
        Resolved surface points the field of view must hold.
    min_airway_radius : float
        Airways narrower than this (lumen radius, m) are not resolved.
    keep : float
        Fraction of the surface kept; the rest is lost in patches of ``patch_radius``.
    patch_radius : float
        Radius (m) of each lost patch.
    n_points : int
        Number of surface points reported (at most).
    noise_m : float
        Position noise per axis (m).
    outlier_fraction : float
        Fraction of gross outliers.
    outlier_distance : (float, float)
        Range of the outliers' offset lengths (m).
    """

    radius: float = 0.04
    min_points: int = 300
    min_airway_radius: float = 1e-3
    keep: float = 0.7
    patch_radius: float = 8e-3
    n_points: int = 2000
    noise_m: float = 5e-4
    outlier_fraction: float = 0.01
    outlier_distance: tuple[float, float] = (0.01, 0.05)


class ConeBeamCT:
    """A cone-beam CT of the true lumen surface (see the module docstring).

    Parameters
    ----------
    surface_ct : ndarray, shape (K, 3)
        The true lumen surface points (CT frame at breathing phase 0, m).
    surface_airway_radius : ndarray, shape (K,)
        Lumen radius (m) of the airway each surface point belongs to.
    T_ct_patient : ndarray, shape (4, 4)
        The patient frame in the CT frame (hidden from registration).
    breathing : BreathingModel or None
        Respiratory motion (CT frame); ``None`` for a still patient.
    config : ConeBeamCTConfig, optional
    seed : int, sequence of int or numpy.random.Generator
        Source of the randomness (patches, subsample, noise, outliers).

    Examples
    --------
    A still patient, no noise: the scan reports surface points, in the patient frame.

    >>> import numpy as np
    >>> ring = np.array([[np.cos(a), np.sin(a), z] for a in np.linspace(0, 6.2, 40)
    ...                  for z in np.linspace(0, 0.04, 20)]) * [0.005, 0.005, 1]
    >>> T = np.eye(4); T[:3, 3] = [0.1, 0, 0]
    >>> scanner = ConeBeamCT(ring, np.full(len(ring), 0.005), T, None,
    ...                      ConeBeamCTConfig(keep=1.0, n_points=50, noise_m=0.0,
    ...                                       outlier_fraction=0.0))
    >>> p = scanner.scan(np.array([0.0, 0.0, 0.02]), phase=0.0)
    >>> p.shape, bool(np.allclose(np.hypot(p[:, 0] + 0.1, p[:, 1]), 0.005))
    ((50, 3), True)
    """

    def __init__(self, surface_ct: np.ndarray, surface_airway_radius: np.ndarray,
                 T_ct_patient: np.ndarray, breathing: BreathingModel | None = None,
                 config: ConeBeamCTConfig | None = None,
                 seed: int | np.random.Generator = 0) -> None:
        self.config = config or ConeBeamCTConfig()
        surface = np.asarray(surface_ct, dtype=float).reshape(-1, 3)
        radius = np.asarray(surface_airway_radius, dtype=float)
        if radius.shape != (len(surface),):
            raise ValueError("one airway radius per surface point is needed")
        self.resolved_ct = surface[radius >= self.config.min_airway_radius]
        """Surface points (CT frame, phase 0, m) of the airways the scanner resolves."""
        self.T_patient_ct = invert(np.asarray(T_ct_patient, dtype=float))
        self.breathing = breathing
        self._rng = as_generator(seed)

    def field_of_view(self, center_ct: np.ndarray) -> np.ndarray:
        """The resolved surface points (CT frame, phase 0) in the field of view around
        ``center_ct``; raises :class:`InputError` when none is within 100 mm."""
        cfg = self.config
        dist = np.linalg.norm(self.resolved_ct - center_ct, axis=1)
        radius = cfg.radius
        while np.count_nonzero(dist <= radius) < cfg.min_points:
            if radius > 0.1:
                raise InputError("no resolvable airway surface within 100 mm of the target")
            radius *= 1.25
        return self.resolved_ct[dist <= radius]

    def scan(self, center_ct: np.ndarray, phase: float) -> np.ndarray:
        """One breath-hold scan at breathing ``phase`` (cycles) centred on ``center_ct`` (CT frame,
        m): surface points (M, 3) in the patient frame (m)."""
        cfg, rng = self.config, self._rng
        pts = self.field_of_view(np.asarray(center_ct, dtype=float))
        keep = np.ones(len(pts), dtype=bool)
        while keep.mean() > cfg.keep:
            centre = pts[rng.integers(len(pts))]
            keep &= np.linalg.norm(pts - centre, axis=1) > cfg.patch_radius
        pts = pts[keep]
        pts = pts[rng.choice(len(pts), min(cfg.n_points, len(pts)), replace=False)]
        if self.breathing is not None:
            pts = self.breathing.deform(pts, phase)
        m = len(pts)
        out = apply(self.T_patient_ct, pts) + rng.normal(0.0, cfg.noise_m, (m, 3))
        return out + gross_outliers(m, cfg.outlier_fraction, cfg.outlier_distance, rng)[1]
