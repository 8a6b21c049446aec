"""Side-branch benchmark: how sharp a turn the catheter's passive shaft can be driven through.

Usage::

    .venv/bin/python bench/turn_bench.py [--angles 45,60,75,90,100,105,...] [--past-mm 60]
                                         [--diameters-mm 2.8,3.5] [--sibling-deg 0]
                                         [--then-deg A --then-after-mm D]
                                         [--out bench/results/turn.json]

A device characterisation on a synthetic junction, independent of any patient: a straight
parent airway (120 mm, 7 mm radius, entered at its top) divides into a sibling that continues
straight on (60 mm, 5.5 mm radius; or turned by ``--sibling-deg`` the other way) and a side
branch that turns off by the angle ``θ`` (80 mm, 4.5 mm radius), as the right upper lobe
bronchus leaves the right main bronchus; with ``--then-deg A --then-after-mm D`` the side branch
turns on by ``A`` more, in the same direction, ``D`` beyond the junction (turns in a row). The
navigation controller (:class:`~bronchonav.navigation.NavigationController`, default
configuration) drives the catheter model (:func:`bronchonav.campaign.builtin.catheter_params`
of each diameter, 30 nodes) along the parent and into the side branch to ``--past-mm`` beyond
the junction, farther than the 40 mm articulating tip, so that the passive shaft itself has to
follow the turn.

Per angle and catheter (``runs``): the outcome and its reason, how far the tip got into the
side branch (``past_m``: its farthest route progress beyond the junction, at most ``--past-mm``),
how much of the shaft lies in the sibling when driving ends (``shaft_in_sibling_m``: the shaft
bowing into the open airway beyond the turn instead of following it; counted in whole nodes,
about 5.5 mm each at 30 nodes along 165 mm), the wall force (N), steps and failed steps.
``largest_turn_reached_deg`` per catheter: the largest angle reached below the smallest angle
not reached (``None`` if none). ``junction``: each airway's length and lumen radius (m), how
far the route goes past the junction, the sibling's turn and the second turn (rad, m).
Deterministic (no wall-clock deadline); ``seconds`` is wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from machine import emit, machine_info

# (length, lumen radius) of each airway of the junction (m)
PARENT = (0.120, 7.0e-3)
SIBLING = (0.060, 5.5e-3)
SIDE = (0.080, 4.5e-3)


def junction_tree(angle_rad: float, sibling_rad: float = 0.0, then_rad: float = 0.0,
                  then_after_m: float = 0.0):
    """The synthetic junction (CT frame, m): parent 0 down ``-z``, sibling 1 turned by
    ``sibling_rad`` towards ``-x`` (0: straight on), side branch 2 turned by ``angle_rad``
    towards ``+x`` and, ``then_after_m`` along it, by ``then_rad`` more."""
    from bronchonav.airway.tree import AirwayTree, Branch

    def tube(start, direction, length, radius):
        s = np.linspace(0.0, length, int(round(length / 1e-3)) + 1)
        return start + s[:, None] * direction, np.full(s.size, radius)

    def turned(angle):  # from -z towards +x
        return np.array([np.sin(angle), 0.0, -np.cos(angle)])

    p0, r0 = tube(np.zeros(3), turned(0.0), *PARENT)
    p1, r1 = tube(p0[-1], turned(-sibling_rad), *SIBLING)
    if then_rad == 0.0:
        p2, r2 = tube(p0[-1], turned(angle_rad), *SIDE)
    else:
        first, _ = tube(p0[-1], turned(angle_rad), then_after_m, SIDE[1])
        rest, _ = tube(first[-1], turned(angle_rad + then_rad), SIDE[0] - then_after_m, SIDE[1])
        p2 = np.vstack([first, rest[1:]])
        r2 = np.full(len(p2), SIDE[1])
    return AirwayTree([Branch(0, None, 0, p0, r0, children=[1, 2]),
                       Branch(1, 0, 1, p1, r1), Branch(2, 0, 1, p2, r2)])


def drive(angle_rad: float, diameter_m: float, past_m: float, sibling_rad: float = 0.0,
          then_rad: float = 0.0, then_after_m: float = 0.0) -> dict:
    """Drive into the side branch of :func:`junction_tree` to ``past_m`` beyond the junction;
    the outcome and where the catheter ended."""
    from bronchonav.campaign.builtin import catheter_params
    from bronchonav.campaign.spec import CatheterVariant
    from bronchonav.catheter import CatheterModel
    from bronchonav.geometry.polyline import Polyline, arc_length
    from bronchonav.navigation import NavigationController, RouteTarget

    tree = junction_tree(angle_rad, sibling_rad, then_rad, then_after_m)
    side = tree[2]
    along = arc_length(side.points)
    end = Polyline(side.points).point_at(past_m)  # the exit point, exactly past_m in
    path = np.vstack([tree[0].points, side.points[(along > 0) & (along < past_m - 1e-6)], end])
    target = RouteTarget.from_points(path, [0, 2])
    params = catheter_params(CatheterVariant(name="d", diameter_m=diameter_m))
    model = CatheterModel(params, tree, n_nodes=30)
    nav = NavigationController(target, model)
    t0 = time.perf_counter()
    farthest = 0.0
    while nav.outcome is None:
        nav.update(model.state.tip_pose)
        farthest = max(farthest, nav.s_tip)
    state = model.state
    junction = PARENT[0]
    in_sibling = state.branch_ids == 1
    spacing = np.gradient(state.arc_length)
    return {"angle_deg": round(float(np.degrees(angle_rad)), 3),
            "sibling_deg": round(float(np.degrees(sibling_rad)), 3),
            "then_deg": round(float(np.degrees(then_rad)), 3),
            "diameter_mm": diameter_m * 1e3,
            "outcome": nav.outcome.status, "reason": nav.outcome.reason,
            "past_m": max(0.0, float(farthest - junction)),
            "shaft_in_sibling_m": float(spacing[in_sibling].sum()),
            "wall_force_n": float(state.total_contact_force), "steps": nav.steps,
            "failed_steps": nav.failed_steps, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--angles", default="45,60,75,90,100,105,110,120,135,150",
                        help="turn angles of the side branch (degrees, comma-separated)")
    parser.add_argument("--past-mm", type=float, default=60.0,
                        help="how far beyond the junction the route goes (mm)")
    parser.add_argument("--diameters-mm", default="2.8,3.5",
                        help="catheter outer diameters (mm, comma-separated)")
    parser.add_argument("--sibling-deg", type=float, default=0.0,
                        help="turn of the sibling away from the side branch (degrees)")
    parser.add_argument("--then-deg", type=float, default=0.0,
                        help="a second turn of the side branch, the same way (degrees)")
    parser.add_argument("--then-after-mm", type=float, default=0.0,
                        help="where the second turn is, beyond the junction (mm)")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    try:
        angles = [float(a) for a in args.angles.split(",")]
        diameters = [float(d) * 1e-3 for d in args.diameters_mm.split(",")]
    except ValueError:
        print("turn_bench: --angles and --diameters-mm are comma-separated numbers",
              file=sys.stderr)
        return 2
    widest = 2e3 * SIDE[1]
    if not all(0 < a < 180 for a in angles) or not (0 < args.past_mm <= SIDE[0] * 1e3) or \
            not all(0 < d * 1e3 < widest for d in diameters) or \
            not 0 <= args.sibling_deg < 90 or not 0 <= args.then_deg < 90 or \
            (args.then_deg > 0 and not 0 < args.then_after_mm < SIDE[0] * 1e3):
        print(f"turn_bench: angles must be in (0, 180) degrees, --past-mm in (0, "
              f"{SIDE[0] * 1e3:.0f}], diameters in (0, {widest:.0f}) mm, --sibling-deg and "
              f"--then-deg in [0, 90) and --then-after-mm in (0, {SIDE[0] * 1e3:.0f})",
              file=sys.stderr)
        return 2
    sibling, then = np.radians(args.sibling_deg), np.radians(args.then_deg)
    then_after = args.then_after_mm * 1e-3 if args.then_deg > 0 else 0.0
    runs = [drive(np.radians(a), d, args.past_mm * 1e-3, sibling, then, then_after)
            for d in diameters for a in angles]
    largest = {}
    for d in diameters:
        mine = [r for r in runs if r["diameter_mm"] == d * 1e3]
        limit = min((r["angle_deg"] for r in mine if r["outcome"] != "reached"),
                    default=np.inf)
        below = [r["angle_deg"] for r in mine if r["outcome"] == "reached"
                 and r["angle_deg"] < limit]
        largest[f"d{d * 1e3:.1f}mm"] = max(below, default=None)
    emit({"benchmark": "turn", "machine": machine_info("scipy", "numba"),
          "junction": {**{name: {"length_m": length, "radius_m": radius}
                          for name, (length, radius) in (("parent", PARENT),
                                                         ("sibling", SIBLING), ("side", SIDE))},
                       "past_m": args.past_mm * 1e-3, "sibling_rad": float(sibling),
                       "then_rad": float(then), "then_after_m": then_after},
          "largest_turn_reached_deg": largest, "runs": runs}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
