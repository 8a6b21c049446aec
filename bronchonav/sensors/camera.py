"""The tip camera as a sensor: what it sees of the breathing airway, and where the EM sensor
says it is.

The rendering itself is :class:`bronchonav.imaging.camera.TipCamera` (ray casting on the true
lumen mesh at rest). A capture at breathing phase ``phase`` renders the view from the rest
pose, back-projects the depth to wall points, carries the points and the camera by the
breathing deformation, and expresses the points in the moved camera frame — what the camera
sees in the breathing patient. With an :class:`~bronchonav.sensors.em.EMSensor` at the tip, the
capture also carries the EM-measured camera pose in the patient frame (noise included), which
places the frame's points in the patient frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bronchonav.geometry.transforms import apply, invert
from bronchonav.imaging.camera import CameraFrame, TipCamera
from bronchonav.imaging.depth_cloud import depth_to_points
from bronchonav.sensors.breathing import BreathingModel
from bronchonav.sensors.em import EMReading, EMSensor


@dataclass(frozen=True)
class CameraReading:
    """One capture of the tip camera.

    Attributes
    ----------
    frame : CameraFrame
        The rendered colour and depth image (from the rest pose, CT frame at phase 0).
    points_cam : ndarray, shape (M, 3)
        Wall points seen (every ``stride``-th pixel, depth up to ``max_depth``) in the moved
        camera's optical frame (m).
    phase : float
        Breathing phase of the capture (cycles).
    em : EMReading or None
        The tip EM sensor's reading of the camera pose (``T_patient_sensor`` = measured
        ``T_patient_cam``), or ``None`` without an EM sensor.
    """

    frame: CameraFrame
    points_cam: np.ndarray
    phase: float
    em: EMReading | None = None

    def points_patient(self) -> np.ndarray:
        """The wall points placed in the patient frame by the EM-measured pose (m)."""
        if self.em is None:
            raise ValueError("this capture has no EM pose: the camera has no EM sensor")
        return apply(self.em.T_patient_sensor, self.points_cam)


class TipCameraSensor:
    """A tip camera in a breathing patient (see the module docstring).

    Parameters
    ----------
    camera : TipCamera
        The renderer on the true lumen mesh (CT frame at phase 0); its own noise (depth,
        colour) applies to every frame.
    breathing : BreathingModel or None
        Respiratory motion (CT frame); ``None`` for a still patient. When ``em`` is given its
        breathing is used.
    em : EMSensor or None
        The 6-DOF EM sensor at the tip that measures the camera pose.
    stride : int
        Back-project every ``stride``-th pixel in both directions.
    max_depth : float
        Wall points deeper than this (m) are not reported.
    """

    def __init__(self, camera: TipCamera, breathing: BreathingModel | None = None,
                 em: EMSensor | None = None, stride: int = 1, max_depth: float = np.inf) -> None:
        self.camera = camera
        self.em = em
        self.breathing = em.breathing if em is not None else breathing
        self.stride = int(stride)
        self.max_depth = float(max_depth)

    def capture(self, T_ct_cam: np.ndarray, phase: float = 0.0, t: float = 0.0) -> CameraReading:
        """A capture from the camera pose ``T_ct_cam`` (CT frame at phase 0) at breathing
        ``phase`` (cycles); ``t`` (s) is only recorded in the EM reading.

        Draws the frame's noise from the camera's generator, then the EM noise from the EM
        sensor's."""
        frame = self.camera.render(T_ct_cam)
        p_cam = depth_to_points(frame.depth, self.camera.intrinsics, self.stride, self.max_depth)
        if self.breathing is not None and self.breathing.amplitude > 0:
            moved = self.breathing.deform(apply(T_ct_cam, p_cam), phase)
            p_cam = apply(invert(self.breathing.carry(T_ct_cam, phase)), moved)
        em = None if self.em is None else self.em.read_at_phase(T_ct_cam, phase, t)
        return CameraReading(frame, p_cam, float(phase), em)
