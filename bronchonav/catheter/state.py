"""The catheter state returned by :meth:`CatheterModel.step`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SNAP_THROUGH = "snap-through"
"""How the message of a state reached past a fold of the quasi-static path begins."""


@dataclass
class CatheterState:
    """Quasi-static equilibrium of the inserted catheter.

    Frame: ``frame`` is ``"ct"`` when the model has an airway tree (CT/LPS frame, metres), else
    ``"catheter_base"`` (origin at the insertion point, ``z`` along the insertion axis). Every
    vector below is in that frame; nodes run from the base (index 0) to the tip (index N-1).

    Attributes
    ----------
    positions : ndarray (N, 3)
        Backbone points (m).
    rotations : ndarray (N, 3, 3)
        Material frames (columns: body x, y, z axes; z is the backbone tangent when unsheared).
    tip_pose : ndarray (4, 4)
        Homogeneous pose of the tip (rotation of the last node, position of the last node).
    internal_force : ndarray (N, 3)
        Force the distal part of the backbone exerts on the proximal part (N), rod only (tendon
        tensions excluded), just proximal to each node.
    internal_moment : ndarray (N, 3)
        Internal moment of the backbone about the node (N·m), same convention.
    tendon_tensions : ndarray (T,)
        Tension of each tendon at the actuator (N) (with friction: at the proximal end of the
        span where it acts on the backbone; pretension included).
    tendon_displacements : ndarray (T,)
        Pull of each tendon at the actuator (m): shortening of its path along the bent backbone
        plus the compression of the un-inserted shaft plus the wire's elastic stretch.
    contact_forces : ndarray (N, 3)
        Wall contact force on each node (N).
    arc_length : ndarray (N,)
        Reference arc length of each node from the base (m).
    residual : float
        Max-norm of the scaled boundary-condition residual.
    iterations : int
        Solver iterations taken for this step.
    converged : bool
        Whether this step converged. When False the rest of the state is the previous valid one.
    solve_time_s : float
        Wall time of the step (s).
    insertion : float
        Inserted length (m).
    roll : float
        Roll about the base axis (rad).
    frame : str
        ``"ct"`` or ``"catheter_base"``.
    branch_ids : ndarray of int (N,) or None
        Airway branch each node is in (from contact tracking), ``None`` without a tree.
    message : str
        Why a step failed; on a converged state, how it was reached when not plainly (a
        snap-through past a fold, a re-synchronisation), else empty.
    tendon_distal_tensions : ndarray (T,) or None
        Tension of each tendon at its crimp (N); below ``tendon_tensions`` by the capstan factor
        while it slips being pulled, above while released.
    tendon_wrap_angles : ndarray (T,) or None
        Total angle each tendon wraps around its routing on the inserted part (rad) (computed
        only when the device has tendon friction).
    tendon_slip : ndarray (T,) or None
        +1 where the whole tendon slips being pulled (its distal tension is on the pulling
        envelope ``τ·exp(-μθ)``), -1 slipping being released, 0 (partly) stuck or no friction.
    tendon_tension_profile : ndarray (N, T) or None
        Each tendon's local tension at the nodes (N; with tendon friction only): the friction
        memory the next step starts from.
    sample_arc_length : ndarray (S,)
        Arc lengths of the requested outputs (``CatheterCommand.output_arc_lengths``) (m).
    sample_positions : ndarray (S, 3)
        Backbone points there (m).
    sample_rotations : ndarray (S, 3, 3)
        Material frames there.
    """

    positions: np.ndarray
    rotations: np.ndarray
    tip_pose: np.ndarray
    internal_force: np.ndarray
    internal_moment: np.ndarray
    tendon_tensions: np.ndarray
    tendon_displacements: np.ndarray
    contact_forces: np.ndarray
    arc_length: np.ndarray
    residual: float
    iterations: int
    converged: bool
    solve_time_s: float
    insertion: float
    roll: float
    frame: str
    branch_ids: np.ndarray | None = None
    message: str = ""
    evaluations: int = field(default=0)
    """Residual evaluations (shooting integrations) taken for this step."""
    tendon_distal_tensions: np.ndarray | None = None
    tendon_wrap_angles: np.ndarray | None = None
    tendon_slip: np.ndarray | None = None
    tendon_tension_profile: np.ndarray | None = None
    sample_arc_length: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sample_positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    sample_rotations: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 3)))

    @property
    def snapped_through(self) -> bool:
        """Whether this state was reached by a snap-through past a fold of the quasi-static
        path (:class:`~bronchonav.catheter.model.CatheterModel`)."""
        return self.message.startswith(SNAP_THROUGH)

    @property
    def tip_position(self) -> np.ndarray:
        """Tip position (m), shape (3,)."""
        return self.tip_pose[:3, 3].copy()

    @property
    def tip_direction(self) -> np.ndarray:
        """Unit tip axis (body z), shape (3,)."""
        return self.tip_pose[:3, 2].copy()

    @property
    def total_contact_force(self) -> float:
        """Sum of the contact force magnitudes (N)."""
        return float(np.linalg.norm(self.contact_forces, axis=1).sum())

    def to_dict(self) -> dict:
        """JSON-serialisable summary (positions, tip pose, tensions, contact, solver figures)."""
        return {
            "frame": self.frame, "insertion": self.insertion, "roll": self.roll,
            "positions": self.positions.tolist(), "tip_pose": self.tip_pose.tolist(),
            "arc_length": self.arc_length.tolist(),
            "tendon_tensions": self.tendon_tensions.tolist(),
            "tendon_displacements": self.tendon_displacements.tolist(),
            "contact_forces": self.contact_forces.tolist(),
            "total_contact_force": self.total_contact_force,
            "branch_ids": None if self.branch_ids is None else self.branch_ids.tolist(),
            "residual": self.residual, "iterations": self.iterations,
            "converged": self.converged, "solve_time_s": self.solve_time_s,
            "message": self.message,
            "tendon_distal_tensions": _list(self.tendon_distal_tensions),
            "tendon_slip": _list(self.tendon_slip),
            "sample_arc_length": self.sample_arc_length.tolist(),
            "sample_positions": self.sample_positions.tolist(),
        }


def _list(value):
    return None if value is None else np.asarray(value).tolist()
