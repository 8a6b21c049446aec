"""A virtual bronchoscope camera at the catheter tip: colour and depth by ray casting.

Frames and units
----------------
Camera poses are ``T_ct_cam`` (4×4, metres): they map points from the camera's optical frame to
the CT frame (LPS, m). The optical frame follows the ROS/OpenCV convention: +z along the viewing
direction (the optical axis), +x to the right of the image, +y down the image. Depth images hold
the z-depth along the optical axis in metres (REP 118): ``+inf`` where a ray leaves the mesh
through an open end without hitting a wall.

Rendering
---------
One ray per pixel is cast on the lumen mesh with :class:`open3d.t.geometry.RaycastingScene`
(Embree, CPU, headless). The light source sits at the lens, as a bronchoscope's fibre light does,
so a wall point at range ``r`` with normal ``n`` (interpolated vertex normals) receives
``albedo * |n . ray| * (d_ref / r)**2`` (Lambertian, inverse square law), tone-mapped with
``1 - exp(-L)`` and gamma-encoded. Far openings (the next bronchi) therefore look dark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from bronchonav.errors import InputError, MapError


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics with optional radial (Brown) distortion.

    Attributes
    ----------
    width, height : int
        Image size (pixels).
    hfov : float
        Horizontal field of view of the undistorted pinhole model (rad); the default 110°
        is bronchoscope-like (vertical about 94°, diagonal about 121° at 320×240).
    k1, k2 : float
        Radial distortion: normalised coordinates ``x_d = x_u (1 + k1 r² + k2 r⁴)``; negative
        ``k1`` gives the barrel distortion of wide-angle scope lenses. Must keep the mapping
        monotonic over the image.

    Notes
    -----
    Pixel ``(row i, column j)`` has its centre at ``u = j``, ``v = i``; the principal point is
    the image centre ``((width - 1) / 2, (height - 1) / 2)``; pixels are square (``fx == fy``).
    """

    width: int = 320
    height: int = 240
    hfov: float = float(np.radians(110.0))
    k1: float = 0.0
    k2: float = 0.0

    def __post_init__(self) -> None:
        if int(self.width) < 2 or int(self.height) < 2:
            raise InputError(f"camera image must be at least 2×2 pixels, got {self.width}×{self.height}")
        if not (0.0 < self.hfov < np.pi):
            raise InputError(f"camera hfov must be in (0, pi) rad, got {self.hfov}")
        if not (np.isfinite(self.k1) and np.isfinite(self.k2)):
            raise InputError("camera distortion coefficients must be finite")

    @property
    def fx(self) -> float:
        """Focal length (pixels)."""
        return self.width / (2.0 * np.tan(self.hfov / 2.0))

    @property
    def fy(self) -> float:
        """Focal length (pixels), equal to :attr:`fx`."""
        return self.fx

    @property
    def cx(self) -> float:
        """Principal point column (pixels)."""
        return (self.width - 1) / 2.0

    @property
    def cy(self) -> float:
        """Principal point row (pixels)."""
        return (self.height - 1) / 2.0

    @property
    def K(self) -> np.ndarray:
        """The 3×3 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def distortion(self) -> np.ndarray:
        """Plumb-bob coefficients ``(k1, k2, p1, p2, k3)`` as in ``sensor_msgs/CameraInfo``."""
        return np.array([self.k1, self.k2, 0.0, 0.0, 0.0])

    def _distort_factor(self, r2: np.ndarray) -> np.ndarray:
        return 1.0 + self.k1 * r2 + self.k2 * r2 * r2

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project camera-frame points (N, 3) (m) to pixel coordinates.

        Returns
        -------
        uv : ndarray, shape (N, 2)
            Column ``u`` and row ``v`` (pixels), distortion applied.
        in_front : ndarray of bool, shape (N,)
            Whether the point is in front of the camera (z > 0).
        """
        p = np.atleast_2d(np.asarray(points_cam, dtype=float))
        z = p[:, 2]
        in_front = z > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            xu = p[:, :2] / z[:, None]
        f = self._distort_factor((xu ** 2).sum(axis=1))
        uv = np.column_stack([self.fx * xu[:, 0] * f + self.cx, self.fy * xu[:, 1] * f + self.cy])
        return uv, in_front

    def _undistort_radius(self, r_d: np.ndarray) -> np.ndarray:
        """Solve ``r (1 + k1 r² + k2 r⁴) = r_d`` for ``r`` by Newton's method."""
        r = r_d.copy()
        for _ in range(30):
            g = r * self._distort_factor(r * r) - r_d
            dg = 1.0 + 3.0 * self.k1 * r * r + 5.0 * self.k2 * r ** 4
            r = r - g / dg
        return r

    @cached_property
    def rays(self) -> np.ndarray:
        """Unit ray directions (height·width, 3) in the camera frame, row-major pixel order."""
        if self.k1 == 0.0 and self.k2 == 0.0:
            r_max = 0.0
        else:
            corner = np.hypot(self.cx / self.fx, self.cy / self.fy)
            r_max = float(self._undistort_radius(np.array([corner]))[0])
            grid = np.linspace(0.0, abs(r_max) * 1.01, 400)
            slope = 1.0 + 3.0 * self.k1 * grid ** 2 + 5.0 * self.k2 * grid ** 4
            solved = np.isfinite(r_max) and r_max > 0 and \
                abs(r_max * self._distort_factor(r_max ** 2) - corner) < 1e-9 * corner
            if not solved or np.any(slope <= 0):
                raise InputError(f"distortion k1={self.k1}, k2={self.k2} folds the image "
                                 "(not monotonic over the field of view)")
        v, u = np.mgrid[0:self.height, 0:self.width].astype(float)
        xd = (u.ravel() - self.cx) / self.fx
        yd = (v.ravel() - self.cy) / self.fy
        if r_max > 0.0:
            r_d = np.hypot(xd, yd)
            r_u = self._undistort_radius(r_d)
            scale = np.divide(r_u, r_d, out=np.ones_like(r_d), where=r_d > 0)
            xd, yd = xd * scale, yd * scale
        d = np.column_stack([xd, yd, np.ones_like(xd)])
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        d.setflags(write=False)
        return d


@dataclass(frozen=True)
class Shading:
    """How the tip light renders the wall.

    Attributes
    ----------
    albedo : tuple of float
        Wall reflectance per RGB channel in [0, 1] (mucosa pink by default).
    reference_distance : float
        Range (m) at which a wall facing the camera receives unit irradiance (the exposure).
    auto_exposure : bool
        Set the reference distance of each frame to the median range of its hits, as a scope's
        automatic gain does; the image still darkens with distance within a frame.
    gamma : float
        Display gamma applied after tone mapping.
    """

    albedo: tuple = (0.86, 0.45, 0.40)
    reference_distance: float = 0.02
    auto_exposure: bool = False
    gamma: float = 2.2


@dataclass(frozen=True)
class CameraNoise:
    """Sensor noise, Gaussian and independent per pixel.

    Attributes
    ----------
    depth_std : float
        Constant part of the depth noise standard deviation (m).
    depth_rel_std : float
        Part of the depth noise proportional to depth (dimensionless).
    color_std : float
        Colour noise standard deviation on the [0, 1] intensity scale.
    """

    depth_std: float = 0.0
    depth_rel_std: float = 0.0
    color_std: float = 0.0


@dataclass
class CameraFrame:
    """One rendered frame.

    Attributes
    ----------
    color : ndarray of uint8, shape (H, W, 3)
        RGB image.
    depth : ndarray of float32, shape (H, W)
        z-depth along the optical axis (m); ``+inf`` where the ray hits nothing.
    T_ct_cam : ndarray, shape (4, 4)
        Camera pose (optical frame → CT frame, m) the frame was rendered from.
    intrinsics : CameraIntrinsics
        The intrinsics it was rendered with.
    """

    color: np.ndarray
    depth: np.ndarray
    T_ct_cam: np.ndarray
    intrinsics: CameraIntrinsics

    @property
    def hit(self) -> np.ndarray:
        """Pixels whose ray hit the wall, (H, W) bool."""
        return np.isfinite(self.depth)


def look_at(eye_ct: np.ndarray, forward_ct: np.ndarray, up_ct=(0.0, -1.0, 0.0)) -> np.ndarray:
    """Camera pose ``T_ct_cam`` at ``eye_ct`` looking along ``forward_ct`` (CT frame, m).

    The image's "up" (−y of the optical frame) is the component of ``up_ct`` orthogonal to the
    viewing direction; the default is anterior (−y in LPS), as a bronchoscopist holds the scope.
    If ``up_ct`` is parallel to ``forward_ct`` another axis is used.
    """
    z = np.asarray(forward_ct, dtype=float)
    nz = np.linalg.norm(z)
    if not np.isfinite(nz) or nz == 0:
        raise InputError("look_at needs a finite, non-zero viewing direction")
    z = z / nz
    up = np.asarray(up_ct, dtype=float)
    for candidate in (up, np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])):
        x = np.cross(z, candidate)
        if np.linalg.norm(x) > 1e-6:
            break
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([x, y, z])
    T[:3, 3] = np.asarray(eye_ct, dtype=float)
    return T


_LUT_SIZE = 4096
"""Entries of the tone-mapping table (uniform in the square root of the irradiance)."""
_LUT_MAX = 32.0
"""Irradiance at the end of the table (every channel is saturated beyond it)."""


@dataclass
class _Mesh:
    vertices: np.ndarray
    triangles: np.ndarray
    vertex_normals: np.ndarray = field(repr=False)


class TipCamera:
    """Renders colour and depth frames of a lumen mesh from camera poses in the CT frame.

    Parameters
    ----------
    vertices_ct : ndarray, shape (V, 3)
        Lumen mesh vertices, CT frame (m).
    triangles : ndarray of int, shape (F, 3)
        Triangle vertex indices.
    intrinsics : CameraIntrinsics, optional
        Defaults to 320×240, 110° horizontal field of view, no distortion.
    shading : Shading, optional
        Light and tone mapping.
    noise : CameraNoise, optional
        Sensor noise (none by default).
    seed : int
        Seed of the noise generator.
    nthreads : int
        Threads for ray casting (0: all cores).

    Examples
    --------
    >>> cam = TipCamera.from_map(airway_map)                       # doctest: +SKIP
    >>> frame = cam.render(look_at(p_ct, direction_ct))            # doctest: +SKIP
    >>> frame.color.shape, frame.depth.dtype                       # doctest: +SKIP
    ((240, 320, 3), dtype('float32'))
    """

    def __init__(self, vertices_ct: np.ndarray, triangles: np.ndarray,
                 intrinsics: CameraIntrinsics | None = None, shading: Shading | None = None,
                 noise: CameraNoise | None = None, seed: int = 0, nthreads: int = 0) -> None:
        import open3d as o3d

        vertices = np.asarray(vertices_ct, dtype=float).reshape(-1, 3)
        triangles = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
        if len(triangles) == 0 or len(vertices) == 0:
            raise MapError("the lumen mesh is empty: the camera has nothing to render")
        if not np.all(np.isfinite(vertices)):
            raise MapError("the lumen mesh has non-finite vertices")
        if triangles.min() < 0 or triangles.max() >= len(vertices):
            raise MapError("the lumen mesh has triangle indices outside its vertex list")
        legacy = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices),
                                           o3d.utility.Vector3iVector(triangles.astype(np.int32)))
        legacy.compute_vertex_normals()
        self.mesh = _Mesh(vertices, triangles, np.asarray(legacy.vertex_normals, dtype=np.float32))
        self.intrinsics = intrinsics or CameraIntrinsics()
        self.shading = shading or Shading()
        self.noise = noise or CameraNoise()
        self.nthreads = int(nthreads)
        self._rng = np.random.default_rng(seed)
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)),
                                  o3d.core.Tensor(triangles.astype(np.uint32)))
        self._o3c = o3d.core
        self._albedo = np.asarray(self.shading.albedo, dtype=np.float32)
        self._rays32 = self.intrinsics.rays.astype(np.float32)
        self._triangle_normals = self.mesh.vertex_normals[triangles]
        irr = (np.linspace(0.0, 1.0, _LUT_SIZE) ** 2 * _LUT_MAX)[:, None]
        tone = (1.0 - np.exp(-irr * self._albedo[None, :].astype(float))) ** (1.0 / self.shading.gamma)
        self._tone_lut = np.round(tone * 255.0).astype(np.uint8)

    @classmethod
    def from_map(cls, airway_map, **kwargs) -> "TipCamera":
        """A camera on the lumen mesh of an :class:`~bronchonav.maps.AirwayMap`."""
        return cls(airway_map.mesh_vertices, airway_map.mesh_triangles, **kwargs)

    def reseed(self, seed) -> None:
        """Restart the noise generator from ``seed`` (an int or a sequence of ints)."""
        self._rng = np.random.default_rng(seed)

    @property
    def n_triangles(self) -> int:
        """Number of triangles in the rendered mesh."""
        return len(self.mesh.triangles)

    def cast(self, T_ct_cam: np.ndarray) -> dict:
        """Cast one ray per pixel from ``T_ct_cam``; the raw hits (flattened, row-major).

        Returns
        -------
        dict
            ``t_hit`` (N,) range along each unit ray (m, ``inf`` on a miss), ``primitive_ids``
            (N,) hit triangle, ``primitive_uvs`` (N, 2) barycentric coordinates of the hit,
            ``rays_ct`` (N, 3) unit ray directions in the CT frame.
        """
        T = np.asarray(T_ct_cam, dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise InputError("camera pose must be a finite 4×4 matrix T_ct_cam")
        rays = np.empty((len(self._rays32), 2, 3), dtype=np.float32)  # (origin, direction)
        rays[:, 0] = T[:3, 3]
        # R @ r per ray; einsum avoids BLAS, whose thread start-up dominates at this shape
        np.einsum("ij,kj->ik", self._rays32, T[:3, :3].astype(np.float32), out=rays[:, 1])
        dirs = rays[:, 1]
        rays = rays.reshape(-1, 6)
        out = self._scene.cast_rays(self._o3c.Tensor(rays), nthreads=self.nthreads)
        return {"t_hit": out["t_hit"].numpy(), "primitive_ids": out["primitive_ids"].numpy(),
                "primitive_uvs": out["primitive_uvs"].numpy(), "rays_ct": dirs}

    def render(self, T_ct_cam: np.ndarray) -> CameraFrame:
        """Render the colour and depth frame seen from camera pose ``T_ct_cam`` (CT frame, m)."""
        intr = self.intrinsics
        hits = self.cast(T_ct_cam)
        t = hits["t_hit"]
        hit = np.isfinite(t)
        ids = hits["primitive_ids"][hit]
        uv = hits["primitive_uvs"][hit]
        g = self._triangle_normals[ids]  # (N, 3 corners, 3) vertex normals of the hit triangles
        n = g[:, 0] * (1.0 - uv[:, :1] - uv[:, 1:]) + g[:, 1] * uv[:, :1] + g[:, 2] * uv[:, 1:]
        cos = np.abs(np.einsum("ij,ij->i", n, hits["rays_ct"][hit]))
        cos /= np.maximum(np.sqrt(np.einsum("ij,ij->i", n, n)), 1e-12)
        r = t[hit]
        d_ref = float(np.median(r)) if (self.shading.auto_exposure and r.size) else \
            self.shading.reference_distance
        irradiance = cos * (d_ref / r) ** 2
        color = np.zeros((len(t), 3), dtype=np.uint8)
        if self.noise.color_std > 0:
            value = 1.0 - np.exp(-irradiance[:, None] * self._albedo[None, :])
            value = value + self._rng.normal(0.0, self.noise.color_std, value.shape)
            value = np.clip(value, 0.0, 1.0) ** (1.0 / self.shading.gamma)
            color[hit] = np.round(value * 255.0).astype(np.uint8)
        else:  # the same tone curve through a table, sampled densely in sqrt(irradiance)
            k = np.sqrt(np.minimum(irradiance, _LUT_MAX) * (1.0 / _LUT_MAX)) * (_LUT_SIZE - 1)
            color[hit] = self._tone_lut[(k + 0.5).astype(np.intp)]
        depth = np.full(len(t), np.inf, dtype=np.float32)
        z = r * self._rays32[hit, 2]
        if self.noise.depth_std > 0 or self.noise.depth_rel_std > 0:
            std = self.noise.depth_std + self.noise.depth_rel_std * z
            z = np.maximum(z + self._rng.normal(0.0, 1.0, z.shape) * std, 0.0)
        depth[hit] = z
        return CameraFrame(color.reshape(intr.height, intr.width, 3),
                           depth.reshape(intr.height, intr.width), np.array(T_ct_cam, dtype=float),
                           intr)
