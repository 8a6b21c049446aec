"""Segmental labels (B1–B10) of a lobe-labelled airway tree from direction and topology.

Rules (CT frame, LPS: +x patient left, +y posterior, +z head; the lobes come first, from
:func:`bronchonav.airway.lobes.label_lobes`):

* each terminal branch of a lobe is given the segment whose typical direction
  (:data:`SEGMENT_DIRECTIONS`, after Boyden's anatomy: e.g. right B1 apical lies up in its
  lobe, B2 posterior, B3 anterior; the basal segments below, anterior, lateral, posterior or
  medial) is closest in angle to the direction from the lobe's centre (the length-weighted
  centroid of its centerlines) to the terminal's end;
* a branch above the terminals supplies a segment when at least ``SUBTREE_AGREEMENT`` of the
  centerline length of its subtree's terminals has that segment, else it feeds several
  segments and gets none (a lobar bronchus or a trunk such as the lingular or basal trunk).
  A branch is judged on its own subtree, so a small side branch of a segmental bronchus that
  goes into the neighbouring segment is labelled with that one (it supplies it); forcing the
  parent's label on whole subtrees made the labels flip with small changes of the extracted
  tree (other file orientations).

Left and right come from the lobes, which come from the patient's LPS axes; nothing depends on
the file's array order. The directions assume typical anatomy; variants (e.g. a B7 with its own
origin from the bronchus intermedius) are labelled by where their branches go.
"""

from __future__ import annotations

import numpy as np

from bronchonav.airway.lobes import subtree_centroid
from bronchonav.airway.tree import SEGMENTS, AirwayTree

_RIGHT = {
    "RB1": (0.0, 0.0, 1.0), "RB2": (-0.3, 1.0, 0.0), "RB3": (0.0, -1.0, 0.0),
    "RB4": (-1.0, 0.3, 0.0), "RB5": (1.0, -0.3, 0.0),
    "RB6": (0.0, 0.5, 1.0), "RB7": (1.0, 0.0, -0.5), "RB8": (0.0, -1.0, -0.5),
    "RB9": (-1.0, 0.0, -0.5), "RB10": (0.0, 1.0, -0.5),
}
_LEFT = {
    "LB1+2": (0.0, 0.5, 1.0), "LB3": (0.0, -1.0, 0.3), "LB4": (0.5, -0.5, -0.5),
    "LB5": (0.0, -0.5, -1.0),
    "LB6": (0.0, 0.5, 1.0), "LB8": (0.0, -1.0, -0.5), "LB9": (1.0, 0.0, -0.5),
    "LB10": (0.0, 1.0, -0.5),
}
SEGMENT_DIRECTIONS = {lobe: {s: np.asarray((_RIGHT | _LEFT)[s], float)
                             / np.linalg.norm((_RIGHT | _LEFT)[s]) for s in names}
                      for lobe, names in SEGMENTS.items()}
"""Typical direction (unit vector, CT frame LPS) from a lobe's centre towards each of its
segments."""

SUBTREE_AGREEMENT = 0.75
"""Fraction of a subtree's terminal centerline length that must share a segment for the
subtree's root to supply it."""


def _terminal_segments(tree: AirwayTree, lobe: str, centre: np.ndarray, ids: list[int]) -> dict:
    """Segment of each terminal branch among ``ids``: the typical direction nearest to the one
    from the lobe's ``centre`` (CT frame, m) to the branch's end."""
    names = list(SEGMENT_DIRECTIONS[lobe])
    dirs = np.array([SEGMENT_DIRECTIONS[lobe][n] for n in names])
    out = {}
    for b in ids:
        if tree[b].children:
            continue
        v = tree[b].end - centre
        norm = np.linalg.norm(v)
        out[b] = names[int(np.argmax(dirs @ (v / norm)))] if norm > 0 else None
    return out


def label_segments(tree: AirwayTree) -> AirwayTree:
    """Set ``segment`` on the branches of each labelled lobe (in place); return the tree.

    Branches outside the lobes, and trees without lobe labels, keep ``segment=None``.
    """
    for b in tree:
        b.segment = None
    for lobe in SEGMENTS:
        members = [b.id for b in tree if b.lobe == lobe]
        tops = [b for b in members if tree[b].parent is None or tree[tree[b].parent].lobe != lobe]
        if not tops:
            continue
        leaf = _terminal_segments(tree, lobe, subtree_centroid(tree, tops), members)
        # children before parents: per branch, the terminal length of each segment below it
        weight: dict[int, dict[str, float]] = {}
        order, stack = [], list(tops)
        while stack:
            b = stack.pop()
            order.append(b)
            stack.extend(tree[b].children)
        for b in reversed(order):
            w: dict[str, float] = {}
            if b in leaf and leaf[b] is not None:
                w[leaf[b]] = tree[b].length
            for c in tree[b].children:
                for s, v in weight.get(c, {}).items():
                    w[s] = w.get(s, 0.0) + v
            weight[b] = w
        for b in order:
            w = weight[b]
            total = sum(w.values())
            if total > 0:
                best = max(w, key=w.get)
                if w[best] >= SUBTREE_AGREEMENT * total:
                    tree[b].segment = best
    return tree
