"""Virtual bronchoscopy: camera poses along a route, frames as PNG and an animated GIF.

Poses are ``T_ct_cam`` (optical frame → CT frame, metres; see :mod:`bronchonav.imaging.camera`).
The camera rides on the route's centerline looking a little ahead along it; its roll is carried
along by parallel transport (a rotation-minimising frame) so the picture does not spin, starting
with the anterior side (−y, LPS) up as a bronchoscopist holds the scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bronchonav.airway.tree import AirwayTree
from bronchonav.errors import InputError
from bronchonav.geometry import perpendicular, resample_polyline
from bronchonav.imaging.camera import TipCamera


def route_poses(waypoints_ct: np.ndarray, step: float = 2e-3, look_ahead: float = 6e-3,
                up_ct=(0.0, -1.0, 0.0)) -> np.ndarray:
    """Camera poses along a polyline.

    Parameters
    ----------
    waypoints_ct : ndarray, shape (N, 3)
        Route from the top of the trachea to its end, CT frame (m); N >= 2.
    step : float
        Distance between successive camera positions along the route (m).
    look_ahead : float
        The viewing direction at arc length ``s`` points at the route point at ``s + look_ahead``
        (the last direction is kept near the end) (m).
    up_ct : array_like (3,)
        Image-up direction at the first pose (CT frame); then carried by parallel transport.

    Returns
    -------
    ndarray, shape (K, 4, 4)
        ``T_ct_cam`` for each position, from the start of the route to its end.
    """
    p = np.asarray(waypoints_ct, dtype=float)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 2 or not np.all(np.isfinite(p)):
        raise InputError("a fly-through needs at least 2 finite waypoints (N, 3) in metres")
    if step <= 0 or look_ahead <= 0:
        raise InputError("step and look_ahead must be positive (m)")
    keep = np.concatenate([[True], np.linalg.norm(np.diff(p, axis=0), axis=1) > 1e-9])
    p = p[keep]
    if len(p) < 2:
        raise InputError("the route has zero length")
    dense, _, s = resample_polyline(p, np.zeros(len(p)), min(step, look_ahead) / 4.0)
    total = s[-1]
    stations = np.linspace(0.0, total, max(int(np.ceil(total / step)), 1) + 1)
    ahead = np.minimum(stations + look_ahead, total)
    eye = np.column_stack([np.interp(stations, s, dense[:, k]) for k in range(3)])
    tgt = np.column_stack([np.interp(ahead, s, dense[:, k]) for k in range(3)])
    fwd = tgt - eye
    norms = np.linalg.norm(fwd, axis=1)
    for i in range(len(fwd)):  # near the end the look-ahead collapses: keep the last direction
        if norms[i] < 0.25 * look_ahead and i > 0:
            fwd[i], norms[i] = fwd[i - 1], 1.0
    fwd /= np.linalg.norm(fwd, axis=1, keepdims=True)
    poses = np.zeros((len(eye), 4, 4))
    up = np.asarray(up_ct, dtype=float)
    for i, z in enumerate(fwd):
        down = -(up - (up @ z) * z)
        if np.linalg.norm(down) < 1e-6:
            down = perpendicular(z)
        y = down / np.linalg.norm(down)
        x = np.cross(y, z)
        poses[i, :3, :3] = np.column_stack([x, y, z])
        poses[i, :3, 3] = eye[i]
        poses[i, 3, 3] = 1.0
        up = -y
    return poses


def tree_path_waypoints(tree: AirwayTree, target_ct: np.ndarray) -> np.ndarray:
    """Centerline path from the top of the trachea to the centerline point nearest a target.

    A fallback route (no device constraints) when no planned route is available.

    Parameters
    ----------
    tree : AirwayTree
        The airway tree, CT frame (m).
    target_ct : array_like (3,)
        Target point, CT frame (m).

    Returns
    -------
    ndarray, shape (N, 3)
        Waypoints along the centerlines, CT frame (m).
    """
    _, idx = tree.nearest(np.asarray(target_ct, dtype=float))
    samples = tree.samples()
    end_branch = int(samples.branch_ids[idx[0]])
    end_arc = float(samples.arclength[idx[0]])
    parts = []
    for b_id in tree.path_from_root(end_branch):
        pts = tree[b_id].points
        if b_id == end_branch:
            seg = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
            n = int(np.searchsorted(seg, end_arc, side="right"))
            end_pt = np.array([np.interp(end_arc, seg, pts[:, k]) for k in range(3)])
            pts = np.vstack([pts[:n], end_pt])
        parts.append(pts if not parts else pts[1:])
    return np.vstack(parts)


@dataclass
class Overlay:
    """Navigation overlay drawn on fly-through frames: the target, as planning systems show it.

    Attributes
    ----------
    target_ct : ndarray, shape (3,)
        Lesion centre, CT frame (m).
    target_radius : float
        Lesion radius (m).
    label : str
        Text shown with the distance to the target.
    """

    target_ct: np.ndarray
    target_radius: float
    label: str = "target"


def annotate(color: np.ndarray, T_ct_cam: np.ndarray, camera: TipCamera,
             overlay: Overlay) -> np.ndarray:
    """The frame with the target drawn as a green circle (where in front) and its distance."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(color)
    draw = ImageDraw.Draw(img)
    T = np.asarray(T_ct_cam, dtype=float)
    p_cam = (np.asarray(overlay.target_ct) - T[:3, 3]) @ T[:3, :3]
    dist = float(np.linalg.norm(p_cam))
    uv, front = camera.intrinsics.project(p_cam)
    if front[0]:
        r_px = max(3.0, camera.intrinsics.fx * overlay.target_radius / p_cam[2])
        u, v = uv[0]
        draw.ellipse([u - r_px, v - r_px, u + r_px, v + r_px], outline=(60, 230, 90), width=2)
    draw.text((4, camera.intrinsics.height - 14), f"{overlay.label} {dist * 1e3:.0f} mm",
              fill=(255, 255, 255))
    return np.asarray(img)


def render_flythrough(camera: TipCamera, poses: np.ndarray,
                      overlay: Overlay | None = None) -> list[np.ndarray]:
    """Render one RGB frame (H, W, 3) uint8 per pose, with the optional target overlay."""
    frames = []
    for T in poses:
        color = camera.render(T).color
        frames.append(annotate(color, T, camera, overlay) if overlay is not None else color)
    return frames


def write_flythrough(frames: list[np.ndarray], out_dir: str | Path,
                     gif_path: str | Path | None = None, fps: float = 10.0) -> dict:
    """Write frames as ``frame_0000.png``, ... in ``out_dir`` and optionally an animated GIF.

    Returns
    -------
    dict
        ``frames`` (number), ``out_dir``, ``pngs`` (list of paths) and ``gif`` (path or None).
    """
    from PIL import Image

    if not frames:
        raise InputError("no frames to write")
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    pngs = []
    for i, img in enumerate(images):
        path = out / f"frame_{i:04d}.png"
        img.save(path)
        pngs.append(str(path))
    gif = None
    if gif_path is not None:
        gif = Path(gif_path)
        gif.parent.mkdir(parents=True, exist_ok=True)
        images[0].save(gif, save_all=True, append_images=images[1:],
                       duration=int(round(1000.0 / fps)), loop=0)
        gif = str(gif)
    return {"frames": len(frames), "out_dir": str(out), "pngs": pngs, "gif": gif}
