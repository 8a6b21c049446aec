"""Recorded central-airway surveys (test/data/survey_*.csv) read through a simulated EM sensor.

Each file holds the ground-truth tip positions (CT frame, m, 1 um precision) and times (s) of a
survey that ``rehearse(..., pose="registered")`` drove; the readings are those of an
:class:`~bronchonav.sensors.EMSensor` (1 mm noise, breathing 3 mm) for a hidden patient pose.
Shared by the registration tests of the core and of the ROS registration node.
"""

import functools
from pathlib import Path

import numpy as np

from bronchonav.maps import load_map
from bronchonav.sensors import BreathingModel, EMSensor, patient_transform

ROOT = Path(__file__).resolve().parents[1]
EXTENDED_SURVEY = "survey_extended_tip_positions_ct.csv"
"""The survey of both main bronchi towards N3 on maps/phantom_default, then the 20 mm driven on
along the route (column ``extension``: 0 for the survey, 1 after it)."""

AMBIGUOUS_TRIALS = (1, 18)
"""Patient and noise draws (of 40 tried, :func:`extended_readings`) whose survey in 3 mm cells
(one sample kept per 3 mm cube) is refused as ambiguous; the right pose is the better fit in
both, and in 1.5 mm cells both register right."""


def tip_poses(file):
    """The rows of a recorded survey ``test/data/FILE`` (t_s, x, y, z, ...) and its tip poses
    (N, 4, 4; CT frame, the recorded positions, no rotation)."""
    data = np.loadtxt(ROOT / "test" / "data" / file, delimiter=",")
    poses = np.repeat(np.eye(4)[None], len(data), axis=0)
    poses[:, :3, 3] = data[:, 1:4]
    return data, poses


def readings(amap, times, poses, T_ct_patient, sensor_seed):
    """EM readings (patient frame, m) of tip ``poses`` at ``times`` through an EM sensor (1 mm
    noise, breathing 3 mm) for the hidden pose ``T_ct_patient``."""
    breathing = BreathingModel.for_tree(amap.tree, 3e-3, period=4.0)
    sensor = EMSensor(T_ct_patient, breathing, 1e-3, 0.01, seed=sensor_seed)
    return np.array([sensor.read(T, t).p_patient for T, t in zip(poses, times)])


def error_at(result, T_ct_patient, nodule):
    """Distance (m) between the nodule and where the registration ``result`` puts it."""
    moved = result.T_ct_patient @ np.linalg.inv(T_ct_patient) @ np.append(nodule, 1.0)
    return float(np.linalg.norm(moved[:3] - nodule))


@functools.lru_cache(maxsize=None)
def default_map():
    """maps/phantom_default, loaded once."""
    return load_map(ROOT / "maps" / "phantom_default")


@functools.lru_cache(maxsize=None)
def extended_readings(trial):
    """EM readings (patient frame, m) of :data:`EXTENDED_SURVEY` for the hidden pose
    ``patient_transform(1000 + trial)`` and sensor seed ``5000 + trial``; and which are the
    survey's (the rest are the 20 mm after it)."""
    data, poses = tip_poses(EXTENDED_SURVEY)
    samples = readings(default_map(), data[:, 0], poses, patient_transform(1000 + trial),
                       5000 + trial)
    return samples, data[:, 4] == 0
