"""Airway extraction benchmark on a phantom: time, peak memory and quality against ground truth.

One command, JSON on stdout (progress on stderr)::

    .venv/bin/python bench/airway_bench.py            # the 'full' phantom (0.7 mm, 512x512x450)
    .venv/bin/python bench/airway_bench.py --phantom default --seed 1

The phantom is generated in this process and written to a temporary folder; the extraction
(read the CT, segment, centerlines, lobes, mesh) runs in a fresh subprocess so that its peak
resident memory (``ru_maxrss``) does not include phantom generation. The subprocess then scores
its segmentation against the ground truth (ATM'22 metrics, plus the radius error: extracted minus
true lumen radius at matched centerline points, median/p10/p90 in m). Bars from issue 2:
extraction <= 60 s, peak memory <= 4 GB, TD >= 0.95, BD >= 0.90, FPR <= 0.02, max generation
>= 8; and |median radius error| <= 0.2 mm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import machine_info

BARS = {"extraction_seconds_max": 60.0, "peak_rss_gb_max": 4.0, "td_min": 0.95, "bd_min": 0.90,
        "fpr_max": 0.02, "max_generation_min": 8, "radius_error_median_abs_max_m": 0.2e-3}


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process (bytes; Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def child(folder: Path) -> dict:
    """Extract the map of ``folder/ct.nii.gz`` and score it against the ground truth there."""
    import json as _json

    import numpy as np
    import SimpleITK as sitk

    from bronchonav.airway.build import build_map
    from bronchonav.airway.metrics import airway_metrics
    from bronchonav.ct.io import read_ct
    from bronchonav.maps import tree_from_dict

    t0 = time.perf_counter()
    image = read_ct(folder / "ct.nii.gz")
    t_read = time.perf_counter() - t0
    result = build_map(image, "bench", {"kind": "ct", "path": str(folder / "ct.nii.gz")})
    seconds = time.perf_counter() - t0
    peak = _peak_rss_bytes()
    gt_tree = tree_from_dict(_json.loads((folder / "gt_tree.json").read_text()))
    gt_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "gt_lumen_mask.nii.gz"))) > 0
    metrics = airway_metrics(result.segmentation.array(), gt_mask, gt_tree, image,
                             result.airway_map.tree)
    tree = result.airway_map.tree
    return {
        "extraction": {"seconds": round(seconds, 3), "read_seconds": round(t_read, 3),
                       "timings": result.timings, "peak_rss_bytes": peak,
                       "peak_rss_gb": round(peak / 1e9, 3),
                       "threshold_hu": result.segmentation.threshold_hu},
        "tree": {"branches": len(tree), "max_generation": tree.max_generation,
                 "lobes": tree.lobes(), "gt_branches": len(gt_tree),
                 "gt_max_generation": gt_tree.max_generation},
        "metrics": metrics.to_dict(),
        "mesh_triangles": int(len(result.airway_map.mesh_triangles)),
        "_voxels": int(np.prod(image.GetSize())),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom", default="full", choices=("default", "full"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child))))
        return 0

    from bronchonav.cli import main as cli_main

    with tempfile.TemporaryDirectory(prefix="airway_bench_") as tmp:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON report only
            code = cli_main(["phantom", "--name", args.phantom, "--seed", str(args.seed),
                             "--out", tmp])
        if code:
            return code
        t_phantom = time.perf_counter() - t0
        print("  extracting in a subprocess …", file=sys.stderr, flush=True)
        env = dict(os.environ)
        proc = subprocess.run([sys.executable, __file__, "--child", tmp], capture_output=True,
                              text=True, env=env, check=False)
        sys.stderr.write(proc.stderr)
        if proc.returncode:
            return proc.returncode
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    voxels = out.pop("_voxels")
    m, ex, tr = out["metrics"], out["extraction"], out["tree"]
    checks = {
        "extraction_seconds": ex["seconds"] <= BARS["extraction_seconds_max"],
        "peak_rss": ex["peak_rss_gb"] <= BARS["peak_rss_gb_max"],
        "td": m["td"] >= BARS["td_min"],
        "bd": m["bd"] >= BARS["bd_min"],
        "fpr": m["fpr"] <= BARS["fpr_max"],
        "max_generation": tr["max_generation"] >= BARS["max_generation_min"],
        "radius_error": abs(m["radius_error_median_m"]) <= BARS["radius_error_median_abs_max_m"],
    }
    report = {
        "benchmark": "airway_extraction",
        "machine": machine_info("SimpleITK"),
        "phantom": {"name": args.phantom, "seed": args.seed, "voxels": voxels,
                    "generation_and_write_seconds": round(t_phantom, 3),
                    "generation_peak_rss_gb": round(_peak_rss_bytes() / 1e9, 3)},
        **out,
        "bars": BARS,
        "checks": checks,
        "pass": all(checks.values()),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
