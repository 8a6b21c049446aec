"""Discretisation of the inserted part of the catheter into integration pieces.

Only the inserted length ``L`` (the distal ``L`` metres of the catheter, pushed through the fixed
base at the top of the trachea) is simulated. Its reference arc length ``s`` runs from 0 at the
base to ``L`` at the tip. Output nodes are uniform in ``s``; segment boundaries that fall between
nodes become extra integration breakpoints so that stiffness jumps and tendon terminations never
fall inside an RK4 step. Point loads and sampled outputs at other arc lengths add breakpoints
per solve (:func:`grid_with_points`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bronchonav.catheter.params import CatheterParams
from bronchonav.catheter.rod import Grid


@dataclass
class Layout:
    """Integration grid and per-piece properties of the inserted part (base frame, SI).

    Attributes
    ----------
    length : float
        Inserted length L (m).
    arc : ndarray (N,)
        Reference arc length of the output nodes from the base (m).
    s_pts : ndarray (P,)
        Integration breakpoints (m).
    piece_of : ndarray of int (P-1,)
        Piece (row of the property arrays) of each interval.
    node_of : ndarray of int (P,)
        Output node index of each breakpoint or -1.
    kse, kbt, ustar : ndarray (K, 3)
        (GA, GA, EA) in N, (EI, EI, GJ) in N·m², precurvature (1/m) per piece.
    mass : ndarray (K,)
        Mass per length per piece (kg/m).
    act : ndarray (K, T)
        1.0 where tendon acts on the piece.
    ref_span : ndarray (T,)
        Reference length of each tendon's span inside the inserted part (m).
    out_compression : ndarray (T, T)
        Shortening of tendon i's span outside the patient per newton of tension in tendon j (m/N):
        the un-inserted shaft, held straight by the robot, is compressed by the tendons it carries.
    wire_compliance : ndarray (T,)
        Elastic stretch of each whole wire per newton (m/N): wire length / wire EA, or
        1 / wire stiffness.
    wire_length : ndarray (T,)
        Length of each wire from the catheter's proximal end to its crimp (m).
    friction, pretension, zero_offset : ndarray (T,)
        Per-tendon friction coefficient, pretension (N) and zero offset (m).
    track_friction : bool
        Some tendon has friction.
    min_EI : float
        Smallest bending stiffness on the inserted part (N·m²), for scaling.
    grid : Grid
        Breakpoints without point loads or samples (``load_of``, ``sample_of`` all -1).
    """

    length: float
    arc: np.ndarray
    s_pts: np.ndarray
    piece_of: np.ndarray
    node_of: np.ndarray
    kse: np.ndarray
    kbt: np.ndarray
    ustar: np.ndarray
    mass: np.ndarray
    act: np.ndarray
    ref_span: np.ndarray
    out_compression: np.ndarray
    wire_compliance: np.ndarray
    wire_length: np.ndarray
    friction: np.ndarray
    pretension: np.ndarray
    zero_offset: np.ndarray
    track_friction: bool
    min_EI: float
    grid: Grid


def build_layout(params: CatheterParams, insertion: float, n_nodes: int) -> Layout:
    """Lay out ``n_nodes`` output nodes on the inserted part ``insertion`` (m) of ``params``."""
    segs = params.segments
    n_t = len(params.tendons)
    total = params.length
    L = float(insertion)
    offset = total - L  # catheter coordinate (from the proximal end) of the base
    bounds = np.concatenate([[0.0], np.cumsum([s.length for s in segs])])
    arc = np.linspace(0.0, L, n_nodes)
    inner = bounds[1:-1] - offset
    inner = inner[(inner > 1e-12) & (inner < L - 1e-12)]
    # merge boundaries that (almost) coincide with nodes
    keep = [b for b in inner if np.min(np.abs(arc - b)) > 1e-9 * max(L, 1e-9)]
    s_pts = np.concatenate([arc, keep])
    node_flag = np.concatenate([np.arange(n_nodes), np.full(len(keep), -1)])
    order = np.argsort(s_pts, kind="stable")
    s_pts, node_of = s_pts[order], node_flag[order].astype(np.int64)
    mids = 0.5 * (s_pts[:-1] + s_pts[1:]) + offset
    seg_idx = np.clip(np.searchsorted(bounds, mids, side="right") - 1, 0, len(segs) - 1)
    used = np.unique(seg_idx) if len(seg_idx) else np.array([len(segs) - 1])
    piece_map = {int(s): k for k, s in enumerate(used)}
    piece_of = np.array([piece_map[int(s)] for s in seg_idx], dtype=np.int64)
    kse = np.array([[segs[s].GA, segs[s].GA, segs[s].EA] for s in used], dtype=float)
    kbt = np.array([[segs[s].EI, segs[s].EI, segs[s].GJ] for s in used], dtype=float)
    ustar = np.array([segs[s].precurvature for s in used], dtype=float)
    mass = np.array([segs[s].mass_per_length for s in used], dtype=float)
    act = np.zeros((len(used), n_t))
    for i, t in enumerate(params.tendons):
        for k, s in enumerate(used):
            act[k, i] = 1.0 if t.start_segment <= s <= t.end_segment else 0.0
    # tendon spans inside and outside the patient
    ref_span = np.zeros(n_t)
    out_comp = np.zeros((n_t, n_t))
    wire = np.zeros(n_t)
    for i, t in enumerate(params.tendons):
        lo, hi = bounds[t.start_segment], bounds[t.end_segment + 1]
        ref_span[i] = max(0.0, hi - max(lo, offset))
        wire[i] = hi / t.stiffness_EA if t.wire_stiffness is None else 1.0 / t.wire_stiffness
        for s in range(t.start_segment, t.end_segment + 1):
            out_len = max(0.0, min(bounds[s + 1], offset) - bounds[s])
            if out_len <= 0:
                continue
            for j, tj in enumerate(params.tendons):
                if tj.start_segment <= s <= tj.end_segment:
                    out_comp[i, j] += out_len / segs[s].EA
    tendon = np.array([[t.friction, t.pretension, t.zero_offset] for t in params.tendons],
                      dtype=float).reshape(n_t, 3)
    none = np.full(len(s_pts), -1, dtype=np.int64)
    return Layout(L, arc, s_pts, piece_of, node_of, kse, kbt, ustar, mass, act, ref_span,
                  out_comp, wire, bounds[[t.end_segment + 1 for t in params.tendons]],
                  tendon[:, 0].copy(), tendon[:, 1].copy(), tendon[:, 2].copy(),
                  bool(np.any(tendon[:, 0] > 0)), float(kbt[:, 0].min()), Grid(s_pts, piece_of, node_of, none, none.copy()))


def grid_with_points(layout: Layout, load_s: np.ndarray, sample_s: np.ndarray) -> Grid:
    """The layout's grid with breakpoints added at point-load and sample arc lengths (m).

    A point within 1e-9·L of an existing breakpoint reuses it. ``Grid.load_of`` / ``sample_of``
    give the row of ``load_s`` / ``sample_s`` at each breakpoint (``load_s`` must be distinct).
    """
    base = layout.grid
    if len(load_s) == 0 and len(sample_s) == 0:
        return base
    tol = 1e-9 * max(layout.length, 1e-9)
    s_pts = base.s_pts
    extra = np.concatenate([np.asarray(load_s, float), np.asarray(sample_s, float)])
    near = np.abs(extra[:, None] - s_pts[None, :]).min(axis=1) <= tol
    new = np.unique(extra[~near])
    # keep only one of new points closer than tol to each other
    if len(new) > 1:
        new = new[np.concatenate([[True], np.diff(new) > tol])]
    all_s = np.concatenate([s_pts, new])
    order = np.argsort(all_s, kind="stable")
    all_s = all_s[order]
    node_of = np.concatenate([base.node_of, np.full(len(new), -1)])[order].astype(np.int64)
    # an added point splits the interval it falls in; both halves keep that interval's piece
    interval = np.clip(np.searchsorted(s_pts, 0.5 * (all_s[:-1] + all_s[1:])) - 1, 0,
                       len(base.piece_of) - 1)
    piece_of = base.piece_of[interval].astype(np.int64)

    def rows(values):
        out = np.full(len(all_s), -1, dtype=np.int64)
        for k, v in enumerate(values):
            out[int(np.argmin(np.abs(all_s - v)))] = k
        return out

    return Grid(all_s, piece_of, node_of, rows(load_s), rows(sample_s))
