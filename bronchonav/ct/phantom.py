"""Synthetic chest phantom with ground truth: airway tree, lungs, nodules and the CT volume.

Frames and units
----------------
The tree, the nodules and the lungs are in the CT frame (``ct``): the LPS patient frame
(+x patient left, +y posterior, +z head) in metres, with the main carina at the origin. The CT
image (:attr:`Phantom.image`) lives in the same physical frame but, as SimpleITK/ITK require,
its spacing and origin are in millimetres and its direction is the identity (LPS): the physical
point of a voxel in mm divided by 1000 is its CT-frame position in m.

The trachea is vertical; its first centreline point (the insertion point) lies on the centre of
the top slice of the volume, so the tracheal lumen is open at the top of the scan as in a real
chest CT.

The body is a vertical elliptic cylinder of soft tissue (:attr:`PhantomConfig.body_semi_axes_m`)
that holds the lungs with a chest wall at least 13 mm thick between the pleura and the air
outside.

Airway tree
-----------
The central airways (trachea, main bronchi, bronchus intermedius, five lobar bronchi) are laid
out by hand from adult morphometry (trachea 18 mm × 115 mm; right main bronchus 25 mm at 25°
from the vertical, left 50 mm at 45°). Below the lobar bronchi the tree grows by space filling
(Kitaoka et al. 1999, Tawhai et al. 2000): every branch owns a set of points sampled uniformly in
its lobe; at its end the set is split by a plane containing the branch axis whose normal is turned
90° from the parent's branching plane (other turns are tried when that split is too unequal);
the flow-dividing ratio r is the fraction of points in a subset, the daughter diameters are
d·r^(1/n) and d·(1−r)^(1/n) with n = 2.8, the branching angles follow Kitaoka's optimum for r,
each daughter turns towards the centroid of its subset and is about 3 diameters long (capped at a
fraction of the distance to that centroid). A bifurcation is made only when both daughters stay
inside the lung clear of the pleura, do not touch other airways, are at least
:attr:`PhantomConfig.min_diameter_m` wide and own enough points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bronchonav.airway.tree import LOBES, AirwayTree, Branch, Nodule
from bronchonav.ct.clinical import ClinicalAppearance, render_clinical
from bronchonav.ct.lungs import LungModel
from bronchonav.ct.render import (VolumeGrid, compose_ct, lung_labels, rasterise_airways,
                                   rasterise_nodules)
from bronchonav.errors import BronchoNavError, InputError

PHANTOM_NAMES = ("default", "full", "clinical")
"""Names accepted by :func:`phantom_config`."""


@dataclass
class PhantomConfig:
    """Parameters of a synthetic phantom (lengths in m, intensities in HU).

    Use :func:`phantom_config` for the named presets; every field can be changed afterwards
    (e.g. a smaller ``min_diameter_m`` and more ``n_seed_points`` grow a bigger tree).
    """

    name: str = "default"
    seed: int = 0
    spacing_m: float = 1.0e-3
    """Isotropic voxel spacing of the rendered CT (m)."""
    min_diameter_m: float = 2.7e-3
    """A bifurcation is made only if both daughters are at least this wide (m)."""
    max_generation: int = 14
    volume_shape: tuple[int, int, int] | None = None
    """CT size (nx, ny, nz) in voxels, centred on the body in x/y; ``None`` crops to the body."""
    # -- airway morphometry --
    trachea_diameter_m: float = 0.018
    trachea_length_m: float = 0.115
    diameter_exponent: float = 2.8
    """n in Kitaoka's diameter rule d_i = d·r_i^(1/n)."""
    length_to_diameter: float = 3.0
    max_length_fraction: float = 0.5
    """A daughter is at most this fraction of the distance to its subset's centroid long."""
    min_length_to_diameter: float = 1.0
    """Daughters shorter than this many diameters are not made (the parent stays terminal)."""
    max_branch_angle_rad: float = np.deg2rad(70.0)
    n_seed_points: int = 40_000
    """Points sampled in the lungs to drive the space-filling growth."""
    min_points: int = 8
    """A daughter must own at least this many seed points."""
    taper: float = 0.06
    """Relative radius decrease along a branch (start 1 + taper/2, end 1 − taper/2 × mean)."""
    centerline_step_m: float = 1.0e-3
    # -- airway wall --
    wall_fraction: float = 0.17
    """Wall thickness as a fraction of the lumen diameter."""
    min_wall_m: float = 0.6e-3
    # -- body and intensities --
    body_center_m: tuple[float, float] = (0.0, 0.005)
    body_semi_axes_m: tuple[float, float] = (0.150, 0.115)
    """Semi-axes (x, y) of the elliptic body cross-section (m): an adult chest 300 mm wide and
    230 mm deep, whose wall (soft tissue) is at least 13 mm thick around the default lungs."""
    margin_m: float = 0.008
    """Air around the body (x, y) and below the lungs (z) in the cropped volume (m)."""
    hu_air: float = -1000.0
    hu_tissue: float = 40.0
    hu_lung: float = -850.0
    noise_hu: float = 25.0
    blur_sigma_vox: float = 0.8
    # -- nodules --
    n_near_nodules: int = 5
    n_far_nodules: int = 1
    nodule_diameter_range_m: tuple[float, float] = (0.008, 0.030)
    near_gap_range_m: tuple[float, float] = (0.003, 0.015)
    """Gap between a near nodule's surface and the lumen of its reachable airway (m)."""
    reachable_diameter_m: float = 0.004
    """Airways at least this wide count as reachable by a 3.5 mm catheter."""
    far_distance_m: float = 0.035
    """A far nodule's centre is at least this far from every airway lumen (m)."""
    lungs: LungModel = field(default_factory=LungModel)
    clinical: ClinicalAppearance | None = None
    """How a clinical scan looks (slices, correlated noise, vessels, ...); ``None`` renders the
    ideal isotropic phantom."""

    def wall_thickness(self, diameter_m):
        """Airway wall thickness (m) for a lumen diameter (m)."""
        return np.maximum(self.wall_fraction * np.asarray(diameter_m, float), self.min_wall_m)


def phantom_config(name: str = "default", seed: int = 0,
                   slice_thickness_m: float | None = None,
                   pixel_spacing_m: float | None = None,
                   emphysema_fraction: float | None = None) -> PhantomConfig:
    """The named phantom preset.

    ``default``: 1 mm voxels, cropped to the body (fast). ``full``: 0.7 mm voxels,
    512 × 512 × 450, a finer tree (airways down to 2 mm). ``clinical``: the default anatomy
    rendered as a clinical scan (:mod:`bronchonav.ct.clinical`): 0.7 mm pixels, slices of
    ``slice_thickness_m`` (default 1 mm), 40 HU correlated noise, air at -960 HU, a dependent
    density gradient, thin walls (a tenth of the lumen diameter, at least 0.3 mm), arteries and
    veins beside the bronchi, a mucus-plugged branch, a body outline and a table.

    ``slice_thickness_m``, ``pixel_spacing_m`` (in-plane, 0.4-2 mm) and ``emphysema_fraction``
    (:attr:`~bronchonav.ct.clinical.ClinicalAppearance.emphysema_fraction`) change the clinical
    preset only.

    Raises
    ------
    InputError
        For an unknown name, a negative seed, or a clinical option out of range or given for
        another preset.
    """
    if seed < 0:
        raise InputError(f"the phantom seed must be >= 0, got {seed}")
    if name != "clinical" and (slice_thickness_m, pixel_spacing_m,
                               emphysema_fraction) != (None, None, None):
        raise InputError("slice thickness, pixel spacing and emphysema apply to the clinical "
                         "preset only")
    if name == "default":
        return PhantomConfig(name=name, seed=int(seed))
    if name == "full":
        return PhantomConfig(name=name, seed=int(seed), spacing_m=0.7e-3, min_diameter_m=2.0e-3,
                             max_generation=16, volume_shape=(512, 512, 450),
                             n_seed_points=80_000)
    if name == "clinical":
        look = ClinicalAppearance()
        if slice_thickness_m is not None:
            look.slice_thickness_m = float(slice_thickness_m)
        if emphysema_fraction is not None:
            look.emphysema_fraction = float(emphysema_fraction)
        look.check()
        spacing = 0.7e-3
        if pixel_spacing_m is not None:
            if not (math.isfinite(pixel_spacing_m) and 0.4e-3 <= pixel_spacing_m <= 2.0e-3):
                raise InputError(f"the pixel spacing must be within 0.4-2 mm, got "
                                 f"{pixel_spacing_m * 1e3:g} mm")
            spacing = float(pixel_spacing_m)
        return PhantomConfig(name=name, seed=int(seed), spacing_m=spacing, wall_fraction=0.10,
                             min_wall_m=0.3e-3, hu_air=-960.0, hu_lung=-840.0, noise_hu=40.0,
                             blur_sigma_vox=0.8, margin_m=0.010, clinical=look)
    raise InputError(f"unknown phantom {name!r}; choose one of: {', '.join(PHANTOM_NAMES)}")


# -- geometry helpers -----------------------------------------------------------------------------

def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _perp(v: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Component of ``v`` perpendicular to the unit vector ``axis`` (not normalised)."""
    return v - np.dot(v, axis) * axis


def _any_perp(axis: np.ndarray) -> np.ndarray:
    trial = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    return _unit(_perp(trial, axis))


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``v`` about the unit ``axis`` by ``angle`` (rad), Rodrigues' formula."""
    c, s = np.cos(angle), np.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * np.dot(axis, v) * (1 - c)


def kitaoka_angles(r: float, n: float) -> tuple[float, float]:
    """Branching angles (rad) of the daughters with flow fractions ``r`` and ``1 − r``.

    Kitaoka et al. 1999, eq. for the minimum-power bifurcation with the diameter exponent ``n``:
    cos θ₁ = (1 + r^(4/n) − (1 − r)^(4/n)) / (2 r^(2/n)), and symmetrically for θ₂.
    """
    def one(a, b):
        c = (1 + a ** (4 / n) - b ** (4 / n)) / (2 * a ** (2 / n))
        return float(np.arccos(np.clip(c, -1.0, 1.0)))

    return one(r, 1 - r), one(1 - r, r)


def _polyline(start, direction, length, radius, config: PhantomConfig):
    """Straight centreline (N, 3) every ~centerline_step_m, and tapered radii (N,)."""
    n = max(int(np.ceil(length / config.centerline_step_m)), 1) + 1
    s = np.linspace(0.0, 1.0, n)
    points = start + np.outer(s * length, direction)
    radii = radius * (1 + config.taper * (0.5 - s))
    return points, radii


@dataclass
class _Grow:
    """A branch under construction: geometry plus the seed points it owns."""

    branch: Branch
    direction: np.ndarray
    diameter: float
    points: np.ndarray
    plane_normal: np.ndarray
    """Normal of the branching plane this branch was created in."""


class _Occupancy:
    """Centreline samples of the branches made so far, for clearance checks."""

    def __init__(self, config: PhantomConfig) -> None:
        self.config = config
        self.points = np.empty((0, 3))
        self.reach = np.empty(0)   # lumen radius + wall thickness
        self.ids = np.empty(0, dtype=int)

    def add(self, branch: Branch) -> None:
        reach = branch.radii + self.config.wall_thickness(2 * branch.radii)
        self.points = np.vstack([self.points, branch.points])
        self.reach = np.concatenate([self.reach, reach])
        self.ids = np.concatenate([self.ids, np.full(len(branch.points), branch.id)])

    def clear(self, points: np.ndarray, reach: np.ndarray, exclude: set[int],
              margin: float) -> bool:
        """Whether tubes of ``reach`` around ``points`` keep ``margin`` from all other tubes."""
        lo = points.min(axis=0) - reach.max() - self.reach.max() - margin
        hi = points.max(axis=0) + reach.max() + self.reach.max() + margin
        near = np.all((self.points >= lo) & (self.points <= hi), axis=1)
        near &= ~np.isin(self.ids, list(exclude))
        if not near.any():
            return True
        q, qr = self.points[near], self.reach[near]
        d = np.linalg.norm(points[:, None, :] - q[None, :, :], axis=2)
        return bool(np.all(d > reach[:, None] + qr[None, :] + margin))


# -- central airways ----------------------------------------------------------------------------

# Hand-laid central airways: (name, parent name, lobe, direction (CT frame, LPS), length (m),
# lobes supplied).
_CENTRAL = (
    ("RMB", "trachea", None, (-np.sin(np.deg2rad(25)), 0.08, -np.cos(np.deg2rad(25))), 0.025,
     ("RUL", "RML", "RLL")),
    ("LMB", "trachea", None, (np.sin(np.deg2rad(45)), 0.08, -np.cos(np.deg2rad(45))), 0.050,
     ("LUL", "LLL")),
    ("RUL", "RMB", "RUL", (-1.0, 0.15, 0.35), 0.018, ("RUL",)),
    ("BI", "RMB", None, (-0.25, 0.15, -1.0), 0.022, ("RML", "RLL")),
    ("RML", "BI", "RML", (-0.6, -0.75, -0.25), 0.015, ("RML",)),
    ("RLL", "BI", "RLL", (-0.35, 0.35, -1.0), 0.018, ("RLL",)),
    ("LUL", "LMB", "LUL", (0.85, -0.35, 0.4), 0.018, ("LUL",)),
    ("LLL", "LMB", "LLL", (0.4, 0.35, -1.0), 0.018, ("LLL",)),
)


def _central_airways(config: PhantomConfig, seeds: dict[str, np.ndarray]):
    """Trachea, main, intermediate and lobar bronchi; returns branches and growth states."""
    n_all = sum(len(p) for p in seeds.values())
    top = np.array([0.0, 0.0, config.trachea_length_m])
    pts, rad = _polyline(top, np.array([0.0, 0.0, -1.0]), config.trachea_length_m,
                         config.trachea_diameter_m / 2, config)
    trachea = Branch(0, None, 0, pts, rad, name="trachea")
    by_name = {"trachea": trachea}
    diam = {"trachea": config.trachea_diameter_m}
    direction = {"trachea": np.array([0.0, 0.0, -1.0])}
    for name, parent_name, lobe, dvec, length, region in _CENTRAL:
        parent = by_name[parent_name]
        own = np.vstack([seeds[lobe_] for lobe_ in region])
        parent_n = n_all if parent_name == "trachea" else sum(
            len(seeds[lb]) for lb in next(c[5] for c in _CENTRAL if c[0] == parent_name))
        d = diam[parent_name] * (len(own) / parent_n) ** (1 / config.diameter_exponent)
        u = _unit(dvec)
        pts, rad = _polyline(parent.end, u, length, d / 2, config)
        b = Branch(len(by_name), parent.id, parent.generation + 1, pts, rad, lobe=lobe, name=name)
        by_name[name], diam[name], direction[name] = b, d, u
    growing = []
    for name, parent_name, lobe, _, _, _ in _CENTRAL:
        if lobe is None:
            continue
        sibling = next(c[0] for c in _CENTRAL if c[1] == parent_name and c[0] != name)
        normal = np.cross(direction[parent_name], direction[sibling])
        if np.linalg.norm(normal) < 1e-6:
            normal = _any_perp(direction[name])
        growing.append(_Grow(by_name[name], direction[name], diam[name], seeds[lobe],
                             _unit(normal)))
    return list(by_name.values()), growing


# -- space-filling growth -----------------------------------------------------------------------

def _try_daughter(g: _Grow, pts: np.ndarray, d: float, theta: float, n: np.ndarray,
                  config: PhantomConfig, lungs: LungModel, occupancy: _Occupancy,
                  sibling_id: int, new_id: int):
    """One daughter (Branch, direction), shortened to fit; ``None`` when none is acceptable.

    The daughter leaves at Kitaoka's angle ``theta`` towards its subset's centroid; if that does
    not fit, aiming straight at the centroid, then half-way between, is tried.
    """
    start = g.branch.end
    to_c = pts.mean(axis=0) - start
    e = _perp(to_c, g.direction)
    e = _unit(e) if np.linalg.norm(e) > 1e-9 else n
    kitaoka = np.cos(theta) * g.direction + np.sin(theta) * e
    radius = d / 2
    wall = float(config.wall_thickness(d))
    for u in (kitaoka, _unit(to_c), _unit(kitaoka + _unit(to_c))):
        if np.dot(u, g.direction) < np.cos(config.max_branch_angle_rad):
            continue
        length = min(config.length_to_diameter * d,
                     config.max_length_fraction * np.linalg.norm(to_c))
        while length >= config.min_length_to_diameter * d:
            points, radii = _polyline(start, u, length, radius, config)
            # the part within the parent's radius lies in the parent's tube, next to the sibling
            far = np.linspace(0, length, len(points)) > g.diameter / 2
            clearance = lungs.distance_to_pleura(points[far])
            if np.all(clearance >= radii[far] + wall + 0.5e-3) and (
                    not far.any() or occupancy.clear(points[far], radii[far] + wall,
                                                     {g.branch.id, sibling_id}, 0.5e-3)):
                return Branch(new_id, g.branch.id, g.branch.generation + 1, points, radii,
                              lobe=g.branch.lobe), u
            length *= 0.85
    return None


def _split(g: _Grow, config: PhantomConfig, lungs: LungModel, occupancy: _Occupancy,
           next_id: int):
    """Bifurcate a growing branch; returns the two daughter states or ``None`` (terminal).

    Split planes contain the branch axis; their normals are tried in order of preference:
    turned 0°, ±30°, ±60° and 90° about the axis from the 90°-rule normal, splits with a
    flow-dividing ratio in [0.25, 0.75] first.
    """
    if g.branch.generation >= config.max_generation or len(g.points) < 2 * config.min_points:
        return None
    n0 = _perp(g.plane_normal, g.direction)
    n0 = _unit(n0) if np.linalg.norm(n0) > 1e-6 else _any_perp(g.direction)
    rel = g.points - g.branch.end
    options = []
    for k, phi in enumerate(np.deg2rad([0, 30, -30, 60, -60, 90])):
        n = _rotate(n0, g.direction, phi)
        side = rel @ n > 0
        r = float(side.mean())
        options.append((not 0.25 <= r <= 0.75, k, n, side, r))
    options.sort(key=lambda o: o[:2])
    for _, _, n, side, r in options:
        p1, p2 = g.points[side], g.points[~side]
        if min(len(p1), len(p2)) < config.min_points:
            continue
        d1 = g.diameter * r ** (1 / config.diameter_exponent)
        d2 = g.diameter * (1 - r) ** (1 / config.diameter_exponent)
        if min(d1, d2) < config.min_diameter_m:
            continue
        t1, t2 = (min(t, config.max_branch_angle_rad)
                  for t in kitaoka_angles(r, config.diameter_exponent))
        first = _try_daughter(g, p1, d1, t1, n, config, lungs, occupancy, next_id + 1, next_id)
        if first is None:
            continue
        second = _try_daughter(g, p2, d2, t2, -n, config, lungs, occupancy, next_id, next_id + 1)
        if second is None:
            continue
        normal = _unit(np.cross(g.direction, n))
        return [_Grow(b, u, d, p, normal) for (b, u), d, p in ((first, d1, p1), (second, d2, p2))]
    return None


SEGMENT_PURITY = 0.75
"""A phantom branch supplies a segment when this fraction of the lung points it was grown to
fill lie in that segment."""


def _supplied_segment(points: np.ndarray, lungs: LungModel) -> str | None:
    """The segment (:meth:`LungModel.segment_of`) holding at least :data:`SEGMENT_PURITY` of
    ``points`` (the territory a branch was grown to fill), else ``None``."""
    if len(points) == 0:
        return None
    names, counts = np.unique(lungs.segment_of(points).astype(str), return_counts=True)
    best = int(np.argmax(counts))
    if names[best] == "None" or counts[best] < SEGMENT_PURITY * len(points):
        return None
    return str(names[best])


def generate_phantom_tree(config: PhantomConfig) -> tuple[AirwayTree, list[Nodule], LungModel]:
    """Grow the phantom's ground-truth airway tree and place its nodules (no CT rendering).

    Parameters
    ----------
    config : PhantomConfig
        Phantom parameters; the result depends only on them (same config → identical output).

    Returns
    -------
    tree : AirwayTree
        Ground truth in the CT frame (m): trachea id 0 generation 0, named central airways,
        lobe labels from the lobar bronchi down, and the segment of each branch whose
        territory (the lung points it was grown to fill) lies mostly in one segment
        (:func:`_supplied_segment`).
    nodules : list of Nodule
        Solid spherical nodules ``N1``, ``N2``, ...; ``note`` is ``"near airway"`` or
        ``"far from airways"``.
    lungs : LungModel
        The lung and lobe geometry the tree fills.
    """
    lungs = config.lungs
    rng = np.random.default_rng([config.seed, 0])
    all_points = lungs.sample_points(config.n_seed_points, rng)
    codes = lungs.lobe_codes_xyz(all_points[:, 0], all_points[:, 1], all_points[:, 2])
    seeds = {lobe: all_points[codes == 1 + k] for k, lobe in enumerate(LOBES)}
    branches, queue = _central_airways(config, seeds)
    occupancy = _Occupancy(config)
    for b in branches:
        occupancy.add(b)
    next_id = len(branches)
    head = 0
    while head < len(queue):
        g = queue[head]
        head += 1
        daughters = _split(g, config, lungs, occupancy, next_id)
        if daughters is None:
            continue
        for dg in daughters:
            branches.append(dg.branch)
            occupancy.add(dg.branch)
            queue.append(dg)
        next_id += 2
    for g in queue:
        g.branch.segment = _supplied_segment(g.points, lungs)
    tree = AirwayTree(branches)
    nodules = place_nodules(tree, lungs, config, np.random.default_rng([config.seed, 1]))
    return tree, nodules, lungs


# -- nodules -----------------------------------------------------------------------------------

def _lumen_clearance(tree: AirwayTree, center: np.ndarray, config: PhantomConfig):
    """Distances (m) from a point to every centreline sample's lumen surface and outer wall."""
    s = tree.samples()
    lumen = np.linalg.norm(s.points - center, axis=1) - s.radii
    return lumen, lumen - config.wall_thickness(2 * s.radii)


def place_nodules(tree: AirwayTree, lungs: LungModel, config: PhantomConfig,
                  rng: np.random.Generator) -> list[Nodule]:
    """Place the phantom's solid nodules (CT frame, m) deterministically from ``rng``.

    Near nodules (``config.n_near_nodules``, cycling through the lobes RUL, LLL, RLL, LUL,
    RML): surface ``near_gap_range_m`` from the lumen of a reachable airway (diameter ≥
    ``reachable_diameter_m``, below the lobar bronchi). Far nodules: centre at least
    ``far_distance_m`` from every airway lumen. Every nodule lies inside one lobe, ≥ 2 mm from the
    pleura, ≥ 1 mm clear of every airway wall and ≥ 5 mm from the other nodules.

    Raises
    ------
    BronchoNavError
        When a nodule cannot be placed (the tree leaves no room).
    """
    dmin, dmax = config.nodule_diameter_range_m
    nodules: list[Nodule] = []

    def acceptable(center, radius, lobe):
        if lungs.lobe_of(center[None])[0] != lobe:
            return False
        if lungs.distance_to_pleura(center[None])[0] < radius + 2e-3:
            return False
        if _lumen_clearance(tree, center, config)[1].min() < radius + 1e-3:
            return False
        return all(np.linalg.norm(center - o.center) > radius + o.radius + 5e-3 for o in nodules)

    lobe_order = ("RUL", "LLL", "RLL", "LUL", "RML")
    for k in range(config.n_near_nodules):
        lobe = lobe_order[k % len(lobe_order)]
        candidates = [b for b in tree if b.lobe == lobe and b.name is None
                      and b.diameter >= config.reachable_diameter_m]
        nodule = None
        for _ in range(2000 if candidates else 0):
            b = candidates[rng.integers(len(candidates))]
            radius = rng.uniform(dmin, min(dmax, 0.025)) / 2
            gap = rng.uniform(*config.near_gap_range_m)
            i = int(round(rng.uniform(0.2, 1.0) * (len(b.points) - 1)))
            w = _unit(_perp(rng.normal(size=3), b.direction))
            center = b.points[i] + w * (b.radii[i] + gap + radius)
            if acceptable(center, radius, lobe):
                nodule = Nodule(f"N{len(nodules) + 1}", center, radius, lobe, "near airway")
                break
        if nodule is None:
            raise BronchoNavError(f"could not place a near-airway nodule in {lobe}")
        nodules.append(nodule)
    for _ in range(config.n_far_nodules):
        nodule = None
        for _ in range(5000):
            center = lungs.sample_points(1, rng)[0]
            radius = rng.uniform(dmin, min(dmax, 0.016)) / 2
            lobe = lungs.lobe_of(center[None])[0]
            if (_lumen_clearance(tree, center, config)[0].min() >= config.far_distance_m
                    and acceptable(center, radius, lobe)):
                nodule = Nodule(f"N{len(nodules) + 1}", center, radius, lobe, "far from airways")
                break
        if nodule is None:
            raise BronchoNavError("could not place a nodule far from the airways")
        nodules.append(nodule)
    return nodules


# -- CT rendering ---------------------------------------------------------------------------------

@dataclass
class Phantom:
    """A rendered phantom: ground truth plus its CT.

    Attributes
    ----------
    config : PhantomConfig
    tree : AirwayTree
        Ground-truth airways, CT frame (m).
    nodules : list of Nodule
        Ground-truth nodules, CT frame (m).
    lungs : LungModel
        Analytic lungs and lobes, CT frame (m).
    grid : VolumeGrid
        Geometry of the volume (CT frame, m).
    image : SimpleITK.Image
        CT in HU (int16), LPS, spacing and origin in mm (SimpleITK convention).
    lumen_mask : ndarray of bool, shape (z, y, x)
        Voxels whose centre lies inside the ground-truth lumen (same grid as ``image``).
    lung_labels : SimpleITK.Image
        uint8: 0 outside the lungs, 1 right lung, 2 left lung (same geometry as ``image``).
    plugged : list of Branch
        Mucus-plugged branches (clinical preset): not visible, so not in ``tree``.
    """

    config: PhantomConfig
    tree: AirwayTree
    nodules: list[Nodule]
    lungs: LungModel
    grid: VolumeGrid
    image: object
    lumen_mask: np.ndarray
    lung_labels: object
    plugged: list = field(default_factory=list)


def phantom_grid(config: PhantomConfig, tree: AirwayTree, lungs: LungModel) -> VolumeGrid:
    """The phantom's voxel grid (CT frame, m).

    The top slice's voxel centres lie at the height of the trachea's first point, so the tracheal
    lumen is open at the top of the volume. With ``config.volume_shape`` the grid has that size,
    centred on the body in x and y; otherwise it is cropped to the body plus ``margin_m`` in x/y
    and reaches ``margin_m`` below the lungs.
    """
    sp = config.spacing_m
    top = float(tree.trachea.start[2])
    cx, cy = config.body_center_m
    if config.volume_shape is not None:
        nx, ny, nz = (int(v) for v in config.volume_shape)
    else:
        nx = int(np.ceil(2 * (config.body_semi_axes_m[0] + config.margin_m) / sp)) + 1
        ny = int(np.ceil(2 * (config.body_semi_axes_m[1] + config.margin_m) / sp)) + 1
        bottom = lungs.bounds()[0][2] - config.margin_m
        nz = int(np.ceil((top - bottom) / sp)) + 1
    if nx < 2 or ny < 2 or nz < 2:
        raise InputError(f"phantom volume {nx}×{ny}×{nz} is too small")
    origin = (cx - (nx - 1) / 2 * sp, cy - (ny - 1) / 2 * sp, top - (nz - 1) * sp)
    return VolumeGrid(origin, (sp, sp, sp), (nx, ny, nz))


def make_phantom(config: PhantomConfig) -> Phantom:
    """Generate the ground truth and render the CT (HU, int16) of a phantom.

    Deterministic: the tree, nodules and the CT noise depend only on ``config`` (and its seed).
    With ``config.clinical`` the CT is rendered by :func:`bronchonav.ct.clinical.render_clinical`
    and ``tree`` is the visible ground truth (without the mucus-plugged branches).
    """
    tree, nodules, lungs = generate_phantom_tree(config)
    if config.clinical is not None:
        r = render_clinical(config, tree, nodules, lungs, np.random.default_rng([config.seed, 3]))
        return Phantom(config, r.truth_tree, nodules, lungs, r.grid, r.grid.to_sitk(r.hu),
                       r.lumen_mask, r.grid.to_sitk(r.labels), r.plugged)
    grid = phantom_grid(config, tree, lungs)
    lumen, tissue, mask = rasterise_airways(tree, grid, config.wall_thickness)
    rasterise_nodules(nodules, grid, tissue)
    labels = lung_labels(lungs, grid)
    hu = compose_ct(grid, labels, lumen, tissue, config.body_center_m, config.body_semi_axes_m,
                    config.hu_air, config.hu_tissue, config.hu_lung, config.blur_sigma_vox,
                    config.noise_hu, np.random.default_rng([config.seed, 2]))
    del lumen, tissue
    return Phantom(config, tree, nodules, lungs, grid, grid.to_sitk(hu), mask,
                   grid.to_sitk(labels))


def lumen_surface(lumen_fraction: np.ndarray, grid: VolumeGrid) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh of the lumen boundary (marching cubes at fraction 0.5).

    Parameters
    ----------
    lumen_fraction : ndarray of uint8, shape grid.shape_zyx
        Partial-volume lumen fraction × 255 (see :func:`rasterise_airways`); its 0.5 level is
        the boundary of the ground-truth lumen mask located to sub-voxel precision.
    grid : VolumeGrid

    Returns
    -------
    vertices : ndarray, shape (V, 3)
        CT frame (m).
    triangles : ndarray of int64, shape (F, 3)
        Counter-clockwise seen from outside the lumen (normals point out of the lumen).
    """
    from skimage.measure import marching_cubes

    occupied = np.argwhere(lumen_fraction > 0)
    lo = np.maximum(occupied.min(axis=0) - 1, 0)
    hi = occupied.max(axis=0) + 2
    crop = lumen_fraction[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    # pad so that the mesh is closed where the lumen leaves the volume (the trachea's top)
    crop = np.pad(crop, 1).astype(np.float32)
    sp_zyx = tuple(grid.spacing_m[::-1])
    verts, faces, _, _ = marching_cubes(crop, level=127.5, spacing=sp_zyx)
    origin_zyx = np.asarray(grid.origin_m[::-1]) + (lo - 1) * np.asarray(sp_zyx)
    vertices = (verts + origin_zyx)[:, ::-1].copy()
    # skimage's faces, after the (z, y, x) → (x, y, z) mirror, wind with normals out of the lumen
    return vertices, faces.astype(np.int64)


def phantom_ground_truth_map(config: PhantomConfig):
    """The phantom's ground truth as an :class:`~bronchonav.maps.AirwayMap`.

    Holds the ground-truth tree and nodules, the lumen surface (marching cubes of the
    ground-truth lumen, vertices in m, CT frame) and the lung label image, with metadata
    ``{"source": {"kind": "phantom-ground-truth", "name", "seed"}, "spacing_m", ...}``.
    No CT is rendered.
    """
    from bronchonav.maps import AirwayMap

    tree, nodules, lungs = generate_phantom_tree(config)
    grid = phantom_grid(config, tree, lungs)
    lumen, _, _ = rasterise_airways(tree, grid, config.wall_thickness)
    vertices, triangles = lumen_surface(lumen, grid)
    del lumen
    metadata = {
        "source": {"kind": "phantom-ground-truth", "name": config.name, "seed": config.seed},
        "spacing_m": [float(s) for s in grid.spacing_m],
        "volume_size": [int(n) for n in grid.size],
        "origin_m": [float(o) for o in grid.origin_m],
        "creation": {"min_diameter_m": config.min_diameter_m,
                     "max_generation": config.max_generation,
                     "n_seed_points": config.n_seed_points},
    }
    return AirwayMap(f"phantom_{config.name}_ground_truth", tree, nodules, vertices, triangles,
                     metadata, grid.to_sitk(lung_labels(lungs, grid)))
