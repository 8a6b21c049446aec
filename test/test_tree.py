"""AirwayTree invariants and geometry queries on hand-built trees with known answers."""

import networkx as nx
import numpy as np
import pytest

from bronchonav.airway.tree import AirwayTree, Branch
from bronchonav.geometry import resample_polyline
from bronchonav.errors import MapError


def y_tree():
    """Trachea 100 mm down -z, two 30 mm children at ±45° in the x-z plane."""
    c = np.array([0.0, 0.0, -0.1])
    s = 0.03 / np.sqrt(2)
    return AirwayTree([
        Branch(0, None, 0, [[0, 0, 0], c], [0.009, 0.009], name="trachea"),
        Branch(1, 0, 1, [c, c + [s, 0, -s]], [0.006, 0.005], name="LMB"),
        Branch(2, 0, 1, [c, c + [-s, 0, -s]], [0.006, 0.005], name="RMB"),
    ])


def test_structure_and_graph():
    tree = y_tree()
    assert tree.root == 0 and tree.trachea.name == "trachea"
    assert sorted(tree[0].children) == [1, 2]
    assert sorted(tree.leaves()) == [1, 2]
    assert tree.path_from_root(2) == [0, 2]
    assert tree.max_generation == 1
    assert tree.total_length == pytest.approx(0.1 + 2 * 0.03)
    g = tree.graph()
    assert nx.is_arborescence(g)
    assert g.edges[0, 1]["angle"] == pytest.approx(np.pi / 4)


def test_nearest_and_inside_lumen_match_analytic_distances():
    tree = y_tree()
    # 4 mm off the trachea axis, halfway down: inside a 9 mm radius, nearest sample on branch 0
    d, i = tree.nearest([0.004, 0.0, -0.05])
    assert d[0] == pytest.approx(0.004, abs=3e-4)
    assert tree.samples().branch_ids[i[0]] == 0
    assert tree.nearest_branch([0.004, 0.0, -0.05]) == 0
    assert tree.nearest_branch(tree[2].end + [0.001, 0.0, 0.0]) == 2
    assert tree.inside_lumen([[0.004, 0, -0.05], [0.012, 0, -0.05]]).tolist() == [True, False]
    assert tree.inside_lumen([[0.004, 0, -0.05]], margin=0.006).tolist() == [False]


def test_resample_polyline_keeps_ends_and_length():
    pts = np.array([[0, 0, 0], [0.01, 0, 0], [0.01, 0.02, 0]], dtype=float)
    p, v, s = resample_polyline(pts, np.array([1.0, 2.0, 3.0]), 0.001)
    assert np.allclose(p[0], pts[0]) and np.allclose(p[-1], pts[-1])
    assert s[-1] == pytest.approx(0.03)
    assert v[0] == 1.0 and v[-1] == 3.0
    assert np.allclose(np.diff(s), 0.001)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b.__setattr__("generation", 2) if b.id == 1 else None, "generation"),
    (lambda b: b.__setattr__("parent", 7) if b.id == 2 else None, "missing parent"),
    (lambda b: b.__setattr__("radii", -b.radii) if b.id == 1 else None, "non-positive radius"),
    (lambda b: b.points.__setitem__((0, 0), np.nan) if b.id == 2 else None, "non-finite"),
    (lambda b: b.__setattr__("points", b.points + 0.01) if b.id == 1 else None, "starts"),
])
def test_validate_rejects_broken_trees(mutate, message):
    branches = list(y_tree())
    for b in branches:
        mutate(b)
    with pytest.raises(MapError, match=message):
        AirwayTree(branches)


def test_validate_rejects_two_roots_and_cycles():
    branches = list(y_tree())
    branches[1].parent = None
    branches[1].generation = 0
    with pytest.raises(MapError, match="exactly one root"):
        AirwayTree(branches)
    cyc = [Branch(0, None, 0, [[0, 0, 0], [0, 0, -1e-2]], [1e-3, 1e-3]),
           Branch(1, 2, 1, [[0, 0, -1e-2], [0, 0, -2e-2]], [1e-3, 1e-3]),
           Branch(2, 1, 2, [[0, 0, -2e-2], [0, 0, -1e-2]], [1e-3, 1e-3])]
    with pytest.raises(MapError):
        AirwayTree(cyc)


def test_inside_lumen_is_the_union_of_tubes_at_a_bifurcation():
    c = np.array([0.0, 0.0, -0.1])
    tree = AirwayTree([
        Branch(0, None, 0, [[0, 0, 0], c], [0.009, 0.009]),
        Branch(1, 0, 1, [c, c + [0.03, 0, 0]], [0.001, 0.001]),
        Branch(2, 0, 1, [c, c + [-0.02, 0, -0.02]], [0.006, 0.006]),
    ])
    p = c + [0.004, 0.0, 0.002]  # 4 mm from the wide trachea's axis, 2 mm from the thin child's
    _, i = tree.nearest(p)
    assert tree.samples().branch_ids[i[0]] == 1  # the nearest sample alone would say "outside"
    assert tree.inside_lumen(p).tolist() == [True]
    assert tree.inside_lumen(c + [0.0, 0.0095, 0.01]).tolist() == [False]  # 9.5 mm off a 9 mm tube
