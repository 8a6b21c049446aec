"""The EM registration survey: the airways driven on the ground truth before registering.

A navigation system registers an EM sweep of the central airways to the map before it steers
on the sensor. The sweep here is a Y: the trachea and both main bronchi, the one on the other
side from the target first. A single path leaves the rotation about it undetermined.

Going on into the lobar bronchi (a longer lever arm for the rotation) was measured and not
kept: the catheter does not run on the centerlines round the turns into them, and the
centerline registration took that for misalignment (docs/navigation.md, "Tried and not kept:
a deeper survey").

The rehearsal (:func:`bronchonav.scenarios.rehearse`) and the ROS demo both take their survey
from :func:`survey_arm`. Everything is in the CT frame (m).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bronchonav.geometry import Polyline

SURVEY_MARGIN_M = 5e-3
"""Each arm stops this far before the end of its main bronchus (m)."""


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
    stop = max(line.length - margin_m, 0.5 * line.length)
    points = np.vstack([main.points[line.s < stop], line.point_at(stop)])
    return SurveyArm(np.vstack([tree.trachea.points, points[1:]]), (tree.trachea.id, main.id))
