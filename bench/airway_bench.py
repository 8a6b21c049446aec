"""Airway extraction benchmark on a phantom: time, peak memory and quality against ground truth.

One command, JSON on stdout (progress on stderr)::

    .venv/bin/python bench/airway_bench.py            # the 'full' phantom (0.7 mm, 512x512x450)
    .venv/bin/python bench/airway_bench.py --phantom default --seed 1
    .venv/bin/python bench/airway_bench.py --preset clinical --slice-mm 2.5
    .venv/bin/python bench/airway_bench.py --preset clinical --slice-mm 2.5 --noise-hu 25
    .venv/bin/python bench/airway_bench.py --preset clinical --emphysema 0.2
    .venv/bin/python bench/airway_bench.py --degradation   # the table of issue 13

The clinical preset (:mod:`bronchonav.ct.clinical`: 0.7 mm pixels, 1 or 2.5 mm slices,
correlated noise, vessels, ...) has the bars of issue 13: TD >= 0.90, BD >= 0.80, FPR <= 0.02,
extraction <= 60 s and <= 4 GB. ``--degradation`` degrades the default phantom the ways
clinical scans differ (more noise, thicker slices, brighter air, other file orientations) and
runs every row in its own subprocess with a time limit (``--row-timeout``), so no row can run
away; a row that fails or times out is reported as such.

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
CLINICAL_BARS = {"extraction_seconds_max": 60.0, "peak_rss_gb_max": 4.0, "td_min": 0.90,
                 "bd_min": 0.80, "fpr_max": 0.02, "lobe_agreement_min": 0.95}


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process since it started its program (bytes).

    ``VmHWM`` of ``/proc/self/status`` (reset by exec); ``ru_maxrss`` would include the memory
    of the parent at the time it forked this process (it keeps the phantom in memory).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def child(folder: Path) -> dict:
    """Extract the map of ``folder/ct.nii.gz`` and score it against the ground truth there."""
    import json as _json

    import numpy as np
    import SimpleITK as sitk

    from bronchonav.airway.build import build_map
    from bronchonav.airway.metrics import airway_metrics, label_agreement, lobe_agreement
    from bronchonav.ct.io import read_ct
    from bronchonav.maps import tree_from_dict

    t0 = time.perf_counter()
    image = read_ct(folder / "ct.nii.gz")
    t_read = time.perf_counter() - t0
    result = build_map(image, "bench", {"kind": "ct", "path": str(folder / "ct.nii.gz")})
    seconds = time.perf_counter() - t0
    peak = _peak_rss_bytes()
    gt_tree = tree_from_dict(_json.loads((folder / "gt_tree.json").read_text()))
    gt_image = sitk.ReadImage(str(folder / "gt_lumen_mask.nii.gz"))
    gt_mask = sitk.GetArrayFromImage(sitk.Resample(gt_image, image, sitk.Transform(),
                                                   sitk.sitkNearestNeighbor)) > 0
    metrics = airway_metrics(result.segmentation.array(), gt_mask, gt_tree, image,
                             result.airway_map.tree)
    tree = result.airway_map.tree
    return {
        "extraction": {"seconds": round(seconds, 3), "read_seconds": round(t_read, 3),
                       "timings": result.timings, "peak_rss_bytes": peak,
                       "peak_rss_gb": round(peak / 1e9, 3),
                       "threshold_hu": result.segmentation.threshold_hu,
                       "low_attenuation_area": result.segmentation.low_attenuation},
        "tree": {"branches": len(tree), "max_generation": tree.max_generation,
                 "lobes": tree.lobes(), "gt_branches": len(gt_tree),
                 "gt_max_generation": gt_tree.max_generation,
                 "lobe_agreement": lobe_agreement(tree, gt_tree),
                 "segment_agreement": label_agreement(tree, gt_tree, "segment"),
                 "segments": len({b.segment for b in tree if b.segment})},
        "metrics": metrics.to_dict(),
        "mesh_triangles": int(len(result.airway_map.mesh_triangles)),
        "_voxels": int(np.prod(image.GetSize())),
    }


def _extract(folder: str, timeout: float | None = None) -> dict:
    """Run :func:`child` on ``folder`` in a fresh subprocess (its own peak memory), bounded by
    ``timeout`` seconds; a failure or a timeout is returned as ``{"error": ...}``."""
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", folder], capture_output=True,
                              text=True, env=dict(os.environ), check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    sys.stderr.write(proc.stderr)
    if proc.returncode:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write_case(folder: Path, image, gt_mask_image, gt_tree_json: str) -> None:
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / "ct.nii.gz"), True)
    sitk.WriteImage(gt_mask_image, str(folder / "gt_lumen_mask.nii.gz"), True)
    (folder / "gt_tree.json").write_text(gt_tree_json)


def _slices(image, mask, thickness_mm: float, pixel_mm: float = 0.7):
    """The CT resampled to ``pixel_mm`` pixels and slices of ``thickness_mm`` (Gaussian slice
    profile of that FWHM, linear interpolation), and the truth mask on the same grid."""
    import numpy as np
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter1d

    from bronchonav.ct.clinical import FWHM_PER_SIGMA

    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(),
                                                      (pixel_mm, pixel_mm, thickness_mm))]
    ref = sitk.Image(size, sitk.sitkInt16)
    ref.SetSpacing((pixel_mm, pixel_mm, thickness_mm))
    ref.SetDirection(image.GetDirection())
    top = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))
    ref.SetOrigin((image.GetOrigin()[0], image.GetOrigin()[1],
                   top[2] - (size[2] - 1) * thickness_mm))
    sigma_z = thickness_mm / FWHM_PER_SIGMA
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    arr = gaussian_filter1d(arr, sigma_z / image.GetSpacing()[2], axis=0)
    smooth = sitk.GetImageFromArray(arr)
    smooth.CopyInformation(image)
    ct = sitk.Cast(sitk.Resample(smooth, ref, sitk.Transform(), sitk.sitkLinear, -1000.0),
                   sitk.sitkInt16)
    return ct, sitk.Resample(mask, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def _write_noisier(folder: Path, args) -> None:
    """The phantom of ``args`` with the noise std ``args.noise_hu`` (HU), written as the
    ``phantom`` command writes it (CT and truth)."""
    import numpy as np
    import SimpleITK as sitk

    from bronchonav.ct.phantom import make_phantom, phantom_config
    from bronchonav.maps import tree_to_dict

    def metres(mm):
        return None if mm is None else mm * 1e-3

    config = phantom_config(args.phantom, args.seed, slice_thickness_m=metres(args.slice_mm),
                            pixel_spacing_m=metres(args.pixel_mm),
                            emphysema_fraction=args.emphysema)
    config.noise_hu = float(args.noise_hu)
    phantom = make_phantom(config)
    mask = sitk.GetImageFromArray(phantom.lumen_mask.astype(np.uint8))
    mask.CopyInformation(phantom.image)
    _write_case(folder, phantom.image, mask, json.dumps(tree_to_dict(phantom.tree)))


def degradation(tmp: Path, seed: int, row_timeout: float) -> list[dict]:
    """The degradation table of issue 13 on the default phantom (one subprocess per row)."""
    import numpy as np
    import SimpleITK as sitk

    from bronchonav.ct.phantom import make_phantom, phantom_config
    from bronchonav.maps import tree_to_dict

    phantom = make_phantom(phantom_config("default", seed))
    image = phantom.image
    mask = sitk.GetImageFromArray(phantom.lumen_mask.astype(np.uint8))
    mask.CopyInformation(image)
    gt = json.dumps(tree_to_dict(phantom.tree))
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    rng = np.random.default_rng([seed, 13])

    def from_array(a):
        out = sitk.GetImageFromArray(np.clip(np.rint(a), -32768, 32767).astype(np.int16))
        out.CopyInformation(image)
        return out

    ramp = np.linspace(0.0, 150.0, arr.shape[2], dtype=np.float32)[None, None, :]
    rows = {
        "phantom as shipped (25 HU noise)": lambda: (image, mask),
        "+30 HU noise": lambda: (from_array(arr + 30 * rng.standard_normal(arr.shape)), mask),
        "+50 HU noise": lambda: (from_array(arr + 50 * rng.standard_normal(arr.shape)), mask),
        "0.7x0.7x1.25 mm slices": lambda: _slices(image, mask, 1.25),
        "0.7x0.7x2.5 mm slices": lambda: _slices(image, mask, 2.5),
        "air 0-150 HU brighter across the volume": lambda: (from_array(arr + ramp), mask),
        "NIfTI RAS orientation": lambda: (sitk.DICOMOrient(image, "RAS"),
                                          sitk.DICOMOrient(mask, "RAS")),
        "NIfTI PIR orientation": lambda: (sitk.DICOMOrient(image, "PIR"),
                                          sitk.DICOMOrient(mask, "PIR")),
    }
    table = []
    for k, (label, make) in enumerate(rows.items()):
        print(f"  degradation row {k + 1}/{len(rows)}: {label} …", file=sys.stderr, flush=True)
        folder = tmp / f"row{k}"
        ct, gt_mask = make()
        _write_case(folder, ct, gt_mask, gt)
        t0 = time.perf_counter()
        out = _extract(str(folder), row_timeout)
        row = {"input": label, "wall_seconds": round(time.perf_counter() - t0, 1)}
        if "error" in out:
            row["outcome"] = out["error"]
        else:
            m, tr = out["metrics"], out["tree"]
            row.update(td=round(m["td"], 3), bd=round(m["bd"], 3), fpr=round(m["fpr"], 4),
                       branches=tr["branches"], max_generation=tr["max_generation"],
                       lobe_agreement=round(tr["lobe_agreement"], 3),
                       segment_agreement=round(tr["segment_agreement"], 3),
                       extraction_seconds=out["extraction"]["seconds"],
                       peak_rss_gb=out["extraction"]["peak_rss_gb"])
        table.append(row)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom", "--preset", dest="phantom", default="full",
                        choices=("default", "full", "clinical"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slice-mm", type=float, help="clinical preset: slice thickness (mm)")
    parser.add_argument("--pixel-mm", type=float, help="clinical preset: in-plane pixel (mm)")
    parser.add_argument("--noise-hu", type=float,
                        help="replace the preset's noise std (HU), e.g. 25 for a 2.5 mm "
                             "reconstruction of the dose that gives 40 HU at 1 mm")
    parser.add_argument("--emphysema", type=float,
                        help="clinical preset: fraction of the lung destroyed by emphysema "
                             "(low-attenuation area, 0-0.6)")
    parser.add_argument("--degradation", action="store_true",
                        help="run the degradation table of issue 13 instead")
    parser.add_argument("--row-timeout", type=float, default=300.0,
                        help="time limit of each degradation row (s)")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child))))
        return 0

    from machine import emit

    from bronchonav.cli import main as cli_main

    if args.degradation:
        with tempfile.TemporaryDirectory(prefix="airway_degradation_") as tmp:
            t0 = time.perf_counter()
            table = degradation(Path(tmp), args.seed, args.row_timeout)
        emit({"benchmark": "airway_degradation", "machine": machine_info("SimpleITK"),
              "phantom": {"name": "default", "seed": args.seed},
              "row_timeout_seconds": args.row_timeout,
              "seconds": round(time.perf_counter() - t0, 1), "rows": table}, args.out)
        return 0

    with tempfile.TemporaryDirectory(prefix="airway_bench_") as tmp:
        t0 = time.perf_counter()
        if args.noise_hu is None:
            argv = ["phantom", "--name", args.phantom, "--seed", str(args.seed), "--out", tmp]
            for opt, value in (("--slice-mm", args.slice_mm), ("--pixel-mm", args.pixel_mm),
                               ("--emphysema", args.emphysema)):
                if value is not None:
                    argv += [opt, str(value)]
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON report only
                code = cli_main(argv)
            if code:
                return code
        else:
            from bronchonav.errors import InputError

            try:
                _write_noisier(Path(tmp), args)
            except InputError as exc:
                print(f"airway_bench: {exc}", file=sys.stderr)
                return 2
        t_phantom = time.perf_counter() - t0
        print("  extracting in a subprocess …", file=sys.stderr, flush=True)
        out = _extract(tmp)
        if "error" in out:
            print(f"airway_bench: extraction failed: {out['error']}", file=sys.stderr)
            return 1
    voxels = out.pop("_voxels")
    m, ex, tr = out["metrics"], out["extraction"], out["tree"]
    if args.phantom == "clinical":
        bars = CLINICAL_BARS
        checks = {
            "extraction_seconds": ex["seconds"] <= bars["extraction_seconds_max"],
            "peak_rss": ex["peak_rss_gb"] <= bars["peak_rss_gb_max"],
            "td": m["td"] >= bars["td_min"],
            "bd": m["bd"] >= bars["bd_min"],
            "fpr": m["fpr"] <= bars["fpr_max"],
            "lobe_agreement": tr["lobe_agreement"] >= bars["lobe_agreement_min"],
        }
    else:
        bars = BARS
        checks = {
            "extraction_seconds": ex["seconds"] <= BARS["extraction_seconds_max"],
            "peak_rss": ex["peak_rss_gb"] <= BARS["peak_rss_gb_max"],
            "td": m["td"] >= BARS["td_min"],
            "bd": m["bd"] >= BARS["bd_min"],
            "fpr": m["fpr"] <= BARS["fpr_max"],
            "max_generation": tr["max_generation"] >= BARS["max_generation_min"],
            "radius_error": (abs(m["radius_error_median_m"])
                             <= BARS["radius_error_median_abs_max_m"]),
        }
    report = {
        "benchmark": "airway_extraction",
        "machine": machine_info("SimpleITK"),
        "phantom": {"name": args.phantom, "seed": args.seed, "slice_mm": args.slice_mm,
                    "pixel_mm": args.pixel_mm, "noise_hu": args.noise_hu,
                    "emphysema": args.emphysema, "voxels": voxels,
                    "generation_and_write_seconds": round(t_phantom, 3),
                    "generation_peak_rss_gb": round(_peak_rss_bytes() / 1e9, 3)},
        **out,
        "bars": bars,
        "checks": checks,
        "pass": all(checks.values()),
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
