"""The application-level guard of a catheter's command link (no ROS, no DDS Security needed).

Every command passes :meth:`CommandGuard.admit` before it is parsed: a rate limit per source
(token bucket), the emergency stop, and the *controller in charge* rule — the first source whose
command is accepted takes charge; commands from any other source are refused until the one in
charge releases it (:meth:`CommandGuard.release_control`, an operator action), the emergency stop
is released, or it sends no accepted command for ``lease_s``. The caller then validates the
command (format, limits, stamps) and reports the outcome with :meth:`CommandGuard.accepted` or
:meth:`CommandGuard.refuse`.

Every refusal is counted by kind (:data:`REFUSAL_KINDS`) and reported: the first refusal of a
kind from a source in a reporting period is returned for logging at once, the ones after it in
the same period are summed up with their exact count by :meth:`CommandGuard.report` (called once
a period), so a flood cannot fill the log yet no refusal goes unreported. The :class:`AuditLog`
(JSON lines) records every source seen, every change of the controller in charge and of the
emergency stop, and per period and source the accepted and refused counts.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REFUSAL_KINDS = ("rate_limit", "queue_overflow", "emergency_stop", "not_in_charge", "invalid",
                 "stamp", "solver_down", "solver_rejected")
"""Why a command was refused: over the rate limit; never read by the node because a newer
command of the same sender overwrote it in the node's queue (a sender faster than the node reads,
e.g. a flood; counted from the gaps in the sender's sequence numbers); the emergency stop is engaged; another source is in charge; malformed,
ambiguous, non-finite or out of the device limits; its stamp is stale or in the future; no
solver is running; the solver refused it."""


class AuditLog:
    """Append-only JSON-lines record of command sources and safety events.

    Each record is one line ``{"t_unix_s": ..., "event": ..., ...}`` written with a single
    ``write`` and flushed, so a crash loses at most the line being written.

    Parameters
    ----------
    path : str or Path or None
        The file (its folder is created); None keeps records in memory only
        (:attr:`records`, the latest 1000).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self.records: list[dict] = []
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    def write(self, event: str, **fields) -> None:
        """Record one event."""
        record = {"t_unix_s": round(time.time(), 6), "event": event, **fields}
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock:
            self.records.append(record)
            del self.records[:-1000]
            if self._file is not None:
                self._file.write(line)
                self._file.flush()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@dataclass
class Refusal:
    """A refused command.

    Attributes
    ----------
    kind : str
        One of :data:`REFUSAL_KINDS`.
    reason : str
        One sentence a user can act on.
    source : str
        Who sent it.
    log_now : bool
        Whether this is the first of its kind from this source in the current period (log it
        now; the others are summed up by :meth:`CommandGuard.report`).
    """

    kind: str
    reason: str
    source: str
    log_now: bool = True


@dataclass
class _Period:
    """Counts since the last report, per source."""

    accepted: dict = field(default_factory=lambda: defaultdict(int))
    refused: dict = field(default_factory=lambda: defaultdict(int))
    """(source, kind) → count."""
    last_reason: dict = field(default_factory=dict)
    """(source, kind) → latest reason."""
    logged: dict = field(default_factory=lambda: defaultdict(int))
    """(source, kind) → refusals already told by a log line of their own."""


class CommandGuard:
    """Rate limit, emergency stop and the controller-in-charge rule, with counts and audit.

    Parameters
    ----------
    max_rate_hz : float
        Largest sustained command rate of each source (Hz): a flooding source cannot use up
        the rate of the controller in charge.
    burst : int
        Commands a source may send at once above the sustained rate (token bucket depth).
    lease_s : float
        The controller in charge loses charge after this long without an accepted command (s).
    audit : AuditLog or None
        Where to record sources and events (None: in memory).
    clock : callable
        Monotonic clock (s).

    Examples
    --------
    >>> guard = CommandGuard(max_rate_hz=100.0, burst=2, lease_s=1.0, clock=lambda: 0.0)
    >>> guard.admit("/a") is None, guard.controller
    (True, None)
    >>> guard.accepted("/a"); guard.controller
    '/a'
    >>> guard.admit("/b").kind
    'not_in_charge'
    >>> guard.admit("/a") is None, guard.admit("/a").kind  # /a's bucket of 2 is empty at t = 0
    (True, 'rate_limit')
    """

    def __init__(self, max_rate_hz: float, burst: int, lease_s: float,
                 audit: AuditLog | None = None, clock=time.monotonic) -> None:
        self.max_rate_hz = float(max_rate_hz)
        self.burst = max(1, int(burst))
        self.lease_s = float(lease_s)
        self.audit = audit or AuditLog(None)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, list[float]] = {}
        """source → [tokens, time of the last refill]."""
        self.controller: str | None = None
        """The source in charge (None: the next accepted source takes charge)."""
        self._controller_last = 0.0
        self.estop = False
        self.estop_reason = ""
        self.accepted_total = 0
        self.refused: dict[str, int] = {k: 0 for k in REFUSAL_KINDS}
        self.last_refusal = ""
        self._sources: set[str] = set()
        self._period = _Period()

    # -- the checks -------------------------------------------------------------------------
    def admit(self, source: str) -> Refusal | None:
        """Rate limit, emergency stop, controller in charge; a :class:`Refusal` (already
        counted) or None when the command may be validated."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(source)
            if bucket is None:
                bucket = self._buckets[source] = [float(self.burst), now]
                self._sources.add(source)
                self.audit.write("source_seen", source=source)
            bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.max_rate_hz)
            bucket[1] = now
            if bucket[0] < 1.0:
                return self._refuse(source, "rate_limit",
                                    f"over the command rate limit of {self.max_rate_hz:g} Hz")
            bucket[0] -= 1.0
            if self.estop:
                return self._refuse(source, "emergency_stop",
                                    f"emergency stop engaged ({self.estop_reason})")
            self._expire_lease(now)
            if self.controller is not None and source != self.controller:
                return self._refuse(source, "not_in_charge",
                                    f"{self.controller} is the controller in charge")
        return None

    def accepted(self, source: str) -> None:
        """A command from ``source`` passed every check (it takes charge if nobody has it)."""
        now = self._clock()
        with self._lock:
            self._expire_lease(now)
            if self.controller is None:
                self.controller = source
                self.audit.write("control_taken", source=source)
            if source == self.controller:
                self._controller_last = now
            self.accepted_total += 1
            self._period.accepted[source] += 1

    def lost(self, source: str, count: int, reason: str) -> Refusal | None:
        """Count ``count`` commands of ``source`` that never reached the node (``queue_overflow``)."""
        if count <= 0:
            return None
        with self._lock:
            refusal = self._refuse(source, "queue_overflow", reason)
            self.refused["queue_overflow"] += count - 1
            self._period.refused[(source, "queue_overflow")] += count - 1
            if refusal.log_now:  # its line tells the whole gap
                self._period.logged[(source, "queue_overflow")] += count - 1
        return refusal

    def refuse(self, source: str, kind: str, reason: str) -> Refusal:
        """Count and return a refusal decided by the caller (``invalid``, ``stamp``, …)."""
        with self._lock:
            return self._refuse(source, kind, reason)

    def _refuse(self, source: str, kind: str, reason: str) -> Refusal:
        if kind not in self.refused:
            raise ValueError(f"unknown refusal kind {kind!r}")
        self.refused[kind] += 1
        self.last_refusal = f"{kind}: {reason} (from {source})"
        key = (source, kind)
        first = self._period.refused[key] == 0
        self._period.refused[key] += 1
        self._period.last_reason[key] = reason
        if first:
            self._period.logged[key] += 1
            self.audit.write("refused", source=source, kind=kind, reason=reason)
        return Refusal(kind, reason, source, log_now=first)

    def _expire_lease(self, now: float) -> None:
        if self.controller is not None and now - self._controller_last > self.lease_s:
            self.audit.write("control_released", source=self.controller,
                             reason=f"no accepted command for {self.lease_s:g} s")
            self.controller = None

    # -- operator actions -------------------------------------------------------------------
    def release_control(self, by: str) -> str | None:
        """Free the controller-in-charge slot; returns who had it."""
        with self._lock:
            previous, self.controller = self.controller, None
            self.audit.write("control_released", source=previous, by=by)
            return previous

    def engage_estop(self, by: str, reason: str = "emergency stop service") -> None:
        """Refuse every command until :meth:`release_estop`."""
        with self._lock:
            self.estop, self.estop_reason = True, reason
            self.audit.write("estop_engaged", by=by, reason=reason)

    def release_estop(self, by: str) -> None:
        """Accept commands again; nobody is in charge until the next accepted command."""
        with self._lock:
            self.estop, self.estop_reason = False, ""
            self.controller = None
            self.audit.write("estop_released", by=by)

    # -- reporting --------------------------------------------------------------------------
    def report(self) -> list[str]:
        """End the reporting period: the log lines summing up refusals not logged one by one,
        and per-source counts written to the audit log."""
        with self._lock:
            period, self._period = self._period, _Period()
        lines = []
        for (source, kind), n in sorted(period.refused.items()):
            more = n - period.logged[(source, kind)]
            if more > 0:
                lines.append(f"refused {more} more command(s) from {source} ({kind}; latest: "
                             f"{period.last_reason[(source, kind)]})")
        for source in sorted(set(period.accepted) | {s for s, _ in period.refused}):
            refused = {k: n for (s, k), n in period.refused.items() if s == source}
            self.audit.write("period", source=source, accepted=period.accepted.get(source, 0),
                             refused=refused)
        return lines

    def counts(self) -> dict:
        """Totals for diagnostics: accepted, refused (all and per kind), the controller in
        charge, the emergency stop."""
        with self._lock:
            out = {"commands_accepted": self.accepted_total,
                   "commands_refused": sum(self.refused.values()),
                   **{f"refused_{k}": n for k, n in self.refused.items()},
                   "last_refusal": self.last_refusal,
                   "controller": self.controller or "none",
                   "emergency_stop": self.estop,
                   "sources_seen": len(self._sources)}
        return out
