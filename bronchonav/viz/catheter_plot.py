"""Pictures of catheter shapes inside the airway tree (matplotlib, CT frame drawn in mm)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bronchonav.airway.tree import AirwayTree
from bronchonav.catheter.state import CatheterState
from bronchonav.viz.tree_plot import plot_tree, view_coordinates


def render_catheter_png(tree: AirwayTree, states: list[CatheterState], path: str | Path,
                        title: str | None = None, dpi: int = 120) -> Path:
    """Write a PNG with coronal and sagittal views of ``tree`` and the catheter ``states``.

    Earlier states are drawn thin and faded, the last one bold with its tip marked and the nodes
    in wall contact highlighted. States must be in the CT frame.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 6.5))
    for ax, view in zip(axes, ("coronal", "sagittal")):
        plot_tree(ax, tree, view=view, alpha=0.3, cmap="viridis")
        for k, s in enumerate(states[:-1]):
            xy = view_coordinates(s.positions, view)
            ax.plot(xy[:, 0], xy[:, 1], color="tab:blue", lw=0.8,
                    alpha=0.15 + 0.5 * k / max(len(states) - 1, 1))
        if states:
            last = states[-1]
            xy = view_coordinates(last.positions, view)
            ax.plot(xy[:, 0], xy[:, 1], color="tab:red", lw=2.2, label="catheter")
            ax.plot(*xy[-1], "o", color="tab:red", ms=5)
            touching = np.linalg.norm(last.contact_forces, axis=1) > 1e-6
            if touching.any():
                ax.plot(xy[touching, 0], xy[touching, 1], "x", color="k", ms=4,
                        label="wall contact")
            ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title or "catheter in the airway tree")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
