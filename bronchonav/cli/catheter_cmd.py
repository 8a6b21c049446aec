"""``bronchonav catheter``: run a catheter command sequence inside a map's airways.

Writes the shapes (JSON, CT frame, metres) and optionally a picture of the catheter in the tree.
"""

from __future__ import annotations

import json


def register(subparsers) -> None:
    """Add the ``catheter`` sub-command."""
    p = subparsers.add_parser(
        "catheter", help="simulate the tendon-driven catheter in a map's airways",
        description="Run a catheter command sequence (insert, bend, roll) through the Cosserat-rod "
                    "model with wall contact in a map's airway tree; write the backbone shapes in "
                    "the CT frame (m).")
    p.add_argument("--map", required=True, metavar="DIR", help="map folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--script", metavar="FILE.yaml",
                     help="command script (see bronchonav.catheter.script)")
    src.add_argument("--demo", action="store_true",
                     help="steer down the straightest path the catheter fits, then roll")
    p.add_argument("--out", required=True, metavar="shape.json", help="output JSON")
    p.add_argument("--png", metavar="FILE", help="picture of the catheter in the tree")
    p.add_argument("--n-nodes", type=int, default=None, metavar="N",
                   help="backbone nodes (default 50, or the script's n_nodes)")
    p.add_argument("--friction", type=float, default=0.0, metavar="MU",
                   help="wall friction coefficient (default 0: frictionless)")
    p.set_defaults(func=run)


def _record(index, command, state) -> dict:
    return {"index": index, "command": command.to_dict(), **state.to_dict()}


def _demo(model, tree, params):
    """Drive down the straightest path the catheter fits with the navigation controller, then
    roll 90 degrees."""
    import numpy as np

    from bronchonav.catheter import CatheterCommand
    from bronchonav.navigation import NavigationController, RouteTarget

    target = RouteTarget.straightest(tree, params.radius)
    controller = NavigationController(target, model)
    recorded = []
    while controller.outcome is None:
        cmd = controller.update(model.state.tip_pose)
        if controller.steps % 20 == 0 and controller.last_step is not None:
            recorded.append((cmd, controller.last_step))
    failures = controller.failed_steps
    last = controller.command()
    recorded.append((last, model.state))
    for roll in np.linspace(0.0, np.pi / 2, 31)[1:]:
        cmd = CatheterCommand(insertion=last.insertion, roll=float(roll),
                              tendon_tension=last.tendon_tension)
        s = model.step(cmd)
        failures += not s.converged
    recorded.append((cmd, s))
    return recorded, failures, {"path": list(target.branch_ids),
                                "navigation": controller.outcome.to_dict()}


def _script(model, frames):
    from bronchonav.catheter import CatheterCommand
    from bronchonav.catheter.script import ramp

    previous = CatheterCommand(insertion=0.0, tendon_tension=[0.0] * len(model.params.tendons))
    recorded, failures = [], 0
    for frame in frames:
        for cmd in ramp(previous, frame.command, frame.steps):
            s = model.step(cmd)
            failures += not s.converged
        recorded.append((frame.command, s))
        previous = frame.command
    return recorded, failures, {}


def run(args) -> int:
    """Run the sub-command; return the exit code."""
    from pathlib import Path

    from bronchonav import progress
    from bronchonav.catheter import CatheterModel, CatheterParams, validate_command
    from bronchonav.catheter.script import load_script
    from bronchonav.errors import CommandError, InputError
    from bronchonav.fileio import write_text
    from bronchonav.maps import load_map

    airway_map = load_map(args.map)
    params = CatheterParams.default()
    frames, options = (load_script(args.script, len(params.tendons)) if args.script
                       else ([], {}))
    for k, frame in enumerate(frames):  # fail before simulating; ramps stay within the limits
        try:
            validate_command(frame.command, params)
        except CommandError as exc:
            raise CommandError(f"script command {k}: {exc}") from None
    n_nodes = args.n_nodes or int(options.get("n_nodes", 50))
    if n_nodes < 3:
        raise InputError("--n-nodes must be at least 3")
    if not 0.0 <= args.friction < 10.0:
        raise InputError(f"--friction must be in [0, 10), got {args.friction}")
    model = CatheterModel(params, tree=airway_map.tree, n_nodes=n_nodes,
                          friction=args.friction)
    with progress.step("simulating the catheter"):
        recorded, failures, extra = (_demo(model, airway_map.tree, params) if args.demo
                                     else _script(model, frames))
    out = {"format": "bronchonav-catheter-shapes", "version": 1, "frame": "ct", "units": "m",
           "map": airway_map.name, "base_pose_ct": model.base_pose_ct.tolist(),
           "n_nodes": n_nodes, "friction": args.friction, "failed_steps": failures,
           "catheter": {"outer_diameter": params.outer_diameter, "length": params.length,
                        "tendons": params.tendon_names,
                        "max_articulation_rad": params.max_articulation},
           **extra,
           "steps": [_record(i, c, s) for i, (c, s) in enumerate(recorded)]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(out))
    if args.png:
        from bronchonav.viz.catheter_plot import render_catheter_png

        render_catheter_png(airway_map.tree, [s for _, s in recorded], args.png,
                            title=f"catheter in map {airway_map.name!r}")
    last = recorded[-1][1]
    print(f"{len(recorded)} shapes written to {args.out}; tip at "
          f"{', '.join(f'{v * 1e3:.1f}' for v in last.tip_pose[:3, 3])} mm (CT) in branch "
          f"{int(last.branch_ids[-1])}; {failures} failed steps")
    return 0
