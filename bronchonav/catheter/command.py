"""Catheter commands and their validation against the device limits."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

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
    point_loads : sequence of PointLoad
        Point forces and moments at any arc length of the inserted part (added to the tip loads).
    gravity : sequence of 3 float or None
        Gravitational acceleration for this step (m/s², output frame); ``None`` keeps the model's.
    output_arc_lengths : sequence of float
        Increasing arc lengths from the base (m, within the insertion) at which the state also
        reports positions and rotations (``CatheterState.sample_*``).
    """

    insertion: float
    roll: float = 0.0
    tendon_tension: object = None
    tendon_displacement: object = None
    tip_force: object = field(default_factory=lambda: np.zeros(3))
    tip_moment: object = field(default_factory=lambda: np.zeros(3))
    distributed_force: object = field(default_factory=lambda: np.zeros(3))
    point_loads: object = ()
    gravity: object = None
    output_arc_lengths: object = ()

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
                "distributed_force": conv(self.distributed_force),
                "point_loads": [p.to_dict() for p in self.point_loads],
                "gravity": conv(self.gravity),
                "output_arc_lengths": conv(self.output_arc_lengths)}


@dataclass
class PointLoad:
    """A point force and moment on the backbone at one arc length.

    Attributes
    ----------
    arc_length : float
        Reference arc length from the base (insertion point) (m), in ``[0, insertion]``; a load
        at 0 is carried by the base clamp.
    force : sequence of 3 float
        Force (N), in the model's output frame.
    moment : sequence of 3 float
        Moment (N·m), same frame.
    """

    arc_length: float
    force: object = field(default_factory=lambda: np.zeros(3))
    moment: object = field(default_factory=lambda: np.zeros(3))

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {"arc_length": float(self.arc_length),
                "force": np.asarray(self.force, float).tolist(),
                "moment": np.asarray(self.moment, float).tolist()}


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
    load_arc: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Point-load arc lengths (m), distinct, increasing."""
    load_force: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    """Point forces (N), one row per ``load_arc`` (coincident loads summed)."""
    load_moment: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    """Point moments (N·m), one row per ``load_arc``."""
    gravity: np.ndarray | None = None
    """Gravity for this step (m/s², output frame), or ``None`` for the model's."""
    output_arc_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Arc lengths (m) of the sampled outputs."""


def same_command(a: ValidCommand, b: ValidCommand) -> bool:
    """Whether two validated commands are identical, field by field (arrays exactly equal)."""
    for f in fields(ValidCommand):
        u, v = getattr(a, f.name), getattr(b, f.name)
        if u is None or v is None:
            if u is not v:
                return False
        elif not np.array_equal(u, v):
            return False
    return True


def interpolate_commands(a: ValidCommand, b: ValidCommand, w: float,
                         tension_a: np.ndarray | None = None,
                         displacement_a: np.ndarray | None = None) -> ValidCommand:
    """The command a fraction ``w`` (0..1) of the way from ``a`` to ``b`` (continuation).

    Tensions or displacements follow ``b``'s mode; ``tension_a`` / ``displacement_a`` (default
    zero) stand in for ``a``'s when ``a`` was given in the other mode. Point loads ramp from
    zero (``a``'s are dropped) to ``b``'s at ``b``'s arc lengths; gravity ramps from ``a``'s to
    ``b``'s; the sampled arc lengths are ``b``'s.
    """
    def lerp(u, v):
        return (1 - w) * u + w * v
    if b.displacement is not None:
        da = a.displacement if a.displacement is not None else displacement_a
        da = np.zeros_like(b.displacement) if da is None else da
        tension, disp = None, lerp(da, b.displacement)
    else:
        ta = a.tension if a.tension is not None else tension_a
        ta = np.zeros_like(b.tension) if ta is None else ta
        tension, disp = lerp(ta, b.tension), None
    gravity = None
    if b.gravity is not None or a.gravity is not None:
        ga = a.gravity if a.gravity is not None else np.zeros(3)
        gravity = lerp(ga, b.gravity if b.gravity is not None else np.zeros(3))
    return ValidCommand(lerp(a.insertion, b.insertion), lerp(a.roll, b.roll), tension, disp,
                        lerp(a.tip_force, b.tip_force), lerp(a.tip_moment, b.tip_moment),
                        lerp(a.distributed_force, b.distributed_force), b.load_arc.copy(),
                        w * b.load_force, w * b.load_moment, gravity,
                        b.output_arc_lengths.copy())


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
    loads: dict[float, np.ndarray] = {}
    for k, load in enumerate(cmd.point_loads or ()):
        if not isinstance(load, PointLoad):
            raise CommandError(f"point_loads[{k}] must be a PointLoad, got {type(load).__name__}")
        s = _finite_scalar(f"point_loads[{k}].arc_length", load.arc_length)
        if s < 0 or s > ins:
            raise CommandError(f"point_loads[{k}].arc_length {s} m is outside [0, {ins}] m "
                               f"(the inserted length)")
        fm = np.concatenate([_finite_vector(f"point_loads[{k}].force", load.force, 3),
                             _finite_vector(f"point_loads[{k}].moment", load.moment, 3)])
        loads[s] = loads.get(s, np.zeros(6)) + fm
    extra = {}
    if loads:
        arcs = np.array(sorted(loads), dtype=float)
        fm = np.array([loads[s] for s in arcs], dtype=float)
        extra.update(load_arc=arcs, load_force=fm[:, :3].copy(), load_moment=fm[:, 3:].copy())
    gravity = None if cmd.gravity is None else _finite_vector("gravity", cmd.gravity, 3)
    if cmd.output_arc_lengths is not None and len(cmd.output_arc_lengths):
        samples = _finite_vector("output_arc_lengths", cmd.output_arc_lengths,
                                 len(cmd.output_arc_lengths))
        if np.any(samples < 0) or np.any(samples > ins) or np.any(np.diff(samples) <= 0):
            raise CommandError(f"output_arc_lengths must increase within [0, {ins}] m")
        extra["output_arc_lengths"] = samples
    return ValidCommand(ins, roll, tension, displacement,
                        _finite_vector("tip_force", cmd.tip_force, 3),
                        _finite_vector("tip_moment", cmd.tip_moment, 3),
                        _finite_vector("distributed_force", cmd.distributed_force, 3),
                        gravity=gravity, **extra)
