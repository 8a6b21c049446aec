"""The tendon-driven Cosserat-rod catheter: parameters, commands, model, state.

>>> from bronchonav.catheter import CatheterParams, CatheterCommand, CatheterModel
>>> model = CatheterModel(CatheterParams.default(), n_nodes=30)
>>> state = model.step(CatheterCommand(insertion=0.1, tendon_tension=[2.0, 0, 0, 0]))
>>> bool(state.converged)
True

See :mod:`bronchonav.catheter.model` for frames and the solver, :mod:`bronchonav.catheter.rod`
for the mechanics, :mod:`bronchonav.catheter.contact` for the wall contact and
:mod:`bronchonav.catheter.kinematics` for the rigid-link (URDF) approximation.
"""

from bronchonav.catheter.command import CatheterCommand, validate_command
from bronchonav.catheter.kinematics import JointChain, forward_kinematics, joint_angles
from bronchonav.catheter.model import CatheterModel, base_pose_from_tree
from bronchonav.catheter.params import CatheterParams, Limits, Segment, Tendon
from bronchonav.catheter.state import CatheterState

__all__ = ["CatheterParams", "Segment", "Tendon", "Limits", "CatheterCommand", "CatheterState",
           "CatheterModel", "validate_command", "base_pose_from_tree", "JointChain",
           "joint_angles", "forward_kinematics"]
