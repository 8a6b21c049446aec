"""Campaign scaling: wall time of the same campaign with 1 worker (in-process) and 2 (Ray).

    python bench/campaign_bench.py [--campaign config/campaign_example.yaml] [--out DIR]

Each run is the command a user types (``bronchonav campaign run FILE --out DIR --workers N``) in
a fresh process with a fresh output folder, so the times include start-up, map generation, Ray
start-up and writing the table (not the report). Every process gets one BLAS/OpenMP/numba thread
(``OMP_NUM_THREADS=1`` ...), so N workers use N cores. Prints one JSON object: ``seconds_1``,
``seconds_2`` (the fastest of ``--repeat`` runs each), ``speedup``, ``cases``, ``identical``
(every table agrees up to timing columns), per run its wall time, the time spent inside cases
summed over cases and the load average before and after (other work on the machine slows the
runs down), and the machine (CPU model, cores, memory, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """CPU model, core counts, memory, OS and library versions."""
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    info = {"cpu": model, "cpu_count": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)), "memory_gb": round(mem_kb / 2**20, 1),
            "platform": platform.platform(), "python": platform.python_version()}
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        info["ray"] = None
    return info


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def run(campaign: Path, out: Path, workers: int) -> dict:
    """Run the campaign with ``workers`` in a fresh process; return its summary and wall time."""
    from bronchonav.campaign.runner import THREAD_ENV

    env = {**os.environ, **THREAD_ENV, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-c", "from bronchonav.cli import run; run()", "campaign", "run",
           str(campaign), "--out", str(out), "--workers", str(workers), "--no-progress",
           "--no-report", "--json"]
    load_before = load_average()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"campaign run with {workers} workers failed:\n{proc.stderr}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": seconds, "summary": summary, "load_before": load_before,
            "load_after": load_average()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", type=Path, default=REPO / "config" / "campaign_example.yaml")
    parser.add_argument("--out", type=Path, help="keep the output folders here")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each configuration this many times (alternating) and report "
                             "the fastest: other load on the machine only ever adds time")
    args = parser.parse_args()

    from bronchonav.campaign.store import ResultStore, comparable

    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        for k in range(args.repeat):
            for workers in (1, 2):
                out = base / f"workers{workers}_run{k}"
                r = run(args.campaign, out, workers)
                rows = ResultStore(out).rows()
                # wall time spent inside cases, summed over cases: the same work every run, so a
                # larger sum means slower workers (other load on the machine, shared caches)
                r["case_seconds_sum"] = round(sum(row["case_seconds"] for row in rows), 1)
                r["table"] = comparable(rows)
                runs[workers].append(r)
    tables = [r.pop("table") for rs in runs.values() for r in rs]
    best = {w: min(rs, key=lambda r: r["seconds"]) for w, rs in runs.items()}
    result = {
        "campaign": str(args.campaign),
        "cases": best[1]["summary"]["cases"],
        "seconds_1": round(best[1]["seconds"], 2),
        "seconds_2": round(best[2]["seconds"], 2),
        "speedup": round(best[1]["seconds"] / best[2]["seconds"], 3),
        "identical": all(t == tables[0] for t in tables),
        "errors": best[1]["summary"]["errors"],
        "repeat": args.repeat,
        "threads_per_worker": 1,
        "runs": {f"workers_{w}": [{"seconds": round(r["seconds"], 2),
                                   "case_seconds_sum": r["case_seconds_sum"],
                                   "load_average_before": r["load_before"],
                                   "load_average_after": r["load_after"]} for r in rs]
                 for w, rs in runs.items()},
        "machine": machine(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
