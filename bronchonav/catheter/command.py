"""Catheter commands and their validation against the device limits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bronchonav.catheter.params import CatheterParams
from bronchonav.errors import CommandError


@dataclass
class CatheterCommand:
    """One set-point for the catheter robot.

    Give per-tendon tensions *or* displacements (or neither: all tendons slack).

    Attributes
    ----------
    insertion : float
        Inserted length beyond the base (m), in ``[0, limits.max_insertion]``.
    roll : float
        Rotation of the catheter about the base ``z`` axis (rad).
    tendon_tension : sequence of float or None
        Tension per tendon (N), in ``[0, limits.tension_max]``, in ``params.tendon_names`` order.
    tendon_displacement : sequence of float or None
        Pull per tendon (m, positive pulls the wire out at the actuator), within
        ``limits.displacement_min/max``; the model solves for the tensions (a wire that would need
        a negative tension goes slack).
    tip_force : sequence of 3 float
        External point force at the tip (N), in the model's output frame (CT if a tree is given,
        else ``catheter_base``).
    tip_moment : sequence of 3 float
        External point moment at the tip (N·m), same frame.
    distributed_force : sequence of 3 float
        Uniform external force per unit length along the inserted part (N/m), same frame (added to
        gravity).
    """

    insertion: float
    roll: float = 0.0
    tendon_tension: object = None
    tendon_displacement: object = None
    tip_force: object = field(default_factory=lambda: np.zeros(3))
    tip_moment: object = field(default_factory=lambda: np.zeros(3))
    distributed_force: object = field(default_factory=lambda: np.zeros(3))

    @property
    def mode(self) -> str:
        """``"displacement"`` if displacements are given, else ``"tension"``."""
        return "displacement" if self.tendon_displacement is not None else "tension"

    def to_dict(self) -> dict:
        """JSON-serialisable form (lists of floats, ``None`` kept)."""
        def conv(v):
            return None if v is None else np.asarray(v, dtype=float).tolist()
        return {"insertion": float(self.insertion), "roll": float(self.roll),
                "tendon_tension": conv(self.tendon_tension),
                "tendon_displacement": conv(self.tendon_displacement),
                "tip_force": conv(self.tip_force), "tip_moment": conv(self.tip_moment),
                "distributed_force": conv(self.distributed_force)}


@dataclass
class ValidCommand:
    """A command checked against the limits, as float arrays (internal)."""

    insertion: float
    roll: float
    tension: np.ndarray | None
    displacement: np.ndarray | None
    tip_force: np.ndarray
    tip_moment: np.ndarray
    distributed_force: np.ndarray


def _finite_scalar(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CommandError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise CommandError(f"{name} must be finite, got {v}")
    return v


def _finite_vector(name: str, value, n: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise CommandError(f"{name} must be {n} numbers, got {value!r}") from None
    if arr.shape != (n,):
        raise CommandError(f"{name} must have {n} entries, got {arr.size}")
    for k, v in enumerate(arr):
        if not np.isfinite(v):
            raise CommandError(f"{name}[{k}] must be finite, got {v}")
    return arr


def validate_command(cmd: CatheterCommand, params: CatheterParams) -> ValidCommand:
    """Check a command against the device limits.

    Raises
    ------
    CommandError
        Naming the offending field (e.g. ``tendon_tension[2]``) when a value is non-finite or
        outside its range, or when both tensions and displacements are given.
    """
    if not isinstance(cmd, CatheterCommand):
        raise CommandError(f"expected a CatheterCommand, got {type(cmd).__name__}")
    lim = params.limits
    ins = _finite_scalar("insertion", cmd.insertion)
    if ins < 0 or ins > lim.max_insertion:
        raise CommandError(f"insertion {ins} m is outside [0, {lim.max_insertion}] m")
    roll = _finite_scalar("roll", cmd.roll)
    n_t = len(params.tendons)
    if cmd.tendon_tension is not None and cmd.tendon_displacement is not None:
        raise CommandError("give tendon_tension or tendon_displacement, not both")
    tension = displacement = None
    if cmd.tendon_tension is not None:
        tension = _finite_vector("tendon_tension", cmd.tendon_tension, n_t)
        for k, t in enumerate(tension):
            if t < 0 or t > lim.tension_max:
                raise CommandError(f"tendon_tension[{k}] ({params.tendons[k].name}) = {t} N is "
                                   f"outside [0, {lim.tension_max:.3g}] N")
    if cmd.tendon_displacement is not None:
        displacement = _finite_vector("tendon_displacement", cmd.tendon_displacement, n_t)
        for k, d in enumerate(displacement):
            if d < lim.displacement_min[k] or d > lim.displacement_max[k]:
                raise CommandError(
                    f"tendon_displacement[{k}] ({params.tendons[k].name}) = {d} m is outside "
                    f"[{lim.displacement_min[k]}, {lim.displacement_max[k]}] m")
    if tension is None and displacement is None:
        tension = np.zeros(n_t)
    return ValidCommand(ins, roll, tension, displacement,
                        _finite_vector("tip_force", cmd.tip_force, 3),
                        _finite_vector("tip_moment", cmd.tip_moment, 3),
                        _finite_vector("distributed_force", cmd.distributed_force, 3))
