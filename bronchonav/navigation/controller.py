"""The navigation controller: route + catheter model + observed tip pose → catheter commands.

One call of :meth:`NavigationController.update` is one control step:

1. **Observe**: project the observed tip (CT frame) on the route: progress ``s_tip`` and lateral
   distance; the airway it is in; the distance to the exit point.
2. **Steer with the model**: aim at the route point ``lookahead_m`` beyond ``s_tip``, or further
   along where that one lies nearer than ``lookahead_m`` to the tip (a route that turns back on
   itself); at the lesion centre in the final aiming phase. The heading error ``e`` lies in the
   tip frame's x, y plane: the direction of the aim point off the tip axis, times the angle
   between them (:func:`aim_error`). The sensitivity ``J`` (2×2) of that error to the bend
   vector ``b`` (tendon tension in the cross-section, N) comes from two probe solves of the
   controller's catheter model at its current state, along ``e`` and across it — in free space,
   in contact with the wall, wherever the model is — each probe's error taken in the frame of
   the tip it turned from (a twist of the tip about its own axis does not point it anywhere).
   ``J`` holds both ways a bend changes the error: the tip turns, and it moves sideways towards
   the aim point, which closes the angle too (a 40 mm articulating section moves its tip about
   20 mm per radian of turn, so towards a point 8 mm ahead the error changes 3.5 times as fast
   as the heading; a law that saw only the turn overshot every step and the tip swung from side
   to side at the control rate; for an aim more than 90° off the tip axis the sideways move
   points the wrong way, and the turn alone counts). The update is the damped Gauss–Newton step
   ``Δb = (JᵀJ + λI)⁻¹ Jᵀ (g e)``, bounded per step; tendon ``k`` at angle ``α_k`` pulls
   ``max(0, b · (cos α_k, sin α_k))``, so antagonists stay slack. A device whose tendons lie in
   one plane is rolled so that the error lies in its bending plane.
3. **Insert follow-the-leader**: advance ``step_m`` (a quarter of it while the heading error is
   large), but only while the insertion exceeds the tip's progress by less than
   ``max_mismatch_m`` (plus ``mismatch_per_m`` of the progress) — a shaft pushed further would
   buckle.
4. **Re-synchronise** (before observing, when the caller passes an observed backbone, e.g. a
   shape sensor's): where the model's backbone departs from it by more than ``resync_m``, the
   model is solved afresh from the observed shape (:meth:`CatheterModel.resync`) under the
   command the catheter holds; the model then steers from the catheter's equilibrium, not its
   own.
5. **Withdraw** (first): a tip that starts off the route, in an airway not on it (a new route
   after driving elsewhere, e.g. an EM survey of the other lung), is pulled back with the bend
   relaxed until it is back in an airway of the route or within ``back_on_route_m`` of it (or
   fully retracted), then drives. This is not a recovery and spends no retry. (On a pose with
   an error estimate, ``pose_sigma_m``, the off-route distances are widened by ``pose_sigmas``
   of it.)
6. **Recover**: no progress for ``stall_steps`` steps (a stall or buckling), a jam (the
   catheter did not carry out ``jam_refusals`` commands in a row), or the tip off the
   route in an airway not on it (a wrong branch): retract ``retract_m`` with half the bend,
   re-aim, retry; at most ``max_retries`` times, then end ``stuck`` or ``wrong_branch``.
7. **End**: within ``goal_tolerance_m`` of the exit point (or stalled within
   ``reach_tolerance_m`` of it), articulate towards the lesion (hold the insertion) until the
   tip axis points at it or stops turning (or the catheter does not carry out two aiming
   commands in a row), send the command of the best aim once more if the tip has turned away
   from it, and end ``reached``; ``timeout`` after ``max_steps``.
"""

from __future__ import annotations

import numpy as np

from bronchonav.catheter.command import CatheterCommand
from bronchonav.catheter.model import CatheterModel
from bronchonav.errors import InputError
from bronchonav.geometry.polyline import Polyline
from bronchonav.navigation.backbone_course import off_route_spans
from bronchonav.navigation.config import NavigationConfig
from bronchonav.navigation.outcome import NavigationOutcome
from bronchonav.navigation.route_target import RouteTarget

MIN_SCALE = 1.0 / 16
"""Smallest step-size factor after repeated commands the catheter did not carry out."""

RESYNC_COOLDOWN_STEPS = 10
"""Control steps after a re-synchronisation attempt before the next one (a failing attempt
costs a relaxation of the model; the deviation is looked at again after this many steps)."""

DAMPING = 1e-3
"""Levenberg damping of the bend update, relative to the largest singular value squared."""


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def aim_error(T_ct_tip: np.ndarray, aim_ct: np.ndarray, R_ct_ref: np.ndarray | None = None
              ) -> np.ndarray:
    """The heading error of a tip pose (4×4, CT) towards ``aim_ct`` (CT, m): the direction in
    which the aim point lies off the tip axis, times the angle between them (rad, 0 to π), as
    x, y components in the frame ``R_ct_ref`` (default: the tip's own). Its size grows with the
    angle all the way round (the sine would shrink again past 90°). Given a reference frame, a
    twist of the tip about its own axis does not change it (probes compare a turned tip in the
    frame of the tip they turned from)."""
    z = T_ct_tip[:3, 2]
    d = aim_ct - T_ct_tip[:3, 3]
    d = d / max(float(np.linalg.norm(d)), 1e-12)
    along = float(d @ z)
    perp = d - along * z
    side = float(np.linalg.norm(perp))
    if side < 1e-12:
        return np.zeros(2)
    R = T_ct_tip[:3, :3] if R_ct_ref is None else R_ct_ref
    return np.arctan2(side, along) * (R.T @ perp)[:2] / side


class NavigationController:
    """Drive a catheter along a route (see the module docstring).

    Parameters
    ----------
    target : RouteTarget
        The route (CT frame).
    model : CatheterModel
        The controller's model of the catheter, in the route's airway tree (``model.tree``).
        Probe solves (:meth:`CatheterModel.predict`) give the tip's sensitivity to the tendons.
    config : NavigationConfig
    steps_model : bool
        Step ``model`` with every command issued (default). Pass ``False`` when ``model`` is the
        plant itself and the caller steps it (an in-process rehearsal).
    pose_sigma_m : float
        1σ error (m) of the observed tip pose where it is known (a registered pose: the
        registration's estimate at the target), else 0 (the ground truth). Widens the off-route
        tests by ``config.pose_sigmas`` of it; may be changed between steps (attribute of the
        same name), e.g. once a registration succeeds.

    Examples
    --------
    >>> from bronchonav.catheter import CatheterParams
    >>> from bronchonav.airway.tree import AirwayTree, Branch
    >>> tree = AirwayTree([Branch(0, None, 0, [[0, 0, 0], [0, 0, -0.06]], [0.008, 0.008])])
    >>> model = CatheterModel(CatheterParams.default(), tree, n_nodes=20)
    >>> nav = NavigationController(RouteTarget.from_points(tree[0].points, [0]), model)
    >>> for _ in range(200):
    ...     command = nav.update(model.state.tip_pose)
    ...     if nav.outcome is not None:
    ...         break
    >>> nav.outcome.status
    'reached'
    """

    def __init__(self, target: RouteTarget, model: CatheterModel,
                 config: NavigationConfig | None = None, steps_model: bool = True,
                 pose_sigma_m: float = 0.0) -> None:
        if model.tree is None:
            raise InputError("the navigation controller needs a catheter model inside an "
                             "airway tree")
        self.target = target
        self.model = model
        self.config = config or NavigationConfig()
        self.steps_model = steps_model
        if not (np.isfinite(pose_sigma_m) and pose_sigma_m >= 0):
            raise InputError(f"pose_sigma_m must be a finite number >= 0, got {pose_sigma_m!r}")
        self.pose_sigma_m = float(pose_sigma_m)
        params = model.params
        angles = np.array([t.angle for t in params.tendons], dtype=float)
        if len(angles) == 0:
            raise InputError("the navigation controller needs a catheter with tendons")
        self._dirs = np.column_stack([np.cos(angles), np.sin(angles)])
        self._planar = bool(np.all(np.abs(np.sin(angles - angles[0])) < 1e-6))
        self.tension_max = float(params.limits.tension_max)
        self.max_insertion = float(params.limits.max_insertion)
        art = params.segments[params.articulation_segment]
        r = max(t.offset for t in params.tendons)
        self._free_gain = art.length * r / art.EI  # rad of tip rotation per N (κ = τr/EI)
        self._art_length = float(art.length)
        state = model.state
        self.insertion = 0.0 if state is None else float(state.insertion)
        self.roll = 0.0 if state is None else float(state.roll)
        self.bend = np.zeros(2) if state is None else np.linalg.lstsq(
            self._dirs, np.asarray(state.tendon_tensions, float), rcond=None)[0]
        self.phase = "drive"
        self.steps = 0
        self.retries = 0
        self.outcome: NavigationOutcome | None = None
        self.last_step = None  # the model's answer to the last command (steps_model only)
        self._good = (self.insertion, self.bend.copy(), self.roll)  # last command carried out
        self._scale = 1.0  # step-size factor, halved after a command the catheter did not take
        self.failed_steps = 0  # model steps that did not converge (steps_model only)
        self.model_vetoes = 0  # model steps undone because the observed tip did not follow
        self.not_carried_out = 0  # commands the catheter reported it did not carry out
        self.model_behind = 0  # commands the catheter carried out but the model did not solve
        self.model_resyncs = 0  # times the model was re-solved from an observed backbone
        self.resync_failures = 0  # ... and times no equilibrium was found from it
        self.backbone_deviation = float("nan")  # model to observed backbone, largest (m)
        self._resync_after = 0  # no re-synchronisation attempt before this step
        self._model_before = None  # the model's snapshot before its last step
        self.s_tip = 0.0
        self.lateral = 0.0
        self.tip_to_exit = float("nan")
        self.model_offset = float("nan")
        self.heading_error = 0.0
        self.branch_id: int | None = None
        self._best = -np.inf
        self._stalled = 0
        self._recover_to = 0.0
        self._recover_reason = ""
        self._recover_steps = 0
        self._aim_steps = 0
        self._refusals = 0  # commands in a row not carried out (afresh as a recovery starts/ends)
        self._aim_best = np.inf  # smallest heading error to the lesion while aiming (rad)
        self._aim_since_best = 0
        self._aim_best_command: tuple | None = None  # (insertion, bend, roll) of the best aim
        self._aim_back = False  # the best aim's command was sent again: the aim is over
        self._jacobian = None  # (u1, J, insertion, step, turn_only) of the last probe solves
        self._drive_end_error = float("nan")
        self._route_branches = set(target.branch_ids)
        if self.steps_model and state is None:
            model.step(self.command())

    # -- public ------------------------------------------------------------------------------
    def command(self) -> CatheterCommand:
        """The command in force: insertion (m), roll (rad), tendon tensions (N)."""
        return self._command(self.insertion, self.bend)

    def update(self, T_ct_tip: np.ndarray, accepted: bool = True,
               carried_out: bool | None = None,
               backbone_ct: np.ndarray | None = None) -> CatheterCommand:
        """One control step from the observed tip pose (4×4, CT frame); the next command.

        ``accepted=False`` says the catheter did not carry out the last command (its solve
        failed and it kept the previous state): the controller goes back to the last command that
        was carried out and moves on in half-size steps (growing back after successes). With
        ``steps_model`` the controller knows this from its own model.

        ``carried_out`` is the catheter's own report on the last command where it gives one
        (joint feedback, e.g. a simulator's or a robot's joint states), and it decides:
        ``False`` counts the command as not carried out, and with ``steps_model`` undoes the
        model's step, so that the model stays with the catheter instead of going on where the
        catheter did not; ``True`` keeps the command even where the model's step failed (the
        model keeps its last state, ``model_behind`` in the status), instead of taking back a
        command the catheter carried out.

        ``backbone_ct`` (N, 3; CT frame, m; base to tip) is the catheter's observed shape where
        a shape sensor gives one: with ``steps_model``, a model whose backbone departs from it
        by more than ``resync_m`` is re-solved from it (``model_resyncs`` in the status).
        """
        T = np.asarray(T_ct_tip, dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise InputError("the observed tip pose must be a finite 4x4 transform")
        if self.outcome is not None:
            return self.command()
        if self.steps_model and self.last_step is not None:
            before, self._model_before = self._model_before, None
            accepted = bool(self.last_step.converged)
            if accepted and carried_out is False:
                self._undo_model_step(before)
                self.not_carried_out += 1
                accepted = False
            elif accepted and self._model_contradicted(T, before):
                self._undo_model_step(before)
                self.model_vetoes += 1
                accepted = False
            elif not accepted and carried_out is True:
                # the catheter took the command its model could not solve (a fold the plant
                # passed on its own path): the command stands; the model kept its last state
                # and catches up on a later step
                self.model_behind += 1
                accepted = True
        elif carried_out is False and not self.steps_model:
            accepted = False
        self._refusals = 0 if accepted else self._refusals + 1
        if accepted:
            self._good = (self.insertion, self.bend.copy(), self.roll)
            self._scale = min(1.0, 2.0 * self._scale)
        else:
            self.insertion, bend, self.roll = self._good
            self.bend = bend.copy()
            self._scale = max(self._scale / 2.0, MIN_SCALE)
        self.steps += 1
        if backbone_ct is not None and self.steps_model:
            self._resync(np.asarray(backbone_ct, dtype=float))
        self._observe(T)
        if self.steps == 1 and self._off_route():
            self.phase = "withdraw"
        if self.steps > self.config.max_steps:
            self._finish("timeout", f"{self.config.max_steps} steps spent "
                         f"{self.tip_to_exit * 1e3:.1f} mm from the exit point")
        elif self.phase == "drive":
            self._drive(T)
        elif self.phase == "withdraw":
            self._withdraw(T)
        elif self.phase == "recover":
            self._recover(T)
        else:
            self._aim(T)
        command = self.command()
        if self.steps_model and self.outcome is None:
            self._model_before = self.model.snapshot()
            self.last_step = self.model.step(command)
            self.failed_steps += not self.last_step.converged
        return command

    def status(self) -> dict:
        """Progress as a JSON-serialisable dict (m, rad, N); ``model_offset_m`` is the distance
        from the observed tip to the tip of the controller's own model (how far the model the
        steering relies on has drifted from what the sensors see), ``model_vetoes`` how many
        steps of that model were undone because the observed tip did not follow them,
        ``not_carried_out`` how many commands the catheter reported it did not carry out,
        ``model_behind`` how many it carried out that the model could not solve,
        ``backbone_deviation_m`` how far the model's backbone was from an observed one and
        ``model_resyncs`` / ``resync_failures`` how often the model was (or could not be)
        re-solved from it."""
        return {"phase": "done" if self.outcome else self.phase, "steps": self.steps,
                "insertion_m": self.insertion, "roll_rad": self.roll,
                "s_tip_m": self.s_tip, "lateral_m": self.lateral,
                "tip_to_exit_m": None if not np.isfinite(self.tip_to_exit) else self.tip_to_exit,
                "route_length_m": self.target.length, "heading_error_rad": self.heading_error,
                "bend_n": self.bend.tolist(), "retries": self.retries,
                "model_vetoes": self.model_vetoes, "not_carried_out": self.not_carried_out,
                "model_behind": self.model_behind, "model_resyncs": self.model_resyncs,
                "resync_failures": self.resync_failures,
                "backbone_deviation_m": None if not np.isfinite(self.backbone_deviation)
                else self.backbone_deviation,
                "model_offset_m": None if not np.isfinite(self.model_offset)
                else self.model_offset,
                "branch_id": self.branch_id,
                "outcome": None if self.outcome is None else self.outcome.to_dict()}

    # -- phases ------------------------------------------------------------------------------
    def _model_contradicted(self, T: np.ndarray, before) -> bool:
        """Whether the model's last step (from the snapshot ``before``) moved the model's tip
        more than ``model_jump_m`` while the observed tip stayed with the model's tip before
        the step (nearer to it than to the new one by half the move): the model went through a
        fold the catheter did not take. (Where the model is the plant, as in a rehearsal, the
        observation follows every move.)"""
        state = self.model.state
        if before is None or before[0] is None or state is None:
            return False
        tip_before, tip_now = before[0].tip_position, state.tip_position
        moved = float(np.linalg.norm(tip_now - tip_before))
        if moved <= self.config.model_jump_m:
            return False
        p = T[:3, 3]
        return bool(np.linalg.norm(p - tip_now) > np.linalg.norm(p - tip_before) + 0.5 * moved)

    def _undo_model_step(self, before) -> None:
        """Put the model back to its snapshot ``before`` its last step (when there is one)."""
        if before is not None:
            self.model.restore(before)

    def _resync(self, observed_ct: np.ndarray) -> None:
        """Re-solve the model from the observed backbone (CT, m) under the command the catheter
        holds, where the model's backbone departs from it by more than ``resync_m`` (at equal
        arc length from the base, over the shorter of the two)."""
        state = self.model.state
        if state is None or state.insertion <= 0 or len(observed_ct) < 2:
            return
        observed = Polyline(observed_ct)
        arc = np.minimum(state.arc_length, observed.length)
        self.backbone_deviation = float(np.max(np.linalg.norm(
            state.positions - observed.point_at(arc), axis=1)))
        if self.backbone_deviation <= self.config.resync_m or self.steps < self._resync_after:
            return
        self._resync_after = self.steps + RESYNC_COOLDOWN_STEPS
        insertion, bend, roll = self._good
        result = self.model.resync(self._command(insertion, bend, roll), observed_ct)
        if result.converged:
            self.model_resyncs += 1
            self._jacobian = None  # the sensitivity was of the model's old shape
        else:
            self.resync_failures += 1

    def _observe(self, T: np.ndarray) -> None:
        p = T[:3, 3]
        proj = self.target.path.project(p)
        self.s_tip, self.lateral = proj.s, proj.distance
        self.tip_to_exit = float(np.linalg.norm(p - self.target.exit_point))
        state = self.model.state
        if state is not None:
            self.model_offset = float(np.linalg.norm(p - state.tip_position))
        self.branch_id = self.model.tree.nearest_branch(p)

    def _drive(self, T: np.ndarray) -> None:
        c = self.config
        at_end = self.s_tip >= self.target.length - c.progress_eps_m
        if self.tip_to_exit <= c.goal_tolerance_m or (
                at_end and self.tip_to_exit <= c.reach_tolerance_m):
            self._drive_end_error = self.tip_to_exit
            self.phase = "aim"
            self._aim(T)
            return
        off_route = self._off_route()
        if self.s_tip > self._best + c.progress_eps_m:
            self._best, self._stalled = self.s_tip, 0
        else:
            self._stalled += 1
        if off_route:
            self._start_recovery("wrong_branch")
            return
        if self._stalled >= c.stall_steps or self._jammed():
            if self.tip_to_exit <= c.reach_tolerance_m:  # as close as it gets, and close enough
                self._drive_end_error = self.tip_to_exit
                self.phase = "aim"
                self._aim(T)
                return
            self._start_recovery("stuck")
            return
        self._steer(T, self._route_aim(T))
        speed = float(np.clip(1.0 - self.heading_error / c.slow_angle_rad, 0.25, 1.0))
        slack = c.max_mismatch_m + c.mismatch_per_m * max(self.s_tip, 0.0)
        limit = min(self.max_insertion, self.target.length + slack, self.s_tip + slack)
        if self.insertion < limit:
            self.insertion = min(limit, self.insertion + speed * c.step_m * self._scale)

    def _route_aim(self, T: np.ndarray) -> np.ndarray:
        """The route point the tip aims at (CT, m): ``lookahead_m`` beyond the tip's progress
        along the route, or further along where that point lies nearer than ``lookahead_m`` to
        the tip — the first point from there on at that distance. Where the route turns back on
        itself (a side branch leaving at more than 90°) the point ``lookahead_m`` along it can
        lie a few millimetres from the tip, and then the tip's sideways move, not its turn,
        decides the direction to it: the steering swung the tip away from the side branch and
        back (the junction of ``bench/turn_bench.py`` at 135°)."""
        c, path = self.config, self.target.path
        return path.point_at(path.first_at_distance(T[:3, 3], c.lookahead_m,
                                                    self.s_tip + c.lookahead_m))

    def _off_route(self) -> bool:
        """The tip is farther than ``off_route_m`` (widened by the pose's error) from the
        route, in an airway not on it."""
        return self.lateral > self.config.off_route_m + self._pose_allowance() and \
            not self._in_route_airway()

    def _in_route_airway(self) -> bool:
        """The tip's airway is one of the route's (False for a route without airway ids)."""
        return bool(self._route_branches) and self.branch_id in self._route_branches

    def _back_on_route(self) -> bool:
        """The tip is within ``back_on_route_m`` (widened by the pose's error) of the route."""
        return self.lateral <= self.config.back_on_route_m + self._pose_allowance()

    def _jammed(self) -> bool:
        """The catheter did not carry out the last ``jam_refusals`` commands: repeating the
        smallest of them would only be refused again."""
        return self._refusals >= self.config.jam_refusals

    def _pose_allowance(self) -> float:
        """How far off the route the observed tip may be by the pose's error alone (m)."""
        return self.config.pose_sigmas * self.pose_sigma_m

    def _heading_allowance(self, T: np.ndarray, point: np.ndarray) -> float:
        """How far off the direction from the observed tip to ``point`` may be by the pose's
        error alone (rad): the position allowance (:meth:`_pose_allowance`) seen from the
        tip."""
        return float(np.arctan2(self._pose_allowance(), np.linalg.norm(point - T[:3, 3])))

    def _withdrawn(self) -> bool:
        """A withdrawal is over: the tip is back in an airway of the route (the off-route test
        no longer holds; in a wide airway such as the trachea the tip can lie against the wall
        far from the centerline all the way up) or within ``back_on_route_m`` of the route."""
        return self._back_on_route() or self._in_route_airway()

    def _withdraw(self, T: np.ndarray) -> None:
        c = self.config
        if self._withdrawn() or self.insertion <= 0.0:
            self._drive_on()
            self._drive(T)
            return
        self.bend *= 0.5
        self.insertion = max(0.0, self.insertion - 2.0 * c.step_m * self._scale)

    def _start_recovery(self, reason: str) -> None:
        c = self.config
        if self.retries >= c.max_retries:
            if reason != "stuck":
                what = f"tip {self.lateral * 1e3:.1f} mm off the route"
            elif self._jammed():
                what = f"the catheter carried out none of the last {self._refusals} commands"
            else:
                what = "no progress along the route"
            self._finish(reason, f"{what} after {self.retries} recoveries, "
                         f"{self.tip_to_exit * 1e3:.1f} mm from the exit point")
            return
        self.retries += 1
        self.phase = "recover"
        self._refusals = 0  # a retraction is a new command: its own refusals count
        self._recover_steps = 0
        self._recover_reason = reason
        self._recover_to = max(self.insertion - c.retract_m, 0.0)
        self.bend *= 0.5

    def _recover(self, T: np.ndarray) -> None:
        c = self.config
        self._recover_steps += 1
        if self._recover_steps > 4 * c.retract_m / c.step_m + c.stall_steps or self._jammed():
            # the catheter cannot back out as commanded: drive on (a stall or a jam ends it)
            self._drive_on()
            self._refusals = 0
            return
        self._steer(T, self._route_aim(T))
        if self.insertion > self._recover_to:
            self.insertion = max(self._recover_to, self.insertion - 2.0 * c.step_m)
            return
        if self._recover_reason == "stuck" or self._back_on_route() or self.insertion <= 0.0:
            self._drive_on()
        else:  # still off the route: keep backing out
            self._recover_to = max(self.insertion - c.step_m, 0.0)

    def _drive_on(self) -> None:
        """Back to driving with the stall count afresh, measured from the tip's progress now
        (the refusal count is the caller's: it starts afresh only where a recovery gives up)."""
        self.phase, self._stalled, self._best = "drive", 0, self.s_tip

    def _aim(self, T: np.ndarray) -> None:
        """Articulate towards the lesion (insertion held) until the tip axis points at it, the
        tip stops turning (``aim_patience_steps`` steps without ``aim_progress_rad`` of
        improvement: the wall or the tendon limit holds it; or the catheter did not carry out
        two aiming commands in a row, the second half the size), or ``aim_steps`` steps. Where
        the tip then points farther from the lesion than it did at its best, the command of
        that best aim is sent once more before the end (the tool leaves along the final tip's
        axis) — on a pose with an error estimate, only where it pointed better by more than
        that error can tell (:meth:`_heading_allowance`)."""
        c = self.config
        lesion = self.target.lesion_center
        if lesion is not None and c.aim_steps > 0 and not self._aim_back and \
                not (self._aim_steps and self._refusals >= 2):
            self._steer(T, lesion)
            self._aim_steps += 1
            if self.heading_error < self._aim_best - c.aim_progress_rad:
                self._aim_best, self._aim_since_best = self.heading_error, 0
                self._aim_best_command = self._good  # the command the observed tip holds
            else:
                self._aim_since_best += 1
            if self.heading_error > c.aim_tolerance_rad and self._aim_steps < c.aim_steps \
                    and self._aim_since_best < c.aim_patience_steps:
                return
        if not self._aim_back and self._aim_best_command is not None and \
                self.heading_error > self._aim_best + c.aim_progress_rad + \
                self._heading_allowance(T, lesion):
            self.insertion, bend, self.roll = self._aim_best_command
            self.bend = bend.copy()
            self._aim_back = True
            return
        self._finish("reached", f"tip {self._drive_end_error * 1e3:.1f} mm from the exit point")

    def _finish(self, status: str, reason: str) -> None:
        state = self.model.state
        tree = self.model.tree
        if state is not None and state.branch_ids is not None and state.insertion > 0:
            # the airway the model's contact tracking puts the tip in (the nearest centerline
            # sample can belong to the other child near a carina)
            self.branch_id = int(state.branch_ids[-1])
        generation = None if self.branch_id is None else int(tree[self.branch_id].generation)
        branch_name = "" if self.branch_id is None else f" in branch {self.branch_id} " \
                                                        f"(generation {generation})"
        force = 0.0 if state is None else float(state.total_contact_force)
        spans = []
        if status != "reached" and state is not None and state.branch_ids is not None:
            spans = off_route_spans(state.branch_ids, state.arc_length, tree,
                                    self._route_branches)
        lying = ("; the backbone lies off the route in " + ", ".join(map(str, spans))
                 if spans else "")
        self.outcome = NavigationOutcome(
            status=status,
            reason=f"{status}{branch_name}: {reason}; wall force {force:.2f} N{lying}",
            tip_to_exit_m=float(self._drive_end_error if status == "reached"
                                else self.tip_to_exit),
            branch_id=self.branch_id, generation=generation, wall_force_n=force,
            retries=self.retries, steps=self.steps,
            sim_time_s=self.steps * self.config.control_period_s, off_route=spans)

    # -- steering ----------------------------------------------------------------------------
    def _steer(self, T: np.ndarray, aim_ct: np.ndarray) -> None:
        """Update the bend (and roll) so that the tip turns towards ``aim_ct``."""
        c = self.config
        aim_ct = np.asarray(aim_ct, dtype=float)
        if float(np.linalg.norm(aim_ct - T[:3, 3])) < 1e-9:
            return
        e = aim_error(T, aim_ct)
        size = self.heading_error = float(np.linalg.norm(e))
        if size < 1e-6:
            return
        u1 = e / size
        if self._planar:
            self._roll_into_plane(u1)
        u2 = np.array([-u1[1], u1[0]])
        J = self._sensitivity(u1, u2, aim_ct, turn_only=size > np.pi / 2)
        JtJ = J.T @ J
        lam = DAMPING * max(float(np.max(np.linalg.eigvalsh(JtJ))), 1e-12)
        want = c.steer_gain * size * np.array([1.0, 0.0])  # in the (u1, u2) basis
        step = np.linalg.solve(JtJ + lam * np.eye(2), J.T @ want)
        delta = step[0] * u1 + step[1] * u2
        norm = float(np.linalg.norm(delta))
        max_step = c.max_bend_step_n * self._scale
        if norm > max_step:
            delta *= max_step / norm
        bend = self.bend + delta
        norm = float(np.linalg.norm(bend))
        if norm > self.tension_max:
            bend *= self.tension_max / norm
        self.bend = bend

    def _sensitivity(self, u1: np.ndarray, u2: np.ndarray, aim_ct: np.ndarray,
                     turn_only: bool = False) -> np.ndarray:
        """Reduction of the heading error towards ``aim_ct`` (CT, m; tip-frame x, y components,
        expressed in the (u1, u2) basis) per N of bend along u1 and u2, from probe solves of the
        model at its current state: the tip's turn and its sideways move, which turns the
        direction to the aim point, together (:func:`aim_error`, each probe's in the frame of
        the model's tip: a twist about the tip's axis would rotate a large error sideways and
        the step would follow that). Reused while the aim direction and the insertion change
        little (``jacobian_reuse_*``). Without a model state, or where a probe fails, the free
        articulating section's: its turn, and its tip moving half its length per radian of
        turn.

        ``turn_only`` (an aim more than 90° off the tip axis): the turn alone, towards the
        direction the aim lies in now. Behind the tip the sideways move turns the direction to
        the aim the other way: a tip moved towards an aim behind it sees it further behind, so
        with the move counted the step bent the tip away from the aim (a side branch leaving a
        straight airway at 150° was never entered: the tip swung into the opposite wall)."""
        state = self.model.state
        if state is None or state.insertion <= 0:
            return self._free_sensitivity(aim_ct, None, turn_only)
        c = self.config
        cached = self._jacobian
        if cached is not None and cached[4] == turn_only and \
                self.steps - cached[3] < c.jacobian_reuse_steps and \
                abs(state.insertion - cached[2]) < c.jacobian_reuse_m and \
                float(u1 @ cached[0]) > np.cos(c.jacobian_reuse_rad):
            # the cached J is in the cached basis: express it in the new one
            B_old = np.column_stack([cached[0], [-cached[0][1], cached[0][0]]])
            B_new = np.column_stack([u1, u2])
            R = B_new.T @ B_old
            return R @ cached[1] @ R.T
        free = self._free_sensitivity(aim_ct, state.tip_position, turn_only)
        R0 = state.tip_pose[:3, :3]
        towards = aim_ct - state.tip_position
        towards /= max(float(np.linalg.norm(towards)), 1e-12)

        def error(T):  # the aim point, or with turn_only a point that moves with the tip
            return aim_error(T, T[:3, 3] + towards if turn_only else aim_ct, R0)

        e0 = error(state.tip_pose)
        basis = np.column_stack([u1, u2])
        J = np.empty((2, 2))
        delta = self.config.probe_tension_n
        for k, u in enumerate((u1, u2)):
            probe = self.model.predict(self._command(state.insertion, self.bend + delta * u,
                                                     roll=state.roll))
            if not probe.converged:
                J[:, k] = free[:, k]
                continue
            J[:, k] = basis.T @ (e0 - error(probe.tip_pose)) / delta
        self._jacobian = (u1.copy(), J.copy(), float(state.insertion), self.steps, turn_only)
        return J

    def _free_sensitivity(self, aim_ct: np.ndarray, tip_ct: np.ndarray | None,
                          turn_only: bool = False) -> np.ndarray:
        """:meth:`_sensitivity` of the free articulating section (κ = τ r / EI over its length
        ``L``): a turn of ``θ`` moves its tip ``θ L / 2`` sideways, which turns the direction to
        an aim point ``d`` away by a further ``θ L / (2 d)`` (``d`` unknown: as if ``L``); the
        turn alone with ``turn_only``."""
        if turn_only:
            return self._free_gain * np.eye(2)
        distance = self._art_length if tip_ct is None else max(
            float(np.linalg.norm(aim_ct - tip_ct)), 1e-3)
        return self._free_gain * (1.0 + self._art_length / (2.0 * distance)) * np.eye(2)

    def _roll_into_plane(self, u: np.ndarray) -> None:
        """A planar device: roll (at most 0.1 rad per step) so that ``u`` lies in the plane."""
        plane = self._dirs[0]
        angle = _wrap(np.arctan2(u[1], u[0]) - np.arctan2(plane[1], plane[0]))
        if abs(angle) > np.pi / 2:  # bend with the opposite tendon instead
            angle = _wrap(angle - np.pi)
        self.roll = _wrap(self.roll + float(np.clip(angle, -0.1, 0.1)))

    def _command(self, insertion: float, bend: np.ndarray, roll: float | None = None
                 ) -> CatheterCommand:
        tension = np.clip(self._dirs @ bend, 0.0, self.tension_max)
        return CatheterCommand(insertion=float(np.clip(insertion, 0.0, self.max_insertion)),
                               roll=float(self.roll if roll is None else roll),
                               tendon_tension=tension.tolist())
