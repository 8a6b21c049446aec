"""``bronchonav sim | hil | launch {plan,sim,hil} | demo``: the ROS 2 graph without ``ros2 launch``.

``bronchonav sim`` and ``bronchonav hil`` are ``bronchonav launch sim`` / ``launch hil``;
``bronchonav launch plan`` is the equivalent of ``ros2 launch bronchonav plan.launch.py``
(``bronchonav plan`` is the planner's own command line). They start the nodes of the same table
(:mod:`bronchonav.ros.launch_spec`) with the same parameter file and the same arguments, given
as in ``ros2 launch`` (``map:=phantom:default rate:=500``) or as options (``--map``, ``--rate``,
...): in one process, or with ``--processes`` as one child process per node.
``bronchonav demo`` runs the closed-loop scenario (see :mod:`bronchonav.ros.demo`).
"""

from __future__ import annotations

import argparse
import json
import sys

from bronchonav.errors import InputError


def _launch_options(p) -> None:
    p.add_argument("arguments", nargs="*", metavar="NAME:=VALUE",
                   help="launch arguments as for ros2 launch (map, rate, rviz, "
                        "robot_state_publisher, namespace, params_file)")
    p.add_argument("--map", help="map folder or phantom:NAME (default: the parameter file's, "
                                 "maps/phantom_default)")
    p.add_argument("--rate", type=float, help="catheter_sim loop rate (Hz)")
    p.add_argument("--rviz", action=argparse.BooleanOptionalAction, default=None,
                   help="start rviz2 if installed (default: yes)")
    p.add_argument("--namespace", help="namespace of every node (e.g. cath2)")
    p.add_argument("--config", help="ROS 2 parameter YAML (default config/bronchonav.yaml)")
    p.add_argument("--processes", action="store_true",
                   help="one child process per node instead of one process")


def launch_arguments(args) -> dict:
    """``NAME:=VALUE`` words and options as one ``{argument: value}`` dict (options win)."""
    given: dict = {}
    for word in args.arguments:
        name, sep, value = word.partition(":=")
        if not sep or not name:
            raise InputError(f"launch argument {word!r} must look like NAME:=VALUE")
        given[name] = value
    for name, value in (("map", args.map), ("rate", args.rate), ("rviz", args.rviz),
                        ("namespace", args.namespace), ("params_file", args.config)):
        if value is not None:
            given[name] = value
    return given


def _run_launch(name: str, args) -> int:
    from bronchonav.ros.runner import run_in_process, run_processes

    run = run_processes if args.processes else run_in_process
    return run(name, None, launch_arguments(args))


def _demo(args) -> int:
    from bronchonav import progress
    from bronchonav.ros.demo import format_summary, run_demo

    def say(message: str) -> None:
        if not args.json:
            print(f"  {message}", file=sys.stderr, flush=True)

    progress.set_enabled(not args.json)
    summary = run_demo(args.out, args.map, args.nodule, args.timeout, args.rate,
                       pose_source=args.pose, progress=say)
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))
    if not summary["ok"]:
        print(f"bronchonav demo: {summary['failure']}", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    """Add ``sim``, ``hil``, ``launch`` and ``demo``."""
    for name, text in (("sim", "all nodes with the built-in navigator (= launch sim)"),
                       ("hil", "all nodes but the navigator, for an external controller "
                               "(= launch hil)")):
        p = subparsers.add_parser(name, help=text, description=text)
        _launch_options(p)
        p.set_defaults(func=lambda a, n=name: _run_launch(n, a))
    p = subparsers.add_parser("launch", help="start a launch configuration (plan, sim, hil) "
                              "like `ros2 launch bronchonav NAME.launch.py`")
    p.add_argument("name", choices=["plan", "sim", "hil"])
    _launch_options(p)
    p.set_defaults(func=lambda a: _run_launch(a.name, a))
    p = subparsers.add_parser("demo", help="closed-loop demo through the ROS graph: plan, "
                              "navigate, register, report",
                              description="Plan to a nodule, drive the simulated catheter along "
                              "the route with the navigator, register the EM samples; write "
                              "summary.json, demo.png and demo.mcap.")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--json", action="store_true", help="print the JSON summary on stdout")
    p.add_argument("--map", help="map folder or phantom:NAME (default maps/phantom_default)")
    p.add_argument("--nodule", help="nodule id (default: the feasible route with the gentlest bends)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="time limit of each drive (s, default 300)")
    p.add_argument("--rate", type=float, help="catheter_sim loop rate (Hz)")
    p.add_argument("--pose", choices=["registered", "truth"], default="registered",
                   help="steer to the nodule on the registered EM pose (after surveying both "
                        "main bronchi and registering; default) or on the ground truth")
    p.set_defaults(func=_demo)
