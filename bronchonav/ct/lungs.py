"""Analytic lung and lobe geometry of the synthetic phantom.

Frames and units
----------------
Everything is in the CT frame (``ct``): LPS patient frame (+x patient left, +y posterior,
+z head), in metres. The phantom's anatomy is laid out around the main carina, which sits at the
origin; the right lung is at negative x, the left lung at positive x.

Model
-----
Each lung is an ellipsoid, cut medially by a mediastinal slab (``|x| < mediastinum_half_width``),
hollowed by the heart (an ellipsoid in the anterior-inferior mediastinum, mostly on the left,
giving the left lung its cardiac notch) and cut from below by a dome-shaped diaphragm (higher on
the right). The lungs are split into five lobes by fissure planes: an oblique fissure on each side
(running from posterior-superior to anterior-inferior; below/behind it is the lower lobe) and the
horizontal fissure on the right (separating the upper from the middle lobe).

Distances to the pleura (the lung boundary) are computed once on a grid by an exact Euclidean
distance transform and interpolated trilinearly; they are accurate to about half the grid step
(:attr:`LungModel.distance_grid_step_m`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from bronchonav.airway.tree import LOBES
from bronchonav.errors import InputError

RIGHT_LUNG = 1
"""Lung label of the right lung."""
LEFT_LUNG = 2
"""Lung label of the left lung."""


@dataclass(frozen=True)
class LungModel:
    """Two analytic lungs with five lobes, in the CT frame (m).

    All attributes are lengths in metres (CT frame) or slopes (dimensionless); the defaults
    describe an adult chest at full inspiration around a carina at the origin.

    Examples
    --------
    >>> lungs = LungModel()
    >>> lungs.lung_of([[-0.07, 0.0, -0.03], [0.07, 0.0, -0.03], [0.0, 0.0, 0.0]]).tolist()
    [1, 2, 0]
    >>> lungs.lobe_of([[-0.08, -0.02, 0.04]]).tolist()
    ['RUL']
    """

    right_center: tuple[float, float, float] = (-0.072, 0.005, -0.035)
    right_semi_axes: tuple[float, float, float] = (0.056, 0.080, 0.125)
    left_center: tuple[float, float, float] = (0.074, 0.005, -0.040)
    left_semi_axes: tuple[float, float, float] = (0.054, 0.078, 0.122)
    mediastinum_half_width: float = 0.018
    heart_center: tuple[float, float, float] = (0.015, -0.040, -0.095)
    heart_semi_axes: tuple[float, float, float] = (0.065, 0.050, 0.058)
    diaphragm_apex_right: tuple[float, float, float] = (-0.060, -0.010, -0.120)
    diaphragm_apex_left: tuple[float, float, float] = (0.060, -0.010, -0.132)
    diaphragm_curvature: float = 11.0
    """Dome curvature k (1/m): the dome drops by k·ρ² at horizontal distance ρ from its apex."""
    oblique_fissure_right: tuple[float, float, float] = (0.080, 0.050, 1.2)
    """(y0, z0, slope): below z = z0 + slope·(y − y0) lies the right lower lobe."""
    oblique_fissure_left: tuple[float, float, float] = (0.080, 0.055, 1.2)
    """(y0, z0, slope): below z = z0 + slope·(y − y0) lies the left lower lobe."""
    horizontal_fissure_z: float = -0.022
    """Height of the horizontal fissure (m): right upper lobe above, middle lobe below."""
    distance_grid_step_m: float = 1.5e-3
    """Grid step of the pleura distance map (m)."""

    # -- implicit functions (broadcasting over x, y, z arrays) ----------------------------------
    def labels_xyz(self, x, y, z) -> np.ndarray:
        """Lung label (0 outside, 1 right, 2 left) at broadcastable coordinate arrays (m, CT)."""
        x, y, z = np.asarray(x, float), np.asarray(y, float), np.asarray(z, float)
        shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
        label = np.zeros(shape, dtype=np.uint8)
        hc, ha = self.heart_center, self.heart_semi_axes
        heart = (((x - hc[0]) / ha[0]) ** 2 + ((y - hc[1]) / ha[1]) ** 2
                 + ((z - hc[2]) / ha[2]) ** 2) <= 1.0
        common = (np.abs(x) >= self.mediastinum_half_width) & ~heart
        sides = ((RIGHT_LUNG, self.right_center, self.right_semi_axes, self.diaphragm_apex_right,
                  x < 0),
                 (LEFT_LUNG, self.left_center, self.left_semi_axes, self.diaphragm_apex_left,
                  x > 0))
        for value, c, a, apex, side in sides:
            inside = (((x - c[0]) / a[0]) ** 2 + ((y - c[1]) / a[1]) ** 2
                      + ((z - c[2]) / a[2]) ** 2) <= 1.0
            dome = apex[2] - self.diaphragm_curvature * ((x - apex[0]) ** 2 + (y - apex[1]) ** 2)
            label[inside & (z > dome) & common & side] = value
        return label

    def lobe_codes_xyz(self, x, y, z) -> np.ndarray:
        """Lobe code at broadcastable coordinates: 0 outside, else 1 + index into ``LOBES``."""
        x, y, z = np.asarray(x, float), np.asarray(y, float), np.asarray(z, float)
        lung = self.labels_xyz(x, y, z)
        y0r, z0r, sr = self.oblique_fissure_right
        y0l, z0l, sl = self.oblique_fissure_left
        lower_r = z < z0r + sr * (y - y0r)
        lower_l = z < z0l + sl * (y - y0l)
        code = np.zeros(lung.shape, dtype=np.uint8)
        right = lung == RIGHT_LUNG
        left = lung == LEFT_LUNG
        upper = np.broadcast_to(z >= self.horizontal_fissure_z, lung.shape)
        lower_r = np.broadcast_to(lower_r, lung.shape)
        lower_l = np.broadcast_to(lower_l, lung.shape)
        code[right & ~lower_r & upper] = 1 + LOBES.index("RUL")
        code[right & ~lower_r & ~upper] = 1 + LOBES.index("RML")
        code[right & lower_r] = 1 + LOBES.index("RLL")
        code[left & ~lower_l] = 1 + LOBES.index("LUL")
        code[left & lower_l] = 1 + LOBES.index("LLL")
        return code

    def segment_of(self, points_ct) -> np.ndarray:
        """Bronchopulmonary segment of each point (N, 3), CT frame (m): object array of names
        from :data:`~bronchonav.airway.tree.SEGMENTS`, ``None`` outside the lungs.

        The phantom's segments are parts of its lobes cut by planes of the patient frame
        (heights z, depths y, lateral x, in m, LPS), laid out after the usual anatomy:

        * RUL: apical B1 above z = 0.035; below it posterior B2 (y > 0) and anterior B3;
        * RML: lateral B4 (x < -0.075) and medial B5;
        * RLL: superior B6 above z = -0.045; below it medial basal B7 (x > -0.050), then
          anterior B8 (y < 0.005), posterior B10 (y > 0.045) and lateral B9 between;
        * LUL: upper division above z = -0.03 (apicoposterior B1+2 above z = 0.03 or behind
          y = 0, anterior B3 in front), lingula below (superior B4 above z = -0.055, inferior
          B5);
        * LLL: superior B6 above z = -0.05; below it anterior B8 (y < 0.005), posterior B10
          (y > 0.04) and lateral B9 between.
        """
        lobe = self.lobe_of(points_ct)
        x, y, z = self._xyz(points_ct)
        out = np.full(len(lobe), None, dtype=object)
        rules = {
            "RUL": np.select([z > 0.035, y > 0.0], ["RB1", "RB2"], "RB3"),
            "RML": np.where(x < -0.075, "RB4", "RB5"),
            "RLL": np.select([z > -0.045, x > -0.050, y < 0.005, y > 0.045],
                             ["RB6", "RB7", "RB8", "RB10"], "RB9"),
            "LUL": np.select([(z >= -0.03) & ((z > 0.03) | (y > 0.0)), z >= -0.03, z > -0.055],
                             ["LB1+2", "LB3", "LB4"], "LB5"),
            "LLL": np.select([z > -0.05, y < 0.005, y > 0.04], ["LB6", "LB8", "LB10"], "LB9"),
        }
        for name, seg in rules.items():
            here = lobe == name
            out[here] = seg[here]
        return out

    # -- point queries ------------------------------------------------------------------------
    @staticmethod
    def _xyz(points_ct):
        p = np.atleast_2d(np.asarray(points_ct, dtype=float))
        if p.shape[-1] != 3:
            raise InputError(f"points must have shape (N, 3), got {p.shape}")
        return p[:, 0], p[:, 1], p[:, 2]

    def contains(self, points_ct) -> np.ndarray:
        """Whether each point (N, 3), CT frame (m), lies inside either lung: bool (N,)."""
        return self.labels_xyz(*self._xyz(points_ct)) > 0

    def lung_of(self, points_ct) -> np.ndarray:
        """Lung label of each point (N, 3), CT frame (m): 0 outside, 1 right, 2 left (uint8)."""
        return self.labels_xyz(*self._xyz(points_ct))

    def lobe_of(self, points_ct) -> np.ndarray:
        """Lobe label of each point (N, 3), CT frame (m): object array of str, ``None`` outside."""
        table = np.array([None, *LOBES], dtype=object)
        return table[self.lobe_codes_xyz(*self._xyz(points_ct))]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box (min, max), CT frame (m), enclosing both lungs."""
        lo = np.minimum(np.subtract(self.right_center, self.right_semi_axes),
                        np.subtract(self.left_center, self.left_semi_axes))
        hi = np.maximum(np.add(self.right_center, self.right_semi_axes),
                        np.add(self.left_center, self.left_semi_axes))
        return lo, hi

    def _region_bounds(self, region: str | None) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.bounds()
        if region in ("right", "RUL", "RML", "RLL"):
            hi = hi.copy()
            hi[0] = -self.mediastinum_half_width
        elif region in ("left", "LUL", "LLL"):
            lo = lo.copy()
            lo[0] = self.mediastinum_half_width
        elif region is not None:
            raise InputError(f"unknown lung region {region!r}; use None, 'right', 'left' or one "
                             f"of {', '.join(LOBES)}")
        return lo, hi

    def _region_mask(self, points: np.ndarray, region: str | None) -> np.ndarray:
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        if region is None:
            return self.labels_xyz(x, y, z) > 0
        if region == "right":
            return self.labels_xyz(x, y, z) == RIGHT_LUNG
        if region == "left":
            return self.labels_xyz(x, y, z) == LEFT_LUNG
        return self.lobe_codes_xyz(x, y, z) == 1 + LOBES.index(region)

    def sample_points(self, n: int, rng: np.random.Generator,
                      region: str | None = None) -> np.ndarray:
        """Points uniformly distributed inside a region, CT frame (m).

        Parameters
        ----------
        n : int
            Number of points.
        rng : numpy.random.Generator
            Random source (pass a seeded one for reproducible points).
        region : str or None
            ``None`` (both lungs), ``"right"``, ``"left"`` or a lobe label from ``LOBES``.

        Returns
        -------
        ndarray, shape (n, 3)
        """
        lo, hi = self._region_bounds(region)
        out = np.empty((0, 3))
        while len(out) < n:
            cand = rng.uniform(lo, hi, size=(max(2 * (n - len(out)), 256), 3))
            out = np.vstack([out, cand[self._region_mask(cand, region)]])
        return out[:n]

    def volume(self, region: str | None = None, n: int = 200_000, seed: int = 0) -> float:
        """Monte-Carlo volume of a region (m³), ``region`` as in :meth:`sample_points`."""
        lo, hi = self._region_bounds(region)
        pts = np.random.default_rng(seed).uniform(lo, hi, size=(n, 3))
        return float(np.prod(hi - lo) * self._region_mask(pts, region).mean())

    # -- pleura distance -------------------------------------------------------------------------
    @cached_property
    def _distance_grid(self):
        import edt

        step = self.distance_grid_step_m
        lo, hi = self.bounds()
        lo, hi = lo - 0.015, hi + 0.015
        axes = [np.arange(lo[k], hi[k] + step, step) for k in range(3)]
        inside = self.labels_xyz(axes[0][:, None, None], axes[1][None, :, None],
                                 axes[2][None, None, :]) > 0
        d_in = edt.edt(inside, anisotropy=(step,) * 3, black_border=False)
        d_out = edt.edt(~inside, anisotropy=(step,) * 3, black_border=False)
        # distance from a voxel centre to the boundary, half a step between voxel centres
        signed = np.where(inside, d_in - 0.5 * step, -(d_out - 0.5 * step)).astype(np.float32)
        return lo, step, signed

    def distance_to_pleura(self, points_ct) -> np.ndarray:
        """Signed distance (m) from each point (N, 3), CT frame, to the lung boundary.

        Positive inside a lung, negative outside; accurate to about half of
        :attr:`distance_grid_step_m`. The map covers the lungs' bounding box plus 15 mm; points
        farther out get the value at the nearest grid cell (less negative than the truth).
        """
        from scipy.ndimage import map_coordinates

        lo, step, signed = self._distance_grid
        p = np.atleast_2d(np.asarray(points_ct, dtype=float))
        idx = ((p - lo) / step).T
        return map_coordinates(signed, idx, order=1, mode="nearest")
