"""Camera-based registration: depth frames near the target registered to the twin's lumen surface.

The ``camera`` scenario of ``bronchonav register``. It extends the registration issue's
``breathing`` scenario (:func:`bronchonav.registration.simulate.simulate_scenario`: an unknown
patient→CT transform, respiratory motion, EM sweeps of the central airways and near the target)
with tip-camera depth frames taken while the scope approaches the target:

1. Stations along the ground-truth airway path to the nodule (the last ``path_length`` of it, in
   airways at least ``min_lumen_radius`` wide), each slightly off the centerline, looking ahead.
2. At each station the tip camera (:class:`bronchonav.sensors.TipCameraSensor`) renders depth
   (with noise) on the ground-truth lumen mesh at rest; the visible wall points are moved by the
   breathing deformation at the frame's phase, as is the camera, and expressed in the moved
   camera frame — what the camera sees in the breathing patient. Frames are
   respiratory-gated: captured within ``gate_width / 2`` cycles of the evaluation phase.
3. The camera pose in the patient (EM) frame comes from the 6-DOF EM sensor at the tip
   (:class:`bronchonav.sensors.EMSensor`), with its position and rotation noise; it maps each
   frame's points into the patient frame.
4. Registrations, each scored by the TRE at the true target at the evaluation phase
   (:meth:`~bronchonav.registration.simulate.GroundTruth.tre`), as for the other scenarios:

   - ``em only``: global centerline ICP of the survey, then the local EM refinement
     (:func:`~bronchonav.registration.register.register_em`);
   - ``camera alone``: open3d point-to-plane ICP with a Tukey kernel of the camera cloud to the
     twin's lumen surface near the target
     (:func:`~bronchonav.registration.register.register_cbct`), from the global EM survey
     registration (no local EM sweep);
   - ``combined``: :func:`joint_icp`, a robust Gauss–Newton ICP of the EM samples (to the
     centerlines) and the camera frames (to the surface) together, from the global EM
     registration, estimating each frame's pose error alongside the transform.

Frames: CT (LPS, m), patient (EM field generator, m), camera optical frame (m).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from bronchonav.airway.tree import AirwayTree
from bronchonav.errors import InputError, RegistrationError
from bronchonav.geometry import apply, arc_length, make_transform, rotation_about
from bronchonav.imaging.camera import CameraIntrinsics, CameraNoise, TipCamera
from bronchonav.imaging.flythrough import route_poses, tree_path_waypoints
from bronchonav.maps import AirwayMap
from bronchonav.registration.register import (RegistrationConfig, local_weights, register_cbct,
                                              register_em)
from bronchonav.registration.simulate import SimulationConfig, scenario_config, simulate_scenario
from bronchonav.registration.twin import Twin
from bronchonav.sensors import EMSensor, TipCameraSensor


@dataclass(frozen=True)
class CameraScenarioConfig:
    """Parameters of the camera scenario (SI units).

    Attributes
    ----------
    simulation : SimulationConfig
        The EM/breathing simulation (default: the ``breathing`` scenario, 10 mm amplitude).
    registration : RegistrationConfig
        Registration parameters; ``cbct_radius`` is the radius (m) of the twin surface around
        the target used for the camera ICP.
    n_frames : int
        Depth frames taken along the approach.
    path_length : float
        The frames are spread over the last this much of the approach path (m).
    min_lumen_radius : float
        The scope enters airways at least this wide (lumen radius, m): a 3 mm scope.
    lateral_offset : float
        The camera sits up to this fraction of the lumen radius off the centerline.
    intrinsics : CameraIntrinsics
        Camera used for registration frames (small images suffice).
    noise : CameraNoise
        Depth noise (as from stereo or learned monocular depth).
    max_depth : float
        Depth beyond this (m) is not used (noisy far walls, openings).
    stride : int
        Pixel stride of the back-projection.
    voxel : float
        Voxel size (m) each frame's point cloud is thinned to.
    pose_position_noise : float
        EM tip sensor position noise per axis (m) for the camera pose.
    pose_rotation_noise : float
        EM tip sensor rotation noise (rad, per axis of a rotation vector).
    gate_width : float
        Respiratory gating: frames are captured at breathing phases within ``gate_width / 2``
        cycles of the evaluation phase (the navigation system triggers on a respiratory signal);
        1.0 captures at any phase (no gating).
    em_bias_prior : float or None
        The EM samples are collected over the whole breathing cycle, so near the target they sit
        where the airway is on average (at mid-inspiration), not where it is at the gated phase.
        With a value (m), :func:`joint_icp` estimates that offset with this prior standard
        deviation, leaving the local translation to the gated camera; ``None`` (default) assumes
        no offset, right when gating at mid-inspiration.
    """

    simulation: SimulationConfig = field(default_factory=lambda: scenario_config("breathing"))
    registration: RegistrationConfig = field(default_factory=lambda: RegistrationConfig(cbct_radius=0.05))
    n_frames: int = 8
    path_length: float = 0.03
    min_lumen_radius: float = 1.5e-3
    lateral_offset: float = 0.3
    intrinsics: CameraIntrinsics = field(default_factory=lambda: CameraIntrinsics(160, 120))
    noise: CameraNoise = field(default_factory=lambda: CameraNoise(depth_std=3e-4, depth_rel_std=0.02))
    max_depth: float = 0.03
    stride: int = 2
    voxel: float = 1e-3
    pose_position_noise: float = 1e-3
    pose_rotation_noise: float = float(np.radians(1.0))
    gate_width: float = 0.04
    em_bias_prior: float | None = None


@dataclass
class CameraTrialSetup:
    """What every trial reuses: the twin, the ground truth and its camera.

    Build it with :func:`camera_trial_setup`.
    """

    airway_map: AirwayMap
    twin: Twin
    ground_truth: Twin
    gt_camera: TipCamera
    targets: list
    config: CameraScenarioConfig


def _ground_truth_map(ground_truth) -> AirwayMap:
    """The ground truth as a map with a lumen mesh (see :func:`camera_trial_setup`)."""
    from bronchonav.registration.evaluate import GroundTruthSource

    if isinstance(ground_truth, GroundTruthSource):
        twin = ground_truth.twin
        has_mesh = twin.mesh_vertices is not None and twin.mesh_triangles is not None
        ground_truth = AirwayMap("ground_truth", twin.tree, list(ground_truth.nodules),
                                 twin.mesh_vertices if has_mesh else np.zeros((0, 3)),
                                 twin.mesh_triangles if has_mesh else np.zeros((0, 3), dtype=int))
    if isinstance(ground_truth, AirwayMap):
        if len(ground_truth.mesh_triangles):
            return ground_truth
        ground_truth = ground_truth.tree
    if isinstance(ground_truth, AirwayTree):
        from bronchonav.imaging.tube_mesh import tube_mesh

        v, t = tube_mesh(ground_truth, spacing=7e-4)
        return AirwayMap("ground_truth_tubes", ground_truth, [], v, t)
    from bronchonav.ct.phantom import PhantomConfig, phantom_ground_truth_map

    if isinstance(ground_truth, PhantomConfig):
        return phantom_ground_truth_map(ground_truth)
    raise InputError(f"ground truth must be a GroundTruthSource, an AirwayMap, an AirwayTree or a "
                     f"PhantomConfig, got {type(ground_truth).__name__}")


def camera_trial_setup(airway_map: AirwayMap, ground_truth, nodule_id: str | list | None = None,
                       config: CameraScenarioConfig | None = None) -> CameraTrialSetup:
    """Prepare the camera scenario once for many trials.

    Parameters
    ----------
    airway_map : AirwayMap
        The twin registered to (its tree, lumen mesh and nodules, CT frame).
    ground_truth : GroundTruthSource, AirwayMap, AirwayTree or PhantomConfig
        The patient's true airways: :func:`bronchonav.registration.evaluate.ground_truth_for`'s
        result, a ground-truth map with a lumen mesh, a tree (rendered as tubes) or a phantom
        configuration (whose ground-truth map is built).
    nodule_id : str or list of str, optional
        Target nodule(s); each trial draws one. By default the map's nodules marked as near an
        airway (all nodules if none is marked).
    config : CameraScenarioConfig, optional
    """
    cfg = config or CameraScenarioConfig()
    gt_map = _ground_truth_map(ground_truth)
    if nodule_id is not None:
        ids = [nodule_id] if isinstance(nodule_id, str) else list(nodule_id)
        for i in ids:
            airway_map.nodule(i)
    else:
        near = [n.id for n in airway_map.nodules if "near" in (n.note or "")]
        ids = near or [n.id for n in airway_map.nodules]
    gt_ids = {n.id for n in gt_map.nodules} if gt_map.nodules else None
    targets = []
    for i in ids:
        gt_nodule = next((n for n in gt_map.nodules if n.id == i), None) if gt_ids else None
        targets.append((airway_map.nodule(i), gt_nodule or airway_map.nodule(i)))
    if not targets:
        raise InputError(f"map {airway_map.name!r} has no nodules to register near")
    camera = TipCamera.from_map(gt_map, intrinsics=cfg.intrinsics, noise=cfg.noise)
    return CameraTrialSetup(airway_map, Twin.of(airway_map),
                            Twin(gt_map.tree, gt_map.mesh_vertices, gt_map.mesh_triangles),
                            camera, targets, cfg)


def _approach_poses(gt_tree: AirwayTree, target_ct: np.ndarray, cfg: CameraScenarioConfig,
                    rng: np.random.Generator) -> np.ndarray:
    """Rest camera poses (CT frame) of the last part of the approach to the target."""
    path = tree_path_waypoints(gt_tree, target_ct)
    poses = route_poses(path, step=5e-4, look_ahead=4e-3)
    eye = poses[:, :3, 3]
    _, idx = gt_tree.nearest(eye)
    radius = gt_tree.samples().radii[idx]
    narrow = np.flatnonzero(radius < cfg.min_lumen_radius)
    end = int(narrow[0]) if narrow.size else len(poses)
    if end < 2:
        raise InputError("the approach path has no airway wide enough for the scope")
    s = arc_length(eye[:end])
    pick = np.searchsorted(s, np.linspace(max(s[-1] - cfg.path_length, 0.0), s[-1], cfg.n_frames))
    pick = np.minimum(pick, end - 1)
    out = poses[pick].copy()
    for k, i in enumerate(pick):
        R = out[k, :3, :3]
        roll = rotation_about(R[:, 2], rng.uniform(-np.pi, np.pi))
        out[k, :3, :3] = roll @ R
        phi = rng.uniform(0, 2 * np.pi)
        lateral = np.cos(phi) * R[:, 0] + np.sin(phi) * R[:, 1]
        out[k, :3, 3] += lateral * rng.uniform(0, cfg.lateral_offset) * radius[i]
    return out


def simulate_camera_cloud(setup: CameraTrialSetup, gt_nodule, truth, rng: np.random.Generator
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The camera point clouds of one approach, in the patient frame (m).

    Parameters
    ----------
    setup : CameraTrialSetup
    gt_nodule : Nodule
        The true target (CT frame at rest).
    truth : GroundTruth
        The scenario's hidden truth (transform and breathing) from
        :func:`~bronchonav.registration.simulate.simulate_scenario`.
    rng : numpy.random.Generator

    Returns
    -------
    points : ndarray, shape (M, 3)
        Wall points seen by all frames (each frame thinned to ``config.voxel``), patient frame.
    frame_ids : ndarray of int, shape (M,)
        Frame index of each point.
    """
    import open3d as o3d

    cfg = setup.config
    em = EMSensor(truth.T_ct_patient, truth.breathing, cfg.pose_position_noise,
                  cfg.pose_rotation_noise, seed=rng)
    camera = TipCameraSensor(setup.gt_camera, em=em, stride=cfg.stride, max_depth=cfg.max_depth)
    clouds = []
    for T_rest in _approach_poses(setup.ground_truth.tree, gt_nodule.center, cfg, rng):
        phase = float(truth.eval_phase + cfg.gate_width * (rng.random() - 0.5))
        reading = camera.capture(T_rest, phase)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(reading.points_patient()))
        clouds.append(np.asarray(cloud.voxel_down_sample(cfg.voxel).points))
    frame_ids = np.concatenate([np.full(len(c), i) for i, c in enumerate(clouds)])
    return np.vstack(clouds), frame_ids


@dataclass
class JointOutcome:
    """Result of :func:`joint_icp` (T_ct_patient, distances in m)."""

    T: np.ndarray
    fitness: float
    """Fraction of camera points within the last correspondence distance."""
    fre: float
    """RMS point-to-plane distance of the inlier camera points (m), frame offsets applied."""
    iterations: int
    frame_offsets: np.ndarray
    """(F, 3) estimated position error of each frame's camera pose (CT frame, m)."""
    em_bias: np.ndarray
    """(3,) estimated offset of the EM samples from the camera frames (CT frame, m)."""


def _skew_jacobian(q: np.ndarray) -> np.ndarray:
    """(N, 3, 6) Jacobian of points ``q`` (relative to the rotation centre) w.r.t. (rotation, translation)."""
    J = np.zeros((len(q), 3, 6))
    J[:, 0, 1], J[:, 0, 2], J[:, 1, 2] = q[:, 2], -q[:, 1], q[:, 0]
    J[:, 1, 0], J[:, 2, 0], J[:, 2, 1] = -q[:, 2], q[:, 1], -q[:, 0]
    J[:, :, 3:] = np.eye(3)
    return J


def joint_icp(em_patient: np.ndarray, em_weights: np.ndarray, cam_patient: np.ndarray,
              cam_frame: np.ndarray, cam_weights: np.ndarray, twin: Twin, surface,
              init: np.ndarray, center_ct: np.ndarray, pose_noise: float,
              em_directions: np.ndarray | None = None, min_cos: float = 0.5,
              em_bias_prior: float | None = None,
              schedule=((0.006, 30), (0.004, 50)), tolerance: float = 1e-4) -> JointOutcome:
    """Rigid registration of EM samples and camera frames together (robust Gauss–Newton ICP).

    EM samples pull towards their nearest twin centerline points (point-to-point, weighted by
    ``em_weights``, trimmed beyond the stage's correspondence distance and by direction
    agreement — the objective of the EM local refinement); camera points pull towards the
    twin's lumen surface (point-to-plane, Tukey kernel of width the correspondence distance).
    Each sensor is weighted by the inverse of its residual variance, estimated at the start of
    each stage. Each camera frame was placed in the patient frame by its own EM-measured tip
    pose, so its points share that pose's error: the solver estimates one position offset per
    frame alongside the transform, with a Gaussian prior of standard deviation ``pose_noise`` —
    the frames then fix the shape of the airway near the target without passing their pose
    errors on to the transform as a spurious rotation. Updates rotate about ``center_ct``.

    Parameters
    ----------
    em_patient : ndarray, shape (N, 3)
        EM positions, patient frame (m).
    em_weights : ndarray, shape (N,)
        Non-negative weights (e.g. proximity to the target).
    cam_patient : ndarray, shape (M, 3)
        Camera surface points, patient frame (m).
    cam_frame : ndarray of int, shape (M,)
        Frame index (0 .. F-1) of each camera point.
    cam_weights : ndarray, shape (M,)
        Non-negative weights of the camera points (e.g. proximity to the target).
    twin : Twin
        The twin (CT frame); its centerlines and KD-tree are used.
    surface : open3d.geometry.PointCloud
        Twin lumen surface points with normals (CT frame), e.g. ``twin.surface_near(...)``.
    init : ndarray, shape (4, 4)
        Initial T_ct_patient.
    center_ct : ndarray, shape (3,)
        Rotation centre of the updates (the target), CT frame (m).
    pose_noise : float
        Per-axis position noise of a frame's camera pose (m), the prior on the frame offsets.
    em_directions : ndarray, shape (N, 3), optional
        Unit EM sensor directions (patient frame); pairs whose direction and twin tangent make
        ``|cos| < min_cos`` are rejected, as in the EM registration.
    min_cos : float
        See ``em_directions``.
    em_bias_prior : float, optional
        Estimate a translation of the EM samples relative to the camera frames (their
        breathing-phase offset) with this prior standard deviation (m); ``None``: no offset.
    schedule : sequence of (float, int)
        (correspondence distance (m), maximum iterations) per stage.
    tolerance : float
        A stage ends when an update is smaller than this (m or rad).

    Returns
    -------
    JointOutcome
    """
    from scipy.spatial import cKDTree

    if pose_noise <= 0:
        raise RegistrationError("joint ICP needs a positive camera pose noise")
    surf_pts = np.asarray(surface.points)
    surf_n = np.asarray(surface.normals)
    if len(surf_pts) < 6:
        raise RegistrationError("the twin has no lumen surface near the target")
    surf_kd = cKDTree(surf_pts)
    cam_frame = np.asarray(cam_frame, dtype=int)
    n_frames = int(cam_frame.max()) + 1
    T = np.array(init, dtype=float)
    offsets = np.zeros((n_frames, 3))
    em_bias = np.zeros(3)
    nb = 3 if em_bias_prior is not None else 0
    size = 6 + 3 * n_frames + nb
    iterations = 0
    for k, max_iter in schedule:
        for it in range(max_iter):
            x_e = apply(T, em_patient) + em_bias
            d_e, i_e = twin.kdtree.query(x_e, distance_upper_bound=k)
            ok_e = np.isfinite(d_e) & (em_weights > 0)
            i_e = np.where(ok_e, i_e, 0)
            if em_directions is not None:
                cos = np.abs(np.einsum("ij,ij->i", em_directions @ T[:3, :3].T, twin.tangents[i_e]))
                ok_e &= cos >= min_cos
            r_e = x_e - twin.points[i_e]
            x_c = apply(T, cam_patient)
            y_c = x_c + offsets[cam_frame]
            d_c, i_c = surf_kd.query(y_c, distance_upper_bound=k)
            ok_c = np.isfinite(d_c)
            if ok_c.sum() < 6:
                raise RegistrationError(f"joint ICP lost the twin surface: only {int(ok_c.sum())} "
                                        f"camera points within {k * 1e3:.0f} mm of it")
            i_c = np.where(ok_c, i_c, 0)
            n = surf_n[i_c]
            r_c = np.einsum("ij,ij->i", n, y_c - surf_pts[i_c])
            tuk_c = np.where(ok_c, np.clip(1 - (r_c / k) ** 2, 0, 1) ** 2, 0.0)
            w_e = em_weights * ok_e
            if it == 0:  # residual variances, held for the stage (re-estimating them each step cycles)
                s2_e = np.sum(w_e * np.sum(r_e ** 2, axis=1)) / max(3.0 * w_e.sum(), 1e-12)
                s2_c = np.sum(cam_weights * tuk_c * r_c ** 2) / max(np.sum(cam_weights * tuk_c), 1e-12)
            a_e = w_e / max(s2_e, 1e-12)
            a_c = cam_weights * tuk_c / max(s2_c, 1e-12)
            J_e = _skew_jacobian(x_e - center_ct)
            J_c = np.concatenate([np.cross(x_c - center_ct, n), n], axis=1)  # (M, 6)
            H = np.zeros((size, size))
            g = np.zeros(size)
            Je = J_e.reshape(-1, 6)
            ae = np.repeat(a_e, 3)
            H[:6, :6] = (Je * ae[:, None]).T @ Je + (J_c * a_c[:, None]).T @ J_c
            g[:6] = Je.T @ (ae * r_e.ravel()) + J_c.T @ (a_c * r_c)
            for f in range(n_frames):
                sel = cam_frame == f
                b = slice(6 + 3 * f, 9 + 3 * f)
                an = n[sel] * a_c[sel, None]
                H[:6, b] = (J_c[sel] * a_c[sel, None]).T @ n[sel]
                H[b, :6] = H[:6, b].T
                H[b, b] = an.T @ n[sel] + np.eye(3) / pose_noise ** 2
                g[b] = an.T @ r_c[sel] + offsets[f] / pose_noise ** 2
            if nb:
                Jb = np.tile(np.eye(3), (len(em_patient), 1))
                H[:6, -3:] = (Je * ae[:, None]).T @ Jb
                H[-3:, :6] = H[:6, -3:].T
                H[-3:, -3:] = (Jb * ae[:, None]).T @ Jb + np.eye(3) / em_bias_prior ** 2
                g[-3:] = Jb.T @ (ae * r_e.ravel()) + em_bias / em_bias_prior ** 2
            delta = -np.linalg.solve(H + 1e-9 * np.trace(H) / size * np.eye(size), g)
            R = Rotation.from_rotvec(delta[:3]).as_matrix()
            T = make_transform(R, center_ct - R @ center_ct + delta[3:6]) @ T
            offsets += delta[6:6 + 3 * n_frames].reshape(n_frames, 3)
            if nb:
                em_bias += delta[-3:]
            iterations += 1
            if np.abs(delta[:6]).max() < tolerance:
                break
    y_c = apply(T, cam_patient) + offsets[cam_frame]
    d_c, i_c = surf_kd.query(y_c, distance_upper_bound=schedule[-1][0])
    ok = np.isfinite(d_c)
    j = np.where(ok, i_c, 0)
    r = np.einsum("ij,ij->i", surf_n[j], y_c - surf_pts[j])[ok]
    fre = float(np.sqrt(np.mean(r ** 2))) if ok.any() else float("inf")
    return JointOutcome(T, float(ok.mean()), fre, iterations, offsets, em_bias)


def run_camera_trial(airway_map: AirwayMap, ground_truth, seed: int,
                     nodule_id: str | list | None = None,
                     config: CameraScenarioConfig | None = None,
                     setup: CameraTrialSetup | None = None) -> dict:
    """One seeded trial of the camera scenario.

    Parameters
    ----------
    airway_map : AirwayMap
        The twin (CT frame).
    ground_truth : GroundTruthSource, AirwayMap, AirwayTree or PhantomConfig
        The patient's true airways (see :func:`camera_trial_setup`); ignored with ``setup``.
    seed : int
        Seed of everything random in the trial (transform, breathing phases, EM and camera
        noise, camera stations). With the default targets the trial's nodule is chosen by it.
    nodule_id : str or list of str, optional
        Target nodule(s) (default: see :func:`camera_trial_setup`).
    config : CameraScenarioConfig, optional
    setup : CameraTrialSetup, optional
        Reuse a setup across trials (much faster).

    Returns
    -------
    dict
        ``tre_mm``, ``fre_mm`` (None when it failed), ``ms`` (EM registration + joint ICP),
        ``success`` (accepted and TRE < 5 mm) of the combined EM + camera registration;
        ``message`` (why it failed, else empty); ``tre_em_only_mm`` (EM global + local), ``tre_camera_alone_mm`` (EM survey
        + camera, no local EM sweep), ``tre_em_global_mm``; ``camera_ms`` (camera ICP alone),
        ``registration_ok`` (the combined registration's own acceptance), ``fitness``,
        ``camera_points``, ``nodule``, ``seed``.
    """
    setup = setup or camera_trial_setup(airway_map, ground_truth, nodule_id, config)
    cfg = setup.config
    rng = np.random.default_rng(seed)
    map_nodule, gt_nodule = setup.targets[int(rng.integers(len(setup.targets)))]
    scenario = simulate_scenario("breathing", setup.ground_truth, gt_nodule, map_nodule.center,
                                 rng, cfg.simulation)
    obs, truth = scenario.observation, scenario.truth
    setup.gt_camera.reseed(int(rng.integers(2 ** 31)))
    cloud, frame_ids = simulate_camera_cloud(setup, gt_nodule, truth, rng)

    t0 = time.perf_counter()
    em = register_em(obs.em_positions, setup.twin, obs.target_ct, obs.em_directions, obs.em_local,
                     config=cfg.registration)
    t_em = time.perf_counter() - t0
    em_global = em.global_result if em.global_result is not None else em
    t1 = time.perf_counter()
    message = ""
    try:
        if not em.success:
            raise RegistrationError(f"the EM registration it starts from failed: {em.message}")
        surface = setup.twin.surface_near(obs.target_ct, cfg.registration.cbct_radius)
        T0 = em_global.T_ct_patient
        weights = local_weights(apply(T0, obs.em_positions), obs.target_ct, cfg.registration,
                                setup.twin)
        cam_weights = local_weights(apply(T0, cloud), obs.target_ct, cfg.registration, setup.twin)
        combined = joint_icp(obs.em_positions, weights, cloud, frame_ids, cam_weights, setup.twin,
                             surface, T0, obs.target_ct, cfg.pose_position_noise,
                             em_directions=obs.em_directions, min_cos=cfg.registration.min_cos,
                             em_bias_prior=cfg.em_bias_prior,
                             schedule=cfg.registration.local_schedule)
        T, fitness, fre = combined.T, combined.fitness, combined.fre
        ok = fitness >= cfg.registration.min_fitness and fre <= cfg.registration.max_fre
    except RegistrationError as exc:  # reported as a failed trial, with the EM transform's error
        T, fitness, fre, ok, message = em.T_ct_patient, 0.0, float("inf"), False, str(exc)
    t_cam = time.perf_counter() - t1
    try:
        T_alone = register_cbct(cloud, setup.twin, obs.target_ct, init=em_global.T_ct_patient,
                                config=cfg.registration).T_ct_patient
    except RegistrationError:
        T_alone = em_global.T_ct_patient
    tre = truth.tre(T)
    return {
        "seed": int(seed), "nodule": gt_nodule.id,
        "tre_mm": tre * 1e3, "fre_mm": fre * 1e3 if np.isfinite(fre) else None,
        "ms": (t_em + t_cam) * 1e3,
        "success": bool(ok and tre < 5e-3), "registration_ok": bool(ok), "message": message,
        "fitness": fitness, "camera_points": int(len(cloud)), "camera_ms": t_cam * 1e3,
        "tre_em_only_mm": truth.tre(em.T_ct_patient) * 1e3, "em_ok": bool(em.success),
        "tre_camera_alone_mm": truth.tre(T_alone) * 1e3,
        "tre_em_global_mm": truth.tre(em_global.T_ct_patient) * 1e3,
    }


def _median_or_none(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _stats(values: list[float], ok: list[bool]) -> dict:
    """Success rate (accepted and TRE < 5 mm), TRE median and p95 (mm)."""
    v = np.asarray(values, dtype=float)
    return {"success_rate": float(np.mean((v < 5.0) & np.asarray(ok, dtype=bool))),
            "tre_median_mm": float(np.median(v)), "tre_p95_mm": float(np.percentile(v, 95))}


def camera_scenario_summary(airway_map: AirwayMap, ground_truth, trials: int, seed: int,
                            nodule_id: str | list | None = None,
                            config: CameraScenarioConfig | None = None) -> dict:
    """Run ``trials`` seeded trials of the camera scenario and summarise them.

    Trial ``i`` uses seed ``seed + i``. Returns a JSON-serialisable dict with the keys of the
    other scenarios for the combined EM + camera registration (``success_rate``,
    ``tre_median_mm``, ``tre_p95_mm``, ``fre_median_mm``, ``ms_median``), the same TRE figures
    for ``em_only`` and ``camera_alone``, and ``gain_median_mm`` (EM-only median TRE minus
    combined median TRE: what adding the camera gains).
    """
    if int(trials) < 1:
        raise InputError(f"trials must be >= 1, got {trials}")
    cfg = config or CameraScenarioConfig()
    setup = camera_trial_setup(airway_map, ground_truth, nodule_id, cfg)
    rows = [run_camera_trial(airway_map, None, seed + i, setup=setup) for i in range(int(trials))]
    combined = _stats([r["tre_mm"] for r in rows], [r["registration_ok"] for r in rows])
    em_only = _stats([r["tre_em_only_mm"] for r in rows], [r["em_ok"] for r in rows])
    return {
        "scenario": "camera", "map": airway_map.name, "trials": len(rows), "seed": int(seed),
        **combined,
        "fre_median_mm": _median_or_none([r["fre_mm"] for r in rows if r["fre_mm"] is not None]),
        "ms_median": float(np.median([r["ms"] for r in rows])),
        "camera_ms_median": float(np.median([r["camera_ms"] for r in rows])),
        "em_only": em_only,
        "camera_alone": _stats([r["tre_camera_alone_mm"] for r in rows], [r["em_ok"] for r in rows]),
        "em_global": _stats([r["tre_em_global_mm"] for r in rows], [r["em_ok"] for r in rows]),
        "gain_median_mm": em_only["tre_median_mm"] - combined["tre_median_mm"],
        "nodules": sorted({r["nodule"] for r in rows}),
        "config": {"n_frames": cfg.n_frames, "path_length_m": cfg.path_length,
                   "image": [cfg.intrinsics.width, cfg.intrinsics.height],
                   "depth_noise_std_m": cfg.noise.depth_std,
                   "depth_noise_rel": cfg.noise.depth_rel_std,
                   "pose_position_noise_m": cfg.pose_position_noise,
                   "pose_rotation_noise_rad": cfg.pose_rotation_noise,
                   "gate_width_cycles": cfg.gate_width, "em_bias_prior_m": cfg.em_bias_prior,
                   "breathing_amplitude_m": cfg.simulation.amplitude},
        "per_trial": rows,
    }
