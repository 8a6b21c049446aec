"""Device constraints a route must satisfy: catheter size and bending, tool reach and angle.

All lengths in metres, angles in radians. The defaults describe a robotic bronchoscope of the
Ion class (3.5 mm outer diameter, articulating tip) with a 30 mm biopsy needle; they are given
here as numbers so that planning does not depend on the catheter simulator.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from bronchonav.errors import InputError


@dataclass(frozen=True)
class DeviceConstraints:
    """Limits of the catheter and of the tool it carries.

    Attributes
    ----------
    outer_diameter : float
        Catheter outer diameter (m). Default 3.5 mm.
    diameter_margin : float
        Extra diameter the airway must have beyond the catheter (m): a point of the route is
        passable when ``2 * airway_radius >= outer_diameter + diameter_margin``. Default 0.5 mm.
    min_bend_radius : float
        Tightest radius the catheter can bend to (m). Default 12.7 mm (a 40 mm articulating tip
        bending 180°, as ``CatheterParams.default()``). Used with the corridor model
        of :func:`bronchonav.planning.cost.turn_deviation`: a turn by angle ``a`` needs a lateral
        room of ``min_bend_radius * (1 - cos(a / 2))`` which must not exceed the free width of the
        corridor (twice the clearance along a branch; parent plus child clearance at a bifurcation).
    max_articulation : float
        Largest bend the catheter can make at one bifurcation (rad): the angle between the parent
        and child airway directions. Default pi (180 degrees, an articulating tip).
    tool_max_length : float
        Longest straight tool path from the exit point to the lesion centre (m). Default 30 mm.
    tool_max_angle : float
        Largest angle between the tool path and the airway direction at the exit point (rad).
        Default 60 degrees.
    check_pleura : bool
        When the map has a lung mask, require the tool path to stay inside the lung (it may leave
        only through the airway it starts in, and must not cross into the other lung).
    check_tip_turn : bool
        Prefer exit points from which the tip can turn to point at the lesion: the tool angle
        within the largest angle the tip turns to in the lumen there
        (:func:`bronchonav.planning.cost.largest_tip_angle` with ``min_bend_radius``; the tool
        leaves along the tip's axis). Such exits rank before every other; where none lies within
        the tool's reach, the best exit within ``tool_max_angle`` is planned and its final aim
        falls short (the route's summary says so). Off for a tool that leaves the tip on a
        course of its own (a curved needle, a sheath steered beyond the tip).
    """

    outer_diameter: float = 3.5e-3
    diameter_margin: float = 0.5e-3
    min_bend_radius: float = 12.7e-3
    max_articulation: float = math.pi
    tool_max_length: float = 30.0e-3
    tool_max_angle: float = math.radians(60.0)
    check_pleura: bool = True
    check_tip_turn: bool = True

    def __post_init__(self) -> None:
        for name in ("outer_diameter", "min_bend_radius", "max_articulation", "tool_max_length",
                     "tool_max_angle"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"device constraint {name} must be a positive finite number, "
                                 f"got {value!r}")
        if not (math.isfinite(self.diameter_margin) and self.diameter_margin >= 0):
            raise InputError(f"device constraint diameter_margin must be >= 0, "
                             f"got {self.diameter_margin!r}")
        if self.tool_max_angle > math.pi:
            raise InputError("device constraint tool_max_angle must be at most pi rad")

    @property
    def catheter_radius(self) -> float:
        """Half the outer diameter (m)."""
        return 0.5 * self.outer_diameter

    @property
    def required_diameter(self) -> float:
        """Smallest airway diameter the catheter passes (m): outer diameter plus margin."""
        return self.outer_diameter + self.diameter_margin

    @property
    def min_clearance(self) -> float:
        """Smallest admissible clearance, airway radius minus catheter radius (m)."""
        return 0.5 * self.diameter_margin

    @classmethod
    def from_catheter(cls, params, **overrides) -> "DeviceConstraints":
        """Constraints from catheter parameters.

        Parameters
        ----------
        params : object
            Anything with ``outer_diameter`` (m), ``min_bend_radius`` (m) and
            ``max_articulation`` (rad) attributes, e.g.
            ``bronchonav.catheter.params.CatheterParams.default()``.
        **overrides
            Other fields of this class (tool limits, margin...).
        """
        values = {name: float(getattr(params, name))
                  for name in ("outer_diameter", "min_bend_radius", "max_articulation")}
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes) -> "DeviceConstraints":
        """A copy with some fields changed."""
        return DeviceConstraints(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        """The fields as a JSON-serialisable dict (SI units)."""
        return asdict(self)
