"""Route planner on a hand-built tree with analytic answers (CT frame, metres)."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from figure_checks import assert_png_figure, plotly_traces

from bronchonav.airway.tree import AirwayTree, Branch, Nodule
from bronchonav.errors import InputError, MapError
from bronchonav.maps import AirwayMap
from bronchonav.planning import DeviceConstraints, Route, RoutePlanner, plan_route
from bronchonav.planning.cost import largest_tip_angle

MM = 1e-3
DEG = math.pi / 180

# Small turning radius so that only the constraint under test can fail.
LOOSE = DeviceConstraints(min_bend_radius=1 * MM, check_pleura=False)


def _seg(start, direction, length, r0, r1=None, n=41):
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    s = np.linspace(0.0, length, n)
    pts = np.asarray(start, float) + s[:, None] * d
    radii = np.linspace(r0, r0 if r1 is None else r1, n)
    return pts, radii


def _dir(angle_from_down, sign):
    """Unit vector in the x-z plane, angle from -z towards sign*x."""
    return np.array([sign * math.sin(angle_from_down), 0.0, -math.cos(angle_from_down)])


def hand_tree():
    """Trachea (100 mm, r 9 mm) → two main bronchi (40 mm at 30°, r 6 mm) → four daughters.

    3: straight on from 1 (right), 60 mm, r 2.5 mm, RLL.     4: 100° bend from 1, 40 mm, RUL.
    5: straight on from 2 (left), 80 mm, r 1.5 mm (too narrow for 4 mm), LLL.
    6: 30° from 2, 40 mm, tapering r 2.5 → 1.5 mm, LUL.
    """
    top = np.array([0.0, 0.0, 0.1])
    branches = []
    p, r = _seg(top, [0, 0, -1], 0.1, 9 * MM)
    branches.append(Branch(0, None, 0, p, r, name="trachea"))
    d1, d2 = _dir(30 * DEG, -1), _dir(30 * DEG, 1)
    p1, r1 = _seg(p[-1], d1, 0.04, 6 * MM)
    branches.append(Branch(1, 0, 1, p1, r1, name="RMB"))
    p2, r2 = _seg(p[-1], d2, 0.04, 6 * MM)
    branches.append(Branch(2, 0, 1, p2, r2, name="LMB"))
    p3, r3 = _seg(p1[-1], d1, 0.06, 2.5 * MM, n=61)
    branches.append(Branch(3, 1, 2, p3, r3, lobe="RLL"))
    d4 = _dir(130 * DEG, -1)  # 100° from d1
    p4, r4 = _seg(p1[-1], d4, 0.04, 3 * MM)
    branches.append(Branch(4, 1, 2, p4, r4, lobe="RUL"))
    p5, r5 = _seg(p2[-1], d2, 0.08, 1.5 * MM, n=81)
    branches.append(Branch(5, 2, 2, p5, r5, lobe="LLL"))
    d6 = _dir(0 * DEG, 1)  # 30° from d2
    p6, r6 = _seg(p2[-1], d6, 0.04, 2.5 * MM, 1.5 * MM)
    branches.append(Branch(6, 2, 2, p6, r6, lobe="LUL"))
    return AirwayTree(branches)


@pytest.fixture(scope="module")
def tree():
    return hand_tree()


def beside(tree, branch_id, s, offset, direction=(0.0, 1.0, 0.0)):
    """A point at arc length s along a straight branch, offset perpendicular (y) by offset."""
    b = tree[branch_id]
    return b.start + s * b.direction + offset * np.asarray(direction, float)


def make_map(tree, nodules=(), lung_mask=None):
    return AirwayMap("hand", tree, list(nodules), lung_mask=lung_mask)


@pytest.fixture(scope="module")
def planner(tree):
    nod = [Nodule("A", beside(tree, 3, 0.02, 0.012), 4 * MM, "RLL", "near airway"),
           Nodule("FAR", beside(tree, 5, 0.07, 0.005), 3 * MM, "LLL", "far from airways")]
    return RoutePlanner(make_map(tree, nod), LOOSE)


def test_best_exit_is_at_the_tool_angle_limit_beside_a_straight_branch(planner, tree):
    # Lesion 12 mm beside branch 3, 20 mm along it. Cost J = L - a + 3*sqrt(d^2 + a^2) for an exit
    # a before the foot would be least at cos(angle) = 1/3 (70.5°) > 60°, so the angle limit
    # binds: a = d / tan(60°), tool length 2d/sqrt(3), route length 100 + 40 + 20 - a mm.
    route = planner.plan("A")[0]
    d = 0.012
    a = d / math.tan(60 * DEG)
    assert route.feasible and route.reasons == []
    assert route.branch_ids == [0, 1, 3]
    assert route.generations == [0, 1, 2] and route.lobes == [None, None, "RLL"]
    assert route.tool_angle <= 60 * DEG + 1e-9
    assert route.tool_angle == pytest.approx(60 * DEG, abs=3 * DEG)
    assert route.tool_length == pytest.approx(2 * d / math.sqrt(3), abs=0.6 * MM)
    assert route.length == pytest.approx(0.1 + 0.04 + 0.02 - a, abs=1.0 * MM)
    assert route.exit_distance_surface == pytest.approx(route.tool_length - 4 * MM)
    np.testing.assert_allclose(route.tool_end, beside(tree, 3, 0.02, 0.012))
    np.testing.assert_allclose(route.exit_point, route.waypoints[-1])
    np.testing.assert_allclose(route.waypoints[0], tree.trachea.start)
    # waypoints about every millimetre, on the centerlines, radii and clearance consistent
    steps = np.linalg.norm(np.diff(route.waypoints, axis=0), axis=1)
    assert steps.max() <= 1.0 * MM + 1e-9
    assert np.all(tree.inside_lumen(route.waypoints))
    np.testing.assert_allclose(route.clearance, route.waypoint_radius - 1.75 * MM)
    assert route.min_clearance == pytest.approx(0.75 * MM)
    np.testing.assert_allclose(route.bifurcation_bends, [30 * DEG, 0.0], atol=1e-6)
    assert route.max_bend == pytest.approx(30 * DEG)
    assert route.arclength[-1] == pytest.approx(route.length)


def test_largest_tip_angle_is_the_arc_that_fits_across_the_lumen():
    # R (1 - cos a) = 2 c: c = R / 10 gives cos a = 0.8 (36.87°); c = R / 2 a quarter turn
    R = 12.7 * MM
    np.testing.assert_allclose(largest_tip_angle([R / 10, R / 2, 0.0, -MM], R),
                               [math.acos(0.8), math.pi / 2, 0.0, 0.0])
    assert largest_tip_angle(2 * R, R) == pytest.approx(math.pi)  # room for any turn


def test_the_tip_turns_no_further_than_its_lumen_lets_it(tree):
    """The lesion A beside the narrow branch 3 (clearance 0.75 mm): with the default 12.7 mm
    bend radius the tip turns at most arccos(1 - 1.5 / 12.7) = 28.1° there, less than the
    31° at which the nearest point of branch 3 (its start, 20 mm before the foot) sees it; the
    route ends, where the tip can aim at it, in the wide main bronchus (clearance 4.25 mm: the
    tip turns 71° there) at its end, tool angle atan(12 / 20) — not in branch 3 at the tool's
    60°, which the cost alone prefers."""
    nodule = Nodule("A", beside(tree, 3, 0.02, 0.012), 4 * MM, "RLL", "near airway")
    c = DeviceConstraints(check_pleura=False)
    assert math.degrees(largest_tip_angle(0.75 * MM, c.min_bend_radius)) == \
        pytest.approx(math.degrees(math.acos(1 - 1.5 / 12.7)))
    route = RoutePlanner(make_map(tree, [nodule]), c).plan("A")[0]
    assert route.feasible and route.branch_ids == [0, 1]
    assert route.tool_angle == pytest.approx(math.atan2(12, 20), abs=1 * DEG)
    assert route.tool_length == pytest.approx(math.hypot(12, 20) * MM, abs=0.6 * MM)
    assert route.tip_turn == pytest.approx(math.acos(1 - 8.5 / 12.7))
    assert route.summary()["tip_turn_rad"] == route.tip_turn
    # 15 mm beside branch 3, 55 mm along it: every exit within 30 mm lies in branch 3 and sees
    # it at atan(15 / 25) = 31° or more (25 mm: the farthest of the branch's samples, 1 mm
    # apart, that the 30 mm tool reaches; the next, 26 mm back, is 30.02 mm away), beyond the
    # tip's 28.1°: the best exit within the tool's 60° is planned, and says its aim falls short
    far = Nodule("B", beside(tree, 3, 0.055, 0.015), 3 * MM, "RLL", "")
    route = RoutePlanner(make_map(tree, [far]), c).plan("B")[0]
    loose = RoutePlanner(make_map(tree, [far]), c.replace(check_tip_turn=False)).plan("B")[0]
    assert route.feasible and route.branch_ids == [0, 1, 3]
    np.testing.assert_allclose(route.exit_point, loose.exit_point)
    assert route.tool_angle == pytest.approx(math.radians(60), abs=3 * DEG)
    assert route.tip_turn == pytest.approx(math.acos(1 - 1.5 / 12.7))
    assert route.tip_turn < route.tool_angle


def test_k_alternatives_use_distinct_exit_branches_ranked_by_cost(planner):
    routes = planner.plan("A", k=3)
    exits = [r.branch_ids[-1] for r in routes]
    assert len(set(exits)) == len(exits) >= 2
    assert [r.rank for r in routes] == list(range(len(routes)))
    costs = [r.cost for r in routes]
    assert costs == sorted(costs)
    assert all(r.feasible and r.tool_length <= 0.03 and r.tool_angle <= 60 * DEG + 1e-9
               for r in routes)


def test_far_lesion_beyond_a_narrow_branch_is_infeasible_with_reasons(planner, tree):
    # 70 mm along the 3 mm wide branch 5: the catheter (4 mm with margin) cannot enter it; the
    # nearest reachable point is 20 mm down the tapering branch 6, where it narrows to 4 mm.
    route = planner.plan("FAR")[0]
    assert not route.feasible and route.waypoints.shape == (0, 3)
    by = {r.constraint: r for r in route.reasons}
    assert set(by) == {"exit_distance", "diameter"}
    ex = by["exit_distance"]
    nearest = tree[6].start + 0.020 * tree[6].direction
    expected = float(np.linalg.norm(beside(tree, 5, 0.07, 0.005) - nearest))
    assert ex.measured == pytest.approx(expected, abs=0.5 * MM)
    assert ex.limit == pytest.approx(0.03)
    assert ex.excess == pytest.approx(expected - 0.03, abs=0.5 * MM)
    np.testing.assert_allclose(ex.nearest_reachable_point, nearest, atol=0.5 * MM)
    assert str(ex).startswith(f"exit_distance: nearest reachable airway point is "
                              f"{ex.measured * 1e3:.1f} mm from the lesion centre (limit 30 mm)")
    dia = by["diameter"]
    assert dia.branch_id == 5
    assert dia.measured == pytest.approx(3.0 * MM) and dia.limit == pytest.approx(4.0 * MM)
    assert dia.excess == pytest.approx(1.0 * MM)
    assert "short by 1.00 mm" in dia.message


def test_tapering_branch_is_reachable_up_to_where_it_narrows(tree):
    # Branch 6 tapers from r 2.5 to 1.5 mm over 40 mm: diameter 4.0 mm at 20 mm.
    b = tree[6]
    target = b.start + 0.065 * b.direction
    route = RoutePlanner(make_map(tree), LOOSE).plan(target)[0]
    assert not route.feasible
    ex = next(r for r in route.reasons if r.constraint == "exit_distance")
    np.testing.assert_allclose(ex.nearest_reachable_point, b.start + 0.020 * b.direction, atol=1 * MM)
    assert ex.nearest_reachable_distance == pytest.approx(0.045, abs=1 * MM)


def test_sharp_bifurcation_beyond_max_articulation_is_reported(tree):
    target = tree[4].end + np.array([0.0, 0.004, 0.0])
    loose = RoutePlanner(make_map(tree), LOOSE).plan(target)[0]
    assert loose.feasible and loose.branch_ids[-1] == 4
    assert loose.bifurcation_bends[-1] == pytest.approx(100 * DEG, abs=1e-6)
    stiff = RoutePlanner(make_map(tree), LOOSE.replace(max_articulation=90 * DEG)).plan(target)[0]
    assert not stiff.feasible
    bend = next(r for r in stiff.reasons if r.constraint == "bend")
    assert bend.branch_id == 4 and bend.unit == "rad"
    assert bend.measured == pytest.approx(100 * DEG, abs=1e-6)
    assert bend.excess == pytest.approx(10 * DEG, abs=1e-6)


def test_turning_radius_corridor_model(tree):
    # Into branch 4 (100°): room = clearance of branch 1 (4.25 mm) + of branch 4 (1.25 mm)
    # = 5.5 mm; a radius R needs R (1 - cos 50°), so R <= 15.4 mm passes and R = 16 mm fails.
    target = tree[4].end + np.array([0.0, 0.004, 0.0])
    limit = 5.5 * MM / (1 - math.cos(50 * DEG))
    ok = RoutePlanner(make_map(tree), LOOSE.replace(min_bend_radius=limit * 0.98)).plan(target)[0]
    assert ok.feasible and ok.branch_ids[-1] == 4
    bad = RoutePlanner(make_map(tree), LOOSE.replace(min_bend_radius=limit * 1.02)).plan(target)[0]
    bend = next(r for r in bad.reasons if r.constraint == "bend")
    assert bend.limit == pytest.approx(5.5 * MM) and bend.unit == "m"


def test_lesion_behind_the_airways_fails_on_the_tool_angle(tree):
    # Above the trachea's top: every reachable point within 30 mm sees it backwards.
    target = tree.trachea.start + np.array([0.0, 0.0, 0.01])
    route = RoutePlanner(make_map(tree), LOOSE).plan(target)[0]
    assert not route.feasible
    assert [r.constraint for r in route.reasons] == ["tool_angle"]
    assert route.reasons[0].measured == pytest.approx(math.pi, abs=1e-6)


def test_catheter_wider_than_the_main_bronchi_reaches_nothing(planner, tree):
    wide = RoutePlanner(planner.map, LOOSE.replace(outer_diameter=14 * MM))
    for routes in wide.plan_all().values():
        route = routes[0]
        assert not route.feasible
        dia = next(r for r in route.reasons if r.constraint == "diameter")
        assert "does not fit the trachea/main bronchi" in dia.message
        assert dia.branch_id in (1, 2) and dia.excess == pytest.approx(2.5 * MM)
        # the catheter stays in the trachea
        assert tree.trachea.start[2] >= dia.nearest_reachable_point[2] >= tree.trachea.end[2] - 1e-9
    huge = RoutePlanner(planner.map, LOOSE.replace(outer_diameter=20 * MM)).plan("A")[0]
    assert not huge.feasible
    assert huge.reasons[0].constraint == "diameter" and huge.reasons[0].branch_id == 0
    assert huge.reasons[0].nearest_reachable_point is None


def test_pleura_check_with_a_lung_mask(tree):
    import SimpleITK as sitk

    # Lung everywhere except a 4 mm slab between branch 3 and a lesion 12 mm beside it (+y).
    spacing = 1.0  # mm, SimpleITK's usual unit
    origin = np.array([-120.0, -60.0, -120.0])
    shape = (240, 120, 240)  # x, y, z
    arr = np.ones(shape[::-1], dtype=np.uint8)
    y = origin[1] + np.arange(shape[1]) * spacing
    arr[:, (y >= 4) & (y <= 8), :] = 0
    img = sitk.GetImageFromArray(arr)
    img.SetOrigin(origin.tolist())
    img.SetSpacing([spacing] * 3)
    target = beside(tree, 3, 0.02, 0.012)
    blocked = RoutePlanner(make_map(tree, lung_mask=img), LOOSE.replace(check_pleura=True))
    route = blocked.plan(target)[0]
    assert not route.feasible
    pl = route.reasons[0]
    assert pl.constraint == "pleura"
    assert pl.measured == pytest.approx(4 * MM / math.sin(60 * DEG), abs=1.5 * MM)
    free = RoutePlanner(make_map(tree, lung_mask=img), LOOSE).plan(target)[0]
    assert free.feasible


def test_bad_targets_raise_clear_errors(planner, tree):
    with pytest.raises(MapError, match="unknown nodule id 'N9'.*known: A, FAR"):
        planner.plan("N9")
    with pytest.raises(InputError, match="non-finite"):
        planner.plan([np.nan, 0.0, 0.0])
    with pytest.raises(InputError, match="outside the body"):
        planner.plan([0.0, 0.0, 1.0])  # 1 m above the trachea
    with pytest.raises(InputError):
        planner.plan([0.0, 0.0])
    with pytest.raises(InputError, match="k must be"):
        planner.plan("A", k=0)
    with pytest.raises(InputError):
        DeviceConstraints(outer_diameter=-1.0)


def test_route_json_round_trip_csv_and_poses(planner):
    route = planner.plan("A")[0]
    back = Route.from_json(route.to_json())
    assert back.to_dict() == route.to_dict()
    np.testing.assert_array_equal(back.waypoints, route.waypoints)
    infeasible = planner.plan("FAR")[0]
    back = Route.from_json(infeasible.to_json())
    assert back.reasons == infeasible.reasons and not back.feasible
    lines = route.waypoints_csv().splitlines()
    assert lines[0].startswith("index,x_m,y_m,z_m,branch_id,generation,lobe")
    assert len(lines) == len(route.waypoints) + 1
    row = lines[-1].split(",")
    assert float(row[1]) == route.waypoints[-1, 0] and row[6] == "RLL"
    summary = route.summary()
    json.dumps(summary)
    for key in ("nodule", "feasible", "reasons", "length_m", "generations", "exit_distance_m",
                "min_clearance_m", "max_bend_rad", "waypoints", "ms"):
        assert key in summary
    pos, quat = route.to_path_poses()
    np.testing.assert_allclose(np.linalg.norm(quat, axis=1), 1.0)
    # rotate +z by each quaternion (the catheter convention: z forward): it must point along
    # the route
    x, y, z, w = quat.T
    fwd = np.column_stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)])
    steps = np.diff(pos, axis=0)
    steps /= np.linalg.norm(steps, axis=1, keepdims=True)
    assert np.min(np.einsum("ij,ij->i", fwd[:-1], steps)) > 1 - 1e-9
    pos_t, _ = route.to_path_poses(include_tool=True)
    np.testing.assert_allclose(pos_t[-1], route.tool_end)
    with pytest.raises(InputError):
        Route.from_json('{"format": "other"}')


def test_from_catheter_and_plan_route(tree):
    params = SimpleNamespace(outer_diameter=2.0e-3, min_bend_radius=5e-3, max_articulation=2.0)
    c = DeviceConstraints.from_catheter(params, tool_max_length=0.02)
    assert (c.outer_diameter, c.min_bend_radius, c.max_articulation, c.tool_max_length) == \
        (2.0e-3, 5e-3, 2.0, 0.02)
    # a 2 mm catheter (2.5 mm with margin) fits the 3 mm branch 5
    routes = plan_route(make_map(tree), beside(tree, 5, 0.07, 0.005), c)
    assert routes[0].feasible and routes[0].branch_ids == [0, 2, 5]


def test_from_default_catheter_params():
    from bronchonav.catheter.params import CatheterParams

    p = CatheterParams.default()
    c = DeviceConstraints.from_catheter(p)
    assert c.outer_diameter == pytest.approx(p.outer_diameter)
    assert c.min_bend_radius == pytest.approx(p.min_bend_radius)
    assert c.max_articulation == pytest.approx(p.max_articulation)


def test_kink_inside_a_branch_is_checked_against_the_bend_radius():
    # A branch straight on from the trachea that turns 90° half-way (r 2.5 mm: clearance
    # 0.75 mm, room 1.5 mm). The turn needs R (1 - cos 45°): R <= 5.12 mm passes.
    p0, r0 = _seg([0, 0, 0.1], [0, 0, -1], 0.1, 9 * MM)
    a, _ = _seg(p0[-1], [0, 0, -1], 0.02, 2.5 * MM, n=21)
    b, _ = _seg(a[-1], [1, 0, 0], 0.02, 2.5 * MM, n=21)
    kinked = np.vstack([a, b[1:]])
    tree = AirwayTree([Branch(0, None, 0, p0, r0), Branch(1, 0, 1, kinked,
                                                           np.full(len(kinked), 2.5 * MM))])
    target = b[-1] + np.array([0.01, 0.005, 0.0])  # > 30 mm from the first leg
    limit = 1.5 * MM / (1 - math.cos(45 * DEG))
    ok = RoutePlanner(make_map(tree), LOOSE.replace(min_bend_radius=0.95 * limit)).plan(target)[0]
    assert ok.feasible and ok.exit_point[0] > 0.01  # past the kink
    assert ok.length == pytest.approx(0.1 + 0.02 + ok.exit_point[0], abs=0.5 * MM)  # resampled
    bad = RoutePlanner(make_map(tree), LOOSE.replace(min_bend_radius=1.05 * limit)).plan(target)[0]
    assert not bad.feasible
    curv = next(r for r in bad.reasons if r.constraint == "curvature")
    assert curv.branch_id == 1 and curv.limit == pytest.approx(1.5 * MM)
    assert curv.measured == pytest.approx(1.05 * limit * (1 - math.cos(45 * DEG)))
    # the catheter gets to just before the kink: the nearest reachable point is on the first leg
    assert curv.nearest_reachable_point[0] == pytest.approx(0.0, abs=1e-9)


def test_png_and_html_views_of_feasible_and_infeasible_routes(planner, tmp_path):
    from bronchonav.viz.route_html import route_figure, write_route_html
    from bronchonav.viz.route_plot import plot_routes

    routes = planner.plan("A", k=2) + planner.plan("FAR")
    huge = RoutePlanner(planner.map, LOOSE.replace(outer_diameter=20 * MM)).plan("A")
    routes += huge  # nothing reachable: no nearest point to draw
    png = plot_routes(planner.tree, routes, tmp_path / "r.png", "hand")
    assert_png_figure(png, (1440, 900), panels=2)  # 12 x 7.5 in at 120 dpi, two views
    fig = route_figure(planner.tree, routes)
    names = [t.name for t in fig.data]
    assert names[0] == "airway centerlines"
    assert sum(n.startswith("A route") for n in names) == 2
    assert any(n.startswith("FAR infeasible: exit_distance; diameter") for n in names)
    html = write_route_html(planner.tree, routes, tmp_path / "r.html")
    # the page holds the data: the centerlines of every branch and each route's waypoints (mm)
    traces = plotly_traces(html)
    assert [t["name"] for t in traces] == names
    lines = traces[0]
    assert sum(v is None for v in lines["x"]) == len(planner.tree)
    best = routes[0]
    drawn = next(t for t in traces if t["name"].startswith("A route 0"))
    assert np.allclose(np.column_stack([drawn["x"], drawn["y"], drawn["z"]]),
                       best.waypoints * 1e3)
    assert "<script" in html.read_text()[:5000] and "plotly" in html.read_text().lower()
