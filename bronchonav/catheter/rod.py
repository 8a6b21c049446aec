"""Cosserat rod + straight tendons: the statics kernel (numba).

Model (Rucker & Webster 2011, "Statics and dynamics of continuum robots with general tendon
routing and external loading", IEEE T-RO 27(6)): a Cosserat rod with shear and extension, coupled
to frictionless tendons treated as Cosserat strings. Here it is integrated in *composite* form:
cut the rod and the tendons it carries at arc length ``s`` and write the equilibrium of everything
distal to the cut. With ``n, m`` the rod's own internal force and moment (global frame, moment
about the backbone point ``p``) and tendon ``i`` of tension ``τ_i`` crossing the cut at
``p + R r_i`` along its unit tangent ``t_i``,

    Ñ = n + Σ τ_i t_i,          M̃ = m + Σ τ_i (R r_i) × t_i,
    Ñ' = -f,                    M̃' = -p' × Ñ - l,

where ``f, l`` are the external loads per unit length (gravity, distributed loads). Point loads
(contact at nodes, point forces and moments at any arc length) make ``Ñ`` and ``M̃`` jump. A
tendon termination is internal to the composite, so ``Ñ, M̃`` stay continuous there; the point
force and moment the tendon applies to the rod appear through the constitutive law below, which
loses that tendon's terms distal to its termination. This is exactly
Rucker & Webster's model with its termination point loads, written without the 6×6 implicit ODE.

Constitutive law, body frame (``v = Rᵀp'``, ``u`` from ``R' = R û``)::

    K_se (v - e3) + Σ τ_i t_i^b = Rᵀ Ñ,
    K_bt (u - u*) + Σ τ_i r_i × t_i^b = Rᵀ M̃,      t_i^b = w_i/|w_i|,  w_i = v + u × r_i.

It is solved for ``(v, u)`` by Newton's method (its Jacobian is Rucker & Webster's A, B, G, H
matrices), warm-started from the previous evaluation; without loaded tendons it is linear.

State along ``s`` (reference arc length, from the base at 0 to the tip at ``L``): position ``p``,
unit quaternion ``q`` (scalar first) of ``R``, ``Ñ``, ``M̃`` and the tendon path lengths (with
friction also their wrapped angles and tension integrals). Integration is classic RK4 between
consecutive breakpoints (output nodes, segment boundaries, tendon ends, point loads, sampled
outputs), so property and load jumps never fall inside a step. All quantities are in the
``catheter_base`` frame.

Tendon friction (capstan). Friction between a tendon and its routing is internal to the
composite, so the equations above are unchanged; only the tension varies along the tendon. A
massless string pressed against a curved routing has ``|dτ/dθ| <= μ τ``, θ the angle its tangent
has turned through from the proximal end of its acting span (actuator tension ``τ_a``), with
equality where it slides. Quasi-static memory: the new profile is the previous state's profile
clamped between the slip envelopes ``τ_a exp(-μθ)`` (sliding while pulled) and ``τ_a exp(+μθ)``
(sliding while released); where the previous profile lies between them the tendon sticks and
keeps its tension. The wrap rate is taken as ``|u × w|/|w|``, the turning of the tendon tangent
``R w/|w|`` with the material frame (exact for constant strains), and ``θ`` and ``∫τ ds`` are
integrated with the state.

Interface: :func:`integrate` takes a few named structs (:class:`Grid`, :class:`Pieces`,
:class:`TendonLoads`, :class:`PointLoads`, :class:`Wall`, :class:`Outputs`) and passes their
fields to the compiled kernel.

The kernels use numba's ``error_model="numpy"``: a degenerate iterate gives inf/NaN (which the
solver rejects) instead of raising inside the loop.

Contact: at output node ``k >= 1`` a penalty force from the airway wall (see
:mod:`bronchonav.catheter.contact`) acts as a point load, evaluated from the current iterate's
positions inside the integration, so Newton sees it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

NQ = 13  # p(3) q(4) N(3) M(3); then per tendon: path length, wrapped angle, ∫τ ds


@njit(cache=True, error_model="numpy")
def quat_to_rot(q, R):
    """Rotation matrix of quaternion ``q`` (w, x, y, z; normalised here) into ``R`` (3, 3)."""
    w, x, y, z = q[0], q[1], q[2], q[3]
    s = 1.0 / (w * w + x * x + y * y + z * z)
    R[0, 0] = 1.0 - 2.0 * s * (y * y + z * z)
    R[0, 1] = 2.0 * s * (x * y - z * w)
    R[0, 2] = 2.0 * s * (x * z + y * w)
    R[1, 0] = 2.0 * s * (x * y + z * w)
    R[1, 1] = 1.0 - 2.0 * s * (x * x + z * z)
    R[1, 2] = 2.0 * s * (y * z - x * w)
    R[2, 0] = 2.0 * s * (x * z - y * w)
    R[2, 1] = 2.0 * s * (y * z + x * w)
    R[2, 2] = 1.0 - 2.0 * s * (x * x + y * y)


@njit(cache=True, error_model="numpy")
def _solve_inplace(A, b, n):
    """Solve ``A[:n,:n] x = b[:n]`` by Gaussian elimination with partial pivoting (overwrites)."""
    for c in range(n):
        piv = c
        big = abs(A[c, c])
        for r in range(c + 1, n):
            if abs(A[r, c]) > big:
                big = abs(A[r, c])
                piv = r
        if piv != c:
            for k in range(n):
                tmp = A[c, k]
                A[c, k] = A[piv, k]
                A[piv, k] = tmp
            tmp = b[c]
            b[c] = b[piv]
            b[piv] = tmp
        d = A[c, c]
        for r in range(c + 1, n):
            f = A[r, c] / d
            if f != 0.0:
                for k in range(c, n):
                    A[r, k] -= f * A[c, k]
                b[r] -= f * b[c]
    for c in range(n - 1, -1, -1):
        acc = b[c]
        for k in range(c + 1, n):
            acc -= A[c, k] * b[k]
        b[c] = acc / A[c, c]


@njit(cache=True, error_model="numpy")
def constitutive(nb, mb, kse, kbt, ustar, act, r, tau, vu, J, F):
    """Solve the tendon-coupled constitutive law for ``vu = (v, u)`` (body frame), in place.

    Parameters
    ----------
    nb, mb : ndarray (3,)
        Composite internal force (N) and moment (N·m) in the body frame.
    kse, kbt : ndarray (3,)
        Diagonal shear/extension (GA, GA, EA; N) and bending/torsion (EI, EI, GJ; N·m²) stiffness.
    ustar : ndarray (3,)
        Precurvature (1/m).
    act : ndarray (T,)
        1.0 where the tendon acts on this piece, else 0.0.
    r : ndarray (T, 3)
        Tendon offsets in the body frame (m).
    tau : ndarray (T,)
        Tendon tensions (N).
    vu : ndarray (6,)
        In: initial guess; out: solution.
    J, F : ndarray (6, 6), (6,)
        Work space.

    Returns
    -------
    int
        Newton iterations used (0 for the linear case).
    """
    loaded = False
    for i in range(tau.shape[0]):
        if act[i] > 0.0 and tau[i] != 0.0:
            loaded = True
    if not loaded:
        vu[0] = nb[0] / kse[0]
        vu[1] = nb[1] / kse[1]
        vu[2] = 1.0 + nb[2] / kse[2]
        for k in range(3):
            vu[3 + k] = ustar[k] + mb[k] / kbt[k]
        return 0
    it = 0
    for it in range(1, 20):
        # residual and Jacobian
        for a in range(6):
            for b in range(6):
                J[a, b] = 0.0
        F[0] = kse[0] * vu[0] - nb[0]
        F[1] = kse[1] * vu[1] - nb[1]
        F[2] = kse[2] * (vu[2] - 1.0) - nb[2]
        for k in range(3):
            F[3 + k] = kbt[k] * (vu[3 + k] - ustar[k]) - mb[k]
            J[k, k] = kse[k]
            J[3 + k, 3 + k] = kbt[k]
        for i in range(tau.shape[0]):
            if act[i] <= 0.0 or tau[i] == 0.0:
                continue
            ti = tau[i]
            rx, ry, rz = r[i, 0], r[i, 1], r[i, 2]
            ux, uy, uz = vu[3], vu[4], vu[5]
            wx = vu[0] + uy * rz - uz * ry
            wy = vu[1] + uz * rx - ux * rz
            wz = vu[2] + ux * ry - uy * rx
            nw = np.sqrt(wx * wx + wy * wy + wz * wz)
            tx, ty, tz = wx / nw, wy / nw, wz / nw
            # force and moment of the tendon on the composite section
            F[0] += ti * tx
            F[1] += ti * ty
            F[2] += ti * tz
            F[3] += ti * (ry * tz - rz * ty)
            F[4] += ti * (rz * tx - rx * tz)
            F[5] += ti * (rx * ty - ry * tx)
            # P = tau (I - t t^T)/|w| ; dw/dv = I, dw/du = -r^
            c = ti / nw
            P00 = c * (1.0 - tx * tx)
            P01 = -c * tx * ty
            P02 = -c * tx * tz
            P11 = c * (1.0 - ty * ty)
            P12 = -c * ty * tz
            P22 = c * (1.0 - tz * tz)
            P = ((P00, P01, P02), (P01, P11, P12), (P02, P12, P22))
            rh = ((0.0, -rz, ry), (rz, 0.0, -rx), (-ry, rx, 0.0))
            # Pr = P r^ ; rP = r^ P ; rPr = r^ P r^
            for a in range(3):
                for b in range(3):
                    pr = 0.0
                    rp = 0.0
                    for k in range(3):
                        pr += P[a][k] * rh[k][b]
                        rp += rh[a][k] * P[k][b]
                    J[a, b] += P[a][b]
                    J[a, 3 + b] -= pr
                    J[3 + a, b] += rp
            for a in range(3):
                for b in range(3):
                    rpr = 0.0
                    for k in range(3):
                        rpk = 0.0
                        for m in range(3):
                            rpk += rh[a][m] * P[m][k]
                        rpr += rpk * rh[k][b]
                    J[3 + a, 3 + b] -= rpr
        _solve_inplace(J, F, 6)
        dv = 0.0
        du = 0.0
        for k in range(3):
            vu[k] -= F[k]
            vu[3 + k] -= F[3 + k]
            dv = max(dv, abs(F[k]))
            du = max(du, abs(F[3 + k]))
        if dv < 1e-14 and du < 1e-12:
            break
    return it


@njit(cache=True, error_model="numpy")
def _tensions(y, tau, mu, pa, pb, frac, tau_s):
    """Local tensions ``tau_s`` (N): the previous profile (``pa + frac (pb - pa)``, linear
    between the interval's ends) clamped between the slip envelopes ``tau·exp(∓μθ)`` of the
    actuator tensions ``tau`` at the wrapped angles θ in ``y``."""
    T = tau.shape[0]
    for i in range(T):
        if mu[i] > 0.0:
            e = np.exp(mu[i] * y[NQ + T + i])
            prev = pa[i] + frac * (pb[i] - pa[i])
            tau_s[i] = min(max(prev, tau[i] / e), tau[i] * e)
        else:
            tau_s[i] = tau[i]


@njit(cache=True, error_model="numpy")
def _record_tensions(y, tau, mu, p, act, acting_only, tau_s, out):
    """Local tensions at ``y`` (previous profile ``p`` there) into ``out``; with
    ``acting_only`` only for the tendons acting on the piece (``act > 0``)."""
    _tensions(y, tau, mu, p, p, 0.0, tau_s)
    for i in range(tau.shape[0]):
        if not acting_only or act[i] > 0.0:
            out[i] = tau_s[i]


@njit(cache=True, error_model="numpy")
def _deriv_friction(y, dy, kse, kbt, ustar, fdist, act, r, tau, mu, pa, pb, frac, tau_s, vu, R,
                    J, F, nb, mb):
    """:func:`_deriv_rod` with tensions varying along the tendons (capstan, :func:`_tensions`),
    also integrating the wrapped angles and tension integrals (:func:`_wrap_rates`)."""
    _tensions(y, tau, mu, pa, pb, frac, tau_s)
    _deriv_rod(y, dy, kse, kbt, ustar, fdist, act, r, tau_s, vu, R, J, F, nb, mb)
    _wrap_rates(dy, tau.shape[0], act, r, vu, tau_s)


@njit(cache=True, error_model="numpy")
def _deriv_rod(y, dy, kse, kbt, ustar, fdist, act, r, tau, vu, R, J, F, nb, mb):
    """dy/ds of the composite state (see module docstring) at tendon tensions ``tau``; fills
    ``vu`` with (v, u)."""
    T = tau.shape[0]
    quat_to_rot(y[3:7], R)
    for a in range(3):
        nb[a] = R[0, a] * y[7] + R[1, a] * y[8] + R[2, a] * y[9]
        mb[a] = R[0, a] * y[10] + R[1, a] * y[11] + R[2, a] * y[12]
    constitutive(nb, mb, kse, kbt, ustar, act, r, tau, vu, J, F)
    v0, v1, v2 = vu[0], vu[1], vu[2]
    u0, u1, u2 = vu[3], vu[4], vu[5]
    px = R[0, 0] * v0 + R[0, 1] * v1 + R[0, 2] * v2
    py = R[1, 0] * v0 + R[1, 1] * v1 + R[1, 2] * v2
    pz = R[2, 0] * v0 + R[2, 1] * v1 + R[2, 2] * v2
    dy[0] = px
    dy[1] = py
    dy[2] = pz
    qw, qx, qy, qz = y[3], y[4], y[5], y[6]
    dy[3] = 0.5 * (-qx * u0 - qy * u1 - qz * u2)
    dy[4] = 0.5 * (qw * u0 + qy * u2 - qz * u1)
    dy[5] = 0.5 * (qw * u1 + qz * u0 - qx * u2)
    dy[6] = 0.5 * (qw * u2 + qx * u1 - qy * u0)
    dy[7] = -fdist[0]
    dy[8] = -fdist[1]
    dy[9] = -fdist[2]
    Nx, Ny, Nz = y[7], y[8], y[9]
    dy[10] = -(py * Nz - pz * Ny)
    dy[11] = -(pz * Nx - px * Nz)
    dy[12] = -(px * Ny - py * Nx)
    for i in range(T):
        if act[i] > 0.0:
            rx, ry, rz = r[i, 0], r[i, 1], r[i, 2]
            wx = v0 + u1 * rz - u2 * ry
            wy = v1 + u2 * rx - u0 * rz
            wz = v2 + u0 * ry - u1 * rx
            dy[NQ + i] = np.sqrt(wx * wx + wy * wy + wz * wz)
        else:
            dy[NQ + i] = 0.0


@njit(cache=True, error_model="numpy")
def _wrap_rates(dy, T, act, r, vu, tau_s):
    """Per tendon: wrap rate ``|u × w|/|w|`` (the turning of its tangent ``R w/|w|`` with the
    frame; rad per unit reference length) and local tension, into ``dy`` after the lengths."""
    v0, v1, v2, u0, u1, u2 = vu[0], vu[1], vu[2], vu[3], vu[4], vu[5]
    for i in range(T):
        dy[NQ + T + i] = 0.0
        dy[NQ + 2 * T + i] = 0.0
        if act[i] > 0.0:
            rx, ry, rz = r[i, 0], r[i, 1], r[i, 2]
            wx = v0 + u1 * rz - u2 * ry
            wy = v1 + u2 * rx - u0 * rz
            wz = v2 + u0 * ry - u1 * rx
            cx = u1 * wz - u2 * wy
            cy = u2 * wx - u0 * wz
            cz = u0 * wy - u1 * wx
            dy[NQ + T + i] = np.sqrt((cx * cx + cy * cy + cz * cz) / (wx * wx + wy * wy + wz * wz))
            dy[NQ + 2 * T + i] = tau_s[i]


@njit(cache=True, error_model="numpy")
def _smooth_penalty(pen, k, eps):
    """C¹ penalty magnitude (N): 0 for pen <= 0, k·pen²/(2 eps) up to eps, then k·(pen - eps/2)."""
    if pen <= 0.0:
        return 0.0
    if pen < eps:
        return k * pen * pen / (2.0 * eps)
    return k * (pen - 0.5 * eps)


@njit(cache=True, error_model="numpy")
def _chord_tangent(bp, i, blo, bhi):
    """Unit-speed tangent estimate at vertex ``i`` of the polyline rows ``[blo, bhi]``: the
    chord through its neighbours (one-sided at the ends), divided by the chords' length."""
    a = max(i - 1, blo)
    b = min(i + 1, bhi)
    tx, ty, tz = bp[b, 0] - bp[a, 0], bp[b, 1] - bp[a, 1], bp[b, 2] - bp[a, 2]
    n = 0.0
    for j in range(a, b):
        n += np.sqrt((bp[j + 1, 0] - bp[j, 0]) ** 2 + (bp[j + 1, 1] - bp[j, 1]) ** 2
                     + (bp[j + 1, 2] - bp[j, 2]) ** 2)
    return tx / n, ty / n, tz / n


@njit(cache=True, error_model="numpy")
def _hermite(bp, j, t, blo, bhi, out):
    """Point, first and second derivative (per unit ``t``) of the cubic Hermite curve on segment
    ``j`` at ``t`` in [0, 1], into ``out`` (3, 3); vertex tangents from :func:`_chord_tangent`
    scaled by the segment's length."""
    ll = np.sqrt((bp[j + 1, 0] - bp[j, 0]) ** 2 + (bp[j + 1, 1] - bp[j, 1]) ** 2
                 + (bp[j + 1, 2] - bp[j, 2]) ** 2)
    m0 = _chord_tangent(bp, j, blo, bhi)
    m1 = _chord_tangent(bp, j + 1, blo, bhi)
    t2, t3 = t * t, t * t * t
    h = ((2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + t, -2 * t3 + 3 * t2, t3 - t2),
         (6 * t2 - 6 * t, 3 * t2 - 4 * t + 1, -6 * t2 + 6 * t, 3 * t2 - 2 * t),
         (12 * t - 6, 6 * t - 4, -12 * t + 6, 6 * t - 2))
    for d in range(3):
        for a in range(3):
            out[d, a] = h[d][0] * bp[j, a] + h[d][1] * ll * m0[a] + h[d][2] * bp[j + 1, a] \
                + h[d][3] * ll * m1[a]


@njit(cache=True, error_model="numpy")
def _hermite_radius(br, j, t, blo, bhi):
    """Lumen radius (m) and its first and second derivative per unit ``t`` on segment ``j`` at
    ``t`` in [0, 1]: the C¹ cubic Hermite interpolant of the vertex radii, vertex slopes from the
    neighbouring vertices (one-sided at the branch's ends)."""
    a0, b0 = max(j - 1, blo), j + 1
    a1, b1 = j, min(j + 2, bhi)
    m0 = (br[b0] - br[a0]) / (b0 - a0)
    m1 = (br[b1] - br[a1]) / (b1 - a1)
    t2, t3 = t * t, t * t * t
    r = (2 * t3 - 3 * t2 + 1) * br[j] + (t3 - 2 * t2 + t) * m0 + (-2 * t3 + 3 * t2) * br[j + 1] \
        + (t3 - t2) * m1
    dr = (6 * t2 - 6 * t) * br[j] + (3 * t2 - 4 * t + 1) * m0 + (-6 * t2 + 6 * t) * br[j + 1] \
        + (3 * t2 - 2 * t) * m1
    ddr = (12 * t - 6) * br[j] + (6 * t - 4) * m0 + (-12 * t + 6) * br[j + 1] + (6 * t - 2) * m1
    return r, dr, ddr


@njit(cache=True, error_model="numpy")
def _ball_distance(p, u, blo, bhi, bp, br, c):
    """``h(u) = |p − c(u)| − r(u)`` and its first two derivatives in the curve parameter ``u``
    (segment index + ``t``) of the Hermite centerline and radius; ``c`` (3, 3) is scratch."""
    j = min(int(np.floor(u)), bhi - 1)
    t = u - j
    _hermite(bp, j, t, blo, bhi, c)
    r, dr, ddr = _hermite_radius(br, j, t, blo, bhi)
    d2 = g = gc = cc = 0.0
    for a in range(3):
        e = c[0, a] - p[a]
        d2 += e * e
        g += c[1, a] * e
        gc += c[2, a] * e
        cc += c[1, a] * c[1, a]
    d = np.sqrt(d2)
    if not d > 1e-12:  # on the centerline: the distance has no derivative; take h convex
        return d - r, -dr, 1.0
    return d - r, g / d - dr, (gc + cc) / d - g * g / (d2 * d) - ddr


H_ROUNDING_M = 1e-15
"""A refinement step is accepted unless it raises the penetration by more than this (m): the
last Newton steps change it by less than its rounding, and stopping them there would leave the
ball's centre, and so the wall normal, short of converged."""

UNREFINED_DEPTH_M = 1e-3
"""A point this far (m) inside the lumen by the polyline's penetration is not refined on the
smooth curve (:func:`wall_penetration`): the two differ by the sagitta (micrometres) and by the
smooth radius against the linear one (under 0.1 mm even where sampled radii zigzag by half a
millimetre), and only a point beyond the wall feels a force."""

STEEP_TAPER = 0.05
"""Radius change per length above which :func:`_segment_penetration` finds the ball of deepest
penetration exactly; below it the point nearest by distance is within ``taper² · distance / 2``
(a few micrometres) of it in penetration."""


@njit(cache=True, error_model="numpy", inline="always")
def _segment_penetration(p, j, bp, br):
    """How deep ``p`` is in the union of balls along polyline segment ``j`` (radius linear along
    it), beyond the lumen radius: ``(penetration, t)``, ``t`` the ball's centre on the segment.

    On a segment ``a + t e`` the penetration ``|p − a − t e| − (r_a + t Δr)`` is convex in ``t``;
    its minimum lies ``k d⊥ / (|e| √(1 − k²))`` from the foot of the perpendicular (``d⊥`` the
    distance to the line, ``k = Δr / |e|`` the taper), or at the wider end if the taper is
    steeper than 45°. Below :data:`STEEP_TAPER` the foot itself is taken."""
    ax, ay, az = bp[j, 0], bp[j, 1], bp[j, 2]
    ex, ey, ez = bp[j + 1, 0] - ax, bp[j + 1, 1] - ay, bp[j + 1, 2] - az
    ll = ex * ex + ey * ey + ez * ez
    dr = br[j + 1] - br[j]
    t = ((p[0] - ax) * ex + (p[1] - ay) * ey + (p[2] - az) * ez) / ll
    if dr * dr > STEEP_TAPER * STEEP_TAPER * ll:
        el = np.sqrt(ll)
        k = dr / el
        if abs(k) < 1.0:
            dx, dy, dz = p[0] - ax - t * ex, p[1] - ay - t * ey, p[2] - az - t * ez
            t += k * np.sqrt(dx * dx + dy * dy + dz * dz) / (el * np.sqrt(1.0 - k * k))
        else:
            t = 1.0 if k > 0.0 else 0.0
    t = min(max(t, 0.0), 1.0)
    dx, dy, dz = p[0] - ax - t * ex, p[1] - ay - t * ey, p[2] - az - t * ez
    return np.sqrt(dx * dx + dy * dy + dz * dz) - (br[j] + t * dr), t


@njit(cache=True, error_model="numpy")
def _refine(p, u, u_lo, u_hi, blo, bhi, bp, br, c):
    """Minimise ``h(u) = |p − c(u)| − r(u)`` (:func:`_ball_distance`) from ``u`` within
    ``[u_lo, u_hi]``: Newton where ``h`` is convex, a step of one segment downhill where it is
    not, halved until ``h`` decreases. Returns ``(h, u)``."""
    h, h1, h2 = _ball_distance(p, u, blo, bhi, bp, br, c)
    for _ in range(20):
        step = -h1 / h2 if h2 > 0.0 else (-1.0 if h1 > 0.0 else 1.0)
        u_new = min(max(u + step, u_lo), u_hi)
        if not abs(u_new - u) > 1e-13:
            break
        hn, h1n, h2n = _ball_distance(p, u_new, blo, bhi, bp, br, c)
        halvings = 0
        while not hn <= h + H_ROUNDING_M and halvings < 40:
            u_new = u + 0.5 * (u_new - u)
            hn, h1n, h2n = _ball_distance(p, u_new, blo, bhi, bp, br, c)
            halvings += 1
        if not hn <= h + H_ROUNDING_M:
            break
        moved = abs(u_new - u)
        u, h, h1, h2 = u_new, hn, h1n, h2n
        if moved < 1e-13:
            break
    return h, u


@njit(cache=True, error_model="numpy")
def wall_penetration(p, lo, hi, blo, bhi, bp, br, r_cath):
    """Smallest penetration of point ``p`` into the wall of one branch's tube.

    The branch's centerline is the polyline rows ``[blo, bhi]`` of ``bp`` (lumen radii ``br``);
    the tube is the union of balls of the lumen's free radius (lumen radius − ``r_cath``)
    centred on the C¹ cubic Hermite curve through the vertices, the radius a C¹ Hermite
    interpolant of the vertex radii too, and the penetration is
    ``min_u (|p − c(u)| − (r(u) − r_cath))``. The search runs over the polyline's segments
    ``[lo, hi)`` (a window, or the whole branch), each taken as a union of balls with a linear
    radius (:func:`_segment_penetration`); a point deeper inside than
    :data:`UNREFINED_DEPTH_M` keeps that value, otherwise the best segment is refined by Newton
    on the curve parameter ``u`` (kept to that segment and its two neighbours), and so is a
    second basin where there is one (the inner side of a bend narrower than the lumen). Smooth
    curve and radius: the polyline's own nearest point has a normal that jumps where two
    segments are equally near (inside a bend), and a linear radius a slope that jumps at every
    vertex, and either jump in the wall force stalls the shooting solver. The same quantity
    minimised in the search and the refinement: refining the nearest point by distance alone,
    where the radius varies (a bronchus narrowing from its origin), could walk to where the
    lumen is narrower, and a point micrometres away, searched from a neighbouring segment, got
    a penetration a quarter of a millimetre different — a jump no step of the solver could get
    past. Gradient: the unit vector from ``c(u*)`` to ``p``. The curve stays within the sagitta
    (about ``spacing² · curvature / 8``, micrometres) of the polyline.

    Returns ``(pen, seg, qx, qy, qz)``: the penetration (m), the segment holding the ball's
    centre ``q = c(u*)``.
    """
    if hi <= lo or bhi <= blo or not abs(p[0]) + abs(p[1]) + abs(p[2]) < 1e300:
        return 1e300, lo, 0.0, 0.0, 0.0  # no branch here, or a diverged (non-finite) point
    # the segments' penetrations in one pass, keeping the two lowest local minima (i, second)
    i, best, ti = lo, 1e300, 0.0
    second, second_pen, second_t = -1, 1e300, 0.0
    before = 1e300
    here, t_here = _segment_penetration(p, lo, bp, br)
    for m in range(lo, hi):
        after, t_after = _segment_penetration(p, m + 1, bp, br) if m + 1 < hi else (1e300, 0.0)
        if here <= before and here <= after:
            if here < best:
                second, second_pen, second_t = i if best < 1e300 else -1, best, ti
                i, best, ti = m, here, t_here
            elif here < second_pen:
                second, second_pen, second_t = m, here, t_here
        before, here, t_here = here, after, t_after
    if best + r_cath < -UNREFINED_DEPTH_M:  # well inside: no wall force whatever the refinement
        ax, ay, az = bp[i, 0], bp[i, 1], bp[i, 2]
        return best + r_cath, i, ax + ti * (bp[i + 1, 0] - ax), ay + ti * (bp[i + 1, 1] - ay), \
            az + ti * (bp[i + 1, 2] - az)
    c = np.empty((3, 3))
    h, u = _refine(p, i + ti, float(max(i - 1, blo)), float(min(i + 2, bhi)), blo, bhi, bp, br, c)
    # another basin (the inner side of a bend narrower than the lumen): the next local minimum
    # of the segments' penetrations is refined too, so the smaller of the two is found whichever
    # the polyline ranked first; two basins a segment apart show as one minimum, so the better
    # neighbour is refined too unless the descent from there runs downhill on a convex stretch
    # toward the first basin
    if second >= 0 and abs(second - i) <= 1:
        second = -1
    if second < 0 and hi - lo > 1:
        left = _segment_penetration(p, i - 1, bp, br) if i > lo else (1e300, 0.0)
        right = _segment_penetration(p, i + 1, bp, br) if i + 1 < hi else (1e300, 0.0)
        if i + 1 >= hi or (i > lo and left[0] < right[0]):
            second, second_t = i - 1, left[1]
        else:
            second, second_t = i + 1, right[1]
        _, slope, curvature = _ball_distance(p, second + second_t, blo, bhi, bp, br, c)
        if curvature > 0.0 and slope * (second + second_t - u) > 0.0:
            second = -1
    if second >= 0:
        h2, u2 = _refine(p, second + second_t, float(max(second - 1, blo)),
                         float(min(second + 2, bhi)), blo, bhi, bp, br, c)
        if h2 < h:
            h, u = h2, u2
    j = min(int(np.floor(u)), bhi - 1)
    _hermite(bp, j, u - j, blo, bhi, c)
    pen = h + r_cath
    return pen, j, c[0, 0], c[0, 1], c[0, 2]


@njit(cache=True, error_model="numpy")
def contact_force(p, k, cand, win, window, b_off, bp, br, r_cath, k_node, eps, ref, fric, out):
    """Penalty wall force on node ``k`` at ``p`` (base frame), into ``out`` (3,) N.

    The lumen is the union of the candidate branches' tubes (capsules along the centerline
    polylines with the local radius). Each candidate ``c`` gives a penetration ``pen_c`` and its
    gradient ``g_c`` (the unit vector away from its nearest centerline point); they
    are combined by a smooth minimum of width ``eps`` (weights ``exp(-(pen_c - min)/eps)``), so
    the force ``-φ(pen) Σ w_c g_c`` stays continuous where two tubes meet (carinas, corners).
    Each candidate is searched within ``window`` segments of ``win[k, c]``.

    Friction (``fric = (mu, slip)``, off when ``mu == 0``): regularised Coulomb friction
    ``-mu |F_n| d_t / sqrt(|d_t|² + slip²)`` opposing ``d_t``, the part of the node's move from
    ``ref[k]`` (where its material point was in the previous state) along the wall.
    """
    C = cand.shape[1]
    pens = np.full(C, 1e300)
    grads = np.zeros((C, 3))
    best = 1e300
    for c in range(C):
        b = cand[k, c]
        if b < 0:
            continue
        blo = b_off[b]
        bhi = b_off[b + 1] - 1  # last vertex of the branch
        lo, hi = blo, bhi
        if window > 0:
            lo = max(lo, win[k, c] - window)
            hi = min(hi, win[k, c] + window + 1)
        if hi <= lo:
            continue
        pen, seg, qx, qy, qz = wall_penetration(p, lo, hi, blo, bhi, bp, br, r_cath)
        if pen <= 0.0:  # inside this tube: the smooth minimum is below zero, so is the force
            out[0] = 0.0
            out[1] = 0.0
            out[2] = 0.0
            return
        pens[c] = pen
        dx, dy, dz = p[0] - qx, p[1] - qy, p[2] - qz
        d = np.sqrt(dx * dx + dy * dy + dz * dz)
        if d > 1e-12:
            grads[c, 0] = dx / d
            grads[c, 1] = dy / d
            grads[c, 2] = dz / d
        if pen < best:
            best = pen
    out[0] = 0.0
    out[1] = 0.0
    out[2] = 0.0
    if best > 1e299:  # no candidate tube
        return
    wsum = 0.0
    gx = gy = gz = 0.0
    for c in range(C):
        if pens[c] > 1e299:
            continue
        w = np.exp(-(pens[c] - best) / eps)
        wsum += w
        gx += w * grads[c, 0]
        gy += w * grads[c, 1]
        gz += w * grads[c, 2]
    pen = best - eps * np.log(wsum)  # smooth minimum (<= best)
    mag = _smooth_penalty(pen, k_node, eps)
    if mag == 0.0:
        return
    out[0] = -mag * gx / wsum
    out[1] = -mag * gy / wsum
    out[2] = -mag * gz / wsum
    mu = fric[0]
    if mu > 0.0:
        gn = np.sqrt(gx * gx + gy * gy + gz * gz)
        if gn > 1e-12:
            nx, ny, nz = gx / gn, gy / gn, gz / gn
            dx, dy, dz = p[0] - ref[k, 0], p[1] - ref[k, 1], p[2] - ref[k, 2]
            dn = dx * nx + dy * ny + dz * nz
            dx, dy, dz = dx - dn * nx, dy - dn * ny, dz - dn * nz
            f = mu * mag / np.sqrt(dx * dx + dy * dy + dz * dz + fric[1] * fric[1])
            out[0] -= f * dx
            out[1] -= f * dy
            out[2] -= f * dz


class Grid(NamedTuple):
    """Integration breakpoints of one solve (see :class:`bronchonav.catheter.layout.Layout`).

    Attributes
    ----------
    s_pts : ndarray (P,)
        Breakpoints in reference arc length from the base (m), increasing from 0 to L.
    piece_of : ndarray of int (P-1,)
        Material piece (row of :class:`Pieces`) of each interval.
    node_of : ndarray of int (P,)
        Output node index of each breakpoint, -1 if none.
    load_of : ndarray of int (P,)
        Row of :class:`PointLoads` applied at each breakpoint, -1 if none.
    sample_of : ndarray of int (P,)
        Row of the sample outputs (:class:`Outputs` ``sample_pos``) recorded there, -1 if none.
    """

    s_pts: np.ndarray
    piece_of: np.ndarray
    node_of: np.ndarray
    load_of: np.ndarray
    sample_of: np.ndarray


class Pieces(NamedTuple):
    """Per-piece properties: ``kse`` (GA, GA, EA; N), ``kbt`` (EI, EI, GJ; N·m²), ``ustar``
    precurvature (1/m), ``fdist`` distributed external force (N/m, base frame), all (K, 3), and
    ``act`` (K, T): 1.0 where the tendon acts on the piece."""

    kse: np.ndarray
    kbt: np.ndarray
    ustar: np.ndarray
    fdist: np.ndarray
    act: np.ndarray


class TendonLoads(NamedTuple):
    """Tendon routing and tensions of one solve.

    Attributes
    ----------
    r : ndarray (T, 3)
        Offsets in the body frame (m).
    tau : ndarray (T,)
        Tension at the proximal end of the acting span (the actuator side) (N).
    mu : ndarray (T,)
        Friction coefficients.
    prev : ndarray (P, T)
        Each tendon's tension profile of the previous state at the breakpoints (N): the new
        profile is this one clamped between ``tau·exp(∓μθ)`` (stuck where it lies between, slipping
        where an envelope binds).
    track : bool
        Friction on: integrate each tendon's wrapped angle and tension integral.
    """

    r: np.ndarray
    tau: np.ndarray
    mu: np.ndarray
    prev: np.ndarray
    track: bool


class PointLoads(NamedTuple):
    """Point forces (N) and moments (N·m), rows (M, 3) in the base frame, applied at the
    breakpoints whose ``Grid.load_of`` names the row."""

    force: np.ndarray
    moment: np.ndarray


class Wall(NamedTuple):
    """Wall contact inputs (see :func:`contact_force`); ``cand`` with 0 columns disables it.

    ``cand, win`` (Nn, C) int: candidate branches and window centres per node; ``window`` the
    search half width (segments); ``b_off, bp, br`` the contact polylines
    (:class:`bronchonav.catheter.contact.WallModel`); ``r_cath`` (m), ``k_node`` (N/m), ``eps``
    (m); ``ref`` (Nn, 3) previous positions of the nodes' material points (m); ``fric`` (2,)
    ``(mu, slip)``; ``drag`` (N/m) a spring pulling every node ``k >= 1`` back to ``ref[k]``
    (0 in an equilibrium; a relaxation through a snap-through uses it, see
    :meth:`bronchonav.catheter.model.CatheterModel.step`). Its force is reported with the
    contact forces.
    """

    cand: np.ndarray
    win: np.ndarray
    window: int
    b_off: np.ndarray
    bp: np.ndarray
    br: np.ndarray
    r_cath: float
    k_node: float
    eps: float
    ref: np.ndarray
    fric: np.ndarray
    drag: float


class Outputs(NamedTuple):
    """Arrays :func:`integrate` fills.

    Per output node (Nn rows): ``pos`` (3) position, ``quat`` (4), ``Nn``, ``Mn`` (3) composite
    force and moment, ``VU`` (6) strains (v, u) (exact at the node when ``full``), ``Fc`` (3)
    contact force, ``node_tension`` (T) the tendons' local tensions (with friction only). Per
    sample (S rows): ``sample_pos`` (3), ``sample_quat`` (4). Per tendon (T):
    ``tlen`` path length along its routing, ``wrap`` wrapped angle (rad), ``tdist`` tension at
    its distal end (N) and ``tint`` ∫τ ds over
    its acting span (N·m; only with ``TendonLoads.track``). ``res`` (6): composite force and
    moment just beyond the tip, after the tip node's point loads.
    """

    pos: np.ndarray
    quat: np.ndarray
    Nn: np.ndarray
    Mn: np.ndarray
    VU: np.ndarray
    Fc: np.ndarray
    sample_pos: np.ndarray
    sample_quat: np.ndarray
    tlen: np.ndarray
    node_tension: np.ndarray
    wrap: np.ndarray
    tdist: np.ndarray
    tint: np.ndarray
    res: np.ndarray


def integrate(x, q0, grid: Grid, pieces: Pieces, td: TendonLoads, loads: PointLoads, wall: Wall,
              out: Outputs, full: bool) -> None:
    """Shoot from the base with composite loads ``x = (Ñ(0), M̃(0))``; fill ``out``.

    Parameters
    ----------
    x : ndarray (6,)
        Composite force (N) and moment (N·m) at the base, base frame.
    q0 : ndarray (4,)
        Base orientation quaternion (roll about z).
    grid : Grid
    pieces : Pieces
    td : TendonLoads
    loads : PointLoads
    wall : Wall
    out : Outputs
    full : bool
        Also compute exact node strains (for output; not needed inside Newton).

    Notes
    -----
    The structs are unpacked here into the compiled kernel's flat arguments: numba types flat
    arrays at the call in C, but tuples in Python (several µs per call).
    """
    _shoot(x, q0, *grid, *pieces, *td, *loads, *wall, *out, full)


@njit(cache=True, error_model="numpy")
def _shoot(x, q0, s_pts, piece_of, node_of, load_of, sample_of, kse, kbt, ustar, fdist, act, r,
           tau, mu, prev, track, l_force, l_moment, cand, win, window, b_off, bp, br, r_cath,
           k_node, eps, ref, fric, drag, pos, quat, Nn, Mn, VU, Fc, sample_pos, sample_quat, tlen,
           node_tension, wrap, tdist, tint, res, full):
    """:func:`integrate` on the flat fields of its structs (in their declaration order)."""
    T = tau.shape[0]
    y = np.zeros(NQ + (3 * T if track else T))
    for a in range(4):
        y[3 + a] = q0[a]
    for a in range(6):
        y[7 + a] = x[a]
    _span(y, 0, s_pts.shape[0] - 1, s_pts, piece_of, node_of, load_of, sample_of, kse, kbt,
          ustar, fdist, act, r, tau, mu, prev, track, l_force, l_moment, cand, win, window, b_off,
          bp, br, r_cath, k_node, eps, ref, fric, drag, pos, quat, Nn, Mn, VU, Fc, sample_pos,
          sample_quat, node_tension, tdist, full)
    for a in range(6):
        res[a] = y[7 + a]
    for i in range(T):
        tlen[i] = y[NQ + i]
        if track:
            wrap[i] = y[NQ + T + i]
            tint[i] = y[NQ + 2 * T + i]


@njit(cache=True, error_model="numpy")
def _span(y, j0, j1, s_pts, piece_of, node_of, load_of, sample_of, kse, kbt, ustar, fdist, act,
          r, tau, mu, prev, track, l_force, l_moment, cand, win, window, b_off, bp, br, r_cath,
          k_node, eps, ref, fric, drag, pos, quat, Nn, Mn, VU, Fc, sample_pos, sample_quat,
          node_tension, tdist, full):
    """Integrate ``y`` in place from breakpoint ``j0`` to ``j1``, writing node outputs.

    Contact and point loads are applied at the breakpoints after ``j0`` (a load at the base is
    carried by the clamp).
    """
    T = tau.shape[0]
    ny = y.shape[0]
    yt = np.empty(ny)
    k1 = np.empty(ny)
    k2 = np.empty(ny)
    k3 = np.empty(ny)
    k4 = np.empty(ny)
    tau_s = np.empty(T)
    vu = np.zeros(6)
    vu[2] = 1.0
    R = np.empty((3, 3))
    J = np.empty((6, 6))
    F = np.empty(6)
    nb = np.empty(3)
    mb = np.empty(3)
    fc = np.zeros(3)
    ncontact = cand.shape[1]
    for j in range(j0, j1 + 1):
        kl = load_of[j]
        if kl >= 0 and j > j0:
            for a in range(3):
                y[7 + a] -= l_force[kl, a]
                y[10 + a] -= l_moment[kl, a]
        ks = sample_of[j]
        if ks >= 0:
            for a in range(3):
                sample_pos[ks, a] = y[a]
            for a in range(4):
                sample_quat[ks, a] = y[3 + a]
        kn = node_of[j]
        if kn >= 0:
            if (ncontact > 0 or drag > 0.0) and kn >= 1 and j > j0:
                if ncontact > 0:
                    contact_force(y[0:3], kn, cand, win, window, b_off, bp, br, r_cath, k_node,
                                  eps, ref, fric, fc)
                else:
                    fc[:] = 0.0
                for a in range(3):
                    fc[a] -= drag * (y[a] - ref[kn, a])
                    y[7 + a] -= fc[a]
                    Fc[kn, a] = fc[a]
            else:
                for a in range(3):
                    Fc[kn, a] = 0.0
            for a in range(3):
                pos[kn, a] = y[a]
                Nn[kn, a] = y[7 + a]
                Mn[kn, a] = y[10 + a]
            for a in range(4):
                quat[kn, a] = y[3 + a]
            if track:
                _record_tensions(y, tau, mu, prev[j], act[0], False, tau_s, node_tension[kn])
            if full:
                pc = piece_of[j - 1] if j > 0 else piece_of[0]
                quat_to_rot(y[3:7], R)
                # strain just proximal to the node's point loads
                fx, fy, fz = y[7], y[8], y[9]
                mx, my, mz = y[10], y[11], y[12]
                if kn >= 1 and (ncontact > 0 or drag > 0.0):
                    fx += Fc[kn, 0]
                    fy += Fc[kn, 1]
                    fz += Fc[kn, 2]
                if kl >= 0 and j > j0:
                    fx += l_force[kl, 0]
                    fy += l_force[kl, 1]
                    fz += l_force[kl, 2]
                    mx += l_moment[kl, 0]
                    my += l_moment[kl, 1]
                    mz += l_moment[kl, 2]
                for a in range(3):
                    nb[a] = R[0, a] * fx + R[1, a] * fy + R[2, a] * fz
                    mb[a] = R[0, a] * mx + R[1, a] * my + R[2, a] * mz
                if track:
                    _tensions(y, tau, mu, prev[j], prev[j], 0.0, tau_s)
                else:
                    tau_s[:] = tau
                constitutive(nb, mb, kse[pc], kbt[pc], ustar[pc], act[pc], r, tau_s, vu, J, F)
                for a in range(6):
                    VU[kn, a] = vu[a]
        if j == j1:
            break
        h = s_pts[j + 1] - s_pts[j]
        pc = piece_of[j]
        if track:
            _deriv_friction(y, k1, kse[pc], kbt[pc], ustar[pc], fdist[pc], act[pc], r, tau, mu,
                            prev[j], prev[j + 1], 0.0, tau_s, vu, R, J, F, nb, mb)
        else:
            _deriv_rod(y, k1, kse[pc], kbt[pc], ustar[pc], fdist[pc], act[pc], r, tau, vu, R, J, F,
                       nb, mb)
        for a in range(ny):
            yt[a] = y[a] + 0.5 * h * k1[a]
        if track:
            _deriv_friction(yt, k2, kse[pc], kbt[pc], ustar[pc], fdist[pc], act[pc], r, tau, mu,
                            prev[j], prev[j + 1], 0.5, tau_s, vu, R, J, F, nb, mb)
        else:
            _deriv_rod(yt, k2, kse[pc], kbt[pc], ustar[pc], fdist[pc], act[pc], r, tau, vu, R, J, F,
                       nb, mb)
        for a in range(ny):
            yt[a] = y[a] + 0.5 * h * k2[a]
        if track:
            _deriv_friction(yt, k3, kse[pc], kbt[pc], ustar[pc], fdist[pc], act[pc], r, tau, mu,
                            prev[j], prev[j + 1], 0.5, tau_s, vu, R, J, F, nb, mb)
        else:
            _deriv_rod(yt, k3, kse[pc], kbt[pc], ustar[pc], fdist[pc], act[pc], r, tau, vu, R, J, F,
                       nb, mb)
        for a in range(ny):
            yt[a] = y[a] + h * k3[a]
        if track:
            _deriv_friction(yt, k4, kse[pc], kbt[pc], ustar[pc], fdist[pc], act[pc], r, tau, mu,
                            prev[j], prev[j + 1], 1.0, tau_s, vu, R, J, F, nb, mb)
        else:
            _deriv_rod(yt, k4, kse[pc], kbt[pc], ustar[pc], fdist[pc], act[pc], r, tau, vu, R, J, F,
                       nb, mb)
        for a in range(ny):
            y[a] += h / 6.0 * (k1[a] + 2.0 * k2[a] + 2.0 * k3[a] + k4[a])
        qn = np.sqrt(y[3] * y[3] + y[4] * y[4] + y[5] * y[5] + y[6] * y[6])
        for a in range(3, 7):
            y[a] /= qn
        if track:  # tension at the end of the interval: the distal one if the tendon ends here
            _record_tensions(y, tau, mu, prev[j + 1], act[pc], True, tau_s, tdist)
