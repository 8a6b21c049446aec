"""EM registration of the rehearsal's central-airway survey, for many hidden patient poses.

Two recorded surveys, the ground-truth tip positions (CT frame, m, 1 um precision) and times (s)
that ``rehearse(..., pose="registered")`` drives before steering to its nodule:

- test/data/survey_tip_positions_ct.csv, on maps/phantom_default towards N3: the trachea, the
  left main bronchus, the withdrawal and the start of the right main bronchus;
- test/data/survey_tip_positions_gt0_N5_ct.csv, on the seed-0 phantom's ground truth towards
  N5;
- test/data/survey_tip_positions_built3_N6_ct.csv, on the map built from the seed-3 phantom's CT
  towards N6 (the navigation benchmark's built-map cohort, 2.8 mm catheter): the trachea, the
  left main bronchus and only the first 11 mm of the right one, so that most samples lie on the
  trachea, which fits every roll about its axis alike.

Each trial reads them through an :class:`EMSensor` (1 mm noise, breathing 3 mm) for a different
hidden ``patient_transform(seed)`` and registers the readings without a guess.

Such a sweep has poses that fit it fairly well: turned about the sweep, the main bronchi swap
places (84% of samples within 5 mm, FRE 2 mm) while a nodule 20 cm away moves by 120-170 mm.
Before the initial alignment scored candidates by exact distances and the registration refined
the ten best, 12 of these 24 trials were registered there and reported successful, or refused as
ambiguous although the best fit was right. While it ranked candidates by the median distance, the
built-map survey (samples mostly on the trachea) was registered turned by 173° and reported
successful (the navigation benchmark steered on it 210 mm off at the nodule).
"""

import functools

import numpy as np
import pytest

from bronchonav.airway.build import build_map_from_phantom
from bronchonav.ct.phantom import phantom_config, phantom_ground_truth_map
from bronchonav.registration import Twin, register_em, register_em_extended
from bronchonav.registration.register import RegistrationConfig
from bronchonav.registration.tracker import RegistrationTracker
from bronchonav.sensors import patient_transform

from recorded_surveys import (AMBIGUOUS_TRIALS, default_map, error_at, extended_readings, readings,
                              tip_poses)

TRIALS = 12
TOLERANCE = 10e-3  # m, error at the nodule of a registration reported successful
SURVEYS = {"default_N3": ("survey_tip_positions_ct.csv", "N3"),
           "gt0_N5": ("survey_tip_positions_gt0_N5_ct.csv", "N5"),
           "built3_N6": ("survey_tip_positions_built3_N6_ct.csv", "N6")}


def _survey_map(name):
    if name == "default_N3":
        return default_map()
    if name == "gt0_N5":
        return phantom_ground_truth_map(phantom_config("default", 0))
    return build_map_from_phantom("default", 3).airway_map


@functools.lru_cache(maxsize=None)
def _load_survey(name):
    """(map, prepared twin, times (s), tip poses (CT), nodule centre (CT)) of survey ``name``,
    read and built once for the tests below."""
    file, nodule = SURVEYS[name]
    amap = _survey_map(name)
    data, poses = tip_poses(file)
    return amap, Twin.of(amap).prepare(), data[:, 0], poses, amap.nodule(nodule).center


def _register(survey, T_ct_patient, sensor_seed, target=False):
    """Read ``survey`` through an EM sensor (:func:`recorded_surveys.readings`) for the hidden
    pose ``T_ct_patient`` and register it without a guess (towards its nodule with ``target``).
    Returns (result, error at the nodule (m))."""
    amap, twin, times, poses, nodule = survey
    samples = readings(amap, times, poses, T_ct_patient, sensor_seed)
    result = register_em(samples, twin, target_ct=nodule if target else None)
    return result, error_at(result, T_ct_patient, nodule)


@pytest.fixture(scope="module", params=sorted(SURVEYS))
def survey(request):
    return _load_survey(request.param)


@pytest.mark.parametrize("seed", range(TRIALS))
def test_a_survey_registers_to_the_right_pose(survey, seed):
    result, error = _register(survey, patient_transform(seed), seed)
    assert result.success, result.message
    assert error < TOLERANCE, f"registered {error * 1e3:.1f} mm off at the nodule ({result.message})"


def test_the_built_map_survey_of_the_benchmark_is_not_registered_turned_about_the_trachea():
    """The recorded case itself: the built-map survey read with the benchmark case's hidden pose
    and EM noise (``patient_transform(109317757)``, sensor seed 1279714128; seed 3, N6, 2.8 mm).
    Ranked by the median distance, every candidate the initial alignment refined was turned by
    150–175° about the trachea (most samples lie on it and fit any roll), and the registration
    reported success 210 mm off at the nodule; refined from the true pose the samples fit better
    (median 1.6 against 2.1 mm, all inside the airways against 94 %)."""
    result, error = _register(_load_survey("built3_N6"), patient_transform(109317757),
                              1279714128, target=True)
    assert result.success, result.message
    assert error < TOLERANCE, f"registered {error * 1e3:.1f} mm off at the nodule ({result.message})"


@pytest.mark.parametrize("trial", AMBIGUOUS_TRIALS)
def test_an_ambiguous_survey_is_decided_by_the_airways_swept_after_it(trial):
    """Refused as ambiguous, the survey is registered again with the pose chosen from every
    sample (the 20 mm further along the route break the Y's symmetry) and fitted to the survey
    alone: the result is the survey's own fit from the true pose (within 0.3 mm at the nodule),
    not the fit of the longer sweep (3.8–5.8 mm off, the catheter cutting the corner)."""
    _, twin, _, _, nodule = _load_survey("default_N3")
    samples, in_survey = extended_readings(trial)
    config = RegistrationConfig(thin_voxel=3e-3)
    first = register_em(samples[in_survey], twin, target_ct=nodule, config=config)
    assert not first.success and first.ambiguous, first.message
    result = register_em_extended(samples[in_survey], samples, twin, target_ct=nodule,
                                  config=config)
    assert result.success, result.message
    from_truth = register_em(samples[in_survey], twin, target_ct=nodule, config=config,
                             init=patient_transform(1000 + trial))
    T_true = patient_transform(1000 + trial)
    assert abs(error_at(result, T_true, nodule) - error_at(from_truth, T_true, nodule)) < 0.3e-3
    assert error_at(result, T_true, nodule) < 5e-3


def test_the_tracker_registers_an_ambiguous_survey_again_with_the_samples_after_it():
    """The registration node's path: the tracker refuses the survey as ambiguous, takes the
    samples of the drive on, and its next registration is the extended one (same transform as
    :func:`register_em_extended` on the same samples)."""
    _, twin, _, _, nodule = _load_survey("default_N3")
    trial = AMBIGUOUS_TRIALS[0]
    samples, in_survey = extended_readings(trial)
    config = RegistrationConfig(thin_voxel=3e-3)
    tracker = RegistrationTracker(twin, 0, config)
    for p in samples[in_survey]:
        tracker.add(p)
    first = tracker.register(nodule)
    assert first.ambiguous and tracker.result is None
    for p in samples[~in_survey]:
        tracker.add(p)
    second = tracker.register(nodule)
    assert second.success and tracker.result is second, second.message
    expected = register_em_extended(samples[in_survey], samples, twin, target_ct=nodule,
                                    config=config)
    np.testing.assert_allclose(second.T_ct_patient, expected.T_ct_patient, atol=1e-9)
    tracker.reset()  # a reset forgets the refused survey: the next one starts afresh
    for p in samples[in_survey]:
        tracker.add(p)
    assert tracker.register(nodule).ambiguous
