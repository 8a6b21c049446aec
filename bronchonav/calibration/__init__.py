"""Calibration of a device file against recorded motion (tip and optional shape positions).

>>> from bronchonav.calibration import calibrate, load_recording   # doctest: +SKIP
>>> result = calibrate(params, load_recording("rec.csv", params), ["friction"])  # doctest: +SKIP

See :mod:`bronchonav.calibration.recording` for the CSV format and
:mod:`bronchonav.calibration.fit` for the parameters and the method.
"""

from bronchonav.calibration.fit import (CalibrationResult, apply_parameters, calibrate,
                                        parameter_values, predict)
from bronchonav.calibration.recording import Recording, load_recording, save_recording

__all__ = ["CalibrationResult", "Recording", "apply_parameters", "calibrate", "load_recording",
           "parameter_values", "predict", "save_recording"]
