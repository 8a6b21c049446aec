"""The built-in campaign stages on the default phantom (ground-truth map): planning,
rehearsal with the catheter, registration trials and the camera, checked against the phantom's
construction and the stages' own definitions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from figure_checks import assert_png_figure

from bronchonav.campaign.builtin import catheter_params, device_constraints
from bronchonav.campaign.report import write_report
from bronchonav.campaign.runner import run_campaign
from bronchonav.campaign.spec import CatheterVariant, parse_spec
from bronchonav.campaign.store import ResultStore


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
            "stages": ["map", "plan", "rehearse", "register", "camera"],
            "stage_options": {"rehearse": {"step_m": 0.01}}}
    spec = parse_spec(data, tmp)
    summary = run_campaign(spec, tmp / "out", progress=False)
    rows = {(r["nodule"], r["catheter"]): r for r in ResultStore(tmp / "out").rows()}
    return summary, rows, tmp / "out"


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
    assert not far["plan_feasible"] and "exit_distance" in far["plan_reasons"]
    assert far["nodule_airway_distance_m"] > 0.035 - 0.02  # far nodule: centre >= 35 mm from lumen
    # a 25 mm catheter is wider than the 18 mm trachea
    assert not wide["plan_feasible"] and "diameter" in wide["plan_reasons"]
    assert wide["rehearse_reached"] is None and wide["camera_open_fraction"] is None


def test_rehearse_columns(phantom_run):
    _, rows, _ = phantom_run
    r = rows[("N2", "d3.5mm")]
    assert r["rehearse_reached"] == (r["rehearse_tip_error_m"] <= 5e-3)
    target = min(r["plan_length_m"], 0.35)  # the default catheter inserts at most 0.35 m
    assert r["rehearse_target_insertion_m"] == pytest.approx(target)
    assert r["rehearse_steps"] == math.ceil(target / 0.01 - 1e-9)
    assert 0 <= r["rehearse_failed_steps"] <= r["rehearse_steps"]
    # a failed step keeps the last converged state: full insertion only without failures
    assert r["rehearse_insertion_m"] <= target + 1e-12
    if r["rehearse_failed_steps"] == 0:
        assert r["rehearse_insertion_m"] == pytest.approx(target)
    assert np.isfinite(r["rehearse_tip_error_m"]) and r["rehearse_max_contact_N"] >= 0


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
    for section in ("## Reachability (plan)", "## Rehearsal with the catheter",
                    "## Registration (TRE at the nodule)", "## Camera at the exit point"):
        assert section in md
    assert "| wide | 25.00 | 2 | 0/2 (0%)" in md
    # one histogram panel per registration scenario (here one: breathing), 5 x 4 in at 100 dpi
    assert_png_figure(out / "report" / "tre.png", (500, 400), panels=1)
