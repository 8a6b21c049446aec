"""Run every benchmark, one after another, and collect their JSON.

Usage::

    .venv/bin/python bench/run_all.py [--only NAME ...] [--out bench/results]

Each benchmark is a script in this folder that prints one JSON object on stdout (with the
machine it ran on). They run sequentially, never in parallel, so that they do not compete for
the two cores. ROS 2 traffic stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
and a domain of its own). Results are written to ``OUT/NAME.json`` and summarised on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = {
    "airway": ["airway_bench.py", "--phantom", "full"],
    "catheter": ["catheter_bench.py"],
    "planner": ["planner_bench.py", "--phantom", "full"],
    "registration": ["registration_bench.py", "--trials", "100"],
    "camera": ["camera_bench.py"],
    "ros_loop": ["ros_loop_bench.py", "--seconds", "60"],
    "ros_cold_start": ["ros_cold_start_bench.py", "--no-warmup-run"],
    "campaign": ["campaign_bench.py"],
    "airway_clinical": ["airway_bench.py", "--preset", "clinical", "--slice-mm", "1.0"],
    "fidelity": ["fidelity_bench.py"],
    "faults": ["fault_bench.py"],
    "navigation": ["navigation_bench.py"],
    "turn": ["turn_bench.py"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON files")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=os.environ.get("ROS_DOMAIN_ID", "77"))
    failed = []
    for name in args.only or BENCHMARKS:
        script, *extra = BENCHMARKS[name]
        print(f"== {name}: {script} {' '.join(extra)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / script), *extra], env=env,
                              stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
        seconds = time.perf_counter() - t0
        try:
            result = json.loads(proc.stdout)
        except json.JSONDecodeError:
            print(f"   {name} failed (exit {proc.returncode}, no JSON on stdout)", file=sys.stderr)
            failed.append(name)
            continue
        (out / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(f"   done in {seconds:.0f} s -> {out / (name + '.json')}", file=sys.stderr)
        if proc.returncode != 0:
            failed.append(name)
    print(json.dumps({"results": str(out), "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
