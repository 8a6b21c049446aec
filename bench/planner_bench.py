"""Route planner benchmark: precomputation, warm single queries and all nodules in one call.

Usage::

    .venv/bin/python bench/planner_bench.py [--phantom full] [--repeats 30] [--points 200]
                                            [--out bench/results/planner.json]

Plans on the phantom's ground-truth map (``full``: 0.7 mm grid, >= 500 branches, lung mask
so the pleura check is on). Times, on one core of this machine:

- ``precompute_ms``: building a :class:`~bronchonav.planning.RoutePlanner` (once per map);
- ``nodule_query_ms``: warm ``plan(nodule_id, k)`` per nodule, repeated (median, p95, max);
- ``point_query_ms``: warm ``plan(point)`` for random points in the lungs (seeded), which
  exercises the infeasibility explanation too;
- ``plan_all_ms``: ``plan_all(k)`` for every nodule of the map in one call.

``warm_query_cpu_ms`` is the CPU time of the same queries: wall-time outliers with a small CPU
time come from other processes on the machine (``load_average`` is recorded).

Prints one JSON object (and writes it with ``--out``) with the machine, the map and the figures;
``pass`` is true when the p95 warm query is at most 10 ms on a map of at least 500 branches.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from machine import emit, machine_info


def stats(ms: list[float]) -> dict:
    """Median, 95th percentile, max and count of durations (ms)."""
    a = np.asarray(ms)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max()), "n": int(a.size)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phantom", default="full", choices=("default", "full"))
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from bronchonav.ct.phantom import phantom_config, phantom_ground_truth_map
    from bronchonav.planning import RoutePlanner

    t0 = time.perf_counter()
    config = phantom_config(args.phantom, seed=args.seed)
    airway_map = phantom_ground_truth_map(config)
    build_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    planner = RoutePlanner(airway_map)
    precompute_ms = (time.perf_counter() - t0) * 1e3

    ids = [n.id for n in airway_map.nodules]
    for i in ids:  # warm-up
        planner.plan(i, args.k)
    nodule_ms, cpu_ms, feasible = [], [], {}
    for _ in range(args.repeats):
        for i in ids:
            t0, c0 = time.perf_counter(), time.thread_time()
            routes = planner.plan(i, args.k)
            nodule_ms.append((time.perf_counter() - t0) * 1e3)
            cpu_ms.append((time.thread_time() - c0) * 1e3)
            feasible[i] = routes[0].feasible
    rng = np.random.default_rng(args.seed)
    points = config.lungs.sample_points(args.points, rng)
    point_ms, n_point_feasible = [], 0
    for p in points:
        t0, c0 = time.perf_counter(), time.thread_time()
        routes = planner.plan(p, args.k)
        point_ms.append((time.perf_counter() - t0) * 1e3)
        cpu_ms.append((time.thread_time() - c0) * 1e3)
        n_point_feasible += routes[0].feasible
    all_ms = []
    for _ in range(max(3, args.repeats // 3)):
        t0 = time.perf_counter()
        planner.plan_all(args.k)
        all_ms.append((time.perf_counter() - t0) * 1e3)

    n_branches = len(airway_map.tree)
    q = stats(nodule_ms + point_ms)
    result = {
        "benchmark": "planner", "machine": machine_info("scipy"),
        "map": {"name": airway_map.name, "branches": n_branches,
                "max_generation": airway_map.tree.max_generation,
                "centerline_samples": int(len(planner.points)),
                "reachable_samples": int(planner.reachable.sum()),
                "nodules": len(ids), "lung_mask": airway_map.lung_mask is not None,
                "build_s": round(build_s, 2)},
        "k": args.k,
        "precompute_ms": precompute_ms,
        "nodule_query_ms": stats(nodule_ms),
        "point_query_ms": stats(point_ms),
        "warm_query_ms": q,
        "warm_query_cpu_ms": stats(cpu_ms),
        "load_average": list(os.getloadavg()),
        "plan_all_ms": stats(all_ms),
        "feasible": feasible,
        "random_points_feasible": f"{n_point_feasible}/{len(points)}",
        "limit_ms": 10.0,
        "pass": bool(n_branches >= 500 and q["p95"] <= 10.0),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
