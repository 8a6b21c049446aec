"""Rehearse a route in the twin: navigation controller + catheter model (+ EM + registration).

The plant is a :class:`~bronchonav.catheter.CatheterModel` in the map's airways (no wall-clock
deadline: the result does not depend on machine load). The controller
(:class:`~bronchonav.navigation.NavigationController`) probes the same model for the tip's
sensitivity; what it observes depends on ``pose``:

- ``"truth"``: the model's tip pose (CT frame);
- ``"registered"``: what a navigation system sees. The patient lies at a hidden
  ``T_ct_patient``; an EM tip sensor reports the tip moved by breathing, in the patient frame,
  with noise. The catheter first surveys both main bronchi
  (:func:`~bronchonav.navigation.survey_arm`; steered on the truth, as a physician does under
  the camera), the EM sweep is registered to the map (refused as ambiguous, the survey goes on
  along the route and registers again: :func:`~bronchonav.navigation.survey_stops`)
  (:func:`~bronchonav.registration.register_em`, refined near the target as the ROS
  registration node does), and the drive to the target then steers on
  ``T_ct_patient_estimated @ T_patient_sensor``, its off-route tests widened by the
  registration's own error estimate at the target (``target_sigma``).

At the end the tool is advanced from the final tip along its axis by the planned tool length and
scored against the lesion displaced by breathing at that moment (tool-in-lesion).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from bronchonav.catheter.command import CatheterCommand
from bronchonav.catheter.model import CatheterModel
from bronchonav.errors import InputError
from bronchonav.navigation import (NavigationConfig, NavigationController, NavigationOutcome,
                                   RouteTarget, survey_arm, survey_stops)
from bronchonav.navigation.survey import SURVEY_MARGIN_M
from bronchonav.navigation.tool import advance_tool
from bronchonav.registration import (RegistrationConfig, Twin, register_em,
                                     register_em_extended)
from bronchonav.sensors import BreathingModel, EMSensor, patient_transform

POSES = ("truth", "registered")


@dataclass(frozen=True)
class SensingConfig:
    """The simulated patient and EM sensor of a registered-pose rehearsal.

    Attributes
    ----------
    patient_seed : int
        Seed of the hidden ``T_ct_patient`` (:func:`bronchonav.sensors.patient_transform`).
    em_noise_m : float
        EM position noise, std per axis (m).
    em_angle_noise_rad : float
        EM orientation noise, std (rad).
    breathing_amplitude_m : float
        Head-foot motion of the lung base (m).
    breathing_period_s : float
        Breathing period (s).
    survey_margin_m : float
        The survey stops this far before the end of each main bronchus (m;
        :func:`~bronchonav.navigation.survey_arm`).
    sample_cell_m : float
        The registration keeps one EM sample per cube of this size (m;
        :attr:`~bronchonav.registration.RegistrationConfig.thin_voxel`, as the ROS registration
        node's ``sample_cell_m``).
    """

    patient_seed: int = 1
    em_noise_m: float = 1.0e-3
    em_angle_noise_rad: float = 0.01
    breathing_amplitude_m: float = 3.0e-3
    breathing_period_s: float = 4.0
    survey_margin_m: float = SURVEY_MARGIN_M
    sample_cell_m: float = RegistrationConfig.thin_voxel


@dataclass
class RehearsalResult:
    """What a rehearsal measured.

    Attributes
    ----------
    pose : str
        ``"truth"`` or ``"registered"``: what the controller steered on.
    outcome : NavigationOutcome
        How the navigation ended (``reached``, ``stuck``, ``wrong_branch``, ``timeout``).
    reached : bool
        The outcome is ``reached`` and the true tip was within the reach tolerance of the exit
        point when driving ended.
    tip_to_exit_m : float
        True distance from the tip to the exit point when driving ended (m).
    tool_in_lesion : bool
        The tool, advanced from the final tip along its axis by the planned tool length, ends
        inside the lesion displaced by breathing.
    tool_miss_m : float
        Distance from the tool's end to the displaced lesion centre (m).
    steps : int
        Plant steps (survey included).
    failed_steps : int
        Plant steps whose solve did not converge (the previous state was kept).
    sim_time_s : float
        Simulated time of the drive to the target (s).
    max_contact_n : float
        Largest total wall force over the run (N).
    wall_s : float
        Wall-clock time of the rehearsal (s); the only figure that depends on the machine.
    registration_success : bool or None
        Whether the registration succeeded (``None`` when steering on the truth).
    registration_tre_m : float or None
        Registration error at the lesion centre (m).
    survey_extensions : int
        How many times the survey went on along the route because the registration was refused
        as ambiguous (:func:`~bronchonav.navigation.survey_stops`).
    """

    pose: str
    outcome: NavigationOutcome
    reached: bool
    tip_to_exit_m: float
    tool_in_lesion: bool
    tool_miss_m: float
    steps: int
    failed_steps: int
    sim_time_s: float
    max_contact_n: float
    wall_s: float
    registration_success: bool | None = None
    registration_tre_m: float | None = None
    survey_extensions: int = 0
    trajectory: list = field(default_factory=list, repr=False)

    @property
    def failed_fraction(self) -> float:
        """Failed plant steps over all plant steps."""
        return self.failed_steps / max(self.steps, 1)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (without the trajectory)."""
        d = asdict(self)
        d.pop("trajectory")
        d["outcome"] = self.outcome.to_dict()
        d["failed_fraction"] = self.failed_fraction
        return d


class _Run:
    """The plant, the clock and the counters shared by the phases of one rehearsal."""

    def __init__(self, model: CatheterModel, config: NavigationConfig, sensor: EMSensor | None,
                 keep_trajectory: bool) -> None:
        self.model = model
        self.config = config
        self.sensor = sensor
        self.steps = 0
        self.failed = 0
        self.accepted = True
        self.max_contact = 0.0
        self.em_patient: list[np.ndarray] = []
        self.trajectory: list | None = [] if keep_trajectory else None
        self.drive_end_tip: np.ndarray | None = None
        self.survey_extensions = 0
        if model.state is None:
            model.step(CatheterCommand(insertion=0.0))

    @property
    def t(self) -> float:
        return self.steps * self.config.control_period_s

    def apply(self, command) -> None:
        state = self.model.step(command)
        self.steps += 1
        self.accepted = bool(state.converged)
        self.failed += not state.converged
        self.max_contact = max(self.max_contact, state.total_contact_force)
        if self.sensor is not None:
            self.em_patient.append(self.sensor.read(state.tip_pose, self.t).p_patient)
        if self.trajectory is not None:
            self.trajectory.append(state.tip_position.copy())

    def drive(self, controller: NavigationController, observe) -> NavigationOutcome:
        """Run ``controller`` to its outcome; :attr:`drive_end_tip` is the true tip (CT, m)
        when driving ended (the final aiming at the lesion holds the insertion but swings the
        tip)."""
        self.drive_end_tip = None
        while controller.outcome is None:
            command = controller.update(observe(self.model.state.tip_pose), self.accepted)
            if self.drive_end_tip is None and (controller.phase == "aim" or
                                               controller.outcome is not None):
                self.drive_end_tip = self.model.state.tip_position.copy()
            if controller.outcome is None:
                self.apply(command)
        return controller.outcome


def rehearse(airway_map, route, params, pose: str = "truth",
             config: NavigationConfig | None = None, sensing: SensingConfig | None = None,
             n_nodes: int = 30, seed: int = 0, keep_trajectory: bool = False
             ) -> RehearsalResult:
    """Drive the catheter along ``route`` in ``airway_map`` and score it.

    Parameters
    ----------
    airway_map : AirwayMap
        The map (CT frame); its tree is both the plant's airways and the registration's twin.
    route : Route
        A feasible planned route.
    params : CatheterParams
        The catheter.
    pose : {"truth", "registered"}
        What the controller steers on (see the module docstring).
    config : NavigationConfig, optional
    sensing : SensingConfig, optional
        Patient, EM sensor and breathing (both poses: the tool is scored against the breathing
        lesion either way).
    n_nodes : int
        Catheter discretisation.
    seed : int
        Seed of the EM noise.
    keep_trajectory : bool
        Keep the true tip positions of every step (``RehearsalResult.trajectory``).
    """
    if pose not in POSES:
        raise InputError(f"pose must be one of {', '.join(POSES)}, got {pose!r}")
    t_wall = time.perf_counter()
    config = config or NavigationConfig()
    sensing = sensing or SensingConfig()
    tree = airway_map.tree
    target = RouteTarget.from_route(route)
    breathing = BreathingModel.for_tree(tree, sensing.breathing_amplitude_m,
                                        period=sensing.breathing_period_s)
    T_ct_patient = patient_transform(sensing.patient_seed)
    sensor = EMSensor(T_ct_patient, breathing, sensing.em_noise_m, sensing.em_angle_noise_rad,
                      seed=seed)
    model = CatheterModel(params, tree, n_nodes=n_nodes)
    run = _Run(model, config, sensor if pose == "registered" else None, keep_trajectory)

    def truth(T_ct_tip):
        return T_ct_tip

    observe = truth
    reg_success = reg_tre = None
    pose_sigma = 0.0
    if pose == "registered":
        for same_side in (False, True):  # the other main bronchus first, then this one
            arm = survey_arm(tree, route.target_center, same_side, sensing.survey_margin_m)
            surveyor = NavigationController(RouteTarget.from_points(arm.points, arm.branch_ids),
                                            model, config, steps_model=False)
            run.drive(surveyor, truth)  # the second arm withdraws from the first on its own
        twin = Twin.of(airway_map).prepare()
        cells = RegistrationConfig(thin_voxel=sensing.sample_cell_m)
        survey = np.array(run.em_patient)
        result = register_em(survey, twin, target_ct=route.target_center, config=cells)
        for extensions, stop in enumerate(survey_stops(target.length, arm)[1:], start=1):
            if not result.ambiguous:
                break
            # refused as ambiguous: survey on along the route, let that choose the pose
            surveyor = NavigationController(RouteTarget(target.path.head(stop), target.branch_ids),
                                            model, config, steps_model=False)
            run.drive(surveyor, truth)
            result = register_em_extended(survey, np.array(run.em_patient), twin,
                                          target_ct=route.target_center, config=cells)
            run.survey_extensions = extensions
        reg_success = bool(result.success)
        T_est = result.T_ct_patient
        c = np.append(route.target_center, 1.0)
        reg_tre = float(np.linalg.norm((T_est @ np.linalg.inv(T_ct_patient) @ c)[:3]
                                       - route.target_center))
        if not reg_success:
            run.drive_end_tip = None  # no drive to the target: score where the tip is
            outcome = NavigationOutcome("registration_failed", f"registration failed: "
                                        f"{result.message}", float("nan"), None, None, 0.0, 0,
                                        0, 0.0)
            return _result(pose, outcome, run, route, sensor, model, target, t_wall,
                           reg_success, reg_tre)

        def registered(T_ct_tip):
            return T_est @ sensor.read(T_ct_tip, run.t).T_patient_sensor

        observe = registered
        pose_sigma = float(result.target_sigma or 0.0)

    controller = NavigationController(target, model, config, steps_model=False,
                                      pose_sigma_m=pose_sigma)
    steps_before = run.steps
    outcome = run.drive(controller, observe)
    outcome.sim_time_s = (run.steps - steps_before) * config.control_period_s
    return _result(pose, outcome, run, route, sensor, model, target, t_wall, reg_success,
                   reg_tre)


def _result(pose, outcome, run: _Run, route, sensor: EMSensor, model, target: RouteTarget,
            t_wall: float, reg_success, reg_tre) -> RehearsalResult:
    state = model.state
    T_tip = sensor.moved_tip(state.tip_pose, sensor.phase_at(run.t))
    lesion = sensor.moved_tip(_at(route.target_center), sensor.phase_at(run.t))[:3, 3]
    tool = advance_tool(T_tip, target.tool_length, lesion, float(route.target_radius))
    tip = state.tip_position if run.drive_end_tip is None else run.drive_end_tip
    tip_to_exit = float(np.linalg.norm(tip - target.exit_point))
    reached = outcome.status == "reached" and tip_to_exit <= run.config.reach_tolerance_m
    return RehearsalResult(
        pose=pose, outcome=outcome, reached=bool(reached), tip_to_exit_m=tip_to_exit,
        tool_in_lesion=tool.in_lesion, tool_miss_m=tool.miss_m,
        steps=run.steps, failed_steps=run.failed, sim_time_s=outcome.sim_time_s,
        max_contact_n=run.max_contact, wall_s=time.perf_counter() - t_wall,
        registration_success=reg_success, registration_tre_m=reg_tre,
        survey_extensions=run.survey_extensions, trajectory=run.trajectory or [])


def _at(p) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = p
    return T
