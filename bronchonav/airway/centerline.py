"""Centerlines of an airway mask → a rooted :class:`~bronchonav.airway.tree.AirwayTree`.

Steps
-----
1. 3D skeleton of the mask (:func:`skimage.morphology.skeletonize`), lumen radius from the
   Euclidean distance transform (the ``edt`` package, anisotropic spacing).
2. The skeleton voxels form a graph (26-neighbours, edges weighted by their length); the root is
   the most superior skeleton end point (top of the trachea). A shortest-path tree from the root
   breaks every cycle (two airways touching, skeleton loops at thick junctions).
3. The voxel tree is cut into branches between the root, bifurcations and end points
   (a :class:`networkx.DiGraph` of branches). Spurs — terminal branches shorter than
   ``prune_k`` times their parent's lumen radius plus ``prune_min_mm`` — are
   removed, chains left with a single child are merged, and very short internal branches
   (skeleton artefacts of one bifurcation seen as two) are collapsed, until nothing changes.
4. Branch polylines are mapped to the CT frame (LPS, metres), smoothed with their end points
   fixed, and given radii from the distance transform (distance from the centerline voxel to
   the nearest voxel outside the mask, median-filtered). Generations are depths from the
   trachea. Radii follow the segmentation, which lies inside the blurred lumen edge: on the
   phantoms they are about 0.5–1 mm smaller than the true lumen radius.

Each child's first point is exactly its parent's last point (the bifurcation voxel).
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import edt
import networkx as nx
import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.morphology import skeletonize

from bronchonav.airway.tree import AirwayTree, Branch
from bronchonav.ct.io import index_to_ct
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

    prune_k: float = 2.0
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
    """Spur pruning, chain merging and short-branch collapsing on the branch graph."""

    def __init__(self, g: nx.DiGraph, pos_mm: np.ndarray, radius_mm: np.ndarray,
                 params: CenterlineParams):
        self.g, self.pos, self.rad, self.p = g, pos_mm, radius_mm, params

    def length(self, b) -> float:
        """Length (mm) of branch ``b``'s smoothed centerline, as it will be in the tree."""
        return _length(_smooth(self.pos[self.g.nodes[b]["path"]], self.p.smooth_window))

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
                self.g.nodes[b]["path"] = self.g.nodes[b]["path"] + self.g.nodes[c]["path"][1:]
                grandkids = list(self.g.successors(c))
                self.g.remove_node(c)
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
                changed = True
        return changed

    def collapse_short(self) -> bool:
        """Collapse internal branches shorter than ``merge_k`` times their start radius."""
        for b in sorted(self.g.nodes):
            preds = list(self.g.predecessors(b))
            kids = list(self.g.successors(b))
            if not preds or not kids:
                continue
            if self.length(b) < self.p.merge_k * self.start_radius(b):
                path = self.g.nodes[b]["path"]
                for c in kids:
                    self.g.nodes[c]["path"] = path + self.g.nodes[c]["path"][1:]
                    self.g.add_edge(preds[0], c)
                self.g.remove_node(b)
                return True
        return False

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


def extract_tree(mask: sitk.Image, params: CenterlineParams | None = None) -> AirwayTree:
    """Build the rooted airway tree of a lumen mask.

    Parameters
    ----------
    mask : SimpleITK.Image
        Binary airway lumen mask (nonzero inside) with the CT's geometry; only its largest
        26-connected component is used.
    params : CenterlineParams, optional

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
    candidates = ends if len(ends) else np.arange(len(coords))
    root = int(candidates[np.argmax(pos_ct[candidates, 2])])
    _, pred = dijkstra(graph, directed=False, indices=root, return_predecessors=True)
    parent = np.where(pred < 0, -1, pred).astype(np.int64)
    bg = _Simplifier(_branch_graph(parent, root), pos_mm, radius_mm, params).run()
    if bg.number_of_nodes() == 0:
        raise CTError("the airway segmentation has no branch")
    return _to_tree(bg, pos_ct, radius_mm / 1000.0, params.smooth_window)


def _to_tree(bg: nx.DiGraph, pos_ct: np.ndarray, radius_m: np.ndarray, window: int) -> AirwayTree:
    """Number the branches breadth-first from the trachea and build the AirwayTree."""
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
    return AirwayTree(branches)
