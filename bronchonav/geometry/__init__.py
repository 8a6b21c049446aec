"""Geometry shared by every layer: polylines, rotations and transforms, frames, capsules,
voxel grids, the lumen test and the catheter-fits predicate, tendon bending.

This package imports nothing else from ``bronchonav`` (it is the bottom layer). Coordinates are
in metres; the frame of a point is the frame of the polyline, grid or transform it is used with.
Modules: :mod:`~bronchonav.geometry.polyline`, :mod:`~bronchonav.geometry.rotations`,
:mod:`~bronchonav.geometry.transforms`, :mod:`~bronchonav.geometry.frames`,
:mod:`~bronchonav.geometry.capsule`, :mod:`~bronchonav.geometry.voxel`,
:mod:`~bronchonav.geometry.lumen`, :mod:`~bronchonav.geometry.bending`.
"""

from bronchonav.geometry.bending import tendon_curvature, tendon_tension
from bronchonav.geometry.capsule import capsule_distance, segment_distance
from bronchonav.geometry.frames import tangents, transport_frames
from bronchonav.geometry.lumen import catheter_fits, inside_tubes
from bronchonav.geometry.polyline import (Line, Polyline, Projection, Resampled, arc_length,
                                          fit_line, resample_polyline)
from bronchonav.geometry.rotations import (matrix_to_quat, perpendicular, quat_to_matrix,
                                           random_perpendicular, rotation_about, rotation_between,
                                           skew)
from bronchonav.geometry.transforms import apply, invert, make_transform, rotate, rotation_angle
from bronchonav.geometry.voxel import VoxelGrid

__all__ = ["Line", "Polyline", "Projection", "Resampled", "VoxelGrid", "apply", "arc_length",
           "capsule_distance", "catheter_fits", "fit_line", "inside_tubes", "invert",
           "make_transform", "matrix_to_quat", "perpendicular", "quat_to_matrix",
           "random_perpendicular", "resample_polyline", "rotate", "rotation_about",
           "rotation_angle", "rotation_between", "segment_distance", "skew", "tangents",
           "tendon_curvature", "tendon_tension", "transport_frames"]
