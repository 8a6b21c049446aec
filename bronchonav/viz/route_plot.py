"""A PNG of planned routes: the airway tree, each route highlighted, the lesions and tool paths.

Two orthographic views of the CT frame (LPS, shown in mm): coronal (+x towards the patient's
left, so the patient's right is on the viewer's left as in radiology; z up) and sagittal
(+y posterior; z up). Feasible routes are drawn in
colour with their exit point and tool path; an infeasible target's lesion is drawn in grey with a
dotted line to the nearest reachable airway point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_VIEWS = (("coronal", 0, 2, "x (mm, patient left →)"), ("sagittal", 1, 2, "y (mm, posterior →)"))


def tree_segments(tree) -> tuple[np.ndarray, np.ndarray]:
    """Centerline segments of a tree, (S, 2, 3) in m, and the mean radius of each (S,) in m."""
    segs, rads = [], []
    for b in tree:
        p = b.points
        segs.append(np.stack([p[:-1], p[1:]], axis=1))
        rads.append(0.5 * (b.radii[:-1] + b.radii[1:]))
    return np.concatenate(segs), np.concatenate(rads)


def plot_routes(tree, routes, path, title: str = "", dpi: int = 120) -> Path:
    """Write a PNG of the tree with the routes.

    Parameters
    ----------
    tree : AirwayTree
        The map's tree (CT frame, m).
    routes : list of Route
        Routes to draw (one per target, typically the best of each; alternatives are drawn thin).
    path : str or Path
        Output file.
    title : str
        Figure title.
    dpi : int
        Resolution.

    Returns
    -------
    Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    segs, rads = tree_segments(tree)
    fig, axes = plt.subplots(1, 2, figsize=(12, 7.5))
    colours = plt.get_cmap("tab10")
    for ax, (name, i, j, xlabel) in zip(axes, _VIEWS):
        lc = LineCollection(segs[:, :, [i, j]] * 1e3, linewidths=np.clip(rads * 1e3 * 0.8, 0.3, 8),
                            colors="0.7", capstyle="round")
        ax.add_collection(lc)
        n = -1  # target index: a rank-0 route starts a new target, alternatives follow it
        for route in routes:
            n += route.rank == 0
            col = colours(n % 10)
            c = route.target_center * 1e3
            label = route.target_id or f"target {n + 1}"
            if route.feasible:
                w = route.waypoints * 1e3
                ax.plot(w[:, i], w[:, j], color=col, lw=2.5 if route.rank == 0 else 1.0,
                        alpha=1.0 if route.rank == 0 else 0.6,
                        label=f"{label}: {route.length * 1e3:.0f} mm, gen {route.exit_generation}"
                        if route.rank == 0 else None)
                e = route.exit_point * 1e3
                ax.plot([e[i], c[i]], [e[j], c[j]], color=col, lw=1.5, ls="--")
                ax.plot(e[i], e[j], "o", color=col, ms=4)
                face = col
            else:
                face = "0.4"
                ax.plot([], [], color="0.4", marker="x", ls="none", label=f"{label}: infeasible")
                near = next((r.nearest_reachable_point for r in route.reasons
                             if r.nearest_reachable_point is not None), None)
                if near is not None:
                    q = np.asarray(near) * 1e3
                    ax.plot([q[i], c[i]], [q[j], c[j]], color="0.4", lw=1.0, ls=":")
                ax.plot(c[i], c[j], "x", color="k", ms=6)
            if route.rank == 0:
                ax.add_patch(plt.Circle((c[i], c[j]), max(route.target_radius * 1e3, 1.0),
                                        color=face, alpha=0.45))
                ax.annotate(label, (c[i], c[j]), xytext=(6, 6), textcoords="offset points",
                            fontsize=8, color="k")
        ax.autoscale_view()
        ax.set_aspect("equal")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("z (mm, head ↑)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(handles)), fontsize=8)
    fig.suptitle(title or "planned routes (CT frame)")
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
