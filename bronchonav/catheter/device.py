"""Device files: a catheter described as data (YAML), loaded into :class:`CatheterParams`.

Format (SI units; keys in ``[]`` are optional, with their default)::

    name: bronchoscope_3p5
    outer_diameter: 3.5e-3            # m
    [channel_diameter: 0.0]           # m
    [articulation_segment: -1]        # index of the articulating segment
    segments:                         # proximal (robot) to distal (tip)
      - name: shaft
        length: 0.56                  # m
        EI: 2.0e-3                    # N·m², both bending axes
        GJ: 1.5e-3                    # N·m²
        EA: 1.5e4                     # N
        GA: 5.0e3                     # N
        [mass_per_length: 0.0]        # kg/m
        [precurvature: [0, 0, 0]]     # 1/m, body frame
    tendons:
      - name: tendon_0
        offset: 1.4e-3                # m from the backbone axis
        angle_deg: 0.0                # or angle: (rad), from body x towards y
        end_segment: 1                # crimped at this segment's distal end
        [start_segment: 0]            # coil sheath ends at this segment's proximal end
        [wire_EA: 6.0e3]              # N; or wire_stiffness: N/m for the whole wire
        [friction: 0.0]               # capstan friction coefficient
        [pretension: 0.0]             # N at a zero tension command
        [zero_offset: 0.0]            # m of actuator pull at a zero displacement command
    limits:
      max_insertion: 0.35             # m
      tension_max: 14.0               # N
      displacement_min: -5.0e-3       # m, one value or one per tendon
      displacement_max: 8.0e-3
    [base_pose: {xyz: [0, 0, 0], rotvec: [0, 0, 0]}]   # catheter_base in the measurement frame
    [calibration: {...}]              # written by ``bronchonav calibrate``; informative

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from bronchonav.catheter.params import CatheterParams, Limits, Segment, Tendon
from bronchonav.errors import InputError
from bronchonav.fileio import write_text

DEVICE_FOLDER = "config/devices"
DEFAULT_DEVICE_NAME = "bronchoscope_3p5.yaml"

_TOP = {"name", "outer_diameter", "channel_diameter", "articulation_segment", "segments",
        "tendons", "limits", "base_pose", "calibration"}
_SEGMENT = {"name", "length", "EI", "GJ", "EA", "GA", "mass_per_length", "precurvature"}
_TENDON = {"name", "offset", "angle", "angle_deg", "end_segment", "start_segment", "wire_EA",
           "wire_stiffness", "friction", "pretension", "zero_offset"}
_LIMITS = {"max_insertion", "tension_max", "displacement_min", "displacement_max"}


def device_file(name: str) -> Path:
    """A shipped device file: ``config/devices/NAME`` in the source tree or the installed share
    directory (``<prefix>/share/bronchonav/config/devices``, the prefix being the one this
    module is installed under, ``<prefix>/lib/pythonX.Y/site-packages``, or ``sys.prefix``)."""
    here = Path(__file__).resolve()
    roots = [here.parents[2]]
    if len(here.parents) > 5:
        roots.append(here.parents[5] / "share" / "bronchonav")
    roots.append(Path(sys.prefix) / "share" / "bronchonav")
    for root in roots:
        path = root / DEVICE_FOLDER / name
        if path.is_file():
            return path
    where = ", ".join(str(r / DEVICE_FOLDER) for r in roots)
    raise InputError(f"device file {name} not found under {where}")


class _Reader:
    """Typed access to one mapping of the file, with errors naming the key path."""

    def __init__(self, where: str, data, allowed: set[str]):
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - allowed)
        if unknown:
            raise InputError(f"{where}.{unknown[0]}: unknown key "
                             f"(allowed: {', '.join(sorted(allowed))})")
        self.where, self.data = where, data

    def has(self, key: str) -> bool:
        return key in self.data

    def number(self, key: str, default=None) -> float:
        if key not in self.data:
            if default is None:
                raise InputError(f"{self.where}.{key}: missing")
            return float(default)
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise InputError(f"{self.where}.{key}: must be a finite number, got {value!r}")
        return float(value)

    def integer(self, key: str, default=None) -> int:
        value = self.number(key, default)
        if value != int(value):
            raise InputError(f"{self.where}.{key}: must be an integer, got {value!r}")
        return int(value)

    def vector(self, key: str, n: int, default=None) -> np.ndarray:
        if key not in self.data:
            if default is None:
                raise InputError(f"{self.where}.{key}: missing")
            return np.asarray(default, dtype=float)
        value = self.data[key]
        try:
            arr = np.asarray(value, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(f"{self.where}.{key}: must be numbers, got {value!r}") from None
        if arr.size == 1 and n > 1:
            arr = np.full(n, arr[0])
        if arr.shape != (n,) or not np.all(np.isfinite(arr)):
            raise InputError(f"{self.where}.{key}: must be {n} finite numbers, got {value!r}")
        return arr

    def text(self, key: str, default: str) -> str:
        return str(self.data.get(key, default))

    def items(self, key: str) -> list:
        value = self.data.get(key)
        if not isinstance(value, list) or not value:
            raise InputError(f"{self.where}.{key}: must be a non-empty list")
        return value


def params_from_dict(data, where: str = "device") -> CatheterParams:
    """:class:`CatheterParams` from a parsed device mapping (see the module docstring).

    Raises
    ------
    InputError
        Naming the key (e.g. ``device.tendons[2].offset``) of the first invalid entry.
    """
    top = _Reader(where, data, _TOP)
    segments = []
    for k, item in enumerate(top.items("segments")):
        r = _Reader(f"{where}.segments[{k}]", item, _SEGMENT)
        try:
            segments.append(Segment(r.text("name", f"segment_{k}"), r.number("length"),
                                    EI=r.number("EI"), GJ=r.number("GJ"), EA=r.number("EA"),
                                    GA=r.number("GA"),
                                    mass_per_length=r.number("mass_per_length", 0.0),
                                    precurvature=tuple(r.vector("precurvature", 3, [0, 0, 0]))))
        except InputError as exc:
            raise InputError(f"{r.where}: {exc}") from None
    tendons = []
    for k, item in enumerate(top.items("tendons") if top.has("tendons") else []):
        r = _Reader(f"{where}.tendons[{k}]", item, _TENDON)
        if r.has("angle") == r.has("angle_deg"):
            raise InputError(f"{r.where}.angle: give exactly one of angle (rad) or angle_deg")
        if r.has("wire_EA") and r.has("wire_stiffness"):
            raise InputError(f"{r.where}.wire_stiffness: give wire_EA (N) or wire_stiffness "
                             f"(N/m), not both")
        angle = r.number("angle") if r.has("angle") else float(np.radians(r.number("angle_deg")))
        try:
            tendons.append(Tendon(
                r.text("name", f"tendon_{k}"), r.number("offset"), angle,
                end_segment=r.integer("end_segment"), start_segment=r.integer("start_segment", 0),
                stiffness_EA=r.number("wire_EA", 6.0e3),
                wire_stiffness=r.number("wire_stiffness") if r.has("wire_stiffness") else None,
                friction=r.number("friction", 0.0), pretension=r.number("pretension", 0.0),
                zero_offset=r.number("zero_offset", 0.0)))
        except InputError as exc:
            raise InputError(f"{r.where}: {exc}") from None
    n_t = len(tendons)
    lim = _Reader(f"{where}.limits", data.get("limits"), _LIMITS)
    limits = Limits(max_insertion=lim.number("max_insertion"),
                    tension_max=lim.number("tension_max"),
                    displacement_min=lim.vector("displacement_min", n_t),
                    displacement_max=lim.vector("displacement_max", n_t))
    base_pose = np.eye(4)
    if top.has("base_pose"):
        bp = _Reader(f"{where}.base_pose", data["base_pose"], {"xyz", "rotvec"})
        base_pose[:3, 3] = bp.vector("xyz", 3, [0, 0, 0])
        base_pose[:3, :3] = Rotation.from_rotvec(bp.vector("rotvec", 3, [0, 0, 0])).as_matrix()
    try:
        return CatheterParams(segments, tendons, outer_diameter=top.number("outer_diameter"),
                              limits=limits, channel_diameter=top.number("channel_diameter", 0.0),
                              articulation_segment=top.integer("articulation_segment", -1),
                              name=top.text("name", "catheter"), base_pose=base_pose)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def load_device(path) -> CatheterParams:
    """Load a device file (YAML).

    Raises
    ------
    InputError
        If the file is missing, not YAML, or invalid (the message names the key).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read device file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"device file {path} is not valid YAML: "
                         f"{' '.join(str(exc).split())}") from None
    return params_from_dict(data, where=str(path))


def params_to_dict(params: CatheterParams) -> dict:
    """The device-file mapping of ``params`` (inverse of :func:`params_from_dict`)."""
    def tendon(t: Tendon) -> dict:
        out = {"name": t.name, "offset": t.offset, "angle": t.angle,
               "start_segment": t.start_segment, "end_segment": t.end_segment}
        if t.wire_stiffness is not None:
            out["wire_stiffness"] = t.wire_stiffness
        else:
            out["wire_EA"] = t.stiffness_EA
        out.update(friction=t.friction, pretension=t.pretension, zero_offset=t.zero_offset)
        return out

    lim = params.limits
    data = {
        "name": params.name, "outer_diameter": params.outer_diameter,
        "channel_diameter": params.channel_diameter,
        "articulation_segment": params.articulation_segment,
        "segments": [{"name": s.name, "length": s.length, "EI": s.EI, "GJ": s.GJ, "EA": s.EA,
                      "GA": s.GA, "mass_per_length": s.mass_per_length,
                      "precurvature": list(s.precurvature)} for s in params.segments],
        "tendons": [tendon(t) for t in params.tendons],
        "limits": {"max_insertion": lim.max_insertion, "tension_max": lim.tension_max,
                   "displacement_min": lim.displacement_min.tolist(),
                   "displacement_max": lim.displacement_max.tolist()},
    }
    if not np.allclose(params.base_pose, np.eye(4)):
        data["base_pose"] = {
            "xyz": params.base_pose[:3, 3].tolist(),
            "rotvec": Rotation.from_matrix(params.base_pose[:3, :3]).as_rotvec().tolist()}
    return _plain(data)


def _plain(value):
    """Python floats/ints/lists only (YAML without numpy tags)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    return value


def save_device(params: CatheterParams, path, extra: dict | None = None) -> Path:
    """Write ``params`` as a device file (atomically); ``extra`` top-level keys (e.g.
    ``calibration``) are added."""
    data = params_to_dict(params)
    if extra:
        data.update(_plain(extra))
    write_text(Path(path), yaml.safe_dump(data, sort_keys=False))
    return Path(path)


def default_device_path() -> Path:
    """The shipped default device file (``config/devices/bronchoscope_3p5.yaml``)."""
    return device_file(DEFAULT_DEVICE_NAME)
