"""What runs a catheter in real time, without ROS: the supervised solver process
(:mod:`~bronchonav.catheter.runtime.solver_process`), the fixed-rate loop
(:mod:`~bronchonav.catheter.runtime.loop`), the record of what the solver did
(:mod:`~bronchonav.catheter.runtime.solve_log`) and the command link's guard (rate limit,
controller in charge, emergency stop, audit log: :mod:`~bronchonav.catheter.runtime.guard`).
The ROS node ``catheter_sim`` is a thin skin over these.
"""

from bronchonav.catheter.runtime.guard import REFUSAL_KINDS, AuditLog, CommandGuard, Refusal
from bronchonav.catheter.runtime.loop import FixedRateLoop, freeze_startup_heap, set_realtime
from bronchonav.catheter.runtime.solve_log import SolveCounts, SolveLog
from bronchonav.catheter.runtime.solver_process import (SolverConfig, SolverHealth,
                                                        SolverProcess, SolverSupervisor)

__all__ = ["AuditLog", "CommandGuard", "Refusal", "REFUSAL_KINDS", "FixedRateLoop",
           "freeze_startup_heap", "set_realtime", "SolveCounts", "SolveLog", "SolverConfig",
           "SolverHealth", "SolverProcess", "SolverSupervisor"]
