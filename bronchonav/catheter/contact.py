"""Wall contact between the catheter and the airway lumen.

The lumen is modelled as the union of tubes around the branch centerlines, each tube the union
of balls centred on the branch's centerline (a C¹ cubic Hermite curve through its samples) with
the local lumen radius (a C¹ interpolant of the sampled radii). A catheter node of radius ``r_c``
penetrates a tube by ``pen = min_s (|p − c(s)| − (r(s) − r_c))``
(:func:`bronchonav.catheter.rod.wall_penetration`), and ``∇pen`` is the unit vector from that
ball's centre ``c(s*)`` to the node. The node's candidate branches are combined by a smooth
minimum (width ``eps``) of their penetrations and gradients, and the node feels the penalty force
``-φ(pen) ∇pen`` (``φ`` C¹: quadratic up to ``eps``, then linear with slope ``k``, the nodal
stiffness = stiffness per length × node spacing). The smooth minimum keeps the force continuous
where two tubes meet (carinas, corners); the smooth centerline and radius keep it continuous
inside a bend (the polyline's own nearest point makes the force direction jump by the vertex
angle where two segments are equally near) and where the lumen narrows (a linear radius has a
slope that jumps at every vertex); Newton stalls at any such jump. Where the lumen narrows
along a branch the wall's normal tilts back toward the wider part, so a taper pushes back
axially as a cone does.

The forces are evaluated from the current iterate *inside* the shooting integration (see
:mod:`bronchonav.catheter.rod`), so the Newton solver sees the contact stiffness. (A fixed-point loop
that freezes the forces of the previous iterate was not used: it contracts only while the rod's
compliance at a node times the wall stiffness is below one, and a 0.1 m free length of the shaft
has a tip compliance of about L³/3EI ≈ 0.17 m/N against a nodal stiffness of a few hundred N/m.)

Optional friction (``CatheterModel(friction=mu)``): regularised Coulomb friction at each node in
contact, opposing the move of the node's material point since the previous state (incremental
quasi-statics: material slides in through the base, so a node's material point was ``Δinsertion``
further up the backbone before the step).

Branch tracking resolves the ambiguity at bifurcations: walking along the backbone from the base
(trachea), each node's candidates are the branch the previous node is in, its parent, its
children and its siblings (so a node near a carina that the walk put in the wrong child still
has the tube it is in among its candidates); the node is then "in" the candidate with the smallest penetration, except that a node
that (nearly) fits inside a branch the catheter already occupied stays in it (hysteresis: where
the tubes of two children overlap near their carina, the smallest penetration can flip between
them, and a node pressed on a wall always penetrates it a little). So
once the catheter has entered one child, the wall of the other child cannot push it. The
hysteresis does not hold a node that has passed the distal end of its branch and lies in a
child: a branch's tube is open where its children continue (otherwise the end cap of the parent
pushes the advancing tip back and the shaft buckles). A child whose entrance radius
is not larger than the catheter radius is not a candidate at all: the catheter cannot enter it.

Candidates and search windows are frozen for a solve (from the previous shape) so the residual
the Newton solver sees is continuous; the model re-tracks after the solve and re-solves if the
tracking changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from bronchonav.airway.tree import AirwayTree
from bronchonav.catheter.rod import wall_penetration
from bronchonav.geometry import catheter_fits, resample_polyline


STAY_MARGIN = 1e-3
"""Hysteresis of the branch tracking (m): a node stays in a branch the catheter already occupies
while its penetration there exceeds the best candidate's (or zero) by less than this. Pressed on a
wall a node always penetrates a little (penalty contact), so the margin must exceed that."""


@dataclass
class WallModel:
    """The airway centerlines in the ``catheter_base`` frame, packed for the numba kernels.

    Attributes
    ----------
    branch_ids : ndarray of int (B,)
        Airway branch id of each compact index.
    parent : ndarray of int (B,)
        Compact index of the parent (-1 for the root).
    children : ndarray of int (B, Cmax)
        Compact indices of the *enterable* children (-1 padding).
    b_off : ndarray of int (B+1,)
        Row offsets of each branch's polyline in ``bp``/``br``.
    bp : ndarray (M, 3)
        Centerline polyline points, base frame (m).
    br : ndarray (M,)
        Lumen radius at each point (m).
    root : int
        Compact index of the trachea.
    r_cath : float
        Catheter outer radius (m).
    """

    branch_ids: np.ndarray
    parent: np.ndarray
    children: np.ndarray
    b_off: np.ndarray
    bp: np.ndarray
    br: np.ndarray
    root: int
    r_cath: float

    @property
    def n_candidates(self) -> int:
        """Candidates per node: own branch, parent, children, siblings."""
        return 2 + 2 * self.children.shape[1]

    @classmethod
    def from_tree(cls, tree: AirwayTree, T_base_ct: np.ndarray, r_cath: float,
                  step: float = 1e-3) -> "WallModel":
        """Pack ``tree`` (CT frame) for contact, expressed in the base frame via ``T_base_ct``.

        Parameters
        ----------
        tree : AirwayTree
        T_base_ct : ndarray (4, 4)
            Transform from CT to ``catheter_base`` coordinates.
        r_cath : float
            Catheter outer radius (m).
        step : float
            Centerline resampling step (m).
        """
        ids = sorted(tree.branches)
        index = {b: k for k, b in enumerate(ids)}
        parent = np.array([-1 if tree[b].parent is None else index[tree[b].parent] for b in ids],
                          dtype=np.int64)
        kids = [[index[c] for c in tree[b].children if catheter_fits(tree[c].radii[0], r_cath)]
                for b in ids]
        cmax = max(1, max(len(k) for k in kids))
        children = np.full((len(ids), cmax), -1, dtype=np.int64)
        for k, ch in enumerate(kids):
            children[k, :len(ch)] = ch
        pts, rad, off = [], [], [0]
        for b in ids:
            p, r, _ = resample_polyline(tree[b].points, tree[b].radii, step)
            pts.append(p)
            rad.append(r)
            off.append(off[-1] + len(p))
        bp = np.vstack(pts)
        bp = bp @ T_base_ct[:3, :3].T + T_base_ct[:3, 3]
        return cls(np.array(ids, dtype=np.int64), parent, children, np.array(off, dtype=np.int64),
                   np.ascontiguousarray(bp), np.concatenate(rad), index[tree.root], float(r_cath))

    def track(self, positions_base: np.ndarray, prefer=None):
        """Candidate branches, search-window centres and branch of each node along a backbone.

        Parameters
        ----------
        positions_base : ndarray (N, 3)
            Backbone nodes from the base to the tip, base frame (m).
        prefer : iterable of int or None
            Airway branch ids the catheter already occupies (its last shape): a node that (nearly,
            within :data:`STAY_MARGIN`) fits inside one of their tubes stays in it rather than
            switching to an overlapping tube (hysteresis at carinas, where the tubes of two
            children overlap).

        Returns
        -------
        cand : ndarray of int (N, C)
            Compact candidate branch indices per node (-1 padding).
        win : ndarray of int (N, C)
            Nearest polyline segment of each candidate (global row index).
        node_branch : ndarray of int (N,)
            Airway branch id (tree id, not compact) each node is in.
        """
        mask = np.zeros(len(self.branch_ids), dtype=np.bool_)
        if prefer is not None:
            mask = np.isin(self.branch_ids, np.asarray(list(prefer), dtype=np.int64))
        cand, win, nb = _track(np.ascontiguousarray(positions_base, dtype=float), self.parent,
                               self.children, self.b_off, self.bp, self.br, self.root, self.r_cath,
                               mask)
        return cand, win, self.branch_ids[nb]

    def crossing(self, before_base: np.ndarray, before_ids: np.ndarray, after_base: np.ndarray,
                 after_ids: np.ndarray) -> tuple[int, int, int] | None:
        """The first backbone node that passed through a carina between two shapes: from one
        airway into a sibling of it (same parent), its centre inside the first airway's lumen
        and outside the sibling's before, and inside the sibling's and outside the first's
        after — beyond where the two tubes overlap, so that the straight way between lies
        through the carina's tissue. With contact at the nodes only, a solve can find such an
        equilibrium (the tip between nodes swung over the carina wedge); no catheter gets there
        without backing out of the first airway. A node pressed into the carina's ridge lies
        outside both lumens, and which of the two it is tracked in can change with a fraction
        of a millimetre's slide along the ridge: that passes nothing.

        Parameters
        ----------
        before_base, after_base : ndarray (N, 3)
            Node positions (base frame, m) of the two shapes, at the same arc lengths.
        before_ids, after_ids : ndarray of int (N,)
            Airway branch id (tree id) of each node in each shape (:meth:`track`).

        Returns
        -------
        (node, from_id, to_id) or None
        """
        changed = np.flatnonzero(np.asarray(before_ids) != np.asarray(after_ids))
        if changed.size == 0:  # the common case: no dictionary to build
            return None
        index = {int(b): k for k, b in enumerate(self.branch_ids)}
        for i in changed:
            a, b = index[int(before_ids[i])], index[int(after_ids[i])]
            if self.parent[a] != self.parent[b] or self.parent[a] < 0:
                continue
            before, after = before_base[i], after_base[i]
            if not self._centre_outside(before, a) and self._centre_outside(before, b) and \
                    not self._centre_outside(after, b) and self._centre_outside(after, a):
                return int(i), int(before_ids[i]), int(after_ids[i])
        return None

    def _centre_outside(self, p: np.ndarray, c: int) -> bool:
        """Whether point ``p`` (base frame) lies outside the lumen of compact branch ``c``."""
        lo, hi = self.b_off[c], self.b_off[c + 1] - 1
        pen = wall_penetration(np.ascontiguousarray(p, dtype=float), lo, hi, lo, hi, self.bp,
                               self.br, self.r_cath)[0]
        return bool(pen > self.r_cath)


@njit(cache=True, error_model="numpy")
def _track(pos, parent, children, b_off, bp, br, root, r_cath, prefer):
    n = pos.shape[0]
    cmax = children.shape[1]
    C = 2 + 2 * cmax
    cand = np.full((n, C), -1, dtype=np.int64)
    win = np.zeros((n, C), dtype=np.int64)
    node_b = np.zeros(n, dtype=np.int64)
    b = root
    for k in range(n):
        cand[k, 0] = b
        cand[k, 1] = parent[b]
        for c in range(cmax):
            cand[k, 2 + c] = children[b, c]
            if parent[b] >= 0 and children[parent[b], c] != b:
                cand[k, 2 + cmax + c] = children[parent[b], c]
        best = 1e300
        bb = b
        pbest = 1e300
        pb = -1
        p_beyond = False  # the node lies past the distal end of the preferred branch
        for c in range(C):
            cb = cand[k, c]
            if cb < 0:
                continue
            pen, seg, qx, qy, qz = wall_penetration(pos[k], b_off[cb], b_off[cb + 1] - 1,
                                                    b_off[cb], b_off[cb + 1] - 1, bp, br, r_cath)
            win[k, c] = seg
            if pen < best - 1e-12:
                best = pen
                bb = cb
            if prefer[cb] and pen < pbest - 1e-12:
                pbest = pen
                pb = cb
                e = b_off[cb + 1] - 1
                p_beyond = (qx - bp[e, 0]) ** 2 + (qy - bp[e, 1]) ** 2 + (qz - bp[e, 2]) ** 2 \
                    < 1e-18
        entering = pb >= 0 and parent[bb] == pb and p_beyond
        if pb >= 0 and pbest <= max(best, 0.0) + STAY_MARGIN and not entering:
            bb = pb  # (nearly) fits in a branch it already occupied: stay there
        node_b[k] = bb
        b = bb
    return cand, win, node_b
