"""Where the tool goes once navigation has ended: advanced straight from the tip, along its axis.

The tool-in-lesion outcome of the rehearsal and of the ROS demo: the tool leaves the final tip
along the tip frame's z axis by the planned tool length (the planner's straight path from the
exit point to the lesion centre) and counts as in the lesion when its end lies within the
lesion's radius of the lesion centre. All in the CT frame (LPS, m).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ToolShot:
    """A tool advanced from the tip.

    Attributes
    ----------
    end_ct : ndarray, shape (3,)
        The tool's end (CT frame, m).
    miss_m : float
        Distance from the tool's end to the lesion centre (m).
    in_lesion : bool
        Whether the end lies inside the lesion (``miss_m <= lesion radius``).
    """

    end_ct: np.ndarray
    miss_m: float
    in_lesion: bool


def planned_tool_length(exit_point_ct: np.ndarray, lesion_center_ct: np.ndarray) -> float:
    """The planned tool length (m): the planner's straight tool path from the exit point to the
    lesion centre (both CT frame, m)."""
    return float(np.linalg.norm(np.asarray(lesion_center_ct, dtype=float)
                                - np.asarray(exit_point_ct, dtype=float)))


def advance_tool(T_ct_tip: np.ndarray, tool_length_m: float, lesion_center_ct: np.ndarray,
                 lesion_radius_m: float) -> ToolShot:
    """Advance the tool ``tool_length_m`` from the tip pose ``T_ct_tip`` (4×4, tip frame to CT,
    the tool along its z axis) and score it against the lesion (centre in the CT frame, radius;
    m)."""
    T = np.asarray(T_ct_tip, dtype=float)
    end = T[:3, 3] + T[:3, 2] * float(tool_length_m)
    miss = float(np.linalg.norm(end - np.asarray(lesion_center_ct, dtype=float)))
    return ToolShot(end_ct=end, miss_m=miss, in_lesion=bool(miss <= float(lesion_radius_m)))
