"""Catheter parameters: segments, tendons and device limits (SI units).

The catheter is described from its proximal end (at the robot) to its distal tip as a list of
:class:`Segment` objects, each with its own stiffness. Tendons (pull wires) are straight: they
run parallel to the backbone at a fixed offset in the cross-section (``catheter_body`` frame:
``z`` along the backbone, ``x``/``y`` in the cross-section) over a range of segments, from where
their coil sheath ends (``start_segment``, proximal anchor) to where they are crimped
(``end_segment``, distal termination). Inside the coil sheath the tendon load is carried by the
sheath and does not act on the backbone (Bowden-cable routing, as in real bronchoscopes), so a
pulled tendon bends only the segments it spans.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bronchonav.errors import InputError


@dataclass
class Segment:
    """One piece of the catheter along its length, with uniform cross-section properties.

    Attributes
    ----------
    name : str
        Label (``"shaft"``, ``"articulating"``...).
    length : float
        Reference (unstressed) length (m).
    EI : float
        Bending stiffness about both cross-section axes (N·m²).
    GJ : float
        Torsional stiffness (N·m²).
    EA : float
        Axial stiffness (N).
    GA : float
        Shear stiffness (N), both cross-section axes.
    mass_per_length : float
        Linear density (kg/m), used with gravity.
    precurvature : tuple of float
        Unstressed curvature ``(u_x, u_y, u_z)`` in the body frame (1/m); zero for a straight tube.
    """

    name: str
    length: float
    EI: float
    GJ: float
    EA: float
    GA: float
    mass_per_length: float = 0.0
    precurvature: tuple = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        for key in ("length", "EI", "GJ", "EA", "GA"):
            value = float(getattr(self, key))
            if not np.isfinite(value) or value <= 0:
                raise InputError(f"segment {self.name!r}: {key} must be finite and > 0, got {value}")
            setattr(self, key, value)
        self.mass_per_length = float(self.mass_per_length)
        if not np.isfinite(self.mass_per_length) or self.mass_per_length < 0:
            raise InputError(f"segment {self.name!r}: mass_per_length must be finite and >= 0")
        pc = np.asarray(self.precurvature, dtype=float).reshape(-1)
        if pc.shape != (3,) or not np.all(np.isfinite(pc)):
            raise InputError(f"segment {self.name!r}: precurvature must be 3 finite numbers (1/m)")
        self.precurvature = tuple(float(v) for v in pc)


@dataclass
class Tendon:
    """A straight pull wire at a fixed offset from the backbone.

    Attributes
    ----------
    name : str
        Label, used in commands and messages.
    offset : float
        Distance from the backbone axis (m).
    angle : float
        Angular position in the cross-section (rad), measured from the body ``x`` axis towards
        ``y``: the tendon runs at ``(offset·cos(angle), offset·sin(angle), 0)`` in the body frame.
        Pulling it bends the catheter towards that side.
    end_segment : int
        Index of the segment at whose distal end the tendon is crimped.
    start_segment : int
        Index of the segment at whose proximal end the tendon's coil sheath ends; proximal to it the
        tendon load does not act on the backbone.
    stiffness_EA : float
        Axial stiffness of the wire (N), for its elastic stretch in displacement control; the
        stretch of the whole wire (from the catheter's proximal end to the crimp) per newton is
        ``length / stiffness_EA``.
    wire_stiffness : float or None
        Stiffness of the whole wire (N/m) as a datasheet gives it; when set it replaces
        ``stiffness_EA`` (stretch ``1 / wire_stiffness`` per newton).
    friction : float
        Coulomb friction coefficient between the tendon and its routing where it acts on the
        backbone (capstan: tension falls as ``exp(-friction·θ)`` along the wrapped angle θ).
    pretension : float
        Tension (N) the wire carries at a zero tension command (added to the commanded tension).
    zero_offset : float
        Actuator pull (m) at a zero displacement command (added to the commanded displacement;
        negative: initial slack).
    """

    name: str
    offset: float
    angle: float
    end_segment: int
    start_segment: int = 0
    stiffness_EA: float = 6.0e3
    wire_stiffness: float | None = None
    friction: float = 0.0
    pretension: float = 0.0
    zero_offset: float = 0.0

    def __post_init__(self) -> None:
        for key in ("offset", "angle", "stiffness_EA", "friction", "pretension", "zero_offset"):
            value = float(getattr(self, key))
            if not np.isfinite(value):
                raise InputError(f"tendon {self.name!r}: {key} must be finite, got {value}")
            setattr(self, key, value)
        for key in ("offset", "friction", "pretension"):
            if getattr(self, key) < 0:
                raise InputError(f"tendon {self.name!r}: {key} must be >= 0")
        if self.stiffness_EA <= 0:
            raise InputError(f"tendon {self.name!r}: stiffness_EA must be > 0 (N)")
        if self.wire_stiffness is not None:
            self.wire_stiffness = float(self.wire_stiffness)
            if not (np.isfinite(self.wire_stiffness) and self.wire_stiffness > 0):
                raise InputError(f"tendon {self.name!r}: wire_stiffness must be finite and > 0 "
                                 f"(N/m)")
        self.start_segment, self.end_segment = int(self.start_segment), int(self.end_segment)

    @property
    def offset_body(self) -> np.ndarray:
        """Position in the cross-section, body frame (m), shape (3,)."""
        return np.array([self.offset * np.cos(self.angle), self.offset * np.sin(self.angle), 0.0])


@dataclass
class Limits:
    """Mechanical limits of the device.

    Attributes
    ----------
    max_insertion : float
        Largest insertion length (m), at most the catheter length.
    tension_max : float
        Largest tendon tension (N); tensions must lie in [0, tension_max].
    displacement_min, displacement_max : ndarray, shape (T,)
        Range of each tendon's pull (m); positive pulls the wire out at the actuator.
    """

    max_insertion: float
    tension_max: float
    displacement_min: np.ndarray
    displacement_max: np.ndarray

    def __post_init__(self) -> None:
        self.displacement_min = np.asarray(self.displacement_min, dtype=float).reshape(-1)
        self.displacement_max = np.asarray(self.displacement_max, dtype=float).reshape(-1)


@dataclass
class CatheterParams:
    """A tendon-driven catheter: segments from proximal to distal, tendons, limits.

    Attributes
    ----------
    segments : list of Segment
        Proximal (index 0) to distal.
    tendons : list of Tendon
    outer_diameter : float
        Outer diameter (m), used for wall contact.
    channel_diameter : float
        Working-channel diameter (m) (informative).
    limits : Limits

    Examples
    --------
    >>> p = CatheterParams.default()
    >>> round(p.outer_diameter * 1e3, 1), len(p.tendons), round(np.degrees(p.max_articulation))
    (3.5, 4, 180)
    """

    segments: list[Segment]
    tendons: list[Tendon]
    outer_diameter: float
    limits: Limits
    channel_diameter: float = 0.0
    articulation_segment: int = field(default=-1)
    """Index of the articulating segment (used for :attr:`max_articulation`); -1 is the last."""
    name: str = "catheter"
    """Device name (from the device file)."""
    base_pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    """Pose of ``catheter_base`` in the frame the device was measured in (4×4; calibration)."""

    def __post_init__(self) -> None:
        if not self.segments:
            raise InputError("a catheter needs at least one segment")
        self.outer_diameter = float(self.outer_diameter)
        if not (np.isfinite(self.outer_diameter) and self.outer_diameter > 0):
            raise InputError("outer_diameter must be finite and > 0 (m)")
        n_seg = len(self.segments)
        for t in self.tendons:
            if not (0 <= t.start_segment <= t.end_segment < n_seg):
                raise InputError(f"tendon {t.name!r}: need 0 <= start_segment <= end_segment < "
                                 f"{n_seg}, got {t.start_segment}, {t.end_segment}")
            if not (np.isfinite(t.offset) and t.offset >= 0 and np.isfinite(t.angle)):
                raise InputError(f"tendon {t.name!r}: offset must be finite and >= 0 (m)")
        self.base_pose = np.asarray(self.base_pose, dtype=float)
        if self.base_pose.shape != (4, 4) or not np.all(np.isfinite(self.base_pose)):
            raise InputError("base_pose must be a finite 4x4 transform")
        n_t = len(self.tendons)
        if self.limits.displacement_min.shape != (n_t,) or self.limits.displacement_max.shape != (n_t,):
            raise InputError(f"limits: displacement_min/max need one entry per tendon ({n_t})")
        if not (0 < self.limits.max_insertion <= self.length + 1e-12):
            raise InputError(f"limits.max_insertion must be in (0, length={self.length}] m")

    # -- derived quantities ---------------------------------------------------------------
    @property
    def length(self) -> float:
        """Total reference length (m)."""
        return float(sum(s.length for s in self.segments))

    @property
    def radius(self) -> float:
        """Outer radius (m)."""
        return 0.5 * self.outer_diameter

    @property
    def tendon_names(self) -> list[str]:
        """Tendon names in command order."""
        return [t.name for t in self.tendons]

    @property
    def max_articulation(self) -> float:
        """Bend angle of the articulating segment at the largest tension of one tendon (rad),
        from κ = τ·r/EI (small-extension limit)."""
        seg = self.segments[self.articulation_segment]
        idx = self.articulation_segment % len(self.segments)
        spanning = [t for t in self.tendons if t.start_segment <= idx <= t.end_segment]
        if not spanning:
            return 0.0
        r = max(t.offset for t in spanning)
        return float(self.limits.tension_max * r / seg.EI * seg.length)

    @property
    def min_bend_radius(self) -> float:
        """Smallest bend radius of the articulating segment (m): its length / max articulation."""
        art = self.max_articulation
        return float("inf") if art <= 0 else self.segments[self.articulation_segment].length / art

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def default(cls) -> "CatheterParams":
        """The shipped robotic bronchoscope, ``config/devices/bronchoscope_3p5.yaml``.

        3.5 mm outer diameter, 2.0 mm working channel, 0.6 m long: a 0.56 m passive shaft
        (EI 2e-3 N·m²) and a 40 mm soft articulating tip (EI 2.5e-4 N·m²) with four tendons at
        90° spacing, 1.4 mm from the axis, crimped at the tip and sheathed through the shaft.
        The tension limit (14 N) bends the tip through 180°, a 12.7 mm bend radius.
        """
        from bronchonav.catheter.device import default_device_path, load_device

        return load_device(default_device_path())

    @classmethod
    def from_file(cls, path) -> "CatheterParams":
        """Parameters from a device file (YAML, see :mod:`bronchonav.catheter.device`).

        Raises
        ------
        InputError
            Naming the file and the offending key when the file is missing or invalid.
        """
        from bronchonav.catheter.device import load_device

        return load_device(path)

    @classmethod
    def uniform_rod(cls, length: float, EI: float, GJ: float, EA: float, GA: float,
                    diameter: float = 1e-3, tendons: list[Tendon] | None = None,
                    tension_max: float = 1e3, mass_per_length: float = 0.0) -> "CatheterParams":
        """A single-segment rod (for validation against analytic solutions).

        Tendons, if given, must use segment index 0. Displacement limits are ±length.
        """
        seg = Segment("rod", length, EI=EI, GJ=GJ, EA=EA, GA=GA, mass_per_length=mass_per_length)
        tendons = list(tendons or [])
        n = len(tendons)
        limits = Limits(max_insertion=length, tension_max=tension_max,
                        displacement_min=np.full(n, -length), displacement_max=np.full(n, length))
        return cls([seg], tendons, outer_diameter=diameter, limits=limits, articulation_segment=0)
