"""``bronchonav calibrate``: fit a device file to a recording (tip and optional shape positions).

Example::

    bronchonav calibrate --device config/devices/bronchoscope_3p5.yaml --data rec.csv \\
        --out fitted.yaml --fit stiffness:articulating,friction,base_x,base_y,base_z

The recording CSV format is described in :mod:`bronchonav.calibration.recording`. The fitted
device file carries the fitted values and a ``calibration`` block (values, standard deviations,
held-out errors); the same summary is printed as JSON.
"""

from __future__ import annotations

import argparse

DEFAULT_FIT = "stiffness,friction,base_x,base_y,base_z"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit a catheter device file to recorded motion",
                       description=__doc__.splitlines()[0])
    p.add_argument("--device", required=True, help="device file (YAML) with the starting values")
    p.add_argument("--data", required=True, help="recording CSV (see bronchonav.calibration)")
    p.add_argument("--out", required=True, help="fitted device file to write (YAML)")
    p.add_argument("--fit", default=DEFAULT_FIT,
                   help="comma-separated parameters; 'stiffness' alone means the articulating "
                        f"segment's (default {DEFAULT_FIT})")
    p.add_argument("--holdout", type=float, default=0.3,
                   help="fraction of rows (the last ones) held out of the fit (default 0.3)")
    p.add_argument("--n-nodes", type=int, default=15, help="model nodes (default 15)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from bronchonav.calibration import calibrate, load_recording
    from bronchonav.catheter.device import load_device, save_device

    params = load_device(args.device)
    names = [n.strip() for n in args.fit.split(",") if n.strip()]
    art = params.segments[params.articulation_segment].name
    names = [f"stiffness:{art}" if n == "stiffness" else n for n in names]
    result = calibrate(params, load_recording(args.data, params), names, holdout=args.holdout,
                       n_nodes=args.n_nodes)
    summary = result.to_dict()
    save_device(result.params, args.out, extra={"calibration": {
        **summary, "device": str(args.device), "data": str(args.data)}})
    print(json.dumps(summary, indent=2))
    return 0
