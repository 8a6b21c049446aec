"""A small hand-built airway tree for the registration tests (independent of the phantom).

The tree is grown from anatomically placed main and lobar bronchi (LPS, metres: +x left,
+y posterior, +z head) by binary branching to generation 6, with lengths and radii shrinking
by generation and each daughter's branching plane turned 90 degrees from its parent's. It is
small (about 250 branches) so that tests stay fast, and seeded so that they are repeatable.
"""

from __future__ import annotations

import numpy as np

from bronchonav.airway.tree import AirwayTree, Branch, Nodule
from bronchonav.maps import AirwayMap

_LOBAR = {  # name, side, direction, length (m), radius (m), lobe
    "RUL": (-1, (-0.7, 0.1, 0.7), 0.020, 0.0045),
    "BI": (-1, (-0.25, 0.1, -1.0), 0.025, 0.0055),
    "LUL": (1, (0.6, -0.1, 0.6), 0.020, 0.0045),
    "LLL": (1, (0.3, 0.2, -1.0), 0.025, 0.0050),
}


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _curve(start, direction, length, rng, n=6):
    """A gently curved polyline of ``n`` points from ``start`` along ``direction``."""
    bend = np.cross(direction, rng.normal(size=3))
    bend = _unit(bend) * 0.04 * length
    s = np.linspace(0.0, 1.0, n)[:, None]
    return start + s * length * direction + 4 * s * (1 - s) * bend


def toy_tree(seed: int = 0, max_generation: int = 6) -> AirwayTree:
    """The toy airway tree (CT frame, m); carina at the origin, trachea 110 mm long above it."""
    rng = np.random.default_rng(seed)
    branches: list[Branch] = []

    def add(parent, gen, points, radius, lobe=None, name=None):
        b = Branch(len(branches), parent, gen, points, np.full(len(points), radius), lobe, name=name)
        branches.append(b)
        return b

    trachea = add(None, 0, _curve(np.array([0, 0.01, 0.11]), _unit([0, -0.09, -1]), 0.110, rng), 0.009,
                  name="trachea")
    carina = trachea.end
    rmb = add(trachea.id, 1, _curve(carina, _unit([-0.8, 0.1, -0.55]), 0.025, rng), 0.0068, name="RMB")
    lmb = add(trachea.id, 1, _curve(carina, _unit([0.85, 0.15, -0.5]), 0.045, rng), 0.0058, name="LMB")

    def grow(parent: Branch, gen: int, lobe: str, plane: np.ndarray):
        if gen > max_generation:
            return
        d0 = _unit(parent.points[-1] - parent.points[-2])
        plane = _unit(np.cross(d0, plane))  # turn the branching plane 90 degrees
        length = 0.020 * 0.8 ** (gen - 2) * rng.uniform(0.85, 1.15)
        radius = parent.radii[0] * 0.8
        for sign, frac in ((1, 0.6), (-1, 0.4)):
            angle = np.radians(rng.uniform(25, 40)) * (1.2 - frac)
            d = _unit(np.cos(angle) * d0 + sign * np.sin(angle) * plane)
            child = add(parent.id, gen, _curve(parent.end, d, length, rng), radius, lobe)
            grow(child, gen + 1, lobe, plane)

    for name, (side, direction, length, radius) in _LOBAR.items():
        parent = rmb if side < 0 else lmb
        b = add(parent.id, 2, _curve(parent.end, _unit(direction), length, rng), radius,
                None if name == "BI" else name, name=name)
        if name == "BI":  # bronchus intermedius: middle and lower lobes
            rml = add(b.id, 3, _curve(b.end, _unit([-0.5, -0.8, -0.3]), 0.015, rng), 0.0035, "RML", "RML")
            rll = add(b.id, 3, _curve(b.end, _unit([-0.2, 0.3, -1.0]), 0.020, rng), 0.0045, "RLL", "RLL")
            grow(rml, 4, "RML", np.array([1.0, 0, 0]))
            grow(rll, 4, "RLL", np.array([1.0, 0, 0]))
        else:
            grow(b, 3, name, np.array([0, 1.0, 0]))
    return AirwayTree(branches)


def toy_nodules(tree: AirwayTree) -> list[Nodule]:
    """Two nodules 8 mm beside the distal end of a deep lower-lobe and an upper-lobe branch."""
    nodules = []
    for i, lobe in enumerate(("RLL", "LUL")):
        candidates = [b for b in tree if b.lobe == lobe and not b.children]
        b = min(candidates, key=lambda b: b.end[2]) if lobe == "RLL" else max(candidates, key=lambda b: b.end[2])
        side = _unit(np.cross(b.direction, [0.3, 1.0, 0.2]))
        nodules.append(Nodule(f"N{i + 1}", b.end + 0.008 * side, 0.005, lobe, "toy"))
    return nodules


def toy_map(seed: int = 0) -> AirwayMap:
    """The toy tree and nodules as an AirwayMap without a mesh (metadata source kind ``toy``)."""
    tree = toy_tree(seed)
    return AirwayMap("toy", tree, toy_nodules(tree), metadata={"source": {"kind": "toy", "seed": seed}})


def test_toy_tree_is_a_valid_airway_tree():
    tree = toy_tree(0)
    tree.validate()
    assert tree.max_generation == 6
    assert set(tree.lobes()) == {"RUL", "RML", "RLL", "LUL", "LLL"}
    lo, hi = tree.bounds()
    assert hi[2] - lo[2] > 0.15  # trachea top to lung base spans more than 15 cm
    n1, n2 = toy_nodules(tree)
    assert n1.center[2] < -0.05 < n2.center[2]  # lower-lobe nodule below, upper-lobe above
    assert not tree.inside_lumen(n1.center)[0]
