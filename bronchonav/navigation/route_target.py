"""What the controller follows: a route's centerline, exit point and lesion, in the CT frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bronchonav.errors import InputError
from bronchonav.geometry import Polyline
from bronchonav.navigation.tool import planned_tool_length


@dataclass(frozen=True)
class RouteTarget:
    """A route reduced to what navigation needs.

    Attributes
    ----------
    path : Polyline
        Route centerline from the top of the trachea to the exit point, CT frame (m).
    branch_ids : tuple of int
        Airways of the route, trachea first.
    lesion_center : ndarray, shape (3,) or None
        Lesion centre, CT frame (m): the tip aims at it once at the exit point.
    """

    path: Polyline
    branch_ids: tuple
    lesion_center: np.ndarray | None = None

    @property
    def exit_point(self) -> np.ndarray:
        """The route's last point, CT frame (m)."""
        return self.path.points[-1]

    @property
    def tool_length(self) -> float:
        """Planned tool path length (m): the planner's straight tool path from the exit point
        to the lesion centre; 0 without a lesion."""
        if self.lesion_center is None:
            return 0.0
        return planned_tool_length(self.exit_point, self.lesion_center)

    @property
    def length(self) -> float:
        """Route length (m)."""
        return self.path.length

    @classmethod
    def from_route(cls, route) -> "RouteTarget":
        """From a feasible :class:`bronchonav.planning.Route`."""
        if not route.feasible or route.waypoints is None or len(route.waypoints) < 2:
            raise InputError("cannot navigate an infeasible route")
        lesion = None if route.target_center is None else np.asarray(route.target_center, float)
        return cls(Polyline(route.waypoints), tuple(int(b) for b in route.branch_ids), lesion)

    @classmethod
    def straightest(cls, tree, catheter_radius: float, max_generation: int = 4,
                    margin: float = 4e-4) -> "RouteTarget":
        """The path from the trachea that takes, at each bifurcation, the straightest child the
        catheter enters (entrance radius > ``catheter_radius + margin``, m), down to
        ``max_generation`` — a route for demonstrations and benchmarks without a planner."""
        path = [tree.root]
        while tree[path[-1]].generation < max_generation:
            b = tree[path[-1]]
            fits = [c for c in b.children if tree[c].radii[0] > catheter_radius + margin]
            if not fits:
                break
            path.append(max(fits, key=lambda c: tree[c].direction @ b.direction))
        points = np.vstack([tree[path[0]].points] + [tree[b].points[1:] for b in path[1:]])
        return cls(Polyline(points), tuple(int(b) for b in path))

    @classmethod
    def from_points(cls, points_ct, branch_ids=(), lesion_center=None,
                    tree=None) -> "RouteTarget":
        """From route waypoints (N, 3), CT frame (m) — e.g. a ``nav_msgs/Path``.

        Without ``branch_ids`` and with the :class:`~bronchonav.airway.AirwayTree` the route
        was planned in, the route's airways are those from the trachea down to the one nearest
        the middle of the route's last segment (a route follows the tree; the middle, not the
        last point, which may be a bifurcation's point and as near the children as the
        parent). Labelling each waypoint by its nearest centerline instead would add a sibling
        wherever a waypoint near a carina lies closer to the sibling's first samples — and a
        tip in that sibling would then count as on the route.
        """
        path = Polyline(points_ct)
        lesion = None if lesion_center is None else np.asarray(lesion_center, float)
        if not len(branch_ids) and tree is not None:
            end = path.points[-2:].mean(axis=0)
            branch_ids = tree.path_from_root(tree.nearest_branch(end))
        return cls(path, tuple(int(b) for b in branch_ids), lesion)
