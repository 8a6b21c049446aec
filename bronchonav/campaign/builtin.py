"""The built-in campaign stages: plan, rehearse, register, camera.

Each is a thin call into the core library for one case (see :mod:`bronchonav.campaign.stages`
for the stage contract). Lengths in metres, angles in radians, TRE in millimetres as the
registration evaluation reports it; coordinates in the CT frame.
"""

from __future__ import annotations

import json

import numpy as np

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
    ``plan_tip_turn_rad`` (the largest angle the tip turns to at the exit: a tool angle beyond
    it is an aim that falls short), ``plan_nearest_reachable_m`` (for infeasible targets:
    nearest reachable airway point to the nodule centre).
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
        "plan_tip_turn_rad": _finite(route.tip_turn),
        "plan_nearest_reachable_m": min(nearest) if nearest else None,
    }


def catheter_params(variant: CatheterVariant):
    """Catheter parameters of a variant: :meth:`CatheterParams.default` with the variant's outer
    diameter, articulating-section bending stiffness (torsional stiffness scaled alike) and
    articulation (through the tendon tension limit that bends the tip that far)."""
    import copy

    from bronchonav.catheter.params import CatheterParams

    params = copy.deepcopy(CatheterParams.default())
    params.outer_diameter = variant.diameter_m
    tip = params.segments[params.articulation_segment]
    if variant.bending_stiffness_Nm2 is not None:
        scale = variant.bending_stiffness_Nm2 / tip.EI
        tip.EI, tip.GJ = tip.EI * scale, tip.GJ * scale
    articulation = variant.articulation_rad or np.pi
    offset = max(t.offset for t in params.tendons)
    params.limits.tension_max = float(articulation * tip.EI / (offset * tip.length))
    return params


def rehearse_stage(ctx, poses: str = "truth,registered", n_nodes: int = 30) -> dict:
    """Drive the catheter along the route with the navigation controller and score it
    (:func:`bronchonav.scenarios.rehearse`).

    A feasible route is rehearsed as planned. An infeasible one is rehearsed along the route a
    planner without device limits finds (the airway path to the nodule), so the report can say
    whether the mechanics agree with the planner's "no".

    Parameters
    ----------
    poses : str
        Comma-separated: ``truth`` (steer on the model's tip pose) and/or ``registered`` (survey,
        EM registration, steer on the registered EM pose under breathing).
    n_nodes : int
        Catheter discretisation.

    Columns, per pose ``P``: ``rehearse_P_reached`` (true tip within the reach tolerance of
    the exit point), ``rehearse_P_outcome`` (reached, stuck, wrong_branch, timeout,
    registration_failed), ``rehearse_P_reason``, ``rehearse_P_tip_error_m``,
    ``rehearse_P_tool_in_lesion``, ``rehearse_P_tool_miss_m``, ``rehearse_P_steps``,
    ``rehearse_P_failed_steps``, ``rehearse_P_sim_time_s``, ``rehearse_P_wall_s``,
    ``rehearse_P_retries``, ``rehearse_P_max_contact_N``, ``rehearse_P_tre_m``,
    ``rehearse_P_survey_extensions`` (times the survey went on after an ambiguous registration);
    and
    ``rehearse_route`` (``planned`` or ``unconstrained``).
    """
    from bronchonav.planning.constraints import DeviceConstraints
    from bronchonav.planning.planner import RoutePlanner
    from bronchonav.scenarios import SensingConfig, rehearse

    route = ctx.shared["route"]
    kind = "planned"
    if not route.feasible:
        loose = DeviceConstraints(outer_diameter=1e-4, diameter_margin=0.0, min_bend_radius=1e-4,
                                  max_articulation=np.pi, tool_max_length=1.0,
                                  tool_max_angle=np.pi, check_pleura=False,
                                  check_tip_turn=False)
        route = RoutePlanner(ctx.airway_map, loose).plan(ctx.case.nodule_id)[0]
        kind = "unconstrained"
        if not route.feasible:
            return {"rehearse_route": "none"}
    params = catheter_params(ctx.case.catheter)
    out = {"rehearse_route": kind}
    for pose in [p.strip() for p in poses.split(",") if p.strip()]:
        sensing = SensingConfig(patient_seed=ctx.stage_seed(f"rehearse-patient-{pose}"))
        r = rehearse(ctx.airway_map, route, params, pose=pose, sensing=sensing,
                     n_nodes=n_nodes, seed=ctx.stage_seed(f"rehearse-em-{pose}"))
        key = f"rehearse_{pose}_"
        out.update({
            key + "reached": bool(r.reached), key + "outcome": r.outcome.status,
            key + "reason": r.outcome.reason, key + "tip_error_m": _finite(r.tip_to_exit_m),
            key + "tool_in_lesion": bool(r.tool_in_lesion),
            key + "tool_miss_m": _finite(r.tool_miss_m), key + "steps": int(r.steps),
            key + "failed_steps": int(r.failed_steps),
            key + "sim_time_s": float(r.sim_time_s), key + "wall_s": float(r.wall_s),
            key + "retries": int(r.outcome.retries),
            key + "max_contact_N": float(r.max_contact_n),
            key + "tre_m": None if r.registration_tre_m is None
            else _finite(r.registration_tre_m),
            key + "survey_extensions": int(r.survey_extensions)})
    return out


def register_stage(ctx, sensor_margin_m: float = 2.5e-4) -> dict:
    """Seeded registration trials of the case's scenario, targeting the case's nodule.

    Runs :func:`bronchonav.registration.evaluate.run_trials` (``case.trials`` trials) with the
    scenario's default simulation (the sensors of :mod:`bronchonav.sensors`), except that the
    EM sensor, carried by the case's catheter, only enters airways the catheter fits:
    ``local_min_radius`` = catheter radius + ``sensor_margin_m`` (m). A thinner catheter
    therefore sweeps deeper airways near the target.

    Columns (distances in mm as the evaluation reports them): ``register_trials``,
    ``register_success_rate`` (registered and TRE < 5 mm), ``register_tre_median_mm``,
    ``register_tre_p95_mm``, ``register_tre_global_median_mm`` (before the local refinement),
    ``register_fre_median_mm``, ``register_tre_json`` (every trial's TRE, mm),
    ``register_trial_median_seconds`` (registration time per trial). A catheter wider than the
    trachea cannot carry the sensor in: ``register_trials`` is 0 and ``register_note`` says why.
    """
    from bronchonav.registration.evaluate import run_trials, summarize
    from bronchonav.registration.simulate import scenario_config

    kind = ctx.case.scenario
    trachea = ctx.airway_map.tree.trachea
    if ctx.case.catheter.diameter_m / 2 + sensor_margin_m > float(np.max(trachea.radii)):
        return {"register_trials": 0,
                "register_note": f"catheter ({ctx.case.catheter.diameter_m * 1e3:.1f} mm) wider "
                                 f"than the trachea: no EM sweep possible"}
    sim = scenario_config(kind, local_min_radius=ctx.case.catheter.diameter_m / 2 + sensor_margin_m)
    records = run_trials(ctx.airway_map, kind, ctx.case.trials, ctx.stage_seed("register"),
                         sim_config=sim, target_ids=[ctx.case.nodule_id])
    summary = summarize(records, kind)
    ms = summary["ms_median"]
    return {
        "register_trials": summary["trials"],
        "register_success_rate": summary["success_rate"],
        "register_tre_median_mm": summary["tre_median_mm"],
        "register_tre_p95_mm": summary["tre_p95_mm"],
        "register_tre_global_median_mm": summary["tre_global_median_mm"],
        "register_fre_median_mm": summary["fre_median_mm"],
        "register_tre_json": _json(r.tre_mm for r in records),
        "register_trial_median_seconds": None if ms is None else ms / 1e3,
    }


def camera_stage(ctx, width: int = 160, height: int = 120, back_m: float = 0.01,
                 open_depth_m: float = 0.02) -> dict:
    """Virtual bronchoscopy of the approach: the tip camera's view ``back_m`` before the exit
    point along the planned route, looking at the exit point.

    Uses the tip camera sensor (:class:`bronchonav.sensors.TipCameraSensor`, rendering with
    :class:`bronchonav.imaging.camera.TipCamera` on the map's lumen mesh, one ray-casting
    thread) of a still patient. The view is the planned one, so the columns do not depend on how
    well a rehearsal went.

    Parameters
    ----------
    width, height : int
        Image size (pixels).
    back_m : float
        Distance along the route from the camera to the exit point (m); clipped to the route.
    open_depth_m : float
        Pixels seeing farther than this (m), or nothing, count as open lumen ahead.

    Columns: ``camera_open_fraction`` (share of pixels looking down open lumen),
    ``camera_hit_fraction`` (share hitting the wall), ``camera_center_depth_m`` (depth at the
    image centre, None when it sees out of the mesh), ``camera_median_depth_m`` (median depth of
    the wall hits); None when the route is infeasible.
    """
    from bronchonav.imaging.camera import CameraIntrinsics, TipCamera, look_at
    from bronchonav.sensors import TipCameraSensor

    route = ctx.shared["route"]
    if not route.feasible:
        return {"camera_open_fraction": None}
    # writable copies: maps shared through Ray's object store are read-only
    camera = TipCameraSensor(TipCamera(np.array(ctx.airway_map.mesh_vertices),
                                       np.array(ctx.airway_map.mesh_triangles),
                                       intrinsics=CameraIntrinsics(width, height), nthreads=1))
    i = int(np.searchsorted(route.arclength, route.arclength[-1] - back_m))
    i = min(i, len(route.waypoints) - 2)
    eye = route.waypoints[i]
    depth = camera.capture(look_at(eye, route.exit_point - eye)).frame.depth
    hit = np.isfinite(depth)
    return {"camera_open_fraction": float(np.mean(~hit | (depth > open_depth_m))),
            "camera_hit_fraction": float(np.mean(hit)),
            "camera_center_depth_m": _finite(depth[height // 2, width // 2]),
            "camera_median_depth_m": float(np.median(depth[hit])) if hit.any() else None}


STAGES = {"plan": plan_stage, "rehearse": rehearse_stage, "register": register_stage,
          "camera": camera_stage}
"""Built-in stage name → function."""


def _finite(value) -> float | None:
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def _json(values) -> str:
    return json.dumps([float(v) for v in values])
