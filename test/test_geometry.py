"""bronchonav.geometry against independent oracles: SciPy and SimpleITK, brute force, analytic
cases and round trips. (The modules' doctests run too: pytest.ini collects bronchonav/geometry.)"""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from bronchonav.geometry import (Polyline, VoxelGrid, apply, arc_length, capsule_distance,
                                 catheter_fits, inside_tubes, invert, make_transform,
                                 matrix_to_quat, perpendicular, quat_to_matrix,
                                 random_perpendicular, resample_polyline, rotate,
                                 rotation_about, rotation_angle, rotation_between,
                                 segment_distance, skew, tangents, tendon_curvature,
                                 tendon_tension, transport_frames)

RNG = np.random.default_rng(17)


def unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# -- rotations ----------------------------------------------------------------------------------

def test_rotation_about_matches_scipy_and_skew_is_the_cross_product():
    for _ in range(20):
        axis, angle = RNG.normal(size=3), RNG.uniform(-np.pi, np.pi)
        expected = Rotation.from_rotvec(unit(axis) * angle).as_matrix()
        np.testing.assert_allclose(rotation_about(axis, angle), expected, atol=1e-12)
        u = RNG.normal(size=3)
        np.testing.assert_allclose(skew(axis) @ u, np.cross(axis, u), atol=1e-12)


def test_quaternions_round_trip_and_match_scipy():
    q = unit(RNG.normal(size=(50, 4)))
    R_scipy = Rotation.from_quat(q).as_matrix()
    for qi, Ri in zip(q, R_scipy):
        np.testing.assert_allclose(quat_to_matrix(qi), Ri, atol=1e-12)
        back = matrix_to_quat(Ri)
        assert back[3] >= 0
        np.testing.assert_allclose(back, qi * np.sign(qi[3]), atol=1e-12)
    # half turns (trace -1) are the hard case of matrix -> quaternion
    for axis in np.eye(3):
        R = rotation_about(axis, np.pi)
        np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-12)
    # batch forms
    np.testing.assert_allclose(np.abs(matrix_to_quat(R_scipy)), np.abs(q), atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q), R_scipy, atol=1e-12)


@pytest.mark.parametrize("b", [[0, 0, 1.0], [-1.0, 1e-9, 0], [-1.0, 0, 0], [1.0, 0, 0],
                               [0.3, -0.2, 0.9]])
def test_rotation_between_is_the_shortest_turn(b):
    a = unit([1.0, 0, 0])
    b = unit(b)
    R = rotation_between(a, b)
    np.testing.assert_allclose(R @ a, b, atol=1e-7)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert rotation_angle(R) == pytest.approx(np.arccos(np.clip(a @ b, -1, 1)), abs=1e-6)
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-12)


def test_perpendiculars_are_unit_and_orthogonal():
    v = np.vstack([RNG.normal(size=(200, 3)), np.eye(3), [[1.0, 1e-9, 0], [0.9, 0.436, 0]]])
    for p in (perpendicular(v), random_perpendicular(v, np.random.default_rng(0))):
        np.testing.assert_allclose(np.einsum("ij,ij->i", p, unit(v)), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(perpendicular(v[0]), perpendicular(v)[0])
    a = random_perpendicular(v, np.random.default_rng(5))
    b = random_perpendicular(v, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)                               # seeded: repeatable


# -- transforms ---------------------------------------------------------------------------------

def test_transforms_chain_and_invert():
    T_a_b = make_transform(Rotation.random(random_state=1).as_matrix(), [0.1, -0.2, 0.05])
    T_b_c = make_transform(Rotation.random(random_state=2).as_matrix(), [0.0, 0.03, 0.4])
    p_c = RNG.normal(size=(10, 3))
    np.testing.assert_allclose(apply(T_a_b @ T_b_c, p_c), apply(T_a_b, apply(T_b_c, p_c)),
                               atol=1e-12)
    np.testing.assert_allclose(invert(T_a_b) @ T_a_b, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(T_a_b), invert(T_a_b), atol=1e-12)
    d = unit(RNG.normal(size=(4, 3)))
    np.testing.assert_allclose(rotate(T_a_b, d), d @ T_a_b[:3, :3].T)
    assert rotation_angle(T_a_b) == pytest.approx(Rotation.from_matrix(T_a_b[:3, :3]).magnitude())


# -- polylines and frames -----------------------------------------------------------------------

def test_arc_length_and_resampling_of_a_known_polyline():
    pts = np.array([[0, 0, 0], [0.03, 0.04, 0], [0.03, 0.04, 0.05]])
    np.testing.assert_allclose(arc_length(pts), [0, 0.05, 0.10])
    r = resample_polyline(pts, np.column_stack([[0, 1, 2], [5, 5, 5]]), 0.003)
    np.testing.assert_allclose(r.points[[0, -1]], pts[[0, -1]])
    steps = np.diff(r.s)
    assert steps.max() <= 0.003 and np.allclose(steps, steps[0])    # equal parts, not over step
    np.testing.assert_allclose(r.values[:, 0], r.s / 0.05)          # linear in arc length
    np.testing.assert_allclose(r.values[:, 1], 5.0)
    # the samples lie on the polyline (distance 0 to it)
    assert Polyline(pts).distance(r.points).max() < 1e-12


def test_first_point_at_a_distance_against_closed_forms():
    """Where a polyline leaves a ball: on a straight line with the centre ``l`` off it, ``s0 +
    sqrt(r² - l²)`` on; round a right angle, on the second leg where ``x² + h² = r²``; up the
    far leg of a U-turn; the start where it is already far enough; the end where no point is."""
    line = Polyline([[0, 0, 0], [0, 0, -0.1]])
    q = np.array([0.003, 0.0, -0.02])
    assert line.first_at_distance(q, 0.008, 0.02) == pytest.approx(0.02 + np.sqrt(0.008**2 - 0.003**2))
    corner = Polyline([[0, 0, 0], [0, 0, -0.05], [0.05, 0, -0.05]])
    # from 2 mm before the corner, radius 8 mm: the second leg at x = sqrt(64 - 4) mm
    s = corner.first_at_distance([0, 0, -0.048], 0.008, 0.048)
    assert s == pytest.approx(0.05 + np.sqrt(0.008**2 - 0.002**2))
    assert np.linalg.norm(corner.point_at(s) - [0, 0, -0.048]) == pytest.approx(0.008)
    u_turn = Polyline([[0, 0, 0], [0, 0, -10], [4, 0, -10], [4, 0, 0]])
    assert u_turn.first_at_distance([0, 0, -8], 5.0, 8.0) == pytest.approx(19.0)
    assert u_turn.first_at_distance([0, 0, -8], 3.0, 2.0) == pytest.approx(2.0)  # 6 away already
    assert u_turn.first_at_distance([2, 0, -5], 50.0, 0.0) == pytest.approx(u_turn.length)


def test_transport_frames_on_a_circle_keep_the_plane_normal():
    """On a planar curve the parallel-transport frame turns only about the plane's normal, so
    each frame axis keeps its component along the normal (analytic: no twist)."""
    s = np.linspace(0, 1.5 * np.pi, 200)
    pts = 0.02 * np.column_stack([np.cos(s), np.sin(s), np.zeros_like(s)])
    F = transport_frames(tangents(pts))
    t_exact = np.column_stack([-np.sin(s), np.cos(s), np.zeros_like(s)])
    assert np.einsum("ij,ij->i", F[1:-1, :, 2], t_exact[1:-1]).min() > np.cos(1e-3)
    normal = np.array([0, 0, 1.0])
    along_normal = np.einsum("nij,i->nj", F, normal)                 # each axis's normal part
    assert np.ptp(along_normal, axis=0).max() < 1e-9                 # constant along the curve
    assert np.abs(along_normal[0]).max() > 0.99                      # one axis is the normal
    np.testing.assert_allclose(np.einsum("nji,njk->nik", F, F), np.broadcast_to(np.eye(3), F.shape),
                               atol=1e-9)


def test_transport_frames_repeat_direction_over_zero_steps():
    d = np.array([[0, 0, 0], [1.0, 0, 0], [0, 0, 0], [0, 1.0, 0]])
    F = transport_frames(d)
    np.testing.assert_allclose(F[0], np.eye(3))                      # leading zero: +z frame
    np.testing.assert_allclose(F[1][:, 2], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(F[2], F[1])                           # zero row keeps the frame
    np.testing.assert_allclose(F[3][:, 2], [0, 1, 0], atol=1e-12)


# -- capsules -----------------------------------------------------------------------------------

def test_segment_distance_against_brute_force():
    a, b = np.array([0.01, -0.02, 0.0]), np.array([0.03, 0.01, 0.02])
    p = RNG.normal(scale=0.03, size=(100, 3))
    dense = a + np.linspace(0, 1, 40001)[:, None] * (b - a)     # 1 µm apart
    brute = np.array([np.min(np.linalg.norm(dense - q, axis=1)) for q in p])
    np.testing.assert_allclose(segment_distance(p, a, b), brute, atol=1e-6)
    np.testing.assert_allclose(segment_distance(p, a, a), np.linalg.norm(p - a, axis=1))
    np.testing.assert_allclose(capsule_distance(p, a, b, 0.004), brute - 0.004, atol=1e-6)


# -- voxel grids --------------------------------------------------------------------------------

def test_voxel_grid_matches_simpleitk_geometry():
    """Index ↔ CT against SimpleITK's own (mm) transforms, with an oblique direction."""
    arr = RNG.integers(0, 3, size=(7, 9, 11)).astype(np.uint8)          # (z, y, x)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.7, 0.8, 1.25))
    image.SetOrigin((-12.0, 30.5, -200.0))
    R = Rotation.from_euler("xyz", [0.1, -0.2, 0.3]).as_matrix()
    image.SetDirection(R.ravel().tolist())
    grid = VoxelGrid.from_image(image)
    kji = RNG.uniform(0, 6, size=(20, 3))
    expected = np.array([image.TransformContinuousIndexToPhysicalPoint(
        [float(i), float(j), float(k)]) for k, j, i in kji]) * 1e-3
    np.testing.assert_allclose(grid.index_to_ct(kji), expected, atol=1e-12)
    np.testing.assert_allclose(grid.ct_to_index(expected), kji, atol=1e-9)
    # nearest-voxel lookup = SimpleITK's pixel at the rounded index; outside = fill
    idx = RNG.integers(0, [7, 9, 11], size=(30, 3))
    points = grid.index_to_ct(idx + RNG.uniform(-0.45, 0.45, size=idx.shape))
    truth = [image.GetPixel(int(i), int(j), int(k)) for k, j, i in idx]
    assert grid.lookup(arr, points).tolist() == truth
    assert grid.lookup(arr, grid.index_to_ct([[-1, 0, 0], [0, 9, 0]]), fill=9).tolist() == [9, 9]
    with pytest.raises(ValueError):
        VoxelGrid([0, 0, 0], [1e-3, 0, 1e-3])


# -- lumen and catheter fit ---------------------------------------------------------------------

def _y_junction(step=5e-4):
    """A wide parent (r 6 mm) along -z and a narrow child (r 1.5 mm) leaving its end along +x."""
    parent = resample_polyline([[0, 0, 0.05], [0, 0, 0]], [0.006, 0.006], step)
    child = resample_polyline([[0, 0, 0], [0.03, 0, 0]], [0.0015, 0.0015], step)
    centers = np.vstack([parent.points, child.points])
    radii = np.concatenate([parent.values, child.values])
    return cKDTree(centers), radii


def test_inside_tubes_is_the_union_of_tubes():
    tree, radii = _y_junction()
    q = np.array([
        [0.004, 0.0, 0.02],     # inside the parent
        [0.0, 0.0065, 0.02],    # outside the parent
        [0.02, 0.001, 0.0],     # inside the narrow child
        [0.02, 0.0025, 0.0],    # outside the child
        [0.0045, 0.0, 0.003],   # inside the parent, yet the child's axis (1.5 mm tube) is nearer
    ])
    assert inside_tubes(q, tree, radii).tolist() == [True, False, True, False, True]
    # the nearest-sample rule gets the last point wrong: that is why there is one union test
    d, i = tree.query(q[-1])
    assert d > radii[i]
    # clearance shrinks (positive) or widens (negative) every tube
    assert inside_tubes(q[:1], tree, radii, clearance=0.0025).tolist() == [False]
    assert inside_tubes(q[1:2], tree, radii, clearance=-0.001).tolist() == [True]


def test_catheter_fits_and_tendon_bending():
    assert catheter_fits([0.002, 0.00175, 0.0017], 0.00175).tolist() == [True, True, False]
    assert catheter_fits(0.0025, 0.00175, clearance=0.001).tolist() is False
    # κ = τ r / EI: a 180° bend of a 40 mm section needs κ = π / L
    kappa = np.pi / 0.04
    tau = tendon_tension(kappa, 1.2e-3, 2.5e-4)
    assert tau == pytest.approx(np.pi / 0.04 * 2.5e-4 / 1.2e-3)
    assert tendon_curvature(tau, 1.2e-3, 2.5e-4) == pytest.approx(kappa)
