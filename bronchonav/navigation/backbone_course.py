"""Where a catheter's backbone lies relative to its route: the airways it occupies off the route.

A catheter that ends stuck has often not failed at its tip: pushed, its shaft has looped into an
airway beside the route (past a sharp takeoff the shaft prolapses into the straighter sibling)
and further insertion feeds the loop, not the tip. The contact tracking of the catheter model
knows which airway every backbone node is in (``CatheterState.branch_ids``); this module reads
the airways off the route from it, so an outcome can say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bronchonav.catheter.course import MIN_NODES, label_runs


@dataclass(frozen=True)
class OffRouteSpan:
    """A run of consecutive backbone nodes in one airway that is not on the route.

    Attributes
    ----------
    branch_id : int
        The airway (tree branch id).
    generation : int
        Its generation.
    nodes : int
        Consecutive backbone nodes in it.
    length_m : float
        Backbone arc length those nodes span, from the first to the last (m).
    """

    branch_id: int
    generation: int
    nodes: int
    length_m: float

    def __str__(self) -> str:
        return (f"branch {self.branch_id} (generation {self.generation}, {self.nodes} nodes over "
                f"{self.length_m * 1e3:.0f} mm)")


def off_route_spans(branch_ids, arc_length, tree, route_branches,
                    min_nodes: int = MIN_NODES) -> list[OffRouteSpan]:
    """Runs of at least ``min_nodes`` backbone nodes behind the tip in airways off the route.

    Parameters
    ----------
    branch_ids : array of int (N,)
        Airway of each backbone node, base to tip (the model's contact tracking).
    arc_length : array (N,)
        Arc length of each node from the base (m).
    tree : AirwayTree
        The airways (for the generations).
    route_branches : iterable of int
        The route's airways.
    min_nodes : int
        Shortest run that counts (a single node near a carina may be tracked into the other
        child's overlapping tube).

    Returns
    -------
    list of OffRouteSpan
        From the base towards the tip; the tip's own airway is not included (an outcome names
        it already).
    """
    arc = np.asarray(arc_length, dtype=float)
    on_route = set(int(b) for b in route_branches)
    spans: list[OffRouteSpan] = []
    for b, first, end in label_runs(branch_ids)[:-1]:  # every run but the tip's
        if b not in on_route and end - first >= min_nodes:
            spans.append(OffRouteSpan(b, int(tree[b].generation), end - first,
                                      float(arc[end - 1] - arc[first])))
    return spans
