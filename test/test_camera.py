"""Tip camera: intrinsics, depth against exact tube geometry, the carina view, shading, noise."""

import functools

import numpy as np
import open3d as o3d
import pytest
from scipy.stats import spearmanr
from skimage.measure import label

from bronchonav.airway.tree import AirwayTree, Branch
from bronchonav.errors import InputError, MapError
from bronchonav.imaging.camera import CameraIntrinsics, CameraNoise, TipCamera, look_at
from bronchonav.imaging.depth_cloud import depth_to_points
from bronchonav.imaging.tube_mesh import tube_mesh

R_TUBE = 0.009


def y_tree() -> AirwayTree:
    """Trachea (r 9 mm, 60 mm, vertical, open at the top) splitting into two main bronchi."""
    return AirwayTree([
        Branch(0, None, 0, [[0, 0, 0.06], [0, 0, 0]], [0.009, 0.009], name="trachea"),
        Branch(1, 0, 1, [[0, 0, 0], [0.022, 0, -0.03]], [0.006, 0.006], name="LMB"),
        Branch(2, 0, 1, [[0, 0, 0], [-0.018, 0, -0.035]], [0.0065, 0.0065], name="RMB"),
    ])


@pytest.fixture(scope="module")
def cylinder():
    """An exact, finely tessellated cylinder: axis z through the origin, radius 9 mm, 200 mm long."""
    m = o3d.geometry.TriangleMesh.create_cylinder(radius=R_TUBE, height=0.2, resolution=720, split=40)
    return np.asarray(m.vertices), np.asarray(m.triangles)


def cylinder_range(origin, dirs, radius):
    """Exact distance along unit rays from a point on the z axis to the cylinder wall."""
    return radius / np.linalg.norm(dirs[:, :2], axis=1)


def test_intrinsics_focal_length_and_projection_round_trip():
    intr = CameraIntrinsics(320, 240, np.radians(110.0))
    assert intr.fx == pytest.approx(160.0 / np.tan(np.radians(55.0)))
    assert np.allclose(intr.K, [[intr.fx, 0, 159.5], [0, intr.fx, 119.5], [0, 0, 1]])
    for k1, k2 in [(0.0, 0.0), (-0.12, 0.01)]:
        intr = CameraIntrinsics(64, 48, np.radians(110.0), k1=k1, k2=k2)
        uv, front = intr.project(intr.rays)
        v, u = np.mgrid[0:48, 0:64]
        assert front.all()
        assert np.abs(uv - np.column_stack([u.ravel(), v.ravel()])).max() < 1e-6
        assert np.allclose(np.linalg.norm(intr.rays, axis=1), 1.0)


def test_intrinsics_reject_bad_values():
    with pytest.raises(InputError):
        CameraIntrinsics(320, 240, np.radians(190.0))
    with pytest.raises(InputError):
        CameraIntrinsics(1, 240)
    with pytest.raises(InputError, match="folds"):
        CameraIntrinsics(320, 240, np.radians(110.0), k1=-0.6).rays


def test_depth_matches_exact_cylinder(cylinder):
    """Camera on the axis, tilted 50° off it: every pixel's depth against the exact ray–cylinder hit."""
    cam = TipCamera(*cylinder)
    tilt = np.radians(50.0)
    T = look_at([0, 0, 0], [np.sin(tilt), 0.0, -np.cos(tilt)])
    frame = cam.render(T)
    dirs_ct = cam.intrinsics.rays @ T[:3, :3].T
    t = cylinder_range(np.zeros(3), dirs_ct, R_TUBE)
    inside = np.abs(t * dirs_ct[:, 2]) < 0.095  # rays reaching the wall before an end cap
    z_exact = (t * cam.intrinsics.rays[:, 2]).reshape(frame.depth.shape)
    err = np.abs(frame.depth - z_exact)[inside.reshape(frame.depth.shape)]
    # image centre: the optical axis meets the wall at R / sin(tilt)
    centre = frame.depth[119:121, 159:161]
    centre_exact = z_exact[119:121, 159:161]
    assert np.all(np.abs(centre - centre_exact) < 1e-3)
    assert np.abs(centre.mean() - R_TUBE / np.sin(tilt)) < 1e-3
    assert np.percentile(err, 99) < 1e-4


def test_depth_on_marching_cubes_tube_within_1mm():
    """The map-like lumen mesh (contoured distance field) of a straight tube, at the image centre."""
    tree = AirwayTree([Branch(0, None, 0, [[0, 0, 0.05], [0, 0, -0.05]], [R_TUBE, R_TUBE])])
    cam = TipCamera(*tube_mesh(tree, spacing=6e-4))
    for tilt_deg in (30.0, 60.0, 90.0):
        tilt = np.radians(tilt_deg)
        T = look_at([0.002, -0.001, 0.0], [np.sin(tilt) * np.cos(0.3), np.sin(tilt) * np.sin(0.3),
                                            -np.cos(tilt)])
        frame = cam.render(T)
        i, j = 120, 160
        d = T[:3, :3] @ cam.intrinsics.rays[i * 320 + j]
        o = T[:3, 3]
        a, b, c = d[0] ** 2 + d[1] ** 2, 2 * (o[0] * d[0] + o[1] * d[1]), o[0] ** 2 + o[1] ** 2 - R_TUBE ** 2
        t = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
        assert abs(frame.depth[i, j] - t * cam.intrinsics.rays[i * 320 + j, 2]) < 1e-3


def test_carina_view_shows_two_dark_holes():
    """From the trachea looking down at the carina: two separate far regions, left and right, dark."""
    cam = TipCamera(*tube_mesh(y_tree(), spacing=5e-4))
    frame = cam.render(look_at([0, 0, 0.025], [0, 0, -1]))
    assert frame.hit.mean() > 0.95
    carina = float(np.mean(frame.depth[118:122, 158:162]))
    assert 0.025 < carina < 0.045  # the ridge between the bronchi, below the camera
    far = frame.depth > carina + 0.01
    labels = label(far, connectivity=2)
    sizes = np.bincount(labels.ravel())[1:]
    big = np.flatnonzero(sizes > 100) + 1
    assert len(big) == 2 and sizes.sum() == sizes[big - 1].sum()
    cols = sorted(np.nonzero(labels == k)[1].mean() for k in big)
    assert cols[0] < 160 < cols[1]  # one hole each side of the carina
    lum = frame.color.astype(float).mean(axis=2)
    near_wall = frame.depth < 0.02
    assert lum[far].mean() < 0.6 * lum[near_wall].mean()


def test_brightness_falls_with_distance(cylinder):
    cam = TipCamera(*cylinder)
    frame = cam.render(look_at([0, 0, 0.05], [0, 0, -1]))
    rng = np.linalg.norm(depth_to_points(frame.depth, frame.intrinsics), axis=1)
    lum = frame.color.astype(float).mean(axis=2)[frame.hit]
    unsaturated = frame.color.max(axis=2)[frame.hit] < 250
    assert unsaturated.mean() > 0.5
    rho = spearmanr(rng[unsaturated], lum[unsaturated]).statistic
    assert rho < -0.98


def test_depth_cloud_lies_on_the_wall_with_distortion(cylinder):
    intr = CameraIntrinsics(160, 120, np.radians(110.0), k1=-0.1, k2=0.01)
    cam = TipCamera(*cylinder, intrinsics=intr)
    T = look_at([0.003, 0.001, 0.0], [0.5, 0.2, -1.0])
    frame = cam.render(T)
    p_cam = depth_to_points(frame.depth, intr, stride=2, max_depth=0.08)
    p_ct = p_cam @ T[:3, :3].T + T[:3, 3]
    assert len(p_cam) > 2000
    wall = np.abs(np.hypot(p_ct[:, 0], p_ct[:, 1]) - R_TUBE)
    assert np.percentile(wall[np.abs(p_ct[:, 2]) < 0.09], 99) < 1e-4


def test_noise_is_seeded_and_has_the_configured_spread(cylinder):
    noise = CameraNoise(depth_std=5e-4, color_std=0.02)
    T = look_at([0, 0, 0.0], [1.0, 0.0, -1.0])
    clean = TipCamera(*cylinder).render(T)
    a = TipCamera(*cylinder, noise=noise, seed=3).render(T)
    b = TipCamera(*cylinder, noise=noise, seed=3).render(T)
    c = TipCamera(*cylinder, noise=noise, seed=4).render(T)
    assert np.array_equal(a.depth, b.depth) and np.array_equal(a.color, b.color)
    assert not np.array_equal(a.depth, c.depth)
    diff = (a.depth - clean.depth)[clean.hit]
    assert np.std(diff) == pytest.approx(5e-4, rel=0.05)
    assert abs(np.mean(diff)) < 2e-5


def test_bad_inputs_raise(cylinder):
    with pytest.raises(MapError):
        TipCamera(np.zeros((0, 3)), np.zeros((0, 3), int))
    with pytest.raises(MapError):
        TipCamera(cylinder[0], cylinder[1] + len(cylinder[0]))
    cam = TipCamera(*cylinder)
    with pytest.raises(InputError):
        cam.render(np.full((4, 4), np.nan))
    with pytest.raises(InputError):
        look_at([0, 0, 0], [0, 0, 0])
    with pytest.raises(InputError):
        depth_to_points(np.zeros((10, 10)), cam.intrinsics)


@functools.lru_cache(maxsize=1)
def phantom_gt_map():
    """The default phantom's ground-truth map (lumen mesh from its true lumen), built once."""
    from bronchonav.ct.phantom import phantom_config, phantom_ground_truth_map

    return phantom_ground_truth_map(phantom_config("default"))


def test_phantom_carina_from_the_trachea_two_dark_holes():
    """On the phantom's ground-truth lumen: the main carina and both main bronchi as two holes.

    The phantom's carina is blunt and off the tracheal axis (right main bronchus 25° from the
    vertical, left 45°), so the far-depth threshold is scanned from the bifurcation point down:
    beyond the carina ridge the far region must split into exactly two large regions.
    """
    m = phantom_gt_map()
    trachea = m.tree.trachea
    axis = trachea.direction
    eye = trachea.end - 0.02 * axis  # 20 mm above the branch point, on the tracheal axis
    frame = TipCamera.from_map(m).render(look_at(eye, axis))
    lum = frame.color.astype(float).mean(axis=2)
    splits = []
    for threshold in np.arange(0.02, 0.06, 0.0025):
        labels = label(frame.depth > threshold, connectivity=2)
        sizes = np.bincount(labels.ravel())[1:]
        big = np.flatnonzero(sizes > 100) + 1
        if len(big) == 2:
            splits.append(threshold)
            assert all(lum[labels == k].mean() < 0.6 * lum[frame.depth < 0.015].mean() for k in big)
    assert len(splits) >= 3  # a robust split over several millimetres of threshold
    assert splits[0] > 0.02  # and not in front of the bifurcation


def test_phantom_trachea_depth_matches_the_true_tube_within_1mm():
    """Camera on the tracheal centerline looking 60° off its axis; centre depth vs the true radius."""
    m = phantom_gt_map()
    trachea = m.tree.trachea
    axis = trachea.direction
    side = np.cross(axis, [1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    cam = TipCamera.from_map(m)
    for frac in (0.4, 0.6):
        eye = trachea.start + frac * (trachea.end - trachea.start)
        for sign in (1.0, -1.0):
            tilt = np.radians(60.0)
            view = np.cos(tilt) * axis + np.sin(tilt) * sign * side
            frame = cam.render(look_at(eye, view))
            ray = frame.T_ct_cam[:3, :3] @ cam.intrinsics.rays[120 * 320 + 160]
            # exact hit on the tapered tube: radius interpolated at the hit's arc length
            t = 0.009 / np.sin(tilt)
            for _ in range(5):
                s = (eye + t * ray - trachea.start) @ axis
                seg = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(trachea.points, axis=0), axis=1))])
                r = np.interp(s, seg, trachea.radii)
                t = r / np.linalg.norm(ray - (ray @ axis) * axis)
            assert abs(frame.depth[120, 160] - t * cam.intrinsics.rays[120 * 320 + 160, 2]) < 1e-3
