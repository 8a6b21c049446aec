"""Recorded rows for calibration: a CSV of actuation and measured tip (and shape) positions.

CSV format (one header line, comma separated, SI units, one row per quasi-static pose, rows in
the order they were recorded — tendon friction makes the model depend on that history):

``insertion``
    Inserted length (m).
``roll`` (optional)
    Roll about the insertion axis (rad); 0 when absent.
``tension_<tendon>`` *or* ``disp_<tendon>``
    For every tendon of the device file (its ``name``): actuator tension (N) or actuator
    displacement (m, positive pulls). One mode for the whole file.
``tip_x, tip_y, tip_z``
    Measured tip position (m) in the measurement (tracker) frame.
``shape_<k>_s, shape_<k>_x, shape_<k>_y, shape_<k>_z`` (optional, k = 0, 1, ...)
    A measured backbone point at arc length ``s`` from the insertion point (m) and its position
    (m, measurement frame); ``shape_<k>_s`` may differ from row to row.

The model's ``catheter_base`` frame is mapped into the measurement frame by the device's
``base_pose`` (fitted with the ``base_*`` parameters).

Example::

    insertion,tension_tendon_0,tension_tendon_1,tension_tendon_2,tension_tendon_3,tip_x,tip_y,tip_z
    0.1,2.0,0,0,0,0.0123,0.0004,0.0981
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bronchonav.catheter.command import CatheterCommand
from bronchonav.catheter.params import CatheterParams
from bronchonav.errors import InputError
from bronchonav.fileio import atomic_open


@dataclass
class Recording:
    """Rows of a calibration recording (see the module docstring).

    Attributes
    ----------
    insertion, roll : ndarray (n,)
        Inserted length (m) and roll (rad) per row.
    mode : str
        ``"tension"`` or ``"displacement"``.
    actuation : ndarray (n, T)
        Tensions (N) or displacements (m) per tendon, device order.
    tip : ndarray (n, 3)
        Measured tip positions (m, measurement frame).
    shape_s : ndarray (n, K)
        Arc lengths of measured backbone points (m); K = 0 without shape columns.
    shape : ndarray (n, K, 3)
        Measured backbone points (m, measurement frame).
    """

    insertion: np.ndarray
    roll: np.ndarray
    mode: str
    actuation: np.ndarray
    tip: np.ndarray
    shape_s: np.ndarray
    shape: np.ndarray

    def __len__(self) -> int:
        return len(self.insertion)

    def commands(self) -> list[CatheterCommand]:
        """One command per row (with the shape points' arc lengths as sampled outputs)."""
        out = []
        for k in range(len(self)):
            order = np.argsort(self.shape_s[k])
            kw = {"tendon_tension" if self.mode == "tension" else "tendon_displacement":
                  self.actuation[k]}
            out.append(CatheterCommand(insertion=float(self.insertion[k]),
                                       roll=float(self.roll[k]),
                                       output_arc_lengths=self.shape_s[k][order], **kw))
        return out


def load_recording(path, params: CatheterParams) -> Recording:
    """Read a recording CSV for the device ``params``.

    Raises
    ------
    InputError
        Naming the file, row and column of the first missing or invalid value.
    """
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"cannot read recording {path}: {exc.strerror}") from None
    if not rows:
        raise InputError(f"recording {path}: no data rows")
    header = list(rows[0].keys())
    names = params.tendon_names
    if all(f"tension_{n}" in header for n in names):
        mode, prefix = "tension", "tension_"
    elif all(f"disp_{n}" in header for n in names):
        mode, prefix = "displacement", "disp_"
    else:
        raise InputError(f"recording {path}: needs tension_<name> or disp_<name> columns for "
                         f"every tendon ({', '.join(names)})")
    n_shape = 0
    while f"shape_{n_shape}_s" in header:
        n_shape += 1

    def value(k, row, col, default=None):
        text = row.get(col)
        if text is None or text == "":
            if default is not None:
                return default
            raise InputError(f"recording {path}: row {k + 1}: column {col} is missing")
        try:
            v = float(text)
        except ValueError:
            raise InputError(f"recording {path}: row {k + 1}: column {col} is not a number: "
                             f"{text!r}") from None
        if not np.isfinite(v):
            raise InputError(f"recording {path}: row {k + 1}: column {col} is not finite")
        return v

    n = len(rows)
    rec = Recording(np.zeros(n), np.zeros(n), mode, np.zeros((n, len(names))), np.zeros((n, 3)),
                    np.zeros((n, n_shape)), np.zeros((n, n_shape, 3)))
    for k, row in enumerate(rows):
        rec.insertion[k] = value(k, row, "insertion")
        rec.roll[k] = value(k, row, "roll", 0.0)
        rec.actuation[k] = [value(k, row, prefix + name) for name in names]
        rec.tip[k] = [value(k, row, f"tip_{a}") for a in "xyz"]
        for j in range(n_shape):
            rec.shape_s[k, j] = value(k, row, f"shape_{j}_s")
            rec.shape[k, j] = [value(k, row, f"shape_{j}_{a}") for a in "xyz"]
    return rec


def save_recording(path, rec: Recording, params: CatheterParams) -> None:
    """Write ``rec`` as a recording CSV (atomically)."""
    prefix = "tension_" if rec.mode == "tension" else "disp_"
    header = ["insertion", "roll"] + [prefix + n for n in params.tendon_names] + \
        ["tip_x", "tip_y", "tip_z"]
    for j in range(rec.shape_s.shape[1]):
        header += [f"shape_{j}_{a}" for a in "sxyz"]
    with atomic_open(Path(path), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for k in range(len(rec)):
            row = [rec.insertion[k], rec.roll[k], *rec.actuation[k], *rec.tip[k]]
            for j in range(rec.shape_s.shape[1]):
                row += [rec.shape_s[k, j], *rec.shape[k, j]]
            writer.writerow([repr(float(v)) for v in row])


def tension_loops(params: CatheterParams, insertion: float,
                  profile: np.ndarray) -> Recording:
    """A tension-controlled sequence (tips zero, to be measured or simulated): each tendon in
    turn follows ``profile`` (fractions of the tension limit) while the others stay slack."""
    n_t = len(params.tendons)
    act = np.zeros((n_t * len(profile), n_t))
    for k in range(n_t):
        act[k * len(profile):(k + 1) * len(profile), k] = np.asarray(profile) * \
            params.limits.tension_max
    n = len(act)
    return Recording(np.full(n, float(insertion)), np.zeros(n), "tension", act, np.zeros((n, 3)),
                     np.zeros((n, 0)), np.zeros((n, 0, 3)))
