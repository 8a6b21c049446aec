"""The airway tree: branches with centerlines and radii, organised as a rooted tree.

Frames and units
----------------
Every coordinate is in the CT frame (``ct``): the scan's patient frame in the DICOM/ITK
LPS convention (+x towards the patient's left, +y towards the posterior, +z towards the head),
in metres. Radii and lengths are in metres.

The tree is stored as :class:`Branch` objects keyed by integer id; :meth:`AirwayTree.graph`
exposes it as a :class:`networkx.DiGraph` (edges parent → child, branch data as node
attributes) for graph algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx
import numpy as np
from scipy.spatial import cKDTree

from bronchonav.errors import MapError
from bronchonav.geometry import inside_tubes, resample_polyline, tangents

LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
"""Lobe labels: right upper/middle/lower, left upper/lower."""

SEGMENTS = {
    "RUL": ("RB1", "RB2", "RB3"),
    "RML": ("RB4", "RB5"),
    "RLL": ("RB6", "RB7", "RB8", "RB9", "RB10"),
    "LUL": ("LB1+2", "LB3", "LB4", "LB5"),
    "LLL": ("LB6", "LB8", "LB9", "LB10"),
}
"""Segmental bronchi of each lobe (Boyden): right B1 apical, B2 posterior, B3 anterior; B4
lateral, B5 medial (middle lobe); B6 superior, B7 medial basal, B8 anterior basal, B9 lateral
basal, B10 posterior basal. Left: B1+2 apicoposterior, B3 anterior, B4 superior and B5 inferior
lingula; B6 superior, B8 anterior(-medial) basal, B9 lateral basal, B10 posterior basal."""


@dataclass
class Branch:
    """One airway branch between two bifurcations (or a bifurcation and a terminal end).

    Attributes
    ----------
    id : int
        Branch id, unique in its tree.
    parent : int or None
        Id of the parent branch; ``None`` for the root (trachea).
    generation : int
        Branching generation; the trachea is 0 and a child is its parent's generation + 1.
    points : ndarray, shape (N, 3)
        Centerline polyline in the CT frame (m), ordered from the proximal end (at the parent's
        bifurcation) to the distal end. N >= 2.
    radii : ndarray, shape (N,)
        Lumen radius at each centerline point (m).
    lobe : str or None
        Lobe the branch supplies (one of :data:`LOBES`), ``None`` above the lobar bronchi or
        where unknown.
    children : list of int
        Ids of the child branches.
    name : str or None
        Anatomical name where known (``"trachea"``, ``"RMB"``, ...).
    segment : str or None
        Bronchopulmonary segment the branch supplies (one of :data:`SEGMENTS`), ``None``
        above the segmental bronchi or where unknown.
    """

    id: int
    parent: int | None
    generation: int
    points: np.ndarray
    radii: np.ndarray
    lobe: str | None = None
    children: list[int] = field(default_factory=list)
    name: str | None = None
    segment: str | None = None

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=float).reshape(-1, 3)
        self.radii = np.asarray(self.radii, dtype=float).reshape(-1)

    @property
    def length(self) -> float:
        """Arc length of the centerline (m)."""
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())

    @property
    def start(self) -> np.ndarray:
        """Proximal end of the centerline, CT frame (m)."""
        return self.points[0]

    @property
    def end(self) -> np.ndarray:
        """Distal end of the centerline, CT frame (m)."""
        return self.points[-1]

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from the proximal to the distal end, CT frame."""
        d = self.points[-1] - self.points[0]
        return d / np.linalg.norm(d)

    @property
    def mean_radius(self) -> float:
        """Mean lumen radius along the branch (m)."""
        return float(np.mean(self.radii))

    @property
    def diameter(self) -> float:
        """Mean lumen diameter (m)."""
        return 2.0 * self.mean_radius


@dataclass
class Nodule:
    """A solid lung lesion, modelled as a sphere.

    Attributes
    ----------
    id : str
        Nodule id, unique in its map (``"N1"``, ...).
    center : ndarray, shape (3,)
        Centre in the CT frame (m).
    radius : float
        Radius (m).
    lobe : str or None
        Lobe containing the nodule, where known.
    note : str
        Free text, e.g. how the phantom placed it (``"near airway"``, ``"far from airways"``).
    """

    id: str
    center: np.ndarray
    radius: float
    lobe: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        self.center = np.asarray(self.center, dtype=float).reshape(3)
        self.radius = float(self.radius)


@dataclass
class CenterlineSamples:
    """The tree's centerlines resampled densely, for nearest-point queries.

    All arrays have one row per sample; coordinates in the CT frame (m).
    """

    points: np.ndarray
    """(M, 3) sample positions (m)."""
    radii: np.ndarray
    """(M,) lumen radius at each sample (m)."""
    branch_ids: np.ndarray
    """(M,) id of the branch each sample lies on."""
    arclength: np.ndarray
    """(M,) arc length from the start of that branch (m)."""
    tangents: np.ndarray
    """(M, 3) unit centerline tangent, pointing distally."""


class AirwayTree:
    """A rooted airway tree in the CT frame.

    Parameters
    ----------
    branches : iterable of Branch
        The branches; ``children`` lists are rebuilt from the ``parent`` links.
    validate : bool
        Check the tree invariants (see :meth:`validate`) on construction.

    Examples
    --------
    >>> import numpy as np
    >>> trachea = Branch(0, None, 0, [[0, 0, 0], [0, 0, -0.1]], [0.009, 0.009], name="trachea")
    >>> left = Branch(1, 0, 1, [[0, 0, -0.1], [0.03, 0, -0.13]], [0.006, 0.006])
    >>> right = Branch(2, 0, 1, [[0, 0, -0.1], [-0.03, 0, -0.13]], [0.006, 0.006])
    >>> tree = AirwayTree([trachea, left, right])
    >>> tree.root, tree.max_generation, len(tree)
    (0, 1, 3)
    """

    def __init__(self, branches, validate: bool = True) -> None:
        self.branches: dict[int, Branch] = {b.id: b for b in branches}
        for b in self.branches.values():
            b.children = []
        for b in sorted(self.branches.values(), key=lambda b: b.id):
            if b.parent is not None and b.parent in self.branches:
                self.branches[b.parent].children.append(b.id)
        roots = [b.id for b in self.branches.values() if b.parent is None]
        self.root: int = roots[0] if roots else -1
        if validate:
            self.validate()

    # -- container protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.branches)

    def __iter__(self):
        return iter(self.branches.values())

    def __getitem__(self, branch_id: int) -> Branch:
        return self.branches[branch_id]

    def __contains__(self, branch_id) -> bool:
        return branch_id in self.branches

    # -- structure ----------------------------------------------------------------------
    @property
    def trachea(self) -> Branch:
        """The root branch (generation 0)."""
        return self.branches[self.root]

    @property
    def max_generation(self) -> int:
        """Largest generation in the tree."""
        return max(b.generation for b in self.branches.values())

    @property
    def total_length(self) -> float:
        """Sum of all branch lengths (m)."""
        return float(sum(b.length for b in self.branches.values()))

    def lobes(self) -> dict[str, int]:
        """Number of branches per lobe label (branches without a lobe are not counted)."""
        counts: dict[str, int] = {}
        for b in self.branches.values():
            if b.lobe is not None:
                counts[b.lobe] = counts.get(b.lobe, 0) + 1
        return dict(sorted(counts.items()))

    def leaves(self) -> list[int]:
        """Ids of the terminal branches."""
        return [b.id for b in self.branches.values() if not b.children]

    def main_bronchus(self, point_ct, same_side: bool = True) -> "Branch":
        """The main bronchus on the side of ``point_ct`` (CT frame; LPS: +x is patient left,
        decided against the end of the trachea), or the other one with ``same_side=False``."""
        end = self.trachea.end
        side = float(np.sign(np.asarray(point_ct, dtype=float)[0] - end[0])) or 1.0
        if not same_side:
            side = -side
        return max((self[c] for c in self.trachea.children),
                   key=lambda b: side * (b.end[0] - end[0]))

    def path_from_root(self, branch_id: int) -> list[int]:
        """Branch ids from the trachea down to ``branch_id`` (inclusive)."""
        path = [branch_id]
        while self.branches[path[-1]].parent is not None:
            path.append(self.branches[path[-1]].parent)
        return path[::-1]

    def graph(self) -> nx.DiGraph:
        """The tree as a networkx DiGraph: one node per branch id, edges parent → child.

        Node attributes: ``generation``, ``lobe``, ``name``, ``length`` (m), ``radius`` (mean, m),
        ``points`` (N, 3) and ``radii`` (N,) in the CT frame (m). Edge attribute ``angle``:
        the angle between parent and child directions (rad).
        """
        g = nx.DiGraph(root=self.root, frame="ct")
        for b in self.branches.values():
            g.add_node(b.id, generation=b.generation, lobe=b.lobe, segment=b.segment, name=b.name, length=b.length,
                       radius=b.mean_radius, points=b.points, radii=b.radii)
        for b in self.branches.values():
            if b.parent is not None:
                cosang = np.clip(np.dot(self.branches[b.parent].direction, b.direction), -1, 1)
                g.add_edge(b.parent, b.id, angle=float(np.arccos(cosang)))
        return g

    def validate(self, join_tolerance: float = 2e-3) -> None:
        """Check the tree invariants; raise :class:`MapError` naming the first violation.

        Invariants: exactly one root, at generation 0; every parent exists; the parent links form
        a tree reaching every branch from the root; each child's generation is its parent's + 1;
        every branch has >= 2 finite points and finite positive radii of matching length; each
        child starts within ``join_tolerance`` (m) of its parent's distal end.
        """
        if not self.branches:
            raise MapError("airway tree is empty")
        roots = [b.id for b in self.branches.values() if b.parent is None]
        if len(roots) != 1:
            raise MapError(f"airway tree must have exactly one root, found {len(roots)}")
        if self.branches[self.root].generation != 0:
            raise MapError("the root branch (trachea) must have generation 0")
        for b in self.branches.values():
            if b.points.shape[0] < 2:
                raise MapError(f"branch {b.id} has fewer than 2 centerline points")
            if b.radii.shape[0] != b.points.shape[0]:
                raise MapError(f"branch {b.id}: {b.radii.shape[0]} radii for {b.points.shape[0]} points")
            if not (np.all(np.isfinite(b.points)) and np.all(np.isfinite(b.radii))):
                raise MapError(f"branch {b.id} has non-finite points or radii")
            if np.any(b.radii <= 0):
                raise MapError(f"branch {b.id} has a non-positive radius")
            if b.parent is None:
                continue
            if b.parent not in self.branches:
                raise MapError(f"branch {b.id} names a missing parent {b.parent}")
            parent = self.branches[b.parent]
            if b.generation != parent.generation + 1:
                raise MapError(f"branch {b.id} has generation {b.generation}, "
                               f"parent {parent.id} has {parent.generation}")
            gap = float(np.linalg.norm(b.start - parent.end))
            if gap > join_tolerance:
                raise MapError(f"branch {b.id} starts {gap * 1e3:.1f} mm from its parent's end")
        reached = set(nx.descendants(self.graph(), self.root)) | {self.root}
        if len(reached) != len(self.branches):
            raise MapError(f"{len(self.branches) - len(reached)} branches are not reachable from the root")

    # -- geometry queries -----------------------------------------------------------------
    def samples(self, step: float = 5e-4) -> CenterlineSamples:
        """All centerlines resampled every ``step`` metres (cached for the default step)."""
        if step == 5e-4:
            return self._default_samples
        return self._sample(step)

    @cached_property
    def _default_samples(self) -> CenterlineSamples:
        return self._sample(5e-4)

    def _sample(self, step: float) -> CenterlineSamples:
        pts, rad, ids, arc, tan = [], [], [], [], []
        for b in self.branches.values():
            p, r, s = resample_polyline(b.points, b.radii, step)
            t = tangents(p)
            pts.append(p), rad.append(r), ids.append(np.full(len(p), b.id)), arc.append(s)
            tan.append(t)
        return CenterlineSamples(np.vstack(pts), np.concatenate(rad), np.concatenate(ids),
                                 np.concatenate(arc), np.vstack(tan))

    @cached_property
    def _kdtree(self) -> cKDTree:
        return cKDTree(self._default_samples.points)

    def nearest(self, points_ct: np.ndarray):
        """Nearest centerline sample to each query point.

        Parameters
        ----------
        points_ct : ndarray, shape (3,) or (K, 3)
            Query points in the CT frame (m).

        Returns
        -------
        distance : ndarray, shape (K,)
            Distance to the nearest centerline sample (m), within 0.25 mm of the true
            point-to-polyline distance.
        index : ndarray of int, shape (K,)
            Index into :meth:`samples` (default step) of that sample; use it to read the
            branch id, radius and tangent there.
        """
        q = np.atleast_2d(np.asarray(points_ct, dtype=float))
        d, i = self._kdtree.query(q)
        return d, i

    def nearest_branch(self, point_ct) -> int:
        """Id of the branch whose centerline sample is nearest to ``point_ct`` (3,), CT frame
        (m) — see :meth:`nearest`."""
        _, index = self.nearest(point_ct)
        return int(self.samples().branch_ids[int(index[0])])

    def inside_lumen(self, points_ct: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether each point lies within the lumen, modelled as the union of the branch tubes.

        A point is inside when some centerline sample lies within that sample's radius minus
        ``margin`` (m). Checking the union rather than only the nearest sample matters at
        bifurcations, where a narrow child's axis can be nearer than the wide parent's wall.
        """
        samples = self._default_samples
        return inside_tubes(points_ct, self._kdtree, samples.radii, clearance=margin)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box of all centerlines, CT frame (m): (min, max)."""
        p = self._default_samples.points
        return p.min(axis=0), p.max(axis=0)
