"""Helpers for the campaign tests: a small hand-built map and cheap custom stages.

Ray workers import this module by name (the tests put ``test/`` on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from bronchonav.airway.tree import AirwayTree, Branch, Nodule
from bronchonav.maps import AirwayMap, save_map


def small_map(name: str = "toy", depth: int = 3) -> AirwayMap:
    """A symmetric tree (trachea along -z, each level splitting at ±30°), one nodule per leaf.

    CT frame, metres: trachea from (0, 0, 0) down to (0, 0, -0.1).
    """
    branches = [Branch(0, None, 0, [[0, 0, 0], [0, 0, -0.1]], [9e-3, 9e-3], name="trachea")]
    frontier = [(0, np.array([0.0, 0.0, -0.1]), np.array([0.0, 0.0, -1.0]), 0.06, 9e-3)]
    for gen in range(1, depth + 1):
        nxt = []
        for parent, start, direction, length, radius in frontier:
            for sign in (-1, 1):
                a = np.radians(30) * sign
                axis = [0, 1, 0] if gen % 2 else [1, 0, 0]
                c, s = np.cos(a), np.sin(a)
                k = np.array(axis, float)
                d = direction * c + np.cross(k, direction) * s + k * k.dot(direction) * (1 - c)
                end = start + length * d
                bid = len(branches)
                branches.append(Branch(bid, parent, gen, [start, end], [radius * 0.8] * 2,
                                       lobe="RUL" if sign < 0 else "LUL"))
                branches[parent].children.append(bid)
                nxt.append((bid, end, d, length * 0.8, radius * 0.8))
        frontier = nxt
    tree = AirwayTree(branches)
    nodules = [Nodule(f"N{i + 1}", end + 0.01 * d, 0.004 + 0.001 * i, "RUL")
               for i, (_, end, d, _, _) in enumerate(frontier)]
    return AirwayMap(name, tree, nodules)


def write_small_map(folder: Path, depth: int = 3) -> Path:
    """Save :func:`small_map` into ``folder``; return it."""
    return save_map(small_map(folder.name, depth), folder)


def burn(ctx, iterations: int = 20000) -> dict:
    """A CPU-bound, seeded stage: a random walk's statistics (deterministic per case)."""
    rng = ctx.rng("burn")
    x = 0.0
    steps = rng.normal(size=iterations)
    for s in steps:  # a Python loop: CPU-bound whatever the BLAS threads
        x = 0.99 * x + s
    return {"burn_value": float(x), "burn_mean": float(steps.mean()),
            "burn_nodule_z_m": float(ctx.nodule.center[2])}


def fail(ctx) -> dict:
    """A stage that raises."""
    raise ValueError("this stage always fails")


def misbehave(ctx) -> dict:
    """A stage that misbehaves on some nodules: N2 returns None, N3 calls ``sys.exit(3)``, N4
    returns a list as a cell; N1 returns a proper column."""
    if ctx.case.nodule_id == "N2":
        return None
    if ctx.case.nodule_id == "N3":
        sys.exit(3)
    if ctx.case.nodule_id == "N4":
        return {"misbehave_cells": [1, 2]}
    return {"misbehave_ok": True}


def steal_identity(ctx) -> dict:
    """A stage that tries to overwrite the case key."""
    return {"case_key": "someone-else"}


def crash_once(ctx) -> dict:
    """Kill the worker process the first time each case runs (marker file per case)."""
    marker_dir = Path(os.environ["CAMPAIGN_TEST_MARKERS"])
    marker = marker_dir / (ctx.case.key.replace("/", "__") + ".crashed")
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return {"crash_once_pid_differs": int(marker.read_text()) != os.getpid()}


_calls = {"interrupt_at": 0}


def interrupt_at(ctx) -> dict:
    """Raise KeyboardInterrupt (as Ctrl-C would) in the N-th case run by this process, where
    N is ``$CAMPAIGN_TEST_INTERRUPT`` (unset: never)."""
    _calls["interrupt_at"] += 1
    if _calls["interrupt_at"] == int(os.environ.get("CAMPAIGN_TEST_INTERRUPT", "0")):
        raise KeyboardInterrupt
    return {}
