"""``bronchonav plan``: device-aware routes from the trachea to nodules or points of a map.

Prints a table (or, with ``--json``, a JSON list with one object per target: the best route's
summary and its ranked alternatives). An unreachable target is reported with
``feasible: false`` and its reasons; the exit code is 0 whenever planning ran, 2 on bad input.
"""

from __future__ import annotations

import json
import math

from bronchonav.cli.options import finite_float, output_file, point3, positive_int

MAX_ROUTES = 50
"""Most routes per target (``--k``)."""


def register(subparsers) -> None:
    """Add the ``plan`` sub-command."""
    p = subparsers.add_parser(
        "plan", help="plan catheter routes to nodules (CT frame, metres)",
        description="Plan device-aware routes from the top of the trachea to a nodule or point: "
                    "catheter diameter and bending along the airways, then a straight tool path "
                    "to the lesion.")
    p.add_argument("--map", required=True, metavar="DIR", help="map folder")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--nodule", metavar="ID", help="nodule id, or 'all' for every nodule")
    target.add_argument("--target", type=point3(), metavar="X,Y,Z",
                        help="lesion centre in the CT frame (m); write --target=X,Y,Z when X is "
                             "negative")
    p.add_argument("--radius", type=finite_float(0.0, 0.1, unit="m"), metavar="M",
                   help="lesion radius, 0-0.1 m (for --target, default 0; for --nodule, "
                        "overrides the map's)")
    p.add_argument("--catheter-diameter", type=finite_float(0.0, 0.03, lo_open=True, unit="m"),
                   metavar="M", help="catheter outer diameter, in (0, 0.03] m (default 0.0035)")
    p.add_argument("--k", type=positive_int(MAX_ROUTES), default=1, metavar="N",
                   help=f"routes per target: the best and N-1 alternatives, 1-{MAX_ROUTES} "
                        "(default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--png", type=output_file, metavar="FILE",
                   help="write a picture of the routes")
    p.add_argument("--html", type=output_file, metavar="FILE",
                   help="write an interactive 3D view (plotly)")
    p.add_argument("--csv", type=output_file, metavar="FILE",
                   help="write the best route's waypoints (one target)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the sub-command; return the exit code."""
    from bronchonav.errors import InputError
    from bronchonav.maps import load_map
    from bronchonav.planning import DeviceConstraints, RoutePlanner

    if args.csv and args.nodule == "all":
        raise InputError("--csv writes one route: choose one --nodule or --target")
    airway_map = load_map(args.map)
    constraints = DeviceConstraints()
    if args.catheter_diameter is not None:
        constraints = constraints.replace(outer_diameter=args.catheter_diameter)
    planner = RoutePlanner(airway_map, constraints)
    if args.target is not None:
        results = [planner.plan(list(args.target), args.k, args.radius)]
    elif args.nodule == "all":
        if not airway_map.nodules:
            raise InputError(f"map {airway_map.name!r} has no nodules")
        results = list(planner.plan_all(args.k).values())
    else:
        results = [planner.plan(args.nodule, args.k, args.radius)]

    if args.json:
        out = []
        for routes in results:
            best = routes[0].summary()
            best["alternatives"] = [r.summary() for r in routes[1:]]
            out.append(best)
        print(json.dumps(out))
    else:
        _print_table(results, airway_map.name, constraints)
    if args.csv:
        if not results[0][0].feasible:
            raise InputError("--csv: the target is not reachable, there are no waypoints to write")
        results[0][0].write_csv(args.csv)
    drawn = [r for routes in results for r in routes]
    title = f"{airway_map.name}: catheter {constraints.outer_diameter * 1e3:.1f} mm"
    if args.png:
        from bronchonav.viz.route_plot import plot_routes

        plot_routes(airway_map.tree, drawn, args.png, title)
    if args.html:
        from bronchonav.viz.route_html import write_route_html

        write_route_html(airway_map.tree, drawn, args.html, title)
    return 0


def _fmt(x: float, scale: float = 1e3, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * scale:.{digits}f}"


TIP_TURN_NOTE = ", preferring exits the tip can turn to the lesion from"


def _print_table(results, map_name: str, constraints) -> None:
    print(f"map {map_name}, catheter {constraints.outer_diameter * 1e3:.1f} mm "
          f"(+{constraints.diameter_margin * 1e3:.1f} mm margin), tool ≤ "
          f"{constraints.tool_max_length * 1e3:.0f} mm at ≤ "
          f"{math.degrees(constraints.tool_max_angle):.0f}°"
          f"{TIP_TURN_NOTE if constraints.check_tip_turn else ''}")
    def name_of(r):
        return r.target_id or ",".join(f"{v:.3f}" for v in r.target_center)

    w = max([6] + [len(name_of(routes[0])) for routes in results])
    print(f"{'target':<{w}} {'rank':>4} {'ok':>3} {'length':>7} {'gen':>3} {'lobe':>4} "
          f"{'exit':>6} {'surf':>6} {'angle':>5} {'clear':>6} {'bend':>5} {'ms':>6}")
    print(f"{'':<{w}} {'':>4} {'':>3} {'mm':>7} {'':>3} {'':>4} {'mm':>6} {'mm':>6} {'deg':>5} "
          f"{'mm':>6} {'deg':>5} {'':>6}")
    for routes in results:
        for r in routes:
            print(f"{name_of(r):<{w}} {r.rank:>4} {'yes' if r.feasible else 'no':>3} "
                  f"{_fmt(r.length, digits=0):>7} {r.exit_generation if r.feasible else '-':>3} "
                  f"{(r.lobes[-1] if r.lobes and r.lobes[-1] else '-'):>4} "
                  f"{_fmt(r.exit_distance_center):>6} {_fmt(r.exit_distance_surface):>6} "
                  f"{_fmt(r.tool_angle, 180 / math.pi, 0):>5} {_fmt(r.min_clearance, digits=2):>6} "
                  f"{_fmt(r.max_bend, 180 / math.pi, 0):>5} {r.planning_ms:>6.2f}")
            for reason in r.reasons:
                print(f"{'':<{w}}   - {reason}")
