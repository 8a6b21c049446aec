"""Rigid-link approximation of the backbone, for a URDF-style joint chain.

:func:`joint_angles` replaces the distal ``active_length`` of the deformed backbone by
``n_links`` straight links of equal length ``ℓ = active_length / n_links`` (active length measured
along the deformed backbone polyline), each preceded by two revolute joints:

* joint ``2i`` ("pitch" of link i) rotates about the current frame's **y** axis by ``angles[i, 0]``;
* joint ``2i+1`` ("yaw" of link i) then rotates about the resulting frame's **x** axis by
  ``angles[i, 1]``;
* the link then extends ``ℓ`` along the resulting **z** axis, and the next link's frame is there.

So ``F_{i+1} = F_i · Ry(angles[i,0]) · Rx(angles[i,1]) · Trans(0, 0, ℓ)`` with
``F_0 = chain.base_pose``: the pose (in the state's frame) of the backbone node where the chain
starts, i.e. the base when the whole inserted length is active. Each link points from where the
chain has got to towards the backbone point one ``ℓ`` further along, so errors do not accumulate;
the chain has no twist joints (the frames' roll about the links is not represented).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bronchonav.catheter.state import CatheterState
from bronchonav.errors import InputError


@dataclass
class JointChain:
    """A serial chain of equal links with two revolute joints each (see module docstring).

    Attributes
    ----------
    base_pose : ndarray (4, 4)
        Pose of the chain's first frame in the state's frame (m).
    link_length : float
        Length of every link (m).
    angles : ndarray (n_links, 2)
        Per link: rotation about y, then about x (rad).
    """

    base_pose: np.ndarray
    link_length: float
    angles: np.ndarray

    @property
    def joint_names(self) -> list[str]:
        """``["link_0_pitch", "link_0_yaw", "link_1_pitch", ...]`` in joint order."""
        return [f"link_{i}_{a}" for i in range(len(self.angles)) for a in ("pitch", "yaw")]


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _point_at(positions: np.ndarray, cum: np.ndarray, s: float) -> np.ndarray:
    return np.array([np.interp(s, cum, positions[:, k]) for k in range(3)])


def joint_angles(state: CatheterState, n_links: int, active_length: float | None = None) -> JointChain:
    """Fit a two-joints-per-link chain to the distal ``active_length`` of ``state``'s backbone.

    Parameters
    ----------
    state : CatheterState
    n_links : int
        Number of links (>= 1).
    active_length : float or None
        Length of backbone (m, along the deformed polyline) to represent, ending at the tip;
        default: all of it. Must not exceed the backbone length.

    Returns
    -------
    JointChain
    """
    if int(n_links) < 1:
        raise InputError("n_links must be >= 1")
    p = state.positions
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    total = float(cum[-1])
    active = total if active_length is None else float(active_length)
    if not (0.0 < active <= total + 1e-12) and total > 0:
        raise InputError(f"active_length {active} m must be in (0, {total:.4g}] m")
    ell = active / n_links if total > 0 else 0.0
    s0 = total - active
    # frame at the start of the chain: the backbone frame interpolated at s0 (nearest node's)
    k0 = int(np.clip(np.searchsorted(cum, s0, side="right") - 1, 0, len(p) - 1))
    base = np.eye(4)
    base[:3, :3] = state.rotations[k0]
    base[:3, 3] = _point_at(p, cum, s0)
    R = base[:3, :3].copy()
    x = base[:3, 3].copy()
    angles = np.zeros((int(n_links), 2))
    for i in range(int(n_links)):
        target = _point_at(p, cum, s0 + (i + 1) * ell)
        d = target - x
        nd = np.linalg.norm(d)
        d = R[:, 2] if nd < 1e-15 else d / nd
        dl = R.T @ d
        b = -np.arcsin(np.clip(dl[1], -1.0, 1.0))
        a = np.arctan2(dl[0], dl[2])
        angles[i] = a, b
        R = R @ _ry(a) @ _rx(b)
        x = x + ell * R[:, 2]
    return JointChain(base, ell, angles)


def forward_kinematics(chain: JointChain) -> np.ndarray:
    """Frames of the chain: ``(n_links + 1, 4, 4)`` poses, from the base to the end of the last link."""
    out = [chain.base_pose.copy()]
    for a, b in chain.angles:
        T = np.eye(4)
        T[:3, :3] = out[-1][:3, :3] @ _ry(a) @ _rx(b)
        T[:3, 3] = out[-1][:3, 3] + chain.link_length * T[:3, 2]
        out.append(T)
    return np.array(out)
