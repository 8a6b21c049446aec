"""ament_python package ``bronchonav``: a plain setuptools install that colcon also builds.

Data files (launch, urdf, config, maps) go under ``share/bronchonav/`` with the ament resource
marker, so ``ros2 launch bronchonav sim.launch.py`` finds them after ``colcon build``; the node
executables go to ``lib/bronchonav/`` (setup.cfg), where ``ros2 run`` looks. Use colcon for a
ROS 2 workspace: ``pip install .`` installs the library and the ``bronchonav`` command (and the
same executables) but is not a ROS 2 install layout.

``setup.py install`` (what colcon runs) ends by compiling the numba kernels into numba's cache
(:mod:`bronchonav.warmup`), so the first ``catheter_sim`` start does not; set
``BRONCHONAV_SKIP_WARMUP=1`` to skip it. Staged installs (``--root``, as when building a wheel)
skip it: the files are not yet where they will run.
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.install import install

PACKAGE = "bronchonav"
HERE = Path(__file__).parent


def data_tree(folder: str) -> list[tuple[str, list[str]]]:
    """(install dir, files) pairs for every file below ``folder``, keeping sub-folders."""
    entries: dict[str, list[str]] = {}
    for path in sorted((HERE / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(HERE)
            entries.setdefault(f"share/{PACKAGE}/{rel.parent}", []).append(str(rel))
    return list(entries.items())


ROS_REQUIRES = [
    "ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-std-msgs", "ros-geometry-msgs", "ros-nav-msgs",
    "ros-sensor-msgs", "ros-visualization-msgs", "ros-std-srvs", "ros-diagnostic-msgs",
    "ros-builtin-interfaces", "ros-rcl-interfaces", "ros-lifecycle-msgs", "ros-ament-index-python",
]

NODES = {
    "airway_map_server": "bronchonav.ros.node_main:airway_map_server",
    "catheter_sim": "bronchonav.ros.node_main:catheter_sim",
    "route_planner": "bronchonav.ros.node_main:route_planner",
    "registration": "bronchonav.ros.node_main:registration",
    "navigator": "bronchonav.ros.node_main:navigator",
    "tip_camera": "bronchonav.ros.node_main:tip_camera",
}
"""Console scripts (``ros2 run bronchonav NAME``): every node starts through
bronchonav.ros.node_main, which stops quietly on a signal while the node's module imports."""


class InstallAndWarmUp(install):
    """``install``, then ``python -m bronchonav.warmup`` against the installed package."""

    def run(self):
        super().run()
        if self.root or os.environ.get("BRONCHONAV_SKIP_WARMUP"):
            return
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (self.install_lib, os.environ.get("PYTHONPATH")) if p))
        result = subprocess.run([sys.executable, "-m", "bronchonav.warmup", "--map",
                                 str(HERE.resolve() / "maps" / "phantom_default")],
                                env=env, cwd=self.install_lib)  # imports the installed copy
        if result.returncode != 0:
            print("bronchonav: the numba warm-up failed (see above); the first catheter_sim "
                  "start will compile the kernels instead (tens of seconds)", file=sys.stderr)


setup(
    name=PACKAGE,
    cmdclass={"install": InstallAndWarmUp},
    version="0.1.0",
    description="Open-source digital twin for robotic bronchoscopy (airway maps, Cosserat "
                "catheter, route planning, registration, ROS 2 nodes)",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    data_files=[
        (f"share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *data_tree("launch"), *data_tree("urdf"), *data_tree("config"), *data_tree("maps"),
    ],
    install_requires=[
        "numpy>=1.26", "scipy>=1.11", "networkx>=3.1", "open3d>=0.18", "scikit-image>=0.22",
        "SimpleITK>=2.3", "nibabel>=5.0", "pydicom>=2.4", "edt>=2.4",
        "connected-components-3d>=3.12", "numba>=0.59", "pyyaml>=6.0", "matplotlib>=3.7",
        "plotly>=5.0", "pillow>=9", "yourdfpy>=0.0.56", "mcap>=1.1", "mcap-ros2-support>=0.5",
    ],
    extras_require={
        "ros": ROS_REQUIRES,
        "test": ["pytest>=7", "pytest-timeout>=2", "pyelastica>=0.3"],
        "campaign": ["ray>=2.9", "pyarrow>=14", "tqdm>=4", "threadpoolctl>=3.1"],
    },
    zip_safe=True,
    maintainer="BronchoNav developers",
    maintainer_email="maintainers@bronchonav.invalid",
    entry_points={
        "console_scripts": [
            "bronchonav = bronchonav.cli:run",
            *[f"{name} = {target}" for name, target in NODES.items()],
        ],
    },
)
