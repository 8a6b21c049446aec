"""An interactive 3D HTML view (plotly) of planned routes a planner can rotate and zoom.

Shows the airway centerlines (grey, hover gives branch id, generation, lobe and diameter), each
route (coloured, hover gives the clearance), the exit points, the tool paths and the lesions
(spheres). Coordinates are the CT frame (LPS) in mm. The file is self-contained (plotly.js is
embedded), so it opens offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _sphere(center_mm: np.ndarray, radius_mm: float, n: int = 16):
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n), np.linspace(0, np.pi, n // 2))
    x = center_mm[0] + radius_mm * np.cos(u) * np.sin(v)
    y = center_mm[1] + radius_mm * np.sin(u) * np.sin(v)
    z = center_mm[2] + radius_mm * np.cos(v)
    return x, y, z


def route_figure(tree, routes, title: str = ""):
    """A plotly Figure of the tree and routes (see the module docstring)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    xs, ys, zs, text = [], [], [], []
    for b in tree:
        p = b.points * 1e3
        label = (f"branch {b.id}{' ' + b.name if b.name else ''}, gen {b.generation}, "
                 f"{b.lobe or '-'}, Ø {b.diameter * 1e3:.1f} mm")
        xs += [*p[:, 0], None]
        ys += [*p[:, 1], None]
        zs += [*p[:, 2], None]
        text += [label] * len(p) + [None]
    traces = [go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color="#a0a0a0", width=3),
                           text=text, hoverinfo="text", name="airway centerlines")]
    palette = qualitative.D3
    n = -1  # target index: a rank-0 route starts a new target, alternatives follow it
    for route in routes:
        n += route.rank == 0
        col = palette[n % len(palette)]
        label = route.target_id or f"target {n + 1}"
        c = route.target_center * 1e3
        if route.feasible:
            w = route.waypoints * 1e3
            hover = [f"{label}: s {s * 1e3:.0f} mm, clearance {cl * 1e3:.2f} mm"
                     for s, cl in zip(route.arclength, route.clearance)]
            traces.append(go.Scatter3d(
                x=w[:, 0], y=w[:, 1], z=w[:, 2], mode="lines",
                line=dict(color=col, width=8 if route.rank == 0 else 3), text=hover,
                hoverinfo="text",
                name=f"{label} route {route.rank}: {route.length * 1e3:.0f} mm, "
                     f"gen {route.exit_generation}"))
            e = route.exit_point * 1e3
            traces.append(go.Scatter3d(
                x=[e[0], c[0]], y=[e[1], c[1]], z=[e[2], c[2]], mode="lines+markers",
                line=dict(color=col, width=4, dash="dash"), marker=dict(size=3, color=col),
                name=f"{label} tool {route.tool_length * 1e3:.1f} mm, "
                     f"{np.degrees(route.tool_angle):.0f}°"))
        else:
            near = next((r.nearest_reachable_point for r in route.reasons
                         if r.nearest_reachable_point is not None), None)
            if near is not None:
                q = np.asarray(near) * 1e3
                traces.append(go.Scatter3d(
                    x=[q[0], c[0]], y=[q[1], c[1]], z=[q[2], c[2]], mode="lines",
                    line=dict(color="#555555", width=3, dash="dot"),
                    name=f"{label} infeasible: " + "; ".join(r.constraint for r in route.reasons)))
        if route.rank == 0:
            sx, sy, sz = _sphere(c, max(route.target_radius * 1e3, 1.0))
            traces.append(go.Surface(
                x=sx, y=sy, z=sz, showscale=False, opacity=0.6, hoverinfo="name",
                colorscale=[[0, col if route.feasible else "#555555"],
                            [1, col if route.feasible else "#555555"]],
                name=f"{label} Ø {2 * route.target_radius * 1e3:.1f} mm"))
    fig = go.Figure(traces)
    fig.update_layout(
        title=title or "planned routes (CT frame, LPS, mm)",
        scene=dict(xaxis_title="x (mm, patient left)", yaxis_title="y (mm, posterior)",
                   zaxis_title="z (mm, head)", aspectmode="data"),
        legend=dict(itemsizing="constant"), margin=dict(l=0, r=0, t=40, b=0))
    return fig


def write_route_html(tree, routes, path, title: str = "") -> Path:
    """Write the interactive view of :func:`route_figure` to ``path``; return the path."""
    path = Path(path)
    route_figure(tree, routes, title).write_html(str(path), include_plotlyjs=True, full_html=True)
    return path
