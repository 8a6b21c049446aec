"""Simulated intra-operative sensors: observations of a catheter state in a breathing patient.

A sensor turns ground truth (a tip pose in the CT frame, the time) into what a real device would
report, in the device's own frame (the ``patient`` frame of the EM field generator). Sensors
import the layers below them (geometry, airway, catheter) and nothing above; registration
composes them into scenarios.

- :class:`EMSensor` — 6-DOF electromagnetic tip sensor (noise, breathing, patient frame).
- :class:`BreathingModel` — smooth respiratory deformation of the lungs (CT frame).
- :func:`patient_transform` — the simulated patient's hidden ``T_ct_patient``.
"""

from bronchonav.sensors.breathing import BreathingModel
from bronchonav.sensors.em import EMReading, EMSensor
from bronchonav.sensors.patient import patient_transform

__all__ = ["BreathingModel", "EMReading", "EMSensor", "patient_transform"]
