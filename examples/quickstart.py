"""BronchoNav in one script: map → route → catheter → registration, with the core library only.

Run from the repository root::

    .venv/bin/python examples/quickstart.py

Everything is in SI units; coordinates are in the CT frame (LPS, metres).
"""

import numpy as np

from bronchonav.catheter import CatheterModel, CatheterParams
from bronchonav.maps import load_map
from bronchonav.navigation import NavigationController, RouteTarget
from bronchonav.planning import DeviceConstraints, RoutePlanner
from bronchonav.registration import Twin, apply, random_transform, register_em

# 1. The airway map built from the phantom CT (see `bronchonav build-map`).
airway_map = load_map("maps/phantom_default")
tree = airway_map.tree
print(f"map: {len(tree)} branches, generations 0-{tree.max_generation}, lobes {tree.lobes()}")

# 2. A device-aware route to nodule N3 for the default 3.5 mm catheter.
params = CatheterParams.default()
route = RoutePlanner(airway_map, DeviceConstraints.from_catheter(params)).plan("N3")[0]
print(f"route to N3: feasible={route.feasible}, {route.length * 1e3:.0f} mm through generations "
      f"{route.generations}, tool path {route.exit_distance_center * 1e3:.1f} mm")

# 3. Drive the Cosserat catheter along the route with the navigation controller, which steers
#    the tendons with the model's own sensitivity of the tip and inserts follow-the-leader style.
model = CatheterModel(params, tree=tree, n_nodes=30)
controller = NavigationController(RouteTarget.from_route(route), model)
while controller.outcome is None:
    controller.update(model.state.tip_pose)  # here the observed pose is the model's own
state = model.state
tip = state.tip_pose[:3, 3]
tip_branch = int(state.branch_ids[-1])  # the airway the model's wall contact tracks the tip in
print(f"navigation: {controller.outcome.reason}")
print(f"catheter tip: {np.round(tip * 1e3, 1)} mm (CT) in branch {tip_branch} "
      f"(on the route: {tip_branch in route.branch_ids}), inside the lumen: "
      f"{bool(tree.inside_lumen(tip)[0])}, within 0.5 mm of it: "
      f"{bool(tree.inside_lumen(tip, margin=-0.5e-3)[0])} (pressed into the wall: penalty "
      f"contact), wall force {state.total_contact_force:.2f} N")

# 4. Register an EM sweep of the central airways, seen in an unknown patient frame.
rng = np.random.default_rng(0)
T_patient_ct = random_transform(rng, max_translation=0.05, max_rotation=np.radians(30))
samples_ct = tree.samples(step=2e-3).points[tree.samples(step=2e-3).radii > 3e-3]
samples_patient = apply(T_patient_ct, samples_ct) + rng.normal(0, 1e-3, samples_ct.shape)
result = register_em(samples_patient, Twin.of(airway_map).prepare())
error = np.linalg.norm(apply(result.T_ct_patient @ T_patient_ct, route.exit_point) - route.exit_point)
print(f"registration: success={result.success}, FRE {result.fre * 1e3:.2f} mm, "
      f"error at the exit point {error * 1e3:.2f} mm")
