"""The EM registration survey: the airways driven on the ground truth before registering.

A navigation system registers an EM sweep of the central airways to the map before it steers
on the sensor. The sweep here is a Y: the trachea and both main bronchi, the one on the other
side from the target first. A single path leaves the rotation about it undetermined.

Going on into the lobar bronchi (a longer lever arm for the rotation) was measured and not
kept: the catheter does not run on the centerlines round the turns into them, and the
centerline registration took that for misalignment (docs/navigation.md, "Tried and not kept:
a deeper survey").

A Y can still leave two poses fitting about as well — in one demo run of twenty a pose turned
173° about the sweep — and the registration then refuses as ambiguous and asks for more
airways. The survey then goes on along the route to the target, on the ground truth, and
registers again with every sample so far (:func:`survey_stops`): the lobar bronchus on one side
breaks the Y's symmetry. Only an ambiguous refusal is retried this way; a fit that does not match
the map is not mended by more of the same sweep.

The rehearsal (:func:`bronchonav.scenarios.rehearse`) and the ROS demo both take their survey
from :func:`survey_arm` and :func:`survey_stops`. Everything is in the CT frame (m).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bronchonav.geometry import Polyline

SURVEY_MARGIN_M = 5e-3
"""Each arm stops this far before the end of its main bronchus (m)."""

SURVEY_EXTENSION_M = 20e-3
"""After an ambiguous registration the survey goes this much further along the route (m)."""

MAX_SURVEY_EXTENSIONS = 2
"""How many times an ambiguous registration is retried further along the route."""

SURVEY_RESERVE_M = 20e-3
"""An extension stops at least this far before the route's exit point (m): the drive to the
target is what the registration is for."""


@dataclass(frozen=True)
class SurveyArm:
    """One arm of the survey: a centerline from the top of the trachea, CT frame (m).

    Attributes
    ----------
    points : ndarray, shape (N, 3)
        The arm's centerline, top of the trachea first.
    branch_ids : tuple of int
        Its airways, trachea first.
    """

    points: np.ndarray
    branch_ids: tuple

    @property
    def end(self) -> np.ndarray:
        """Where the arm ends, CT frame (m)."""
        return self.points[-1]

    @property
    def length(self) -> float:
        """Arc length from the top of the trachea to the end (m)."""
        return Polyline(self.points).length


def survey_arm(tree, target_ct, same_side: bool, margin_m: float = SURVEY_MARGIN_M) -> SurveyArm:
    """The trachea and the main bronchus on the side of ``target_ct`` (or the other one), to
    ``margin_m`` before its end but at least half way along it.

    Parameters
    ----------
    tree : AirwayTree
        The map's airways (CT frame).
    target_ct : array_like, shape (3,)
        The target (CT, m); it decides the side (:meth:`AirwayTree.main_bronchus`).
    same_side : bool
        The main bronchus on the target's side, or the other one.
    margin_m : float
        How far before the main bronchus's end the arm stops (m).
    """
    main = tree.main_bronchus(np.asarray(target_ct, dtype=float), same_side)
    line = Polyline(main.points)
    points = line.head(max(line.length - margin_m, 0.5 * line.length)).points
    return SurveyArm(np.vstack([tree.trachea.points, points[1:]]), (tree.trachea.id, main.id))


def survey_stops(route_length_m: float, arm: SurveyArm,
                 extension_m: float = SURVEY_EXTENSION_M,
                 max_extensions: int = MAX_SURVEY_EXTENSIONS,
                 reserve_m: float = SURVEY_RESERVE_M) -> tuple:
    """Arc lengths along the route to the target (m) at which to register, in order.

    The first is the end of the target-side arm ``arm`` (the route runs down the same trachea
    and main bronchus); each next one, tried only when the registration before it was refused
    as ambiguous, ``extension_m`` further, up to ``max_extensions`` of them, none closer than
    ``reserve_m`` to the route's end (``route_length_m``).

    >>> arm = SurveyArm(np.array([[0.0, 0, 0], [0, 0, 0.15]]), (0, 1))
    >>> [round(s, 3) for s in survey_stops(0.20, arm)]
    [0.15, 0.17]
    """
    stops = [arm.length]
    while len(stops) <= max_extensions and stops[-1] + extension_m <= route_length_m - reserve_m:
        stops.append(stops[-1] + extension_m)
    return tuple(stops)
