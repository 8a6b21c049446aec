"""Running one case: its map, then its stages in order, each adding columns to the case's row.

A stage is a function ``stage(ctx: CaseContext, **options) -> dict`` returning result columns
(names prefixed by the stage, values None/bool/int/float/str; lists as JSON text in ``*_json``
columns). Built-in stages are looked up by name (``plan``, ``rehearse``, ``register``,
``camera``, see :mod:`bronchonav.campaign.builtin`); a campaign may also name its own as
``"package.module:function"``, run only when allowed and as the driver resolved it
(:mod:`bronchonav.campaign.custom`). Every random draw of a stage comes from
:meth:`CaseContext.rng`, seeded from the case seed and the stage name, so a case's row does not
depend on which worker runs it.

Maps are made once per subject (:func:`subject_map`) and cached under the output folder
(:func:`cache_map`), so a resumed campaign does not rebuild them.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bronchonav.campaign.builtin import STAGES
from bronchonav.campaign.cases import Case, sample_nodules
from bronchonav.campaign.custom import CustomStage
from bronchonav.campaign.spec import NoduleSelection, Subject
from bronchonav.campaign.store import clean_value
from bronchonav.errors import InputError
from bronchonav.maps import AirwayMap, load_map, save_map


@dataclass
class CaseContext:
    """What a stage sees: the case, its subject's map, and what earlier stages left.

    Attributes
    ----------
    case : Case
    airway_map : AirwayMap
        The subject's map (CT frame, m). Shared between cases: stages must not modify it.
    shared : dict
        Objects earlier stages of the same case hand to later ones (``"route"`` from ``plan``,
        ``"catheter_params"``...).
    """

    case: Case
    airway_map: AirwayMap
    shared: dict = field(default_factory=dict)

    @property
    def nodule(self):
        """The case's nodule (CT frame, m)."""
        return self.airway_map.nodule(self.case.nodule_id)

    def rng(self, stage: str) -> np.random.Generator:
        """A generator seeded from the case seed and ``stage`` (independent streams per stage)."""
        tag = int.from_bytes(hashlib.sha256(stage.encode()).digest()[:8], "big")
        return np.random.default_rng([self.case.seed, tag])

    def stage_seed(self, stage: str) -> int:
        """An integer seed for APIs that take one, derived like :meth:`rng`."""
        return int(self.rng(stage).integers(2**31 - 1))


def map_stage(ctx: CaseContext) -> dict:
    """Facts about the subject's map and the case's nodule (no computation beyond a look-up).

    Columns: ``map_branches``, ``map_max_generation``, ``nodule_diameter_m``, ``nodule_lobe``,
    ``nodule_airway_distance_m`` (nodule centre to the nearest airway centerline) and
    ``nodule_airway_generation`` (that airway's generation).
    """
    tree = ctx.airway_map.tree
    nodule = ctx.nodule
    dist, idx = tree.nearest(nodule.center)
    branch = tree[int(tree.samples().branch_ids[idx[0]])]
    return {"map_branches": len(tree), "map_max_generation": tree.max_generation,
            "nodule_diameter_m": 2 * nodule.radius, "nodule_lobe": nodule.lobe or "",
            "nodule_airway_distance_m": float(dist[0]),
            "nodule_airway_generation": branch.generation}


def resolve_stage(name: str, custom_stages: dict[str, CustomStage] | None = None):
    """The function of a stage: a built-in by name, or a custom stage the driver resolved.

    Raises
    ------
    InputError
        A custom stage that is not in ``custom_stages`` (not allowed, so never imported), or
        whose module here is not the one the driver resolved.
    """
    if name == "map":
        return map_stage
    if ":" not in name:
        return STAGES[name]
    if custom_stages is None or name not in custom_stages:
        raise InputError(f"custom stage {name!r} was not allowed by the driver; not running it")
    return custom_stages[name].load()


def stage_label(name: str) -> str:
    """Column prefix of a stage: its name, or a custom stage's function name."""
    return name.split(":")[-1]


RESERVED_COLUMNS = ("case_key", "subject", "nodule", "catheter", "catheter_diameter_m",
                    "scenario", "seed", "status", "error", "case_seconds")
"""Columns :func:`run_case` writes itself; a stage may not return them."""


def run_case(case: Case, airway_map: AirwayMap, stage_options: dict | None = None,
             custom_stages: dict[str, CustomStage] | None = None) -> dict:
    """Run a case's stages in order and return its results row.

    A stage that raises, calls ``sys.exit``, or returns something other than a dict of table
    cells stops the case: the row gets ``status = "error"`` and ``error`` says which stage
    failed and why (the traceback's last line for unexpected exceptions); the campaign goes on.
    The row always holds the case identity, ``status``, ``error``, and ``<stage>_seconds`` wall
    times. ``KeyboardInterrupt`` still stops the run.

    Parameters
    ----------
    case : Case
    airway_map : AirwayMap
    stage_options : dict, optional
        Stage name → keyword options.
    custom_stages : dict, optional
        The custom stages the driver allowed and resolved
        (:func:`bronchonav.campaign.custom.resolve_custom_stages`); any other custom stage is
        refused in the row, without importing it.
    """
    stage_options = stage_options or {}
    row = case.identity()
    row.update(status="ok", error="")
    ctx = CaseContext(case, airway_map)
    start = time.perf_counter()
    for name in case.stages:
        t0 = time.perf_counter()
        try:
            func = resolve_stage(name, custom_stages)
            columns = _columns(func(ctx, **stage_options.get(name, {})))
        except SystemExit as exc:
            row.update(status="error", error=f"{name}: the stage called sys.exit({exc.code!r}); "
                                             "a stage returns its columns or raises")
            break
        except Exception as exc:  # noqa: BLE001 - recorded in the row, the campaign goes on
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            row.update(status="error", error=f"{name}: {last}")
            break
        finally:
            row[f"{stage_label(name)}_seconds"] = time.perf_counter() - t0
        row.update(columns)
    row["case_seconds"] = time.perf_counter() - start
    return row


def _columns(result) -> dict:
    """A stage's result checked as result columns (raises ``TypeError`` naming the fault)."""
    if not isinstance(result, dict):
        raise TypeError(f"the stage returned {type(result).__name__}, not a dict of result "
                        "columns")
    for key, value in result.items():
        if not isinstance(key, str) or key in RESERVED_COLUMNS:
            raise TypeError(f"the stage returned column {key!r}: column names are strings other "
                            f"than {', '.join(RESERVED_COLUMNS)}")
        try:
            clean_value(value)
        except TypeError as exc:
            raise TypeError(f"column {key!r}: {exc}") from None
    return result


def subject_map(subject: Subject, nodules: NoduleSelection, nodule_seed: int) -> AirwayMap:
    """Make a subject's map (see :func:`make_map`) with the campaign's nodules.

    With ``nodules.select == "sample"`` the map's nodules are replaced by sampled ones (seeded by
    ``nodule_seed``).
    """
    airway_map = make_map(subject)
    if nodules.select == "sample":
        airway_map.nodules = sample_nodules(airway_map, nodules, nodule_seed)
    return airway_map


def cache_map(airway_map: AirwayMap, folder: str | Path) -> AirwayMap:
    """Save a map into the cache folder and return it as loaded back, so that a first run and a
    resumed run see exactly the same map."""
    save_map(airway_map, folder, force=True)
    return load_map(folder)


def make_map(subject: Subject) -> AirwayMap:
    """Build or load a subject's map (no caching)."""
    if subject.kind == "map":
        return load_map(subject.source)
    from bronchonav.airway import build

    if subject.kind == "ct":
        return build.build_map_from_ct(subject.source, series=subject.series).airway_map
    if subject.map_mode == "build":
        return build.build_map_from_phantom(subject.source, subject.seed).airway_map
    from bronchonav.ct.phantom import phantom_config, phantom_ground_truth_map

    return phantom_ground_truth_map(phantom_config(subject.source, subject.seed))
