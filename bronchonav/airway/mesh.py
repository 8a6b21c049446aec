"""Lumen surface mesh of an airway mask (marching cubes), in the CT frame (LPS, metres)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.measure import marching_cubes

from bronchonav.errors import CTError
from bronchonav.geometry import VoxelGrid


def lumen_mesh(mask: sitk.Image, max_triangles: int = 100_000,
               smoothing_voxels: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh of the lumen surface.

    The binary mask is blurred (Gaussian, ``smoothing_voxels`` voxels) and contoured at 0.5 by
    marching cubes, which gives a smooth surface close to the mask boundary. Where that gives
    more than twice ``max_triangles`` triangles the cubes are made 2 (up to 4) voxels wide;
    the surface is then decimated by quadric error (open3d) to at most ``max_triangles``.

    Parameters
    ----------
    mask : SimpleITK.Image
        Airway lumen mask (nonzero inside) with the CT geometry.
    max_triangles : int
        Upper bound on the triangle count.
    smoothing_voxels : float
        Gaussian sigma (voxels) applied to the mask before contouring.

    Returns
    -------
    vertices : ndarray, shape (V, 3)
        Vertex positions, CT frame (m).
    triangles : ndarray of int, shape (F, 3)
        Vertex indices; normals point out of the lumen.
    """
    arr = sitk.GetArrayViewFromImage(mask) > 0
    if not arr.any():
        raise CTError("cannot mesh an empty airway segmentation")
    nz = np.nonzero(arr)
    lo = np.array([max(int(i.min()) - 3, 0) for i in nz])
    hi = np.array([int(i.max()) + 4 for i in nz])
    sub = np.zeros(tuple(hi - lo), dtype=np.float32)
    crop = arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    sub[:crop.shape[0], :crop.shape[1], :crop.shape[2]] = crop
    sub = ndimage.gaussian_filter(sub, smoothing_voxels)
    step = 1
    verts, faces, _, _ = marching_cubes(sub, level=0.5, allow_degenerate=False)
    while len(faces) > 2 * max_triangles and step < 4:  # coarser cubes beat slow decimation
        step += 1
        verts, faces, _, _ = marching_cubes(sub, level=0.5, step_size=step, allow_degenerate=False)
    vertices = VoxelGrid.from_image(mask).index_to_ct(verts + lo)
    if np.linalg.det(np.asarray(mask.GetDirection()).reshape(3, 3)) < 0:
        faces = faces[:, ::-1]
    if len(faces) > max_triangles:
        vertices, faces = _decimate(vertices, faces, max_triangles)
    return vertices, faces.astype(np.int64)


def _decimate(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric-error decimation to at most ``target`` triangles (open3d)."""
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices),
                                     o3d.utility.Vector3iVector(faces.astype(np.int32)))
    mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=int(target))
    mesh.remove_unreferenced_vertices()
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles)
