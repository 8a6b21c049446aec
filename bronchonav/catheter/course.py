"""Whether a catheter's backbone doubles back through the airway tree.

From the base to the tip a catheter in the airways runs down the tree. A backbone that goes
from an airway down into its child airways and then comes back up into that same airway has
turned through 180° inside airways a few millimetres wide: a catheter cannot, short of passing
through the carina between two siblings. The model's penalty contact does let a solve that
jumps far from the last state (a snap-through past a fold of the quasi-static path) end in such
a hairpin — seen in demo runs as a tip jumping 37 mm back in one state into a backbone folded
through branches 10 → 22 → 21 → 10 — so the model refuses a snap-through that ends doubled
back (:meth:`~bronchonav.catheter.model.CatheterModel.step`). The airway of each node is the
model's contact tracking (``CatheterState.branch_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_NODES = 2
"""Backbone nodes the excursion into the child airways, and the return into the airway (unless
it ends at the tip), must each hold to count: a single node near a carina may be tracked into
the other of two overlapping tubes."""


@dataclass(frozen=True)
class DoubleBack:
    """A backbone that leaves ``branch_id`` for its descendants and comes back into it.

    Attributes
    ----------
    branch_id : int
        The airway the backbone comes back into.
    via : tuple of int
        The descendant airways of the excursion, in order from the base.
    nodes : int
        Backbone nodes in the excursion.
    """

    branch_id: int
    via: tuple
    nodes: int

    def __str__(self) -> str:
        path = " → ".join(str(b) for b in (self.branch_id, *self.via, self.branch_id))
        return f"the backbone doubles back through branches {path} ({self.nodes} nodes)"


def label_runs(branch_ids) -> list[tuple[int, int, int]]:
    """Runs of consecutive backbone nodes in one airway, base to tip: ``(airway, first, end)``
    with ``end`` one past the run's last node."""
    labels = np.asarray(branch_ids, dtype=int)
    starts = np.r_[0, np.flatnonzero(np.diff(labels)) + 1]
    ends = np.r_[starts[1:], len(labels)]
    return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def double_back(branch_ids, tree, min_nodes: int = MIN_NODES) -> DoubleBack | None:
    """The first place, from the base, where the backbone doubles back (see the module).

    Parameters
    ----------
    branch_ids : array of int (N,)
        Airway of each backbone node, base to tip.
    tree : AirwayTree
        The airways (for their ancestry).
    min_nodes : int
        Fewest nodes in the excursion below the airway, and in the return into it unless the
        return ends at the tip, for it to count.

    Returns
    -------
    DoubleBack or None
    """
    runs = [(airway, end - first) for airway, first, end in label_runs(branch_ids)]
    for i, (airway, _) in enumerate(runs):
        via, nodes = [], 0
        for j, (other, n) in enumerate(runs[i + 1:], start=i + 1):
            if other == airway:
                at_tip = j == len(runs) - 1
                if nodes >= min_nodes and (n >= min_nodes or at_tip):
                    return DoubleBack(airway, tuple(via), nodes)
                break
            if airway not in tree.path_from_root(other)[:-1]:
                break  # left the airway upwards or sideways, not into its subtree
            via.append(other)
            nodes += n
    return None
