"""A registration kept current while the catheter drives.

A live session keeps streaming EM samples after the first registration. :class:`RegistrationTracker`
keeps them (one per :attr:`RegistrationConfig.thin_voxel` cell) and registers again, from the
registration in use, each time ``every_samples`` new samples have come in, refined near the
target as before. A refit that fails keeps the registration in use (the failure is counted and
kept in :attr:`RegistrationTracker.last_attempt`); the first registration has no guess and so
may be refused as ambiguous like any other. After such a refusal the next registration chooses
the pose with every sample so far and fits the samples that were refused
(:func:`~bronchonav.registration.register.register_em_extended`): the airways swept since decide,
the survey fits (the refits after it, from the pose in use, fit every sample as always).
Samples may be added from one thread while another
registers (a ROS node's sensor callback and its timer): a registration works on a copy of the
samples taken when it starts.

How much refits help was measured in rehearsals on the default phantom (2026-12, five routes,
3 mm breathing, 3 mm cells, a refit every 5 new samples): the error at the lesion of the last
registration fell from 3.5–4.4 to 1.9–3.1 mm on four routes, but on the fifth, where the
catheter got stuck, it grew from 5.7 to 11.3 mm (samples of the stuck catheter matched to
neighbouring airways pull the refits away). So the rehearsal registers once, after the survey,
and the registration node refits only every ``auto_every_samples`` (150 by default in 1.5 mm
cells, about 300 mm of new airway).

Transforms are ``T_ct_patient`` (patient/sensor frame → CT frame), distances in metres.
"""

from __future__ import annotations

import threading

import numpy as np

from bronchonav.registration.register import (RegistrationConfig, register_em,
                                              register_em_extended)
from bronchonav.registration.result import RegistrationResult
from bronchonav.registration.samples import EMSampleAccumulator
from bronchonav.registration.twin import Twin


class RegistrationTracker:
    """EM samples of a drive and the registration they support, refitted as they accumulate.

    Parameters
    ----------
    twin : Twin, AirwayMap or AirwayTree
        The twin (CT frame).
    every_samples : int
        New kept samples between refits after the first successful registration (0: register
        once, never refit).
    config : RegistrationConfig, optional
        Its ``thin_voxel`` is the cell of the sample accumulator.
    max_samples : int, optional
        Keep at most this many samples (the oldest are dropped).
    """

    def __init__(self, twin, every_samples: int, config: RegistrationConfig | None = None,
                 max_samples: int | None = None) -> None:
        if every_samples < 0:
            raise ValueError(f"every_samples must be >= 0, got {every_samples}")
        self.config = config or RegistrationConfig()
        self.twin = Twin.of(twin)
        self.every_samples = int(every_samples)
        self.samples = EMSampleAccumulator(self.config.thin_voxel, max_samples)
        self.result: RegistrationResult | None = None
        """The last accepted (successful) registration."""
        self.last_attempt: RegistrationResult | None = None
        """The last registration tried, accepted or not."""
        self.refits = 0
        """Refits accepted after the first registration."""
        self.refused = 0
        """Refits that failed (the previous result was kept)."""
        self.kept = 0
        """Samples kept since the start (or the last reset), those dropped since included."""
        self._registered_at = 0
        self._ambiguous_survey = None
        self._generation = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Samples held now (at most ``max_samples``)."""
        with self._lock:
            return len(self.samples)

    def reset(self) -> int:
        """Forget the samples and the registration (a registration running meanwhile is
        discarded when it ends); the number of samples dropped."""
        with self._lock:
            self.result = self.last_attempt = self._ambiguous_survey = None
            self.refits = self.refused = self.kept = self._registered_at = 0
            self._generation += 1
            return self.samples.clear()

    def add(self, p_patient, axis_patient=None) -> bool:
        """Add one EM sample (position (3,) m, optional unit axis (3,), patient frame); whether
        it was kept (a new cell)."""
        with self._lock:
            added = self.samples.add(p_patient, axis_patient)
            self.kept += added
            return added

    def due(self) -> bool:
        """Whether enough new samples came in since the last registration for a refit (always
        False before the first success: that one is requested explicitly). New samples count
        also when ``max_samples`` makes room for them by dropping the oldest."""
        with self._lock:
            return (self.result is not None and self.every_samples > 0
                    and self.kept - self._registered_at >= self.every_samples)

    def register(self, target_ct=None, local_mask: np.ndarray | None = None
                 ) -> RegistrationResult:
        """Register the samples so far: without a guess until one succeeded (after an ambiguous
        refusal, and without ``local_mask``, the pose chosen with every sample and fitted to the
        refused ones: :func:`register_em_extended`), afterwards from the last accepted pose.
        Returns this attempt's result; :attr:`result` changes only when
        it succeeded.

        Raises
        ------
        RegistrationError
            Degenerate samples (see :func:`register_em`).
        """
        with self._lock:
            positions, directions = self.samples.positions, self.samples.directions
            init = None if self.result is None else self.result.T_ct_patient
            survey = self._ambiguous_survey if self.result is None else None
            self._registered_at = self.kept
            generation = self._generation
        if survey is not None and local_mask is None:
            attempt = register_em_extended(survey[0], positions, self.twin, target_ct=target_ct,
                                           survey_directions=survey[1],
                                           swept_directions=directions, config=self.config)
        else:
            attempt = register_em(positions, self.twin, target_ct=target_ct,
                                  directions_patient=directions, local_mask=local_mask,
                                  init=init, config=self.config)
        with self._lock:
            if generation == self._generation:  # not reset meanwhile
                if attempt.ambiguous and survey is None:
                    self._ambiguous_survey = (positions, directions)
                self.last_attempt = attempt
                if attempt.success:
                    self.refits += self.result is not None
                    self.result = attempt
                elif self.result is not None:
                    self.refused += 1
        return attempt
