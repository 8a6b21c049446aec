"""Lobe labels from the tree's topology and geometry.

Rules (CT frame, LPS: +x patient left, +y posterior, +z head):

* Splits are taken at *major* bifurcations only: from a branch, the walk goes down the child
  holding most of the subtree's centerline length until a bifurcation gives two children at
  least ``MAJOR_FRACTION`` of that length each (a small side branch or a skeleton artefact
  before the carina does not make a main bronchus).
* At the carina the two largest children are the main bronchi; the one whose subtree lies
  further to +x (patient left in LPS, whatever the file's array order) is the left main
  bronchus (LMB), the other the right (RMB).
* Right: of the RMB's children, the one whose subtree is the most superior is the right upper
  lobe bronchus (RUL); the rest is the bronchus intermedius (BI). Of the BI's children the most
  anterior subtree (smallest y) is the right middle lobe (RML), the others the right lower lobe
  (RLL).
* Left: of the LMB's children the most superior subtree is the left upper lobe (LUL), the
  others the left lower lobe (LLL).

A lobar bronchus and all its descendants get the lobe's label; the trachea, main bronchi and BI
get none (they supply several lobes). Subtree positions are length-weighted centroids of their
centerlines. Reliable on the phantom and on typical anatomy; best effort on real CT (anatomical
variants such as a tracheal bronchus are not recognised).
"""

from __future__ import annotations

import numpy as np

from bronchonav.airway.tree import AirwayTree


def _subtree(tree: AirwayTree, branch_id: int) -> list[int]:
    out, stack = [], [branch_id]
    while stack:
        b = stack.pop()
        out.append(b)
        stack.extend(tree[b].children)
    return out


def subtree_centroid(tree: AirwayTree, roots) -> np.ndarray:
    """Length-weighted centroid of the centerlines of the subtrees below ``roots`` (a branch
    id or a list of them), CT frame (m)."""
    pts, w = [], []
    for b in (b for r in np.atleast_1d(roots) for b in _subtree(tree, int(r))):
        p = tree[b].points
        seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
        pts.append(0.5 * (p[1:] + p[:-1]))
        w.append(seg)
    pts, w = np.vstack(pts), np.concatenate(w)
    return (pts * w[:, None]).sum(axis=0) / max(w.sum(), 1e-12)


MAJOR_FRACTION = 0.1
"""A bifurcation is major when its two largest children each hold this fraction of the
subtree's centerline length."""


def _size(tree: AirwayTree, branch_id: int) -> float:
    """Total centerline length (m) of a subtree."""
    return float(sum(tree[b].length for b in _subtree(tree, branch_id)))


def _major(tree: AirwayTree, branch_id: int) -> int:
    """The branch at or below ``branch_id`` (following the dominant child) whose end is the
    first major bifurcation; the last branch of the walk when there is none."""
    b = branch_id
    while True:
        kids = sorted(tree[b].children, key=lambda c: _size(tree, c), reverse=True)
        if not kids:
            return b
        total = sum(_size(tree, c) for c in kids)
        if len(kids) >= 2 and _size(tree, kids[1]) >= MAJOR_FRACTION * total:
            return b
        b = kids[0]


def _label(tree: AirwayTree, branch_id: int, lobe: str, name: str) -> None:
    tree[branch_id].name = name
    for b in _subtree(tree, branch_id):
        tree[b].lobe = lobe


def _split(tree: AirwayTree, branch_id: int, axis: int, sign: float) -> tuple[int | None, list[int]]:
    """The child of the first major bifurcation at or below ``branch_id`` whose subtree
    centroid is extreme along ``sign * axis``, and the other children."""
    kids = list(tree[_major(tree, branch_id)].children)
    if len(kids) < 2:
        return None, kids
    first = max(kids, key=lambda c: sign * subtree_centroid(tree, c)[axis])
    return first, [c for c in kids if c != first]


def label_lobes(tree: AirwayTree) -> AirwayTree:
    """Set ``lobe`` and anatomical ``name`` on the tree's branches (in place); return the tree.

    Branches above the lobar bronchi keep ``lobe=None``. A tree without a carina (trachea with
    fewer than two children) is returned unlabelled.
    """
    for b in tree:
        b.lobe = None
    trachea = tree.trachea
    trachea.name = "trachea"
    kids = sorted(tree[_major(tree, trachea.id)].children, key=lambda c: _size(tree, c),
                  reverse=True)[:2]
    if len(kids) < 2:
        return tree
    lmb, rmb = sorted(kids, key=lambda c: subtree_centroid(tree, c)[0], reverse=True)
    tree[lmb].name, tree[rmb].name = "LMB", "RMB"
    rul, rest = _split(tree, rmb, axis=2, sign=+1.0)
    if rul is not None:
        _label(tree, rul, "RUL", "RUL")
        bi = max(rest, key=lambda c: _size(tree, c))
        for c in rest:
            if c != bi:
                _label(tree, c, "RLL", "RLL")
        tree[bi].name = "BI"
        rml, lower = _split(tree, bi, axis=1, sign=-1.0)
        if rml is not None:
            _label(tree, rml, "RML", "RML")
            for c in lower:
                _label(tree, c, "RLL", "RLL")
        else:
            _label(tree, bi, "RLL", "BI")
    lul, rest = _split(tree, lmb, axis=2, sign=+1.0)
    if lul is not None:
        _label(tree, lul, "LUL", "LUL")
        for c in rest:
            _label(tree, c, "LLL", "LLL")
    return tree
