"""The catheter backbone as the joint angles of the URDF's chain of small links (the one chain
fit of the project; ``urdf/bronchoscope.urdf`` is generated with this convention and the tests
check it against the URDF parsed by yourdfpy).

URDF convention (see :mod:`bronchonav.ros.urdf_gen`, which writes the URDF)
----------------------------------------------------
- ``base``: fixed at the entry point (top of the trachea), z along the insertion axis (pointing
  into the patient); its pose in the CT frame is the catheter model's ``base_pose_ct``.
- ``insertion`` (prismatic along z): ``insertion_carriage`` sits at ``z = q - L`` where ``q`` is
  the insertion (m) and ``L = n_links * link_length`` the length of catheter the chain shows, so
  the chain's distal end is ``q`` past the entry point.
- ``roll`` (revolute about z): ``insertion_carriage`` → ``catheter_base``.
- link ``i`` (``i = 0 … n-1``): joint ``link_i_pitch`` (revolute about x) then ``link_i_yaw``
  (revolute about y) at the link's proximal end, both with origin at ``z = link_length`` of the
  previous link (``z = 0`` of ``catheter_base`` for link 0); frames ``link_i_pitch_frame`` →
  ``link_i``; then ``catheter_tip`` fixed at ``z = link_length`` of the last link.
  ``R_link_i = R_parent · Rx(pitch_i) · Ry(yaw_i)``; a link's z axis points distally.

The chain's proximal part lies straight along the insertion axis behind the entry point; the
part past the entry follows the simulated backbone. Joint angles are fitted so that every link
origin lies exactly on the backbone polyline (chords of length ``link_length``), so forward
kinematics reproduces the backbone to within the sagitta of one link.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _chord_walk(curve: np.ndarray, n_links: int, h: float) -> np.ndarray:
    """Points ``q_0 = curve[0]``, ``q_1``, … on the polyline with ``|q_{i+1} - q_i| = h``.

    Walks forward along the polyline; beyond its end, continues straight along the last
    segment's direction.
    """
    out = np.empty((n_links + 1, 3))
    out[0] = curve[0]
    seg = 0
    m = curve.shape[0]
    for i in range(n_links):
        c = out[i]
        found = False
        while seg < m - 1:
            a = curve[seg]
            b = curve[seg + 1]
            d = b - a
            dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
            if dd < 1e-24:
                seg += 1
                continue
            f = a - c
            # |a + t d - c|^2 = h^2, largest root t in [0, 1]
            bq = 2.0 * (f[0] * d[0] + f[1] * d[1] + f[2] * d[2])
            cq = f[0] * f[0] + f[1] * f[1] + f[2] * f[2] - h * h
            disc = bq * bq - 4.0 * dd * cq
            if disc >= 0.0:
                t = (-bq + np.sqrt(disc)) / (2.0 * dd)
                if 0.0 <= t <= 1.0:
                    out[i + 1] = a + t * d
                    found = True
                    break
            seg += 1
        if not found:
            d = curve[m - 1] - curve[m - 2]
            nd = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
            out[i + 1] = c + h * d / nd
            seg = m - 1
    return out


@numba.njit(cache=True, nogil=True)
def _angles_from_points(points: np.ndarray, R0: np.ndarray) -> np.ndarray:
    """Pitch/yaw per link so that link ``i`` points from ``points[i]`` to ``points[i + 1]``."""
    n = points.shape[0] - 1
    out = np.empty((n, 2))
    R = R0.copy()
    for i in range(n):
        d = points[i + 1] - points[i]
        d = d / np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        loc = R.T @ d
        yaw = np.arcsin(min(1.0, max(-1.0, loc[0])))
        pitch = np.arctan2(-loc[1], loc[2])
        ca, sa = np.cos(pitch), np.sin(pitch)
        cb, sb = np.cos(yaw), np.sin(yaw)
        Rx = np.array([[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]])
        Ry = np.array([[cb, 0.0, sb], [0.0, 1.0, 0.0], [-sb, 0.0, cb]])
        R = R @ Rx @ Ry
        out[i, 0] = pitch
        out[i, 1] = yaw
    return out


def link_joint_names(n_links: int) -> list[str]:
    """``[link_0_pitch, link_0_yaw, link_1_pitch, …]``, the order of :func:`chain_joint_angles`."""
    return [f"link_{i}_{axis}" for i in range(n_links) for axis in ("pitch", "yaw")]


def chain_joint_angles(backbone_ct: np.ndarray, T_ct_base: np.ndarray, insertion: float,
                       roll: float, n_links: int, link_length: float) -> np.ndarray:
    """Link joint angles (rad) reproducing a backbone with the URDF chain.

    Parameters
    ----------
    backbone_ct : ndarray, shape (N, 3)
        Backbone of the inserted catheter from the entry point to the tip, CT frame (m).
    T_ct_base : ndarray, shape (4, 4)
        Pose of the URDF ``base`` frame (entry point, z = insertion axis) in the CT frame.
    insertion : float
        Insertion (m), the ``insertion`` joint position.
    roll : float
        Roll (rad), the ``roll`` joint position.
    n_links, link_length : int, float
        The URDF chain (see the module docstring).

    Returns
    -------
    ndarray, shape (2 * n_links,)
        ``[pitch_0, yaw_0, pitch_1, yaw_1, …]`` as named by :func:`link_joint_names`.
    """
    R_base = T_ct_base[:3, :3]
    p_base = T_ct_base[:3, 3]
    backbone_base = (np.asarray(backbone_ct, dtype=float) - p_base) @ R_base
    L = n_links * link_length
    if insertion > L + 1e-9:
        raise ValueError(f"insertion {insertion} m is longer than the chain ({L} m)")
    beyond = np.linalg.norm(backbone_base, axis=1) > 1e-9
    curve = np.vstack([[0.0, 0.0, insertion - L], [0.0, 0.0, 0.0], backbone_base[beyond]])
    points = _chord_walk(np.ascontiguousarray(curve), n_links, float(link_length))
    c, s = np.cos(roll), np.sin(roll)
    R0 = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return _angles_from_points(points, R0).reshape(-1)


def chain_forward(T_ct_base: np.ndarray, insertion: float, roll: float, angles: np.ndarray,
                  link_length: float) -> np.ndarray:
    """Link origins and tip (n_links + 1, 3) in the CT frame: forward kinematics of the chain.

    The independent check of :func:`chain_joint_angles` is the URDF itself (parsed with
    yourdfpy in the tests); this is the same chain written out for quick use.
    """
    angles = np.asarray(angles, dtype=float).reshape(-1, 2)
    n = len(angles)
    T = np.asarray(T_ct_base, dtype=float) @ _tz(insertion - n * link_length) @ _rz(roll)
    out = [T[:3, 3].copy()]
    for pitch, yaw in angles:
        T = T @ _rx(pitch) @ _ry(yaw) @ _tz(link_length)
        out.append(T[:3, 3].copy())
    return np.array(out)


def _tz(z):
    T = np.eye(4)
    T[2, 3] = z
    return T


def _rx(a):
    T = np.eye(4)
    c, s = np.cos(a), np.sin(a)
    T[1:3, 1:3] = [[c, -s], [s, c]]
    return T


def _ry(a):
    T = np.eye(4)
    c, s = np.cos(a), np.sin(a)
    T[0, 0], T[0, 2], T[2, 0], T[2, 2] = c, s, -s, c
    return T


def _rz(a):
    T = np.eye(4)
    c, s = np.cos(a), np.sin(a)
    T[:2, :2] = [[c, -s], [s, c]]
    return T
