"""Campaign fault injection (issue 15): misbehaving stages fail their case only, unreadable table
and part files are quarantined and their cases recomputed, custom stages run only when allowed
and only as the driver resolved them."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pytest
import yaml

from bronchonav.campaign.cases import expand_cases
from bronchonav.campaign.custom import resolve_custom_stages
from bronchonav.campaign.report import write_report
from bronchonav.campaign.runner import run_campaign
from bronchonav.campaign.spec import parse_spec
from bronchonav.campaign.stages import run_case
from bronchonav.campaign.store import ResultStore, comparable
from bronchonav.cli import main
from bronchonav.errors import InputError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_campaign import HELPERS, toy_campaign  # noqa: E402
from test_campaign_helpers import small_map  # noqa: E402


def one_error_line(err: str, command: str = "campaign run") -> str:
    """The single line of a CLI error (asserting there is exactly one, and no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"bronchonav {command}: error: "), err
    return lines[0]


def campaign_file(tmp_path: Path, **kwargs) -> Path:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(toy_campaign(tmp_path, **kwargs)))
    return f


# -- stages that misbehave -------------------------------------------------------------------

def test_stage_returning_none_or_calling_sys_exit_fails_its_case_only(tmp_path, capsys):
    f = campaign_file(tmp_path, stages=["map", "test_campaign_helpers:misbehave"],
                      catheters=[{"name": "d3.5mm", "diameter_m": 0.0035}])
    out = tmp_path / "out"
    code = main(["campaign", "run", str(f), "--out", str(out), "--json", "--no-progress",
                 "--allow-stage", "test_campaign_helpers:misbehave"])
    assert code == 0  # the campaign ran to the end; the failed cases are rows with errors
    summary = json.loads(capsys.readouterr().out)
    assert (summary["ran"], summary["errors"], summary["lost"]) == (4, 3, [])
    rows = {r["nodule"]: r for r in ResultStore(out).rows()}
    assert rows["N1"]["status"] == "ok" and rows["N1"]["misbehave_ok"] is True
    assert rows["N2"]["error"] == ("test_campaign_helpers:misbehave: TypeError: the stage "
                                   "returned NoneType, not a dict of result columns")
    assert rows["N3"]["error"] == ("test_campaign_helpers:misbehave: the stage called "
                                   "sys.exit(3); a stage returns its columns or raises")
    assert "column 'misbehave_cells'" in rows["N4"]["error"] and "list" in rows["N4"]["error"]
    assert all(rows[n]["status"] == "error" and rows[n]["map_branches"] == 7
               for n in ("N2", "N3", "N4"))
    report = (out / "report" / "report.md").read_text()
    assert "## Cases with errors" in report and "sys.exit(3)" in report


def test_unknown_stage_option_is_refused_before_any_work(tmp_path):
    for stages, options, message in (
            (["map", "plan"], {"plan": {"kk": 2}}, "stage_options.plan.kk: stage 'plan' has no "
                                                   "option 'kk' (known: k)"),
            (["map", "test_campaign_helpers:burn"], {"test_campaign_helpers:burn": {"n": 1}},
             "has no option 'n' (known: iterations)")):
        spec = parse_spec(toy_campaign(tmp_path, stages=stages, stage_options=options), tmp_path)
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run_campaign(spec, tmp_path / "out", progress=False, allowed_stages=HELPERS)
        assert not (tmp_path / "out").exists()


def test_stage_may_not_overwrite_the_case_identity(tmp_path):
    spec = parse_spec(toy_campaign(tmp_path, stages=["map",
                                                     "test_campaign_helpers:steal_identity"]),
                      tmp_path)
    case = expand_cases(spec, {"map-toymap": ["N1"]})[0]
    row = run_case(case, small_map(depth=2), {}, resolve_custom_stages(spec.stages, HELPERS))
    assert row["case_key"] == case.key and row["status"] == "error"
    assert "column 'case_key'" in row["error"]


def test_custom_stage_not_resolved_by_the_driver_is_refused_in_the_row(tmp_path):
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "test_campaign_helpers:fail"]),
                      tmp_path)
    case = expand_cases(spec, {"map-toymap": ["N1"]})[0]
    row = run_case(case, small_map(depth=2))
    assert row["status"] == "error"
    assert "was not allowed by the driver; not running it" in row["error"]


# -- unreadable files on resume --------------------------------------------------------------

def test_corrupt_part_files_are_quarantined_and_their_cases_recomputed(tmp_path, capsys):
    spec = parse_spec(toy_campaign(tmp_path), tmp_path)
    run_campaign(spec, tmp_path / "clean", progress=False, allowed_stages=HELPERS)
    clean = comparable(ResultStore(tmp_path / "clean").rows())

    # a driver wrote five rows and died before compacting; two part files were then damaged
    out = tmp_path / "out"
    store = ResultStore(out)
    store.bind(spec.to_dict(), spec.fingerprint())
    for row in ResultStore(tmp_path / "clean").rows()[:5]:
        store.append(row)
    store.release()
    parts = sorted((out / "parts").glob("part-*.parquet"))
    assert len(parts) == 5
    parts[1].write_bytes(b"this is not a parquet file")
    parts[3].write_bytes(parts[3].read_bytes()[:40])  # truncated
    capsys.readouterr()

    summary = run_campaign(spec, out, progress=False, allowed_stages=HELPERS)
    err = capsys.readouterr().err
    assert (summary.cases, summary.skipped, summary.ran) == (8, 3, 5)
    assert len(summary.quarantined) == 2
    for part in (parts[1], parts[3]):
        assert f"campaign: warning: {part} is unreadable" in err
    assert err.count("its cases are run again") == 2
    quarantine = sorted(p.name.split("-", 1)[1] for p in (out / "quarantine").iterdir())
    assert quarantine == sorted([parts[1].name, parts[3].name])  # kept for inspection
    assert comparable(ResultStore(out).rows()) == clean
    assert not list((out / "parts").glob("part-*"))  # compacted


def test_corrupt_compacted_table_is_quarantined_and_recomputed(tmp_path, capsys):
    spec = parse_spec(toy_campaign(tmp_path), tmp_path)
    out = tmp_path / "out"
    run_campaign(spec, out, progress=False, allowed_stages=HELPERS)
    clean = comparable(ResultStore(out).rows())
    table = out / "results.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    capsys.readouterr()
    # the report alone (no run holding the folder) warns and skips, moving nothing
    with pytest.raises(InputError, match="no results yet"):
        write_report(out)
    assert "is unreadable" in capsys.readouterr().err and table.exists()
    summary = run_campaign(spec, out, progress=False, allowed_stages=HELPERS)
    assert (summary.skipped, summary.ran, len(summary.quarantined)) == (0, 8, 1)
    assert comparable(ResultStore(out).rows()) == clean


def test_corrupt_cached_map_is_quarantined_and_made_again(tmp_path, capsys):
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "plan"]), tmp_path)
    out = tmp_path / "out"
    run_campaign(spec, out, progress=False)
    clean = comparable(ResultStore(out).rows())
    (out / "maps" / "map-toymap" / "tree.json").write_text("{ not json")
    (out / "results.parquet").unlink()
    capsys.readouterr()
    summary = run_campaign(spec, out, progress=False)
    err = capsys.readouterr().err
    assert "maps/map-toymap is unreadable" in err and "it is made again" in err
    assert len(summary.quarantined) == 1 and summary.ran == 8
    assert comparable(ResultStore(out).rows()) == clean


def test_disk_full_while_writing_is_one_line_and_the_run_resumes(tmp_path, capsys,
                                                                monkeypatch):
    import bronchonav.campaign.store as store_module

    spec = parse_spec(toy_campaign(tmp_path), tmp_path)
    run_campaign(spec, tmp_path / "clean", progress=False, allowed_stages=HELPERS)
    clean = comparable(ResultStore(tmp_path / "clean").rows())
    f = campaign_file(tmp_path)
    out = tmp_path / "out"
    argv = ["campaign", "run", str(f), "--out", str(out), "--no-progress", "--no-report",
            "--allow-stage", "test_campaign_helpers:burn"]
    real = store_module.write_bytes
    written = []

    def disk_fills_after_three_rows(path, data):
        if path.parent.name == "parts":
            if len(written) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append(path)
        real(path, data)

    monkeypatch.setattr(store_module, "write_bytes", disk_fills_after_three_rows)
    capsys.readouterr()
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "cannot write a result row" in line and "No space left on device" in line
    assert len(ResultStore(out).rows()) == 3  # compacted despite the failure

    def compaction_fails(path, data):
        if path.name == "results.parquet":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(store_module, "write_bytes", compaction_fails)
    assert main(argv) == 2
    assert "cannot compact the results table" in one_error_line(capsys.readouterr().err)
    assert len(list((out / "parts").glob("part-*"))) == 5  # every row kept

    monkeypatch.setattr(store_module, "write_bytes", real)
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 8
    assert comparable(ResultStore(out).rows()) == clean


def test_report_that_cannot_be_written_is_one_error_line(tmp_path, capsys):
    spec = parse_spec(toy_campaign(tmp_path, stages=["map", "plan"]), tmp_path)
    out = tmp_path / "out"
    run_campaign(spec, out, progress=False)
    (out / "report").write_text("a file where the report folder goes")
    assert main(["campaign", "report", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err, "campaign report")
    assert f"cannot write the report in {out / 'report'}" in line


def test_unreadable_campaign_record_is_one_error_line(tmp_path, capsys):
    f = campaign_file(tmp_path, stages=["map", "plan"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "campaign.json").write_text("{ truncated")
    assert main(["campaign", "run", str(f), "--out", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "campaign.json is unreadable" in line and "use a new --out" in line


# -- custom stages: allow-list and resolution ---------------------------------------------------

def write_module(folder: Path, name: str, tag: str, marker: bool = False) -> Path:
    """A stage module ``name`` returning ``{f"{name}_source": tag}``; with ``marker`` it leaves a
    file ``imported-<tag>`` beside itself when imported (so a test sees whether it ran)."""
    folder.mkdir(parents=True, exist_ok=True)
    code = "from pathlib import Path\n"
    if marker:
        code += f"Path(__file__).with_name('imported-{tag}').touch()\n"
    code += f"def stage(ctx):\n    return {{'{name}_source': '{tag}'}}\n"
    (folder / f"{name}.py").write_text(code)
    return folder


@pytest.mark.parametrize("workers", ["1", "2"])
def test_custom_stage_is_refused_unless_allowed_whatever_the_workers(tmp_path, capsys,
                                                                     monkeypatch, workers):
    code_dir = write_module(tmp_path / "code", "evilstage", "evil", marker=True)
    monkeypatch.syspath_prepend(str(code_dir))
    f = campaign_file(tmp_path, stages=["map", "evilstage:stage"])
    out = tmp_path / "out"
    assert main(["campaign", "run", str(f), "--out", str(out), "--workers", workers,
                 "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "stage 'evilstage:stage' is custom code named by the campaign file" in line
    assert "--allow-stage evilstage:stage" in line and "--allow-custom-stages" in line
    assert not (code_dir / "imported-evil").exists()  # refused by name, never imported
    assert not out.exists()  # nothing written
    # allowing another stage does not allow this one
    assert main(["campaign", "run", str(f), "--out", str(out), "--workers", workers,
                 "--allow-stage", "evilstage:other", "--no-progress"]) == 2
    assert not (code_dir / "imported-evil").exists()


@pytest.mark.parametrize("allow", [["--allow-stage", "okstage:stage"], ["--allow-custom-stages"]])
def test_custom_stage_runs_when_allowed(tmp_path, capsys, monkeypatch, allow):
    monkeypatch.syspath_prepend(str(write_module(tmp_path / "code", "okstage", "ok")))
    f = campaign_file(tmp_path, stages=["map", "okstage:stage"])
    assert main(["campaign", "run", str(f), "--out", str(tmp_path / "o"), "--json",
                 "--no-progress", "--no-report", *allow]) == 0
    assert json.loads(capsys.readouterr().out)["ran"] == 8
    assert {r["okstage_source"] for r in ResultStore(tmp_path / "o").rows()} == {"ok"}


def test_bad_allow_stage_names_are_refused_while_parsing(tmp_path, capsys):
    f = campaign_file(tmp_path, stages=["map", "plan"])
    assert main(["campaign", "run", str(f), "--out", str(tmp_path / "o"),
                 "--allow-stage", "os.system"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "argument --allow-stage: must name a custom stage as package.module:function" in line


def test_allowed_stage_the_driver_cannot_import_is_one_line_before_any_work(tmp_path, capsys,
                                                                             monkeypatch):
    # a stage file in the working directory only: the installed command does not see it
    cwd = write_module(tmp_path / "cwd", "cwdstage", "cwd", marker=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(cwd))])
    f = campaign_file(tmp_path, stages=["map", "cwdstage:stage"])
    out = tmp_path / "out"
    for workers in ("1", "2"):
        assert main(["campaign", "run", str(f), "--out", str(out), "--workers", workers,
                     "--allow-custom-stages", "--no-progress"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "custom stage 'cwdstage:stage': cannot import 'cwdstage'" in line
    assert not (cwd / "imported-cwd").exists() and not out.exists()


def test_a_worker_never_runs_a_file_the_driver_did_not_resolve(tmp_path, monkeypatch):
    """A worker whose search path finds another ``shadowstage.py`` first (as a Ray worker's
    working directory does) loads the driver's file; a worker with only the other file refuses
    without executing it."""
    driver_dir = write_module(tmp_path / "driver", "shadowstage", "driver")
    other_dir = write_module(tmp_path / "other", "shadowstage", "other", marker=True)
    monkeypatch.syspath_prepend(str(driver_dir))
    resolved = resolve_custom_stages(["map", "shadowstage:stage"], allow_all=True)
    stage = resolved["shadowstage:stage"]
    assert stage.origin == str(driver_dir / "shadowstage.py")

    # a fresh worker: nothing imported, the other file first on its own path
    monkeypatch.delitem(sys.modules, "shadowstage")
    monkeypatch.setattr(sys, "path", [str(other_dir), *sys.path])
    assert stage.load()(None) == {"shadowstage_source": "driver"}
    assert not (other_dir / "imported-other").exists()

    # a worker that only has the other file
    monkeypatch.delitem(sys.modules, "shadowstage")
    monkeypatch.setattr(sys, "path", [str(other_dir)] + [p for p in sys.path
                                                         if p != str(driver_dir)])
    blind = type(stage)(stage.name, stage.digests, stage.origin, search_path=())
    with pytest.raises(InputError, match="no module 'shadowstage' with the driver's code"):
        blind.load()
    assert not (other_dir / "imported-other").exists()
    assert "shadowstage" not in sys.modules

    # a worker that already imported the other file refuses it too
    __import__("shadowstage")
    assert (other_dir / "imported-other").exists()
    with pytest.raises(InputError, match="is not the file the driver resolved"):
        stage.load()
