"""Tuning of the navigation controller (SI units)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from bronchonav.errors import InputError


ZERO_ALLOWED = ("aim_steps", "max_retries", "pose_sigmas")
"""Fields that may be 0 (no aiming, no recovery, no allowance for the pose's error)."""


@dataclass(frozen=True)
class NavigationConfig:
    """Parameters of :class:`~bronchonav.navigation.NavigationController`.

    Attributes
    ----------
    step_m : float
        Insertion advance per control step when the tip is aimed along the route (m).
    control_period_s : float
        Simulated time one control step stands for (s): ``step_m / control_period_s`` is the
        insertion speed.
    lookahead_m : float
        The tip aims at the route point this far beyond its own projection on the route, or
        further along where that point lies nearer than this to the tip (m).
    steer_gain : float
        Fraction of the heading error the bend update corrects per step (0 < g <= 1).
    probe_tension_n : float
        Tension increment of the finite-difference probes of the tip's sensitivity (N).
    jacobian_reuse_steps : int
        The probed sensitivity is reused for at most this many steps...
    jacobian_reuse_m : float
        ...while the insertion moved less than this (m)...
    jacobian_reuse_rad : float
        ...and the aim direction in the tip frame turned less than this (rad).
    max_bend_step_n : float
        Largest change of the bend vector (tendon tension) per step (N).
    slow_angle_rad : float
        Heading error at which insertion slows to a quarter of ``step_m`` (rad).
    max_mismatch_m : float
        Follow-the-leader bound: the insertion may exceed the tip's progress along the route by
        at most this plus ``mismatch_per_m`` of the progress (m); beyond it the insertion holds
        (the shaft would buckle).
    mismatch_per_m : float
        Growth of the follow-the-leader bound per metre of progress (m/m): in curved airways the
        catheter lies along the outer walls and is a few per cent longer than the centerline.
    stall_steps : int
        Steps without ``progress_eps_m`` of progress that count as a stall.
    jam_refusals : int
        Commands in a row the catheter did not carry out (each retry smaller than the last, down
        to 1/16 of a step) after which it counts as jammed: while driving, as a stall (a
        recovery starts at once, instead of after ``stall_steps`` of the same refused
        command); while a recovery retracts, as the end of the retraction.
    progress_eps_m : float
        Progress along the route that resets the stall counter (m).
    model_jump_m : float
        A step of the controller's own model that moves its tip farther than this, while the
        observed tip stays with the model's tip before the step, is undone (m): the model went
        through a fold (a snap-through) that the catheter did not take, and steering on it
        would use the sensitivity of a shape the catheter does not have.
    resync_m : float
        Given an observed backbone (a shape sensor), a model backbone farther than this from it
        at any node (at equal arc length from the base) is re-synchronised with it (m): the
        model and the catheter have settled on different equilibria (one snapped through a fold
        of the quasi-static path, the other did not).
    off_route_m : float
        A tip farther than this from the route, in an airway not on the route, took a wrong
        branch (m).
    back_on_route_m : float
        A recovery ends when the tip is back within this distance of the route (m); a
        withdrawal too, unless the tip is back in an airway of the route first.
    pose_sigmas : float
        Where the observed tip pose has an error estimate (the controller's ``pose_sigma_m``,
        e.g. a registration's 1σ error at the target), ``off_route_m`` and ``back_on_route_m``
        are widened by this many σ: a registered tip that far off the route by the
        registration's error alone has not taken a wrong branch.
    retract_m : float
        Retraction of a recovery (m).
    max_retries : int
        Recoveries (stall or wrong branch) before giving up.
    goal_tolerance_m : float
        Driving ends when the tip is within this distance of the exit point (m).
    reach_tolerance_m : float
        The exit point counts as reached when the tip ends within this distance of it (m).
    aim_steps : int
        Most steps of the final articulation towards the lesion (0: no aiming).
    aim_tolerance_rad : float
        Aiming ends when the tip axis points within this angle of the lesion centre (rad)...
    aim_progress_rad : float
        ...or when the angle has not shrunk by this much (rad)...
    aim_patience_steps : int
        ...for this many steps: the tip has stopped turning (the airway wall or the tendon
        tension limit holds it).
    max_steps : int
        Control steps before the outcome is ``timeout``.
    """

    step_m: float = 1.0e-3
    control_period_s: float = 0.05
    lookahead_m: float = 8.0e-3
    steer_gain: float = 0.6
    probe_tension_n: float = 0.5
    jacobian_reuse_steps: int = 4
    jacobian_reuse_m: float = 3.0e-3
    jacobian_reuse_rad: float = 0.5
    max_bend_step_n: float = 0.75
    slow_angle_rad: float = 0.5
    max_mismatch_m: float = 6.0e-3
    mismatch_per_m: float = 0.06
    stall_steps: int = 25
    jam_refusals: int = 8
    progress_eps_m: float = 0.5e-3
    model_jump_m: float = 8.0e-3
    resync_m: float = 3.0e-3
    off_route_m: float = 5.0e-3
    back_on_route_m: float = 2.5e-3
    pose_sigmas: float = 3.0
    retract_m: float = 12.0e-3
    max_retries: int = 4
    goal_tolerance_m: float = 2.0e-3
    reach_tolerance_m: float = 5.0e-3
    aim_steps: int = 150
    aim_tolerance_rad: float = 0.05
    aim_progress_rad: float = 0.01
    aim_patience_steps: int = 10
    max_steps: int = 3000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    value == value and abs(value) != float("inf")):
                raise InputError(f"navigation {f.name} must be a finite number, got {value!r}")
            if value < 0 or (value == 0 and f.name not in ZERO_ALLOWED):
                raise InputError(f"navigation {f.name} must be positive, got {value!r}")
        if self.steer_gain > 1:
            raise InputError(f"navigation steer_gain must be at most 1, got {self.steer_gain}")

    @classmethod
    def from_dict(cls, values: dict) -> "NavigationConfig":
        """A config from a dict of field values (unknown keys are an error)."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"unknown navigation parameter(s): {', '.join(sorted(unknown))}")
        return cls(**values)

    def to_dict(self) -> dict:
        """The fields as a dict."""
        return asdict(self)
