"""Where the package's data files are (URDF, config, maps), and loading the map a node asks for.

Files are looked up in the installed share directory (``share/bronchonav`` found through the
ament index after ``colcon build``) and then in the source checkout, so the same node works in a
ROS 2 workspace and in a plain virtualenv.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from bronchonav.errors import MapError
from bronchonav.maps import map_folder

PACKAGE = "bronchonav"
SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The repository root when running from a source checkout."""

PHANTOM_PREFIX = "phantom:"
"""A map parameter ``phantom:NAME`` builds the phantom's ground-truth map on start."""


def share_dirs() -> list[Path]:
    """Candidate data roots: the ament share directory (if indexed), then the source tree."""
    roots = []
    if os.environ.get("AMENT_PREFIX_PATH"):
        try:
            from ament_index_python.packages import get_package_share_directory

            roots.append(Path(get_package_share_directory(PACKAGE)))
        except (LookupError, OSError, ValueError):
            pass
    roots.append(SOURCE_ROOT)
    return roots


def data_file(relative: str) -> Path:
    """The first existing ``relative`` path (e.g. ``urdf/bronchoscope.urdf``) in :func:`share_dirs`."""
    for root in share_dirs():
        if (root / relative).exists():
            return root / relative
    raise FileNotFoundError(f"{relative} not found in {', '.join(map(str, share_dirs()))}")


def resolve_map(spec: str) -> str:
    """Normalise a map parameter: ``phantom:NAME`` stays, a path is made absolute.

    A relative path is tried against the working directory, then against the data roots
    (``maps/phantom_default`` thus works from anywhere); a map's ``map.yaml`` stands for its
    folder (:func:`bronchonav.maps.map_folder`).
    """
    if spec.startswith(PHANTOM_PREFIX):
        return spec
    path = Path(spec).expanduser()
    if path.is_absolute() or path.exists():
        return str(map_folder(path).resolve())
    for root in share_dirs():
        if (root / path).exists():
            return str(map_folder(root / path).resolve())
    raise MapError(f"map folder not found: {spec} (looked in the working directory and "
                   f"{', '.join(map(str, share_dirs()))})")


_cache: dict = {}
_cache_lock = threading.Lock()


def load_airway_map(spec: str, fresh: bool = False):
    """Load the :class:`~bronchonav.maps.AirwayMap` named by a map parameter.

    ``spec`` is a map folder or ``phantom:NAME`` (the phantom's ground-truth map, built on
    start). Maps are loaded once per process and shared by the nodes of an in-process graph;
    treat the returned object as read-only. ``fresh`` reads the folder again (the map server's
    ``load_map`` service) and replaces the shared copy.
    """
    key = resolve_map(spec)
    with _cache_lock:
        if fresh or key not in _cache:
            if key.startswith(PHANTOM_PREFIX):
                from bronchonav.ct.phantom import phantom_config, phantom_ground_truth_map

                _cache[key] = phantom_ground_truth_map(phantom_config(key[len(PHANTOM_PREFIX):]))
            else:
                from bronchonav.maps import load_map

                _cache[key] = load_map(key)
        return _cache[key]
