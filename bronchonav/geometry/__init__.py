"""Geometry shared by every layer: polylines, rotations and frames, capsules, lumen tests.

This package imports nothing else from ``bronchonav`` (it is the bottom layer). Coordinates are
in metres; the frame of a point is the frame of the polyline or transform it is used with.
"""

from bronchonav.geometry.polyline import Polyline, Projection

__all__ = ["Polyline", "Projection"]
