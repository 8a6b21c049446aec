"""The outcome of a registration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RegistrationResult:
    """A patient-to-CT registration and how good it is.

    Attributes
    ----------
    T_ct_patient : ndarray, shape (4, 4)
        Estimated rigid transform from the patient (sensor) frame to the CT frame (m).
    success : bool
        Whether the registration met the acceptance criteria (fitness and FRE thresholds).
        A failed registration still carries its best transform; do not navigate with it.
    message : str
        Why it succeeded or failed, in words.
    fitness : float
        Fraction of the input points with a correspondence within the final distance threshold.
    fre : float
        Fiducial registration error: RMS distance of the inlier points to the twin (m).
    n_points, n_inliers : int
        Input points and inliers at the final stage.
    iterations : int or None
        ICP iterations run by the centerline stages (global + local, not counting the initial
        alignment); ``None`` for the surface registration, whose open3d ICP does not report it.
    time_s : float
        Wall time of the whole registration (s).
    quality : str
        ``"good"``, ``"fair"``, ``"poor"`` or ``"failed"``, from fitness, FRE and
        ``target_sigma`` (see :func:`bronchonav.registration.register.quality_flag`).
    target_sigma : float or None
        Estimated 1-sigma statistical error of the transform at the target (m), from the ICP
        normal equations and the residual scatter; ``None`` without a target. It does not
        include systematic errors such as breathing motion.
    method : str
        Stages run, e.g. ``"initial+centerline"``, ``"initial+centerline+local"``,
        ``"centerline+surface"``.
    global_result : RegistrationResult or None
        For a local refinement: the result of the global stage it started from.
    ambiguous : bool
        Refused because a different pose fits the samples about as well: more airways swept
        (:func:`bronchonav.navigation.survey_stops`) may decide between them.
    """

    T_ct_patient: np.ndarray
    success: bool
    message: str
    fitness: float
    fre: float
    n_points: int
    n_inliers: int
    iterations: int | None
    time_s: float
    quality: str
    target_sigma: float | None
    method: str
    global_result: "RegistrationResult | None" = None
    ambiguous: bool = False

    def to_dict(self) -> dict:
        """JSON-serialisable summary (transform as nested lists, distances in m; a non-finite
        number, such as the FRE of a fit that found no inliers, becomes ``None``)."""
        out = {k: getattr(self, k) for k in ("success", "message", "fitness", "fre", "n_points",
                                             "n_inliers", "iterations", "time_s", "quality",
                                             "target_sigma", "method", "ambiguous")}
        for k, v in out.items():
            if isinstance(v, float) and not np.isfinite(v):
                out[k] = None
        out["T_ct_patient"] = np.asarray(self.T_ct_patient).tolist()
        if self.global_result is not None:
            out["global_result"] = self.global_result.to_dict()
        return out
