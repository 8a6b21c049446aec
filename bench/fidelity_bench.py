"""Fidelity benchmark: the catheter model against closed forms, its tendon-friction hysteresis
and the calibration's parameter recovery.

Run: ``.venv/bin/python bench/fidelity_bench.py [--out FILE] [--png FILE]`` — prints one JSON
object; ``--png`` also draws the hysteresis loops (tip versus actuator command).

Checks (relative errors; ``n_nodes`` is the number of output nodes, RK4 between them):

- Mattiasson (1981) cantilever under a dead tip load, α = PL²/EI ∈ {1, 2, 5, 10}: tip w/L, u/L
  (the published values have 5 digits, so about 1e-5 relative is the floor).
- Constant curvature: one straight tendon, κ = τr/EI (tip angle) and the arc's tip position.
- Capstan: a tendon on the axis of a rod bent into a circle by an end moment, distal/actuator
  tension = exp(-μθ) with θ = ML/EI.
- Euler buckling of a clamped–free column, P_cr = π²EI/(4L²): the critical load implied by the
  model's lateral compliance under an axial load 0.9·P_cr (beam-column formula inverted for P_cr).
- Hysteresis: tendon_0 pulled and released (tension and displacement control) on the default
  bronchoscope with tendon friction 0.15; loop width (largest tip-x gap at equal command) and the
  mirror-symmetry error against tendon_2's loop.
- Calibration: stiffness scale, friction and base position recovered from 72 model-generated
  rows with 0.5 mm noise (same scenario as ``test/test_calibration.py``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams, Tendon
from machine import emit, machine_info

MATTIASSON = {1: (0.30172, 0.05643), 2: (0.49346, 0.16064), 5: (0.71379, 0.38763),
              10: (0.81061, 0.55500)}
HUGE = 1e12
NODES = (10, 20, 50)


def rod(L, EI, tendons=None, EA=HUGE):
    return CatheterParams.uniform_rod(L, EI, EI, EA, HUGE, tendons=tendons)


def mattiasson(n: int) -> float:
    L, EI, worst = 1.0, 1.0, 0.0
    for alpha, (w, u) in MATTIASSON.items():
        s = CatheterModel(rod(L, EI), n_nodes=n, deadline_s=10.0).step(
            CatheterCommand(insertion=L, tip_force=[alpha * EI / L ** 2, 0, 0]))
        tip = s.tip_position
        worst = max(worst, abs(tip[0] / L / w - 1), abs((L - tip[2]) / L / u - 1))
    return worst


def constant_curvature(n: int) -> float:
    L, EI, r, tau, EA = 0.2, 1e-3, 5e-3, 0.3, 50.0  # 1.5 rad bend, 0.6 % axial strain
    s = CatheterModel(rod(L, EI, [Tendon("t", r, 0.0, end_segment=0)], EA=EA), n_nodes=n,
                      deadline_s=10.0).step(CatheterCommand(insertion=L, tendon_tension=[tau]))
    theta = tau * r * L / EI
    rho = L * (1 - tau / EA) / theta
    exact = np.array([rho * (1 - np.cos(theta)), 0.0, rho * np.sin(theta)])
    angle = np.arctan2(s.tip_pose[0, 2], s.tip_pose[2, 2])
    return max(abs(angle / theta - 1), np.linalg.norm(s.tip_position - exact) / (rho * theta))


def capstan(n: int, mu: float = 0.2) -> float:
    L, EI, M, tau = 0.2, 1e-3, 6e-3, 3.0
    model = CatheterModel(rod(L, EI, [Tendon("t", 0.0, 0.0, end_segment=0, friction=mu)]),
                          n_nodes=n, deadline_s=10.0)
    s = model.step(CatheterCommand(insertion=L, tendon_tension=[tau], tip_moment=[0, M, 0]))
    pulled = abs(s.tendon_distal_tensions[0] / tau / np.exp(-mu * M * L / EI) - 1)
    s = model.step(CatheterCommand(insertion=L, tendon_tension=[tau / 2], tip_moment=[0, M, 0]))
    released = abs(s.tendon_distal_tensions[0] / (tau / 2) / np.exp(mu * M * L / EI) - 1)
    return max(pulled, released)


def euler(n: int) -> float:
    L, EI, ratio = 0.4, 1e-3, 0.9
    p_cr = np.pi ** 2 * EI / (4 * L ** 2)
    P, Q = ratio * p_cr, 1e-7 * p_cr
    s = CatheterModel(rod(L, EI), n_nodes=n, deadline_s=10.0).step(
        CatheterCommand(insertion=L, tip_force=[Q, 0, -P]))
    compliance = s.tip_position[0] / Q

    def beam_column(pcr):  # tip compliance of a column whose Euler load is pcr
        ei = pcr * 4 * L ** 2 / np.pi ** 2
        lam = np.sqrt(P / ei)
        return (np.tan(lam * L) - lam * L) / (P * lam) - compliance

    implied = brentq(beam_column, 0.95 * p_cr, 1.05 * p_cr, xtol=1e-14 * p_cr)
    return abs(implied / p_cr - 1)


def hysteresis(png: Path | None) -> dict:
    params = copy.deepcopy(CatheterParams.default())
    for t in params.tendons:
        t.friction = 0.15
    out, loops = {"friction": 0.15, "insertion_m": 0.1}, {}
    for mode, top in (("tension", 8.0), ("displacement", 4e-3)):
        up = np.linspace(0.0, top, 17)
        levels = np.concatenate([up, up[::-1][1:]])
        tips = {}
        for k in (0, 2):
            model = CatheterModel(params, n_nodes=20, deadline_s=10.0)
            xs = []
            for v in levels:
                act = np.zeros(4)
                act[k] = v
                key = "tendon_tension" if mode == "tension" else "tendon_displacement"
                xs.append(model.step(CatheterCommand(insertion=0.1, **{key: act})).tip_position)
            tips[k] = np.array(xs)
        x = tips[0][:, 0]
        width = float(np.max(np.abs(x[:17] - x[16:][::-1])))
        out[mode] = {"max_command": top, "loop_width_m": width,
                     "relative_width": width / float(np.max(np.abs(x))),
                     "mirror_symmetry_error_m": float(np.max(np.abs(tips[2][:, 0] + x)))}
        loops[mode] = (levels, x)
    if png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, (mode, (levels, x)) in zip(axes, loops.items()):
            scale, unit = (1.0, "N") if mode == "tension" else (1e3, "mm")
            ax.plot(levels[:17] * scale, x[:17] * 1e3, "o-", ms=3, label="pulling")
            ax.plot(levels[16:] * scale, x[16:] * 1e3, "s-", ms=3, label="releasing")
            ax.set_xlabel(f"tendon_0 {mode} ({unit})")
            ax.set_ylabel("tip x (mm)")
            ax.set_title(f"{mode} control, friction 0.15")
            ax.legend()
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=110)
        out["png"] = str(png)
    return out


def calibration() -> dict:
    from bronchonav.calibration import apply_parameters, calibrate, predict
    from bronchonav.calibration.recording import tension_loops

    names = ["stiffness:articulating", "friction", "base_x", "base_y", "base_z"]
    truth = np.array([1.25, 0.3, 12e-3, -8e-3, 10e-3])
    start = copy.deepcopy(CatheterParams.default())
    for t in start.tendons:
        t.friction = 0.1
    profile = np.concatenate([np.linspace(0, 0.9, 7), np.linspace(0.9, 0.3, 5)[1:],
                              np.linspace(0.3, 0.7, 3)[1:], np.linspace(0.7, 0, 6)[1:]])
    rec = tension_loops(start, 0.1, profile)
    rec.tip = predict(apply_parameters(start, names, truth), rec, 15).tip + \
        np.random.default_rng(0).normal(0, 0.5e-3, (len(rec), 3))
    t0 = time.perf_counter()
    res = calibrate(start, rec, names, holdout=0.3)
    return {"noise_m": 0.5e-3, "rows": len(rec), "seconds": time.perf_counter() - t0,
            "truth": dict(zip(names, truth.tolist())),
            "relative_error": dict(zip(names, (np.abs(res.values - truth) / np.abs(truth))
                                       .tolist())),
            "relative_std": dict(zip(names, (res.std / np.abs(truth)).tolist())),
            "holdout_mean_tip_error_m": {"before": res.holdout_tip_error_before,
                                         "after": res.holdout_tip_error_after}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--png", type=Path, help="draw the hysteresis loops here")
    args = ap.parse_args()
    checks = {}
    for name, fn in (("mattiasson", mattiasson), ("constant_curvature", constant_curvature),
                     ("capstan", capstan), ("euler_buckling", euler)):
        errs = {str(n): float(fn(n)) for n in NODES}
        within = [n for n in NODES if errs[str(n)] <= 1e-4]
        checks[name] = {"relative_error_by_n_nodes": errs,
                        "smallest_n_nodes_within_1e-4": within[0] if within else None}
    result = {"machine": machine_info("numba", "scipy"), "closed_forms": checks,
              "hysteresis": hysteresis(args.png), "calibration": calibration()}
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
