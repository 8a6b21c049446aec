"""Campaigns without Ray: the campaign file, case expansion and seeds, the results store,
in-process runs, resuming after an interrupted driver, and the report."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from figure_checks import assert_png_figure
import yaml

from bronchonav.campaign.cases import case_seed, expand_cases, sample_nodules, select_nodules
from bronchonav.campaign.custom import resolve_custom_stages
from bronchonav.campaign.report import write_report
from bronchonav.campaign.runner import run_campaign
from bronchonav.campaign.spec import NoduleSelection, load_spec, parse_spec
from bronchonav.campaign.stages import CaseContext, run_case
from bronchonav.campaign.store import ResultStore, comparable
from bronchonav.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
from test_campaign_helpers import small_map, write_small_map  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HELPERS = ("test_campaign_helpers:burn", "test_campaign_helpers:interrupt_at",
           "test_campaign_helpers:fail", "test_campaign_helpers:crash_once",
           "test_campaign_helpers:misbehave", "test_campaign_helpers:steal_identity")
"""The custom stages of these tests, allowed by name where a run uses them."""


def toy_campaign(tmp_path: Path, stages=("map", "test_campaign_helpers:burn"), depth=2,
                 catheters=None, **extra) -> dict:
    """A campaign dict on a small hand-built map (2**depth nodules)."""
    folder = tmp_path / "toymap"
    if not folder.exists():
        write_small_map(folder, depth)
    data = {"name": "toy", "seed": 3, "cohort": {"maps": [str(folder)]},
            "catheters": catheters or [{"name": "d3.5mm", "diameter_m": 0.0035},
                                       {"name": "d2.8mm", "diameter_m": 0.0028}],
            "stages": list(stages)}
    data.update(extra)
    return data


# -- the campaign file -----------------------------------------------------------------------

def test_shipped_example_parses_to_the_issue_campaign():
    spec = load_spec(REPO / "config" / "campaign_example.yaml")
    assert [s.seed for s in spec.subjects] == [0, 1, 2, 3]
    assert all(s.kind == "phantom" for s in spec.subjects)
    assert spec.nodules.select == "all"
    assert sorted(c.diameter_m for c in spec.catheters) == [0.0028, 0.0035]
    assert spec.registration.trials == 20
    assert {"plan", "rehearse", "register"} <= set(spec.stages)


@pytest.mark.parametrize("change, field", [
    ({"catheters": [{"name": "a", "diameter_m": -1}]}, "catheters[0].diameter_m"),
    ({"catheters": [{"name": "a", "diameter_m": 0.003}, {"name": "a", "diameter_m": 0.002}]},
     "catheters[1].name"),
    ({"catheters": [{"name": "a b", "diameter_m": 0.003}]}, "catheters[0].name"),
    ({"catheters": [{"name": "a", "diameter_m": 0.003, "colour": "red"}]}, "catheters[0].colour"),
    ({"stages": ["map", "rehearse"]}, "needs 'plan'"),
    ({"stages": ["map", "teleport"]}, "stages[1]"),
    ({"stages": ["map", "plan", "plan"]}, "stages[2]"),
    ({"cohort": {}}, "cohort"),
    ({"cohort": {"maps": ["does/not/exist"]}}, "cohort.maps[0]"),
    ({"cohort": {"phantoms": {"name": "huge", "seeds": [0]}}}, "cohort.phantoms[0].name"),
    ({"cohort": {"phantoms": {"name": "default", "seeds": [0, 0]}}}, "appears twice"),
    ({"registration": {"scenarios": ["sideways"]}, "stages": ["map", "register"]},
     "registration.scenarios[0]"),
    ({"registration": {"trials": 0}}, "registration.trials"),
    ({"nodules": {"select": "sample", "count": 3, "diameter_m": [0.02, 0.01]}},
     "nodules.diameter_m"),
    ({"nodules": {"select": "some"}}, "nodules.select"),
    ({"seed": "x"}, "seed"),
    ({"stage_options": {"camera": {}}}, "stage_options.camera"),
    ({"colour": 1}, "colour"),
])
def test_bad_campaign_fields_are_named(tmp_path, change, field):
    data = toy_campaign(tmp_path)
    data.update(change)
    with pytest.raises(InputError) as err:
        parse_spec(data, base_dir=tmp_path)
    assert field in str(err.value)


def test_load_spec_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text(yaml.safe_dump({"name": "x", "cohort": {"maps": []}}))
    with pytest.raises(InputError, match=r"bad\.yaml: cohort"):
        load_spec(bad)


def test_relative_paths_resolve_against_the_file(tmp_path):
    write_small_map(tmp_path / "maps" / "m1")
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"cohort": {"maps": ["maps/m1"]}, "stages": ["map"]}))
    spec = load_spec(f)
    assert spec.subjects[0].source == str((tmp_path / "maps" / "m1").resolve())
    assert spec.subjects[0].key == "map-m1"


def test_spec_round_trips_through_to_dict(tmp_path):
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "plan", "register"],
                                   registration={"scenarios": ["rigid", "breathing"],
                                                 "trials": 4}), tmp_path)
    again = parse_spec(spec.to_dict(), tmp_path)
    assert again == spec
    assert again.fingerprint() == spec.fingerprint()
    other = parse_spec({**spec.to_dict(), "seed": spec.seed + 1}, tmp_path)
    assert other.fingerprint() != spec.fingerprint()


# -- cases -----------------------------------------------------------------------------------

def test_cases_cross_every_dimension_with_unique_keys_and_seeds(tmp_path):
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "plan", "register"],
                                   registration={"scenarios": ["rigid", "breathing"],
                                                 "trials": 3}), tmp_path)
    cases = expand_cases(spec, {"map-toymap": ["N1", "N2", "N3"]})
    assert len(cases) == 3 * 2 * 2
    assert len({c.key for c in cases}) == len(cases)
    assert len({c.seed for c in cases}) == len(cases)
    assert {(c.nodule_id, c.catheter.name, c.scenario) for c in cases} == {
        (n, k, s) for n in ("N1", "N2", "N3") for k in ("d3.5mm", "d2.8mm")
        for s in ("rigid", "breathing")}
    assert all(c.trials == 3 for c in cases)
    # the seed depends only on the campaign seed and the key, not on the expansion order
    again = expand_cases(spec, {"map-toymap": ["N3", "N1", "N2"]})
    assert {c.key: c.seed for c in again} == {c.key: c.seed for c in cases}


def test_case_seed_is_a_pinned_sha256_derivation():
    # pinned: changing the derivation would make resumed campaigns inconsistent
    assert case_seed(0, "a/b/c") == 8181417682799598843
    assert case_seed(1, "a/b/c") == 1040106930332373827
    assert 0 <= case_seed(5, "x") < 2**63


def test_select_nodules_all_and_by_id():
    m = small_map(depth=2)
    assert select_nodules(m, NoduleSelection("all")) == ["N1", "N2", "N3", "N4"]
    assert select_nodules(m, NoduleSelection("all", ids=("N4", "N2"))) == ["N2", "N4"]
    with pytest.raises(InputError, match="N9"):
        select_nodules(m, NoduleSelection("all", ids=("N9",)))


def test_sampled_nodules_respect_sizes_places_and_seed():
    m = small_map(depth=3)
    sel = NoduleSelection("sample", count=12, diameter_m=(0.006, 0.012), generation=(2, 3),
                          offset_m=(0.005, 0.01))
    nodules = sample_nodules(m, sel, seed=11)
    assert [n.id for n in nodules] == [f"S{i}" for i in range(1, 13)]
    ends = [b for b in m.tree if 2 <= b.generation <= 3]
    for n in nodules:
        assert 0.006 <= 2 * n.radius <= 0.012
        # beyond the distal end of some airway of generation 2-3, at a distance in range
        gaps = [np.linalg.norm(n.center - b.end) for b in ends]
        assert any(0.005 - 1e-12 <= g <= 0.01 + 1e-12 for g in gaps)
    again = sample_nodules(m, sel, seed=11)
    assert all(np.array_equal(a.center, b.center) for a, b in zip(nodules, again))
    other = sample_nodules(m, sel, seed=12)
    assert not all(np.array_equal(a.center, b.center) for a, b in zip(nodules, other))
    with pytest.raises(InputError, match="no airway of generation"):
        sample_nodules(m, NoduleSelection("sample", count=1, generation=(7, 9)), 0)


def test_case_context_streams_are_seeded_per_stage(tmp_path):
    spec = parse_spec(toy_campaign(tmp_path), tmp_path)
    case = expand_cases(spec, {"map-toymap": ["N1"]})[0]
    a, b = CaseContext(case, small_map(depth=2)), CaseContext(case, small_map(depth=2))
    assert a.rng("x").random() == b.rng("x").random()
    assert a.rng("x").random() != a.rng("y").random()


def test_a_failing_stage_is_recorded_not_raised(tmp_path):
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "test_campaign_helpers:fail"]),
                      tmp_path)
    case = expand_cases(spec, {"map-toymap": ["N1"]})[0]
    row = run_case(case, small_map(depth=2), {}, resolve_custom_stages(spec.stages, HELPERS))
    assert row["status"] == "error"
    assert row["error"] == "test_campaign_helpers:fail: ValueError: this stage always fails"
    assert row["map_branches"] == 7  # the stages before the failure still report
    with pytest.raises(InputError, match="has no function 'nope'"):
        resolve_custom_stages(["map", "test_campaign_helpers:nope"], allow_all=True)


# -- the results store -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_store_round_trips_dedupes_and_compacts(tmp_path, fmt):
    store = ResultStore(tmp_path / "out", fmt=fmt)
    store.bind({"name": "t"}, "f1")
    rows = [{"case_key": f"k{i}", "x": i * 0.5, "n": i, "ok": i % 2 == 0, "s": f"v{i}",
             "maybe": None if i else 1.5, "case_seconds": 0.1 * i} for i in range(4)]
    for r in rows:
        store.append(r)
    store.append({**rows[1], "x": 99.0})  # a duplicate (e.g. a crash between compact and unlink)
    (store.parts_dir / f".part-half.{fmt}.x1y2.tmp").write_bytes(b"PAR1\x00")  # half-written
    got = store.rows()
    assert [r["case_key"] for r in got] == ["k0", "k1", "k2", "k3"]
    assert got[1]["x"] == 0.5  # the first row of a key wins
    for want, have in zip(rows, got):
        for k, v in want.items():
            assert have[k] == v, (k, have[k], v)
    store.compact()
    assert not list(store.parts_dir.glob("part-*"))
    store.release()
    ResultStore(tmp_path / "out").bind({"name": "t"}, "f1")  # a new run clears the debris
    assert not list(store.parts_dir.glob(".*"))
    assert ResultStore(tmp_path / "out").fmt == fmt  # the folder remembers its format
    assert [r["case_key"] for r in ResultStore(tmp_path / "out").rows()] == ["k0", "k1", "k2", "k3"]
    store.release()


def test_store_refuses_another_campaign_and_a_second_driver(tmp_path):
    store = ResultStore(tmp_path / "out")
    store.bind({"name": "a"}, "fingerprint-a")
    with pytest.raises(InputError, match="another campaign run"):
        ResultStore(tmp_path / "out").bind({"name": "a"}, "fingerprint-a")
    store.release()
    with pytest.raises(InputError, match="different campaign"):
        ResultStore(tmp_path / "out").bind({"name": "b"}, "fingerprint-b")


def test_store_rejects_non_scalar_cells(tmp_path):
    store = ResultStore(tmp_path / "out")
    with pytest.raises(TypeError, match="list"):
        store.append({"case_key": "k", "bad": [1, 2]})


# -- in-process runs ---------------------------------------------------------------------------

def test_in_process_run_resumes_without_redoing_cases(tmp_path, monkeypatch):
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "test_campaign_helpers:burn",
                                                     "test_campaign_helpers:interrupt_at"]),
                      tmp_path)
    out = tmp_path / "out"
    # the driver is interrupted (Ctrl-C) while running the third case
    monkeypatch.setenv("CAMPAIGN_TEST_INTERRUPT", "3")
    with pytest.raises(KeyboardInterrupt):
        run_campaign(spec, out, workers=1, progress=False, allowed_stages=HELPERS)
    first = {r["case_key"]: r for r in ResultStore(out).rows()}
    assert len(first) == 2
    monkeypatch.delenv("CAMPAIGN_TEST_INTERRUPT")
    summary = run_campaign(spec, out, workers=1, progress=False, allowed_stages=HELPERS)
    assert (summary.cases, summary.skipped, summary.ran, summary.lost) == (8, 2, 6, [])
    rows = ResultStore(out).rows()
    assert sorted(r["case_key"] for r in rows) == sorted(c.key for c in expand_cases(
        spec, {"map-toymap": ["N1", "N2", "N3", "N4"]}))
    for key, row in first.items():  # finished cases were not run again (same wall times)
        assert next(r for r in rows if r["case_key"] == key) == row
    again = run_campaign(spec, out, workers=1, progress=False, allowed_stages=HELPERS)
    assert (again.skipped, again.ran) == (8, 0)


def test_same_results_from_a_fresh_run(tmp_path):
    spec = parse_spec(toy_campaign(tmp_path), tmp_path)
    run_campaign(spec, tmp_path / "a", progress=False, allowed_stages=HELPERS)
    run_campaign(spec, tmp_path / "b", progress=False, allowed_stages=HELPERS)
    a, b = (comparable(ResultStore(tmp_path / d).rows()) for d in "ab")
    assert a == b and len(a) == 8
    assert len({r["burn_value"] for r in a}) == 8  # each case has its own random stream


def test_plan_stage_and_report_on_a_small_map(tmp_path):
    catheters = [{"name": "thin", "diameter_m": 0.002}, {"name": "fat", "diameter_m": 0.02}]
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "plan"], catheters=catheters),
                      tmp_path)
    out = tmp_path / "out"
    summary = run_campaign(spec, out, progress=False)
    assert summary.errors == 0
    rows = {(r["nodule"], r["catheter"]): r for r in ResultStore(out).rows()}
    # a 20 mm catheter does not fit the 14.4 mm main bronchi: nothing is reachable
    assert not any(r["plan_feasible"] for (n, c), r in rows.items() if c == "fat")
    assert all("diameter" in r["plan_reasons"] for (n, c), r in rows.items() if c == "fat")
    # the thin one reaches every nodule 10 mm beyond a leaf airway, at generation 2
    thin = [r for (n, c), r in rows.items() if c == "thin"]
    assert all(r["plan_feasible"] and r["plan_exit_generation"] == 2 for r in thin)
    assert all(r["nodule_airway_generation"] == 2 for r in thin)
    for r in thin:
        assert math.isclose(r["nodule_airway_distance_m"], 0.01, abs_tol=3e-4)
    md = write_report(out).read_text()
    assert "| thin | 2.00 | 4 | 4/4 (100%)" in md
    assert "| fat | 20.00 | 4 | 0/4 (0%)" in md
    assert_png_figure(out / "report" / "reachability.png", (1100, 400), panels=2)


def test_report_needs_a_campaign_folder(tmp_path):
    with pytest.raises(InputError, match="not a campaign output folder"):
        write_report(tmp_path)


def test_cli_run_and_report(tmp_path, capsys):
    from bronchonav.cli import main

    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(toy_campaign(tmp_path, stages=["map", "plan"])))
    assert main(["campaign", "run", str(f), "--out", str(tmp_path / "o"), "--json",
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ran"] == 8 and summary["lost"] == []
    assert Path(summary["report"]).is_file()
    assert main(["campaign", "report", str(tmp_path / "o")]) == 0
    assert main(["campaign", "run", str(f), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "--workers: must be an integer in [1, 512], got '0'" in capsys.readouterr().err


def test_ray_missing_or_unreachable_is_a_clear_error(tmp_path, monkeypatch):
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "plan"]), tmp_path)
    with pytest.raises(InputError, match="--address must be HOST:PORT"):
        run_campaign(spec, tmp_path / "o", address="nowhere", progress=False)
    if importlib.util.find_spec("ray") is not None:
        with pytest.raises(InputError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
            run_campaign(spec, tmp_path / "o", address="127.0.0.1:1", progress=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(InputError, match=r"Ray is not installed.*--workers 1"):
        run_campaign(spec, tmp_path / "o", workers=2, progress=False)
    # in-process needs no Ray
    assert run_campaign(spec, tmp_path / "o", workers=1, progress=False).ran == 8


def test_in_process_needs_nothing_from_the_campaign_extra(tmp_path):
    """An install without the ``campaign`` extra (Ray, pyarrow, tqdm, threadpoolctl) runs a
    campaign in-process: in a fresh interpreter where none of them can be imported, the runner
    imports and runs every case (the table falls back to CSV)."""
    spec_file = tmp_path / "toy.yaml"
    spec_file.write_text(yaml.safe_dump(toy_campaign(tmp_path, stages=["map", "plan"])))
    script = ("import sys\n"
              "for name in ('ray', 'pyarrow', 'tqdm', 'threadpoolctl'):\n"
              "    sys.modules[name] = None\n"
              "from bronchonav.campaign.runner import run_campaign\n"
              "from bronchonav.campaign.spec import load_spec\n"
              f"summary = run_campaign(load_spec({str(spec_file)!r}), {str(tmp_path / 'o')!r}, "
              "workers=1, progress=False)\n"
              "print(summary.ran)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "8"
    assert (tmp_path / "o" / "results.csv").exists()


def test_sampled_nodules_are_cached_with_the_map(tmp_path):
    data = toy_campaign(tmp_path, depth=3, stages=["map", "plan"],
                        nodules={"select": "sample", "count": 3, "diameter_m": [0.01, 0.02],
                                 "generation": [2, 3], "offset_m": [0.005, 0.01]})
    spec = parse_spec(data, tmp_path)
    out = tmp_path / "out"
    run_campaign(spec, out, progress=False)
    cached = json.loads((out / "maps" / "map-toymap" / "nodules.json").read_text())
    assert [n["id"] for n in cached] == ["S1", "S2", "S3"]
    rows = ResultStore(out).rows()
    assert sorted({r["nodule"] for r in rows}) == ["S1", "S2", "S3"]
    for r in rows:
        assert 0.01 <= r["nodule_diameter_m"] <= 0.02
        assert r["nodule_airway_distance_m"] <= 0.01 + 1e-9  # at most the offset from an airway end
    assert run_campaign(spec, out, progress=False).ran == 0
    # the same folder refuses a changed campaign
    changed = parse_spec({**data, "seed": 4}, tmp_path)
    with pytest.raises(InputError, match="different campaign"):
        run_campaign(changed, out, progress=False)
