"""Simulated intra-operative sensors: observations of a catheter state in a breathing patient.

A sensor turns ground truth (a tip pose in the CT frame, the breathing phase) into what a real
device would report, in the device's own frame (the ``patient`` frame of the EM field
generator). Sensors import the layers below them (geometry, airway, imaging's renderer) and
nothing above; registration composes them into scenarios, the simulator node streams them, the
campaign runs them.

- :class:`EMSensor` — 6-DOF electromagnetic tip sensor (noise, outliers, breathing, patient
  frame) from a tip pose or a catheter state (:meth:`EMSensor.read`,
  :meth:`EMSensor.read_state`), or a whole sweep at once (:meth:`EMSensor.sweep`).
- :class:`ConeBeamCT` — a breath-hold cone-beam CT: partial, noisy lumen surface near a target.
- :class:`TipCameraSensor` — the tip camera (:class:`~bronchonav.imaging.camera.TipCamera`)
  seeing the breathing airway, with the EM-measured camera pose.
- :class:`BreathingModel` — smooth respiratory deformation of the lungs (CT frame).
- :func:`patient_transform` — the simulated patient's hidden ``T_ct_patient``.

A new sensor (e.g. fibre-optic shape sensing) is a module here with a class that takes the
hidden truth (``T_ct_patient``, breathing, a seed or generator) and returns named readings.
"""

from bronchonav.sensors.breathing import BreathingModel
from bronchonav.sensors.camera import CameraReading, TipCameraSensor
from bronchonav.sensors.cbct import ConeBeamCT, ConeBeamCTConfig
from bronchonav.sensors.em import EMReading, EMSensor, EMSweep
from bronchonav.sensors.noise import gross_outliers
from bronchonav.sensors.patient import patient_transform

__all__ = ["BreathingModel", "CameraReading", "ConeBeamCT", "ConeBeamCTConfig", "EMReading",
           "EMSensor", "EMSweep", "TipCameraSensor", "gross_outliers", "patient_transform"]
