"""Device-aware route search from the top of the trachea to a lesion.

The planner precomputes, once per map and set of device constraints, every centerline sample the
catheter can reach (diameter, bifurcation bends and in-branch curvature all within the device's
limits along the whole way from the trachea) together with the route length, bend severity and
smallest clearance up to it. A query then only looks at the reachable samples within tool reach
of the lesion (a k-d tree ball query), keeps those whose tool path meets the angle (and pleura)
constraints, and ranks them by the cost of :mod:`bronchonav.planning.cost` — those from which
the tip can turn to point at the lesion in the lumen there first. When no sample
qualifies, it explains why with structured :class:`~bronchonav.planning.route.Reason` objects.

Coordinates are in the CT frame (LPS, m); angles in radians.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from bronchonav.airway.tree import Nodule
from bronchonav.errors import InputError, MapError
from bronchonav.geometry import arc_length, catheter_fits, resample_polyline
from bronchonav.planning.constraints import DeviceConstraints
from bronchonav.planning.cost import CostWeights, largest_tip_angle, route_cost, turn_deviation
from bronchonav.planning.exit import LungRegion, pleura_crossing, tool_geometry
from bronchonav.planning.route import Reason, Route

_TANGENT_HALF_WINDOW = 2e-3
"""Half-length of the chord that estimates the airway direction at a sample (m)."""
_BEND_WINDOW = 5e-3
"""Length of the branch end (start) whose chord gives a parent's (child's) direction at a
bifurcation (m)."""
_CURVATURE_HALF_WINDOW = 3e-3
"""Half-window over which the in-branch turn of the centerline is measured (m)."""


@dataclass
class _Block:
    """The first constraint that stops the catheter on the way to a sample."""

    constraint: str
    branch_id: int
    measured: float
    limit: float
    unit: str
    detail: str


class RoutePlanner:
    """Plans routes on one airway map for one catheter.

    Parameters
    ----------
    airway_map : bronchonav.maps.AirwayMap
        The map (tree, nodules, optional lung mask), CT frame (m).
    constraints : DeviceConstraints, optional
        Device limits; the defaults when omitted.
    weights : CostWeights, optional
        Cost weights; the defaults when omitted.
    step : float
        Spacing of the centerline samples that serve as waypoints and exit candidates (m).
    body_margin : float
        Without a lung mask, targets farther than this outside the bounding box of the airway
        centerlines are rejected as outside the body (m). With a lung mask, the box of the lung
        voxels grown by 5 mm is used instead.

    Examples
    --------
    >>> planner = RoutePlanner(airway_map)                    # doctest: +SKIP
    >>> best = planner.plan("N1", k=3)[0]                     # doctest: +SKIP
    >>> best.feasible, best.length, best.exit_distance_center # doctest: +SKIP
    """

    def __init__(self, airway_map, constraints: DeviceConstraints | None = None,
                 weights: CostWeights | None = None, step: float = 1e-3,
                 body_margin: float = 50e-3) -> None:
        if not (math.isfinite(step) and step > 0):
            raise InputError(f"sample step must be positive, got {step!r}")
        self.map = airway_map
        self.tree = airway_map.tree
        self.constraints = constraints or DeviceConstraints()
        self.weights = weights or CostWeights()
        self.step = float(step)
        self.lung = LungRegion(airway_map.lung_mask) if airway_map.lung_mask is not None else None
        if self.lung is not None:
            lo, hi = self.lung.bounds()
            self._body = (lo - 5e-3, hi + 5e-3)
        else:
            lo, hi = self.tree.bounds()
            self._body = (lo - body_margin, hi + body_margin)
        self._precompute()

    # -- precomputation ---------------------------------------------------------------------
    def _precompute(self) -> None:
        c = self.constraints
        tree = self.tree
        order = self._bfs_order()
        pts, rad, tan, bid = [], [], [], []
        self._slice: dict[int, tuple[int, int]] = {}
        n_total = 0
        for b_id in order:
            b = tree[b_id]
            p, r, _ = resample_polyline(b.points, b.radii, self.step)
            pts.append(p), rad.append(r), tan.append(_chord_tangents(p, _TANGENT_HALF_WINDOW))
            bid.append(np.full(len(p), b_id))
            self._slice[b_id] = (n_total, n_total + len(p))
            n_total += len(p)
        self.points = np.vstack(pts)
        self.radii = np.concatenate(rad)
        self.tangents = np.vstack(tan)
        self.branch_of = np.concatenate(bid)
        self.clearance = self.radii - c.catheter_radius
        # the largest angle off the airway the tip can turn to at each sample (rad)
        self.tip_turn = (largest_tip_angle(self.clearance, c.min_bend_radius)
                         if c.check_tip_turn else np.full(len(self.points), np.pi))

        n = len(self.points)
        self.arclength = np.zeros(n)
        self.bend_sq = np.zeros(n)
        self.min_clear = np.zeros(n)
        self.reachable = np.zeros(n, dtype=bool)
        self._entry_bend: dict[int, float] = {}
        self._entry_block: dict[int, _Block | None] = {}
        self._fail_block: dict[int, _Block] = {}
        self._skip_first: dict[int, bool] = {}
        branch_end_state: dict[int, tuple] = {}
        for b_id in order:
            b = tree[b_id]
            lo, hi = self._slice[b_id]
            p = self.points[lo:hi]
            s_local = arc_length(p)
            if b.parent is None:
                offset, bend_sum, clear_in, block = 0.0, 0.0, np.inf, None
                self._entry_bend[b_id] = 0.0
                self._skip_first[b_id] = False
            else:
                p_hi = self._slice[b.parent][1]
                parent_end = self.points[p_hi - 1]
                gap = float(np.linalg.norm(p[0] - parent_end))
                self._skip_first[b_id] = gap < 1e-6
                p_offset, p_bend, p_clear, p_block, p_passable = branch_end_state[b.parent]
                theta = _bend_angle(tree[b.parent].points, b.points)
                self._entry_bend[b_id] = theta
                offset = p_offset + gap
                bend_sum = p_bend + theta ** 2
                clear_in = p_clear
                block = p_block
                if block is None and not p_passable:
                    block = self._fail_block[b.parent]
                if block is None:
                    block = self._bifurcation_block(b_id, theta, self.clearance[p_hi - 1],
                                                    self.clearance[lo])
            self._entry_block[b_id] = block
            self.arclength[lo:hi] = offset + s_local
            self.bend_sq[lo:hi] = bend_sum
            self.min_clear[lo:hi] = np.minimum(clear_in, np.minimum.accumulate(self.clearance[lo:hi]))
            ok, fail_block = self._branch_passable(b_id, lo, hi)
            first_fail = int(np.argmin(ok)) if not ok.all() else hi - lo
            if fail_block is not None:
                self._fail_block[b_id] = fail_block
            if block is None:
                self.reachable[lo:lo + first_fail] = True
            branch_end_state[b_id] = (offset + s_local[-1], bend_sum,
                                      float(self.min_clear[hi - 1]), block, first_fail == hi - lo)
        self._paths = {b_id: self.tree.path_from_root(b_id) for b_id in order}
        self._reach_idx = np.flatnonzero(self.reachable)
        self._reach_kd = cKDTree(self.points[self._reach_idx]) if self._reach_idx.size else None
        self._all_kd = cKDTree(self.points)
        if self.lung is not None:
            self.tree.nearest(self.points[:1])  # builds the lumen test's k-d tree (pleura check)

    def _bfs_order(self) -> list[int]:
        order, queue = [], [self.tree.root]
        while queue:
            b_id = queue.pop(0)
            order.append(b_id)
            queue.extend(self.tree[b_id].children)
        return order

    def _bifurcation_block(self, b_id: int, theta: float, clear_parent: float,
                           clear_child: float) -> _Block | None:
        """The bend constraint at the bifurcation into ``b_id``, or None when it holds."""
        c = self.constraints
        if theta > c.max_articulation:
            return _Block("bend", b_id, theta, c.max_articulation, "rad",
                          f"the bend into branch {self._label(b_id)} is {math.degrees(theta):.0f}° "
                          f"(max articulation {math.degrees(c.max_articulation):.0f}°)")
        need = float(turn_deviation(theta, c.min_bend_radius))
        room = max(0.0, clear_parent) + max(0.0, clear_child)
        if need > room:
            return _Block("bend", b_id, need, room, "m",
                          f"turning {math.degrees(theta):.0f}° into branch {self._label(b_id)} "
                          f"with a {c.min_bend_radius * 1e3:.1f} mm minimum bend radius needs "
                          f"{need * 1e3:.2f} mm of room, the airway leaves {room * 1e3:.2f} mm")
        return None

    def _branch_passable(self, b_id: int, lo: int, hi: int) -> tuple[np.ndarray, _Block | None]:
        """Per-sample passability inside a branch (diameter, curvature) and the first failure."""
        c = self.constraints
        diam = 2.0 * self.radii[lo:hi]
        ok_diam = catheter_fits(self.radii[lo:hi], 0.5 * c.required_diameter)
        phi = _turn_angles(self.points[lo:hi], _CURVATURE_HALF_WINDOW)
        need = turn_deviation(phi, c.min_bend_radius)
        room = 2.0 * np.maximum(self.clearance[lo:hi], 0.0)
        ok_curv = need <= room + 1e-12
        ok = ok_diam & ok_curv
        if ok.all():
            return ok, None
        j = int(np.argmin(ok))
        if not ok_diam[j]:
            short = c.required_diameter - diam[j]
            block = _Block("diameter", b_id, float(diam[j]), c.required_diameter, "m",
                           f"branch {self._label(b_id)} narrows to {diam[j] * 1e3:.2f} mm "
                           f"(short by {_mm_or_um(short)})")
        else:
            block = _Block("curvature", b_id, float(need[j]), float(room[j]), "m",
                           f"branch {self._label(b_id)} turns {math.degrees(phi[j]):.0f}° within "
                           f"{2 * _CURVATURE_HALF_WINDOW * 1e3:.0f} mm; with a "
                           f"{c.min_bend_radius * 1e3:.1f} mm minimum bend radius the catheter "
                           f"needs {need[j] * 1e3:.2f} mm of room, the airway leaves "
                           f"{room[j] * 1e3:.2f} mm")
        return ok, block

    def _label(self, b_id: int) -> str:
        b = self.tree[b_id]
        parts = [f"gen {b.generation}"]
        if b.name:
            parts.insert(0, b.name)
        if b.lobe and b.lobe != b.name:
            parts.append(b.lobe)
        return f"{b_id} ({', '.join(parts)})"

    # -- queries ------------------------------------------------------------------------------
    @property
    def n_branches(self) -> int:
        """Number of branches in the map."""
        return len(self.tree)

    @property
    def reachable_points(self) -> np.ndarray:
        """All reachable centerline samples, (M, 3) CT frame (m)."""
        return self.points[self._reach_idx]

    def resolve_target(self, target, radius: float | None = None) -> tuple[str | None, np.ndarray, float]:
        """Validate a target; return (nodule id or None, centre (3,) in m, radius in m).

        ``target`` is a nodule id (str), a :class:`~bronchonav.airway.tree.Nodule`, or a point
        (3,) in the CT frame (m). Raises :class:`MapError` for an unknown nodule id and
        :class:`InputError` for a non-finite point or one outside the body.
        """
        if isinstance(target, str):
            nodule = self.map.nodule(target)
            target_id, center, rad = nodule.id, nodule.center, nodule.radius
        elif isinstance(target, Nodule):
            target_id, center, rad = target.id, target.center, target.radius
        else:
            try:
                center = np.asarray(target, dtype=float).reshape(3)
            except (TypeError, ValueError):
                raise InputError(f"target must be a nodule id or a point (x, y, z) in metres, "
                                 f"got {target!r}") from None
            target_id, rad = None, 0.0
        if radius is not None:
            rad = float(radius)
        if not np.all(np.isfinite(center)):
            raise InputError(f"target {center.tolist()} has non-finite coordinates")
        if not (math.isfinite(rad) and rad >= 0):
            raise InputError(f"target radius must be finite and >= 0, got {rad!r}")
        lo, hi = self._body
        if np.any(center < lo) or np.any(center > hi):
            what = "the lungs' bounding box" if self.lung is not None else "the body (airway box + margin)"
            raise InputError(f"target {np.round(center * 1e3, 1).tolist()} mm lies outside {what} "
                             f"[{np.round(lo * 1e3, 1).tolist()} .. {np.round(hi * 1e3, 1).tolist()}] mm "
                             f"(coordinates are CT-frame metres)")
        if self.lung is not None and self.lung.label_at(center[None])[0] == 0 and target_id is None:
            raise InputError(f"target {np.round(center * 1e3, 1).tolist()} mm lies outside the "
                             f"lung mask")
        return target_id, center, rad

    def plan(self, target, k: int = 1, radius: float | None = None) -> list[Route]:
        """Routes to a target, best first.

        Parameters
        ----------
        target : str or Nodule or array_like (3,)
            Nodule id, nodule, or lesion centre in the CT frame (m).
        k : int
            Number of routes wanted: the best and up to ``k - 1`` alternatives, each exiting from
            a different branch.
        radius : float, optional
            Lesion radius (m) for a point target (default 0) or to override a nodule's.

        Returns
        -------
        list of Route
            Up to ``k`` feasible routes ranked by cost, or a single infeasible route whose
            ``reasons`` say which constraints fail, by how much, and the nearest reachable point.
        """
        t0 = time.perf_counter()
        if not (isinstance(k, (int, np.integer)) and k >= 1):
            raise InputError(f"k must be a positive integer, got {k!r}")
        target_id, center, rad = self.resolve_target(target, radius)
        routes = self._search(center, int(k))
        if routes:
            out = [self._build_route(g, target_id, center, rad, rank, cost)
                   for rank, (g, cost) in enumerate(routes)]
        else:
            out = [Route(target_id, center, rad, feasible=False,
                         reasons=self._diagnose(center), map_name=self.map.name,
                         constraints=self.constraints.to_dict())]
        ms = (time.perf_counter() - t0) * 1e3
        for r in out:
            r.planning_ms = ms
        return out

    def plan_all(self, k: int = 1) -> dict[str, list[Route]]:
        """Routes to every nodule of the map: ``{nodule id: plan(id, k)}``."""
        return {n.id: self.plan(n.id, k) for n in self.map.nodules}

    # -- search ----------------------------------------------------------------------------------
    def _candidates(self, center: np.ndarray):
        """Reachable samples within tool reach: (global indices, tool length, tool angle)."""
        c = self.constraints
        if self._reach_kd is None:
            return np.zeros(0, dtype=int), np.zeros(0), np.zeros(0)
        local = np.asarray(self._reach_kd.query_ball_point(center, c.tool_max_length), dtype=int)
        g = self._reach_idx[local]
        length, angle = tool_geometry(self.points[g], self.tangents[g], center)
        keep = length <= c.tool_max_length
        return g[keep], length[keep], angle[keep]

    def _pleura_active(self) -> bool:
        return self.lung is not None and self.constraints.check_pleura

    def _search(self, center: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Best exit sample per branch, best ``k`` branches: [(global index, cost)]."""
        g, length, angle = self._candidates(center)
        ok = angle <= self.constraints.tool_max_angle + 1e-12
        g, length, angle = g[ok], length[ok], angle[ok]
        if not g.size:
            return []
        cost = route_cost(self.arclength[g], length, self.bend_sq[g], self.min_clear[g],
                          self.weights)
        # exits from which the tip can turn to point at the lesion first, by cost; then the
        # others, by cost (there the final aim falls short of the lesion's centre)
        aimable = angle <= self.tip_turn[g] + 1e-12
        order = np.lexsort((cost, ~aimable))
        chosen: list[tuple[int, float]] = []
        used: set[int] = set()
        for j in order:
            b = int(self.branch_of[g[j]])
            if b in used:
                continue
            if self._pleura_active() and self._crossing(g[j], center) > 0:
                continue
            used.add(b)
            chosen.append((int(g[j]), float(cost[j])))
            if len(chosen) == k:
                break
        return chosen

    def _crossing(self, g: int, center: np.ndarray) -> float:
        return pleura_crossing(self.points[g], center, self.lung, self.tree.inside_lumen)

    def _build_route(self, g: int, target_id, center, rad, rank: int, cost: float) -> Route:
        c = self.constraints
        b_exit = int(self.branch_of[g])
        path = self._paths[b_exit]
        if self._skip_first[b_exit] and g == self._slice[b_exit][0]:
            # the child's first sample is its parent's last point: the route ends at the
            # bifurcation, in the parent (the tool leaves along the child's direction)
            path = path[:-1]
        pieces = []
        for b_id in path:
            lo, hi = self._slice[b_id]
            if b_id == b_exit:
                hi = g + 1
            if self._skip_first[b_id]:
                lo += 1
            pieces.append(np.arange(lo, hi))
        idx = np.concatenate(pieces)
        wp = self.points[idx]
        arclength = arc_length(wp)
        length, angle = tool_geometry(self.points[g][None], self.tangents[g][None], center)
        tool_len = float(length[0])
        return Route(
            target_id=target_id, target_center=center, target_radius=rad, feasible=True,
            reasons=[], branch_ids=list(path),
            generations=[self.tree[b].generation for b in path],
            lobes=[self.tree[b].lobe for b in path],
            waypoints=wp, waypoint_branch=self.branch_of[idx], waypoint_radius=self.radii[idx],
            clearance=self.clearance[idx], arclength=arclength,
            bifurcation_bends=np.array([self._entry_bend[b] for b in path[1:]]),
            length=float(arclength[-1]), exit_point=self.points[g].copy(),
            exit_direction=self.tangents[g].copy(), tool_start=self.points[g].copy(),
            tool_end=center.copy(), tool_length=tool_len, tool_angle=float(angle[0]),
            exit_distance_center=tool_len, exit_distance_surface=max(0.0, tool_len - rad),
            cost=cost, rank=rank, map_name=self.map.name, constraints=c.to_dict())

    # -- explaining infeasibility ---------------------------------------------------------------
    def _diagnose(self, center: np.ndarray) -> list[Reason]:
        c = self.constraints
        reasons: list[Reason] = []
        if self._reach_kd is not None:
            d_r, j = self._reach_kd.query(center)
            near_pt = self.points[self._reach_idx[j]].tolist()
            d_r = float(d_r)
        else:
            d_r, near_pt = float("inf"), None
        near = {"nearest_reachable_point": near_pt,
                "nearest_reachable_distance": None if near_pt is None else d_r}
        g, length, angle = self._candidates(center)
        lim_mm = c.tool_max_length * 1e3
        if near_pt is None:
            pass  # the block reason below explains it
        elif not g.size:
            reasons.append(Reason(
                "exit_distance", f"nearest reachable airway point is {d_r * 1e3:.1f} mm from the "
                f"lesion centre (limit {lim_mm:.0f} mm) at {np.round(np.array(near_pt) * 1e3, 1).tolist()} mm",
                d_r, c.tool_max_length, d_r - c.tool_max_length, "m", **near))
        elif not np.any(angle <= c.tool_max_angle + 1e-12):
            best = float(angle.min())
            reasons.append(Reason(
                "tool_angle", f"every reachable exit within {lim_mm:.0f} mm of the lesion sees it at "
                f"{math.degrees(best):.0f}° or more from the airway direction (limit "
                f"{math.degrees(c.tool_max_angle):.0f}°); nearest reachable point "
                f"{d_r * 1e3:.1f} mm away", best, c.tool_max_angle, best - c.tool_max_angle, "rad",
                **near))
        else:
            ok = angle <= c.tool_max_angle + 1e-12
            crossing = min(self._crossing(int(x), center) for x in g[ok])
            reasons.append(Reason(
                "pleura", f"every reachable tool path within {lim_mm:.0f} mm and "
                f"{math.degrees(c.tool_max_angle):.0f}° leaves the lung (shortest part outside: "
                f"{crossing * 1e3:.1f} mm); nearest reachable point {d_r * 1e3:.1f} mm away",
                crossing, 0.0, crossing, "m", **near))
        block = self._blocking(center)
        if block is not None:
            reasons.append(block_reason(block, self, near))
        if not reasons:  # cannot happen: an empty reachable set always has a blocking cause
            raise MapError("planner found no route and no reason; the map is inconsistent")
        return reasons

    def _blocking(self, center: np.ndarray) -> tuple[_Block, float] | None:
        """The constraint that keeps the catheter from the best unreachable exit, if any.

        Looks at every airway sample (reachable or not) meeting the tool constraints, takes the
        cheapest one that is unreachable, or else the nearest airway sample when it is
        unreachable, and returns its blocking constraint and its distance to the lesion.
        """
        c = self.constraints
        idx = np.asarray(self._all_kd.query_ball_point(center, c.tool_max_length), dtype=int)
        if idx.size:
            length, angle = tool_geometry(self.points[idx], self.tangents[idx], center)
            sel = (angle <= c.tool_max_angle + 1e-12) & ~self.reachable[idx]
            if sel.any():
                cand, length = idx[sel], length[sel]
                cost = route_cost(self.arclength[cand], length, self.bend_sq[cand],
                                  self.min_clear[cand], self.weights)
                j = int(np.argmin(cost))
                return self._block_of(int(cand[j])), float(length[j])
        d, j = self._all_kd.query(center)
        if not self.reachable[j]:
            return self._block_of(int(j)), float(d)
        return None

    def _block_of(self, g: int) -> _Block:
        b_id = int(self.branch_of[g])
        block = self._entry_block[b_id]
        return block if block is not None else self._fail_block[b_id]


def block_reason(block_and_distance, planner: RoutePlanner, near: dict) -> Reason:
    """A :class:`Reason` for a blocking constraint on the way to the airway nearest the lesion."""
    block, dist = block_and_distance
    c = planner.constraints
    b = planner.tree[block.branch_id]
    where = f"the airway {dist * 1e3:.1f} mm from the lesion lies beyond it"
    if block.constraint == "diameter":
        central = {0: "trachea", 1: "main bronchi"}.get(b.generation)
        head = (f"catheter {c.outer_diameter * 1e3:.1f} mm + {c.diameter_margin * 1e3:.1f} mm margin "
                f"needs {c.required_diameter * 1e3:.1f} mm")
        fits = f"a catheter of at most {_floor_mm(block.measured - c.diameter_margin)} mm would pass"
        if central:
            deepest = _deepest_reachable(planner)
            reach = ("it cannot enter the trachea" if deepest is None
                     else f"it gets no deeper than generation {deepest}")
            msg = (f"{head}: it does not fit the trachea/main bronchi ({block.detail}); {reach}; "
                   f"{where}; {fits}")
        else:
            msg = f"{head}: {block.detail}; {where}; {fits}"
    else:
        msg = f"{block.detail}; {where}"
    return Reason(block.constraint, msg, block.measured, block.limit,
                  abs(block.limit - block.measured), block.unit, block.branch_id, **near)


def _deepest_reachable(planner: RoutePlanner) -> int | None:
    """Largest generation with a reachable sample, None when nothing is reachable."""
    if not planner._reach_idx.size:
        return None
    return max(planner.tree[int(b)].generation
               for b in np.unique(planner.branch_of[planner._reach_idx]))


def plan_route(airway_map, target, constraints: DeviceConstraints | None = None,
               k: int = 1, radius: float | None = None) -> list[Route]:
    """One-shot planning: ``RoutePlanner(airway_map, constraints).plan(target, k, radius)``.

    Build a :class:`RoutePlanner` once and reuse it for repeated queries (the precomputation
    dominates a single call).
    """
    return RoutePlanner(airway_map, constraints).plan(target, k, radius)


# -- geometry helpers ------------------------------------------------------------------------------

def _floor_mm(x: float) -> str:
    """A length (m) in mm rounded down to 0.01 mm (so that the printed size does pass)."""
    return f"{math.floor(x * 1e5 + 1e-9) / 1e2:.2f}"


def _mm_or_um(x: float) -> str:
    """A small length (m) as text: in mm with 2 decimals, or in µm below 10 µm."""
    return f"{x * 1e6:.1f} µm" if x < 1e-5 else f"{x * 1e3:.2f} mm"


def _chord_tangents(p: np.ndarray, half_window: float) -> np.ndarray:
    """Unit tangent at each polyline sample: chord over +-half_window of arc (clamped)."""
    s = arc_length(p)
    lo = np.searchsorted(s, s - half_window, side="left")
    hi = np.searchsorted(s, s + half_window, side="right") - 1
    lo = np.clip(lo, 0, len(p) - 1)
    hi = np.clip(hi, 0, len(p) - 1)
    t = p[hi] - p[lo]
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    fallback = p[-1] - p[0]
    fallback = fallback / max(np.linalg.norm(fallback), 1e-12)
    return np.where(norm > 1e-12, t / np.maximum(norm, 1e-12), fallback)


def _turn_angles(p: np.ndarray, half_window: float) -> np.ndarray:
    """Turn of the polyline at each sample (rad): the angle between the tangents half_window
    before and after it, each a chord over +-half_window/2 (so a sharp corner between two
    samples still counts in full). 0 where either end of the window is less than half_window/2
    away (near the branch ends; the bifurcation check covers the junctions)."""
    s = arc_length(p)
    t = _chord_tangents(p, 0.5 * half_window)
    lo = np.clip(np.searchsorted(s, s - half_window, side="left"), 0, len(p) - 1)
    hi = np.clip(np.searchsorted(s, s + half_window, side="right") - 1, 0, len(p) - 1)
    valid = (s - s[lo] >= 0.5 * half_window) & (s[hi] - s >= 0.5 * half_window)
    cosang = np.einsum("ij,ij->i", t[lo], t[hi])
    return np.where(valid, np.arccos(np.clip(cosang, -1.0, 1.0)), 0.0)


def _end_direction(points: np.ndarray, window: float, at_start: bool) -> np.ndarray:
    """Unit chord direction over the first (``at_start``) or last ``window`` of a polyline."""
    p = points if at_start else points[::-1]
    s = arc_length(p)
    j = int(np.searchsorted(s, window))
    j = min(max(j, 1), len(p) - 1)
    d = p[j] - p[0] if at_start else p[0] - p[j]
    return d / max(np.linalg.norm(d), 1e-12)


def _bend_angle(parent_points: np.ndarray, child_points: np.ndarray) -> float:
    """Angle between the parent's direction at its end and the child's at its start (rad)."""
    a = _end_direction(parent_points, _BEND_WINDOW, at_start=False)
    b = _end_direction(child_points, _BEND_WINDOW, at_start=True)
    return float(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0)))
