"""``registration``: patient→CT registration from the EM tip sensor, as ROS messages.

Topic and service names are relative to the node's namespace (``namespace:=cath2`` moves them
all). Collects ``catheter/em_pose`` samples (``PoseStamped`` in ``patient``; one per ``sample_cell_m``
cube, so a catheter at rest adds a few dozen and a sweep one every millimetre or two) and registers
them to the map's centerlines with :func:`bronchonav.registration.register.register_em` — on request
(``registration/trigger``, ``std_srvs/Trigger``) or automatically once ``auto_min_samples``
samples exist, and then refitted from the pose in use every ``auto_every_samples`` new samples
as the catheter drives on
(:class:`~bronchonav.registration.tracker.RegistrationTracker`); a refit that fails keeps the
registration in use and says so on ``registration/status`` and ``/diagnostics``. With a
feasible route on ``route/status``, its target drives the local refinement near the lesion.

Publishes (transient-local): ``registration/transform`` (``geometry_msgs/TransformStamped``,
parent ``ct``, child ``patient``: ``T_ct_patient``), ``registration/quality``
(``std_msgs/Float64MultiArray``: ``[fitness, fre_m, n_points, success, target_sigma_m]``) of
the last registration except a refused refit (a failed first registration is published too,
``success`` 0), ``registration/status`` (``std_msgs/String``, JSON of the last attempt, with
``in_use``: whether it is the registration in use, ``attempt``: its number among the node's
registrations, and the counts ``refits`` and ``refits_refused``); and, for every EM sample once
registered, ``registration/tip_pose`` (``PoseStamped``, ``ct``). ``registration/reset`` clears
the samples and the registration.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TransformStamped
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, Header, String
from std_srvs.srv import Trigger

from bronchonav.errors import BronchoNavError
from bronchonav.ros import conversions as conv
from bronchonav.ros import qos
from bronchonav.ros.params import Param, declare, give_way, nice_param

if TYPE_CHECKING:  # the registration is imported when the node is made (a light import here)
    from bronchonav.registration.result import RegistrationResult

PARAMS = [
    Param("map", "maps/phantom_default", "Map folder or 'phantom:NAME' (see airway_map_server)"),
    Param("auto_register", True, "Register automatically once enough samples exist, and "
          "refit as more come in"),
    Param("auto_min_samples", 225, "Samples needed before the automatic registration (in "
          "1.5 mm cells about the survey of both main bronchi)", minimum=20, maximum=1_000_000),
    Param("auto_every_samples", 150,
          "With auto_register: once registered, refit from the pose in use after this many "
          "new samples (about 300 mm of new airway; 0 = never refit)", minimum=0,
          maximum=1_000_000),
    Param("sample_cell_m", 1.5e-3,
          "Keep one EM sample per cube of this size (m): a catheter at rest adds the cubes "
          "of its noise's ball (about 40 at 1 mm noise), not one sample per reading, and a "
          "survey of the main bronchi keeps enough to tell the right pose from a rival (in "
          "3 mm cells 5 of 40 surveys were refused as ambiguous)", minimum=1e-4, maximum=0.05),
    Param("max_samples", 20000, "Samples kept at most (oldest dropped)", minimum=20,
          maximum=10_000_000),
    Param("use_route_target", True,
          "Refine locally around the target of the feasible route on route/status"),
    nice_param(),
]

QUALITY_LABELS = ("fitness", "fre_m", "n_points", "success", "target_sigma_m")

KEPT = "refit refused: the registration in use is kept"
ATTEMPT_PREFIX = "attempt "
"""A ``registration/trigger`` reply starts ``attempt N: ``, N the ``attempt`` of the
``registration/status`` it answers."""


@dataclass(frozen=True)
class Attempt:
    """A registration the node ran: its number among the node's attempts, and its result."""

    number: int
    result: RegistrationResult
"""Appended to what a failed refit reports (log, /diagnostics, the trigger's reply)."""


class RegistrationNode(Node):
    """EM-to-CT registration node (see the module docstring).

    Parameters
    ----------
    **kwargs
        Passed to :class:`rclpy.node.Node`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("registration", **kwargs)
        self.params = p = declare(self, PARAMS)
        give_way(p["nice"])  # before the start-up work (imports, map)
        from bronchonav.registration.register import RegistrationConfig
        from bronchonav.registration.tracker import RegistrationTracker
        from bronchonav.ros.resources import load_airway_map

        self.airway_map = load_airway_map(p["map"])
        self.tracker = RegistrationTracker(self.airway_map, p["auto_every_samples"],
                                           RegistrationConfig(thin_voxel=p["sample_cell_m"]),
                                           p["max_samples"])
        self._failed_at_n = 0  # tracker.kept when a registration without a guess last failed
        self.target_ct: np.ndarray | None = None
        self._busy = threading.Lock()
        self.attempts = 0  # registrations run (automatic or triggered); numbers their status
        self.pub_tf = self.create_publisher(TransformStamped, "registration/transform", qos.LATCHED)
        self.pub_quality = self.create_publisher(Float64MultiArray, "registration/quality",
                                                 qos.LATCHED)
        self.pub_status = self.create_publisher(String, "registration/status", qos.LATCHED)
        self.pub_tip = self.create_publisher(PoseStamped, "registration/tip_pose", qos.STATE)
        self.pub_diag = self.create_publisher(DiagnosticArray, "diagnostics", qos.DEFAULT)
        self.create_subscription(PoseStamped, "catheter/em_pose", self._on_em, qos.SAMPLES)
        self.create_subscription(String, "route/status", self._on_route, qos.LATCHED)
        self.create_service(Trigger, "registration/trigger", self._on_trigger)
        self.create_service(Trigger, "registration/reset", self._on_reset)
        self._auto_timer = self.create_timer(0.2, self._auto)
        self.get_logger().info(f"registration ready on map {self.airway_map.name!r}: "
                               f"registration/trigger, auto={p['auto_register']}")

    @property
    def n_samples(self) -> int:
        """EM samples collected so far."""
        return len(self.tracker)

    @property
    def result(self):
        """The registration in use (the last that succeeded), or ``None``."""
        return self.tracker.result

    def _on_em(self, msg: PoseStamped) -> None:
        T = conv.pose_to_matrix(msg.pose)
        self.tracker.add(T[:3, 3], T[:3, 2])
        result = self.tracker.result
        if result is not None:
            self.pub_tip.publish(conv.pose_stamped(result.T_ct_patient @ T, "ct", msg.header.stamp))

    def _on_route(self, msg: String) -> None:
        try:
            status = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        if self.params["use_route_target"] and status.get("feasible") and status.get("target_m"):
            self.target_ct = np.asarray(status["target_m"], dtype=float)

    def register(self):
        """Run the registration on the samples so far; publish and return the result.

        Raises
        ------
        RegistrationError
            Too few or degenerate samples (see :func:`register_em`).
        """
        return self.attempt().result

    def attempt(self) -> "Attempt":
        """:meth:`register`, returning the result with its number among the node's attempts
        (the ``attempt`` of its ``registration/status``)."""
        with self._busy:
            refit = self.tracker.result is not None
            n, kept_so_far = len(self.tracker), self.tracker.kept
            try:
                result = self.tracker.register(self.target_ct)
            finally:
                if self.tracker.result is None:
                    self._failed_at_n = kept_so_far
            self.attempts += 1
            attempt = Attempt(self.attempts, result)
        refused = self._refit_refused(result)
        self._publish(result, refused, attempt.number)
        what = "refit" if refit else "registration"
        log = self.get_logger().info if result.success else self.get_logger().warn
        log(f"{what} {'succeeded' if result.success else 'FAILED'} on {n} samples: "
            f"{result.message}; fitness {result.fitness:.2f}, FRE {result.fre * 1e3:.2f} mm, "
            f"{result.time_s * 1e3:.0f} ms ({result.method})"
            + (f"; {KEPT}" if refused else ""))
        return attempt

    def _refit_refused(self, r) -> bool:
        """Whether attempt ``r`` is a failed refit (the registration in use was kept)."""
        return not r.success and self.tracker.result is not None

    def _publish(self, r, refused: bool, attempt: int) -> None:
        """Publish attempt number ``attempt``, ``r``: its status and diagnostics always, the
        transform and quality unless it is a refused refit (the registration in use stays on
        them)."""
        stamp = self.get_clock().now().to_msg()
        if not refused:
            self.pub_tf.publish(conv.matrix_to_transform(r.T_ct_patient, "ct", "patient", stamp))
            sigma = float("nan") if r.target_sigma is None else float(r.target_sigma)
            self.pub_quality.publish(conv.labelled_array(dict(zip(QUALITY_LABELS, (
                float(r.fitness), float(r.fre), float(r.n_points), float(r.success), sigma)))))
        counts = {"attempt": attempt, "refits": self.tracker.refits,
                  "refits_refused": self.tracker.refused}
        self.pub_status.publish(String(data=json.dumps({**r.to_dict(), "in_use": bool(r.success),
                                                        **counts})))
        message = r.message + (f"; {KEPT}" if refused else "")
        level = DiagnosticStatus.OK if r.success else DiagnosticStatus.WARN
        self.pub_diag.publish(DiagnosticArray(header=Header(stamp=stamp), status=[DiagnosticStatus(
            level=level, name="registration: EM", message=message,
            hardware_id="bronchonav_registration",
            values=[KeyValue(key="fitness", value=f"{r.fitness:.3f}"),
                    KeyValue(key="fre_mm", value=f"{r.fre * 1e3:.3f}"),
                    KeyValue(key="n_points", value=str(r.n_points)),
                    *(KeyValue(key=k, value=str(v)) for k, v in counts.items()),
                    KeyValue(key="quality", value=r.quality)])]))

    def _auto(self) -> None:
        """Timer (with ``auto_register``): the first registration once ``auto_min_samples``
        exist (after a failure, again once ``auto_every_samples`` more came in), then the
        refits that are due."""
        p = self.params
        if not p["auto_register"]:
            return
        if self.tracker.result is None:
            waited = self.tracker.kept - self._failed_at_n  # new samples since a failure
            if self.n_samples < p["auto_min_samples"] or (
                    self._failed_at_n and waited < max(p["auto_every_samples"], 1)):
                return
        elif not self.tracker.due():
            return
        try:
            self.register()
        except BronchoNavError as exc:
            self.get_logger().warn(f"automatic registration not possible yet: {exc}",
                                   throttle_duration_sec=5.0)

    def _on_trigger(self, request, response: Trigger.Response):
        try:
            attempt = self.attempt()
        except BronchoNavError as exc:
            response.success, response.message = False, str(exc)
            return response
        r = attempt.result
        response.success = bool(r.success)
        kept = f"; {KEPT}" if self._refit_refused(r) else ""
        response.message = (f"{ATTEMPT_PREFIX}{attempt.number}: {r.message}; fitness "
                            f"{r.fitness:.3f}, FRE {r.fre * 1e3:.2f} mm, {r.n_points} samples"
                            f"{kept}")
        return response

    def _on_reset(self, request, response: Trigger.Response):
        n = self.tracker.reset()
        self._failed_at_n = 0
        response.success, response.message = True, f"cleared {n} samples"
        return response


def main(args=None) -> None:
    """Console script ``registration``."""
    from bronchonav.ros.runner import spin_node

    spin_node(RegistrationNode, args)


if __name__ == "__main__":
    main()
