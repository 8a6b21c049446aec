"""Calibration: recover known parameters from data the model generated with 0.5 mm noise, and
beat the unfitted model on held-out rows; the CLI writes a loadable fitted device file."""

import copy
import json

import numpy as np
import pytest

from bronchonav.calibration import (Recording, apply_parameters, calibrate, load_recording,
                                    predict, save_recording)
from bronchonav.calibration.recording import tension_loops
from bronchonav.catheter import CatheterParams
from bronchonav.cli import main
from bronchonav.errors import InputError

NAMES = ["stiffness:articulating", "friction", "base_x", "base_y", "base_z"]
TRUTH = np.array([1.25, 0.3, 12e-3, -8e-3, 10e-3])


def start_params():
    """Starting values: the shipped bronchoscope with tendon friction 0.1 (truth: TRUTH)."""
    p = copy.deepcopy(CatheterParams.default())
    for t in p.tendons:
        t.friction = 0.1
    return p


@pytest.fixture(scope="module")
def recording():
    """Tension loops on each tendon (pull, partial release, re-pull, release), 72 rows."""
    p = start_params()
    profile = np.concatenate([np.linspace(0, 0.9, 7), np.linspace(0.9, 0.3, 5)[1:],
                              np.linspace(0.3, 0.7, 3)[1:], np.linspace(0.7, 0, 6)[1:]])
    rec = tension_loops(p, 0.1, profile)
    n = len(rec)
    truth = apply_parameters(p, NAMES, TRUTH)
    rec.tip = predict(truth, rec, 15).tip + np.random.default_rng(0).normal(0, 0.5e-3, (n, 3))
    return rec


def test_recovers_known_parameters_and_halves_held_out_error(recording):
    result = calibrate(start_params(), recording, NAMES, holdout=0.3)
    assert result.failed_rows == 0
    rel = np.abs(result.values - TRUTH) / np.abs(TRUTH)
    assert np.all(rel < 0.05), dict(zip(NAMES, rel))
    assert np.all(np.abs(result.values - TRUTH) < 3 * result.std)
    assert result.n_holdout == round(0.3 * len(recording))
    assert result.holdout_tip_error_after <= 0.5 * result.holdout_tip_error_before
    assert result.holdout_tip_error_after < 1.0e-3  # about the 0.5 mm noise (mean 0.8 mm)


def test_cli_round_trip(tmp_path, recording, capsys):
    params = start_params()
    short = Recording(recording.insertion[:20], recording.roll[:20], "tension",
                      recording.actuation[:20], recording.tip[:20], recording.shape_s[:20],
                      recording.shape[:20])
    from bronchonav.catheter.device import save_device
    device = save_device(params, tmp_path / "dev.yaml")
    save_recording(tmp_path / "rec.csv", short, params)
    assert np.allclose(load_recording(tmp_path / "rec.csv", params).tip, short.tip, atol=0)
    out = tmp_path / "fitted.yaml"
    code = main(["calibrate", "--device", str(device), "--data", str(tmp_path / "rec.csv"),
                 "--out", str(out), "--fit", "base_x,base_y,base_z", "--holdout", "0.25"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    fitted = CatheterParams.from_file(out)
    assert np.allclose(fitted.base_pose[:3, 3],
                       [summary["parameters"][k]["value"] for k in ("base_x", "base_y", "base_z")])
    assert summary["rows_held_out"] == 5


def test_bad_inputs(tmp_path):
    params = start_params()
    csv = tmp_path / "rec.csv"
    csv.write_text("insertion,tension_tendon_0,tip_x,tip_y,tip_z\n0.1,1,0,0,0.1\n")
    with pytest.raises(InputError, match="tension_<name> or disp_<name>"):
        load_recording(csv, params)
    csv.write_text("insertion," + ",".join(f"disp_tendon_{k}" for k in range(4))
                   + ",tip_x,tip_y,tip_z\n0.1,0,0,0,0,0,zero,0.1\n")
    with pytest.raises(InputError, match="row 1: column tip_y"):
        load_recording(csv, params)
    rec = Recording(np.full(2, 0.1), np.zeros(2), "tension", np.zeros((2, 4)), np.zeros((2, 3)),
                    np.zeros((2, 0)), np.zeros((2, 0, 3)))
    with pytest.raises(InputError, match="unknown fit parameter"):
        calibrate(params, rec, ["stiffnes:shaft"])
    with pytest.raises(InputError, match="no segment"):
        calibrate(params, rec, ["stiffness:tip"])


def test_shape_rows_round_trip_and_constrain_the_fit(tmp_path):
    params = CatheterParams.default()
    rec = tension_loops(params, 0.1, np.array([0.0, 0.4, 0.8, 0.4]))
    n = len(rec)
    rec.shape_s = np.tile([0.085, 0.07], (n, 1))  # unsorted on purpose
    rec.shape = np.zeros((n, 2, 3))
    shifted = apply_parameters(params, ["base_x", "base_rz"], np.array([3e-3, 0.2]))
    truth = predict(shifted, rec, 12)
    rec.tip, rec.shape = truth.tip, truth.shape
    # the shape points lie on the model's backbone at their arc lengths
    assert np.all(np.linalg.norm(rec.shape[:, 0] - rec.shape[:, 1], axis=1) <= 0.015 + 1e-12)
    save_recording(tmp_path / "rec.csv", rec, params)
    back = load_recording(tmp_path / "rec.csv", params)
    assert np.array_equal(back.shape, rec.shape) and np.array_equal(back.shape_s, rec.shape_s)
    result = calibrate(params, back, ["base_x", "base_rz"], holdout=0.0, n_nodes=12)
    assert np.allclose(result.values, [3e-3, 0.2], rtol=1e-5, atol=1e-8)
