"""Command scripts: a YAML list of keyframes run through a :class:`CatheterModel`.

Format (all values SI; fields left out keep their previous value, starting from insertion 0,
roll 0 and all tensions 0)::

    n_nodes: 50                 # optional
    commands:
      - {insertion: 0.05, steps: 50}           # ramp linearly to this keyframe in 50 steps
      - {insertion: 0.10, tendon_tension: [3.0, 0, 0, 0], steps: 50}
      - {roll: 0.8, steps: 20}
      - {tendon_displacement: [0.002, 0, 0, 0], steps: 20}

``tendon_tension`` and ``tendon_displacement`` switch the control mode; ramps interpolate within
one mode (a mode switch jumps at the keyframe's first step). The state at the end of every keyframe
is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from bronchonav.catheter.command import CatheterCommand
from bronchonav.errors import InputError

FIELDS = {"insertion", "roll", "tendon_tension", "tendon_displacement", "tip_force", "tip_moment",
          "steps"}


@dataclass
class Keyframe:
    """A target command reached by a linear ramp of ``steps`` model steps."""

    command: CatheterCommand
    steps: int


def load_script(path: str | Path, n_tendons: int) -> tuple[list[Keyframe], dict]:
    """Read a command script; return its keyframes and its top-level options (``n_nodes``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"script {path} not found") from None
    except yaml.YAMLError as exc:
        raise InputError(f"script {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("commands"), list) \
            or not data["commands"]:
        raise InputError(f"script {path} needs a non-empty 'commands' list")
    cur = {"insertion": 0.0, "roll": 0.0, "tendon_tension": [0.0] * n_tendons,
           "tendon_displacement": None, "tip_force": [0.0] * 3, "tip_moment": [0.0] * 3}
    frames = []
    for k, entry in enumerate(data["commands"]):
        if not isinstance(entry, dict):
            raise InputError(f"script {path}: command {k} must be a mapping")
        unknown = set(entry) - FIELDS
        if unknown:
            raise InputError(f"script {path}: command {k} has unknown field(s) "
                             f"{sorted(unknown)} (known: {sorted(FIELDS)})")
        if "tendon_tension" in entry:
            cur["tendon_tension"], cur["tendon_displacement"] = entry["tendon_tension"], None
        if "tendon_displacement" in entry:
            cur["tendon_displacement"], cur["tendon_tension"] = entry["tendon_displacement"], None
        for key in ("insertion", "roll", "tip_force", "tip_moment"):
            if key in entry:
                cur[key] = entry[key]
        try:
            steps = int(entry.get("steps", 1))
        except (TypeError, ValueError):
            raise InputError(f"script {path}: command {k}: steps must be an integer") from None
        if steps < 1:
            raise InputError(f"script {path}: command {k}: steps must be >= 1")
        frames.append(Keyframe(CatheterCommand(**{k2: v for k2, v in cur.items()}), steps))
    options = {k: v for k, v in data.items() if k != "commands"}
    return frames, options


def _lerp(a, b, w):
    if a is None or b is None:
        return b
    return ((1 - w) * np.asarray(a, float) + w * np.asarray(b, float)).tolist()


def ramp(previous: CatheterCommand, target: CatheterCommand, steps: int):
    """The ``steps`` commands from just after ``previous`` to ``target`` (linear in each field)."""
    same_mode = previous.mode == target.mode
    for i in range(1, steps + 1):
        w = i / steps
        yield CatheterCommand(
            insertion=float(_lerp(previous.insertion, target.insertion, w)),
            roll=float(_lerp(previous.roll, target.roll, w)),
            tendon_tension=_lerp(previous.tendon_tension if same_mode else None,
                                 target.tendon_tension, w),
            tendon_displacement=_lerp(previous.tendon_displacement if same_mode else None,
                                      target.tendon_displacement, w),
            tip_force=_lerp(previous.tip_force, target.tip_force, w),
            tip_moment=_lerp(previous.tip_moment, target.tip_moment, w))
