"""Centerlines of an airway mask → a rooted :class:`~bronchonav.airway.tree.AirwayTree`.

Steps
-----
1. 3D skeleton of the mask (:func:`skimage.morphology.skeletonize`) and the lumen radius at
   each skeleton voxel. Without the CT it is the Euclidean distance transform of the mask (the
   ``edt`` package, anisotropic spacing), which lies inside the true edge. With the CT it is
   measured along rays across the airway (:func:`fwhm_radii`): the half-maximum crossing
   between the lumen and the wall peak, corrected for the blur with an imaging model of the
   cross-section (:class:`WallProfileModel`: lumen, wall and lung levels blurred by a Gaussian)
   whose blur and levels are fitted on the trachea of the same scan
   (:func:`fit_trachea_profile`). The plain half maximum is biased low where the wall is thin
   (on the phantoms 0.4–0.7 mm for airways of 2–8 mm diameter). Wide airways give both their
   radius and wall thickness; narrow ones (radius below 2.5 blur sigmas) are measured with the
   wall-to-lumen ratio of the wide ones, as their faint wall peak does not tell its thickness
   apart from noise. Points where the CT measurement fails take the median of their branch's
   measured radii (after step 3, which then runs again), or the distance-transform radius when
   the branch has none.
2. The skeleton voxels form a graph (26-neighbours, edges weighted by their length); the root is
   the most superior of the wide skeleton end points (:func:`root_end`: the top of the trachea,
   also where the scan cuts the trachea below the lung apices' small bronchi). A shortest-path
   tree from the root breaks every cycle (two airways touching, skeleton loops at thick
   junctions).
3. The voxel tree is cut into branches between the root, bifurcations and end points
   (a :class:`networkx.DiGraph` of branches). Spurs — terminal branches shorter than
   ``prune_k`` times their parent's lumen radius plus ``prune_min_mm`` — are
   removed, chains left with a single child are merged, and very short internal branches
   (skeleton artefacts of one bifurcation seen as two) are collapsed, until nothing changes.
4. Branch polylines are mapped to the CT frame (LPS, metres) and smoothed with their end
   points fixed (branch lengths above are measured on these smoothed polylines); radii are
   median-filtered along each branch. Generations are depths from the trachea.
5. Each bifurcation moves back up its parent to where the children's axes meet it
   (:func:`~bronchonav.airway.junctions.relocate_junctions`): where children part at a small
   angle and the wall between them is not resolved, their lumens merge and the skeleton splits
   only where they part, up to ``r / tan(θ / 2)`` further down.

Each child's first point is exactly its parent's last point (the bifurcation).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import cc3d
import edt
import networkx as nx
import numpy as np
import SimpleITK as sitk
from scipy import integrate, ndimage, optimize, special
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.morphology import skeletonize

from bronchonav.airway.junctions import relocate_junctions
from bronchonav.airway.tree import AirwayTree, Branch
from bronchonav.ct.io import ct_to_index, index_to_ct
from bronchonav.errors import CTError


@dataclass
class CenterlineParams:
    """Parameters of :func:`extract_tree` (mm and dimensionless factors).

    Attributes
    ----------
    prune_k : float
        A terminal branch shorter than ``prune_k * r + prune_min_mm`` is a spur; ``r`` is the
        lumen radius (mm) of its parent branch (the larger of the parent's median radius and
        the radius at the bifurcation).
    prune_min_mm : float
        Constant part of the spur length (mm).
    merge_k : float
        An internal branch shorter than ``merge_k * r`` (``r`` the radius at its start) is a
        skeleton artefact and is collapsed into its parent.
    smooth_window : int
        Moving-average window (points) applied to the centerline polylines, ends kept fixed.
    """

    prune_k: float = 1.5
    prune_min_mm: float = 0.5
    merge_k: float = 0.6
    smooth_window: int = 5

    def prune_length_mm(self, radius_mm: float) -> float:
        """Spur length threshold (mm) for a branch leaving a bifurcation of radius ``radius_mm``."""
        return self.prune_k * radius_mm + self.prune_min_mm


_OFFSETS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                     if (a, b, c) > (0, 0, 0)])
"""The 13 'forward' 26-neighbour offsets (each undirected edge once)."""


def _voxel_graph(coords: np.ndarray, shape, spacing_kji: np.ndarray):
    """Sparse 26-neighbour graph of skeleton voxels, edges weighted by length (mm)."""
    index = np.full(shape, -1, dtype=np.int64)
    index[tuple(coords.T)] = np.arange(len(coords))
    rows, cols, w = [], [], []
    for off in _OFFSETS:
        nb = coords + off
        ok = np.all((nb >= 0) & (nb < np.asarray(shape)), axis=1)
        j = np.full(len(coords), -1)
        j[ok] = index[tuple(nb[ok].T)]
        has = j >= 0
        rows.append(np.flatnonzero(has)), cols.append(j[has])
        w.append(np.full(has.sum(), float(np.linalg.norm(off * spacing_kji))))
    rows, cols, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(w)
    n = len(coords)
    return coo_matrix((np.r_[w, w], (np.r_[rows, cols], np.r_[cols, rows])), shape=(n, n)).tocsr()


def root_end(ends: np.ndarray, z_ct: np.ndarray, radius_mm: np.ndarray) -> int:
    """The skeleton end point at the top of the trachea: of the ``ends`` (indices into the
    skeleton's ``z_ct``, m, +z head, and lumen ``radius_mm``) at least half as wide as the
    widest, the most superior. A scan may cut the trachea a few centimetres above the carina,
    below the ends of the apical bronchi; those are narrow, the trachea is the widest airway."""
    wide = ends[radius_mm[ends] >= 0.5 * radius_mm[ends].max()]
    return int(wide[np.argmax(z_ct[wide])])


def _branch_graph(parent: np.ndarray, root: int) -> nx.DiGraph:
    """Cut a voxel tree (``parent`` array, -1 at the root/unreached) into branches.

    Returns a DiGraph whose nodes are branches keyed by their distal voxel, with attribute
    ``path`` (voxel ids from the proximal bifurcation to the distal end, inclusive).
    """
    reached = (parent >= 0)
    reached[root] = True
    nchild = np.bincount(parent[parent >= 0], minlength=len(parent))
    key = reached & (nchild != 1)
    key[root] = True
    g = nx.DiGraph()
    upper_of = {}
    for v in np.flatnonzero(key):
        if v == root:
            continue
        path = [int(v)]
        u = parent[v]
        while not key[u]:
            path.append(int(u))
            u = parent[u]
        path.append(int(u))
        g.add_node(int(v), path=path[::-1])
        upper_of[int(v)] = int(u)
    for v, u in upper_of.items():
        if u != root:
            g.add_edge(u, v)
    return g


def _length(path_xyz: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(path_xyz, axis=0), axis=1).sum())


class _Simplifier:
    """Spur pruning, chain merging and short-branch collapsing on the branch graph.

    Branch lengths are cached (a path changes only when branches are merged or collapsed) and
    every pass handles all the branches it can, so a simplification costs a few passes over the
    graph, not one pass per removed branch.
    """

    def __init__(self, g: nx.DiGraph, pos_mm: np.ndarray, radius_mm: np.ndarray,
                 params: CenterlineParams):
        self.g, self.pos, self.rad, self.p = g, pos_mm, radius_mm, params
        self._lengths: dict = {}

    def _set_path(self, b, path) -> None:
        self.g.nodes[b]["path"] = path
        self._lengths.pop(b, None)

    def length(self, b) -> float:
        """Length (mm) of branch ``b``'s smoothed centerline, as it will be in the tree."""
        if b not in self._lengths:
            self._lengths[b] = _length(_smooth(self.pos[self.g.nodes[b]["path"]],
                                               self.p.smooth_window))
        return self._lengths[b]

    def start_radius(self, b) -> float:
        return float(self.rad[self.g.nodes[b]["path"][0]])

    def parent_radius(self, b) -> float:
        """Lumen radius (mm) at the end of branch ``b``: the larger of the distance transform
        at its distal voxel and its median radius (the junction voxel alone underestimates it
        where the bifurcation is blunt)."""
        path = self.g.nodes[b]["path"]
        return max(float(self.rad[path[-1]]), float(np.median(self.rad[path])))

    def merge_chains(self) -> bool:
        """Join every branch having exactly one child with that child."""
        changed = False
        for b in list(self.g.nodes):
            if b not in self.g:
                continue
            kids = list(self.g.successors(b))
            while len(kids) == 1:
                c = kids[0]
                self._set_path(b, self.g.nodes[b]["path"] + self.g.nodes[c]["path"][1:])
                grandkids = list(self.g.successors(c))
                self.g.remove_node(c)
                self._lengths.pop(c, None)
                self.g.add_edges_from((b, k) for k in grandkids)
                kids = grandkids
                changed = True
        return changed

    def prune_spurs(self) -> bool:
        """Remove short terminal branches; a bifurcation keeps at least its longest child."""
        changed = False
        for b in list(self.g.nodes):
            if b not in self.g:
                continue
            kids = list(self.g.successors(b))
            if not kids:
                continue
            limit = self.p.prune_length_mm(self.parent_radius(b))
            spurs = [c for c in kids if self.g.out_degree(c) == 0 and self.length(c) < limit]
            if len(spurs) == len(kids):
                spurs.remove(max(spurs, key=self.length))
            for c in spurs:
                self.g.remove_node(c)
                self._lengths.pop(c, None)
                changed = True
        return changed

    def collapse_short(self) -> bool:
        """Collapse internal branches shorter than ``merge_k`` times their start radius.

        In one pass over the branches in id order; a branch whose parent or children changed
        in this pass waits for the next pass (so the result is the same as collapsing one
        branch at a time in id order whenever collapses do not touch each other).
        """
        changed = False
        touched = set()
        for b in sorted(self.g.nodes):
            if b not in self.g or b in touched:
                continue
            preds = list(self.g.predecessors(b))
            kids = list(self.g.successors(b))
            if not preds or not kids:
                continue
            if self.length(b) < self.p.merge_k * self.start_radius(b):
                path = self.g.nodes[b]["path"]
                for c in kids:
                    self._set_path(c, path + self.g.nodes[c]["path"][1:])
                    self.g.add_edge(preds[0], c)
                self.g.remove_node(b)
                self._lengths.pop(b, None)
                touched.update(kids)
                touched.update(preds)
                touched.update(self.g.successors(preds[0]))
                changed = True
        return changed

    def run(self) -> nx.DiGraph:
        self.merge_chains()
        while self.prune_spurs() | self.merge_chains() | self.collapse_short():
            pass
        return self.g


def _smooth(points: np.ndarray, window: int) -> np.ndarray:
    """Moving average along a polyline with both end points fixed."""
    if window < 2 or len(points) < 3:
        return points
    out = ndimage.uniform_filter1d(points, size=window, axis=0, mode="nearest")
    out[0], out[-1] = points[0], points[-1]
    return out


def _ray_frames(tangents: np.ndarray, n_rays: int) -> np.ndarray:
    """Unit ray directions (N, n_rays, 3) perpendicular to each tangent, evenly spread."""
    t = tangents / np.maximum(np.linalg.norm(tangents, axis=1, keepdims=True), 1e-12)
    helper = np.where(np.abs(t[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    u = np.cross(t, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(t, u)
    ang = 2 * np.pi * np.arange(n_rays) / n_rays
    return np.cos(ang)[None, :, None] * u[:, None, :] + np.sin(ang)[None, :, None] * v[:, None, :]


def _sample_rays(hu: np.ndarray, reference: sitk.Image, offset_kji, points_ct: np.ndarray,
                 dirs: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``hu`` at ``points + dirs * s``: shape (N, R, S) for ``s`` (N, S) m."""
    pts = points_ct[:, None, None, :] + dirs[:, :, None, :] * s[:, None, :, None]
    idx = ct_to_index(reference, pts.reshape(-1, 3)) - np.asarray(offset_kji, dtype=float)
    return ndimage.map_coordinates(hu, idx.T, order=1, mode="nearest").reshape(pts.shape[:3])


# -- imaging model of an airway cross-section ---------------------------------------------------

LUNG_RANGE_HU = (-950.0, -650.0)
"""Voxels in this range (HU, open) are taken as parenchyma when measuring its level."""
LUNG_HU_DEFAULT = -850.0
"""Parenchyma level (HU) assumed when the scan has too few voxels in ``LUNG_RANGE_HU``."""

FAINT_CONTRAST_HU = 30.0
"""Minimum wall-to-lumen contrast (HU) of a ray across an airway measured with a known wall."""
WIDE_SIGMAS = 2.5
"""Airways of a lumen radius of at least this many blur sigmas show their wall thickness."""

_U_STEP = 0.02
_U = np.arange(0.0, 30.0 + 0.5 * _U_STEP, _U_STEP)
"""Radial grid (in units of the blur sigma) of the blurred-disk table."""


@lru_cache(maxsize=1)
def _disk_table() -> np.ndarray:
    """``D[i, j]``: fraction of a 2D unit Gaussian centred at ``_U[i]`` inside the disk of
    radius ``_U[j]`` (both in sigmas), i.e. ``ncx2.cdf(R², 2, ρ²)``, by cumulative
    integration of the Rician density ``t exp(-(t - ρ)²/2) I0e(tρ)``."""
    u, t = _U[:, None], _U[None, :]
    density = t * np.exp(-0.5 * (t - u) ** 2) * special.i0e(t * u)
    return integrate.cumulative_trapezoid(density, _U, axis=1, initial=0.0)


def blurred_disk(rho, radius, sigma) -> np.ndarray:
    """Cross-section profile of a blurred cylinder: the fraction of a 2D isotropic Gaussian
    (std ``sigma``) centred at distance ``rho`` from a disk's centre that lies inside the disk
    of ``radius`` (all lengths in one unit; ``radius / sigma`` up to 30)."""
    d = _disk_table()
    a = np.clip(np.asarray(radius, float) / sigma / _U_STEP, 0, len(_U) - 1)
    u = np.clip(np.asarray(rho, float) / sigma / _U_STEP, 0, len(_U) - 1)
    return ndimage.map_coordinates(d, np.stack(np.broadcast_arrays(u, a)), order=1)


@dataclass(frozen=True)
class WallProfileModel:
    """Imaging model of an airway cross-section, measured on the scan.

    A lumen (``lumen_hu``) of radius r inside a wall (``wall_hu``) of thickness w in lung
    (``lung_hu``), blurred by an isotropic Gaussian of std ``sigma_m`` in the cross-section
    plane (the scan's point spread plus any smoothing applied before measuring). Under this
    model the half-maximum crossing of a ray profile lies inside the lumen edge where the wall
    is thin (its blurred peak is low and the crossing moves in) and at the edge where it is
    thick; :meth:`correct` inverts that, given the crossing and the wall's peak contrast.

    Attributes
    ----------
    sigma_m : float
        Blur (m).
    lumen_hu, wall_hu, lung_hu : float
        Intensities (HU) of air in the lumen, of the wall's soft tissue, of the parenchyma.
    """

    sigma_m: float
    lumen_hu: float
    wall_hu: float
    lung_hu: float

    _A = np.unique(np.rint(np.geomspace(0.5, 20.0, 120) / _U_STEP)).astype(int)
    _B = np.unique(np.rint(np.geomspace(0.04, 8.0, 60) / _U_STEP)).astype(int)

    def profile(self, rho_m, radius_m: float, wall_m: float) -> np.ndarray:
        """Modelled HU at distance ``rho_m`` (m) from the axis of an airway of lumen radius
        ``radius_m`` and wall thickness ``wall_m`` (m)."""
        return (self.lung_hu + (self.wall_hu - self.lung_hu)
                * blurred_disk(rho_m, radius_m + wall_m, self.sigma_m)
                + (self.lumen_hu - self.wall_hu) * blurred_disk(rho_m, radius_m, self.sigma_m))

    @cached_property
    def _half_max_table(self):
        """Half-maximum crossing and normalised peak contrast on the (r, w) grid (sigmas).

        Returns ``(a, crossing, contrast)``: lumen radii ``a`` (Na,), crossing (Na, Nb) in
        sigmas and contrast (Na, Nb) as a fraction of ``wall_hu - lumen_hu``, for the wall
        thicknesses ``_B * _U_STEP``.
        """
        d = _disk_table()
        p = (self.lung_hu - self.lumen_hu) / (self.wall_hu - self.lumen_hu)
        a = self._A * _U_STEP
        crossing = np.empty((len(self._A), len(self._B)))
        contrast = np.empty_like(crossing)
        for j, b in enumerate(self._B):
            outer = np.minimum(self._A + b, len(_U) - 1)
            v = p + (1 - p) * d[:, outer].T - d[:, self._A].T  # (Na, U), 0 lumen, 1 wall
            lumen, peak = v[:, 0], v.max(axis=1)
            half = 0.5 * (lumen + peak)
            c = np.maximum(np.argmax(v >= half[:, None], axis=1), 1)
            v0 = np.take_along_axis(v, (c - 1)[:, None], axis=1)[:, 0]
            v1 = np.take_along_axis(v, c[:, None], axis=1)[:, 0]
            crossing[:, j] = (c - 1 + (half - v0) / np.maximum(v1 - v0, 1e-12)) * _U_STEP
            contrast[:, j] = peak - lumen
        return a, np.maximum.accumulate(crossing, axis=0), contrast

    def _radii_per_wall(self, crossing_m) -> tuple[np.ndarray, np.ndarray]:
        """For each modelled wall thickness, the lumen radius (sigmas) whose half-maximum
        crossing is ``crossing_m``: (M, Nb), and whether that wall can produce it at all."""
        a, cross, _ = self._half_max_table
        x = np.asarray(crossing_m, float).ravel() / self.sigma_m
        ra = np.stack([np.interp(x, cross[:, j], a) for j in range(cross.shape[1])], axis=1)
        return ra, (x[:, None] >= cross[0][None, :]) & (x[:, None] <= cross[-1][None, :])

    def invert(self, crossing_m: np.ndarray, contrast_hu: np.ndarray):
        """Lumen radius and wall thickness (m) from half-maximum crossings (m) and peak
        contrasts (HU) of rays.

        For each modelled wall thickness the radius whose crossing matches is found; the wall
        thickness is then the one whose modelled contrast matches the measured one (clamped to
        the walls that can produce the crossing: the thinnest or the thickest). NaN where no
        modelled wall produces the crossing.
        """
        a, _, contrast = self._half_max_table
        b = self._B * _U_STEP
        ra, valid = self._radii_per_wall(crossing_m)
        cm = np.asarray(contrast_hu, float).ravel() / (self.wall_hu - self.lumen_hu)
        rc = np.stack([np.interp(ra[:, j], a, contrast[:, j]) for j in range(ra.shape[1])], axis=1)
        rc = np.where(valid, rc, np.nan)
        lo_j = np.argmax(valid, axis=1)
        hi_j = valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
        above = valid & (rc >= cm[:, None])
        j = np.where(above.any(axis=1), np.argmax(above, axis=1), hi_j)
        i = np.arange(len(cm))
        jm = np.maximum(j - 1, lo_j)
        c0, c1 = rc[i, jm], rc[i, j]
        f = np.where(j > jm, np.clip((cm - c0) / np.maximum(c1 - c0, 1e-12), 0.0, 1.0), 0.0)
        r = np.where(valid.any(axis=1), (1 - f) * ra[i, jm] + f * ra[i, j], np.nan)
        w = np.where(valid.any(axis=1), (1 - f) * b[jm] + f * b[j], np.nan)
        shape = np.shape(crossing_m)
        return (r * self.sigma_m).reshape(shape), (w * self.sigma_m).reshape(shape)

    def correct(self, crossing_m: np.ndarray, contrast_hu: np.ndarray) -> np.ndarray:
        """Lumen radius (m) from half-maximum crossings (m) and peak contrasts (HU) of rays
        (see :meth:`invert`)."""
        return self.invert(crossing_m, contrast_hu)[0]

    def correct_with_wall(self, crossing_m: np.ndarray, wall_ratio: float) -> np.ndarray:
        """Lumen radius (m) from half-maximum crossings (m) of airways whose wall thickness is
        ``wall_ratio`` times their lumen radius: for airways too faint for their contrast to
        tell the wall apart. NaN where no such airway produces the crossing."""
        ra, valid = self._radii_per_wall(crossing_m)
        g = self._B[None, :] * _U_STEP - wall_ratio * ra  # grows with the wall thickness
        g = np.where(valid, g, np.nan)
        up = valid[:, :-1] & valid[:, 1:] & (g[:, :-1] <= 0) & (g[:, 1:] > 0)
        found = up.any(axis=1)
        i, j = np.flatnonzero(found), np.argmax(up[found], axis=1)
        f = g[i, j] / (g[i, j] - g[i, j + 1])
        r = np.full(len(ra), np.nan)
        r[i] = (1 - f) * ra[i, j] + f * ra[i, j + 1]
        return (r * self.sigma_m).reshape(np.shape(crossing_m))


def fit_trachea_profile(hu: np.ndarray, reference: sitk.Image, offset_kji, points_ct: np.ndarray,
                        tangents: np.ndarray, guess_m: np.ndarray, lung_hu: float,
                        n_rays: int = 24) -> WallProfileModel | None:
    """Measure the :class:`WallProfileModel` on the trachea.

    The trachea is wide (radius ≫ blur) and lies in soft tissue, so its ray profiles are a
    blurred edge from air to tissue: rays perpendicular to the centerline are sampled every
    0.1 mm, aligned on their half-maximum crossings, averaged, and fitted by least squares with
    ``wall + (lumen - wall) * blurred_disk(rho, r, sigma)``, which gives the blur sigma and the
    air and tissue levels.

    Parameters
    ----------
    hu, reference, offset_kji
        As in :func:`fwhm_radii`.
    points_ct, tangents : ndarray, shape (N, 3)
        Trachea centerline points (CT frame, m) and tangents.
    guess_m : ndarray, shape (N,)
        Radius guesses (m).
    lung_hu : float
        Parenchyma level (HU) for the model.

    Returns
    -------
    WallProfileModel or None
        ``None`` when the fit fails or is implausible (sigma outside 0.1–5 mm, contrast below
        300 HU).
    """
    r0 = float(np.median(guess_m))
    s = np.arange(0.0, r0 + 6e-3, 1e-4)
    vals = _sample_rays(hu, reference, offset_kji, points_ct, _ray_frames(tangents, n_rays),
                        np.broadcast_to(s, (len(points_ct), len(s))))
    vals = vals.reshape(-1, len(s))
    lumen, tissue = np.median(vals[:, 0]), np.median(vals.max(axis=1))
    half = 0.5 * (lumen + tissue)
    c = np.argmax(vals >= half, axis=1)
    keep = c > 0
    if keep.sum() < 10:
        return None
    vals, c = vals[keep], c[keep]
    v0 = vals[np.arange(len(c)), c - 1]
    v1 = vals[np.arange(len(c)), c]
    cross = (c - 1 + (half - v0) / np.maximum(v1 - v0, 1e-6)) * 1e-4
    rc = float(np.median(cross))
    # align each ray on the median crossing and average
    rho = np.arange(0.0, rc + 4e-3, 1e-4)
    aligned = np.array([np.interp(rho, s - (x - rc), v) for x, v in zip(cross, vals)])
    mean = aligned.mean(axis=0)

    def residual(q):
        r, sigma, lo, hi = q
        return hi + (lo - hi) * blurred_disk(rho, r, sigma) - mean

    fit = optimize.least_squares(residual, [rc, 1e-3, lumen, tissue],
                                 bounds=([0.5 * rc, 1e-4, -2000, -1000], [2 * rc, 5e-3, 1000, 2000]),
                                 x_scale=[1e-3, 1e-3, 100.0, 100.0])
    _, sigma, lo, hi = fit.x
    if not fit.success or hi - lo < 300.0 or not 1e-4 < sigma < 5e-3:
        return None
    return WallProfileModel(float(sigma), float(lo), float(hi), float(lung_hu))


def fwhm_radii(hu: np.ndarray, reference: sitk.Image, offset_kji, points_ct: np.ndarray,
               tangents: np.ndarray, guess_m: np.ndarray, n_rays: int = 12, n_samples: int = 40,
               min_contrast_hu: float = 150.0, model: WallProfileModel | None = None) -> np.ndarray:
    """Lumen radius at centerline points from the CT intensities (half maximum along rays).

    From each point, ``n_rays`` rays perpendicular to the centerline sample the (smoothed) CT
    out to ``max(2.5 * guess, guess + 3 mm)``. Along a ray the lumen level is the value at the
    centre and the wall level the maximum along the ray; the ray's half-maximum radius is where
    the profile first crosses their mean (linear interpolation between samples). With a
    ``model`` each ray's crossing is corrected for the blur (:meth:`WallProfileModel.correct`,
    from the crossing and the wall-to-lumen contrast); without one it is the plain full width
    at half maximum, which is biased low where the wall is thin. The point's radius is the
    median over the rays whose wall-to-lumen contrast exceeds ``min_contrast_hu``; where fewer
    than half the rays qualify the guess is kept.

    Parameters
    ----------
    hu : ndarray, shape (K, J, I)
        Smoothed CT in HU, a crop of ``reference``'s grid starting at index ``offset_kji``.
    reference : SimpleITK.Image
        The CT grid's geometry.
    offset_kji : sequence of 3 int
        Index of ``hu[0, 0, 0]`` in the reference grid.
    points_ct, tangents : ndarray, shape (N, 3)
        Centerline points (CT frame, m) and tangents (any length).
    guess_m : ndarray, shape (N,)
        Radius estimates (m) setting the ray length and used as fallback.
    model : WallProfileModel, optional
        Imaging model of ``hu`` (see :func:`fit_trachea_profile`).

    Returns
    -------
    ndarray, shape (N,)
        Radii (m).
    """
    radii, _, measured = _half_max_radii(hu, reference, offset_kji, points_ct, tangents, guess_m,
                                         n_rays, n_samples, min_contrast_hu, model)
    return np.where(measured, radii, np.asarray(guess_m, dtype=float))


def _half_max_radii(hu, reference, offset_kji, points_ct, tangents, guess_m, n_rays, n_samples,
                    min_contrast_hu, model, wall_ratio=None):
    """:func:`fwhm_radii` without the fallback, optionally for a known wall-to-lumen ratio.

    Returns the radii (m, NaN where not measured), the wall thicknesses found by
    :meth:`WallProfileModel.invert` (m, NaN where not measured or when ``model`` is None or
    ``wall_ratio`` is given) and the mask of measured points.
    """
    n = len(points_ct)
    out, walls = np.full(n, np.nan), np.full(n, np.nan)
    measured = np.zeros(n, dtype=bool)
    guess = np.asarray(guess_m, dtype=float)
    frac = np.linspace(0.0, 1.0, n_samples)
    for lo in range(0, n, 4096):
        sl = slice(lo, lo + 4096)
        rmax = np.maximum(2.5 * guess[sl], guess[sl] + 3e-3)
        vals = _sample_rays(hu, reference, offset_kji, points_ct[sl],
                            _ray_frames(tangents[sl], n_rays), rmax[:, None] * frac[None, :])
        lumen, wall = vals[:, :, 0], vals.max(axis=2)
        half = 0.5 * (lumen + wall)
        above = vals >= half[:, :, None]
        c = np.argmax(above, axis=2)  # first sample at or above half (>= 1 when contrast > 0)
        ok = (wall - lumen > min_contrast_hu) & (c >= 1)
        c = np.maximum(c, 1)
        v0 = np.take_along_axis(vals, (c - 1)[:, :, None], axis=2)[:, :, 0]
        v1 = np.take_along_axis(vals, c[:, :, None], axis=2)[:, :, 0]
        w = np.clip((half - v0) / np.maximum(v1 - v0, 1e-6), 0.0, 1.0)
        r = (c - 1 + w) * (rmax[:, None] / (n_samples - 1))
        t = np.full(r.shape, np.nan)
        if model is not None and wall_ratio is not None:
            r = model.correct_with_wall(r, wall_ratio)
        elif model is not None:
            r, t = model.invert(r, wall - lumen)
        ok &= np.isfinite(r)
        enough = ok.sum(axis=1) >= n_rays // 2
        idx = np.arange(n)[sl][enough]
        out[idx] = np.nanmedian(np.where(ok, r, np.nan)[enough], axis=1)
        if model is not None and wall_ratio is None and enough.any():
            walls[idx] = np.nanmedian(np.where(ok, t, np.nan)[enough], axis=1)
        measured[sl] = enough
    return out, walls, measured


def extract_tree(mask: sitk.Image, params: CenterlineParams | None = None,
                 image: sitk.Image | None = None) -> AirwayTree:
    """Build the rooted airway tree of a lumen mask.

    Parameters
    ----------
    mask : SimpleITK.Image
        Binary airway lumen mask (nonzero inside) with the CT's geometry; only its largest
        26-connected component is used.
    params : CenterlineParams, optional
    image : SimpleITK.Image, optional
        The CT (HU) the mask comes from, same grid. When given, radii are measured on it by
        :func:`fwhm_radii` with the blur correction of a :class:`WallProfileModel` fitted on
        the trachea (the distance-transform radii serve as first guess and last fallback; see
        step 1 of the module docstring); otherwise they are the distance-transform radii, which
        follow the mask and lie inside the lumen edge.

    Returns
    -------
    AirwayTree
        Branches with centerlines (CT frame, m, proximal → distal), radii (m), generations
        (trachea 0), no lobe labels (see :mod:`bronchonav.airway.lobes`).

    Raises
    ------
    CTError
        If the mask is empty or its skeleton has no branch.
    """
    params = params or CenterlineParams()
    arr = sitk.GetArrayViewFromImage(mask) > 0
    if not arr.any():
        raise CTError("the airway segmentation is empty")
    arr = cc3d.largest_k(arr, k=1, connectivity=26) > 0
    nz = [np.flatnonzero(arr.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    box = tuple(slice(max(int(i[0]) - 1, 0), min(int(i[-1]) + 2, n)) for i, n in zip(nz, arr.shape))
    sub = np.ascontiguousarray(arr[box])
    spacing_kji = np.asarray(mask.GetSpacing(), dtype=float)[::-1]
    dist = edt.edt(sub, anisotropy=tuple(spacing_kji), parallel=2)
    skel = skeletonize(sub) > 0
    skel = cc3d.largest_k(skel, k=1, connectivity=26) > 0
    coords = np.argwhere(skel)
    if len(coords) < 2:
        raise CTError("the airway segmentation is too small to have a centerline")
    offset = np.array([b.start for b in box])
    pos_ct = index_to_ct(mask, coords + offset)  # m
    pos_mm = pos_ct * 1000.0
    radius_mm = dist[tuple(coords.T)]  # distance to the nearest voxel outside the lumen
    graph = _voxel_graph(coords, sub.shape, spacing_kji)
    degree = np.diff(graph.indptr)
    ends = np.flatnonzero(degree == 1)
    root = root_end(ends if len(ends) else np.arange(len(coords)), pos_ct[:, 2], radius_mm)
    depth_mm, pred = dijkstra(graph, directed=False, indices=root, return_predecessors=True)
    parent = np.where(pred < 0, -1, pred).astype(np.int64)
    if image is not None:
        radius_mm, measured = _measured_radii(image, box, spacing_kji, pos_ct, parent, depth_mm,
                                              radius_mm)
    else:
        measured = np.zeros(len(radius_mm), dtype=bool)
    bg = _Simplifier(_branch_graph(parent, root), pos_mm, radius_mm, params).run()
    if measured.any():
        radius_mm = _fill_unmeasured(bg, radius_mm, measured)
        bg = _Simplifier(bg, pos_mm, radius_mm, params).run()
    if bg.number_of_nodes() == 0:
        raise CTError("the airway segmentation has no branch")
    return AirwayTree(relocate_junctions(_branches(bg, pos_ct, radius_mm / 1000.0,
                                                   params.smooth_window)))


def _measured_radii(image: sitk.Image, box, spacing_kji, pos_ct: np.ndarray, parent: np.ndarray,
                    depth_mm: np.ndarray, edt_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radii (mm) at the skeleton voxels from the CT, corrected for the blur, and the mask of
    the voxels where the CT measurement succeeded (elsewhere the distance-transform radius
    ``edt_mm`` is returned).

    The CT is smoothed by 0.5 mm; rays are perpendicular to the direction towards the voxel's
    third ancestor in the voxel tree. The imaging model (:class:`WallProfileModel`) is measured
    on the trachea (skeleton voxels 10–50 mm below the root, as wide as the widest there) with
    the parenchyma level taken as the median of the scan's voxels in ``LUNG_RANGE_HU``; without
    a usable trachea fit the plain half-maximum radii are kept.

    1. Every voxel: half-maximum crossings and wall contrasts of rays with at least 150 HU of
       contrast, inverted for the lumen radius and the wall thickness
       (:meth:`WallProfileModel.invert`).
    2. Airways narrower than ``WIDE_SIGMAS`` blur sigmas, or too faint for step 1: their wall
       thickness cannot be told from their contrast (noise lifts the measured peak and the
       inferred wall), so it is taken as the median wall-to-lumen ratio of the wide airways
       of step 1, and rays of ``FAINT_CONTRAST_HU`` contrast suffice
       (:meth:`WallProfileModel.correct_with_wall`).
    """
    pad = [int(np.ceil(5.0 / s)) for s in spacing_kji]
    arr = sitk.GetArrayViewFromImage(image)
    crop = tuple(slice(max(b.start - p, 0), min(b.stop + p, n))
                 for b, p, n in zip(box, pad, arr.shape))
    hu = ndimage.gaussian_filter(arr[crop].astype(np.float32), [0.5 / s for s in spacing_kji],
                                 truncate=3.0)
    offset = [c.start for c in crop]
    anc = np.arange(len(parent))
    for _ in range(3):
        anc = np.where(parent[anc] >= 0, parent[anc], anc)
    tangents = pos_ct[anc] - pos_ct
    tangents[np.all(tangents == 0, axis=1)] = (0.0, 0.0, 1.0)  # the root: the trachea is vertical
    lung = hu[::2, ::2, ::2]
    lung = lung[(lung > LUNG_RANGE_HU[0]) & (lung < LUNG_RANGE_HU[1])]
    lung_hu = float(np.median(lung)) if lung.size >= 1000 else LUNG_HU_DEFAULT
    top = depth_mm <= 50.0
    trachea = top & (depth_mm >= 10.0) if np.count_nonzero(top & (depth_mm >= 10.0)) >= 5 else top
    trachea &= edt_mm >= 0.7 * edt_mm[trachea].max()
    model = fit_trachea_profile(hu, image, offset, pos_ct[trachea], tangents[trachea],
                                edt_mm[trachea] / 1000.0, lung_hu)
    guess = edt_mm / 1000.0
    radii, walls, measured = _half_max_radii(hu, image, offset, pos_ct, tangents, guess, 12, 40,
                                             150.0, model)
    if model is not None:
        wide = measured & (radii >= WIDE_SIGMAS * model.sigma_m)
        narrow = np.flatnonzero(~wide)
        if wide.sum() >= 20 and len(narrow):
            ratio = float(np.median(walls[wide] / radii[wide]))
            r2, _, ok = _half_max_radii(hu, image, offset, pos_ct[narrow], tangents[narrow],
                                        guess[narrow], 12, 40, FAINT_CONTRAST_HU, model, ratio)
            radii[narrow[ok]] = r2[ok]
            measured[narrow[ok]] = True
    return np.where(measured, radii * 1000.0, edt_mm), measured


def _fill_unmeasured(bg: nx.DiGraph, radius_mm: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Radii where a branch has radii measured on the CT at three points or more: its
    unmeasured voxels take the median of those instead of their distance-transform radius."""
    out = radius_mm.copy()
    for b in bg.nodes:
        path = np.asarray(bg.nodes[b]["path"])
        ok = measured[path]
        if 3 <= ok.sum() < len(path):
            out[path[~ok]] = np.median(radius_mm[path[ok]])
    return out


def _branches(bg: nx.DiGraph, pos_ct: np.ndarray, radius_m: np.ndarray, window: int) -> list[Branch]:
    """Number the branches breadth-first from the trachea; Branch objects in id order."""
    roots = [b for b in bg.nodes if bg.in_degree(b) == 0]
    if len(roots) != 1:
        raise CTError(f"the airway skeleton has {len(roots)} roots")
    ids = {}
    order = [roots[0]]
    for b in order:
        ids[b] = len(ids)
        order.extend(sorted(bg.successors(b), key=lambda c: tuple(pos_ct[c])))
    branches = []
    for b in order:
        path = bg.nodes[b]["path"]
        parent = next(iter(bg.predecessors(b)), None)
        pts = _smooth(pos_ct[path], window)
        rad = ndimage.median_filter(radius_m[path], size=3, mode="nearest")
        gen = 0 if parent is None else branches[ids[parent]].generation + 1
        branches.append(Branch(ids[b], None if parent is None else ids[parent], gen, pts, rad,
                               name="trachea" if parent is None else None))
    return branches
