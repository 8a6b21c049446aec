"""Hand-built airway trees with known geometry, shared by the catheter and navigation tests."""

import numpy as np

from bronchonav.airway.tree import AirwayTree, Branch


def y_tree(r_left=0.006, r_right=0.006, angle_deg=35.0):
    """Trachea 100 mm along -z (CT), children 50 mm long at ±angle in the x-z plane."""
    a, L = np.radians(angle_deg), 0.05
    trachea = Branch(0, None, 0, [[0, 0, 0], [0, 0, -0.1]], [0.009, 0.009], name="trachea")
    left = Branch(1, 0, 1, [[0, 0, -0.1], [L * np.sin(a), 0, -0.1 - L * np.cos(a)]], [r_left] * 2)
    right = Branch(2, 0, 1, [[0, 0, -0.1], [-L * np.sin(a), 0, -0.1 - L * np.cos(a)]],
                   [r_right] * 2)
    return AirwayTree([trachea, left, right])


def tree_with_trachea(points):
    """A trachea along ``points`` (CT frame, m; 9 mm radius) and two 40 mm main bronchi off its
    end."""
    end = np.asarray(points[-1], dtype=float)
    trachea = Branch(0, None, 0, points, [0.009] * len(points), name="trachea")
    children = [Branch(i, 0, 1, [end, end + [0.02 * side, 0.0, -0.035]], [0.006] * 2)
                for i, side in ((1, 1.0), (2, -1.0))]
    return AirwayTree([trachea, *children])


def side_branch_tree(angle_deg: float):
    """A junction (CT, m): parent 0 120 mm along -z (7 mm lumen radius), a sibling 1 straight
    on (60 mm, 5.5 mm) and a side branch 2 turned by ``angle_deg`` towards +x (80 mm, 4.5 mm)."""
    a = np.radians(angle_deg)

    def tube(start, direction, length):
        s = np.linspace(0.0, length, int(round(length / 1e-3)) + 1)
        return np.asarray(start) + s[:, None] * np.asarray(direction)

    parent = tube([0, 0, 0], [0, 0, -1], 0.12)
    sibling = tube(parent[-1], [0, 0, -1], 0.06)
    side = tube(parent[-1], [np.sin(a), 0, -np.cos(a)], 0.08)
    return AirwayTree([Branch(0, None, 0, parent, [0.007] * len(parent), children=[1, 2]),
                       Branch(1, 0, 1, sibling, [0.0055] * len(sibling)),
                       Branch(2, 0, 1, side, [0.0045] * len(side))])
