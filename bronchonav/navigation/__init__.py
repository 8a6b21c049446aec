"""Navigation: the one controller that drives a catheter along a planned route.

From the route (CT frame), the catheter's model and an observed tip pose, the
:class:`NavigationController` produces :class:`~bronchonav.catheter.CatheterCommand` s: it
inserts follow-the-leader style, steers the tip with the model's own sensitivity of the tip to
the tendons (probe solves of the catheter model), rolls a planar device into its bending plane,
detects stalls and wrong branches and recovers a bounded number of times, and ends with a
:class:`NavigationOutcome`. It has no ROS import: the rehearsal scenario, the ``bronchonav
catheter --demo`` command and the ROS ``navigator`` node all drive this one controller.
:func:`survey_arm` says which airways the EM registration survey drives through, and
:func:`survey_stops` where along the route it registers (again, after an ambiguous refusal).
"""

from bronchonav.navigation.config import NavigationConfig
from bronchonav.navigation.controller import NavigationController
from bronchonav.navigation.outcome import NavigationOutcome
from bronchonav.navigation.route_target import RouteTarget
from bronchonav.navigation.survey import SurveyArm, survey_arm, survey_stops

__all__ = ["NavigationConfig", "NavigationController", "NavigationOutcome", "RouteTarget",
           "SurveyArm", "survey_arm", "survey_stops"]
