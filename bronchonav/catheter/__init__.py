"""The tendon-driven Cosserat-rod catheter: parameters, commands, model, state.

>>> from bronchonav.catheter import CatheterParams, CatheterCommand, CatheterModel
>>> model = CatheterModel(CatheterParams.default(), n_nodes=30)
>>> state = model.step(CatheterCommand(insertion=0.1, tendon_tension=[2.0, 0, 0, 0]))
>>> bool(state.converged)
True

See :mod:`bronchonav.catheter.model` for frames and the solver, :mod:`bronchonav.catheter.rod`
for the mechanics, :mod:`bronchonav.catheter.contact` for the wall contact and
:mod:`bronchonav.catheter.kinematics` for the rigid-link (URDF) chain and
:mod:`bronchonav.catheter.runtime` for the solver process and the fixed-rate loop.
"""

from bronchonav.catheter.command import CatheterCommand, validate_command
from bronchonav.catheter.kinematics import chain_forward, chain_joint_angles, link_joint_names
from bronchonav.catheter.model import CatheterModel, base_pose_from_tree
from bronchonav.catheter.params import CatheterParams, Limits, Segment, Tendon
from bronchonav.catheter.state import CatheterState

__all__ = ["CatheterParams", "Segment", "Tendon", "Limits", "CatheterCommand", "CatheterState",
           "CatheterModel", "validate_command", "base_pose_from_tree", "chain_joint_angles",
           "chain_forward", "link_joint_names"]
