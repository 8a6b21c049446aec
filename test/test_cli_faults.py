"""Command-line fault injection (issue 15): every bad option is one line on stderr and exit code 2,
before any work (the map is not even opened), and outputs that cannot be written are refused up
front instead of losing computed results."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bronchonav.cli import main
from bronchonav.cli.options import (bounded_int, finite_float, output_file, output_folder, point3,
                                    seed, write_output)
from bronchonav.errors import InputError
from bronchonav.maps import save_map

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_registration_toy import toy_map  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "maps" / "phantom_default"
NO_MAP = "/nonexistent/map"
"""A map that does not exist: an error about an option proves the option was checked first."""


def assert_one_line(capsys, command: str, *fragments: str) -> str:
    """Exactly one stderr line, ``bronchonav COMMAND: error: ...`` holding every fragment; no
    output on stdout."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"bronchonav {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert captured.out == ""
    return lines[0]


@pytest.fixture
def targets(tmp_path):
    """Output paths that cannot be written: a folder, a file's child, a missing folder, /proc and
    /sys (both refuse new files even to root, unlike permission bits)."""
    (tmp_path / "afile").write_text("x")
    return {"folder": str(tmp_path), "under_file": str(tmp_path / "afile" / "t.json"),
            "missing_dir": str(tmp_path / "nope" / "t.json"), "proc": "/proc/t.json",
            "sys": "/sys/t.json"}


# -- register ---------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, message", [
    ("--seed", "-1", "argument --seed: must be an integer in [0, 4294967295], got '-1'"),
    ("--seed", "4294967296", "argument --seed: must be an integer in [0, 4294967295]"),
    ("--seed", "1.5", "argument --seed: must be an integer"),
    ("--noise-mm", "nan", "argument --noise-mm: must be a finite number in [0, 20] mm, got 'nan'"),
    ("--noise-mm", "-0.1", "argument --noise-mm: must be a finite number in [0, 20] mm"),
    ("--amplitude-mm", "inf", "argument --amplitude-mm: must be a finite number in [0, 50] mm, "
                              "got 'inf'"),
    ("--amplitude-mm", "-inf", "argument --amplitude-mm"),
    ("--trials", "1e9", "argument --trials: must be an integer in [1, 10000], got '1e9'"),
    ("--trials", "1000000000", "argument --trials: must be an integer in [1, 10000]"),
    ("--trials", "0", "argument --trials"),
    ("--eval-phase", "nan", "argument --eval-phase: must be a number of cycles in [0, 1] or "
                            "'random'"),
    ("--scenario", "sideways", "argument --scenario: invalid choice: 'sideways'"),
])
def test_register_bad_numbers_are_one_line_before_any_work(capsys, option, value, message):
    argv = ["register", "--map", NO_MAP, "--scenario", "rigid", option, value]
    assert main(argv) == 2
    assert_one_line(capsys, "register", message)


@pytest.mark.parametrize("target, message", [
    ("folder", "is a folder; give a file path inside it"),
    ("under_file", "is not an existing folder"),
    ("missing_dir", "is not an existing folder"),
    ("proc", "no file can be created in /proc"),
    ("sys", "no file can be created in /sys (Permission denied)"),
])
def test_register_unwritable_trials_out_is_refused_before_the_trials(capsys, targets, target,
                                                                    message):
    before = sorted(os.listdir(targets["folder"]))
    assert main(["register", "--map", NO_MAP, "--scenario", "rigid",
                 "--trials-out", targets[target]]) == 2
    assert_one_line(capsys, "register", "argument --trials-out:", message)
    assert sorted(os.listdir(targets["folder"])) == before  # the check leaves nothing behind


def test_register_trials_out_written_atomically_and_failures_are_one_line(tmp_path, capsys):
    folder = save_map(toy_map(0), tmp_path / "maps" / "toy")
    out = tmp_path / "trials.json"
    out.write_text("previous")
    assert main(["register", "--map", str(folder), "--scenario", "rigid", "--trials", "2",
                 "--target", "N1", "--json", "--trials-out", str(out)]) == 0
    capsys.readouterr()
    assert [r["trial"] for r in json.loads(out.read_text())] == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps", "trials.json"]  # no temporary
    # the folder disappears between the check and the write: an InputError naming the option
    with pytest.raises(InputError, match=r"--trials-out: cannot write .*gone/t\.json"):
        write_output(tmp_path / "gone" / "t.json", "[]", "--trials-out")
    with pytest.raises(InputError, match="--trials-out: cannot write /proc/t.json"):
        write_output("/proc/t.json", "[]", "--trials-out")


# -- plan, flythrough, campaign ---------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--nodule", "N1", "--k", "0"], "argument --k: must be an integer in [1, 50], got '0'"),
    (["--nodule", "N1", "--k", "1e9"], "argument --k: must be an integer in [1, 50]"),
    (["--nodule", "N1", "--catheter-diameter", "nan"], "argument --catheter-diameter: must be a "
                                                       "finite number in (0, 0.03] m"),
    (["--nodule", "N1", "--catheter-diameter", "3.5"], "argument --catheter-diameter"),
    (["--nodule", "N1", "--catheter-diameter", "0"], "argument --catheter-diameter"),
    (["--target=0,0,nan"], "argument --target: must be X,Y,Z: three finite coordinates in metres"),
    (["--target=0.1,0.2"], "argument --target: must be X,Y,Z"),
    (["--target=120,-40,30"], "each within ±2 m"),
    (["--target=0,0,0", "--radius", "-0.001"], "argument --radius: must be a finite number in "
                                               "[0, 0.1] m"),
    (["--nodule", "N1", "--png", "/proc/r.png"], "argument --png: cannot write /proc/r.png"),
    (["--nodule", "N1", "--csv", "/sys/r.csv"], "argument --csv: cannot write /sys/r.csv"),
])
def test_plan_bad_options_are_one_line(capsys, argv, message):
    assert main(["plan", "--map", NO_MAP, *argv]) == 2
    assert_one_line(capsys, "plan", message)


def test_plan_csv_for_every_nodule_is_refused_before_planning(tmp_path, capsys):
    assert main(["plan", "--map", NO_MAP, "--nodule", "all", "--csv", str(tmp_path / "r.csv")]) == 2
    assert_one_line(capsys, "plan", "--csv writes one route")


@pytest.mark.parametrize("argv, message", [
    (["--step-mm", "0"], "argument --step-mm: must be a finite number in (0, 100] mm"),
    (["--fps", "inf"], "argument --fps: must be a finite number in (0, 120] frames/s"),
    (["--width", "0"], "argument --width: must be an integer in [16, 4096], got '0'"),
    (["--height", "100000"], "argument --height: must be an integer in [16, 4096]"),
    (["--fov-deg", "180"], "argument --fov-deg: must be a finite number in [1, 179] deg"),
    (["--gif", "/proc/fly.gif"], "argument --gif: cannot write /proc/fly.gif"),
])
def test_flythrough_bad_options_are_one_line(tmp_path, capsys, argv, message):
    assert main(["flythrough", "--map", NO_MAP, "--nodule", "N1", "--out", str(tmp_path / "f"),
                 *argv]) == 2
    assert_one_line(capsys, "flythrough", message)


def test_flythrough_out_that_is_a_file_or_unwritable_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out, message in ((tmp_path / "afile", "exists and is not a folder"),
                         (tmp_path / "afile" / "sub", "is not a folder"),
                         (Path("/sys/frames"), "no file can be created in /sys")):
        assert main(["flythrough", "--map", NO_MAP, "--nodule", "N1", "--out", str(out)]) == 2
        assert_one_line(capsys, "flythrough", "argument --out:", message)


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "argument --workers: must be an integer in [1, 512], got '0'"),
    (["--workers", "1e9"], "argument --workers: must be an integer in [1, 512]"),
    (["--out", "/sys/campaign"], "argument --out: cannot write /sys/campaign"),
    (["--address", "nowhere"], "--address must be HOST:PORT, ray://HOST:PORT or 'auto'"),
    (["--address", "127.0.0.1:99999"], "--address must be HOST:PORT"),
])
def test_campaign_bad_options_are_one_line_and_touch_nothing(tmp_path, capsys, argv, message):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\ncohort: {maps: [m]}\nstages: [map]\n")
    out = tmp_path / "out"
    args = ["campaign", "run", str(f), "--out", str(out), *argv]
    if "--address" in argv:  # checked by the runner before the spec's maps are looked at
        f.write_text("name: x\ncohort: {phantoms: {name: default, seeds: [0]}}\nstages: [map]\n")
    assert main(args) == 2
    assert_one_line(capsys, "campaign run", message)
    assert not out.exists()


def test_campaign_missing_file_and_folder_are_one_line(tmp_path, capsys):
    assert main(["campaign", "run", str(tmp_path / "none.yaml"), "--out", str(tmp_path)]) == 2
    assert_one_line(capsys, "campaign run", "argument FILE.yaml: file", "does not exist")
    assert main(["campaign", "report", str(tmp_path / "none")]) == 2
    assert_one_line(capsys, "campaign report", "argument DIR: folder", "does not exist")


def test_campaign_file_with_unbounded_counts_is_refused(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    for text, message in (
            ("registration: {trials: 1000000000}\nstages: [map, register]",
             "registration.trials: must be <= 10000"),
            ("nodules: {select: sample, count: 100000}", "nodules.count: must be <= 1000"),
            ("seed: -1", "seed: must be >= 0"),
            ("seed: 4294967296", "seed: must be <= 4294967295")):
        f.write_text(f"name: x\ncohort: {{phantoms: {{name: default, seeds: [0]}}}}\n{text}\n")
        assert main(["campaign", "run", str(f), "--out", str(tmp_path / "o")]) == 2
        assert_one_line(capsys, "campaign run", message)


# -- the option types themselves --------------------------------------------------------------

def test_option_types_accept_the_bounds_and_nothing_outside():
    assert bounded_int(1, 3)("3") == 3 and bounded_int(1, 3)(" 1 ") == 1
    for text in ("0", "4", "2.0", "1e0", "", "two"):
        with pytest.raises(argparse.ArgumentTypeError):
            bounded_int(1, 3)(text)
    assert seed("0") == 0 and seed(str(2**32 - 1)) == 2**32 - 1
    positive = finite_float(0.0, 1.0, lo_open=True)
    assert positive("1") == 1.0 and positive("1e-300") == 1e-300
    for text in ("0", "1.0000001", "nan", "inf", "-inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive(text)
    assert point3()("0.1,-0.2,0.3") == (0.1, -0.2, 0.3)
    assert math.isclose(finite_float()("-1e300"), -1e300)


def test_output_types_accept_writable_paths(tmp_path):
    assert output_file(str(tmp_path / "a.json")) == tmp_path / "a.json"
    (tmp_path / "exists.json").write_text("{}")
    assert output_file(str(tmp_path / "exists.json")) == tmp_path / "exists.json"
    assert output_folder(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    assert output_folder(str(tmp_path)) == tmp_path
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.json"]


# -- the installed command: one line, no traceback, exit 2 --------------------------------------

def test_subprocess_errors_are_one_line_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "BRONCHONAV_DEBUG": ""}
    for argv, message in ((["register", "--map", str(MAP), "--scenario", "rigid", "--seed", "-1"],
                           "argument --seed"),
                          (["register", "--map", str(MAP), "--scenario", "rigid",
                            "--trials-out", str(tmp_path)], "is a folder")):
        done = subprocess.run([sys.executable, "-m", "bronchonav.cli", *argv], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stdout == "" and "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bronchonav register: error: ")
        assert message in lines[0]


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback():
    """``bronchonav map-info MAP | head -0``: the pipe closes before the command writes; it
    stops with the shell's broken-pipe status (141) and nothing on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "bronchonav.cli", "map-info", str(MAP)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    proc.stdout.close()  # long before the command has imported what it needs
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err.decode()
    assert err.decode().strip() == ""
