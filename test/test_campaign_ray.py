"""Campaigns on Ray: same table whatever the number of workers, a worker killed mid-case is
retried and counted once, and a driver stopped by a signal resumes without redoing cases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # noqa: F401  (the campaign extra, needed: pip install 'bronchonav[campaign]')
import yaml

from bronchonav.campaign.runner import run_campaign
from bronchonav.campaign.spec import parse_spec
from bronchonav.campaign.store import ResultStore, comparable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_campaign import HELPERS, toy_campaign  # noqa: E402


@pytest.fixture
def worker_path(monkeypatch):
    """Ray workers import the test helpers by name: put test/ on their PYTHONPATH."""
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(HERE) + (os.pathsep + old if old else ""))


def test_two_workers_give_the_in_process_table(tmp_path, worker_path):
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "plan", "test_campaign_helpers:burn"]),
                      tmp_path)
    one = run_campaign(spec, tmp_path / "one", workers=1, progress=False, allowed_stages=HELPERS)
    two = run_campaign(spec, tmp_path / "two", workers=2, progress=False, allowed_stages=HELPERS)
    assert (one.ran, two.ran, two.lost) == (8, 8, [])
    a, b = (comparable(ResultStore(tmp_path / d).rows()) for d in ("one", "two"))
    assert a == b


def test_a_killed_worker_is_retried_and_every_case_written_once(tmp_path, worker_path,
                                                               monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("CAMPAIGN_TEST_MARKERS", str(markers))
    data = toy_campaign(tmp_path, stages=["map", "test_campaign_helpers:crash_once",
                                          "test_campaign_helpers:burn"],
                        catheters=[{"name": "d3.5mm", "diameter_m": 0.0035}],
                        execution={"retries": 2})
    spec = parse_spec(data, tmp_path)
    summary = run_campaign(spec, tmp_path / "out", workers=2, progress=False,
                           allowed_stages=HELPERS)
    assert summary.lost == [] and summary.ran == 4
    rows = ResultStore(tmp_path / "out").rows()
    keys = [r["case_key"] for r in rows]
    assert sorted(keys) == sorted(f"map-toymap/N{i}/d3.5mm" for i in range(1, 5))
    # every case killed its worker once (a marker each), then ran in a new process
    assert len(list(markers.glob("*.crashed"))) == 4
    assert all(r["crash_once_pid_differs"] for r in rows)
    # no duplicate row anywhere in the folder, compacted table included
    import pyarrow.parquet as pq

    assert sorted(pq.read_table(tmp_path / "out" / "results.parquet")["case_key"].to_pylist()) \
        == sorted(keys)
    # and the retried cases computed the same values as an undisturbed in-process run
    clean = parse_spec({**data, "stages": ["map", "test_campaign_helpers:burn"]}, tmp_path)
    run_campaign(clean, tmp_path / "clean", workers=1, progress=False, allowed_stages=HELPERS)
    ref = {r["case_key"]: r["burn_value"] for r in ResultStore(tmp_path / "clean").rows()}
    assert {r["case_key"]: r["burn_value"] for r in rows} == ref


def test_a_signalled_driver_resumes_without_redoing_cases(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(toy_campaign(
        tmp_path, depth=3, stages=["map", "test_campaign_helpers:burn"],
        stage_options={"test_campaign_helpers:burn": {"iterations": 400_000}})))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(HERE), "BRONCHONAV_DEBUG": ""}
    cmd = [sys.executable, "-c", "from bronchonav.cli import run; run()", "campaign", "run", str(f), "--out", str(out),
           "--workers", "2", "--no-progress", "--no-report", "--json",
           "--allow-stage", "test_campaign_helpers:burn"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((out / "parts").glob("part-*"))) < 3:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    first = {r["case_key"]: r for r in ResultStore(out).rows()}
    assert 3 <= len(first) < 16

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["skipped"] == len(first)
    assert summary["ran"] == 16 - len(first)
    rows = ResultStore(out).rows()
    assert len(rows) == 16 and len({r["case_key"] for r in rows}) == 16
    for key, row in first.items():  # finished cases were not run again (same wall times)
        assert next(r for r in rows if r["case_key"] == key) == row


def test_core_stages_give_the_same_rows_on_ray(tmp_path):
    """Every built-in stage on the phantom: Ray workers (maps from the read-only object store)
    compute exactly the in-process rows."""
    data = {"name": "stages", "seed": 9,
            "cohort": {"phantoms": {"name": "default", "seeds": [1]}},
            "nodules": {"select": "all", "ids": ["N1", "N6"]},
            "catheters": [{"name": "d3.5mm", "diameter_m": 0.0035}],
            "registration": {"scenarios": ["breathing"], "trials": 2},
            "stages": ["map", "plan", "rehearse", "register", "camera"],
            "stage_options": {"rehearse": {"poses": "truth"}}}
    spec = parse_spec(data, tmp_path)
    one = run_campaign(spec, tmp_path / "one", workers=1, progress=False)
    two = run_campaign(spec, tmp_path / "two", workers=2, progress=False)
    assert one.errors == two.errors == 0
    a, b = (comparable(ResultStore(tmp_path / d).rows()) for d in ("one", "two"))
    assert len(a) == 2 and a == b
    assert any(r["plan_feasible"] for r in a) and any(r["camera_hit_fraction"] for r in a)


def test_ray_workers_run_the_custom_stage_file_the_driver_resolved(tmp_path, monkeypatch):
    """A Ray worker's search path starts with the driver's working directory; a ``.py`` there
    that shadows the allowed stage's module is never imported, with 1 or 2 workers alike."""
    from test_campaign_faults import write_module

    driver_dir = write_module(tmp_path / "driver", "shadowstage", "driver")
    cwd = write_module(tmp_path / "cwd", "shadowstage", "cwd", marker=True)
    monkeypatch.chdir(cwd)
    # the driver's search path: the installed command's (no working directory), plus the stage's
    monkeypatch.setattr(sys, "path", [str(driver_dir)] + [p for p in sys.path
                                                          if p not in ("", str(cwd))])
    monkeypatch.delitem(sys.modules, "shadowstage", raising=False)
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "shadowstage:stage"]), tmp_path)
    for workers in (1, 2):
        summary = run_campaign(spec, tmp_path / f"w{workers}", workers=workers, progress=False,
                               allowed_stages=("shadowstage:stage",))
        assert (summary.ran, summary.errors, summary.lost) == (8, 0, [])
    a, b = (comparable(ResultStore(tmp_path / d).rows()) for d in ("w1", "w2"))
    assert a == b and {r["shadowstage_source"] for r in a} == {"driver"}
    assert not (cwd / "imported-cwd").exists()
