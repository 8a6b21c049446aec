"""Navigation in the twin over a phantom cohort: does the catheter reach what the planner approves?

Usage::

    .venv/bin/python bench/navigation_bench.py [--seeds 0-7] [--poses truth,registered]
                                               [--maps ground_truth|build]
                                               [--workers 2] [--out out/navigation_bench]
                                               [--json-out FILE]
    .venv/bin/python bench/navigation_bench.py --summarize DIR   # an existing campaign folder

Runs the campaign of ``config/campaign_navigation.yaml`` (stages ``map, plan, rehearse``; every
nodule; the 2.8 mm and 3.5 mm catheters) on the phantom seeds and poses asked for, through the
campaign runner (Ray when ``--workers`` > 1). ``--maps`` says where each phantom's map comes
from: its generator's tree (``ground_truth``, the default, fast) or the airway extraction from
its CT (``build``: planner and walls from the extracted map, as for a patient's scan). The
campaign file actually run is written to ``OUT/NAME.yaml`` and its results to ``OUT/NAME/``
(NAME from the seeds, poses and maps), so a rerun resumes and ``bronchonav campaign run
OUT/NAME.yaml --out DIR`` gives the same table and the same figures (``--summarize DIR`` prints
them from that folder without running anything); the campaign report
(``OUT/NAME/report/report.md``) is written too.

Prints one JSON object: ``cohort`` (subjects, cases, routes, planner-feasible routes); per pose
(``truth``: steering on the model's tip pose; ``registered``: on the registered EM pose under
breathing) the fields of :class:`~bronchonav.campaign.rehearsal_summary.RehearsalSummary` —
``reach_rate`` over feasible routes, ``agreement`` (planner–rehearsal, with its ``confusion``
counts), ``tool_in_lesion_rate``, ``failed_step_fraction``, ``median_sim_time_s`` (simulated
time to target), ``median_wall_s`` (per route), ``outcomes`` — also ``by_catheter``; ``bars``
(reach >= 0.95, agreement >= 0.95, failed steps <= 0.01) and ``pass`` per pose; the machine.
NaN (no route to count) is written as null. The figures come from
:func:`bronchonav.campaign.rehearsal_summary.summarize_rehearsals`, the function the campaign
report uses. Everything but wall times is deterministic (seeded); wall times depend on the load
of the machine (recorded).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import yaml
from machine import emit, machine_info

REPO = Path(__file__).resolve().parents[1]
CAMPAIGN = REPO / "config" / "campaign_navigation.yaml"


def parse_seeds(text: str) -> list[int]:
    """``"0-7"``, ``"0,3,5"`` or a mix (``"0-3,9"``) → sorted unique seeds."""
    seeds: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            lo_i, hi_i = int(lo), int(hi or lo)
            if lo_i < 0 or hi_i < lo_i:
                raise ValueError(part)
            seeds.update(range(lo_i, hi_i + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0-7 or 0,2,5, got {text!r}")
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return sorted(seeds)


def parse_poses(text: str) -> list[str]:
    """``"truth,registered"`` → the poses, checked against the rehearsal's."""
    from bronchonav.campaign.rehearsal_summary import POSES

    poses = [p.strip() for p in text.split(",") if p.strip()]
    if not poses or any(p not in POSES for p in poses) or len(set(poses)) != len(poses):
        raise argparse.ArgumentTypeError(f"poses must be a comma-separated subset of "
                                         f"{','.join(POSES)}, got {text!r}")
    return poses


def campaign_file(seeds: list[int], poses: list[str], out: Path,
                  maps: str = "ground_truth") -> Path:
    """Write the navigation campaign with these seeds, poses and map source (``ground_truth``
    or ``build``) as ``OUT/NAME.yaml``."""
    from bronchonav.fileio import write_text

    data = yaml.safe_load(CAMPAIGN.read_text())
    data["cohort"]["phantoms"]["seeds"] = seeds
    data["cohort"]["phantoms"]["map"] = maps
    data["stage_options"]["rehearse"]["poses"] = ",".join(poses)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        span = f"{seeds[0]}-{seeds[-1]}"
    else:
        span = "_".join(map(str, seeds))
    data["name"] = f"navigation_s{span}_{'+'.join(poses)}" + ("_built" if maps == "build" else "")
    path = out / f"{data['name']}.yaml"
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, f"# written by bench/navigation_bench.py from {CAMPAIGN.name}\n"
               + yaml.safe_dump(data, sort_keys=False))
    return path


def _finite_or_none(value):
    """JSON has no NaN: NaN (no data) becomes null, recursively."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def figures_of(folder: Path) -> dict:
    """The JSON figures of the campaign table in ``folder``: cohort, per pose (all catheters and
    per catheter), bars and pass/fail per pose."""
    from bronchonav.campaign.rehearsal_summary import (BARS, poses_in, routes,
                                                       summarize_rehearsals)
    from bronchonav.campaign.store import ResultStore

    store = ResultStore(folder)
    campaign, rows = store.campaign(), store.rows()
    plans = routes(rows)
    catheters = {c["name"]: c["diameter_m"] for c in campaign["catheters"]}
    result = {
        "campaign_dir": str(folder),
        "seeds": [s for p in campaign["cohort"].get("phantoms", []) for s in p["seeds"]],
        "maps": sorted({p.get("map", "ground_truth")
                        for p in campaign["cohort"].get("phantoms", [])}),
        "catheters": catheters,
        "poses": poses_in(rows),
        "cohort": {"subjects": len({r["subject"] for r in rows}), "cases": len(rows),
                   "cases_with_errors": sum(1 for r in rows if r.get("status") != "ok"),
                   "routes": len(plans),
                   "feasible_routes": sum(1 for r in plans if r.get("plan_feasible"))},
        "bars": BARS,
    }
    passes = {}
    for pose in result["poses"]:
        summary = summarize_rehearsals(rows, pose)
        result[pose] = {**summary.to_dict(), "by_catheter": {
            c: summarize_rehearsals(rows, pose, c).to_dict() for c in catheters}}
        passes[pose] = summary.bars()
    result["pass"] = passes
    result["all_bars_pass"] = bool(passes) and all(all(p.values()) for p in passes.values())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-7"),
                        help="phantom seeds, e.g. 0-7 or 0,3 (default 0-7)")
    parser.add_argument("--poses", type=parse_poses, default=parse_poses("truth,registered"),
                        help="what the controller steers on (default truth,registered)")
    parser.add_argument("--maps", choices=("ground_truth", "build"), default="ground_truth",
                        help="each phantom's map: its generator's tree (default) or extracted "
                             "from its CT")
    parser.add_argument("--workers", type=int, default=2, help="parallel workers (default 2)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "navigation_bench",
                        help="folder of the campaign file and results (default "
                             "out/navigation_bench); a rerun resumes")
    parser.add_argument("--summarize", type=Path, metavar="DIR",
                        help="run nothing: the figures of the campaign folder DIR (e.g. of "
                             "bronchonav campaign run config/campaign_navigation.yaml --out DIR)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    from bronchonav.campaign.report import write_report
    from bronchonav.campaign.runner import run_campaign
    from bronchonav.campaign.spec import load_spec
    from bronchonav.errors import BronchoNavError

    run_info = {}
    try:
        if args.summarize:
            folder = args.summarize
        else:
            path = campaign_file(args.seeds, args.poses, args.out, args.maps)
            folder = args.out / load_spec(path).name
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            run = run_campaign(load_spec(path), folder, workers=args.workers, progress=False)
            run_info = {"campaign_file": str(path),
                        "command": f"bronchonav campaign run {path} --out DIR",
                        "workers": args.workers,
                        "run_seconds": round(time.perf_counter() - t0, 1),
                        "cases_run_now": run.ran, "cases_resumed": run.skipped,
                        "cases_lost": len(run.lost),
                        "load_average_before": round(load_before, 2),
                        "load_average_after": round(os.getloadavg()[0], 2)}
        report = write_report(folder)
        result = {"benchmark": "navigation", **figures_of(folder), "report": str(report),
                  **run_info, "machine": machine_info("scipy", "ray")}
    except BronchoNavError as exc:
        print(f"navigation_bench: {exc}", file=sys.stderr)
        return 2
    emit(_finite_or_none(result), args.json_out, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
