"""Simulated sensors (bronchonav.sensors) and the EM sample accumulator, against independent
expectations: Gaussian statistics of the noise, the breathing formula at the lung base, exact
cylinder geometry for the cone-beam CT and the camera, grid-cell counting for the thinning."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from bronchonav.geometry.transforms import apply, invert, make_transform, random_transform
from bronchonav.imaging.camera import CameraIntrinsics, TipCamera, look_at
from bronchonav.registration.samples import EMSampleAccumulator
from bronchonav.sensors import (BreathingModel, ConeBeamCT, ConeBeamCTConfig, EMSensor,
                                TipCameraSensor, gross_outliers, patient_transform)

T_CT_PATIENT = make_transform(Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix(),
                              [0.02, -0.01, 0.03])


def _tip(p, forward=(0.0, 0.0, -1.0)):
    return look_at(np.asarray(p, dtype=float), np.asarray(forward))


# -- EM ---------------------------------------------------------------------------------------

def test_em_noise_has_the_configured_gaussian_statistics():
    """2000 readings of a still tip: the position error has mean 0 and std noise_m per axis, the
    orientation error is a rotation vector with std angle_noise_rad per component."""
    noise, angle = 1e-3, 0.02
    sensor = EMSensor(T_CT_PATIENT, None, noise_m=noise, angle_noise_rad=angle, seed=4)
    T_tip = _tip([0.01, 0.02, -0.05], [0.3, 0.2, -1.0])
    T_true = invert(T_CT_PATIENT) @ T_tip
    readings = [sensor.read(T_tip, 0.01 * k) for k in range(2000)]
    err = np.array([r.p_patient for r in readings]) - T_true[:3, 3]
    assert np.all(np.abs(err.mean(axis=0)) < 4 * noise / np.sqrt(2000))
    assert np.allclose(err.std(axis=0), noise, rtol=0.1)
    rotvec = np.array([Rotation.from_matrix(r.T_patient_sensor[:3, :3] @ T_true[:3, :3].T).as_rotvec()
                       for r in readings])
    assert np.all(np.abs(rotvec.mean(axis=0)) < 4 * angle / np.sqrt(2000))
    assert np.allclose(rotvec.std(axis=0), angle, rtol=0.1)
    # the same seed gives the same readings
    again = EMSensor(T_CT_PATIENT, None, noise_m=noise, angle_noise_rad=angle, seed=4)
    assert np.array_equal(again.read(T_tip, 0.0).T_patient_sensor, readings[0].T_patient_sensor)


def test_em_reading_at_the_lung_base_moves_by_the_breathing_amplitude():
    """A tip at the lung base, far from the hilum (weight 1), at peak inspiration (phase 0.5,
    t = period / 2) is displaced by amplitude * (0, -ap, -1) (the breathing formula with no
    lateral term), then seen through T_patient_ct."""
    model = BreathingModel(amplitude=0.01, z_top=0.1, z_base=-0.1, hilum=(0.0, 0.0, 0.1),
                           tether=0.05, ap=0.25, lateral=0.0, period=4.0)
    sensor = EMSensor(T_CT_PATIENT, model, noise_m=0.0, angle_noise_rad=0.0)
    base = np.array([0.0, 0.0, -0.1])
    reading = sensor.read(_tip(base), t=2.0)
    assert reading.phase == pytest.approx(0.5)
    expected = apply(invert(T_CT_PATIENT), base + [0.0, -0.0025, -0.01])
    assert np.allclose(reading.p_patient, expected, atol=1e-12)
    assert np.allclose(sensor.read(_tip(base), t=0.0).p_patient, apply(invert(T_CT_PATIENT), base),
                       atol=1e-12)  # the CT shows phase 0


def test_em_moved_tip_axis_follows_the_deformed_airway():
    """The carried tip's z axis is the direction in which the deformation carries a short
    segment along the tip axis (central difference, 1 um; the model's own forward difference of
    0.1 mm agrees to about 1e-5 rad), and the frame stays a rotation."""
    model = BreathingModel(amplitude=0.01, z_top=0.1, z_base=-0.1, hilum=(0.0, 0.0, 0.05),
                           tether=0.08, lateral=0.2, half_width=0.1)
    sensor = EMSensor(np.eye(4), model, noise_m=0.0, angle_noise_rad=0.0)
    T = _tip([0.03, 0.01, -0.04], [0.5, 0.3, -1.0])
    moved = sensor.moved_tip(T, 0.4)
    h = 1e-6
    seg = model.deform(T[:3, 3] + h * T[:3, 2], 0.4)[0] - model.deform(T[:3, 3] - h * T[:3, 2], 0.4)[0]
    assert np.arccos(min(moved[:3, 2] @ seg / np.linalg.norm(seg), 1.0)) < 3e-5
    assert np.allclose(moved[:3, :3] @ moved[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(moved[:3, :3]) == pytest.approx(1.0)
    assert np.linalg.norm(moved[:3, 3] - T[:3, 3]) > 1e-3  # it did move


def test_em_reads_the_tip_of_a_catheter_state():
    """A catheter inserted 50 mm straight down a straight trachea from its top (0, 0, 0.1):
    the tip is at (0, 0, 0.05) (CT), so the noise-free reading is T_patient_ct of that point,
    with the sensor axis along the trachea (-z)."""
    from bronchonav.airway.tree import AirwayTree, Branch
    from bronchonav.catheter import CatheterCommand, CatheterModel, CatheterParams

    tree = AirwayTree([Branch(0, None, 0, [[0, 0, 0.1], [0, 0, 0.0]], [0.009, 0.009])])
    state = CatheterModel(CatheterParams.default(), tree=tree, n_nodes=10).step(
        CatheterCommand(insertion=0.05))
    reading = EMSensor(T_CT_PATIENT, None, 0.0, 0.0).read_state(state, 1.0)
    assert np.allclose(reading.p_patient, apply(invert(T_CT_PATIENT), [0.0, 0.0, 0.05]), atol=1e-9)
    assert np.allclose(reading.T_patient_sensor[:3, 2], invert(T_CT_PATIENT)[:3, :3] @ [0, 0, -1],
                       atol=1e-9)


def test_em_sweep_and_single_readings_follow_the_same_model():
    """Noise-free, a sweep's samples equal one reading per sample; with noise, its position
    errors have std noise_m and its axes deviate by the orientation noise (the angle of a
    rotation vector with two components of std a perpendicular to the axis: Rayleigh, mean
    a sqrt(pi / 2))."""
    model = BreathingModel(amplitude=0.01, z_top=0.1, z_base=-0.1, hilum=(0.0, 0.0, 0.05))
    rng = np.random.default_rng(1)
    p = rng.uniform(-0.05, 0.05, (500, 3))
    axes = rng.normal(size=(500, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    phases = rng.random(500)
    clean = EMSensor(T_CT_PATIENT, model, 0.0, 0.0).sweep(p, axes, phases)
    single = EMSensor(T_CT_PATIENT, model, 0.0, 0.0)
    for i in range(0, 500, 50):
        T = make_transform(Rotation.align_vectors([axes[i]], [[0.0, 0.0, 1.0]])[0].as_matrix(), p[i])
        r = single.read_at_phase(T, phases[i])
        assert np.allclose(r.p_patient, clean.positions_patient[i], atol=1e-12)
        assert np.allclose(r.T_patient_sensor[:3, 2], clean.directions_patient[i], atol=1e-9)
    a = np.radians(3.0)
    noisy = EMSensor(T_CT_PATIENT, model, 1e-3, a, seed=rng).sweep(p, axes, phases)
    assert np.allclose((noisy.positions_patient - clean.positions_patient).std(axis=0), 1e-3,
                       rtol=0.15)
    cos = np.einsum("ij,ij->i", noisy.directions_patient, clean.directions_patient)
    assert np.mean(np.arccos(np.clip(cos, -1, 1))) == pytest.approx(a * np.sqrt(np.pi / 2), rel=0.1)
    assert not noisy.outliers.any()  # no outliers configured


def test_gross_outliers_fraction_and_lengths():
    mask, offsets = gross_outliers(20000, 0.05, (0.01, 0.05), np.random.default_rng(2))
    assert mask.mean() == pytest.approx(0.05, abs=0.006)  # 4 binomial standard deviations
    lengths = np.linalg.norm(offsets[mask], axis=1)
    assert lengths.min() >= 0.01 and lengths.max() <= 0.05
    assert lengths.mean() == pytest.approx(0.03, abs=1e-3)  # uniform on [10, 50] mm
    assert np.all(offsets[~mask] == 0)


def test_patient_transform_is_the_recorded_demo_patient():
    """The node's default patient (seed 1) is the transform the recorded demo samples in
    test/data were taken with: random_transform with seed 1, 50 mm and 0.5236 rad."""
    assert np.array_equal(patient_transform(1),
                          random_transform(np.random.default_rng(1), 0.05, 0.5236))


# -- cone-beam CT -----------------------------------------------------------------------------

def _cylinder_surface(radius, length, n_around=90, n_along=200):
    a = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
    z = np.linspace(0, length, n_along)
    A, Z = np.meshgrid(a, z)
    return np.column_stack([radius * np.cos(A).ravel(), radius * np.sin(A).ravel(), -Z.ravel()])


def test_cbct_scan_lies_on_the_true_surface_with_its_noise():
    """A 6 mm-radius straight airway: noise-free, every reported point (mapped back by the true
    transform) lies on the cylinder and in the field of view; with noise, the radial residual
    has std noise_m; a 0.5 mm airway beside it is not resolved."""
    wide = _cylinder_surface(0.006, 0.1)
    narrow = _cylinder_surface(0.0005, 0.1, 12, 50) + [0.03, 0.0, 0.0]
    surface = np.vstack([wide, narrow])
    radius = np.concatenate([np.full(len(wide), 0.006), np.full(len(narrow), 0.0005)])
    target = np.array([0.0, 0.0, -0.05])
    cfg = ConeBeamCTConfig(radius=0.02, keep=0.7, n_points=1500, noise_m=0.0, outlier_fraction=0.0)
    scan = ConeBeamCT(surface, radius, T_CT_PATIENT, None, cfg, seed=0).scan(target, 0.0)
    p_ct = apply(T_CT_PATIENT, scan)
    assert len(scan) == 1500
    assert np.allclose(np.hypot(p_ct[:, 0], p_ct[:, 1]), 0.006, atol=1e-12)
    assert np.linalg.norm(p_ct - target, axis=1).max() <= 0.02
    # lost patches: fewer than 70% of the field of view's points can be drawn from
    in_view = np.count_nonzero(np.linalg.norm(wide - target, axis=1) <= 0.02)
    assert len(np.unique(np.round(p_ct, 9), axis=0)) == 1500 < 0.7 * in_view + 1
    noisy = ConeBeamCT(surface, radius, T_CT_PATIENT, None,
                       ConeBeamCTConfig(radius=0.02, noise_m=5e-4, outlier_fraction=0.0),
                       seed=0).scan(target, 0.0)
    q = apply(T_CT_PATIENT, noisy)
    assert (np.hypot(q[:, 0], q[:, 1]) - 0.006).std() == pytest.approx(5e-4, rel=0.15)


def test_cbct_scan_under_breathing_sees_the_moved_surface():
    model = BreathingModel(amplitude=0.01, z_top=0.0, z_base=-0.1, hilum=(0.0, 0.0, 0.0))
    surface = _cylinder_surface(0.006, 0.1)
    cfg = ConeBeamCTConfig(radius=0.02, keep=1.0, n_points=400, noise_m=0.0, outlier_fraction=0.0)
    target = np.array([0.0, 0.0, -0.08])
    rest = ConeBeamCT(surface, np.full(len(surface), 0.006), np.eye(4), model, cfg, 3).scan(target, 0.0)
    peak = ConeBeamCT(surface, np.full(len(surface), 0.006), np.eye(4), model, cfg, 3).scan(target, 0.5)
    # same points drawn (same seed, breathing applied after the draw): moved by the model
    assert np.allclose(peak, model.deform(rest, 0.5), atol=1e-12)
    assert np.median(rest[:, 2] - peak[:, 2]) > 5e-3  # caudal motion near the base


# -- tip camera -------------------------------------------------------------------------------

def _tube_mesh(radius=0.005, length=0.1, sides=64, rings=101):
    """A closed-side polygonal tube along -z from the origin (no caps)."""
    a = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    z = -np.linspace(0, length, rings)
    v = np.array([[radius * np.cos(t), radius * np.sin(t), zz] for zz in z for t in a])
    tri = []
    for i in range(rings - 1):
        for j in range(sides):
            a0, a1 = i * sides + j, i * sides + (j + 1) % sides
            b0, b1 = a0 + sides, a1 + sides
            tri += [[a0, b0, a1], [a1, b0, b1]]
    return v, np.array(tri)


def test_tip_camera_sees_the_tube_wall_and_places_it_by_its_em_pose():
    """On the axis of a 5 mm polygonal tube looking down it: every wall point seen is at the
    tube radius from the optical axis (to the facets' sagitta) and, placed by a noise-free EM
    pose, at the tube radius from the tube axis in the CT frame."""
    radius, sides = 0.005, 64
    v, tri = _tube_mesh(radius, sides=sides)
    camera = TipCamera(v, tri, intrinsics=CameraIntrinsics(64, 48), nthreads=1)
    em = EMSensor(T_CT_PATIENT, None, noise_m=0.0, angle_noise_rad=0.0)
    sensor = TipCameraSensor(camera, em=em, stride=1, max_depth=0.04)
    reading = sensor.capture(_tip([0.0, 0.0, -0.02]))
    assert reading.frame.depth.shape == (48, 64)
    r_cam = np.hypot(reading.points_cam[:, 0], reading.points_cam[:, 1])
    assert len(r_cam) > 1000
    assert r_cam.min() >= radius * np.cos(np.pi / sides) - 1e-6 and r_cam.max() <= radius + 1e-6
    p_ct = apply(T_CT_PATIENT, reading.points_patient())
    assert np.allclose(np.hypot(p_ct[:, 0], p_ct[:, 1]), r_cam, atol=1e-6)
    assert np.all(p_ct[:, 2] < -0.02) and reading.points_cam[:, 2].max() <= 0.04


def test_tip_camera_under_breathing_reports_the_moved_wall_in_the_moved_camera():
    """Wall points seen in the breathing patient, placed by the carried camera pose, are the
    rest wall points carried by the deformation (the camera moves with the airway)."""
    v, tri = _tube_mesh()
    model = BreathingModel(amplitude=0.01, z_top=0.0, z_base=-0.1, hilum=(0.0, 0.0, 0.05))
    camera = TipCamera(v, tri, intrinsics=CameraIntrinsics(32, 24), nthreads=1)
    rest = TipCameraSensor(camera, None).capture(_tip([0.0, 0.0, -0.03]))
    moving = TipCameraSensor(camera, model).capture(_tip([0.0, 0.0, -0.03]), phase=0.5)
    T = _tip([0.0, 0.0, -0.03])
    assert np.allclose(apply(model.carry(T, 0.5), moving.points_cam),
                       model.deform(apply(T, rest.points_cam), 0.5), atol=1e-9)
    assert not np.allclose(moving.points_cam, rest.points_cam, atol=1e-4)
    with pytest.raises(ValueError, match="no EM"):
        rest.points_patient()


# -- EM sample accumulation -------------------------------------------------------------------

def test_accumulator_keeps_one_sample_per_cell_streaming_or_in_bulk():
    """A sweep along a line plus a dwell: the streaming accumulator keeps the first sample of
    each cell (counted independently from the integer cell coordinates) and agrees with the
    bulk thinning; a 3 mm-thinned set passes a 1.5 mm thinning unchanged (nested cells)."""
    rng = np.random.default_rng(0)
    line = np.outer(np.linspace(0, 0.06, 400), [0.6, 0.0, 0.8]) + 1e-4
    dwell = [0.0301, 0.0102, 0.0203] + rng.uniform(-4e-4, 4e-4, (1000, 3))
    pts = np.vstack([line, dwell, line[::-1]])
    acc = EMSampleAccumulator(3e-3)
    kept = [i for i, p in enumerate(pts) if acc.add(p, [0.0, 0.0, 1.0])]
    cells = {tuple(c) for c in np.floor(pts / 3e-3).astype(int)}
    assert len(acc) == len(cells)
    assert kept == list(EMSampleAccumulator.thin(pts, 3e-3))
    assert np.array_equal(acc.positions, pts[kept]) and acc.directions.shape == (len(kept), 3)
    dwell_cells = {tuple(c) for c in np.floor(dwell / 3e-3).astype(int)}
    assert len(dwell_cells) <= 8  # a 0.8 mm cube spans at most two cells per axis
    thinned = pts[kept]
    assert len(EMSampleAccumulator.thin(thinned, 1.5e-3)) == len(thinned)
    assert acc.clear() == len(kept) and len(acc) == 0


def test_accumulator_drops_the_oldest_beyond_its_limit_and_frees_its_cell():
    acc = EMSampleAccumulator(1e-3, max_samples=3)
    for x in range(5):
        acc.add([x * 2e-3, 0.0, 0.0])
    assert acc.positions[:, 0].tolist() == pytest.approx([4e-3, 6e-3, 8e-3])
    assert acc.add([1e-4, 0.0, 0.0])  # the first cell was freed with its sample
    assert acc.directions is None  # samples came without axes
    assert len(EMSampleAccumulator.thin(np.zeros((5, 3)), 0.0)) == 5
    with pytest.raises(ValueError):
        EMSampleAccumulator(-1.0)
