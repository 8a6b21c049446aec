"""The campaign file: a YAML description of a cohort study, parsed into validated dataclasses.

A campaign crosses a cohort of subjects (phantom seeds, map folders, CT scans) with their
nodules, catheter variants and registration scenarios, and runs a list of stages on every
combination (a *case*). Lengths are in metres, angles in radians, stiffness in N·m².

Example (see ``config/campaign_example.yaml``)::

    name: example
    seed: 2026                       # campaign seed: every case's seed derives from it
    cohort:
      phantoms: {name: default, seeds: [0, 1, 2, 3], map: ground_truth}   # or map: build
      maps: [maps/phantom_default]   # map folders (relative to the YAML file)
      cts: []                        # CT scans, built into maps once and cached; an entry is
                                     # a path or {path: P, series: N or UID} (a DICOM folder
                                     # holding several series)
    nodules: {select: all}           # or {select: sample, count: 5, diameter_m: [0.008, 0.02],
                                     #     generation: [4, 7], offset_m: [0.004, 0.015]}
    catheters:
      - {name: d3.5mm, diameter_m: 0.0035}
      - {name: d2.8mm, diameter_m: 0.0028, bending_stiffness_Nm2: 5.0e-4}
    registration: {scenarios: [breathing], trials: 20}
    stages: [map, plan, rehearse, register]
    execution: {retries: 3}

Every error names the offending field (``catheters[1].diameter_m: ...``) and raises
:class:`bronchonav.errors.InputError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from bronchonav.errors import InputError

BUILTIN_STAGES = ("map", "plan", "rehearse", "register", "camera")
"""Stages known by name; ``map`` always runs (listing it is optional)."""

STAGE_NEEDS = {"rehearse": "plan", "camera": "plan"}
"""Stage → the stage that must also be listed (it provides the route)."""

SEED_MAX = 2**32 - 1
"""Largest campaign or phantom seed."""

LIMITS = {"registration.trials": 10_000, "nodules.count": 1_000, "execution.retries": 100}
"""Upper bounds of the counts in a campaign file (a typo such as 1e9 trials is refused)."""


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CUSTOM_STAGE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Subject:
    """One member of the cohort.

    Attributes
    ----------
    kind : str
        ``"phantom"``, ``"map"`` or ``"ct"``.
    source : str
        Phantom name (``default``/``full``), or the absolute path of a map folder or CT scan.
    seed : int or None
        Phantom seed (phantoms only).
    map_mode : str
        For phantoms: ``"ground_truth"`` (use the generator's tree, fast) or ``"build"`` (extract
        the tree from the rendered CT). CT scans are always built; map folders are loaded.
    series : str or None
        For CT scans: the DICOM series to read from a folder holding several, by its number in
        the listing (from 1) or its UID (:func:`bronchonav.ct.io.read_ct`); None reads the only
        one.
    """

    kind: str
    source: str
    seed: int | None = None
    map_mode: str = "ground_truth"
    series: str | None = None

    @property
    def key(self) -> str:
        """Stable, unique, file-name-safe id (``phantom-default-s0``, ``map-NAME``, ``ct-NAME``,
        ``ct-NAME-series-N`` for a chosen DICOM series)."""
        if self.kind == "phantom":
            suffix = "" if self.map_mode == "ground_truth" else "-built"
            return f"phantom-{self.source}-s{self.seed}{suffix}"
        stem = Path(self.source).name
        for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
            if stem.endswith(ext):
                stem = stem[: -len(ext)]
        series = "" if self.series is None else f"-series-{_safe(self.series)}"
        return f"{self.kind}-{_safe(stem)}{series}"


@dataclass(frozen=True)
class NoduleSelection:
    """Which nodules of each subject make cases.

    Attributes
    ----------
    select : str
        ``"all"``: the map's nodules (optionally only ``ids``); ``"sample"``: ``count`` synthetic
        nodules per subject, each placed at a random offset from the distal end of a random
        airway of a generation in ``generation``, with a diameter drawn from ``diameter_m``.
    ids : tuple of str
        With ``select: all``, restrict to these nodule ids (empty: every nodule).
    count : int
        Nodules sampled per subject.
    diameter_m : (float, float)
        Range of sampled nodule diameters (m).
    generation : (int, int)
        Range of airway generations the nodules are placed beyond.
    offset_m : (float, float)
        Range of the distance from the airway end to the nodule centre (m).
    """

    select: str = "all"
    ids: tuple[str, ...] = ()
    count: int = 0
    diameter_m: tuple[float, float] = (0.008, 0.02)
    generation: tuple[int, int] = (4, 7)
    offset_m: tuple[float, float] = (0.004, 0.015)


@dataclass(frozen=True)
class CatheterVariant:
    """A catheter design to compare.

    Attributes
    ----------
    name : str
        Short file-name-safe label (``d3.5mm``), unique in the campaign.
    diameter_m : float
        Outer diameter (m).
    bending_stiffness_Nm2 : float or None
        Bending stiffness EI of the articulating section (N·m²); None keeps the default.
    articulation_rad : float or None
        Largest articulation at one bifurcation (rad); None keeps the default.
    min_bend_radius_m : float or None
        Tightest bend radius (m); None keeps the default.
    """

    name: str
    diameter_m: float
    bending_stiffness_Nm2: float | None = None
    articulation_rad: float | None = None
    min_bend_radius_m: float | None = None


@dataclass(frozen=True)
class RegistrationPlan:
    """Registration scenarios and the number of seeded trials per case."""

    scenarios: tuple[str, ...] = ("breathing",)
    trials: int = 20


@dataclass(frozen=True)
class CampaignSpec:
    """A validated campaign.

    Attributes
    ----------
    name : str
        Campaign name.
    seed : int
        Campaign seed; each case's seed is derived from it and the case key.
    subjects : tuple of Subject
        The cohort, in file order.
    nodules : NoduleSelection
    catheters : tuple of CatheterVariant
    registration : RegistrationPlan
    stages : tuple of str
        Stages in run order (``map`` first); custom stages as ``"module:function"`` (a file
        only names them: they run when the caller allows them, see
        :mod:`bronchonav.campaign.custom`).
    retries : int
        Ray task retries when a worker process dies.
    stage_options : dict
        Per-stage keyword options (``{"rehearse": {"poses": "truth"}}``).
    base_dir : str
        Folder relative paths in the file are resolved against.
    """

    name: str
    seed: int
    subjects: tuple[Subject, ...]
    nodules: NoduleSelection = field(default_factory=NoduleSelection)
    catheters: tuple[CatheterVariant, ...] = ()
    registration: RegistrationPlan = field(default_factory=RegistrationPlan)
    stages: tuple[str, ...] = ("map", "plan")
    retries: int = 3
    stage_options: dict = field(default_factory=dict)
    base_dir: str = "."

    def fingerprint(self) -> str:
        """SHA-256 of everything that determines the results (not ``retries``, not paths' base)."""
        data = asdict(self)
        data.pop("retries")
        data.pop("base_dir")
        text = json.dumps(data, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict:
        """A YAML-serialisable dict that :func:`parse_spec` turns back into an equal spec."""
        subjects = {"phantoms": [], "maps": [], "cts": []}
        for s in self.subjects:
            if s.kind == "phantom":
                subjects["phantoms"].append({"name": s.source, "seeds": [s.seed], "map": s.map_mode})
            elif s.kind == "map":
                subjects["maps"].append(s.source)
            else:
                subjects["cts"].append(s.source if s.series is None else
                                       {"path": s.source, "series": s.series})
        n = self.nodules
        nod = ({"select": "all", "ids": list(n.ids)} if n.select == "all" else
               {"select": "sample", "count": n.count, "diameter_m": list(n.diameter_m),
                "generation": list(n.generation), "offset_m": list(n.offset_m)})
        return {
            "name": self.name, "seed": self.seed,
            "cohort": {k: v for k, v in subjects.items() if v},
            "nodules": nod,
            "catheters": [{k: v for k, v in asdict(c).items() if v is not None}
                          for c in self.catheters],
            # a campaign without the register stage keeps no scenarios: left out, not []
            "registration": {**({"scenarios": list(self.registration.scenarios)}
                                if self.registration.scenarios else {}),
                             "trials": self.registration.trials},
            "stages": list(self.stages),
            "execution": {"retries": self.retries},
            "stage_options": self.stage_options,
        }


def load_spec(path: str | Path) -> CampaignSpec:
    """Read and validate a campaign YAML file.

    Relative paths in the file (map folders, CT scans) are resolved against the file's folder.

    Raises
    ------
    InputError
        The file is missing, not YAML, or a field is missing, of the wrong type or out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"campaign file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"campaign file {path} is not valid YAML: {exc}") from None
    try:
        return parse_spec(data, base_dir=path.resolve().parent)
    except InputError as exc:
        raise InputError(f"campaign file {path}: {exc}") from None


def parse_spec(data, base_dir: str | Path = ".") -> CampaignSpec:
    """Validate a campaign given as a dict (the parsed YAML); see the module docstring."""
    base = Path(base_dir)
    _mapping(data, "campaign")
    _known(data, "", {"name", "seed", "cohort", "nodules", "catheters", "registration", "stages",
                      "execution", "stage_options"})
    name = data.get("name", "campaign")
    if not isinstance(name, str) or not name.strip():
        raise InputError("name: must be a non-empty string")
    seed = _int(data.get("seed", 0), "seed", minimum=0, maximum=SEED_MAX)

    stages = _stages(data.get("stages", ["map", "plan"]))
    subjects = _cohort(data.get("cohort"), base)
    nodules = _nodules(data.get("nodules", {"select": "all"}))
    catheters = _catheters(data.get("catheters"))
    registration = _registration(data.get("registration", {}), "register" in stages)
    execution = data.get("execution", {}) or {}
    _mapping(execution, "execution")
    _known(execution, "execution.", {"retries"})
    retries = _int(execution.get("retries", 3), "execution.retries", minimum=0,
                   maximum=LIMITS["execution.retries"])
    options = data.get("stage_options", {}) or {}
    _mapping(options, "stage_options")
    for stage, opts in options.items():
        if stage not in stages:
            raise InputError(f"stage_options.{stage}: no stage {stage!r} in stages {list(stages)}")
        _mapping(opts, f"stage_options.{stage}")
    return CampaignSpec(name=name.strip(), seed=seed, subjects=subjects, nodules=nodules,
                        catheters=catheters, registration=registration, stages=stages,
                        retries=retries, stage_options=options, base_dir=str(base))


def _stages(raw) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise InputError(f"stages: must be a non-empty list, e.g. [map, plan], got {raw!r}")
    stages = []
    for i, s in enumerate(raw):
        if not isinstance(s, str):
            raise InputError(f"stages[{i}]: must be a string, got {s!r}")
        if s not in BUILTIN_STAGES and not _CUSTOM_STAGE.match(s):
            raise InputError(f"stages[{i}]: unknown stage {s!r} (known: {', '.join(BUILTIN_STAGES)};"
                             " or a custom stage as 'module:function')")
        if s in stages:
            raise InputError(f"stages[{i}]: stage {s!r} is listed twice")
        stages.append(s)
    for s, need in STAGE_NEEDS.items():
        if s in stages and need not in stages:
            raise InputError(f"stages: {s!r} needs {need!r} (it uses the planned route)")
        if s in stages and stages.index(need) > stages.index(s):
            raise InputError(f"stages: {need!r} must come before {s!r}")
    return ("map", *[s for s in stages if s != "map"])


def _cohort(raw, base: Path) -> tuple[Subject, ...]:
    _mapping(raw, "cohort")
    _known(raw, "cohort.", {"phantoms", "maps", "cts"})
    subjects: list[Subject] = []
    phantoms = raw.get("phantoms", [])
    if isinstance(phantoms, dict):
        phantoms = [phantoms]
    if not isinstance(phantoms, list):
        raise InputError("cohort.phantoms: must be a mapping {name, seeds, map} or a list of them")
    for i, p in enumerate(phantoms):
        where = f"cohort.phantoms[{i}]"
        _mapping(p, where)
        _known(p, where + ".", {"name", "seeds", "map"})
        pname = p.get("name", "default")
        if pname not in ("default", "full"):
            raise InputError(f"{where}.name: must be 'default' or 'full', got {pname!r}")
        mode = p.get("map", "ground_truth")
        if mode not in ("ground_truth", "build"):
            raise InputError(f"{where}.map: must be 'ground_truth' or 'build', got {mode!r}")
        seeds = p.get("seeds")
        if not isinstance(seeds, list) or not seeds:
            raise InputError(f"{where}.seeds: must be a non-empty list of integers, got {seeds!r}")
        for j, s in enumerate(seeds):
            seed = _int(s, f"{where}.seeds[{j}]", minimum=0, maximum=SEED_MAX)
            subjects.append(Subject("phantom", pname, seed, mode))
    for kind, key in (("map", "maps"), ("ct", "cts")):
        paths = raw.get(key, [])
        if not isinstance(paths, list):
            raise InputError(f"cohort.{key}: must be a list of paths")
        for i, entry in enumerate(paths):
            subjects.append(_path_subject(kind, entry, f"cohort.{key}[{i}]", base))
    if not subjects:
        raise InputError("cohort: is empty; give phantoms (name, seeds), maps or cts")
    seen: dict[str, int] = {}
    for i, s in enumerate(subjects):
        if s.key in seen:
            raise InputError(f"cohort: subject {s.key!r} appears twice")
        seen[s.key] = i
    return tuple(subjects)


def _path_subject(kind: str, entry, where: str, base: Path) -> Subject:
    """A map folder or CT scan of the cohort: a path, or for a CT ``{path, series}``."""
    series = None
    if kind == "ct" and isinstance(entry, dict):
        _known(entry, where + ".", {"path", "series"})
        series = entry.get("series")
        if isinstance(series, bool) or not isinstance(series, (int, str)) or \
                not str(series).strip():
            raise InputError(f"{where}.series: must be a series number (from 1) or UID, "
                             f"got {series!r}")
        series = str(series).strip()
        entry = entry.get("path")
    if not isinstance(entry, str) or not entry:
        form = "a path or {path, series}" if kind == "ct" else "a path"
        raise InputError(f"{where}: must be {form}, got {entry!r}")
    path = (base / entry).resolve()
    if not path.exists():
        raise InputError(f"{where}: {path} does not exist")
    return Subject(kind, str(path), series=series)


def _nodules(raw) -> NoduleSelection:
    if isinstance(raw, str):
        raw = {"select": raw}
    _mapping(raw, "nodules")
    select = raw.get("select", "all")
    if select == "all":
        _known(raw, "nodules.", {"select", "ids"})
        ids = raw.get("ids", []) or []
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise InputError(f"nodules.ids: must be a list of nodule ids, got {ids!r}")
        return NoduleSelection("all", ids=tuple(ids))
    if select != "sample":
        raise InputError(f"nodules.select: must be 'all' or 'sample', got {select!r}")
    _known(raw, "nodules.", {"select", "count", "diameter_m", "generation", "offset_m"})
    count = _int(raw.get("count"), "nodules.count", minimum=1, maximum=LIMITS["nodules.count"])
    default = NoduleSelection()
    diam = _range(raw.get("diameter_m", list(default.diameter_m)), "nodules.diameter_m", 1e-4, 0.1)
    off = _range(raw.get("offset_m", list(default.offset_m)), "nodules.offset_m", 0.0, 0.1)
    gen = _range(raw.get("generation", list(default.generation)), "nodules.generation", 0, 64)
    if any(g != int(g) for g in gen):
        raise InputError(f"nodules.generation: must be two integers, got {list(gen)}")
    return NoduleSelection("sample", count=count, diameter_m=diam,
                           generation=(int(gen[0]), int(gen[1])), offset_m=off)


def _catheters(raw) -> tuple[CatheterVariant, ...]:
    if raw is None:
        return (CatheterVariant("default", 3.5e-3),)
    if not isinstance(raw, list) or not raw:
        raise InputError("catheters: must be a non-empty list of {name, diameter_m, ...}")
    out = []
    for i, c in enumerate(raw):
        where = f"catheters[{i}]"
        _mapping(c, where)
        _known(c, where + ".", {"name", "diameter_m", "bending_stiffness_Nm2", "articulation_rad",
                                "min_bend_radius_m"})
        cname = c.get("name")
        if not isinstance(cname, str) or not _NAME.match(cname):
            raise InputError(f"{where}.name: must be a short label of letters, digits, '.', '_' "
                             f"or '-' (e.g. d3.5mm), got {cname!r}")
        if cname in {v.name for v in out}:
            raise InputError(f"{where}.name: {cname!r} is used twice")
        diameter = _positive(c.get("diameter_m"), f"{where}.diameter_m", maximum=0.03)
        opt = {}
        for key, maximum in (("bending_stiffness_Nm2", 1.0), ("articulation_rad", 2 * math.pi),
                             ("min_bend_radius_m", 1.0)):
            if c.get(key) is not None:
                opt[key] = _positive(c[key], f"{where}.{key}", maximum=maximum)
        out.append(CatheterVariant(cname, diameter, **opt))
    return tuple(out)


def _registration(raw, needed: bool) -> RegistrationPlan:
    raw = raw or {}
    _mapping(raw, "registration")
    _known(raw, "registration.", {"scenarios", "trials"})
    scenarios = raw.get("scenarios", ["breathing"])
    if not isinstance(scenarios, list) or not scenarios:
        raise InputError("registration.scenarios: must be a non-empty list, e.g. [breathing]")
    if needed:
        from bronchonav.registration.simulate import SCENARIOS

        for i, s in enumerate(scenarios):
            if s not in SCENARIOS:
                raise InputError(f"registration.scenarios[{i}]: unknown scenario {s!r} "
                                 f"(known: {', '.join(SCENARIOS)})")
    if len(set(scenarios)) != len(scenarios):
        raise InputError("registration.scenarios: a scenario is listed twice")
    trials = _int(raw.get("trials", 20), "registration.trials", minimum=1,
                  maximum=LIMITS["registration.trials"])
    if not needed:
        return RegistrationPlan(scenarios=(), trials=trials)
    return RegistrationPlan(tuple(scenarios), trials)


def _mapping(value, where: str) -> None:
    if not isinstance(value, dict):
        raise InputError(f"{where}: must be a mapping, got {type(value).__name__}")


def _known(value: dict, prefix: str, keys: set[str]) -> None:
    unknown = sorted(set(value) - keys)
    if unknown:
        raise InputError(f"{prefix}{unknown[0]}: unknown field (known: {', '.join(sorted(keys))})")


def _int(value, where: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{where}: must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InputError(f"{where}: must be <= {maximum}, got {value}")
    return value


def _positive(value, where: str, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: must be a number in SI units, got {value!r}")
    if not 0 < value <= maximum:
        raise InputError(f"{where}: must be in (0, {maximum:g}] (SI units), got {value!r}")
    return float(value)


def _range(value, where: str, lo: float, hi: float) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise InputError(f"{where}: must be a list [min, max], got {value!r}")
    a, b = float(value[0]), float(value[1])
    if not (lo <= a <= b <= hi):
        raise InputError(f"{where}: need {lo:g} <= min <= max <= {hi:g}, got [{a:g}, {b:g}]")
    return (a, b)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "subject"
