"""Navigation figures of a campaign (:mod:`bronchonav.campaign.rehearsal_summary`) and the
report's rehearsal section, on a hand-made results table whose counts are written by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bronchonav.campaign.rehearsal_summary import summarize_rehearsals
from bronchonav.campaign.report import write_report
from bronchonav.campaign.spec import load_spec
from bronchonav.campaign.store import ResultStore


def _row(nodule, catheter, feasible, route, truth=None, registered=None, status="ok",
         scenario="breathing", reasons="diameter"):
    """A results row; ``truth``/``registered``: (reached, outcome, steps, failed, sim s, wall s,
    tool in lesion) or None when that pose was not rehearsed; ``reasons``: the planner's failed
    constraints of an infeasible route."""
    row = {"case_key": f"s0/{nodule}/{catheter}/{scenario}", "subject": "s0", "nodule": nodule,
           "catheter": catheter, "catheter_diameter_m": {"A": 2.8e-3, "B": 3.5e-3}[catheter],
           "scenario": scenario, "seed": 1, "status": status, "case_seconds": 1.0,
           "nodule_diameter_m": 0.012, "nodule_airway_generation": 4,
           "plan_feasible": feasible, "plan_reasons": "" if feasible else reasons,
           "plan_length_m": 0.2 if feasible else None,
           "plan_exit_generation": 5 if feasible else None, "rehearse_route": route}
    for pose, values in (("truth", truth), ("registered", registered)):
        if values is None:
            continue
        reached, outcome, steps, failed, sim_s, wall_s, in_lesion = values
        key = f"rehearse_{pose}_"
        row.update({key + "reached": reached, key + "outcome": outcome, key + "steps": steps,
                    key + "failed_steps": failed, key + "sim_time_s": sim_s,
                    key + "wall_s": wall_s, key + "tool_in_lesion": in_lesion,
                    key + "tip_error_m": 0.001 if reached else 0.02,
                    key + "tre_m": 0.002 if pose == "registered" else None})
    return row


ROWS = [
    _row("N1", "A", True, "planned", (True, "reached", 100, 1, 10.0, 2.0, True),
         (False, "wrong_branch", 120, 0, 12.0, 2.5, False)),
    _row("N2", "A", True, "planned", (False, "stuck", 50, 2, 5.0, 4.0, False),
         (False, "registration_failed", 30, 0, 0.0, 1.0, False)),
    _row("N3", "A", False, "unconstrained", (False, "stuck", 80, 0, 8.0, 6.0, False),
         (False, "timeout", 90, 0, 9.0, 7.0, False)),
    _row("N4", "A", False, "unconstrained", (True, "reached", 70, 1, 7.0, 3.0, True),
         (True, "reached", 75, 0, 7.5, 3.5, True), reasons="bend"),
    # refused because the tool cannot reach the lesion: reaching the airway's end tests nothing
    _row("N7", "B", False, "unconstrained", (True, "reached", 60, 0, 6.0, 5.0, True),
         reasons="exit_distance,bend"),
    _row("N5", "A", False, "none"),  # no airway route at all: not rehearsed
    _row("N1", "B", True, "planned", (True, "reached", 200, 0, 20.0, 8.0, True),
         (True, "reached", 210, 0, 21.0, 9.0, True)),
    # the same route in a second registration scenario: the first row of a route counts
    _row("N1", "B", True, "planned", (False, "stuck", 999, 999, 1.0, 1.0, False),
         (False, "stuck", 999, 999, 1.0, 1.0, False), scenario="other"),
    _row("N6", "B", True, "planned", status="error"),  # a failed case: not a route
]


def test_summary_counts_by_hand():
    s = summarize_rehearsals(ROWS, "truth")
    # rehearsed: N1A N2A N3A N4A N7B N1B; feasible: N1A N2A N1B, of which N1A and N1B reached;
    # N7B's verdict rests on the tool's reach: in no cell of the table
    assert (s.routes, s.feasible, s.reached, s.not_rehearsed) == (6, 3, 2, 1)
    assert s.reach_rate == pytest.approx(2 / 3)
    c = s.confusion
    assert (c.feasible_reached, c.feasible_not_reached, c.infeasible_reached,
            c.infeasible_not_reached, c.untested) == (2, 1, 1, 1, 1)
    assert s.agreement == pytest.approx(3 / 5)
    assert (s.steps, s.failed_steps) == (560, 4)
    assert s.failed_step_fraction == pytest.approx(4 / 560)
    assert (s.tool_in_lesion, s.tool_in_lesion_rate) == (2, pytest.approx(2 / 3))
    assert s.median_sim_time_s == pytest.approx(15.0)  # reached feasible routes: 10 s and 20 s
    assert s.median_wall_s == pytest.approx(4.5)  # 2, 4, 6, 3, 5, 8 s
    assert s.outcomes == {"reached": 2, "stuck": 1, "wrong_branch": 0, "timeout": 0,
                          "registration_failed": 0}
    assert math.isnan(s.median_tre_m)
    assert s.bars() == {"reach_rate": False, "agreement": False, "failed_step_fraction": True}


def test_summary_per_pose_and_catheter():
    r = summarize_rehearsals(ROWS, "registered")
    assert (r.feasible, r.reached) == (3, 1)
    c = r.confusion
    assert (c.feasible_reached, c.feasible_not_reached, c.infeasible_reached,
            c.infeasible_not_reached, c.untested) == (1, 2, 1, 1, 0)
    assert r.outcomes["registration_failed"] == 1 and r.outcomes["wrong_branch"] == 1
    assert r.median_tre_m == pytest.approx(0.002)
    b = summarize_rehearsals(ROWS, "truth", "B")
    assert (b.routes, b.feasible, b.reached, b.steps, b.failed_steps) == (2, 1, 1, 260, 0)
    assert b.confusion.total == 1 and b.confusion.untested == 1
    assert b.bars() == {"reach_rate": True, "agreement": True, "failed_step_fraction": True}
    # a table without the pose: nothing rehearsed, NaN figures fail their bars
    none = summarize_rehearsals([{**r, "rehearse_registered_reached": None} for r in ROWS],
                                "registered")
    assert none.routes == 0 and math.isnan(none.reach_rate)
    assert not any(none.bars().values())


def test_report_shows_the_confusion_tables_and_the_pose_comparison(tmp_path):
    store = ResultStore(tmp_path)
    store.bind({"name": "hand", "stages": ["map", "plan", "rehearse"]}, "hand-made")
    for row in ROWS:
        store.append(row)
    store.compact()
    store.release()
    md = write_report(tmp_path).read_text()
    truth = md.index("### Planner vs rehearsal (truth pose)")
    registered = md.index("### Planner vs rehearsal (registered pose)")
    assert truth < registered
    assert md[truth:registered].split("\n")[2:8] == [
        "| planner | rehearsal reached | rehearsal not reached |", "|---|---|---|",
        "| feasible | 2 | 1 |", "| infeasible (catheter) | 1 | 1 |", "",
        "Agreement: 3/5 (60%) of rehearsed routes (1 routes not rehearsed). Not counted: 1 "
        "routes the planner refused because the tool cannot reach the lesion from any airway "
        "point (exit distance, tool angle, pleura); the catheter reaching an airway's end does "
        "not test that."]
    assert "| feasible | 1 | 2 |\n| infeasible (catheter) | 1 | 1 |" in md[registered:]
    assert "| reached, all | 2/3 (67%) | 1/3 (33%) |" in md
    assert "| registration failed | 0 | 1 |" in md
    assert ("Feasible routes driven both ways: 3; reached only on the ground truth: 1; reached "
            "only on the registered pose: 0.") in md
    # per pose and catheter: feasible routes, reached, tool in lesion, failed steps, medians,
    # outcome counts (reached, stuck, wrong_branch, timeout, registration_failed)
    assert ("| truth | A | 2 | 1/2 (50%) | 1/2 (50%) | 4/300 (1.33%) | 10.0 | 3.5 | "
            "1 | 1 | 0 | 0 | 0 |") in md
    assert (tmp_path / "report" / "navigation.png").stat().st_size > 5_000


def test_shipped_navigation_campaign_is_the_issue_cohort():
    spec = load_spec(Path(__file__).resolve().parents[1] / "config" / "campaign_navigation.yaml")
    assert [s.seed for s in spec.subjects] == list(range(8))
    assert spec.nodules.select == "all" and not spec.nodules.ids
    assert sorted(c.diameter_m for c in spec.catheters) == [0.0028, 0.0035]
    assert spec.stages == ("map", "plan", "rehearse")
    assert spec.stage_options["rehearse"]["poses"] == "truth,registered"
