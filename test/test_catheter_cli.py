"""``bronchonav catheter``: script and demo runs on a small map, JSON content, PNG, bad input."""

import json

import numpy as np
import pytest
from figure_checks import assert_png_figure

from bronchonav.airway.tree import AirwayTree, Branch
from bronchonav.cli import main
from bronchonav.maps import AirwayMap, save_map


@pytest.fixture(scope="module")
def y_map(tmp_path_factory):
    a, L = np.radians(30), 0.05
    trachea = Branch(0, None, 0, [[0, 0, 0.1], [0, 0, 0.0]], [0.009, 0.009], name="trachea")
    left = Branch(1, 0, 1, [[0, 0, 0], [L * np.sin(a), 0, -L * np.cos(a)]], [0.006] * 2)
    right = Branch(2, 0, 1, [[0, 0, 0], [-L * np.sin(a), 0, -L * np.cos(a)]], [0.005] * 2)
    folder = tmp_path_factory.mktemp("maps") / "y"
    save_map(AirwayMap("y", AirwayTree([trachea, left, right])), folder)
    return folder


def test_script_run_writes_shapes_in_the_ct_frame(y_map, tmp_path):
    script = tmp_path / "s.yaml"
    script.write_text("n_nodes: 30\ncommands:\n"
                      "  - {insertion: 0.06, steps: 30}\n"
                      "  - {insertion: 0.09, tendon_tension: [3.0, 0, 0, 0], steps: 30}\n"
                      "  - {roll: 0.5, steps: 10}\n")
    out, png = tmp_path / "shape.json", tmp_path / "shape.png"
    assert main(["catheter", "--map", str(y_map), "--script", str(script), "--out", str(out),
                 "--png", str(png)]) == 0
    data = json.loads(out.read_text())
    assert data["frame"] == "ct" and data["n_nodes"] == 30 and data["failed_steps"] == 0
    assert len(data["steps"]) == 3
    first = np.array(data["steps"][0]["positions"])
    assert first.shape == (30, 3)
    assert np.allclose(first[0], [0, 0, 0.1])  # base at the top of the trachea
    assert np.allclose(first[-1], [0, 0, 0.04], atol=1e-9)  # 60 mm down the trachea axis
    last = data["steps"][-1]
    assert last["command"]["roll"] == pytest.approx(0.5)
    assert np.allclose(last["tip_pose"][3], [0, 0, 0, 1])
    assert_png_figure(png, (1440, 780), panels=2)  # 12 x 6.5 in at 120 dpi, two views


def test_demo_steers_down_a_path(y_map, tmp_path):
    out = tmp_path / "demo.json"
    assert main(["catheter", "--map", str(y_map), "--demo", "--out", str(out),
                 "--n-nodes", "30"]) == 0
    data = json.loads(out.read_text())
    assert data["path"] == [0, 1]  # both children at 30°: the first listed
    assert data["steps"][-1]["branch_ids"][-1] == 1


def test_bad_script_is_one_line_error(y_map, tmp_path, capsys):
    script = tmp_path / "bad.yaml"
    script.write_text("commands:\n  - {insertion: 0.05, tendon_tension: [-1, 0, 0, 0]}\n")
    code = main(["catheter", "--map", str(y_map), "--script", str(script), "--out",
                 str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "command 0" in err[0] and "tendon_tension[0]" in err[0]
    script.write_text("commands:\n  - {insertion: 0.05, speed: 3}\n")
    assert main(["catheter", "--map", str(y_map), "--script", str(script), "--out",
                 str(tmp_path / "o.json")]) == 2
    assert "speed" in capsys.readouterr().err
