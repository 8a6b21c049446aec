"""The campaign report: Markdown summary and PNG plots, rebuilt from the results table alone.

Sections appear when the table has their columns: reachability per catheter variant, against
nodule size and against the generation of the airway nearest the nodule (``plan`` stage),
navigation in rehearsal per pose, with the planner-versus-rehearsal confusion table and the
ground-truth-versus-registered comparison (``rehearse``, figures from
:mod:`~bronchonav.campaign.rehearsal_summary`), TRE distributions per scenario and catheter
(``register``), camera frames (``camera``), infeasibility reasons, and the cases that failed.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from bronchonav.campaign.rehearsal_summary import (BARS, OUTCOMES, RehearsalSummary, poses_in,
                                                   routes, summarize_rehearsals)
from bronchonav.campaign.store import ResultStore
from bronchonav.errors import InputError
from bronchonav.fileio import atomic_open, write_text

SIZE_BINS_MM = (0, 10, 15, 20, 30, 1000)
"""Nodule diameter bins (mm) of the reachability-vs-size plot."""


def write_report(out_dir: str | Path) -> Path:
    """Write ``OUT/report/report.md`` and its plots from ``OUT``'s table; return the Markdown path.

    Raises
    ------
    InputError
        ``out_dir`` is not a campaign output folder, its table is empty, or the report cannot
        be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    store = ResultStore(out_dir)
    campaign = store.campaign()
    rows = store.rows()
    if not rows:
        raise InputError(f"{out_dir} has no results yet: run the campaign first")
    folder = Path(out_dir) / "report"
    try:
        return _write(folder, campaign, rows)
    except OSError as exc:
        raise InputError(f"cannot write the report in {folder}: {exc.strerror or exc}") from None


def _write(folder: Path, campaign: dict, rows: list[dict]) -> Path:
    """Write the Markdown report and its plots into ``folder``; return the Markdown path."""
    folder.mkdir(parents=True, exist_ok=True)
    ok = [r for r in rows if r.get("status") == "ok"]
    catheters = _ordered(r["catheter"] for r in rows)

    lines = [f"# Campaign {campaign.get('name')!r}", ""]
    lines += [f"- cases: {len(rows)} ({len(ok)} ok, {len(rows) - len(ok)} with errors)",
              f"- subjects: {len(_ordered(r['subject'] for r in rows))}, nodules: "
              f"{len({(r['subject'], r['nodule']) for r in rows})}, catheters: "
              f"{', '.join(catheters)}",
              f"- stages: {', '.join(campaign.get('stages', []))}",
              f"- compute time: {sum(r.get('case_seconds') or 0 for r in rows):.1f} s "
              "(sum over cases)", ""]
    if ok and "plan_feasible" in ok[0]:
        lines += _reachability(ok, catheters, folder)
    if ok and poses_in(ok):
        lines += _rehearsal(ok, catheters, folder)
    if ok and "register_tre_json" in ok[0]:
        lines += _registration(ok, catheters, folder)
    if ok and "camera_open_fraction" in ok[0]:
        lines += _camera(ok, catheters)
    if ok:
        lines += _catheter_comparison(ok, catheters, folder)
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        lines += ["## Cases with errors", "", "| case | error |", "|---|---|"]
        lines += [f"| {r['case_key']} | {r.get('error', '')} |" for r in failed[:50]]
        if len(failed) > 50:
            lines.append(f"| ... | {len(failed) - 50} more |")
        lines.append("")
    path = folder / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _reachability(rows: list[dict], catheters: list[str], folder: Path) -> list[str]:
    import matplotlib.pyplot as plt

    # one row per subject × nodule × catheter (scenarios repeat the same plan)
    plans = routes(rows)
    by_cath = defaultdict(list)
    for r in plans:
        by_cath[r["catheter"]].append(r)
    lines = ["## Reachability (plan)", "",
             "| catheter | diameter (mm) | nodules | feasible | median route length (mm) | "
             "median exit generation |", "|---|---|---|---|---|---|"]
    for c in catheters:
        rs = by_cath[c]
        feas = [r for r in rs if r["plan_feasible"]]
        lines.append(f"| {c} | {rs[0]['catheter_diameter_m'] * 1e3:.2f} | {len(rs)} | "
                     f"{_pct(len(feas), len(rs))} | {_median([r['plan_length_m'] for r in feas], 1e3)} "
                     f"| {_median([r['plan_exit_generation'] for r in feas])} |")
    lines.append("")

    reasons = Counter((r["catheter"], reason) for r in plans if not r["plan_feasible"]
                      for reason in (r.get("plan_reasons") or "").split(",") if reason)
    if reasons:
        lines += ["Why targets are unreachable (cases per failed constraint):", "",
                  "| catheter | constraint | cases |", "|---|---|---|"]
        lines += [f"| {c} | {k} | {n} |" for (c, k), n in sorted(reasons.items())]
        lines.append("")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    edges = np.array(SIZE_BINS_MM, float)
    labels = [f"{int(a)}–{int(b)}" if b < 1000 else f"≥{int(a)}" for a, b in zip(edges, edges[1:])]
    gens = sorted({r["nodule_airway_generation"] for r in plans})
    width = 0.8 / max(len(catheters), 1)
    for i, c in enumerate(catheters):
        rs = by_cath[c]
        size_bin = np.digitize([r["nodule_diameter_m"] * 1e3 for r in rs], edges[1:-1])
        frac = [_frac([r["plan_feasible"] for r, b in zip(rs, size_bin) if b == k])
                for k in range(len(labels))]
        axes[0].bar(np.arange(len(labels)) + i * width, np.nan_to_num(frac), width, label=c)
        gfrac = [_frac([r["plan_feasible"] for r in rs if r["nodule_airway_generation"] == g])
                 for g in gens]
        axes[1].bar(np.arange(len(gens)) + i * width, np.nan_to_num(gfrac), width, label=c)
    axes[0].set_xticks(np.arange(len(labels)) + width * (len(catheters) - 1) / 2, labels)
    axes[0].set_xlabel("nodule diameter (mm)")
    axes[1].set_xticks(np.arange(len(gens)) + width * (len(catheters) - 1) / 2,
                       [str(g) for g in gens])
    axes[1].set_xlabel("generation of the airway nearest the nodule")
    for ax in axes:
        ax.set_ylabel("fraction reachable")
        ax.set_ylim(0, 1.2)
        ax.legend(title="catheter", ncols=len(catheters), loc="upper center")
    fig.suptitle("Reachability by nodule size and airway generation")
    fig.tight_layout()
    _save(fig, folder / "reachability.png")
    plt.close(fig)
    lines += ["![reachability vs nodule size and generation](reachability.png)", ""]

    lines += ["| generation | " + " | ".join(catheters) + " |",
              "|---|" + "---|" * len(catheters)]
    for g in gens:
        cells = []
        for c in catheters:
            vals = [r["plan_feasible"] for r in by_cath[c] if r["nodule_airway_generation"] == g]
            cells.append(f"{sum(vals)}/{len(vals)}")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _rehearsal(rows: list[dict], catheters: list[str], folder: Path) -> list[str]:
    """Navigation figures per pose and catheter, the planner-versus-rehearsal confusion table
    per pose and the ground-truth-versus-registered comparison (:mod:`.rehearsal_summary`)."""
    poses = poses_in(rows)
    lines = ["## Rehearsal with the navigation controller", "",
             "One route per subject × nodule × catheter. *Feasible*: the planner calls the "
             "target reachable and the catheter is driven along the planned route; a target the "
             "planner rejects is driven along an unconstrained airway route, to check the "
             "planner's \"no\". Reach, tool-in-lesion and outcomes are over feasible routes, "
             "the simulated time to target over the reached ones, failed steps (non-converged "
             "solves) and wall time over every rehearsed route. *Reached*: the controller "
             "reported it and the true tip ended within the reach tolerance of the exit point; "
             "the outcome columns are the controller's own verdict.", "",
             "| pose | catheter | feasible routes | reached | tool in lesion | failed steps | "
             "median simulated time to target (s) | median wall time per route (s) | "
             + " | ".join(OUTCOMES) + " |", "|---" * (8 + len(OUTCOMES)) + "|"]
    summaries = {(p, c): summarize_rehearsals(rows, p, c) for p in poses
                 for c in [*catheters, None]}
    for (pose, c), s in summaries.items():
        lines.append(" | ".join([
            f"| {pose}", c or "**all**", str(s.feasible), _pct(s.reached, s.feasible),
            _pct(s.tool_in_lesion, s.feasible),
            f"{s.failed_steps}/{s.steps} ({_fraction(s.failed_step_fraction, 2)})",
            _num(s.median_sim_time_s, 1), _num(s.median_wall_s, 1),
            *(str(s.outcomes[o]) for o in OUTCOMES)]) + " |")
    lines.append("")
    for pose in poses:
        lines += confusion_table(summaries[pose, None])
    if len(poses) > 1:
        lines += _pose_comparison(rows, summaries, catheters)
    lines += _navigation_plot(summaries, poses, catheters, folder)
    return lines


def confusion_table(summary: RehearsalSummary) -> list[str]:
    """Markdown lines: planner verdict × rehearsal result of ``summary``, with the agreement."""
    c = summary.confusion
    agree = c.feasible_reached + c.infeasible_not_reached
    not_rehearsed = (f" ({summary.not_rehearsed} routes not rehearsed)"
                     if summary.not_rehearsed else "")
    untested = (f" Not counted: {c.untested} routes the planner refused because the tool cannot "
                "reach the lesion from any airway point (exit distance, tool angle, pleura); the "
                "catheter reaching an airway's end does not test that." if c.untested else "")
    return [f"### Planner vs rehearsal ({summary.pose} pose)", "",
            "| planner | rehearsal reached | rehearsal not reached |", "|---|---|---|",
            f"| feasible | {c.feasible_reached} | {c.feasible_not_reached} |",
            f"| infeasible (catheter) | {c.infeasible_reached} | {c.infeasible_not_reached} |",
            "", f"Agreement: {_pct(agree, c.total)} of rehearsed routes{not_rehearsed}."
            + untested, ""]


def _pose_comparison(rows: list[dict], summaries: dict, catheters: list[str]) -> list[str]:
    """Markdown lines: the same figures steering on the ground truth and on the registered pose,
    and the feasible routes one pose reached and the other did not."""
    measures = [(f"reached, {c or 'all'}", c, lambda s: _pct(s.reached, s.feasible))
                for c in [*catheters, None]]
    measures += [(name, None, f) for name, f in [
        ("tool in lesion", lambda s: _pct(s.tool_in_lesion, s.feasible)),
        ("planner–rehearsal agreement", lambda s: _fraction(s.agreement)),
        ("failed steps", lambda s: _fraction(s.failed_step_fraction, 2)),
        ("median tip-to-exit distance (mm)", lambda s: _num(s.median_tip_error_m * 1e3, 1)),
        ("median simulated time to target (s)", lambda s: _num(s.median_sim_time_s, 1)),
        ("median registration error at the lesion (mm)", lambda s: _num(s.median_tre_m * 1e3, 1)),
        ("registration failed", lambda s: str(s.outcomes["registration_failed"]))]]
    lines = ["### Ground truth vs registered pose", "",
             "| measure | truth | registered |", "|---|---|---|"]
    lines += [f"| {name} | {f(summaries['truth', c])} | {f(summaries['registered', c])} |"
              for name, c, f in measures]
    both = [r for r in routes(rows) if r.get("plan_feasible")
            and r.get("rehearse_route") == "planned"
            and r.get("rehearse_truth_reached") is not None
            and r.get("rehearse_registered_reached") is not None]
    only_truth = sum(1 for r in both
                     if r["rehearse_truth_reached"] and not r["rehearse_registered_reached"])
    only_reg = sum(1 for r in both
                   if r["rehearse_registered_reached"] and not r["rehearse_truth_reached"])
    lines += ["", f"Feasible routes driven both ways: {len(both)}; reached only on the ground "
              f"truth: {only_truth}; reached only on the registered pose: {only_reg}.", ""]
    return lines


def _navigation_plot(summaries: dict, poses: list[str], catheters: list[str],
                     folder: Path) -> list[str]:
    """Bar chart of reach, tool-in-lesion and agreement per pose and catheter, with the 0.95 bar."""
    import matplotlib.pyplot as plt

    measures = {"reached (feasible)": "reach_rate", "tool in lesion": "tool_in_lesion_rate",
                "planner agreement": "agreement"}
    groups = [(p, c) for p in poses for c in catheters]
    fig, ax = plt.subplots(figsize=(5 + 2.5 * len(measures), 4))
    width = 0.8 / max(len(groups), 1)
    for i, (p, c) in enumerate(groups):
        s = summaries[p, c]
        ax.bar(np.arange(len(measures)) + i * width,
               [np.nan_to_num(getattr(s, m)) for m in measures.values()], width,
               label=f"{c}, {p}", hatch="//" if p == "registered" else None)
    ax.axhline(BARS["reach_rate"], color="k", ls="--", lw=1, label="bar: reach, agreement")
    ax.set_xticks(np.arange(len(measures)) + width * (len(groups) - 1) / 2, list(measures))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction")
    ax.legend(title="catheter, pose", loc="center left", bbox_to_anchor=(1.0, 0.5),
              fontsize="small")
    ax.set_title("Navigation in the twin")
    fig.tight_layout()
    _save(fig, folder / "navigation.png")
    plt.close(fig)
    return ["![navigation figures per catheter and pose](navigation.png)", ""]


def _registration(rows: list[dict], catheters: list[str], folder: Path) -> list[str]:
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("register_trials")]
    if not rows:
        return ["## Registration", "", "No case could register (see register_note).", ""]
    scenarios = _ordered(r["scenario"] for r in rows)
    groups, cases = defaultdict(list), defaultdict(list)
    for r in rows:
        groups[(r["scenario"], r["catheter"])].extend(json.loads(r["register_tre_json"]))
        cases[(r["scenario"], r["catheter"])].append(r)
    lines = ["## Registration (TRE at the nodule)", "",
             "Success: the registration reported success and the TRE is below 5 mm. A failed "
             "registration has no TRE.", "",
             "| scenario | catheter | trials | success | TRE median (mm) | TRE p95 (mm) | "
             "TRE before local refinement, median of cases (mm) |", "|---|---|---|---|---|---|---|"]
    for s in scenarios:
        for c in catheters:
            rs = cases[(s, c)]
            if not rs:
                continue
            trials = sum(r["register_trials"] for r in rs)
            success = round(sum(r["register_success_rate"] * r["register_trials"] for r in rs))
            tre = _finite_array(groups[(s, c)])
            stats = (f"{np.median(tre):.2f} | {np.percentile(tre, 95):.2f}" if tre.size
                     else "– | –")
            lines.append(f"| {s} | {c} | {trials} | {_pct(success, trials)} | {stats} | "
                         f"{_median([r['register_tre_global_median_mm'] for r in rs])} |")
    lines.append("")
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5 * len(scenarios), 4), squeeze=False)
    for ax, s in zip(axes[0], scenarios):
        data = [_finite_array(groups[(s, c)]) for c in catheters]
        hi = max((d.max() for d in data if d.size), default=1.0)
        bins = np.linspace(0, hi, 30)
        for c, d in zip(catheters, data):
            if d.size:
                ax.hist(d, bins=bins, alpha=0.5, label=f"{c} (median {np.median(d):.2f})")
        ax.axvline(5.0, color="k", ls="--", lw=1, label="5 mm success limit")
        ax.set_xlabel("TRE at the nodule (mm)")
        ax.set_ylabel("trials")
        ax.set_title(f"scenario: {s}")
        ax.legend()
    fig.tight_layout()
    _save(fig, folder / "tre.png")
    plt.close(fig)
    lines += ["![TRE distributions](tre.png)", ""]
    return lines


def _camera(rows: list[dict], catheters: list[str]) -> list[str]:
    plans = routes(rows)
    lines = ["## Camera at the exit point", "", "| catheter | frames | median open-lumen fraction |",
             "|---|---|---|"]
    for c in catheters:
        vals = [r["camera_open_fraction"] for r in plans
                if r["catheter"] == c and r.get("camera_open_fraction") is not None]
        lines.append(f"| {c} | {len(vals)} | {_median(vals)} |")
    lines.append("")
    return lines


def _finite_array(values) -> np.ndarray:
    a = np.asarray(values, float)
    return a[np.isfinite(a)]


def _catheter_comparison(rows: list[dict], catheters: list[str], folder: Path) -> list[str]:
    """Bar chart: per catheter variant, the share of targets reachable, reached in rehearsal and
    registration trials that succeeded (the measures the campaign has)."""
    import matplotlib.pyplot as plt

    plans = routes(rows)
    measures = {}
    if "plan_feasible" in rows[0]:
        measures["reachable (plan)"] = {
            c: _frac([r["plan_feasible"] for r in plans if r["catheter"] == c]) for c in catheters}
    for pose in poses_in(rows):
        measures[f"reached in rehearsal ({pose})"] = {
            c: summarize_rehearsals(rows, pose, c).reach_rate for c in catheters}
    if "register_trials" in rows[0]:
        def success(c):
            rs = [r for r in rows if r["catheter"] == c and r.get("register_trials")]
            trials = sum(r["register_trials"] for r in rs)
            return (sum(r["register_success_rate"] * r["register_trials"] for r in rs) / trials
                    if trials else float("nan"))
        measures["registration success"] = {c: success(c) for c in catheters}
    if not measures:
        return []
    fig, ax = plt.subplots(figsize=(2 + 2.2 * len(measures), 4))
    width = 0.8 / len(catheters)
    for i, c in enumerate(catheters):
        ax.bar(np.arange(len(measures)) + i * width,
               [np.nan_to_num(m[c]) for m in measures.values()], width, label=c)
    ax.set_xticks(np.arange(len(measures)) + width * (len(catheters) - 1) / 2, list(measures))
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("fraction")
    ax.legend(title="catheter", ncols=len(catheters), loc="upper center")
    ax.set_title("Catheter variants")
    fig.tight_layout()
    _save(fig, folder / "catheters.png")
    plt.close(fig)
    lines = ["## Catheter variants", "", "| measure | " + " | ".join(catheters) + " |",
             "|---|" + "---|" * len(catheters)]
    for name, m in measures.items():
        lines.append(f"| {name} | " + " | ".join(
            "–" if np.isnan(m[c]) else f"{100 * m[c]:.0f}%" for c in catheters) + " |")
    lines += ["", "![catheter variant comparison](catheters.png)", ""]
    return lines


def _ordered(values) -> list:
    return list(dict.fromkeys(values))


def _frac(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def _pct(n: int, total: int) -> str:
    return f"{n}/{total} ({100 * n / total:.0f}%)" if total else "–"


def _fraction(value: float, digits: int = 0) -> str:
    """A fraction as a percentage (``–`` when NaN)."""
    return "–" if np.isnan(value) else f"{100 * value:.{digits}f}%"


def _num(value: float, digits: int) -> str:
    """A number (``–`` when NaN)."""
    return "–" if np.isnan(value) else f"{value:.{digits}f}"


def _median(values: list, scale: float = 1.0) -> str:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return f"{np.median(vals) * scale:.1f}" if vals else "–"


def _save(fig, path: Path) -> None:
    """Write a figure as PNG atomically."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
