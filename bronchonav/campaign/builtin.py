"""The built-in campaign stages: plan, rehearse, register, camera.

Each is a thin call into the core library for one case (see :mod:`bronchonav.campaign.stages`
for the stage contract). Lengths in metres, angles in radians, TRE in millimetres as the
registration evaluation reports it; coordinates in the CT frame.
"""

from __future__ import annotations

import json

from bronchonav.campaign.spec import CatheterVariant


def device_constraints(variant: CatheterVariant):
    """Planning constraints of a catheter variant (defaults where the variant says nothing)."""
    from bronchonav.planning.constraints import DeviceConstraints

    fields = {"outer_diameter": variant.diameter_m}
    if variant.min_bend_radius_m is not None:
        fields["min_bend_radius"] = variant.min_bend_radius_m
    if variant.articulation_rad is not None:
        fields["max_articulation"] = variant.articulation_rad
    return DeviceConstraints(**fields)


def plan_stage(ctx, k: int = 1) -> dict:
    """Plan the route to the case's nodule with the case's catheter.

    Leaves the best route in ``ctx.shared["route"]``. Columns: ``plan_feasible``,
    ``plan_reasons`` (failed constraints, comma-separated), ``plan_length_m``,
    ``plan_exit_generation``, ``plan_exit_lobe``, ``plan_exit_distance_m`` (exit point to nodule
    centre), ``plan_min_clearance_m``, ``plan_max_bend_rad``, ``plan_tool_angle_rad``,
    ``plan_nearest_reachable_m`` (for infeasible targets: nearest reachable airway point to the
    nodule centre).
    """
    from bronchonav.planning.planner import RoutePlanner

    planner = RoutePlanner(ctx.airway_map, device_constraints(ctx.case.catheter))
    route = planner.plan(ctx.case.nodule_id, k=k)[0]
    ctx.shared["route"] = route
    nearest = [r.nearest_reachable_distance for r in route.reasons
               if r.nearest_reachable_distance is not None]
    return {
        "plan_feasible": bool(route.feasible),
        "plan_reasons": ",".join(dict.fromkeys(r.constraint for r in route.reasons)),
        "plan_length_m": _finite(route.length),
        "plan_exit_generation": route.exit_generation,
        "plan_exit_lobe": (route.lobes[-1] or "") if route.lobes else "",
        "plan_exit_distance_m": _finite(route.exit_distance_center),
        "plan_min_clearance_m": _finite(route.min_clearance),
        "plan_max_bend_rad": _finite(route.max_bend),
        "plan_tool_angle_rad": _finite(route.tool_angle),
        "plan_nearest_reachable_m": min(nearest) if nearest else None,
    }


STAGES = {"plan": plan_stage}
"""Built-in stage name → function."""


def _finite(value) -> float | None:
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def _json(values) -> str:
    return json.dumps([float(v) for v in values])
