"""The twin's geometry prepared once for registration: centerline points, a KD-tree, surfaces.

Everything here is in the CT frame (m). Build a :class:`Twin` once per map and reuse it for
every registration: the first registration otherwise pays for the lazily built structures
(about a second for the phantom; :meth:`Twin.prepare` builds them up front).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

from bronchonav.airway.tree import AirwayTree
from bronchonav.errors import RegistrationError
from bronchonav.geometry import perpendicular
from bronchonav.maps import AirwayMap


class Twin:
    """Registration view of an airway map or tree (CT frame, m).

    Parameters
    ----------
    tree : AirwayTree
        The twin's airway tree.
    mesh_vertices, mesh_triangles : ndarray, optional
        Lumen surface mesh (CT frame, m). Without it the surface is built from the tree as tubes
        of the centerline radii (see :meth:`surface`).
    step : float
        Centerline sampling step (m).
    central_generation : int
        Deepest generation counted as a central airway (for the initial alignment).
    """

    def __init__(self, tree: AirwayTree, mesh_vertices: np.ndarray | None = None,
                 mesh_triangles: np.ndarray | None = None, step: float = 5e-4,
                 central_generation: int = 4) -> None:
        self.tree = tree
        samples = tree.samples(step)
        self.points: np.ndarray = samples.points
        """(M, 3) centerline points (m)."""
        self.tangents: np.ndarray = samples.tangents
        """(M, 3) unit centerline tangents."""
        self.radii: np.ndarray = samples.radii
        """(M,) lumen radius at each point (m)."""
        self.generations: np.ndarray = np.array([tree[int(b)].generation for b in samples.branch_ids])
        """(M,) branch generation of each point."""
        self.kdtree = cKDTree(self.points)
        self.central_generation = central_generation
        self.mesh_vertices = None if mesh_vertices is None or len(mesh_vertices) == 0 else mesh_vertices
        self.mesh_triangles = mesh_triangles

    def prepare(self) -> "Twin":
        """Build every lazily computed structure now (the surface and the coarse clouds), so that
        the first registration is as fast as the next; returns self."""
        _ = self.central_cloud, self.coarse_cloud, self.coarse_kdtree, self.surface
        return self

    @classmethod
    def of(cls, source) -> "Twin":
        """A Twin from a :class:`Twin` (returned as is), an :class:`AirwayMap` or an :class:`AirwayTree`."""
        if isinstance(source, Twin):
            return source
        if isinstance(source, AirwayMap):
            return cls(source.tree, source.mesh_vertices, source.mesh_triangles)
        if isinstance(source, AirwayTree):
            return cls(source)
        raise RegistrationError(f"cannot register to a {type(source).__name__}: "
                                "give an AirwayMap, an AirwayTree or a Twin")

    @cached_property
    def central_cloud(self) -> o3d.geometry.PointCloud:
        """Central-airway centerline points (generation <= ``central_generation``), 2 mm voxels."""
        pts = self.points[self.generations <= self.central_generation]
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        return cloud.voxel_down_sample(2e-3)

    @cached_property
    def coarse_cloud(self) -> o3d.geometry.PointCloud:
        """All centerline points thinned to 2 mm voxels, for coarse ICP."""
        return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.points)).voxel_down_sample(2e-3)

    @cached_property
    def coarse_kdtree(self) -> cKDTree:
        """KD-tree of :attr:`coarse_cloud`'s points, for scoring many candidate poses fast."""
        return cKDTree(np.asarray(self.coarse_cloud.points))

    @cached_property
    def surface(self) -> o3d.geometry.PointCloud:
        """Lumen surface points with outward unit normals, about 1 mm apart (CT frame, m).

        From the mesh when the twin has one (vertex normals); otherwise from the tree, as circles
        of the lumen radius around every centerline point, dropping the parts that lie inside
        another branch's lumen.
        """
        if self.mesh_vertices is not None:
            # copies: open3d needs writable arrays, maps shared through Ray are read-only
            mesh = o3d.geometry.TriangleMesh(
                o3d.utility.Vector3dVector(np.array(self.mesh_vertices)),
                o3d.utility.Vector3iVector(np.array(self.mesh_triangles)))
            mesh.compute_vertex_normals()
            cloud = o3d.geometry.PointCloud(mesh.vertices)
            cloud.normals = mesh.vertex_normals
            return cloud.voxel_down_sample(1e-3)
        samples = self.tree.samples(1e-3)
        t = samples.tangents
        u = perpendicular(t)
        v = np.cross(t, u)
        angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        normals = (np.cos(angles)[None, :, None] * u[:, None] + np.sin(angles)[None, :, None] * v[:, None])
        pts = samples.points[:, None] + samples.radii[:, None, None] * normals
        pts, normals = pts.reshape(-1, 3), normals.reshape(-1, 3)
        keep = ~self.tree.inside_lumen(pts, margin=2e-4)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts[keep]))
        cloud.normals = o3d.utility.Vector3dVector(normals[keep])
        return cloud

    def surface_near(self, center_ct: np.ndarray, radius: float) -> o3d.geometry.PointCloud:
        """The part of :attr:`surface` within ``radius`` (m) of ``center_ct``."""
        pts = np.asarray(self.surface.points)
        idx = np.flatnonzero(np.linalg.norm(pts - center_ct, axis=1) <= radius)
        return self.surface.select_by_index(idx)
