"""Benchmark of the tip camera: frames per second rendering colour + depth on a lumen mesh.

Usage::

    .venv/bin/python bench/camera_bench.py [--map DIR] [--frames 300] [--width 320 --height 240]

Renders ``--frames`` frames from camera stations on the centerlines of the map's airways (down to
generation 6, looking distally along the airway) and prints one JSON object: ``fps`` (full
frames: ray casting, shading, tone mapping, depth; throughput over the run), ``width``,
``height``, ``triangles``, per-frame ``ms_median``/``ms_p95`` and ``fps_median_frame``, ``cpu_ms_per_frame`` (process CPU time, all threads),
``cast_fps`` (ray casting alone) and ``machine`` (with the 1-minute load average: the machine is
shared, so wall-clock figures drop when it is busy). Without
``--map`` it uses ``maps/phantom_default`` if present, else the default phantom's tree rendered
as its tube mesh.

With ``--registration-trials N`` it also runs N trials of the camera registration scenario
(:func:`bronchonav.registration.camera.camera_scenario_summary`, breathing 10 mm,
against the map's ground truth) at the default evaluation phase (mid-inspiration) and at
end-expiration / end-inspiration, each without and with the EM phase-offset estimate
(``em_bias_prior`` 2 mm), under the key ``registration``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


def _load_mesh(map_dir: str | None):
    from bronchonav.maps import load_map

    folder = Path(map_dir) if map_dir else ROOT / "maps" / "phantom_default"
    if folder.is_dir():
        m = load_map(folder)
        return m.tree, m.mesh_vertices, m.mesh_triangles, f"map {folder.name}"
    if map_dir:
        sys.exit(f"camera_bench: map folder not found: {folder}")
    from bronchonav.ct.phantom import generate_phantom_tree, phantom_config
    from bronchonav.imaging.tube_mesh import tube_mesh

    tree = generate_phantom_tree(phantom_config("default"))[0]
    vertices, triangles = tube_mesh(tree, spacing=7e-4)
    return tree, vertices, triangles, "default phantom tree, tube mesh 0.7 mm"


def _stations(tree, n: int, rng: np.random.Generator) -> np.ndarray:
    from bronchonav.imaging.camera import look_at

    s = tree.samples()
    gen = np.array([tree[int(b)].generation for b in s.branch_ids])
    idx = rng.choice(np.flatnonzero(gen <= 6), size=n)
    return np.stack([look_at(s.points[i], s.tangents[i]) for i in idx])


def _registration(map_dir: str | None, trials: int, seed: int) -> dict:
    """Camera scenario summaries (without per-trial rows) at three evaluation phases."""
    from bronchonav.registration.camera import CameraScenarioConfig, camera_scenario_summary
    from bronchonav.maps import load_map
    from bronchonav.registration.evaluate import ground_truth_for
    from bronchonav.registration.simulate import scenario_config

    airway_map = load_map(map_dir or ROOT / "maps" / "phantom_default")
    truth = ground_truth_for(airway_map)
    out = {"ground_truth": truth.description}
    for name, phase in (("mid_inspiration", 0.25), ("end_expiration", 0.0),
                        ("end_inspiration", 0.5)):
        for suffix, bias in (("", None), ("_em_bias_2mm", 2e-3)):
            cfg = CameraScenarioConfig(simulation=scenario_config("breathing", eval_phase=phase),
                                       em_bias_prior=bias)
            summary = camera_scenario_summary(airway_map, truth, trials, seed, config=cfg)
            summary.pop("per_trial")
            out[name + suffix] = summary
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", default=None)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--registration-trials", type=int, default=0)
    args = parser.parse_args()

    from bronchonav.imaging.camera import CameraIntrinsics, TipCamera

    tree, vertices, triangles, source = _load_mesh(args.map)
    cam = TipCamera(vertices, triangles, intrinsics=CameraIntrinsics(args.width, args.height))
    poses = _stations(tree, args.frames, np.random.default_rng(args.seed))
    for T in poses[:10]:  # warm up
        cam.render(T)
    times = []
    hit = []
    cpu0 = time.process_time()
    t_all = time.perf_counter()
    for T in poses:
        t0 = time.perf_counter()
        frame = cam.render(T)
        times.append(time.perf_counter() - t0)
        hit.append(frame.hit.mean())
    total = time.perf_counter() - t_all
    cpu_ms = (time.process_time() - cpu0) / len(poses) * 1e3
    t0 = time.perf_counter()
    for T in poses:
        cam.cast(T)
    cast_total = time.perf_counter() - t0
    times = np.array(times) * 1e3
    registration = _registration(args.map, args.registration_trials, args.seed) \
        if args.registration_trials > 0 else None
    print(json.dumps({
        "fps": round(len(poses) / total, 1),
        "width": args.width, "height": args.height,
        "triangles": cam.n_triangles,
        "frames": len(poses),
        "fps_median_frame": round(1e3 / float(np.median(times)), 1),
        "ms_median": round(float(np.median(times)), 2),
        "ms_p95": round(float(np.percentile(times, 95)), 2),
        "cpu_ms_per_frame": round(cpu_ms, 2),
        "cast_fps": round(len(poses) / cast_total, 1),
        "hit_fraction_mean": round(float(np.mean(hit)), 3),
        "mesh": source,
        "machine": machine_info("open3d"),
        **({"registration": registration} if registration else {}),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
