"""Compile the numba kernels that the catheter simulator needs into numba's on-disk cache.

    python -m bronchonav.warmup

numba compiles each ``cache=True`` kernel on its first call and keeps the machine code beside
the source (``__pycache__/*.nbi``, ``*.nbc``; or under ``NUMBA_CACHE_DIR``). Without this step
the first ``catheter_sim`` start after an install spends tens of seconds compiling before its
first ``joint_states``. ``make install`` runs it, and so does ``setup.py install`` (what colcon
runs for an ament_python package) unless ``BRONCHONAV_SKIP_WARMUP=1``; after ``colcon build
--symlink-install`` or ``pip install`` run it once by hand.

It runs what the simulator runs at start: the catheter model on the default map (the solver's
warm-up commands: a tension, a tendon displacement, back to zero) and the URDF chain fit of the
resulting backbone.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WarmupReport:
    """What :func:`warm_up` did.

    Attributes
    ----------
    seconds : float
        Wall time of the warm-up (s): compile time on a fresh install, cache loads afterwards.
    steps : int
        Catheter model steps solved.
    """

    seconds: float
    steps: int


def warm_up(map_spec: str = "maps/phantom_default") -> WarmupReport:
    """Run the simulator's start-up computations once (see the module docstring)."""
    from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams
    from bronchonav.catheter import base_pose_from_tree
    from bronchonav.catheter.kinematics import chain_joint_angles
    from bronchonav.ros.resources import load_airway_map

    t0 = time.perf_counter()
    tree = load_airway_map(map_spec).tree
    model = CatheterModel(CatheterParams.default(), tree=tree, n_nodes=30, deadline_s=60.0)
    commands = [CatheterCommand(insertion=0.03, tendon_tension=[1.0, 0.0, 0.0, 0.0]),
                CatheterCommand(insertion=0.03, tendon_displacement=[5e-4, 0.0, -5e-4, 0.0]),
                CatheterCommand(insertion=0.0)]
    state = None
    for command in commands:
        state = model.step(command)
    T_ct_base = np.asarray(base_pose_from_tree(tree), dtype=float)
    chain_joint_angles(state.positions, T_ct_base, 0.03, 0.0, 70, 0.005)
    return WarmupReport(time.perf_counter() - t0, len(commands))


def main(argv: list[str] | None = None) -> None:
    """``python -m bronchonav.warmup [--map DIR]``: warm the cache and say how long it took."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", default="maps/phantom_default",
                        help="map folder or phantom:NAME to run the model in")
    report = warm_up(parser.parse_args(argv).map)
    print(f"bronchonav warm-up: numba kernels compiled or loaded in {report.seconds:.1f} s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
