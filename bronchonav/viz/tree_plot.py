"""Matplotlib drawings of an airway tree (coloured by generation) with nodules.

The tree is drawn in 2D projections of the CT frame (LPS), in millimetres:

* ``coronal``: horizontal = x (patient's right on the left of the picture, radiological
  convention), vertical = z (head up);
* ``sagittal``: horizontal = y (anterior on the left), vertical = z;
* ``axial``: horizontal = x, vertical = y (anterior up, i.e. the y axis inverted).

:func:`plot_tree` draws on any 2D axes (or a 3D axes, using x, y, z) and returns the line
collection (for a colour bar); :func:`view_coordinates` gives the same projection for other
overlays (routes, catheter shapes) so they line up with the tree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bronchonav.airway.tree import AirwayTree

VIEWS = {"coronal": (0, 2), "sagittal": (1, 2), "axial": (0, 1)}
"""View name → (horizontal, vertical) CT axis indices."""


def view_coordinates(points_ct: np.ndarray, view: str = "coronal") -> np.ndarray:
    """Project CT-frame points (m) into a view's 2D plot coordinates (mm).

    Parameters
    ----------
    points_ct : ndarray, shape (N, 3)
        Points in the CT frame (m).
    view : {"coronal", "sagittal", "axial"}

    Returns
    -------
    ndarray, shape (N, 2)
        Horizontal and vertical plot coordinates (mm).
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    h, v = VIEWS[view]
    return np.atleast_2d(np.asarray(points_ct, dtype=float))[:, [h, v]] * 1000.0


def _is_3d(ax) -> bool:
    return getattr(ax, "name", "") == "3d"


def plot_tree(ax, tree: AirwayTree, nodules=(), view: str = "coronal", cmap: str = "viridis",
              width_scale: float = 0.6, max_generation: int | None = None, alpha: float = 1.0,
              nodule_color: str = "crimson", label_nodules: bool = True):
    """Draw ``tree`` (and ``nodules``) on ``ax``.

    Parameters
    ----------
    ax : matplotlib Axes or Axes3D
        Target axes; a 3D axes draws in CT x, y, z (mm), a 2D one the projection ``view``.
    tree : AirwayTree
        Tree in the CT frame (m).
    nodules : sequence of Nodule
        Drawn as circles (2D) or points (3D) of their true radius.
    view : {"coronal", "sagittal", "axial"}
        Projection for 2D axes.
    cmap : str
        Colour map over generations.
    width_scale : float
        Line width in points per mm of lumen diameter (minimum 0.5 pt).
    max_generation : int, optional
        Top of the colour scale (defaults to the tree's maximum generation).
    alpha : float
        Line opacity.
    nodule_color : str
    label_nodules : bool
        Write each nodule's id next to it.

    Returns
    -------
    matplotlib.collections.LineCollection
        The branch lines (``.set_array`` holds the generations), e.g. for ``fig.colorbar``.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.patches import Circle

    branches = sorted(tree, key=lambda b: b.generation)
    gmax = max_generation if max_generation is not None else tree.max_generation
    norm = Normalize(vmin=0, vmax=max(gmax, 1))
    gens = np.array([b.generation for b in branches], dtype=float)
    widths = [max(width_scale * b.diameter * 1000.0, 0.5) for b in branches]
    if _is_3d(ax):
        from mpl_toolkits.mplot3d.art3d import Line3DCollection

        lines = Line3DCollection([b.points * 1000.0 for b in branches], cmap=cmap, norm=norm,
                                 linewidths=widths, alpha=alpha)
        lines.set_array(gens)
        ax.add_collection3d(lines)
        lo, hi = tree.bounds()
        ax.set(xlim=(lo[0] * 1e3, hi[0] * 1e3), ylim=(lo[1] * 1e3, hi[1] * 1e3),
               zlim=(lo[2] * 1e3, hi[2] * 1e3), xlabel="x (mm, left →)",
               ylabel="y (mm, posterior →)", zlabel="z (mm, head →)")
        for n in nodules:
            c = n.center * 1000.0
            ax.scatter(*c, s=(n.radius * 2000.0) ** 2, color=nodule_color, alpha=0.6)
            if label_nodules:
                ax.text(*c, f" {n.id}", color=nodule_color)
        return lines
    lines = LineCollection([view_coordinates(b.points, view) for b in branches], cmap=cmap,
                           norm=norm, linewidths=widths, alpha=alpha, capstyle="round")
    lines.set_array(gens)
    ax.add_collection(lines)
    for n in nodules:
        c = view_coordinates(n.center, view)[0]
        ax.add_patch(Circle(tuple(c), n.radius * 1000.0, color=nodule_color, alpha=0.5, lw=0))
        if label_nodules:
            ax.annotate(n.id, tuple(c), xytext=(4, 4), textcoords="offset points",
                        color=nodule_color, fontsize=8)
    _frame_2d(ax, tree, nodules, view)
    return lines


def _frame_2d(ax, tree: AirwayTree, nodules, view: str) -> None:
    pts = [tree.samples().points] + [n.center[None, :] for n in nodules]
    xy = view_coordinates(np.vstack(pts), view)
    pad = 10.0
    lo, hi = xy.min(axis=0) - pad, xy.max(axis=0) + pad
    h, v = VIEWS[view]
    names = ("x (mm, patient left →)", "y (mm, posterior →)", "z (mm, head ↑)")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim((hi[1], lo[1]) if view == "axial" else (lo[1], hi[1]))
    ax.set_aspect("equal")
    ax.set_xlabel(names[h])
    ax.set_ylabel(names[v])
    ax.set_title(view)


def render_map_png(airway_map, path: str | Path, title: str | None = None, dpi: int = 120) -> Path:
    """Write a PNG with coronal and sagittal views of a map's tree and nodules.

    Parameters
    ----------
    airway_map : AirwayMap
        The map to draw.
    path : str or Path
        Output PNG file.
    title : str, optional
        Figure title (defaults to the map name and summary).
    dpi : int

    Returns
    -------
    Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tree = airway_map.tree
    fig, axes = plt.subplots(1, 2, figsize=(12, 7), constrained_layout=True)
    lines = None
    for ax, view in zip(axes, ("coronal", "sagittal")):
        lines = plot_tree(ax, tree, airway_map.nodules, view=view)
    fig.colorbar(lines, ax=axes, shrink=0.6, label="generation")
    fig.suptitle(title or f"{airway_map.name}: {len(tree)} branches, generations 0–"
                 f"{tree.max_generation}, {len(airway_map.nodules)} nodules (CT frame, LPS)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
