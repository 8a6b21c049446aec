"""Registration benchmark: the issue's "must show" figures over seeded trials, with timing.

Usage::

    .venv/bin/python bench/registration_bench.py [--map maps/phantom_default] [--trials 100]
                                                 [--seed 0] [--scenarios rigid breathing cbct]
                                                 [--out bench/results/registration.json]

For each scenario, ``--trials`` seeded trials (a new unknown patient→CT transform within ±50 mm
and ±30° per axis, breathing phases, 1 mm EM noise and 2% outliers each) are simulated from the
map's ground truth (the phantom regenerated from the map's source) and registered to the map's
extracted tree and lumen mesh (the twin), cycling through the map's nodules as targets. Times
are per registration (everything from the raw samples to the transform, one trial after
another on this machine): wall time and process CPU time. The machine's load average is
recorded, since other jobs on a shared machine inflate the wall time.

Checks (``checks`` in the JSON): rigid success 100% and TRE median <= 1 mm; breathing (10 mm
lower-lobe amplitude) TRE median <= 3 mm after the local refinement, with the gain over the
global stage reported; cbct TRE median <= 2 mm; median time per registration <= 100 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from machine import emit, machine_info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--map", type=Path, default=Path("maps/phantom_default"))
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", nargs="+", default=["rigid", "breathing", "cbct"],
                        choices=["rigid", "breathing", "cbct"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from bronchonav.maps import load_map
    from bronchonav.registration import Twin, ground_truth_for, run_trials, summarize
    from bronchonav.registration.evaluate import json_safe

    if not (args.map / "map.yaml").is_file():
        print(f"no map at {args.map}: build it with `bronchonav build-map --phantom default "
              f"--out {args.map}`", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    airway_map = load_map(args.map)
    twin = Twin.of(airway_map).prepare()
    truth = ground_truth_for(airway_map)
    prepare_s = time.perf_counter() - t0

    load_before = os.getloadavg()
    results = {}
    for kind in args.scenarios:
        t0 = time.perf_counter()
        records = run_trials(airway_map, kind, args.trials, args.seed, ground_truth=truth, twin=twin)
        summary = json_safe(summarize(records, kind))
        summary["wall_s"] = time.perf_counter() - t0
        results[kind] = summary
    load_after = os.getloadavg()

    def at_most(value, limit) -> bool:
        return value is not None and value <= limit

    checks = {}
    if "rigid" in results:
        r = results["rigid"]
        checks["rigid_success_100pct"] = r["success_rate"] == 1.0
        checks["rigid_tre_median_le_1mm"] = at_most(r["tre_median_mm"], 1.0)
    if "breathing" in results:
        checks["breathing_local_tre_median_le_3mm"] = at_most(results["breathing"]["tre_median_mm"], 3.0)
    if "cbct" in results:
        checks["cbct_tre_median_le_2mm"] = at_most(results["cbct"]["tre_median_mm"], 2.0)
    checks["ms_median_le_100"] = all(at_most(r["ms_median"], 100.0) for r in results.values())
    checks["cpu_ms_median_le_100"] = all(at_most(r["cpu_ms_median"], 100.0) for r in results.values())

    out = {
        "benchmark": "registration",
        "machine": machine_info("scipy", "open3d"),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "map": {"path": str(args.map), "name": airway_map.name, "branches": len(airway_map.tree),
                "nodules": [n.id for n in airway_map.nodules], "ground_truth": truth.description},
        "trials": args.trials,
        "seed": args.seed,
        "prepare_s": prepare_s,
        "scenarios": results,
        "checks": checks,
        "pass": all(checks.values()),
    }
    emit(out, args.out, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
