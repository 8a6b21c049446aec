"""Route planner on the phantom: ground-truth map and, when built, maps/phantom_default.

Routes are checked against the phantom's ground truth (true centerlines and radii, analytic
lungs), which the planner never sees when it plans on the extracted map.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from figure_checks import assert_png_figure, plotly_traces

from bronchonav.cli import main as cli_main
from bronchonav.ct.phantom import generate_phantom_tree, phantom_config, phantom_ground_truth_map
from bronchonav.errors import InputError, MapError
from bronchonav.maps import load_map, save_map
from bronchonav.planning import DeviceConstraints, RoutePlanner

EXTRACTED = Path(os.environ.get("BRONCHONAV_PLANNER_TEST_MAP",
                               Path(__file__).resolve().parents[1] / "maps" / "phantom_default"))
"""The extracted map of the default phantom (override with $BRONCHONAV_PLANNER_TEST_MAP)."""


@pytest.fixture(scope="module")
def truth():
    """Ground-truth tree, nodules and lungs of the default phantom."""
    return generate_phantom_tree(phantom_config("default"))


@pytest.fixture(scope="module")
def gt_map():
    return phantom_ground_truth_map(phantom_config("default"))


def _maps():
    params = [pytest.param("gt", id="ground-truth-map")]
    params.append(pytest.param("extracted", id="maps/phantom_default"))  # shipped in the repo
    return params


@pytest.fixture(scope="module", params=_maps())
def planner(request, gt_map):
    if request.param == "gt":
        return RoutePlanner(gt_map)
    airway_map = load_map(EXTRACTED)
    source = airway_map.metadata.get("source", {})
    assert source.get("name", "default") == "default" and int(source.get("seed", 0)) == 0
    return RoutePlanner(airway_map)


@pytest.fixture(scope="module")
def plans(planner):
    return planner.plan_all(k=3)


def test_near_nodules_feasible_far_nodule_infeasible(planner, plans, truth):
    _, nodules, _ = truth
    assert {n.note for n in nodules} == {"near airway", "far from airways"}
    for n in nodules:
        routes = plans[n.id]
        if n.note == "near airway":
            assert routes[0].feasible, f"{n.id}: {[str(r) for r in routes[0].reasons]}"
        else:
            assert len(routes) == 1 and not routes[0].feasible
            ex = next(r for r in routes[0].reasons if r.constraint == "exit_distance")
            assert ex.measured > ex.limit == pytest.approx(0.03)
            assert ex.excess == pytest.approx(ex.measured - 0.03)
            d = np.linalg.norm(np.asarray(ex.nearest_reachable_point) - n.center)
            assert d == pytest.approx(ex.nearest_reachable_distance)
            assert "nearest reachable airway point is" in str(ex)


def test_every_waypoint_lies_in_the_true_lumen_and_constraints_hold(plans, truth):
    gt_tree, _, lungs = truth
    c = DeviceConstraints()
    n_routes = 0
    for routes in plans.values():
        for r in routes:
            if not r.feasible:
                continue
            n_routes += 1
            # distance to the TRUE centerline <= true radius, for every waypoint
            assert np.all(gt_tree.inside_lumen(r.waypoints)), r.target_id
            assert r.tool_length <= c.tool_max_length + 1e-12
            assert r.tool_angle <= c.tool_max_angle + 1e-9
            assert np.all(2 * r.waypoint_radius >= c.required_diameter - 1e-12)
            assert r.min_clearance >= c.min_clearance - 1e-12
            assert np.all(r.bifurcation_bends <= c.max_articulation)
            assert r.exit_distance_surface == pytest.approx(max(0.0, r.tool_length - r.target_radius))
            # the tool path stays in the lesion's lung (analytic lungs) except inside the lumen
            t = np.linspace(0, 1, 200)[:, None]
            path = r.tool_start * (1 - t) + r.tool_end * t
            lung = lungs.lung_of(path)
            outside = (lung != lungs.lung_of(r.tool_end[None])[0]) & ~gt_tree.inside_lumen(path)
            assert outside.mean() < 0.03, r.target_id  # voxelised mask vs analytic boundary
    assert n_routes >= 5


def test_catheter_wider_than_the_main_bronchi_reaches_nothing(planner, truth):
    gt_tree, nodules, _ = truth
    main = max(2 * gt_tree[b].radii.max() for b in gt_tree.trachea.children)
    trachea_min = 2 * gt_tree.trachea.radii.min()
    diameter = main + 0.5e-3
    assert diameter + 0.5e-3 < trachea_min  # it does fit the trachea
    wide = RoutePlanner(planner.map, DeviceConstraints(outer_diameter=diameter))
    for routes in wide.plan_all().values():
        assert len(routes) == 1 and not routes[0].feasible
        dia = [r for r in routes[0].reasons if r.constraint == "diameter"]
        assert dia and "does not fit the trachea/main bronchi" in dia[0].message
        assert dia[0].excess > 0


def test_bad_targets_on_the_phantom(gt_map):
    planner = RoutePlanner(gt_map)
    with pytest.raises(MapError, match="unknown nodule id 'N99'.*N1, N2"):
        planner.plan("N99")
    with pytest.raises(InputError, match="non-finite"):
        planner.plan([0.05, np.inf, -0.05])
    with pytest.raises(InputError, match="outside the lungs' bounding box"):
        planner.plan([0.0, 0.0, 0.5])
    with pytest.raises(InputError, match="outside the lung mask"):
        planner.plan([0.0, 0.0, -0.02])  # in the mediastinum, below the carina


def test_cli_plan_json_png_html_and_broken_map(gt_map, tmp_path, capsys):
    import json

    folder = save_map(gt_map, tmp_path / "gt")
    png, html = tmp_path / "r.png", tmp_path / "r.html"
    code = cli_main(["plan", "--map", str(folder), "--nodule", "all", "--json", "--k", "2",
                     "--png", str(png), "--html", str(html)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["nodule"] for o in out] == [n.id for n in gt_map.nodules]
    for o in out:
        for key in ("nodule", "feasible", "reasons", "length_m", "generations", "exit_distance_m",
                    "min_clearance_m", "max_bend_rad", "waypoints", "ms"):
            assert key in o
    far = [o for o in out if not o["feasible"]]
    assert len(far) == 1 and far[0]["reasons"][0].startswith("exit_distance:")
    assert_png_figure(png, (1440, 900), panels=2)
    # the HTML holds every nodule's best route (or why not), and the centerlines of every branch
    names = [t["name"] for t in plotly_traces(html)]
    assert names[0] == "airway centerlines"
    for o in out:
        assert any(n.startswith(f"{o['nodule']} route 0" if o["feasible"] else
                                f"{o['nodule']} infeasible") for n in names), o["nodule"]
    feasible = next(o for o in out if o["feasible"])
    drawn = next(t for t in plotly_traces(html) if t["name"].startswith(f"{feasible['nodule']} route 0"))
    assert np.allclose(np.column_stack([drawn["x"], drawn["y"], drawn["z"]]),
                       np.asarray(feasible["waypoints"]) * 1e3, atol=1e-6)
    # a wide catheter: nothing is feasible, the table says why
    assert cli_main(["plan", "--map", str(folder), "--nodule", "N1",
                     "--catheter-diameter", "0.0155"]) == 0
    table = capsys.readouterr().out
    assert "does not fit the trachea/main bronchi" in table
    # broken map: one clear line on stderr, exit code 2
    (folder / "tree.json").write_text("{}")
    with pytest.raises(MapError, match="SHA-256"):
        load_map(folder)
    assert cli_main(["plan", "--map", str(folder), "--nodule", "N1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt" in err[0]
    assert cli_main(["plan", "--map", str(tmp_path / "missing"), "--nodule", "N1"]) == 2
    assert "map folder not found" in capsys.readouterr().err
