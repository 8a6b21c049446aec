"""package.xml lists what the code imports, with rosdep keys that resolve.

The imports are read from the source (AST, also imports inside functions), so a new third-party
import fails here until package.xml (and, for a key rosdistro lacks, rosdep/bronchonav.yaml)
names it.
"""

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

MODULE_KEYS = {
    "numpy": "python3-numpy", "scipy": "python3-scipy", "networkx": "python3-networkx",
    "yaml": "python3-yaml", "matplotlib": "python3-matplotlib",
    "mpl_toolkits": "python3-matplotlib", "PIL": "python3-pil", "skimage": "python3-skimage",
    "open3d": "python3-open3d-pip", "numba": "python3-numba-pip",
    "SimpleITK": "python3-simpleitk-pip", "edt": "python3-edt-pip", "cc3d": "python3-cc3d-pip",
    "plotly": "python3-plotly-pip", "mcap": "python3-mcap-pip",
    "nibabel": "python3-nibabel-pip", "pydicom": "python3-pydicom-pip",
    "mcap_ros2": "python3-mcap-ros2-support-pip", "yourdfpy": "python3-yourdfpy-pip",
    "pytest": "python3-pytest",
}
"""Import name → rosdep key, for Python packages."""

ROS_PACKAGES = {"rclpy", "rcl_interfaces", "lifecycle_msgs", "ament_index_python",
                "builtin_interfaces", "std_msgs", "std_srvs", "geometry_msgs", "nav_msgs",
                "sensor_msgs", "visualization_msgs", "diagnostic_msgs", "tf2_msgs", "launch",
                "launch_ros"}
"""ROS packages: import name = package name = rosdep key."""

IMPLIED = {"rclpy.lifecycle": "lifecycle_msgs"}
"""Imports that need another package at run time (rclpy.lifecycle imports lifecycle_msgs)."""

CAMPAIGN_ONLY = {"ray", "pyarrow", "tqdm", "threadpoolctl"}
"""The campaign extra (``pip install .[campaign]``), not needed by the ROS package."""

STARTED_BY_LAUNCH = {"robot_state_publisher", "rviz2"}
"""Run-time dependencies that are not imported: the launch files start them."""

UPSTREAM_PYTHON_KEYS = {"python3-numpy", "python3-scipy", "python3-networkx", "python3-yaml",
                        "python3-matplotlib", "python3-pil", "python3-skimage",
                        "python3-open3d-pip", "python3-pytest"}
"""Keys of ros/rosdistro rosdep/python.yaml (looked up there; the rest are ours)."""


def _imports(folder: str) -> dict[str, set[str]]:
    """Third-party module (top-level, and dotted for IMPLIED) → files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("bronchonav", "test", "machine") \
                        or top.startswith("test_") or (ROOT / folder / f"{top}.py").is_file():
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
                for dotted in IMPLIED:
                    if name == dotted or name.startswith(dotted + "."):
                        found.setdefault(dotted, set()).add(str(path.relative_to(ROOT)))
    return found


def _depends(*tags) -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for tag in tags for e in root.findall(tag)}


def _key(module: str) -> str:
    if module in IMPLIED:
        return IMPLIED[module]
    if module in ROS_PACKAGES:
        return module
    assert module in MODULE_KEYS, f"no rosdep key known for import {module!r}: add it here " \
                                  "and to package.xml"
    return MODULE_KEYS[module]


def test_every_runtime_import_is_an_exec_depend():
    exec_deps = _depends("exec_depend", "depend")
    for module, files in _imports("bronchonav").items():
        if module in CAMPAIGN_ONLY:
            assert all(f.startswith("bronchonav/campaign/") for f in files), (module, files)
            continue
        assert _key(module) in exec_deps, f"{module} (imported by {sorted(files)[0]}) needs " \
                                          f"<exec_depend>{_key(module)}</exec_depend>"


def test_every_test_import_is_a_dependency():
    deps = _depends("exec_depend", "depend", "test_depend")
    for module, files in _imports("test").items():
        if module not in CAMPAIGN_ONLY:
            assert _key(module) in deps, (module, sorted(files))


def test_no_exec_depend_is_unused():
    used = {_key(m) for m in _imports("bronchonav") if m not in CAMPAIGN_ONLY}
    launch_source = (ROOT / "bronchonav" / "ros" / "launch_spec.py").read_text()
    for package in STARTED_BY_LAUNCH:
        assert f'package="{package}"' in launch_source
    assert _depends("exec_depend") - used == STARTED_BY_LAUNCH


def test_every_key_resolves_upstream_or_in_the_project_rosdep_file():
    ours = yaml.safe_load((ROOT / "rosdep" / "bronchonav.yaml").read_text())
    setup = (ROOT / "setup.py").read_text()
    requirements = {re.split(r"[<>=\[]", r)[0].lower()
                    for r in re.findall(r'"([A-Za-z0-9_.\-]+(?:[<>=][^"]*)?)"', setup)}
    for key in _depends("exec_depend", "test_depend"):
        if not key.startswith("python3-"):
            assert key in ROS_PACKAGES | STARTED_BY_LAUNCH, key  # a ROS package
        elif key not in UPSTREAM_PYTHON_KEYS:
            assert key in ours, f"{key} is not a rosdistro key: define it in rosdep/bronchonav.yaml"
            for platform in ("debian", "ubuntu"):
                (package,) = ours[key][platform]["pip"]["packages"]
                assert package.lower() in requirements, f"{key}: {package} is not in setup.py"
    assert set(ours) <= _depends("exec_depend", "test_depend"), "unused keys in the rosdep file"
