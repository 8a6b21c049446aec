"""The built-in campaign stages: planning, registration trials and the camera on the default
phantom (ground-truth map), the rehearsal with the navigation controller on a small hand-built
map; checked against the maps' construction and the stages' own definitions."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from figure_checks import assert_png_figure

from bronchonav.campaign.builtin import catheter_params, device_constraints
from bronchonav.campaign.report import write_report
from bronchonav.campaign.runner import run_campaign
from bronchonav.campaign.spec import CatheterVariant, parse_spec
from bronchonav.campaign.store import ResultStore

sys.path.insert(0, str(Path(__file__).parent))
from test_campaign_helpers import write_small_map  # noqa: E402


def test_catheter_variant_parameters():
    base = catheter_params(CatheterVariant("a", 3.5e-3))
    assert math.isclose(base.max_articulation, math.pi, rel_tol=1e-12)
    v = CatheterVariant("b", 2.8e-3, bending_stiffness_Nm2=5e-4, articulation_rad=2.0,
                        min_bend_radius_m=0.01)
    p = catheter_params(v)
    tip = p.segments[p.articulation_segment]
    assert p.outer_diameter == 2.8e-3
    assert tip.EI == pytest.approx(5e-4)
    # the stiffer tip still articulates as far as asked (the tension limit follows EI)
    assert p.max_articulation == pytest.approx(2.0)
    assert p.segments[0].EI == base.segments[0].EI  # the shaft is unchanged
    c = device_constraints(v)
    assert (c.outer_diameter, c.max_articulation, c.min_bend_radius) == (2.8e-3, 2.0, 0.01)


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("phantom_campaign")
    data = {"name": "stages", "seed": 5,
            "cohort": {"phantoms": {"name": "default", "seeds": [0]}},
            "nodules": {"select": "all", "ids": ["N2", "N6"]},
            "catheters": [{"name": "d3.5mm", "diameter_m": 0.0035},
                          {"name": "wide", "diameter_m": 0.025}],
            "registration": {"scenarios": ["breathing"], "trials": 3},
            "stages": ["map", "plan", "register", "camera"]}
    spec = parse_spec(data, tmp)
    summary = run_campaign(spec, tmp / "out", progress=False)
    rows = {(r["nodule"], r["catheter"]): r for r in ResultStore(tmp / "out").rows()}
    return summary, rows, tmp / "out"


@pytest.fixture(scope="module")
def rehearse_run(tmp_path_factory):
    """One route of the small hand-built map (wide airways, 30° branchings) rehearsed steering on
    the ground truth (a phantom route takes minutes on a loaded machine, this one seconds)."""
    tmp = tmp_path_factory.mktemp("rehearse_campaign")
    data = {"name": "rehearse", "seed": 5,
            "cohort": {"maps": [str(write_small_map(tmp / "toymap", depth=2))]},
            "nodules": {"select": "all", "ids": ["N1"]},
            "catheters": [{"name": "d3.5mm", "diameter_m": 0.0035}],
            "stages": ["map", "plan", "rehearse"],
            "stage_options": {"rehearse": {"poses": "truth"}}}
    summary = run_campaign(parse_spec(data, tmp), tmp / "out", progress=False)
    assert summary.errors == 0, [r["error"] for r in ResultStore(tmp / "out").rows()]
    (row,) = ResultStore(tmp / "out").rows()
    return row, tmp / "out"


def test_phantom_campaign_runs_every_stage(phantom_run):
    summary, rows, _ = phantom_run
    assert summary.errors == 0, [r["error"] for r in rows.values()]
    assert len(rows) == 4


def test_plan_columns_follow_the_phantom(phantom_run):
    _, rows, _ = phantom_run
    near, far, wide = rows[("N2", "d3.5mm")], rows[("N6", "d3.5mm")], rows[("N2", "wide")]
    # the phantom places N2 near an airway a 3.5 mm catheter reaches, N6 far from every airway
    assert near["plan_feasible"] and near["plan_reasons"] == ""
    assert near["plan_exit_distance_m"] <= 0.030
    assert near["plan_length_m"] > 0.115  # longer than the trachea
    # no exit within the tool's reach sees N2 within the tip's turn in its lumen (the planner
    # falls back to the tool's 60°): the row says the aim falls short
    assert 0 < near["plan_tip_turn_rad"] < near["plan_tool_angle_rad"] <= math.radians(60) + 1e-9
    assert not far["plan_feasible"] and "exit_distance" in far["plan_reasons"]
    assert far["nodule_airway_distance_m"] > 0.035 - 0.02  # far nodule: centre >= 35 mm from lumen
    # a 25 mm catheter is wider than the 18 mm trachea
    assert not wide["plan_feasible"] and "diameter" in wide["plan_reasons"]
    assert wide["camera_open_fraction"] is None


def test_rehearse_columns(rehearse_run):
    r, _ = rehearse_run
    assert r["plan_feasible"] and r["rehearse_route"] == "planned"
    assert "rehearse_registered_reached" not in r  # only the pose asked for
    # wide airways and 30° branchings: the catheter gets there, converging on (almost) every step
    assert r["rehearse_truth_reached"] and r["rehearse_truth_outcome"] == "reached"
    assert r["rehearse_truth_tip_error_m"] <= 5e-3
    assert r["rehearse_truth_failed_steps"] <= 0.01 * r["rehearse_truth_steps"]
    # at most 1 mm of insertion per step: at least the route length less the 5 mm tolerance
    assert r["rehearse_truth_steps"] >= (r["plan_length_m"] - 5e-3) / 1e-3
    # on the truth there is no survey: every step is the drive, 0.05 s of simulated time each
    assert r["rehearse_truth_sim_time_s"] == pytest.approx(0.05 * r["rehearse_truth_steps"])
    # the nodule sits 10 mm beyond the leaf airway on its axis: the tool ends inside it, and
    # the tool-in-lesion flag is the miss distance against the nodule's radius
    assert r["rehearse_truth_tool_in_lesion"]
    assert r["rehearse_truth_tool_miss_m"] <= r["nodule_diameter_m"] / 2
    assert 0 <= r["rehearse_truth_retries"] <= 4 and r["rehearse_truth_max_contact_N"] >= 0
    assert r["rehearse_truth_tre_m"] is None


def test_report_on_the_rehearsal(rehearse_run):
    r, out = rehearse_run
    md = write_report(out).read_text()
    assert r["rehearse_truth_reached"]
    assert "## Rehearsal with the navigation controller" in md
    assert ("### Planner vs rehearsal (truth pose)\n\n"
            "| planner | rehearsal reached | rehearsal not reached |\n|---|---|---|\n"
            "| feasible | 1 | 0 |\n| infeasible (catheter) | 0 | 0 |\n\n"
            "Agreement: 1/1 (100%) of rehearsed routes.") in md
    assert "registered pose" not in md  # the comparison needs both poses
    assert (out / "report" / "navigation.png").is_file()


def test_register_columns_agree_with_the_trials(phantom_run):
    _, rows, _ = phantom_run
    for r in (rows[("N2", "d3.5mm")], rows[("N6", "d3.5mm")]):
        tre = np.array(json.loads(r["register_tre_json"]), float)
        assert r["register_trials"] == len(tre) == 3
        finite = tre[np.isfinite(tre)]
        assert r["register_tre_median_mm"] == pytest.approx(np.median(finite))
        # success needs TRE < 5 mm (and the registration's own success flag)
        assert r["register_success_rate"] <= np.mean(tre < 5.0) + 1e-12
    # each case draws its own trials
    assert rows[("N2", "d3.5mm")]["register_tre_json"] != rows[("N6", "d3.5mm")]["register_tre_json"]
    # a catheter wider than the trachea cannot carry the EM sensor in
    wide = rows[("N2", "wide")]
    assert wide["register_trials"] == 0 and "wider than the trachea" in wide["register_note"]


def test_camera_sees_the_approach_to_the_exit(phantom_run):
    _, rows, _ = phantom_run
    r = rows[("N2", "d3.5mm")]
    # 10 mm before the exit point, inside the lumen, looking at it: the wall surrounds the view,
    # and straight ahead it is at least as far as the exit point (the route stays in the lumen)
    assert 0 < r["camera_hit_fraction"] <= 1
    assert 1 - r["camera_hit_fraction"] <= r["camera_open_fraction"] <= 1
    assert r["camera_center_depth_m"] is None or r["camera_center_depth_m"] > 0.005
    assert 0 < r["camera_median_depth_m"] < 0.1


def test_report_on_the_phantom_campaign(phantom_run):
    _, _, out = phantom_run
    md = write_report(out).read_text()
    for section in ("## Reachability (plan)", "## Registration (TRE at the nodule)", "## Camera at the exit point"):
        assert section in md
    assert "| wide | 25.00 | 2 | 0/2 (0%)" in md
    # one histogram panel per registration scenario (here one: breathing), 5 x 4 in at 100 dpi
    assert_png_figure(out / "report" / "tre.png", (500, 400), panels=1)
