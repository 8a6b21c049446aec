"""Expanding a campaign into cases: one per subject × nodule × catheter × registration scenario.

Each case has a unique key (``phantom-default-s0/N3/d3.5mm/breathing``) and a seed derived from
the campaign seed and that key with SHA-256, so a case gets the same random numbers whichever
worker runs it, in whatever order, in whichever run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from bronchonav.airway.tree import Nodule
from bronchonav.campaign.spec import CampaignSpec, CatheterVariant, NoduleSelection
from bronchonav.errors import InputError
from bronchonav.geometry import random_perpendicular
from bronchonav.maps import AirwayMap


@dataclass(frozen=True)
class Case:
    """One unit of work: a nodule of a subject, with a catheter, in a registration scenario.

    Attributes
    ----------
    key : str
        Unique id in the campaign; the results table is keyed by it.
    subject : str
        Subject key (:attr:`bronchonav.campaign.spec.Subject.key`).
    nodule_id : str
        Nodule id in the subject's map.
    catheter : CatheterVariant
    scenario : str or None
        Registration scenario; None when the campaign does not register.
    trials : int
        Registration trials to run.
    seed : int
        Seed of every random draw in the case (see :func:`case_seed`).
    stages : tuple of str
        Stages to run, in order.
    """

    key: str
    subject: str
    nodule_id: str
    catheter: CatheterVariant
    scenario: str | None
    trials: int
    seed: int
    stages: tuple[str, ...]

    def identity(self) -> dict:
        """The columns that identify the case in the results table."""
        return {"case_key": self.key, "subject": self.subject, "nodule": self.nodule_id,
                "catheter": self.catheter.name, "catheter_diameter_m": self.catheter.diameter_m,
                "scenario": self.scenario or "", "seed": self.seed}


def case_seed(campaign_seed: int, key: str) -> int:
    """A 63-bit seed from the campaign seed and a key (SHA-256; stable across runs and hosts)."""
    digest = hashlib.sha256(f"{campaign_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def select_nodules(airway_map: AirwayMap, selection: NoduleSelection) -> list[str]:
    """Ids of the map's nodules the campaign runs, in map order.

    Raises
    ------
    InputError
        ``ids`` names a nodule the map does not have.
    """
    known = [n.id for n in airway_map.nodules]
    if selection.select == "all" and selection.ids:
        missing = [i for i in selection.ids if i not in known]
        if missing:
            raise InputError(f"nodules.ids: map {airway_map.name!r} has no nodule "
                             f"{', '.join(missing)} (known: {', '.join(known) or 'none'})")
        return [i for i in known if i in selection.ids]
    return known


def sample_nodules(airway_map: AirwayMap, selection: NoduleSelection, seed: int) -> list[Nodule]:
    """Synthetic nodules beyond the distal ends of randomly chosen airways.

    For each nodule a branch is drawn uniformly among those with a generation in
    ``selection.generation``; the centre lies ``offset`` beyond the branch's distal end, in a
    direction within 45° of the branch direction; the diameter and offset are uniform in their
    ranges. Coordinates in the CT frame (m).

    Parameters
    ----------
    airway_map : AirwayMap
    selection : NoduleSelection
        With ``select == "sample"``.
    seed : int
        Seed of the draws.

    Returns
    -------
    list of Nodule
        Ids ``S1``, ``S2``, ...; ``note`` records the branch they were placed at.

    Raises
    ------
    InputError
        The map has no branch in the generation range.
    """
    lo, hi = selection.generation
    branches = [b for b in airway_map.tree if lo <= b.generation <= hi]
    if not branches:
        raise InputError(f"nodules.generation: map {airway_map.name!r} has no airway of generation "
                         f"{lo}..{hi} (max generation {airway_map.tree.max_generation})")
    rng = np.random.default_rng(seed)
    nodules = []
    for i in range(selection.count):
        branch = branches[int(rng.integers(len(branches)))]
        axis = branch.direction
        # a random direction within 45 degrees of the airway axis
        perp = random_perpendicular(axis, rng)
        tilt = rng.uniform(0.0, np.pi / 4)
        direction = np.cos(tilt) * axis + np.sin(tilt) * perp
        offset = rng.uniform(*selection.offset_m)
        diameter = rng.uniform(*selection.diameter_m)
        nodules.append(Nodule(id=f"S{i + 1}", center=branch.end + offset * direction,
                              radius=diameter / 2, lobe=branch.lobe,
                              note=f"sampled {offset * 1e3:.1f} mm beyond branch {branch.id}"))
    return nodules


def expand_cases(spec: CampaignSpec, nodule_ids: dict[str, list[str]]) -> list[Case]:
    """Every case of the campaign, in a fixed order (subject, nodule, catheter, scenario).

    Parameters
    ----------
    spec : CampaignSpec
    nodule_ids : dict
        Subject key → the nodule ids to run for it (from :func:`select_nodules`).
    """
    scenarios = spec.registration.scenarios or (None,)
    cases = []
    for subject in spec.subjects:
        for nodule in nodule_ids[subject.key]:
            for catheter in spec.catheters:
                for scenario in scenarios:
                    parts = [subject.key, nodule, catheter.name] + ([scenario] if scenario else [])
                    key = "/".join(parts)
                    cases.append(Case(key=key, subject=subject.key, nodule_id=nodule,
                                      catheter=catheter, scenario=scenario,
                                      trials=spec.registration.trials,
                                      seed=case_seed(spec.seed, key), stages=spec.stages))
    return cases
