"""Sub-commands for phantoms and airway maps: ``phantom``, ``build-map``, ``map-info``, ``render-map``.

All coordinates written are in the CT frame (LPS, metres); images are written by SimpleITK,
which converts LPS to the RAS header of NIfTI files itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bronchonav.errors import InputError


def _out_folder(path: str, force: bool = True, create: bool = True) -> Path:
    """The ``--out`` folder, checked before any work: a file is refused, and so is a non-empty
    folder unless ``force``."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder} exists and is not a folder")
    if not force and folder.is_dir() and any(folder.iterdir()):
        raise InputError(f"--out {folder} already exists and is not empty (use --force to "
                         "replace it)")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _phantom_config_from_args(name: str, args):
    """The phantom preset ``name`` with the ``--seed``, ``--slice-mm``, ``--pixel-mm`` and
    ``--emphysema`` options (:func:`bronchonav.ct.phantom.phantom_config` checks them)."""
    from bronchonav.ct.phantom import phantom_config

    def metres(mm):
        return None if mm is None else float(mm) * 1e-3

    return phantom_config(name, args.seed,
                          slice_thickness_m=metres(getattr(args, "slice_mm", None)),
                          pixel_spacing_m=metres(getattr(args, "pixel_mm", None)),
                          emphysema_fraction=getattr(args, "emphysema", None))


def cmd_phantom(args) -> int:
    """Write a phantom CT (NIfTI) and its ground truth into ``args.out``."""
    import SimpleITK as sitk

    from bronchonav.ct.phantom import make_phantom
    from bronchonav.fileio import atomic_folder
    from bronchonav.maps import nodules_to_list, tree_to_dict
    from bronchonav.progress import step

    config = _phantom_config_from_args(args.name, args)
    folder = _out_folder(args.out, force=args.force, create=False)
    with step(f"generating the {args.name!r} phantom (seed {args.seed})"):
        phantom = make_phantom(config)
    with step(f"writing {folder}"), atomic_folder(folder, force=args.force) as tmp:
        sitk.WriteImage(phantom.image, str(tmp / "ct.nii.gz"), True)
        mask = sitk.GetImageFromArray(phantom.lumen_mask.astype("uint8"))
        mask.CopyInformation(phantom.image)
        sitk.WriteImage(mask, str(tmp / "gt_lumen_mask.nii.gz"), True)
        sitk.WriteImage(phantom.lung_labels, str(tmp / "lung_labels.nii.gz"), True)
        (tmp / "gt_tree.json").write_text(json.dumps(tree_to_dict(phantom.tree)))
        (tmp / "nodules.json").write_text(json.dumps(nodules_to_list(phantom.nodules), indent=1))
    print(f"phantom {args.name!r} seed {args.seed}: {len(phantom.tree)} branches, generations "
          f"0–{phantom.tree.max_generation}, {len(phantom.nodules)} nodules, CT size "
          f"{phantom.image.GetSize()} → {folder}")
    return 0


def cmd_build_map(args) -> int:
    """Build a map from a CT or a phantom and save it."""
    from bronchonav.airway.build import build_map_from_ct, build_map_from_phantom
    from bronchonav.maps import save_map
    from bronchonav.progress import step

    t0 = time.perf_counter()
    if args.series is not None and not args.ct:
        raise InputError("--series chooses a DICOM series of --ct; a phantom has none")
    folder = _out_folder(args.out, force=args.force, create=False)
    if args.ct:
        result = build_map_from_ct(args.ct, name=args.name or folder.name, series=args.series)
    else:
        result = build_map_from_phantom(args.phantom, args.seed,
                                        config=_phantom_config_from_args(args.phantom, args))
        if args.name:
            result.airway_map.name = args.name
    with step(f"saving the map to {folder}"):
        save_map(result.airway_map, folder, force=args.force)
    tree = result.airway_map.tree
    summary = {
        "map": str(folder),
        "branches": len(tree),
        "max_generation": tree.max_generation,
        "lobes": tree.lobes(),
        "nodules": len(result.airway_map.nodules),
        "threshold_hu": result.segmentation.threshold_hu,
        "mesh_triangles": int(len(result.airway_map.mesh_triangles)),
        "extraction_seconds": round(result.seconds, 3),
        "timings": result.timings,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if result.metrics is not None:
        summary["metrics"] = result.metrics.to_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"map {folder}: {summary['branches']} branches, generations 0–"
              f"{summary['max_generation']}, lobes {summary['lobes']}, {summary['nodules']} "
              f"nodules, {summary['seconds']:.1f} s")
        if result.metrics is not None:
            m = result.metrics
            print(f"quality vs ground truth: TD {m.td:.3f}  BD {m.bd:.3f}  DSC {m.dsc:.3f}  "
                  f"precision {m.precision:.3f}  FPR {m.fpr:.4f}  centerline error "
                  f"{m.centerline_error_mean_m * 1e3:.2f} mm (p95 "
                  f"{m.centerline_error_p95_m * 1e3:.2f} mm)")
    return 0


def map_summary(folder: str | Path) -> dict:
    """Summary of a saved map: branches, generations, lobes, nodules, source (JSON-ready)."""
    from collections import Counter

    from bronchonav.maps import load_map

    m = load_map(folder)
    tree = m.tree
    return {
        "map": str(folder),
        "name": m.name,
        "branches": len(tree),
        "max_generation": tree.max_generation,
        "branches_per_generation": dict(sorted(Counter(b.generation for b in tree).items())),
        "lobes": tree.lobes(),
        "total_length_m": tree.total_length,
        "nodules": [{"id": n.id, "center_m": n.center.tolist(), "radius_m": n.radius,
                     "lobe": n.lobe, "note": n.note} for n in m.nodules],
        "source": m.metadata.get("source"),
        "spacing_m": m.metadata.get("spacing_m"),
        "mesh_triangles": int(len(m.mesh_triangles)),
        "metrics": m.metadata.get("metrics"),
    }


def cmd_map_info(args) -> int:
    """Print a map's summary."""
    s = map_summary(args.map)
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"map {s['name']} ({s['map']}), source {s['source']}")
    print(f"  {s['branches']} branches, generations 0–{s['max_generation']}, total centerline "
          f"length {s['total_length_m']:.3f} m, mesh {s['mesh_triangles']} triangles")
    print(f"  branches per generation: {s['branches_per_generation']}")
    print(f"  lobes (branches): {s['lobes']}")
    for n in s["nodules"]:
        c = ", ".join(f"{v * 1e3:.1f}" for v in n["center_m"])
        print(f"  nodule {n['id']}: centre ({c}) mm, diameter {n['radius_m'] * 2e3:.1f} mm, "
              f"lobe {n['lobe']}, {n['note']}")
    if s["metrics"]:
        print(f"  quality vs ground truth: {s['metrics']}")
    return 0


def cmd_render_map(args) -> int:
    """Draw a map's tree and nodules to a PNG."""
    from bronchonav.maps import load_map
    from bronchonav.viz.tree_plot import render_map_png

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out must be a .png file, got {out}")
    path = render_map_png(load_map(args.map), out)
    print(f"wrote {path}")
    return 0


def _phantom_options(p) -> None:
    p.add_argument("--slice-mm", type=float, help="clinical preset: slice thickness in mm "
                   "(0.5-3, default 1)")
    p.add_argument("--pixel-mm", type=float, help="clinical preset: in-plane pixel in mm "
                   "(default 0.7)")
    p.add_argument("--emphysema", type=float, help="clinical preset: fraction of the lung "
                   "destroyed by emphysema (0-0.6, default 0)")


def register(subparsers) -> None:
    """Add the ``phantom``, ``build-map``, ``map-info`` and ``render-map`` sub-commands."""
    p = subparsers.add_parser("phantom", help="write a synthetic phantom CT and its ground truth")
    p.add_argument("--name", "--preset", dest="name", default="default",
                   choices=("default", "full", "clinical"),
                   help="phantom preset (default: 1 mm voxels; full: 0.7 mm, 512x512x450; "
                        "clinical: the default anatomy as a clinical scan)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _phantom_options(p)
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty folder")
    p.set_defaults(func=cmd_phantom)

    p = subparsers.add_parser("build-map", help="build an airway map from a CT or a phantom")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ct", help="CT: DICOM series folder, .nii/.nii.gz, .nrrd, .mha/.mhd")
    src.add_argument("--phantom", choices=("default", "full", "clinical"),
                     help="built-in phantom preset")
    p.add_argument("--series", help="with --ct: the DICOM series to read where the folder holds "
                                    "several (its number in the listing, from 1, or its UID)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    _phantom_options(p)
    p.add_argument("--out", required=True, help="output map folder")
    p.add_argument("--name", help="map name (default: the folder name / phantom_NAME)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing map folder (it is kept if the build fails)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_build_map)

    p = subparsers.add_parser("map-info", help="summarise a map folder")
    p.add_argument("map", help="map folder")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_map_info)

    p = subparsers.add_parser("render-map", help="draw a map's tree and nodules to a PNG")
    p.add_argument("map", help="map folder")
    p.add_argument("--out", required=True, help="output .png file")
    p.set_defaults(func=cmd_render_map)
