"""Conversions between ROS 2 messages and BronchoNav's core types (numpy arrays, dataclasses).

Poses are 4×4 homogeneous matrices ``T_parent_child`` (metres); quaternions follow ROS order
(x, y, z, w), which is also SciPy's. Every function takes the frame id and stamp explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, Transform, TransformStamped, Vector3
from nav_msgs.msg import Path
from sensor_msgs.msg import JointState
from std_msgs.msg import (ColorRGBA, Float64MultiArray, Header, MultiArrayDimension,
                          MultiArrayLayout)
from visualization_msgs.msg import Marker

from bronchonav.errors import CommandError
from bronchonav.geometry import matrix_to_quat, quat_to_matrix, tangents, transport_frames


# -- poses and transforms -------------------------------------------------------------------------

def matrix_to_pose(T: np.ndarray) -> Pose:
    """A 4×4 homogeneous transform (m) as a ``geometry_msgs/Pose``."""
    T = np.asarray(T, dtype=float)
    q = matrix_to_quat(T[:3, :3])
    return Pose(position=Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """A ``geometry_msgs/Pose`` as a 4×4 homogeneous transform (m)."""
    T = np.eye(4)
    o = pose.orientation
    T[:3, :3] = quat_to_matrix([o.x, o.y, o.z, o.w])
    T[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return T


def pose_stamped(T: np.ndarray, frame_id: str, stamp: Time) -> PoseStamped:
    """A 4×4 pose in ``frame_id`` as a ``geometry_msgs/PoseStamped``."""
    return PoseStamped(header=Header(frame_id=frame_id, stamp=stamp), pose=matrix_to_pose(T))


def matrix_to_transform(T: np.ndarray, parent: str, child: str, stamp: Time) -> TransformStamped:
    """``T_parent_child`` (4×4, m) as a ``geometry_msgs/TransformStamped``."""
    p = matrix_to_pose(T)
    return TransformStamped(
        header=Header(frame_id=parent, stamp=stamp), child_frame_id=child,
        transform=Transform(translation=Vector3(x=p.position.x, y=p.position.y, z=p.position.z),
                            rotation=p.orientation))


def transform_to_matrix(t: Transform) -> np.ndarray:
    """A ``geometry_msgs/Transform`` as a 4×4 homogeneous matrix (m)."""
    r = t.rotation
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix([r.x, r.y, r.z, r.w])
    T[:3, 3] = [t.translation.x, t.translation.y, t.translation.z]
    return T


# -- paths ----------------------------------------------------------------------------------------

def path_message(points: np.ndarray, frame_id: str, stamp: Time,
                 rotations: np.ndarray | None = None) -> Path:
    """A polyline (N, 3) in metres as a ``nav_msgs/Path``.

    Orientations are the given (N, 3, 3) rotation matrices, or else frames whose z axis follows
    the polyline's tangent (the catheter convention: z along the backbone), parallel-transported
    (:func:`bronchonav.geometry.transport_frames`).
    """
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    if rotations is None:
        rotations = (transport_frames(tangents(points)) if len(points) > 1
                     else np.tile(np.eye(3), (len(points), 1, 1)))
    quats = matrix_to_quat(rotations) if len(points) else np.zeros((0, 4))
    header = Header(frame_id=frame_id, stamp=stamp)
    poses = [PoseStamped(header=header, pose=Pose(
        position=Point(x=p[0], y=p[1], z=p[2]),
        orientation=Quaternion(x=q[0], y=q[1], z=q[2], w=q[3])))
        for p, q in zip(points.tolist(), quats.tolist())]
    return Path(header=header, poses=poses)


def path_points(path: Path) -> np.ndarray:
    """The positions of a ``nav_msgs/Path`` as an (N, 3) array (m, in the path's frame)."""
    return np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z]
                     for p in path.poses], dtype=float).reshape(-1, 3)


# -- labelled arrays -------------------------------------------------------------------------------

def labelled_array(values: dict) -> Float64MultiArray:
    """A ``std_msgs/Float64MultiArray`` of ``values`` (name → number, in their order), the
    names comma-joined in the label of its one layout dimension."""
    names = list(values)
    layout = MultiArrayLayout(dim=[MultiArrayDimension(label=",".join(names), size=len(names),
                                                       stride=1)])
    return Float64MultiArray(layout=layout, data=[float(values[k]) for k in names])


def labelled_values(msg: Float64MultiArray) -> dict:
    """Name → number of a :func:`labelled_array` message (empty without a layout)."""
    names = msg.layout.dim[0].label.split(",") if msg.layout.dim else []
    return dict(zip(names, msg.data))


# -- markers --------------------------------------------------------------------------------------

def _color(rgba) -> ColorRGBA:
    r, g, b, a = (float(v) for v in rgba)
    return ColorRGBA(r=r, g=g, b=b, a=a)


def _points(array: np.ndarray) -> list[Point]:
    return [Point(x=x, y=y, z=z) for x, y, z in np.asarray(array, dtype=float).reshape(-1, 3).tolist()]


def tree_marker(tree, frame_id: str, stamp: Time, width: float = 1e-3) -> Marker:
    """The tree's centerlines as one ``LINE_LIST`` marker coloured by generation (viridis)."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    gmax = max(tree.max_generation, 1)
    pts, cols = [], []
    for b in tree:
        seg = np.repeat(b.points, 2, axis=0)[1:-1]
        pts.append(seg)
        cols.extend([_color(cmap(b.generation / gmax))] * len(seg))
    m = Marker(header=Header(frame_id=frame_id, stamp=stamp), ns="airway_tree", id=0,
               type=Marker.LINE_LIST, action=Marker.ADD)
    m.pose.orientation.w = 1.0
    m.scale.x = float(width)
    m.color = _color((1, 1, 1, 1))
    m.points = _points(np.vstack(pts))
    m.colors = cols
    return m


def mesh_marker(vertices: np.ndarray, triangles: np.ndarray, frame_id: str, stamp: Time,
                rgba=(0.85, 0.55, 0.5, 0.25)) -> Marker:
    """A triangle mesh (vertices in m) as a ``TRIANGLE_LIST`` marker."""
    m = Marker(header=Header(frame_id=frame_id, stamp=stamp), ns="lumen", id=0,
               type=Marker.TRIANGLE_LIST, action=Marker.ADD)
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = 1.0
    m.color = _color(rgba)
    m.points = _points(np.asarray(vertices)[np.asarray(triangles, dtype=np.int64).reshape(-1)])
    return m


def nodule_markers(nodules, frame_id: str, stamp: Time) -> list[Marker]:
    """One ``SPHERE`` (diameter = nodule diameter) and one text label per nodule."""
    out = []
    header = Header(frame_id=frame_id, stamp=stamp)
    for i, n in enumerate(nodules):
        s = Marker(header=header, ns="nodules", id=i, type=Marker.SPHERE, action=Marker.ADD)
        s.pose.position = Point(x=float(n.center[0]), y=float(n.center[1]), z=float(n.center[2]))
        s.pose.orientation.w = 1.0
        s.scale.x = s.scale.y = s.scale.z = 2.0 * n.radius
        s.color = _color((0.9, 0.2, 0.2, 0.8))
        t = Marker(header=header, ns="nodule_labels", id=i, type=Marker.TEXT_VIEW_FACING,
                   action=Marker.ADD, text=n.id)
        t.pose.position = Point(x=float(n.center[0]), y=float(n.center[1]),
                                z=float(n.center[2] + n.radius + 4e-3))
        t.pose.orientation.w = 1.0
        t.scale.z = 6e-3
        t.color = _color((1, 1, 1, 1))
        out += [s, t]
    return out


def polyline_marker(points: np.ndarray, frame_id: str, stamp: Time, ns: str, rgba,
                    width: float = 1.5e-3, marker_id: int = 0) -> Marker:
    """A polyline (m) as a ``LINE_STRIP`` marker."""
    m = Marker(header=Header(frame_id=frame_id, stamp=stamp), ns=ns, id=marker_id,
               type=Marker.LINE_STRIP, action=Marker.ADD)
    m.pose.orientation.w = 1.0
    m.scale.x = float(width)
    m.color = _color(rgba)
    m.points = _points(points)
    return m


def sphere_marker(center: np.ndarray, diameter: float, frame_id: str, stamp: Time, ns: str,
                  rgba, marker_id: int = 0) -> Marker:
    """A sphere of ``diameter`` (m) at ``center`` (m)."""
    m = Marker(header=Header(frame_id=frame_id, stamp=stamp), ns=ns, id=marker_id,
               type=Marker.SPHERE, action=Marker.ADD)
    m.pose.position = Point(x=float(center[0]), y=float(center[1]), z=float(center[2]))
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = float(diameter)
    m.color = _color(rgba)
    return m


# -- joint states and commands --------------------------------------------------------------------

def joint_state(names: list[str], positions, stamp: Time, efforts=None) -> JointState:
    """A ``sensor_msgs/JointState`` (positions in m or rad, efforts in N or N·m)."""
    msg = JointState(header=Header(stamp=stamp), name=list(names),
                     position=[float(v) for v in positions])
    if efforts is not None:
        msg.effort = [float(v) for v in efforts]
    return msg


@dataclass
class JointCommand:
    """What one command message sets; ``None`` = keep the value in force.

    Attributes
    ----------
    insertion : float or None
        Insertion (m).
    roll : float or None
        Roll (rad).
    displacements : list of float or None
        Tendon displacements (m), in tendon order.
    tensions : list of float or None
        Tendon tensions (N), in tendon order.
    """

    insertion: float | None = None
    roll: float | None = None
    displacements: list | None = None
    tensions: list | None = None


def _check_roll(roll: float, max_abs_roll: float) -> float:
    if abs(roll) > max_abs_roll:
        raise CommandError(f"roll {roll:.6g} rad is outside [-{max_abs_roll:.6g}, "
                           f"{max_abs_roll:.6g}] rad")
    return roll


def forward_command_values(data, n_tendons: int, max_abs_roll: float = np.pi) -> JointCommand:
    """Read a forward command ``[insertion m, roll rad, displacement_1 m, …]`` (sets all).

    Raises
    ------
    CommandError
        Wrong length, a non-finite value, or roll beyond ``±max_abs_roll`` (rad).
    """
    values = np.asarray(list(data), dtype=float)
    if values.shape != (2 + n_tendons,):
        raise CommandError(f"forward command needs {2 + n_tendons} values [insertion, roll, "
                           f"{n_tendons} tendon displacements], got {values.size}")
    if not np.all(np.isfinite(values)):
        raise CommandError(f"forward command has non-finite values: {values.tolist()}")
    return JointCommand(float(values[0]), _check_roll(float(values[1]), max_abs_roll),
                        values[2:].tolist(), None)


def joint_command_values(msg: JointState, tendon_names: list[str],
                         max_abs_roll: float = np.pi) -> JointCommand:
    """Read a ``JointState`` command strictly (the ros2_control convention: NaN = not set).

    Each named joint sets exactly one field: ``insertion`` (m) and ``roll`` (rad) a position;
    a tendon a position (displacement, m) or an effort (tension, N), all tendons the same one.
    ``position`` and ``effort`` are empty or as long as ``name``; a field a joint does not set
    is NaN (or the array is empty).

    Raises
    ------
    CommandError
        No names (the message sets nothing), duplicate or unknown names, array lengths that do
        not match the names, a joint with both or neither of position and effort, an effort for
        insertion or roll, an infinite value, mixed or partial tendon commands, roll beyond
        ``±max_abs_roll`` (rad).
    """
    names = list(msg.name)
    if not names:
        raise CommandError("joint command names no joint (it sets nothing)")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CommandError(f"joint command names {duplicates} more than once")
    known = ["insertion", "roll", *tendon_names]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CommandError(f"joint command: unknown joints {unknown} (known: {known})")
    arrays = {}
    for field_name in ("position", "effort"):
        values = np.asarray(list(getattr(msg, field_name)), dtype=float)
        if len(values) not in (0, len(names)):
            raise CommandError(f"joint command: {len(values)} {field_name} values for "
                               f"{len(names)} names (give one per name, NaN = not set)")
        if np.any(np.isinf(values)):
            raise CommandError(f"joint command: infinite {field_name} {values.tolist()}")
        arrays[field_name] = values if len(values) else np.full(len(names), np.nan)
    set_pos = ~np.isnan(arrays["position"])
    set_eff = ~np.isnan(arrays["effort"])
    for i, n in enumerate(names):
        if set_pos[i] and set_eff[i]:
            raise CommandError(f"joint command: {n} has both a position and an effort "
                               f"(set the other to NaN)")
        if not (set_pos[i] or set_eff[i]):
            raise CommandError(f"joint command: {n} is named but has neither a position nor "
                               f"an effort")
        if n in ("insertion", "roll") and set_eff[i]:
            raise CommandError(f"joint command: {n} is position-controlled; an effort was given")
    index = {n: i for i, n in enumerate(names)}
    out = JointCommand()
    if "insertion" in index:
        out.insertion = float(arrays["position"][index["insertion"]])
    if "roll" in index:
        out.roll = _check_roll(float(arrays["position"][index["roll"]]), max_abs_roll)
    tendons = [n for n in tendon_names if n in index]
    if tendons:
        if len(tendons) != len(tendon_names):
            raise CommandError(f"joint command: give all tendons {tendon_names} or none")
        by_effort = [bool(set_eff[index[n]]) for n in tendon_names]
        if all(by_effort):
            out.tensions = [float(arrays["effort"][index[n]]) for n in tendon_names]
        elif not any(by_effort):
            out.displacements = [float(arrays["position"][index[n]]) for n in tendon_names]
        else:
            raise CommandError("joint command: tendons must all be given by position "
                               "(displacement) or all by effort (tension)")
    return out


def stamp_seconds(stamp: Time) -> float:
    """A ``builtin_interfaces/Time`` in seconds."""
    return stamp.sec + 1e-9 * stamp.nanosec
