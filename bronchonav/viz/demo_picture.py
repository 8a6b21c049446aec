"""The closed-loop demo's picture: tree, route, final catheter and registered EM samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bronchonav.fileio import atomic_open
from bronchonav.viz.tree_plot import plot_tree, view_coordinates


def demo_picture(path: str | Path, airway_map, route_ct, backbone_ct, em_patient,
                 T_ct_patient, summary: dict) -> None:
    """Coronal and sagittal views, titled with the demo's verdict.

    Parameters
    ----------
    path : path
        PNG to write (atomically).
    airway_map : AirwayMap
    route_ct : ndarray (N, 3) or None
        The driven route, CT frame (m); ``None`` when nothing was driven.
    backbone_ct : ndarray (M, 3)
        Final catheter backbone, CT frame (m).
    em_patient : ndarray (K, 3)
        EM samples, patient frame (m).
    T_ct_patient : ndarray (4, 4) or None
        The registration's estimate (EM samples are drawn through it when given).
    summary : dict
        The demo summary (``ok``, ``failure``, ``nodule``, ``tip_to_exit_mm``,
        ``registration_tre_mm``...).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 7))
    for ax, view in zip(axes, ("coronal", "sagittal")):
        plot_tree(ax, airway_map.tree, airway_map.nodules, view=view, alpha=0.35)
        if route_ct is not None:
            r = view_coordinates(route_ct, view)
            ax.plot(r[:, 0], r[:, 1], "-", color="limegreen", lw=2.5, label="planned route")
            x = view_coordinates(route_ct[-1], view)[0]
            ax.plot(*x, "o", color="darkorange", ms=7, label="exit point")
        if T_ct_patient is not None and len(em_patient):
            em_ct = np.asarray(em_patient) @ T_ct_patient[:3, :3].T + T_ct_patient[:3, 3]
            e = view_coordinates(em_ct, view)
            ax.plot(e[:, 0], e[:, 1], ".", color="gray", ms=2, label="EM samples (registered)")
        b = view_coordinates(backbone_ct, view)
        ax.plot(b[:, 0], b[:, 1], "-", color="royalblue", lw=2, label="catheter (final)")
    axes[0].legend(loc="lower left", fontsize=8)
    tre = summary.get("registration_tre_mm")
    verdict = "OK" if summary["ok"] else f"FAILED — {summary['failure']}"
    fig.suptitle(f"BronchoNav demo, nodule {summary['nodule']}: {verdict}\n"
                 f"tip {summary['tip_to_exit_mm']:.1f} mm from the exit point, tool "
                 f"{'in' if summary.get('tool_in_lesion') else 'not in'} the lesion; "
                 f"registration {'ok' if summary['registration_success'] else 'FAILED'}"
                 f"{'' if tre is None else f' (TRE {tre:.1f} mm)'}",
                 color="black" if summary["ok"] else "firebrick")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
