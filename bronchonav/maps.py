"""Map folders: save, load and validate an airway map.

A map is a folder (like a navigation map server's map) holding::

    maps/NAME/
      map.yaml       metadata: format version, frame, units, source, creation parameters,
                     and for every data file its name and SHA-256
      tree.json      the airway tree (format ``bronchonav-airway-tree``, version 1)
      nodules.json   the nodules (centre, radius, lobe)
      lumen.ply      the lumen surface mesh (triangles, vertices in m, CT frame)
      lung_mask.nii.gz  optional: lung label image (0 outside, 1 right, 2 left), LPS, as written
                     by SimpleITK (the phantom's truth, or segmented from the CT by build-map)

A map is written atomically (a temporary sibling folder renamed into place) and never over an
existing map unless forced; ``bronchonav add-nodule`` adds lesions the same way, with the
hashes and the summary rewritten. Every file a map names must be a regular file inside its
folder.

All coordinates are in the CT frame (``ct``: the scan's patient frame, LPS, metres).

``tree.json`` holds ``{"format", "version", "frame", "units", "root", "branches": [...]}``
where each branch is ``{"id", "parent", "generation", "lobe", "name", "points", "radii"}``;
``points`` is a list of ``[x, y, z]`` in metres from the proximal to the distal end and
``radii`` the lumen radius (m) at each point. Floats are written with ``repr`` precision, so a
save → load round trip is lossless.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from bronchonav.airway.tree import AirwayTree, Branch, Nodule
from bronchonav.errors import MapError
from bronchonav.fileio import atomic_folder

MAP_FORMAT_VERSION = 1
TREE_FORMAT = "bronchonav-airway-tree"
METADATA_FILE = "map.yaml"


@dataclass
class AirwayMap:
    """An airway map: the tree, the nodules, the lumen surface and metadata.

    Attributes
    ----------
    name : str
        Map name (the folder name by convention).
    tree : AirwayTree
        Airway tree in the CT frame (m).
    nodules : list of Nodule
        Lesions in the CT frame (m).
    mesh_vertices : ndarray, shape (V, 3)
        Lumen surface vertices, CT frame (m).
    mesh_triangles : ndarray of int, shape (F, 3)
        Lumen surface triangles (vertex indices).
    metadata : dict
        Source and creation parameters (free-form, YAML-serialisable), e.g.
        ``{"source": {"kind": "phantom", "name": "default", "seed": 0}, "spacing_m": [...]}``.
    lung_mask : SimpleITK.Image or None
        Optional lung label image (0 outside, 1 right lung, 2 left lung) with its geometry.
    """

    name: str
    tree: AirwayTree
    nodules: list[Nodule] = field(default_factory=list)
    mesh_vertices: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    mesh_triangles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    metadata: dict = field(default_factory=dict)
    lung_mask: object | None = None

    def nodule(self, nodule_id: str) -> Nodule:
        """The nodule with this id; :class:`MapError` listing the known ids if there is none."""
        for n in self.nodules:
            if n.id == nodule_id:
                return n
        known = ", ".join(n.id for n in self.nodules) or "none"
        raise MapError(f"unknown nodule id {nodule_id!r} in map {self.name!r} (known: {known})")


# -- tree and nodules as JSON -------------------------------------------------------------------

def tree_to_dict(tree: AirwayTree) -> dict:
    """The tree as a JSON-serialisable dict (see the module docstring for the layout)."""
    return {
        "format": TREE_FORMAT,
        "version": MAP_FORMAT_VERSION,
        "frame": "ct",
        "units": "m",
        "root": tree.root,
        "branches": [
            {"id": b.id, "parent": b.parent, "generation": b.generation, "lobe": b.lobe,
             "name": b.name, "segment": b.segment, "points": b.points.tolist(), "radii": b.radii.tolist()}
            for b in sorted(tree, key=lambda b: b.id)
        ],
    }


def tree_from_dict(data: dict) -> AirwayTree:
    """Inverse of :func:`tree_to_dict`; validates the tree and raises :class:`MapError`."""
    if not isinstance(data, dict) or data.get("format") != TREE_FORMAT:
        raise MapError(f"not a {TREE_FORMAT} file")
    if data.get("version") != MAP_FORMAT_VERSION:
        raise MapError(f"tree format version {data.get('version')!r} is not supported "
                       f"(this BronchoNav reads version {MAP_FORMAT_VERSION})")
    if data.get("units") != "m" or data.get("frame") != "ct":
        raise MapError("tree must be in the 'ct' frame in metres")
    try:
        branches = [Branch(int(b["id"]), None if b["parent"] is None else int(b["parent"]),
                           int(b["generation"]), b["points"], b["radii"], lobe=b.get("lobe"),
                           name=b.get("name"), segment=b.get("segment")) for b in data["branches"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise MapError(f"malformed branch record in tree: {exc}") from None
    ids = [b.id for b in branches]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise MapError(f"tree has duplicate branch ids: {', '.join(map(str, dup[:10]))}")
    return AirwayTree(branches)


def nodules_to_list(nodules: list[Nodule]) -> list[dict]:
    """Nodules as JSON-serialisable dicts (``center_m``, ``radius_m`` in the CT frame)."""
    return [{"id": n.id, "center_m": n.center.tolist(), "radius_m": n.radius, "lobe": n.lobe,
             "note": n.note} for n in nodules]


def nodules_from_list(data: list) -> list[Nodule]:
    """Inverse of :func:`nodules_to_list`; raises :class:`MapError` on a malformed record."""
    try:
        nodules = [Nodule(str(d["id"]), d["center_m"], float(d["radius_m"]), d.get("lobe"),
                          d.get("note", "")) for d in data]
    except (KeyError, TypeError, ValueError) as exc:
        raise MapError(f"malformed nodule record: {exc}") from None
    check_nodules(nodules)
    return nodules


def check_nodules(nodules: list[Nodule]) -> None:
    """Raise :class:`MapError` for a non-finite centre, a radius outside (0, 0.1] m or a
    duplicate id."""
    seen = set()
    for n in nodules:
        if np.shape(n.center) != (3,) or not (np.all(np.isfinite(n.center))
                                              and np.isfinite(n.radius) and 0 < n.radius <= 0.1):
            raise MapError(f"nodule {n.id} has a non-finite centre or a radius outside (0, 0.1] m")
        if n.id in seen:
            raise MapError(f"duplicate nodule id {n.id!r}")
        seen.add(n.id)


# -- folder I/O ----------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_mesh(path: Path, vertices: np.ndarray, triangles: np.ndarray) -> None:
    """Binary little-endian PLY with double vertices (lossless) and int32 triangle indices."""
    vertices = np.ascontiguousarray(vertices, dtype="<f8")
    triangles = np.ascontiguousarray(triangles, dtype="<i4")
    header = ("ply\nformat binary_little_endian 1.0\ncomment frame ct, units m\n"
              f"element vertex {len(vertices)}\nproperty double x\nproperty double y\n"
              f"property double z\nelement face {len(triangles)}\n"
              "property list uchar int vertex_indices\nend_header\n")
    faces = np.empty(len(triangles), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    faces["n"] = 3
    faces["v"] = triangles
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vertices.tobytes())
        f.write(faces.tobytes())


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh written by :func:`_write_mesh` (or any triangle PLY, through open3d)."""
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    header = data[:end].decode("ascii", errors="replace") if end > 0 else ""
    if "property double x" in header and "format binary_little_endian" in header:
        nv = int(header.split("element vertex ")[1].split()[0])
        nf = int(header.split("element face ")[1].split()[0])
        body = data[end + len(b"end_header\n"):]
        if len(body) != nv * 24 + nf * 13:
            raise MapError(f"{path.name} is truncated or corrupt")
        vertices = np.frombuffer(body[:nv * 24], dtype="<f8").reshape(nv, 3).copy()
        faces = np.frombuffer(body[nv * 24:], dtype=[("n", "u1"), ("v", "<i4", (3,))])
        if nf and (np.any(faces["n"] != 3) or faces["v"].max() >= nv or faces["v"].min() < 0):
            raise MapError(f"{path.name} has non-triangle faces or bad vertex indices")
        return vertices, faces["v"].astype(np.int64)
    if not data.startswith(b"ply") or end < 0:
        raise MapError(f"{path.name} is not a PLY triangle mesh")
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(path))
    vertices = np.asarray(mesh.vertices, dtype=float)
    triangles = np.asarray(mesh.triangles, dtype=np.int64)
    declared = [int(line.split()[2]) for line in header.splitlines()
                if line.startswith(("element vertex ", "element face "))
                and line.split()[2].isdigit()]
    if sum(declared) != len(vertices) + len(triangles) or not np.all(np.isfinite(vertices)):
        raise MapError(f"{path.name} is not a readable triangle mesh ({len(vertices)} vertices "
                       f"and {len(triangles)} triangles read of {sum(declared)} declared)")
    return vertices, triangles


def save_map(airway_map: AirwayMap, folder: str | Path, force: bool = False) -> Path:
    """Write ``airway_map`` into ``folder`` atomically; return the folder path.

    The map is written into a temporary sibling folder which then replaces ``folder``
    (:func:`bronchonav.fileio.atomic_folder`): a failed write leaves whatever was there intact.
    An existing non-empty ``folder`` is replaced only with ``force=True``.

    Raises
    ------
    InputError
        If ``folder`` exists and is not empty and ``force`` is false, or cannot be written.
    """
    import bronchonav

    check_nodules(airway_map.nodules)
    folder = Path(folder)
    with atomic_folder(folder, force=force) as tmp:
        files = {"tree": "tree.json", "nodules": "nodules.json", "mesh": "lumen.ply"}
        (tmp / files["tree"]).write_text(json.dumps(tree_to_dict(airway_map.tree)))
        (tmp / files["nodules"]).write_text(json.dumps(nodules_to_list(airway_map.nodules),
                                                       indent=1))
        _write_mesh(tmp / files["mesh"], airway_map.mesh_vertices, airway_map.mesh_triangles)
        if airway_map.lung_mask is not None:
            import SimpleITK as sitk

            files["lung_mask"] = "lung_mask.nii.gz"
            sitk.WriteImage(airway_map.lung_mask, str(tmp / files["lung_mask"]), True)
        tree = airway_map.tree
        meta = {
            "format_version": MAP_FORMAT_VERSION,
            "name": airway_map.name,
            "frame": "ct",
            "axis_convention": "LPS (+x patient left, +y posterior, +z head)",
            "units": "m",
            "created_by": f"bronchonav {bronchonav.__version__}",
            "summary": {"branches": len(tree), "max_generation": tree.max_generation,
                        "lobes": tree.lobes(), "nodules": len(airway_map.nodules)},
            **airway_map.metadata,
            "files": {key: {"path": name, "sha256": _sha256(tmp / name)}
                      for key, name in files.items()},
        }
        (tmp / METADATA_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
        for f in tmp.iterdir():  # on disk before the folder is renamed into place
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
    return folder


def _member(folder: Path, key: str, entry) -> Path:
    """The file a ``files`` entry names, refused unless it stays inside the map folder."""
    if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)):
        raise MapError(f"{folder / METADATA_FILE}: file entry '{key}' must have a 'path' and a "
                       "'sha256'")
    rel = Path(entry["path"])
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise MapError(f"map file '{key}' path {entry['path']!r} leaves the map folder "
                       "(absolute or '..'); map files must be inside the folder")
    path = folder / rel
    if path.is_symlink():
        raise MapError(f"map file '{key}' ({entry['path']}) is a symbolic link; map files must "
                       "be regular files inside the folder")
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        raise MapError(f"map file '{key}' path {entry['path']!r} leaves the map folder") from None
    return path


def map_folder(path: str | Path) -> Path:
    """The map folder ``path`` names: the folder itself, or the folder of its ``map.yaml`` (as
    nav2's map server is given its map's YAML file)."""
    path = Path(path)
    return path.parent if path.name == METADATA_FILE and path.is_file() else path


def load_map(folder: str | Path) -> AirwayMap:
    """Load and validate a map folder; raise :class:`MapError` with the reason if it is broken.

    Checks: the folder and ``map.yaml`` exist and parse, the format version is supported, every
    listed file is a regular file inside the folder (no absolute path, ``..`` or symbolic link),
    exists and matches its recorded SHA-256, the tree has unique branch ids and satisfies the
    invariants of :meth:`AirwayTree.validate`, the nodules are valid, the mesh is a readable
    triangle mesh and the lung mask a readable image.

    ``folder`` may also name the folder's ``map.yaml`` (:func:`map_folder`).
    """
    folder = map_folder(folder)
    if not folder.is_dir():
        raise MapError(f"map folder not found: {folder}")
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        raise MapError(f"{folder} is not a map: {METADATA_FILE} is missing")
    try:
        meta = yaml.safe_load(meta_path.read_text())
    except yaml.YAMLError as exc:
        raise MapError(f"{meta_path} is not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise MapError(f"{meta_path} does not hold a mapping")
    if meta.get("format_version") != MAP_FORMAT_VERSION:
        raise MapError(f"map format version {meta.get('format_version')!r} is not supported "
                       f"(this BronchoNav reads version {MAP_FORMAT_VERSION})")
    files = meta.get("files") or {}
    if not isinstance(files, dict):
        raise MapError(f"{meta_path}: 'files' must be a mapping of name to {{path, sha256}}")
    for key in ("tree", "nodules", "mesh"):
        if key not in files:
            raise MapError(f"{meta_path} lists no '{key}' file")
    for key, entry in files.items():
        path = _member(folder, key, entry)
        if not path.is_file():
            raise MapError(f"map file missing: {path}")
        if _sha256(path) != entry.get("sha256"):
            raise MapError(f"map file {path} is corrupt or was edited (SHA-256 mismatch)")
    try:
        tree = tree_from_dict(json.loads((folder / files["tree"]["path"]).read_text()))
        nodules = nodules_from_list(json.loads((folder / files["nodules"]["path"]).read_text()))
    except json.JSONDecodeError as exc:
        raise MapError(f"map JSON file is not valid JSON: {exc}") from None
    vertices, triangles = _read_mesh(folder / files["mesh"]["path"])
    lung_mask = None
    if "lung_mask" in files:
        import SimpleITK as sitk

        try:
            lung_mask = sitk.ReadImage(str(folder / files["lung_mask"]["path"]))
        except RuntimeError:
            raise MapError(f"{files['lung_mask']['path']} is not a readable image") from None
    reserved = {"format_version", "name", "frame", "axis_convention", "units", "created_by",
                "summary", "files"}
    metadata = {k: v for k, v in meta.items() if k not in reserved}
    return AirwayMap(meta.get("name", folder.name), tree, nodules, vertices, triangles, metadata,
                     lung_mask)
