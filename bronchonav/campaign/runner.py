"""Running a campaign: maps once per subject, cases in-process or as Ray tasks, rows as they come.

With ``workers == 1`` and no ``address`` the cases run one after the other in this process,
without Ray. Otherwise Ray runs them: locally (``ray.init`` with ``num_cpus=workers``, no
dashboard, usage statistics off, everything on this machine) or on the cluster at ``address``.
Each map is put once in Ray's object store and every case task of that subject reads it from
there. A task whose worker process dies is retried (``spec.retries`` times); only the driver
writes rows, keyed by case, so a retried case is still written once. Workers run with one
BLAS/OpenMP/numba thread each, so N workers use N cores; the in-process mode computes with one
BLAS/OpenMP thread too (threadpoolctl), so that it gives Ray's rows to the last bit (a
multi-threaded BLAS sums in another order: a registration's TRE differed in the 14th digit).

Custom stages run only when allowed; the driver resolves them before any work and every worker
runs exactly the files the driver resolved (:mod:`bronchonav.campaign.custom`). Everything the
run is given is checked before the output folder is touched.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bronchonav.campaign.cases import Case, case_seed, expand_cases, select_nodules
from bronchonav.campaign.custom import resolve_custom_stages
from bronchonav.campaign.spec import CampaignSpec
from bronchonav.campaign.stages import cache_map, resolve_stage, run_case, subject_map
from bronchonav.campaign.store import ResultStore
from bronchonav.errors import BronchoNavError, InputError, MapError
from bronchonav.maps import load_map

THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS",
                                      "VECLIB_MAXIMUM_THREADS")}
"""Environment of Ray workers: one compute thread per worker process."""

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_worker_niceness": "0"}
"""Environment set (unless already set) before starting Ray: no usage statistics (nothing leaves
the machine); workers at normal priority (Ray's default niceness 15 would let any other load on
the machine starve them, unlike the in-process mode)."""


@dataclass
class RunSummary:
    """What a run did.

    Attributes
    ----------
    cases : int
        Cases in the campaign.
    skipped : int
        Cases already in the table when the run started.
    ran : int
        Cases run and written by this run.
    errors : int
        Rows (in the whole table) with ``status == "error"``.
    lost : list of str
        Keys of cases whose task failed even after retries (no row written; a rerun retries).
    seconds : float
        Wall time of the run (s).
    workers : int
        Workers used (1 in-process).
    table : str
        Path of the results table.
    quarantined : list of str
        Unreadable table or part files (and cached maps) found at the start, moved to
        ``OUT/quarantine/``; their cases were run again.
    """

    cases: int
    skipped: int
    ran: int = 0
    errors: int = 0
    lost: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1
    table: str = ""
    quarantined: list[str] = field(default_factory=list)


def run_campaign(spec: CampaignSpec, out_dir: str | Path, workers: int = 1,
                 address: str | None = None, progress: bool = True,
                 allowed_stages: tuple[str, ...] = (),
                 allow_custom_stages: bool = False) -> RunSummary:
    """Run every case of ``spec`` not yet in ``out_dir``'s table and return a summary.

    Parameters
    ----------
    spec : CampaignSpec
    out_dir : path
        Output folder: results table, cached maps, report. Re-running with the same folder
        skips the cases already written.
    workers : int
        Parallel workers (Ray tasks at a time on a local Ray instance); 1 runs in-process
        unless ``address`` is given.
    address : str or None
        Address of a running Ray cluster (``"HOST:PORT"`` or ``"auto"``) to run on.
    progress : bool
        Show a progress bar on stderr.
    allowed_stages : tuple of str
        Custom stages (``"package.module:function"``) allowed to run.
    allow_custom_stages : bool
        Allow every custom stage of the campaign.

    Raises
    ------
    InputError
        ``workers`` not a positive integer; a malformed ``address``; a custom stage not
        allowed or not importable; a stage option the stage does not take; Ray is needed but
        not installed or not reachable; the output folder holds another campaign or is in use.
        All but reachability are checked before the output folder is touched.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"--workers must be an integer >= 1, got {workers!r}")
    if address is not None:
        check_address(address)
    custom = resolve_custom_stages(spec.stages, allowed_stages, allow_custom_stages)
    check_stage_options(spec, custom)
    use_ray = workers > 1 or address is not None
    ray = import_ray() if use_ray else None
    t0 = time.perf_counter()
    store = ResultStore(out_dir)
    store.bind(spec.to_dict(), spec.fingerprint())
    started_ray = False

    def ray_ready():
        """Ray, started on first use (a resumed run with nothing left to do never starts it)."""
        nonlocal started_ray
        if not ray.is_initialized():
            _init_ray(ray, workers, address)
            started_ray = True
        return ray

    one_thread = None if use_ray else _one_blas_thread()
    try:
        maps = _prepare_maps(spec, store, ray_ready if use_ray else None)
        nodules = {k: select_nodules(m, spec.nodules) for k, m in maps.items()}
        for key in (k for k, ids in nodules.items() if not ids):
            print(f"campaign: subject {key} has no nodules, so no cases (use nodules: "
                  "{select: sample, ...} to place some)", file=sys.stderr)
        cases = expand_cases(spec, nodules)
        done = store.done_keys()
        todo = [c for c in cases if c.key not in done]
        summary = RunSummary(cases=len(cases), skipped=len(cases) - len(todo), workers=workers,
                             quarantined=store.quarantined)
        bar = _progress_bar(len(cases), summary.skipped, progress)
        finished = False
        try:
            def write(row: dict) -> None:
                try:
                    store.append(row)
                except OSError as exc:
                    raise InputError(f"cannot write a result row in {store.parts_dir} "
                                     f"({exc.strerror or exc}); the rows written so far are "
                                     "kept: run again to resume") from None
                summary.ran += 1
                bar.update(1)

            if todo and use_ray:
                summary.lost = _run_ray(ray_ready(), todo, maps, spec, custom, write)
            else:
                for case in todo:
                    write(run_case(case, maps[case.subject], spec.stage_options, custom))
            finished = True
        finally:
            bar.close()
            _compact(store, strict=finished)
        summary.errors = sum(1 for r in store.rows() if r.get("status") == "error")
        summary.table = str(store.table_path)
    finally:
        store.release()
        if one_thread is not None:
            one_thread.restore_original_limits()
        if started_ray:
            ray.shutdown()
    summary.seconds = time.perf_counter() - t0
    return summary


def _compact(store: ResultStore, strict: bool) -> None:
    """Compact the table; on a write failure the parts stay (a rerun reads and compacts them):
    an :class:`InputError` when ``strict``, else (another error is on its way) a warning."""
    try:
        store.compact()
    except OSError as exc:
        message = (f"cannot compact the results table in {store.out_dir} "
                   f"({exc.strerror or exc}); every row is kept in parts/ and the next run "
                   "compacts them")
        if strict:
            raise InputError(message) from None
        print(f"campaign: warning: {message}", file=sys.stderr)


def check_stage_options(spec: CampaignSpec, custom: dict) -> None:
    """Refuse, before any work, a ``stage_options`` key that its stage's function does not take
    (else every case would fail with the same ``TypeError``).

    Raises
    ------
    InputError
        Naming the option (``stage_options.plan.kk``) and the options the stage knows.
    """
    for name, options in spec.stage_options.items():
        parameters = list(inspect.signature(resolve_stage(name, custom)).parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            continue
        known = [p.name for p in parameters
                 if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               inspect.Parameter.KEYWORD_ONLY)]
        for key in options:
            if key not in known:
                raise InputError(f"stage_options.{name}.{key}: stage {name!r} has no option "
                                 f"{key!r} (known: {', '.join(known) or 'none'})")


def _prepare_maps(spec: CampaignSpec, store: ResultStore, ray_ready) -> dict:
    """Subject key → map: cached maps are loaded, missing ones made (as parallel Ray tasks when
    ``ray_ready`` — a function returning the started Ray module — is given, else here) and
    cached. A cached map that no longer loads is quarantined (:meth:`ResultStore.quarantine`)
    and made again."""
    cache_dir = store.out_dir / "maps"
    maps, missing = {}, []
    for subject in spec.subjects:
        folder = cache_dir / subject.key
        if (folder / "map.yaml").exists():
            try:
                maps[subject.key] = load_map(folder)
                continue
            except MapError as exc:
                store.quarantine(folder, " ".join(str(exc).split()), then="it is made again")
        missing.append(subject)
    seeds = {s.key: case_seed(spec.seed, f"{s.key}/nodules") for s in missing}
    if ray_ready is not None and missing:
        ray = ray_ready()
        task = ray.remote(subject_map).options(num_cpus=1, max_retries=spec.retries)
        refs = [task.remote(s, spec.nodules, seeds[s.key]) for s in missing]
        try:
            made = dict(zip([s.key for s in missing], ray.get(refs)))
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, BronchoNavError):  # bad input: its own one-line message
                raise exc.cause from None
            raise
    else:
        made = {s.key: subject_map(s, spec.nodules, seeds[s.key]) for s in missing}
    for key, airway_map in made.items():
        maps[key] = cache_map(airway_map, cache_dir / key)
    return {s.key: maps[s.key] for s in spec.subjects}


def _one_blas_thread():
    """Hold BLAS/OpenMP to one thread, as a Ray worker computes (threadpoolctl, from the
    ``campaign`` extra, as Ray is); None where it is not installed: the in-process mode is also
    the one that runs without the extra, and with no Ray there are no Ray rows to match."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=1)


def import_ray():
    """Import Ray, or raise :class:`InputError` saying how to install it or run without it."""
    try:
        import ray
    except ImportError:
        raise InputError("Ray is not installed: pip install 'bronchonav[campaign]' "
                         "(or run in-process with --workers 1)") from None
    return ray


def _run_ray(ray, todo: list[Case], maps: dict, spec: CampaignSpec, custom: dict,
             write) -> list[str]:
    """Run ``todo`` as Ray tasks; call ``write(row)`` as each finishes; return lost case keys."""
    task = ray.remote(run_case).options(num_cpus=1, max_retries=spec.retries)
    refs = {key: ray.put(maps[key]) for key in {c.subject for c in todo}}
    options, custom_ref = ray.put(spec.stage_options), ray.put(custom)
    pending = {task.remote(case, refs[case.subject], options, custom_ref): case for case in todo}
    lost = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            case = pending.pop(ref)
            try:
                row = ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayTaskError,
                    ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as exc:
                print(f"campaign: case {case.key} failed after {spec.retries} retries: "
                      f"{type(exc).__name__}", file=sys.stderr)
                lost.append(case.key)
                continue
            write(row)
    return lost


def _init_ray(ray, workers: int, address: str | None) -> None:
    """Start a local Ray instance (workers inherit :data:`THREAD_ENV`) or connect to a cluster
    (its workers get :data:`THREAD_ENV` through the task runtime environment)."""
    for name, value in RAY_ENV.items():
        os.environ.setdefault(name, value)
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    saved = {name: os.environ.get(name) for name in THREAD_ENV}
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        if address is None:
            os.environ.update(THREAD_ENV)
            ray.init(address="local", num_cpus=workers, **kwargs)
        else:
            _check_reachable(address)
            ray.init(address=address, runtime_env={"env_vars": dict(THREAD_ENV)}, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise InputError(f"cannot start or reach {where}: {exc}") from None
    finally:
        # Ray installs its own SIGTERM handler; keep the caller's (the CLI stops cleanly on it)
        if on_term is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a Ray cluster address ``HOST:PORT`` or ``ray://HOST:PORT``; None for
    ``auto``.

    Raises
    ------
    InputError
        Any other text, or a port outside 1..65535.
    """
    if address == "auto":
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(f"--address must be HOST:PORT, ray://HOST:PORT or 'auto', got {address!r}")
    return host, int(port)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when ``HOST:PORT`` (optionally ``ray://HOST:PORT``) does not accept a TCP
    connection; Ray itself would wait for minutes. ``auto`` is left to Ray."""
    where = check_address(address)
    if where is None:
        return
    host, port = where
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address}: {exc}") from None


class _NoBar:
    def update(self, n: int) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, initial=initial, unit="case", desc="campaign", file=sys.stderr,
                dynamic_ncols=True)
