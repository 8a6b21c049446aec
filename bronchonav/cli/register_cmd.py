"""``bronchonav register --map DIR --scenario rigid|breathing|cbct|camera --trials N --seed S [--json]``.

Runs N seeded registration trials (a different unknown patient→CT transform, breathing phases,
noise and outliers each) against the map and prints the success rate (TRE at the target < 5 mm),
the TRE at the nodules (median, p95), the FRE and the time per registration (median).
"""

from __future__ import annotations

import argparse
import json
import sys

from bronchonav.cli.options import finite_float, output_file, positive_int, seed

MAX_TRIALS = 10_000
"""Most trials one command runs (a trial takes tens of milliseconds to a second)."""


def register(subparsers) -> None:
    """Add the ``register`` sub-command."""
    parser = subparsers.add_parser(
        "register", help="evaluate registration of simulated EM / cone-beam CT data to a map",
        description="Simulate intra-operative sensing (EM sweeps, cone-beam CT surface) of the "
                    "map's ground truth under an unknown rigid transform and breathing, register "
                    "it to the map, and report target errors over seeded trials.")
    parser.add_argument("--map", required=True, metavar="DIR", help="map folder (the twin)")
    parser.add_argument("--scenario", required=True,
                        choices=("rigid", "breathing", "cbct", "camera"),
                        help="rigid: EM sweep, no motion; breathing: EM sweep under breathing, "
                             "global then local refinement; cbct: cone-beam CT surface; camera: "
                             "breathing EM sweep plus tip-camera depth frames near the target")
    parser.add_argument("--trials", type=positive_int(MAX_TRIALS), default=20, metavar="N",
                        help=f"number of trials, 1-{MAX_TRIALS} (default 20)")
    parser.add_argument("--seed", type=seed, default=0, metavar="S",
                        help="seed of trial 0..N-1, 0 to 2**32-1 (default 0)")
    parser.add_argument("--amplitude-mm", type=finite_float(0.0, 50.0, unit="mm"), metavar="MM",
                        help="breathing amplitude at the lung base, 0-50 mm (default 0 for rigid, "
                             "10 otherwise)")
    parser.add_argument("--eval-phase", type=_phase, metavar="PHASE",
                        help="breathing phase (cycles, 0-1) at which the target error is "
                             "evaluated, or 'random' (default: 0.25, mid-inspiration, for "
                             "breathing; the cone-beam CT's random breath-hold phase for cbct)")
    parser.add_argument("--noise-mm", type=finite_float(0.0, 20.0, unit="mm"), default=1.0,
                        metavar="MM", help="EM position noise per axis, 0-20 mm (default 1)")
    parser.add_argument("--target", action="append", metavar="ID",
                        help="nodule id to target (repeatable; default: all nodules in turn)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--trials-out", type=output_file, metavar="FILE",
                        help="also write every trial as JSON (written atomically)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from dataclasses import replace

    from bronchonav.cli.options import write_output
    from bronchonav.maps import load_map
    from bronchonav.progress import step
    from bronchonav.registration.evaluate import (ground_truth_for, json_safe, records_as_dicts,
                                                  run_trials, summarize)
    from bronchonav.registration.simulate import scenario_config
    from bronchonav.registration.twin import Twin

    airway_map = load_map(args.map)
    # the camera scenario adds tip-camera frames to the breathing EM scenario
    cfg = scenario_config("breathing" if args.scenario == "camera" else args.scenario)
    cfg = replace(cfg, noise_std=args.noise_mm * 1e-3)
    if args.amplitude_mm is not None:
        cfg = replace(cfg, amplitude=args.amplitude_mm * 1e-3)
    if args.eval_phase is not None:
        cfg = replace(cfg, eval_phase=None if args.eval_phase == "random" else args.eval_phase)
    if args.scenario == "camera":
        return _run_camera(args, airway_map, cfg)
    with step("preparing the twin and its ground truth"):
        twin = Twin.of(airway_map).prepare()
        gt = ground_truth_for(airway_map)
    with step(f"{args.trials} {args.scenario} trials"):
        records = run_trials(airway_map, args.scenario, args.trials, args.seed, cfg,
                             ground_truth=gt, twin=twin, target_ids=args.target)
    summary = json_safe(summarize(records, args.scenario))
    summary.update({"map": str(args.map), "ground_truth": gt.description, "seed": args.seed,
                    "amplitude_mm": cfg.amplitude * 1e3, "noise_mm": cfg.noise_std * 1e3,
                    "eval_phase": "random" if cfg.eval_phase is None else cfg.eval_phase})
    if args.trials_out:
        write_output(args.trials_out,
                     json.dumps(records_as_dicts(records), indent=1, allow_nan=False),
                     "--trials-out")
    if args.json:
        print(json.dumps(summary, allow_nan=False))
        return 0
    _print(summary, args.scenario)
    return 0


def _run_camera(args, airway_map, simulation) -> int:
    """The camera scenario: EM + depth-frame registration, and what the camera adds."""
    from bronchonav.cli.options import write_output
    from bronchonav.registration.camera import (CameraScenarioConfig,
                                                        camera_scenario_summary)
    from bronchonav.progress import step
    from bronchonav.registration.evaluate import ground_truth_for, json_safe

    with step(f"{args.trials} camera trials"):
        summary = camera_scenario_summary(
            airway_map, ground_truth_for(airway_map), args.trials, args.seed,
            nodule_id=args.target, config=CameraScenarioConfig(simulation=simulation))
    summary = json_safe(summary)
    per_trial = summary.pop("per_trial", None)
    if args.trials_out:
        write_output(args.trials_out, json.dumps(per_trial, indent=1, allow_nan=False),
                     "--trials-out")
    if args.json:
        print(json.dumps(summary, allow_nan=False))
        return 0
    em = summary["em_only"]
    print(f"registration, scenario camera: {summary['trials']} trials on {args.map} "
          f"(nodules {', '.join(summary['nodules'])})")
    print(f"  success rate (TRE < 5 mm): {summary['success_rate']:.0%}")
    print(f"  TRE EM + camera: median {_fmt(summary['tre_median_mm'])}, "
          f"p95 {_fmt(summary['tre_p95_mm'])}")
    print(f"  TRE EM only: median {_fmt(em['tre_median_mm'])}; gain from the camera "
          f"{_fmt(summary['gain_median_mm'])}")
    print(f"  FRE median {_fmt(summary['fre_median_mm'])}; time per registration median "
          f"{_fmt(summary['ms_median'], 'ms', 1)} (camera step {_fmt(summary['camera_ms_median'], 'ms', 1)})")
    return 0


def _phase(text: str) -> float | str:
    """``--eval-phase``: a phase in [0, 1] (cycles), or ``'random'``."""
    if text == "random":
        return text
    try:
        return finite_float(0.0, 1.0)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a number of cycles in [0, 1] or 'random', got {text!r}") from None


def _fmt(value, unit="mm", digits=2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}"


def _print(s: dict, scenario: str) -> None:
    out = sys.stdout
    print(f"registration, scenario {scenario}: {s['trials']} trials on {s['map']} "
          f"(truth: {s['ground_truth']}; amplitude {s['amplitude_mm']:.0f} mm, "
          f"noise {s['noise_mm']:.1f} mm, target evaluated at breathing phase "
          f"{s['eval_phase']})", file=out)
    print(f"  success rate (TRE < 5 mm): {s['success_rate']:.0%}   "
          f"registrations reported successful: {s['registered_rate']:.0%}", file=out)
    print(f"  TRE at the target: median {_fmt(s['tre_median_mm'])}, p95 {_fmt(s['tre_p95_mm'])}, "
          f"max {_fmt(s['tre_max_mm'])}", file=out)
    first = {"cbct": "EM survey", "rigid": "global", "breathing": "global"}[scenario]
    final = {"cbct": "cone-beam CT", "rigid": "local", "breathing": "local"}[scenario]
    print(f"  TRE {first} -> {final}: median {_fmt(s['tre_global_median_mm'])} -> "
          f"{_fmt(s['tre_local_median_mm'])} (median gain {_fmt(s['gain_median_mm'])}, "
          f"better in {s['local_better_rate']:.0%} of trials)", file=out)
    if scenario == "breathing":
        print(f"  worst TRE over the breathing cycle: median {_fmt(s['tre_worst_phase_median_mm'])}",
              file=out)
    print(f"  FRE median {_fmt(s['fre_median_mm'])}; time per registration median "
          f"{_fmt(s['ms_median'], 'ms', 1)}, p95 {_fmt(s['ms_p95'], 'ms', 1)} "
          f"(CPU median {_fmt(s['cpu_ms_median'], 'ms', 1)})", file=out)
    for target, t in s["per_target"].items():
        print(f"    {target}: {t['trials']} trials, TRE median {_fmt(t['tre_median_mm'])} "
              f"(global {_fmt(t['tre_global_median_mm'])}), success {t['success_rate']:.0%}",
              file=out)
