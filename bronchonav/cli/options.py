"""Checked option types for the ``bronchonav`` command line: every value refused before work starts.

Each function here is an argparse ``type=``: it turns the option's text into a value or raises
:class:`argparse.ArgumentTypeError`, which the command line reports as one line
(``bronchonav register: error: argument --seed: must be an integer in [0, 4294967295], got
'-1'``) with exit code 2, before anything is loaded or computed. Numbers are finite and within
stated bounds; output paths are checked to be writable files or folders.

Examples
--------
>>> import argparse
>>> p = argparse.ArgumentParser()
>>> _ = p.add_argument("--trials", type=positive_int(maximum=100))
>>> _ = p.add_argument("--noise-mm", type=finite_float(0.0, 50.0))
>>> p.parse_args(["--trials", "3", "--noise-mm", "1.5"])
Namespace(trials=3, noise_mm=1.5)
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

from bronchonav.errors import InputError

SEED_MAX = 2**32 - 1
"""Largest seed accepted on the command line (NumPy's legacy 32-bit seed range)."""

_STAGE_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def bounded_int(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[minimum, maximum]`` (``1e3`` or ``2.0`` are refused)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"must be an integer in [{minimum}, {maximum}], got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_int(maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[1, maximum]``."""
    return bounded_int(1, maximum)


def finite_float(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False,
                 hi_open: bool = False, unit: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number in the interval from ``lo`` to ``hi``.

    Parameters
    ----------
    lo, hi : float
        Bounds (in the option's unit); infinite bounds only ask for a finite number.
    lo_open, hi_open : bool
        Exclude the bound itself (``lo_open=True`` with ``lo=0``: strictly positive).
    unit : str
        Unit shown in the message (``"mm"``, ``"m"``, ``"Hz"``).
    """
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    interval = f"{left}{lo:g}, {hi:g}{right}" + (f" {unit}" if unit else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = (math.isfinite(value) and (lo < value if lo_open else lo <= value)
                  and (value < hi if hi_open else value <= hi))
        if not inside:
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


seed = bounded_int(0, SEED_MAX)
"""An argparse type: a random seed, an integer in ``[0, 2**32 - 1]``."""


def point3(limit: float = 2.0) -> Callable[[str], tuple[float, float, float]]:
    """An argparse type: ``X,Y,Z`` in metres, three finite numbers of magnitude ≤ ``limit`` (m).

    The bound catches millimetres given as metres (a chest is well under 1 m across).
    """

    def parse(text: str) -> tuple[float, float, float]:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != 3 or not all(math.isfinite(v) and abs(v) <= limit for v in values):
            raise argparse.ArgumentTypeError(
                f"must be X,Y,Z: three finite coordinates in metres, each within ±{limit:g} m, "
                f"got {text!r}")
        return (values[0], values[1], values[2])

    parse.__name__ = "point"
    return parse


def output_file(text: str) -> Path:
    """An argparse type: a file that can be written (atomically) — not a folder, in an existing
    folder where a file can be created. Nothing is left behind by the check."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("must be a file path, got ''")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file path inside it")
    _check_creatable(path.parent, text)
    return path


def output_folder(text: str) -> Path:
    """An argparse type: a folder that can be written — an existing folder where files can be
    created, or a new one whose nearest existing parent is such a folder."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("must be a folder path, got ''")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {text}: {existing} is not a folder")
    _check_creatable(existing, text)
    return path


def existing_folder(text: str) -> Path:
    """An argparse type: a folder that exists."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder" if path.exists()
                                         else f"folder {text} does not exist")
    return path


def existing_file(text: str) -> Path:
    """An argparse type: a readable file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file" if path.exists()
                                         else f"file {text} does not exist")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text} is not readable")
    return path


def stage_name(text: str) -> str:
    """An argparse type: a custom campaign stage, ``package.module:function``."""
    if not _STAGE_NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"must name a custom stage as package.module:function, got {text!r}")
    return text


def _check_creatable(folder: Path, text: str) -> None:
    """Refuse unless a file can be created in ``folder`` (tried, then removed: permission bits
    say nothing for root, read-only mounts or pseudo file systems such as /proc)."""
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(
            f"cannot write {text}: {folder} is not an existing folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bronchonav-probe-", dir=folder)
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"cannot write {text}: no file can be created in {folder} "
            f"({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def write_output(path: str | Path, text: str, option: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`bronchonav.fileio.write_text`); a failure
    (disk full, folder removed meanwhile) is an :class:`InputError` naming ``option``, and the
    previous file is left as it was."""
    from bronchonav.fileio import write_text

    try:
        write_text(path, text)
    except InputError as exc:
        raise InputError(f"{option}: {exc}") from None
    except OSError as exc:
        raise InputError(f"{option}: cannot write {path}: {exc.strerror or exc}") from None
