"""A simple tip-steering controller that follows a branch path while inserting.

Used by the ``bronchonav catheter --demo`` command and the contact benchmark to drive the catheter
down a chosen path of the airway tree; it is a stand-in for a real navigation controller, not part
of the mechanics. Each call looks ``lookahead`` metres ahead of the tip's projection on the path
centerline, expresses the direction to that point in the tip's body frame and integrates the
lateral error into a signed bend command per tendon pair (tendons assumed at 0°, 90°, 180°, 270°,
as in :meth:`CatheterParams.default`).
"""

from __future__ import annotations

import numpy as np

from bronchonav.airway.tree import AirwayTree, resample_polyline
from bronchonav.catheter.command import CatheterCommand
from bronchonav.catheter.params import CatheterParams
from bronchonav.catheter.state import CatheterState
from bronchonav.errors import InputError


class PathFollower:
    """Steer the tip along the centerline of ``branch_path`` (root → target), CT frame.

    Parameters
    ----------
    tree : AirwayTree
    branch_path : list of int
        Branch ids from the trachea to the target branch.
    params : CatheterParams
        Four tendons at 90° spacing are required.
    lookahead : float
        Distance ahead of the tip's projection on the path (m).
    gain : float
        Tension added per radian of lateral direction error per call (N/rad), for calls 0.5 mm
        of insertion apart or less; a longer insertion step scales it up in proportion, capped at
        80 % of the tension per radian that bends the articulating section (EI / (r L)), so a
        coarse command stream steers as quickly per millimetre as a fine one.
    """

    def __init__(self, tree: AirwayTree, branch_path: list[int], params: CatheterParams,
                 lookahead: float = 0.012, gain: float = 2.0) -> None:
        if len(params.tendons) != 4:
            raise InputError("the path follower needs four tendons at 90° spacing")
        for a, b in zip(branch_path[:-1], branch_path[1:]):
            if tree[b].parent != a:
                raise InputError(f"branch {b} is not a child of {a}: not a path")
        pts = [resample_polyline(tree[b].points, tree[b].radii, 5e-4)[0] for b in branch_path]
        self.path = np.vstack(pts)
        self.s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.path, axis=0),
                                                                 axis=1))])
        self.lookahead = float(lookahead)
        self.gain = float(gain)
        self.tension_max = params.limits.tension_max
        art = params.segments[params.articulation_segment]
        r = max(t.offset for t in params.tendons)
        self.max_gain = 0.8 * art.EI / (r * art.length)
        angles = np.array([t.angle for t in params.tendons])
        self._order = np.argsort(np.mod(angles, 2 * np.pi))  # tendons at 0, 90, 180, 270 deg
        self.bend = np.zeros(2)  # signed tension along body x and y (N)
        self._last_state = None

    @property
    def length(self) -> float:
        """Length of the path centerline (m)."""
        return float(self.s[-1])

    def command(self, state: CatheterState | None, insertion: float, roll: float = 0.0,
                ) -> CatheterCommand:
        """Next command: ``insertion`` (m) with tensions that turn the tip towards the path.

        The error is integrated once per new state: passing the same state again (e.g. the
        model's last valid state after a failed step) does not wind the bend command up.
        """
        if state is not None and state.insertion > 0 and state is not self._last_state:
            self._last_state = state
            tip = state.tip_pose[:3, 3]
            k = int(np.argmin(np.linalg.norm(self.path - tip, axis=1)))
            s_goal = min(self.s[k] + self.lookahead, self.s[-1])
            goal = np.array([np.interp(s_goal, self.s, self.path[:, i]) for i in range(3)])
            d = goal - tip
            n = np.linalg.norm(d)
            if n > 1e-9:
                d_body = state.tip_pose[:3, :3].T @ (d / n)
                gain = min(self.gain * max(abs(insertion - state.insertion) / 5e-4, 1.0),
                           max(self.max_gain, self.gain))
                self.bend += gain * np.arctan2(d_body[:2], max(d_body[2], 1e-3))
                self.bend = np.clip(self.bend, -self.tension_max, self.tension_max)
        t = np.zeros(4)
        bx, by = self.bend
        t[self._order[0]], t[self._order[2]] = max(bx, 0.0), max(-bx, 0.0)
        t[self._order[1]], t[self._order[3]] = max(by, 0.0), max(-by, 0.0)
        return CatheterCommand(insertion=float(insertion), roll=float(roll), tendon_tension=t)


def straight_path(tree: AirwayTree, catheter_radius: float, max_generation: int = 4,
                  margin: float = 4e-4) -> list[int]:
    """A branch path from the trachea: at each bifurcation the straightest child the catheter
    fits into (entrance radius > ``catheter_radius + margin``, m), down to ``max_generation``."""
    path = [tree.root]
    while tree[path[-1]].generation < max_generation:
        b = tree[path[-1]]
        fits = [c for c in b.children if tree[c].radii[0] > catheter_radius + margin]
        if not fits:
            break
        path.append(max(fits, key=lambda c: tree[c].direction @ b.direction))
    return path
