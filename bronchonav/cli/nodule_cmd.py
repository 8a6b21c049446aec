"""``bronchonav add-nodule``: add lesions to a map (CT frame, metres).

One lesion by centre and radius, or every connected component of a label image on the CT's
grid, or every row of a CSV (``id,x_m,y_m,z_m,radius_m``). The map is rewritten atomically with
its metadata and hashes updated, so it stays valid; nothing is written if any lesion is refused.
"""

from __future__ import annotations

from bronchonav.errors import InputError


def _parse_center(text: str):
    import math

    parts = text.split(",")
    try:
        values = [float(v) for v in parts]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(f"--center must be X,Y,Z: three finite numbers in metres, got {text!r}")
    return values


def run(args) -> int:
    import numpy as np

    from bronchonav.airway.lesions import make_nodule, nodules_from_csv, nodules_from_labels
    from bronchonav.maps import load_map, map_folder, save_map
    from bronchonav.planning.exit import LungRegion

    airway_map = load_map(args.map)
    if args.id is not None:
        if args.center is None or args.radius is None:
            raise InputError("--id needs --center=X,Y,Z and --radius R (metres)")
        new = [make_nodule(args.id, _parse_center(args.center), args.radius, airway_map.tree,
                           args.note or "")]
    elif args.from_labels:
        new = nodules_from_labels(args.from_labels, airway_map.tree, airway_map.lung_mask,
                                  args.prefix)
    else:
        new = nodules_from_csv(args.from_csv, airway_map.tree)
    known = {n.id for n in airway_map.nodules}
    clash = sorted(known & {n.id for n in new})
    if clash and not args.replace:
        raise InputError(f"map {airway_map.name!r} already has nodule(s) {', '.join(clash)} "
                         "(use --replace to replace them)")
    if airway_map.lung_mask is not None:
        inside = LungRegion(airway_map.lung_mask).label_at(np.array([n.center for n in new])) > 0
        outside = [n.id for n, ok in zip(new, inside) if not ok]
        if outside:
            raise InputError(f"nodule(s) {', '.join(outside)} centred outside the lungs of map "
                             f"{airway_map.name!r} (CT frame, metres expected)")
    airway_map.nodules = [n for n in airway_map.nodules if n.id not in clash] + new
    save_map(airway_map, map_folder(args.map), force=True)
    for n in new:
        c = ", ".join(f"{v:.4f}" for v in n.center)
        print(f"added nodule {n.id}: centre ({c}) m, radius {n.radius:.4f} m, lobe {n.lobe}")
    return 0


def register(subparsers) -> None:
    """Add the ``add-nodule`` sub-command."""
    p = subparsers.add_parser("add-nodule", help="add lesions to a map (CT frame, metres)",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("map", help="map folder (rewritten atomically)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--id", help="id of one lesion given by --center and --radius")
    src.add_argument("--from-labels", metavar="FILE",
                     help="label image on the CT's grid: one lesion per connected component")
    src.add_argument("--from-csv", metavar="FILE", help="CSV with id,x_m,y_m,z_m,radius_m")
    p.add_argument("--center", metavar="X,Y,Z", help="lesion centre, CT frame (m); write "
                   "--center=X,Y,Z when X is negative")
    p.add_argument("--radius", type=float, metavar="R", help="lesion radius (m)")
    p.add_argument("--note", help="free text stored with the lesion")
    p.add_argument("--prefix", default="L", help="id prefix for --from-labels (default L)")
    p.add_argument("--replace", action="store_true", help="replace lesions with the same ids")
    p.set_defaults(func=run)
