"""How a navigation ended."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

STATUSES = ("reached", "stuck", "wrong_branch", "timeout")


@dataclass
class NavigationOutcome:
    """The structured end of a navigation.

    Attributes
    ----------
    status : str
        ``"reached"`` (the tip ended within the reach tolerance of the exit point), ``"stuck"``
        (no progress after every recovery: stall or buckling), ``"wrong_branch"`` (still in an
        airway off the route after every recovery) or ``"timeout"`` (step budget spent).
    reason : str
        One sentence with the numbers (mm, N).
    tip_to_exit_m : float
        Distance from the observed tip to the exit point when driving ended (m).
    branch_id : int or None
        Airway the tip is in when it ended (the contact tracking of the controller's model).
    generation : int or None
        That airway's generation.
    wall_force_n : float
        Total wall contact force of the controller's model when it ended (N).
    retries : int
        Recoveries made (retract, re-aim, retry).
    steps : int
        Control steps taken.
    sim_time_s : float
        Simulated time (steps × control period, s).
    off_route : list of OffRouteSpan
        Where the backbone behind the tip lies in airways off the route when it ended (a shaft
        looped beside the route; :func:`bronchonav.navigation.backbone_course.off_route_spans`);
        empty when reached.
    """

    status: str
    reason: str
    tip_to_exit_m: float
    branch_id: int | None
    generation: int | None
    wall_force_n: float
    retries: int
    steps: int
    sim_time_s: float
    off_route: list = field(default_factory=list)

    @property
    def reached(self) -> bool:
        """Whether the exit point was reached."""
        return self.status == "reached"

    def to_dict(self) -> dict:
        """A JSON-serialisable dict."""
        return asdict(self)
