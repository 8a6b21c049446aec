"""The route cost and the geometric model of a catheter turning inside an airway.

Cost
----
Among the feasible exit points, the planner picks the one of least cost::

    J = w_length * L_route                          route length along the centerlines (m)
      + w_exit * d_exit                             tool path length, exit point -> lesion centre (m)
      + w_bend * sum_i theta_i**2                   bend at each bifurcation on the route (rad)
      + w_clearance * max(0, c_ref - c_min)         shortfall of the smallest clearance (m)

``J`` is in metres of "equivalent route length". The default weights make one millimetre of
needle through lung parenchyma cost as much as three millimetres of airway travel, a 90 degree
bend (2.47 rad^2) cost about 25 mm, and each millimetre of clearance below 1 mm cost 10 mm.
The tool angle is a hard constraint only (it does not enter ``J``): at most the tool's own
limit. Exits from which the tip can turn to point at the lesion (the tool angle within
:func:`largest_tip_angle` of the lumen there) rank before all others, each group by ``J``.

Turning model
-------------
The catheter bends with a radius of at least ``R``. To turn by an angle ``a`` inside an airway
corridor whose centerline turns by ``a``, the catheter may cut the corner anywhere in the free
space of half-width ``w = airway_radius - catheter_radius`` on each side of the centerline. The
circular arc of radius ``R`` tangent to both outer walls clears the inner corner when
``R * (1 - cos(a / 2)) <= 2 * w`` (the arc's sagitta relative to the corner fits in the corridor
width); so the turn is feasible when :func:`turn_deviation` ``<= 2 * w``. The same test applies
along a curved branch with ``a`` the turn of the centerline over a short window. At a bifurcation
the corridor changes width; ``2 * w`` is then taken as the parent's plus the child's clearance
(an approximation: the arc's two tangent points lie one in each branch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CostWeights:
    """Weights of the route cost (see the module docstring).

    Attributes
    ----------
    length : float
        Per metre of route along the centerlines (dimensionless).
    exit : float
        Per metre of tool path from the exit point to the lesion centre (dimensionless).
    bend : float
        Per rad^2 of bifurcation bend (m / rad^2).
    clearance : float
        Per metre of clearance below ``clearance_ref`` (dimensionless).
    clearance_ref : float
        Clearance below which the cost grows (m).
    """

    length: float = 1.0
    exit: float = 3.0
    bend: float = 0.01
    clearance: float = 10.0
    clearance_ref: float = 1.0e-3

    def to_dict(self) -> dict:
        """The weights as a JSON-serialisable dict."""
        return asdict(self)


def route_cost(length, exit_distance, bend_sq_sum, min_clearance,
               weights: CostWeights = CostWeights()) -> np.ndarray:
    """The cost ``J`` (m) of routes; every argument may be an array (broadcast).

    Parameters
    ----------
    length : float or ndarray
        Route length from the top of the trachea to the exit point (m).
    exit_distance : float or ndarray
        Tool path length from the exit point to the lesion centre (m).
    bend_sq_sum : float or ndarray
        Sum of the squared bifurcation bends along the route (rad^2).
    min_clearance : float or ndarray
        Smallest clearance (airway radius minus catheter radius) along the route (m).
    weights : CostWeights
        The weights.
    """
    shortfall = np.maximum(0.0, weights.clearance_ref - np.asarray(min_clearance, dtype=float))
    return (weights.length * np.asarray(length, dtype=float)
            + weights.exit * np.asarray(exit_distance, dtype=float)
            + weights.bend * np.asarray(bend_sq_sum, dtype=float)
            + weights.clearance * shortfall)


def turn_deviation(angle, min_bend_radius: float) -> np.ndarray:
    """Lateral room (m) a catheter of minimum bend radius ``R`` needs to turn by ``angle`` (rad).

    ``R * (1 - cos(angle / 2))``; the turn fits in an airway when this is at most twice the
    clearance (see the module docstring).
    """
    return min_bend_radius * (1.0 - np.cos(0.5 * np.asarray(angle, dtype=float)))


def largest_tip_angle(clearance, min_bend_radius: float) -> np.ndarray:
    """Largest angle (rad) off the airway axis the catheter's tip can point to inside a lumen
    leaving ``clearance`` (m) between catheter and wall all round.

    The shaft lies against one wall; the tip section bends on an arc of radius at least ``R``
    towards the other, and an arc turning by ``a`` moves sideways by ``R * (1 - cos a)``, which
    must fit in the free width ``2 * clearance``: ``a <= arccos(1 - 2 * clearance / R)`` (pi
    where the lumen leaves room for any turn). The final aim's counterpart of
    :func:`turn_deviation`.
    """
    room = 2.0 * np.maximum(np.asarray(clearance, dtype=float), 0.0) / min_bend_radius
    return np.arccos(np.clip(1.0 - room, -1.0, 1.0))
