"""Camera registration: simulated depth clouds, the joint EM + camera ICP, the camera scenario."""

import numpy as np
import pytest

from bronchonav.errors import RegistrationError
from bronchonav.imaging.camera import CameraNoise
from bronchonav.registration.camera import (CameraScenarioConfig, camera_scenario_summary,
                                                    camera_trial_setup, joint_icp,
                                                    simulate_camera_cloud)
from bronchonav.registration.register import local_weights
from bronchonav.registration.simulate import scenario_config, simulate_scenario
from bronchonav.geometry import apply
from test_camera import phantom_gt_map

CLEAN = dict(noise=CameraNoise(), pose_position_noise=1e-9, pose_rotation_noise=0.0)


@pytest.fixture(scope="module")
def clean_trial():
    """A noise-free rigid trial on the phantom (twin = ground truth): EM samples and camera cloud."""
    gt = phantom_gt_map()
    cfg = CameraScenarioConfig(simulation=scenario_config("rigid", noise_std=1e-9,
                                                          outlier_fraction=0.0), **CLEAN)
    setup = camera_trial_setup(gt, gt, "N1", cfg)
    rng = np.random.default_rng(7)
    map_nodule, gt_nodule = setup.targets[0]
    scenario = simulate_scenario("rigid", setup.ground_truth, gt_nodule, map_nodule.center, rng,
                                 cfg.simulation)
    cloud, frames = simulate_camera_cloud(setup, gt_nodule, scenario.truth, rng)
    return setup, scenario, cloud, frames


def test_camera_cloud_lies_on_the_true_wall(clean_trial):
    import open3d as o3d

    setup, scenario, cloud, frames = clean_trial
    gt = phantom_gt_map()
    assert len(cloud) > 500 and frames.max() + 1 == setup.config.n_frames
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(gt.mesh_vertices.astype(np.float32)),
                        o3d.core.Tensor(gt.mesh_triangles.astype(np.uint32)))
    p_ct = apply(scenario.truth.T_ct_patient, cloud)
    d = scene.compute_distance(o3d.core.Tensor(p_ct.astype(np.float32))).numpy()
    assert np.percentile(d, 99) < 1e-4
    assert np.median(np.linalg.norm(p_ct - scenario.truth.target_ct, axis=1)) < 0.04


def test_joint_icp_recovers_the_transform_and_the_frame_offsets(clean_trial):
    """Known per-frame pose errors added to clean data: the transform and the offsets come back."""
    setup, scenario, cloud, frames = clean_trial
    obs, truth = scenario.observation, scenario.truth
    rng = np.random.default_rng(0)
    n_frames = frames.max() + 1
    errors_patient = rng.normal(0.0, 1e-3, (n_frames, 3))
    noisy = cloud + errors_patient[frames]
    # start 3 mm and about 1.5° off the truth
    T0 = truth.T_ct_patient.copy()
    T0[:3, 3] += [0.002, -0.002, 0.001]
    c, s = np.cos(0.025), np.sin(0.025)
    T0[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ T0[:3, :3]
    surface = setup.twin.surface_near(obs.target_ct, 0.05)
    w = local_weights(apply(T0, obs.em_positions), obs.target_ct, setup.config.registration)
    cw = local_weights(apply(T0, noisy), obs.target_ct, setup.config.registration)
    out = joint_icp(obs.em_positions, w, noisy, frames, cw, setup.twin, surface, T0, obs.target_ct,
                    1e-3, em_directions=obs.em_directions)
    assert truth.tre(out.T) < 2e-4
    # each frame's offset undoes its pose error where the wall constrains it (across the airway)
    errors_ct = errors_patient @ truth.T_ct_patient[:3, :3].T
    assert np.median(np.abs(out.frame_offsets + errors_ct)) < np.median(np.abs(errors_ct)) / 2
    with pytest.raises(RegistrationError):
        joint_icp(obs.em_positions, w, noisy + 0.05, frames, cw, setup.twin, surface, T0,
                  obs.target_ct, 1e-3)


def test_camera_scenario_breathing_tre_near_the_target():
    """The ``camera`` scenario (breathing, 10 mm): TRE median <= 2 mm, reported beside EM only."""
    gt = phantom_gt_map()
    summary = camera_scenario_summary(gt, gt, trials=6, seed=0)
    assert summary["scenario"] == "camera" and summary["trials"] == 6
    assert summary["tre_median_mm"] <= 2.0
    assert summary["success_rate"] >= 5 / 6
    for key in ("tre_p95_mm", "fre_median_mm", "ms_median", "gain_median_mm"):
        assert np.isfinite(summary[key])
    assert summary["gain_median_mm"] == pytest.approx(
        summary["em_only"]["tre_median_mm"] - summary["tre_median_mm"])
    assert {r["nodule"] for r in summary["per_trial"]} <= {"N1", "N2", "N3", "N4", "N5"}


def test_gated_camera_gains_over_em_at_end_inspiration():
    """Biopsy at end-inspiration: EM samples (whole cycle) sit where the airway is on average;
    the camera, gated at that phase, with the EM offset estimated, must beat EM alone."""
    gt = phantom_gt_map()
    cfg = CameraScenarioConfig(simulation=scenario_config("breathing", eval_phase=0.5),
                               em_bias_prior=2e-3)
    summary = camera_scenario_summary(gt, gt, trials=6, seed=10, config=cfg)
    assert summary["gain_median_mm"] > 0.5
    assert summary["tre_median_mm"] <= 2.5
