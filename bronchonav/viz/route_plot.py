"""A PNG of planned routes: the airway tree, each route highlighted, the lesions and tool paths.

Two projections of the CT frame (LPS, in mm), drawn with :func:`bronchonav.viz.tree_plot.plot_tree`
(tree faded, coloured by generation): coronal (patient's right on the left, head up) and
sagittal. Feasible routes are drawn in colour with their exit point and tool path (dashed); an
infeasible target's lesion stays grey with a dotted line to the nearest reachable airway point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bronchonav.airway.tree import Nodule
from bronchonav.viz.tree_plot import plot_tree, view_coordinates


def plot_routes(tree, routes, path, title: str = "", dpi: int = 120) -> Path:
    """Write a PNG of the tree with the routes.

    Parameters
    ----------
    tree : AirwayTree
        The map's tree (CT frame, m).
    routes : list of Route
        Routes to draw: for each target its best route (rank 0) then its alternatives (drawn
        thin), as returned by the planner.
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

    colours = plt.get_cmap("tab10")
    targets = [r for r in routes if r.rank == 0]
    lesions = [Nodule(r.target_id or f"T{n + 1}", r.target_center, max(r.target_radius, 1e-3))
               for n, r in enumerate(targets)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 7.5))
    for ax, view in zip(axes, ("coronal", "sagittal")):
        plot_tree(ax, tree, lesions, view=view, alpha=0.35, nodule_color="0.45")
        n = -1  # target index: a rank-0 route starts a new target, alternatives follow it
        for route in routes:
            n += route.rank == 0
            col = colours(n % 10)
            label = lesions[n].id
            c = view_coordinates(route.target_center, view)[0]
            if route.feasible:
                w = view_coordinates(route.waypoints, view)
                best = route.rank == 0
                ax.plot(w[:, 0], w[:, 1], color=col, lw=2.5 if best else 1.0,
                        alpha=1.0 if best else 0.6,
                        label=f"{label}: {route.length * 1e3:.0f} mm, gen {route.exit_generation}"
                        if best else None)
                e = view_coordinates(route.exit_point, view)[0]
                ax.plot([e[0], c[0]], [e[1], c[1]], color=col, lw=1.5, ls="--")
                ax.plot(e[0], e[1], "o", color=col, ms=4)
                if best:
                    ax.add_patch(plt.Circle(tuple(c), max(route.target_radius * 1e3, 1.0),
                                            color=col, alpha=0.6, lw=0))
            else:
                ax.plot([], [], color="0.45", marker="x", ls="none", label=f"{label}: infeasible")
                near = next((r.nearest_reachable_point for r in route.reasons
                             if r.nearest_reachable_point is not None), None)
                if near is not None:
                    q = view_coordinates(np.asarray(near), view)[0]
                    ax.plot([q[0], c[0]], [q[1], c[1]], color="0.3", lw=1.0, ls=":")
                ax.plot(c[0], c[1], "x", color="k", ms=6)
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
