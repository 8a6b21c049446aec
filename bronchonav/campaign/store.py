"""The results table of a campaign: one row per case, written as results arrive, resumable.

Layout of the output folder::

    OUT/
      campaign.json       the campaign (as parsed), its fingerprint and the table format
      results.parquet     the compacted table (``results.csv`` when pyarrow is missing)
      parts/part-*.parquet  rows written since the last compaction, one file per row
      maps/SUBJECT/       cached maps (see :mod:`bronchonav.campaign.stages`)
      report/             the report (see :mod:`bronchonav.campaign.report`)
      quarantine/         unreadable table, part files and cached maps set aside on resume

Each row is written atomically (:func:`bronchonav.fileio.write_bytes`: temporary file, fsync,
rename into ``parts/``), so a crash never leaves half a row. Only the driver writes. Reading
merges the compacted table with the parts and keeps the first row of each ``case_key``, so a row
written twice (a crash between compaction and the removal of its parts) is still counted once.
A table or part file that cannot be read (damaged on disk, truncated by hand, not a table) is
reported on stderr and, by the run holding the folder, moved to ``quarantine/``: its cases have
no row, so the run computes them again.

Cell values are ``None``, ``bool``, ``int``, ``float`` or ``str``; lists and dicts are stored as
JSON strings in columns whose names end in ``_json``.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bronchonav.errors import InputError
from bronchonav.fileio import write_bytes

KEY = "case_key"
"""The column that identifies a case."""

TIMING_SUFFIX = ("_seconds", "_wall_s")
"""Columns whose names end with one of these hold wall times; they differ between runs."""


def have_pyarrow() -> bool:
    """Whether pyarrow (Parquet support) can be imported."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def clean_value(value):
    """A table cell from a Python/numpy value: None, bool, int, float or str.

    Raises
    ------
    TypeError
        A value of another type (lists and dicts belong in ``*_json`` columns as JSON text).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise TypeError(f"a results cell must be None, bool, int, float or str, got "
                    f"{type(value).__name__}")


class ResultStore:
    """The results table in an output folder.

    Parameters
    ----------
    out_dir : path
        Output folder (created when missing).
    fmt : str or None
        ``"parquet"`` or ``"csv"``; None: the format already used in the folder, else Parquet
        when pyarrow is installed, else CSV.
    """

    def __init__(self, out_dir: str | Path, fmt: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.parts_dir = self.out_dir / "parts"
        if fmt is None:
            fmt = self._existing_format() or ("parquet" if have_pyarrow() else "csv")
        if fmt not in ("parquet", "csv"):
            raise InputError(f"results format must be 'parquet' or 'csv', got {fmt!r}")
        if fmt == "parquet" and not have_pyarrow():
            raise InputError(f"{self.out_dir} holds a Parquet table but pyarrow is not installed: "
                             "pip install 'bronchonav[campaign]'")
        self.fmt = fmt
        self._lock_file = None
        self.quarantined: list[str] = []
        """Paths (in ``quarantine/``) of what this store set aside as unreadable."""

    @property
    def table_path(self) -> Path:
        """The compacted table (``results.parquet`` or ``results.csv``)."""
        return self.out_dir / f"results.{self.fmt}"

    def _existing_format(self) -> str | None:
        for fmt in ("parquet", "csv"):
            if (self.out_dir / f"results.{fmt}").exists() or any(
                    self.parts_dir.glob(f"part-*.{fmt}")):
                return fmt
        return None

    # -- campaign identity and locking -------------------------------------------------------

    def bind(self, spec_dict: dict, fingerprint: str) -> None:
        """Claim the folder for a campaign: lock it and record (or check) the campaign.

        Raises
        ------
        InputError
            Another run holds the folder, or it holds results of a different campaign.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.parts_dir.mkdir(exist_ok=True)
        lock = open(self.out_dir / ".lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise InputError(f"another campaign run is using {self.out_dir}") from None
        self._lock_file = lock
        for stale in [*self.parts_dir.glob(".*.tmp"), *self.out_dir.glob(".*.tmp")]:
            if stale.is_file():  # half-written by a run that crashed; its row was never counted
                stale.unlink()
        meta_path = self.out_dir / "campaign.json"
        if meta_path.exists():
            try:
                meta = self._meta()
            except InputError:
                self.release()
                raise
            if meta.get("fingerprint") != fingerprint:
                self.release()
                raise InputError(f"{self.out_dir} holds results of a different campaign "
                                 f"({meta.get('campaign', {}).get('name')!r}); use a new --out")
            return
        write_bytes(meta_path, json.dumps({"fingerprint": fingerprint, "format": self.fmt,
                                           "campaign": spec_dict}, indent=1).encode())

    def release(self) -> None:
        """Release the folder lock taken by :meth:`bind`."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def campaign(self) -> dict:
        """The campaign recorded in the folder (as :meth:`CampaignSpec.to_dict`)."""
        if not (self.out_dir / "campaign.json").exists():
            raise InputError(f"{self.out_dir} is not a campaign output folder (no campaign.json)")
        return self._meta()["campaign"]

    def _meta(self) -> dict:
        meta_path = self.out_dir / "campaign.json"
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict) or not isinstance(meta.get("campaign"), dict):
                raise ValueError("no 'campaign' record")
        except (OSError, ValueError) as exc:
            raise InputError(f"{meta_path} is unreadable ({_one_line(exc)}): the folder's campaign "
                             "cannot be checked; use a new --out") from None
        return meta

    def quarantine(self, path: Path, reason: str, then: str = "its cases are run again") -> None:
        """Report an unreadable file or folder of the output folder on stderr; when this store
        holds the folder (:meth:`bind`), move it to ``quarantine/`` so that it is not read again
        (it is kept, not deleted, for inspection)."""
        if self._lock_file is None:
            print(f"campaign: warning: {path} is unreadable ({reason}); skipped", file=sys.stderr)
            return
        folder = self.out_dir / "quarantine"
        folder.mkdir(exist_ok=True)
        target = folder / f"{time.time_ns()}-{path.name}"
        os.replace(path, target)
        self.quarantined.append(str(target))
        print(f"campaign: warning: {path} is unreadable ({reason}); moved to {target}; {then}",
              file=sys.stderr)

    # -- rows --------------------------------------------------------------------------------

    def append(self, row: dict) -> None:
        """Write one row durably (temporary file, fsync, rename into ``parts/``)."""
        if KEY not in row:
            raise ValueError(f"a results row needs a {KEY!r}")
        clean = {k: clean_value(v) for k, v in row.items()}
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns():020d}-{os.getpid()}.{self.fmt}"
        write_bytes(self.parts_dir / name, self._encode([clean]))

    def rows(self) -> list[dict]:
        """Every row, compacted table first, then parts in write order; one per case key.

        A file that cannot be read is left out and set aside (:meth:`quarantine`).
        """
        rows: list[dict] = []
        files = [self.table_path] if self.table_path.exists() else []
        files += sorted(self.parts_dir.glob(f"part-*.{self.fmt}"))
        for path in files:
            try:
                rows.extend(self._decode_checked(path))
            except Exception as exc:  # noqa: BLE001 - any failure to read a row file: unreadable
                self.quarantine(path, _one_line(exc))
        seen: set[str] = set()
        unique = []
        for row in rows:
            if row[KEY] not in seen:
                seen.add(row[KEY])
                unique.append(row)
        return unique

    def done_keys(self) -> set[str]:
        """Keys of the cases that have a row."""
        return {row[KEY] for row in self.rows()}

    def compact(self) -> Path:
        """Merge the parts into the table (written atomically), then remove the parts."""
        parts = sorted(self.parts_dir.glob(f"part-*.{self.fmt}"))
        rows = self.rows()
        write_bytes(self.table_path, self._encode(rows))
        for part in parts:
            part.unlink(missing_ok=True)  # a part found unreadable was moved to quarantine/
        return self.table_path

    # -- encoding ----------------------------------------------------------------------------

    def _encode(self, rows: list[dict]) -> bytes:
        columns = _columns(rows)
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({c: _arrow_column(pa, [r.get(c) for r in rows]) for c in columns})
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            return sink.getvalue().to_pybytes()
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: _csv_cell(r.get(c)) for c in columns})
        return buf.getvalue().encode()

    def _decode_checked(self, path: Path) -> list[dict]:
        """The rows of a table or part file, each with a case key (else ``ValueError``)."""
        rows = self._decode(path)
        if any(not isinstance(r.get(KEY), str) or not r[KEY] for r in rows):
            raise ValueError(f"a row has no {KEY!r}")
        return rows

    def _decode(self, path: Path) -> list[dict]:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        with open(path, newline="") as f:
            raw = list(csv.DictReader(f))
        if not raw:
            return []
        kinds = {c: _csv_kind([r[c] for r in raw]) for c in raw[0]}
        return [{c: _csv_value(v, kinds[c]) for c, v in r.items()} for r in raw]


def comparable(rows: list[dict]) -> list[dict]:
    """Rows without timing columns, sorted by case key: what two runs must agree on."""
    out = [{k: v for k, v in r.items() if not k.endswith(TIMING_SUFFIX)} for r in rows]
    return sorted(out, key=lambda r: r[KEY])


def _columns(rows: list[dict]) -> list[str]:
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    return list(columns)


def _arrow_column(pa, values: list):
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present) \
            and any(isinstance(v, float) for v in present):
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    if present and len({type(v) for v in present}) > 1:
        raise TypeError(f"a results column mixes types {sorted({type(v).__name__ for v in present})}")
    return pa.array(values)


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _csv_kind(cells: list[str]) -> str:
    present = [c for c in cells if c != ""]
    if not present:
        return "none"
    if all(c in ("True", "False") for c in present):
        return "bool"
    for kind, parse in (("int", int), ("float", float)):
        try:
            for c in present:
                parse(c)
        except ValueError:
            continue
        return kind
    return "str"


def _csv_value(cell: str, kind: str):
    if cell == "" and kind != "str":
        return None
    if kind == "bool":
        return cell == "True"
    if kind == "int":
        return int(cell)
    if kind == "float":
        return float(cell)
    return cell


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line: its type and the start of its message."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
