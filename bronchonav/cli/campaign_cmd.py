"""``bronchonav campaign run FILE.yaml --out DIR`` and ``bronchonav campaign report DIR``."""

from __future__ import annotations

import json
import sys

from bronchonav.cli.options import (existing_file, existing_folder, output_folder, positive_int,
                                    stage_name)

MAX_WORKERS = 512
"""Most parallel workers ``--workers`` accepts (a typo guard; the runner takes any N >= 1)."""


def register(subparsers) -> None:
    """Add the ``campaign`` sub-command (with ``run`` and ``report``)."""
    parser = subparsers.add_parser(
        "campaign", help="cohort and Monte-Carlo studies (Ray)",
        description="Run a campaign (cohort × nodules × catheters × registration scenarios) "
                    "locally or on a Ray cluster, resumably, and report on it.")
    sub = parser.add_subparsers(dest="campaign_command", metavar="ACTION", required=True)

    run = sub.add_parser("run", help="run (or resume) a campaign",
                         description="Run every case of a campaign YAML not yet in DIR's results "
                                     "table, then write the report.")
    run.add_argument("file", type=existing_file, metavar="FILE.yaml", help="campaign file")
    run.add_argument("--out", required=True, type=output_folder, metavar="DIR",
                     help="output folder (results table, cached maps, report); reuse it to resume")
    run.add_argument("--workers", type=positive_int(MAX_WORKERS), default=1, metavar="N",
                     help=f"parallel workers on a local Ray instance, 1-{MAX_WORKERS} (default 1: "
                          "in-process, no Ray)")
    run.add_argument("--address", metavar="ADDR",
                     help="run on the Ray cluster at ADDR (HOST:PORT or 'auto') instead")
    run.add_argument("--allow-stage", action="append", default=[], type=stage_name,
                     metavar="MODULE:FUNCTION",
                     help="run this custom stage named by the campaign file (repeatable); "
                          "custom stages are code and are refused unless allowed")
    run.add_argument("--allow-custom-stages", action="store_true",
                     help="run every custom stage the campaign file names")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true", help="do not write the report")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")
    run.set_defaults(func=_run)

    report = sub.add_parser("report", help="rebuild the report from a campaign's table",
                            description="Write DIR/report/report.md and its PNG plots from the "
                                        "results table in DIR.")
    report.add_argument("dir", type=existing_folder, metavar="DIR", help="campaign output folder")
    report.set_defaults(func=_report)


def _run(args) -> int:
    from bronchonav.campaign.runner import run_campaign
    from bronchonav.campaign.spec import load_spec

    spec = load_spec(args.file)
    summary = run_campaign(spec, args.out, workers=args.workers, address=args.address,
                           progress=not args.no_progress, allowed_stages=tuple(args.allow_stage),
                           allow_custom_stages=args.allow_custom_stages)
    report_path = None
    if not args.no_report:
        from bronchonav.campaign.report import write_report

        report_path = write_report(args.out)
    if args.json:
        out = {**summary.__dict__, "report": str(report_path) if report_path else None}
        print(json.dumps(out))
    else:
        print(f"campaign {spec.name!r}: {summary.cases} cases, {summary.skipped} already done, "
              f"{summary.ran} run, {summary.errors} with errors, {len(summary.lost)} lost "
              f"in {summary.seconds:.1f} s -> {summary.table}")
        if summary.quarantined:
            print(f"set aside as unreadable (cases run again): {', '.join(summary.quarantined)}")
        if report_path:
            print(f"report: {report_path}")
    if summary.lost:
        print(f"bronchonav campaign: {len(summary.lost)} cases failed after retries; run again "
              "to retry them", file=sys.stderr)
        return 1
    return 0


def _report(args) -> int:
    from bronchonav.campaign.report import write_report

    print(write_report(args.dir))
    return 0
