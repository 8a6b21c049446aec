"""``bronchonav register``: JSON summary keys and values, human output, errors as one line."""

import json
from pathlib import Path

import pytest
from test_registration_toy import toy_map

from bronchonav.cli import main
from bronchonav.maps import save_map

PHANTOM_MAP = Path(__file__).resolve().parents[1] / "maps" / "phantom_default"


@pytest.fixture(scope="module")
def map_dir(tmp_path_factory):
    return save_map(toy_map(0), tmp_path_factory.mktemp("maps") / "toy")


def test_register_json_has_the_required_keys(map_dir, capsys, tmp_path):
    trials = tmp_path / "trials.json"
    code = main(["register", "--map", str(map_dir), "--scenario", "breathing", "--trials", "2",
                 "--seed", "3", "--eval-phase", "random", "--json", "--trials-out", str(trials)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("success_rate", "tre_median_mm", "tre_p95_mm", "fre_median_mm", "ms_median",
                "tre_global_median_mm", "tre_local_median_mm", "gain_median_mm"):
        assert key in summary
    assert summary["trials"] == 2 and summary["scenario"] == "breathing"
    assert summary["amplitude_mm"] == pytest.approx(10.0)
    assert summary["eval_phase"] == "random"
    assert 0.0 <= summary["success_rate"] <= 1.0
    assert 0.0 < summary["tre_median_mm"] < 5.0
    records = json.loads(trials.read_text())
    assert [r["trial"] for r in records] == [0, 1]
    assert {r["target_id"] for r in records} == {"N1", "N2"}


def test_register_human_output(map_dir, capsys):
    assert main(["register", "--map", str(map_dir), "--scenario", "rigid", "--trials", "1",
                 "--target", "N1"]) == 0
    out = capsys.readouterr().out
    assert "success rate" in out and "TRE at the target" in out and "N1" in out


@pytest.mark.parametrize("argv, message", [
    (["--map", "/nonexistent/map", "--scenario", "rigid"], "map folder not found"),
    (["--scenario", "rigid", "--trials", "0"], "--trials"),
    (["--scenario", "rigid", "--target", "N9"], "N9"),
    (["--scenario", "breathing", "--eval-phase", "2"], "--eval-phase"),
])
def test_register_errors_are_one_line(map_dir, capsys, argv, message):
    if "--map" not in argv:
        argv = ["--map", str(map_dir), *argv]
    assert main(["register", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bronchonav register: error:") and message in err[-1]


def test_register_camera_scenario_on_the_phantom_map(capsys):
    """``--scenario camera`` registers EM + depth frames and reports what the camera adds."""
    code = main(["register", "--map", str(PHANTOM_MAP), "--scenario", "camera",
                 "--trials", "2", "--seed", "1", "--target", "N3", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scenario"] == "camera" and summary["trials"] == 2
    assert summary["nodules"] == ["N3"]
    assert summary["tre_median_mm"] < 2.0  # issue 7: camera scenario TRE median <= 2 mm
    assert summary["gain_median_mm"] == pytest.approx(
        summary["em_only"]["tre_median_mm"] - summary["tre_median_mm"])
