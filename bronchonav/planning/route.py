"""The planned route: a dataclass, its JSON and CSV forms, and poses for ``nav_msgs/Path``.

Every coordinate is in the CT frame (LPS, metres); lengths in metres, angles in radians.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

import numpy as np

from bronchonav.errors import InputError
from bronchonav.geometry import matrix_to_quat, transport_frames

ROUTE_FORMAT = "bronchonav-route"
ROUTE_FORMAT_VERSION = 1


@dataclass
class Reason:
    """Why a target cannot be reached: one violated constraint.

    Attributes
    ----------
    constraint : str
        ``"diameter"``, ``"bend"``, ``"curvature"``, ``"exit_distance"``, ``"tool_angle"`` or
        ``"pleura"``.
    message : str
        One sentence a planner can act on, with the numbers in mm/degrees.
    measured : float
        The measured value (m or rad, as the limit).
    limit : float
        The limit it violates (m or rad).
    excess : float
        By how much the limit is violated (m or rad, positive).
    unit : str
        ``"m"`` or ``"rad"``.
    branch_id : int or None
        The branch where the constraint fails, where it is a branch's constraint.
    nearest_reachable_point : list of float or None
        The reachable airway centerline point nearest to the lesion centre, CT frame (m).
    nearest_reachable_distance : float or None
        Its distance to the lesion centre (m).
    """

    constraint: str
    message: str
    measured: float
    limit: float
    excess: float
    unit: str = "m"
    branch_id: int | None = None
    nearest_reachable_point: list | None = None
    nearest_reachable_distance: float | None = None

    def __str__(self) -> str:
        return f"{self.constraint}: {self.message}"

    def to_dict(self) -> dict:
        """A JSON-serialisable dict."""
        return {"constraint": self.constraint, "message": self.message,
                "measured": float(self.measured), "limit": float(self.limit),
                "excess": float(self.excess), "unit": self.unit, "branch_id": self.branch_id,
                "nearest_reachable_point": self.nearest_reachable_point,
                "nearest_reachable_distance": self.nearest_reachable_distance}

    @classmethod
    def from_dict(cls, d: dict) -> "Reason":
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


@dataclass
class Route:
    """A route from the top of the trachea to an exit point, then a tool path to the lesion.

    A feasible route has ``feasible`` True and no reasons. An infeasible one has ``feasible``
    False, at least one :class:`Reason`, and no waypoints, branches or tool path.

    Attributes
    ----------
    target_id : str or None
        Nodule id, or None for a point target.
    target_center : ndarray, shape (3,)
        Lesion centre, CT frame (m).
    target_radius : float
        Lesion radius (m); 0 for a point target.
    feasible : bool
        Whether every constraint holds.
    reasons : list of Reason
        The violated constraints (empty when feasible).
    branch_ids, generations, lobes : list
        Branch sequence from the trachea to the exit branch, with each branch's generation and
        lobe (None above the lobar bronchi).
    waypoints : ndarray, shape (N, 3)
        Points along the centerlines from the top of the trachea to the exit point, CT frame (m).
    waypoint_branch : ndarray of int, shape (N,)
        Branch id of each waypoint.
    waypoint_radius : ndarray, shape (N,)
        Airway lumen radius at each waypoint (m).
    clearance : ndarray, shape (N,)
        Airway radius minus catheter radius at each waypoint (m).
    arclength : ndarray, shape (N,)
        Distance along the route from the top of the trachea (m).
    bifurcation_bends : ndarray, shape (len(branch_ids) - 1,)
        Bend between the parent and child airway directions at each bifurcation on the route (rad).
    length : float
        Route length from the top of the trachea to the exit point (m).
    exit_point : ndarray, shape (3,) or None
        Where the tool leaves the catheter, CT frame (m).
    exit_direction : ndarray, shape (3,) or None
        Unit airway direction (distal) at the exit point.
    tool_start, tool_end : ndarray, shape (3,) or None
        Tool path: the exit point and the lesion centre, CT frame (m).
    tool_length : float
        Tool path length, exit point to lesion centre (m) (= ``exit_distance_center``).
    tool_angle : float
        Angle between the tool path and the airway direction at the exit (rad).
    exit_distance_center, exit_distance_surface : float
        Distance from the exit point to the lesion centre and to its surface (m, >= 0).
    cost : float
        Route cost (see :mod:`bronchonav.planning.cost`), NaN when infeasible.
    rank : int
        0 for the best route, 1, 2, ... for the alternatives.
    planning_ms : float
        Wall time of the query that produced the route (ms).
    map_name : str
        Name of the map planned on.
    constraints : dict
        The device constraints used (SI units).
    """

    target_id: str | None
    target_center: np.ndarray
    target_radius: float = 0.0
    feasible: bool = False
    reasons: list[Reason] = field(default_factory=list)
    branch_ids: list[int] = field(default_factory=list)
    generations: list[int] = field(default_factory=list)
    lobes: list[str | None] = field(default_factory=list)
    waypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    waypoint_branch: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    waypoint_radius: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clearance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    arclength: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bifurcation_bends: np.ndarray = field(default_factory=lambda: np.zeros(0))
    length: float = float("nan")
    exit_point: np.ndarray | None = None
    exit_direction: np.ndarray | None = None
    tool_start: np.ndarray | None = None
    tool_end: np.ndarray | None = None
    tool_length: float = float("nan")
    tool_angle: float = float("nan")
    exit_distance_center: float = float("nan")
    exit_distance_surface: float = float("nan")
    cost: float = float("nan")
    rank: int = 0
    planning_ms: float = 0.0
    map_name: str = ""
    constraints: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.target_center = np.asarray(self.target_center, dtype=float).reshape(3)
        self.waypoints = np.asarray(self.waypoints, dtype=float).reshape(-1, 3)
        self.waypoint_branch = np.asarray(self.waypoint_branch, dtype=int).reshape(-1)
        for name in ("waypoint_radius", "clearance", "arclength", "bifurcation_bends"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=float).reshape(-1))
        for name in ("exit_point", "exit_direction", "tool_start", "tool_end"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=float).reshape(3))

    # -- summaries ---------------------------------------------------------------------------
    @property
    def exit_generation(self) -> int | None:
        """Generation of the exit branch (the number of bifurcations passed), None if infeasible."""
        return self.generations[-1] if self.generations else None

    @property
    def min_clearance(self) -> float:
        """Smallest clearance along the route (m); NaN without waypoints."""
        return float(self.clearance.min()) if self.clearance.size else float("nan")

    @property
    def max_bend(self) -> float:
        """Largest bifurcation bend on the route (rad); 0 for a route in the trachea only."""
        if not self.waypoints.size:
            return float("nan")
        return float(self.bifurcation_bends.max()) if self.bifurcation_bends.size else 0.0

    @property
    def tip_turn(self) -> float:
        """Largest angle off the airway the tip can turn to at the exit point (rad,
        :func:`~bronchonav.planning.cost.largest_tip_angle` of the clearance there); a
        ``tool_angle`` beyond it means the final aim falls short of the lesion's centre. NaN
        without waypoints or a minimum bend radius in ``constraints``."""
        from bronchonav.planning.cost import largest_tip_angle

        if not self.clearance.size or "min_bend_radius" not in self.constraints:
            return float("nan")
        return float(largest_tip_angle(self.clearance[-1], self.constraints["min_bend_radius"]))

    def summary(self) -> dict:
        """The short JSON form used by the CLI (SI units; ``waypoints`` as [[x, y, z], ...]).

        ``reasons`` holds one line per violated constraint (``"constraint: message"``),
        ``reason_details`` the same as dicts (see :meth:`Reason.to_dict`); ``generations`` is the
        exit branch's generation.
        """
        return {
            "nodule": self.target_id,
            "target_m": self.target_center.tolist(),
            "feasible": self.feasible,
            "rank": self.rank,
            "reasons": [str(r) for r in self.reasons],
            "reason_details": [r.to_dict() for r in self.reasons],
            "length_m": _num(self.length),
            "generations": self.exit_generation,
            "branches": list(self.branch_ids),
            "lobe": self.lobes[-1] if self.lobes else None,
            "exit_point_m": None if self.exit_point is None else self.exit_point.tolist(),
            "exit_distance_m": _num(self.exit_distance_center),
            "exit_distance_surface_m": _num(self.exit_distance_surface),
            "tool_angle_rad": _num(self.tool_angle),
            "tip_turn_rad": _num(self.tip_turn),
            "min_clearance_m": _num(self.min_clearance),
            "max_bend_rad": _num(self.max_bend),
            "cost": _num(self.cost),
            "waypoints": self.waypoints.tolist(),
            "ms": round(self.planning_ms, 3),
        }

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every field as a JSON-serialisable dict (lossless: floats keep full precision)."""
        def vec(v):
            return None if v is None else v.tolist()

        return {
            "format": ROUTE_FORMAT, "version": ROUTE_FORMAT_VERSION, "frame": "ct", "units": "m",
            "target_id": self.target_id, "target_center": self.target_center.tolist(),
            "target_radius": self.target_radius, "feasible": self.feasible,
            "reasons": [r.to_dict() for r in self.reasons],
            "branch_ids": [int(b) for b in self.branch_ids],
            "generations": [int(g) for g in self.generations], "lobes": list(self.lobes),
            "waypoints": self.waypoints.tolist(), "waypoint_branch": self.waypoint_branch.tolist(),
            "waypoint_radius": self.waypoint_radius.tolist(), "clearance": self.clearance.tolist(),
            "arclength": self.arclength.tolist(),
            "bifurcation_bends": self.bifurcation_bends.tolist(),
            "length": _num(self.length), "exit_point": vec(self.exit_point),
            "exit_direction": vec(self.exit_direction), "tool_start": vec(self.tool_start),
            "tool_end": vec(self.tool_end), "tool_length": _num(self.tool_length),
            "tool_angle": _num(self.tool_angle),
            "exit_distance_center": _num(self.exit_distance_center),
            "exit_distance_surface": _num(self.exit_distance_surface), "cost": _num(self.cost),
            "rank": self.rank, "planning_ms": self.planning_ms, "map_name": self.map_name,
            "constraints": dict(self.constraints),
        }

    def to_json(self, indent: int | None = None) -> str:
        """The route as a JSON string (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> "Route":
        """Inverse of :meth:`to_dict`; :class:`InputError` on a foreign or malformed record."""
        if not isinstance(d, dict) or d.get("format") != ROUTE_FORMAT:
            raise InputError(f"not a {ROUTE_FORMAT} record")
        if d.get("version") != ROUTE_FORMAT_VERSION:
            raise InputError(f"route format version {d.get('version')!r} is not supported")
        try:
            kwargs = {k: v for k, v in d.items() if k not in ("format", "version", "frame", "units")}
            kwargs["reasons"] = [Reason.from_dict(r) for r in d["reasons"]]
            for name in ("length", "tool_length", "tool_angle", "exit_distance_center",
                         "exit_distance_surface", "cost"):
                kwargs[name] = float("nan") if d[name] is None else float(d[name])
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed route record: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "Route":
        """Inverse of :meth:`to_json`."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InputError(f"route JSON is not valid JSON: {exc}") from None

    # -- CSV and poses ---------------------------------------------------------------------------
    def waypoints_csv(self) -> str:
        """The waypoints as CSV text, one row per waypoint (CT frame, SI units)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["index", "x_m", "y_m", "z_m", "branch_id", "generation", "lobe",
                         "radius_m", "clearance_m", "arclength_m"])
        gen = dict(zip(self.branch_ids, self.generations))
        lobe = dict(zip(self.branch_ids, self.lobes))
        for i, p in enumerate(self.waypoints):
            b = int(self.waypoint_branch[i])
            writer.writerow([i, repr(float(p[0])), repr(float(p[1])), repr(float(p[2])), b,
                             gen.get(b, ""), lobe.get(b) or "", repr(float(self.waypoint_radius[i])),
                             repr(float(self.clearance[i])), repr(float(self.arclength[i]))])
        return buf.getvalue()

    def write_csv(self, path) -> None:
        """Write :meth:`waypoints_csv` to ``path``."""
        with open(path, "w", newline="") as f:
            f.write(self.waypoints_csv())

    def to_path_poses(self, include_tool: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Positions and orientations for a ``nav_msgs/Path`` in the CT frame.

        Each pose's z axis points along the route (the direction of travel, as the catheter's
        backbone); the rotation about it is the minimal rotation from the previous pose
        (parallel transport, :func:`bronchonav.geometry.transport_frames`), starting from the
        rotation that takes +z to the first direction by the shortest arc.

        Parameters
        ----------
        include_tool : bool
            Append the lesion centre as a last pose, oriented along the tool path.

        Returns
        -------
        positions : ndarray, shape (N, 3)
            CT frame (m).
        quaternions : ndarray, shape (N, 4)
            Unit quaternions ``(x, y, z, w)`` (the ``geometry_msgs/Quaternion`` order).
        """
        pos = self.waypoints
        if include_tool and self.tool_end is not None:
            pos = np.vstack([pos, self.tool_end[None]])
        n = len(pos)
        if n == 0:
            return np.zeros((0, 3)), np.zeros((0, 4))
        directions = np.zeros((n, 3))
        if n > 1:
            d = np.diff(pos, axis=0)
            directions[:-1] = d
            directions[-1] = d[-1]
        elif self.exit_direction is not None:
            directions[0] = self.exit_direction
        return pos.copy(), matrix_to_quat(transport_frames(directions))


def _num(x: float) -> float | None:
    """A float for JSON, None for NaN."""
    x = float(x)
    return None if np.isnan(x) else x
