"""Navigation figures of a campaign's rehearsals, from its results table alone.

One function, :func:`summarize_rehearsals`, computes every figure the campaign report and
``bench/navigation_bench.py`` show, for one pose the controller steered on (``truth`` or
``registered``) and optionally one catheter variant. It reads the ``plan`` and ``rehearse``
stage columns (:func:`bronchonav.campaign.builtin.rehearse_stage`).

Counting unit: a *route*, one per subject × nodule × catheter (cases that differ only by
registration scenario repeat the plan; the first row is used). A route is *rehearsed* for a pose
when its row has ``rehearse_P_reached``; it is *feasible* when the planner said so
(``plan_feasible``) and it was driven as planned (``rehearse_route == "planned"``). Infeasible
routes are driven along an unconstrained route; they fill the planner-versus-mechanics confusion
table only.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

POSES = ("truth", "registered")
"""What the controller steered on, in report order."""

OUTCOMES = ("reached", "stuck", "wrong_branch", "timeout", "registration_failed")
"""Navigation outcomes, in report order (``rehearse_P_outcome``)."""

MECHANICAL_REASONS = frozenset({"diameter", "bend", "curvature"})
"""Planner constraints about the catheter itself, which a rehearsal tests (``plan_reasons``)."""

BARS = {"reach_rate": 0.95, "agreement": 0.95, "failed_step_fraction": 0.01}
"""Acceptance bars of issue 12: reach rate and agreement at least, failed steps at most."""


@dataclass
class Confusion:
    """Planner verdict × rehearsal result over the rehearsed routes of one pose.

    Attributes
    ----------
    feasible_reached, feasible_not_reached : int
        Planner-feasible routes the rehearsal reached / did not reach.
    infeasible_reached, infeasible_not_reached : int
        Planner-infeasible targets, refused for the catheter's mechanics only (airway diameter,
        bend), whose unconstrained route the rehearsal reached / did not.
    untested : int
        Planner-infeasible targets refused (also) because the tool cannot reach the lesion from
        any airway point (``exit_distance``, ``tool_angle``, ``pleura``): the catheter reaching
        the end of an airway does not test that verdict, so they are left out of the agreement.
    """

    feasible_reached: int = 0
    feasible_not_reached: int = 0
    infeasible_reached: int = 0
    infeasible_not_reached: int = 0
    untested: int = 0

    @property
    def total(self) -> int:
        """Routes in the table (not the untested ones)."""
        return (self.feasible_reached + self.feasible_not_reached + self.infeasible_reached
                + self.infeasible_not_reached)

    @property
    def agreement(self) -> float:
        """Share of routes where the planner's verdict matches the rehearsal (NaN if none)."""
        agree = self.feasible_reached + self.infeasible_not_reached
        return agree / self.total if self.total else math.nan


@dataclass
class RehearsalSummary:
    """The navigation figures of one pose (and catheter, or all catheters).

    Attributes
    ----------
    pose : str
        ``"truth"`` or ``"registered"``.
    catheter : str or None
        Catheter variant name; None for all of them.
    routes : int
        Routes rehearsed (feasible and unconstrained).
    feasible : int
        Planner-feasible routes rehearsed as planned.
    reached : int
        Feasible routes whose exit point the rehearsal reached.
    reach_rate : float
        ``reached / feasible`` (NaN without feasible routes).
    tool_in_lesion : int
        Feasible routes where the tool, advanced from the final tip, ended in the lesion.
    tool_in_lesion_rate : float
        ``tool_in_lesion / feasible``.
    steps, failed_steps : int
        Plant steps, and those whose solve did not converge, summed over every rehearsed route.
    failed_step_fraction : float
        ``failed_steps / steps``.
    median_sim_time_s : float
        Median simulated time to target over the reached feasible routes (s).
    median_wall_s : float
        Median wall-clock time of one rehearsal over every rehearsed route (s; machine-dependent).
    median_tip_error_m : float
        Median true tip-to-exit distance at the end over feasible routes (m).
    median_tre_m : float
        Median registration error at the lesion over feasible routes (m; NaN on truth).
    outcomes : dict
        Outcome → feasible routes that ended so (every name of :data:`OUTCOMES`, zeros kept).
    confusion : Confusion
        Planner verdict × rehearsal result over every rehearsed route.
    not_rehearsed : int
        Routes of the table without a rehearsal for this pose (no airway path at all, or the
        pose was not run, or the case failed).
    """

    pose: str
    catheter: str | None
    routes: int
    feasible: int
    reached: int
    reach_rate: float
    tool_in_lesion: int
    tool_in_lesion_rate: float
    steps: int
    failed_steps: int
    failed_step_fraction: float
    median_sim_time_s: float
    median_wall_s: float
    median_tip_error_m: float
    median_tre_m: float
    outcomes: dict = field(default_factory=dict)
    confusion: Confusion = field(default_factory=Confusion)
    not_rehearsed: int = 0

    @property
    def agreement(self) -> float:
        """Planner–rehearsal agreement (:attr:`Confusion.agreement`)."""
        return self.confusion.agreement

    def bars(self) -> dict:
        """Each bar of :data:`BARS` → whether it is met (False when the figure is NaN)."""
        return {"reach_rate": bool(self.reach_rate >= BARS["reach_rate"]),
                "agreement": bool(self.agreement >= BARS["agreement"]),
                "failed_step_fraction": bool(self.failed_step_fraction
                                             <= BARS["failed_step_fraction"])}

    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN kept as NaN; the agreement included)."""
        d = asdict(self)
        d["confusion"]["agreement"] = self.agreement
        d["agreement"] = self.agreement
        return d


def routes(rows: list[dict]) -> list[dict]:
    """One row per subject × nodule × catheter among the rows with ``status == "ok"``."""
    plans: dict = {}
    for r in rows:
        if r.get("status") == "ok":
            plans.setdefault((r["subject"], r["nodule"], r["catheter"]), r)
    return list(plans.values())


def poses_in(rows: list[dict]) -> list[str]:
    """The poses (in :data:`POSES` order) the table has rehearsal columns for."""
    return [p for p in POSES if any(f"rehearse_{p}_reached" in r for r in rows)]


def summarize_rehearsals(rows: list[dict], pose: str,
                         catheter: str | None = None) -> RehearsalSummary:
    """The navigation figures of ``pose`` over a campaign's rows.

    Parameters
    ----------
    rows : list of dict
        Rows of the results table (:meth:`bronchonav.campaign.ResultStore.rows`).
    pose : {"truth", "registered"}
    catheter : str, optional
        Only this catheter variant's routes.
    """
    key = f"rehearse_{pose}_"
    plans = [r for r in routes(rows) if catheter is None or r["catheter"] == catheter]
    driven = [r for r in plans if _value(r.get(key + "reached")) is not None]
    feasible = [r for r in driven
                if r.get("plan_feasible") and r.get("rehearse_route") == "planned"]
    reached = [r for r in feasible if r[key + "reached"]]
    confusion = Confusion()
    for r in driven:
        reasons = {x for x in (r.get("plan_reasons") or "").split(",") if x}
        if not r.get("plan_feasible") and reasons - MECHANICAL_REASONS:
            confusion.untested += 1
            continue
        name = (("feasible" if r.get("plan_feasible") else "infeasible") + "_"
                + ("reached" if r[key + "reached"] else "not_reached"))
        setattr(confusion, name, getattr(confusion, name) + 1)
    steps = sum(int(_value(r.get(key + "steps")) or 0) for r in driven)
    failed = sum(int(_value(r.get(key + "failed_steps")) or 0) for r in driven)
    in_lesion = sum(1 for r in feasible if r.get(key + "tool_in_lesion"))
    counts = Counter(r.get(key + "outcome") for r in feasible)
    outcomes = {o: counts.pop(o, 0) for o in OUTCOMES}
    outcomes.update({str(o): n for o, n in counts.items()})  # an outcome this code does not know
    return RehearsalSummary(
        pose=pose, catheter=catheter, routes=len(driven), feasible=len(feasible),
        reached=len(reached), reach_rate=_ratio(len(reached), len(feasible)),
        tool_in_lesion=in_lesion, tool_in_lesion_rate=_ratio(in_lesion, len(feasible)),
        steps=steps, failed_steps=failed, failed_step_fraction=_ratio(failed, steps),
        median_sim_time_s=_median(r.get(key + "sim_time_s") for r in reached),
        median_wall_s=_median(r.get(key + "wall_s") for r in driven),
        median_tip_error_m=_median(r.get(key + "tip_error_m") for r in feasible),
        median_tre_m=_median(r.get(key + "tre_m") for r in feasible),
        outcomes=outcomes, confusion=confusion, not_rehearsed=len(plans) - len(driven))


def _value(v):
    """None for a missing cell (None or NaN), else the value."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _ratio(n: int, total: int) -> float:
    return n / total if total else math.nan


def _median(values) -> float:
    vals = [float(v) for v in values if _value(v) is not None]
    return float(np.median(vals)) if vals else math.nan
