"""Campaigns: cohort and Monte-Carlo studies over many subjects, nodules and devices, on Ray.

A campaign YAML file (:mod:`~bronchonav.campaign.spec`) crosses a cohort (phantom seeds, map
folders, CT scans) with its nodules (all, or sampled sizes and places), catheter variants
(diameter, stiffness, articulation) and registration scenarios; each combination is a *case*
(:mod:`~bronchonav.campaign.cases`) with a key and a seed derived from it. Each case runs the
campaign's stages (:mod:`~bronchonav.campaign.stages`, :mod:`~bronchonav.campaign.builtin`):
``map`` (nodule facts), ``plan`` (route and reachability), ``rehearse`` (drive the catheter along
the route), ``register`` (seeded registration trials, TRE) and ``camera`` (the tip camera's view
at the exit point), or custom ``module:function`` stages — code, so run only when allowed
(``--allow-stage``, ``--allow-custom-stages``) and, on every worker, exactly as the driver
resolved them (:mod:`~bronchonav.campaign.custom`).

:func:`~bronchonav.campaign.runner.run_campaign` runs the cases in-process (one worker) or as
Ray tasks (locally, or on a cluster given its address), writes one row per case to a Parquet (or
CSV) table as results arrive (:mod:`~bronchonav.campaign.store`), and resumes where a previous
run stopped (a damaged table or part file is set aside in ``quarantine/`` with a warning and its
cases are run again). :func:`~bronchonav.campaign.report.write_report` writes the Markdown report and its
plots. Command line: ``bronchonav campaign run FILE.yaml --out DIR [--workers N] [--address A]``
and ``bronchonav campaign report DIR``.

Running on a Ray cluster: every node needs BronchoNav (``pip install 'bronchonav[campaign]'``)
and any module named by a custom stage; the output folder (table, map cache, report) stays on
the driver's machine, only maps, cases and rows travel.
"""

from bronchonav.campaign.report import write_report
from bronchonav.campaign.runner import RunSummary, run_campaign
from bronchonav.campaign.spec import CampaignSpec, load_spec, parse_spec
from bronchonav.campaign.store import ResultStore

__all__ = ["CampaignSpec", "ResultStore", "RunSummary", "load_spec", "parse_spec", "run_campaign",
           "write_report"]
