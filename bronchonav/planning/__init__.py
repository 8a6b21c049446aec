"""Device-aware route planning from the top of the trachea to lung lesions.

Public API (CT frame, LPS, metres and radians throughout)::

    from bronchonav.planning import DeviceConstraints, RoutePlanner, plan_route

    planner = RoutePlanner(airway_map, DeviceConstraints(outer_diameter=3.5e-3))
    routes = planner.plan("N1", k=3)          # or a point (3,) in m, optional radius=
    best = routes[0]
    best.feasible, best.reasons, best.length, best.waypoints
    positions, quaternions = best.to_path_poses()   # for nav_msgs/Path (x, y, z, w)
    planner.plan_all(k=1)                     # {nodule id: [Route, ...]}

A query returns up to ``k`` feasible routes, best first (each from a different exit branch), or
one route with ``feasible`` False and structured :class:`Reason` objects. Bad input raises
:class:`bronchonav.errors.MapError` (unknown nodule id) or :class:`bronchonav.errors.InputError`
(non-finite target, target outside the body).
"""

from bronchonav.planning.constraints import DeviceConstraints
from bronchonav.planning.cost import CostWeights
from bronchonav.planning.planner import RoutePlanner, plan_route
from bronchonav.planning.route import Reason, Route

__all__ = ["CostWeights", "DeviceConstraints", "Reason", "Route", "RoutePlanner", "plan_route"]
