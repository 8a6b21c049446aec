"""Sub-command ``flythrough``: a virtual bronchoscopy along the planned route to a nodule.

Writes one PNG per camera station and, with ``--gif``, an animated GIF. The camera is the tip
camera of :mod:`bronchonav.imaging.camera` (CT frame, metres).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from bronchonav.cli.options import bounded_int, finite_float, output_file, output_folder


def _waypoints(airway_map, nodule) -> tuple[np.ndarray, str]:
    """The planned route's waypoints, or the plain centerline path when no route is feasible."""
    from bronchonav.imaging.flythrough import tree_path_waypoints
    from bronchonav.planning.planner import plan_route

    route = plan_route(airway_map, nodule.id)[0]
    if route.feasible:
        return route.waypoints, "planned route"
    reasons = "; ".join(str(r) for r in route.reasons)
    print(f"bronchonav flythrough: no feasible route to {nodule.id} ({reasons}); flying the "
          "airway centerline to the branch nearest the nodule instead", file=sys.stderr)
    return tree_path_waypoints(airway_map.tree, nodule.center), "centerline path (infeasible route)"


def cmd_flythrough(args) -> int:
    """Render the fly-through and write the frames."""
    from bronchonav.imaging.camera import CameraIntrinsics, Shading, TipCamera
    from bronchonav.imaging.flythrough import Overlay, render_flythrough, route_poses, write_flythrough
    from bronchonav.maps import load_map
    from bronchonav.progress import set_enabled, step

    if args.json:
        set_enabled(False)
    airway_map = load_map(args.map)
    nodule = airway_map.nodule(args.nodule)
    with step("planning the route"):
        waypoints, source = _waypoints(airway_map, nodule)
    intrinsics = CameraIntrinsics(width=args.width, height=args.height,
                                  hfov=float(np.radians(args.fov_deg)))
    camera = TipCamera.from_map(airway_map, intrinsics=intrinsics,
                                shading=Shading(auto_exposure=True))
    poses = route_poses(waypoints, step=args.step_mm * 1e-3)
    with step(f"rendering {len(poses)} frames"):
        frames = render_flythrough(camera, poses, Overlay(nodule.center, nodule.radius, nodule.id))
    with step(f"writing {args.out}"):
        written = write_flythrough(frames, args.out, args.gif, fps=args.fps)
    summary = {"map": airway_map.name, "nodule": nodule.id, "route": source,
               "route_length_m": float(np.linalg.norm(np.diff(waypoints, axis=0), axis=1).sum()),
               "frames": written["frames"], "out_dir": written["out_dir"], "gif": written["gif"],
               "width": intrinsics.width, "height": intrinsics.height,
               "hfov_rad": intrinsics.hfov}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"fly-through to {nodule.id} along the {source} "
              f"({summary['route_length_m'] * 1e3:.0f} mm): {written['frames']} frames → "
              f"{written['out_dir']}" + (f", GIF {written['gif']}" if written["gif"] else ""))
    return 0


def register(subparsers) -> None:
    """Add the ``flythrough`` sub-command."""
    p = subparsers.add_parser("flythrough", help="virtual bronchoscopy along the route to a nodule "
                                                 "(PNG frames + GIF)")
    p.add_argument("--map", required=True, help="map folder")
    p.add_argument("--nodule", required=True, help="nodule id, e.g. N1")
    p.add_argument("--out", required=True, type=output_folder, help="folder for the PNG frames")
    p.add_argument("--gif", default=None, type=output_file, help="animated GIF file to write")
    p.add_argument("--step-mm", type=finite_float(0.0, 100.0, lo_open=True, unit="mm"),
                   default=2.0, help="distance between frames, (0, 100] mm (default 2)")
    p.add_argument("--fps", type=finite_float(0.0, 120.0, lo_open=True, unit="frames/s"),
                   default=10.0, help="GIF frame rate, (0, 120] frames/s (default 10)")
    p.add_argument("--width", type=bounded_int(16, 4096), default=320,
                   help="image width, 16-4096 pixels (default 320)")
    p.add_argument("--height", type=bounded_int(16, 4096), default=240,
                   help="image height, 16-4096 pixels (default 240)")
    p.add_argument("--fov-deg", type=finite_float(1.0, 179.0, unit="deg"), default=110.0,
                   help="horizontal field of view, 1-179 deg (default 110)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=cmd_flythrough)
