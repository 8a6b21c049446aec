"""The package's layers: nothing imports upward, and no modules import each other in a circle.

Data flows one way (CT → map → route → commands → catheter state → sensor samples →
registration); each layer may import only layers below it (and the base utilities). The check
reads the source with ``ast`` (nothing is imported), and counts every import, including the
lazy ones inside functions. A new package or module outside the table fails the test: add it to
``LAYERS`` where it belongs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1] / "bronchonav"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # (layer, module prefixes), lowest first. Layers on one line of the design are separate
    # entries with the same rank below (peers: they must not import each other).
    ("base", ("bronchonav", "bronchonav.errors", "bronchonav.fileio", "bronchonav.progress")),
    ("geometry", ("bronchonav.geometry",)),
    ("ct", ("bronchonav.ct",)),                      # reading scans, HU checks, voxel frames
    ("airway", ("bronchonav.airway",)),
    ("maps", ("bronchonav.maps",)),
    # Synthetic patients and the map-building pipeline sit above maps: the phantom builds an
    # airway tree, renders its CT and returns its ground-truth map; the pipeline turns a CT into
    # a map. Their files live in ct/ and airway/ today (a phantom/ package and maps/build.py
    # would make the package the layer again).
    ("build", ("bronchonav.ct.phantom", "bronchonav.ct.clinical", "bronchonav.ct.render",
               "bronchonav.ct.lungs", "bronchonav.airway.build")),
    ("planning", ("bronchonav.planning",)),
    ("catheter", ("bronchonav.catheter",)),
    ("navigation", ("bronchonav.navigation",)),
    ("imaging", ("bronchonav.imaging",)),            # rendering the tip camera's view
    ("sensors", ("bronchonav.sensors",)),
    ("registration", ("bronchonav.registration",)),
    ("calibration", ("bronchonav.calibration",)),
    ("scenarios", ("bronchonav.scenarios",)),       # rehearsal: navigation + sensors + registration
    ("viz", ("bronchonav.viz",)),
    ("campaign", ("bronchonav.campaign",)),
    ("ros", ("bronchonav.ros",)),
    ("cli", ("bronchonav.cli", "bronchonav.warmup")),
]
RANK = {"base": 0, "geometry": 1, "ct": 2, "airway": 3, "maps": 4, "build": 5,
        "planning": 6, "catheter": 6, "navigation": 7, "imaging": 8, "sensors": 9,
        "registration": 10, "calibration": 11, "scenarios": 11, "viz": 12, "campaign": 13, "ros": 13, "cli": 14}

ROS_MODULES = ("rclpy", "rcl_interfaces", "builtin_interfaces", "launch", "launch_ros",
               "ament_index_python")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path) -> bool:
    rel = root.parent / Path(*name.split("."))
    return rel.with_suffix(".py").is_file() or (rel / "__init__.py").is_file()


def imports(path: Path, root: Path) -> list[tuple[str, int, bool]]:
    """Every ``bronchonav`` module (and every other top-level package) ``path`` imports, with
    its line and whether the import is lazy (inside a function or class); ``from package import
    submodule`` counts as importing the submodule."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) not in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            subs = [f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}", root)]
            lazy = id(node) not in top_level
            out += [(s, node.lineno, lazy) for s in subs] or [(target, node.lineno, lazy)]
    return out


def layer_of(name: str) -> str | None:
    best, layer = -1, None
    for candidate, prefixes in LAYERS:
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best and p != "bronchonav":
                best, layer = len(p), candidate
    return layer if layer else ("base" if name == "bronchonav" else None)


def import_graph(root: Path = ROOT) -> nx.DiGraph:
    graph = nx.DiGraph()
    for path in sorted(root.rglob("*.py")):
        me = module_name(path, root)
        graph.add_node(me, path=path.relative_to(root.parent))
        for target, line, lazy in imports(path, root):
            graph.add_edge(me, target, line=line, lazy=lazy)
    return graph


def violations(graph: nx.DiGraph) -> list[str]:
    """Upward imports, imports between peers, unknown modules and ROS imports outside ros/."""
    found = []
    for src, dst, data in graph.edges(data=True):
        where = f"{graph.nodes[src]['path']}:{data['line']}"
        if not src.startswith("bronchonav"):
            continue
        top = dst.split(".")[0]
        if top in ROS_MODULES or top.endswith("_msgs") or top.endswith("_srvs"):
            if layer_of(src) != "ros":
                found.append(f"{where}: {src} imports {dst}: ROS belongs in bronchonav.ros only")
            continue
        if top != "bronchonav":
            continue
        a, b = layer_of(src), layer_of(dst)
        if a is None or b is None:
            found.append(f"{where}: {src if a is None else dst} is in no layer: add it to LAYERS")
        elif RANK[b] > RANK[a] or (RANK[b] == RANK[a] and a != b):
            found.append(f"{where}: {src} ({a}) imports {dst} ({b}), "
                         f"{'a peer' if RANK[a] == RANK[b] else 'a layer above'}")
    return found


def module_cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Cycles of modules. A lazy import between two modules of one package does not count (a
    class's factory method may import the module that reads its file format)."""
    def package(name: str) -> str:
        return name.rpartition(".")[0]

    inner = nx.DiGraph((a, b) for a, b, d in graph.edges(data=True)
                       if a.startswith("bronchonav") and b.startswith("bronchonav")
                       and not (d["lazy"] and package(a) == package(b)))
    return [sorted(c) for c in nx.strongly_connected_components(inner) if len(c) > 1]


def layer_cycles(graph: nx.DiGraph) -> list[list[str]]:
    layers = nx.DiGraph()
    for src, dst in graph.edges():
        a, b = layer_of(src), layer_of(dst)
        if a and b and a != b and dst.startswith("bronchonav"):
            layers.add_edge(a, b)
    return [sorted(c) for c in nx.strongly_connected_components(layers) if len(c) > 1]


def test_table_ranks_every_layer():
    assert [name for name, _ in LAYERS] == list(RANK)
    assert [RANK[name] for name, _ in LAYERS] == sorted(RANK.values())


def test_nothing_imports_upward():
    graph = import_graph()
    assert len(graph) > 100  # the whole package was read
    assert violations(graph) == []


def test_no_import_cycles():
    graph = import_graph()
    assert module_cycles(graph) == []
    assert layer_cycles(graph) == []


def test_the_check_sees_upward_lazy_and_cyclic_imports(tmp_path):
    """The checker itself: an upward lazy import, a ROS import in the core and a two-module
    cycle planted in a copy of a small tree are all reported."""
    pkg = tmp_path / "bronchonav"
    for sub in ("geometry", "registration", "airway"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "geometry" / "frames.py").write_text(
        "def f():\n    from bronchonav.registration import icp\n    import rclpy\n")
    (pkg / "registration" / "icp.py").write_text("from bronchonav.geometry import frames\n")
    (pkg / "airway" / "a.py").write_text("from . import b\n")
    (pkg / "airway" / "b.py").write_text("from bronchonav.airway import a\n")
    graph = import_graph(pkg)
    found = violations(graph)
    cycles = module_cycles(graph)
    assert any("geometry/frames.py:2" in v and "a layer above" in v for v in found), found
    assert any("geometry/frames.py:3" in v and "ROS" in v for v in found), found
    assert ["bronchonav.airway.a", "bronchonav.airway.b"] in cycles
    assert ["bronchonav.geometry.frames", "bronchonav.registration.icp"] in cycles


if __name__ == "__main__":  # list what is wrong, for fixing
    g = import_graph()
    print("\n".join(violations(g)) or "no upward imports")
    print(module_cycles(g), layer_cycles(g))
    pytest.main([__file__, "-q"])
