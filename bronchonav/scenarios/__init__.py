"""Scenarios: the layers composed into runs a user asks for, without ROS.

- :func:`rehearse` — drive the catheter model along a planned route with the navigation
  controller, steering on the ground-truth tip pose or on the registered EM pose (survey,
  registration, then navigation under breathing), and score the exit point and the tool.
"""

from bronchonav.scenarios.rehearsal import RehearsalResult, SensingConfig, rehearse

__all__ = ["RehearsalResult", "SensingConfig", "rehearse"]
