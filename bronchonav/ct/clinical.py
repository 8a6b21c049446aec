"""Clinical-looking rendering of a phantom: what makes real chest CTs hard for airway extraction.

The ``clinical`` phantom preset renders the same ground-truth anatomy as the default phantom
(:mod:`bronchonav.ct.phantom`) the way a clinical scan shows it:

* **slices** of ``slice_thickness_m`` (0.6–2.5 mm) with a Gaussian slice sensitivity profile
  whose full width at half maximum is the thickness, one slice per thickness (contiguous);
  in-plane pixels of ``PhantomConfig.spacing_m``. The anatomy is rendered on a fine grid
  (z step at most the in-plane pixel, an integer fraction of the thickness), blurred in-plane
  by the point spread and along z by the slice sensitivity profile alone, whose full width at
  half maximum is the nominal thickness, as measured scanners give within 0.1 mm (the measured
  profile holds the z point spread);
* **noise** of ``PhantomConfig.noise_hu`` std, spatially correlated in each slice (white noise
  smoothed by a Gaussian of ``noise_correlation_vox`` pixels and rescaled to the std), as
  filtered back-projection gives;
* **air brighter than −1000 HU** (``PhantomConfig.hu_air`` inside the body, ``outside_air_hu``
  around it) with a slowly varying offset of ±``air_variation_hu`` across the volume (beam
  hardening, calibration);
* a **dependent density gradient**: the parenchyma is ``PhantomConfig.hu_lung`` at the body's
  anterior-posterior centre and ``lung_gradient_hu_per_m`` denser per metre towards posterior
  (+y, the patient is supine);
* **pulmonary arteries beside the bronchi** (touching the airway's outer wall, about as wide as
  the airway) and **veins between them** (offset 0–4 mm from the wall), blood at ``vessel_hu``;
* **thin small-airway walls** (``PhantomConfig.wall_fraction`` / ``min_wall_m`` of the preset,
  below a voxel, so they are at partial volume);
* a **mucus-plugged branch** (its lumen filled with ``mucus_hu``): it is removed from the
  ground truth, which holds the airways a reader could see;
* a **body outline** (skin and a subcutaneous fat layer) and a **scanner table** under the
  patient's back;
* optionally **emphysema** (``emphysema_fraction`` > 0; off in the preset): the parenchyma
  destroyed in blobs of about ``emphysema_scale_m`` at ``emphysema_hu``, upper-zone
  predominant as smokers' centrilobular emphysema is, up to the airway walls — the patients who
  come for a lung nodule are mostly (ex-)smokers, and air beside an airway wall is where region
  growing leaks.

Frames and units: as in :mod:`bronchonav.ct.render` (CT frame LPS, metres; arrays z, y, x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bronchonav.airway.tree import AirwayTree, Branch, Nodule
from bronchonav.ct.lungs import LungModel
from bronchonav.ct.render import (_SLAB, VolumeGrid, _rasterise_capsules, lung_labels,
                                  rasterise_airways, rasterise_nodules)
from bronchonav.errors import InputError


FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
"""Full width at half maximum of a Gaussian in sigmas (about 2.3548)."""


@dataclass
class ClinicalAppearance:
    """How a clinical scan departs from the ideal phantom (lengths in m, intensities in HU)."""

    slice_thickness_m: float = 1.0e-3
    """Nominal slice thickness = FWHM of the slice profile = slice spacing (m), 0.6–2.5 mm."""
    noise_correlation_vox: float = 1.0
    """Gaussian sigma (in-plane pixels) of the noise correlation."""
    outside_air_hu: float = -990.0
    air_variation_hu: float = 20.0
    """Amplitude of the slowly varying intensity offset (HU)."""
    air_variation_scale_m: float = 0.08
    """Correlation length of that offset (m)."""
    lung_gradient_hu_per_m: float = 500.0
    """Parenchyma density increase per metre towards posterior (+y)."""
    vessel_hu: float = 40.0
    artery_radius_ratio: tuple[float, float] = (0.9, 1.2)
    """Artery radius / airway lumen radius, uniform in this range."""
    vein_radius_ratio: tuple[float, float] = (0.8, 1.1)
    vein_gap_m: tuple[float, float] = (0.0, 0.004)
    """Gap between a vein and the airway's outer wall (m)."""
    vessel_min_generation: int = 2
    mucus_hu: float = 15.0
    n_mucus_plugs: int = 1
    plug_min_diameter_m: float = 0.003
    skin_m: float = 0.0015
    fat_thickness_m: float = 0.010
    fat_hu: float = -100.0
    table_hu: float = 200.0
    table_thickness_m: float = 0.008
    table_half_width_m: float = 0.22
    table_gap_m: float = 0.002
    """Air between the body's most posterior point and the table top (m)."""
    emphysema_fraction: float = 0.0
    """Fraction of the lung volume destroyed by emphysema, 0–0.6 (the scan's low-attenuation
    area below -950 HU comes out lower: the blobs' edges are at partial volume)."""
    emphysema_hu: float = -985.0
    """Density of the destroyed parenchyma (HU): nearly air."""
    emphysema_scale_m: float = 0.004
    """Correlation length of the destroyed blobs (m)."""
    emphysema_upper_weight: float = 0.5
    """How much more the upper zones are destroyed: the blob field is tilted by this (in units
    of its amplitude) from the lungs' base to their apex."""

    def check(self) -> None:
        """Raise :class:`InputError` for values outside the supported ranges."""
        if not 0.5e-3 <= self.slice_thickness_m <= 3.0e-3:
            raise InputError(f"slice thickness {self.slice_thickness_m * 1e3:g} mm is outside "
                             "0.5–3 mm")
        if not 0.0 <= self.emphysema_fraction <= 0.6:
            raise InputError(f"emphysema fraction {self.emphysema_fraction:g} is outside 0–0.6")


@dataclass
class ClinicalRender:
    """Output of :func:`render_clinical`.

    Attributes
    ----------
    grid : VolumeGrid
        The scan's grid (in-plane pixel × slice thickness).
    hu : ndarray of int16, shape grid.shape_zyx
    lumen_mask : ndarray of bool
        Voxel centres inside the visible (not plugged) ground-truth lumen.
    labels : ndarray of uint8
        Lung labels (0 outside, 1 right, 2 left) at the voxel centres.
    truth_tree : AirwayTree
        The ground truth without the plugged branches.
    plugged : list of Branch
        The mucus-plugged branches (CT frame, m).
    """

    grid: VolumeGrid
    hu: np.ndarray
    lumen_mask: np.ndarray
    labels: np.ndarray
    truth_tree: AirwayTree
    plugged: list


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _perpendicular(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    v -= np.dot(v, direction) * direction
    return _unit(v)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * np.dot(axis, v) * (1 - c)


def choose_plugs(tree: AirwayTree, look: ClinicalAppearance,
                 rng: np.random.Generator) -> list[int]:
    """Ids of terminal branches (generation ≥ 4, diameter ≥ ``plug_min_diameter_m``) to plug."""
    if look.n_mucus_plugs <= 0:
        return []
    leaves = sorted(b.id for b in tree if not b.children and b.generation >= 4
                    and b.diameter >= look.plug_min_diameter_m)
    if len(leaves) < look.n_mucus_plugs:
        raise InputError("the phantom tree has too few wide terminal branches to plug")
    return sorted(int(i) for i in rng.choice(leaves, size=look.n_mucus_plugs, replace=False))


def vessel_segments(tree: AirwayTree, wall_thickness, look: ClinicalAppearance,
                    rng: np.random.Generator):
    """Capsule segments (p0, p1, r0, r1) of the arteries and veins beside the airways (m).

    Each branch of generation ≥ ``vessel_min_generation`` gets an artery touching its outer
    wall on a random side and a vein on the other side, ``vein_gap_m`` away.
    """
    p0, p1, r0, r1 = [], [], [], []
    for b in sorted(tree, key=lambda b: b.id):
        if b.generation < look.vessel_min_generation or len(b.points) < 2:
            continue
        u = b.direction
        side = _perpendicular(u, rng)
        outer = b.radii + wall_thickness(2 * b.radii)
        ra = b.radii * rng.uniform(*look.artery_radius_ratio)
        other = _rotate(side, u, rng.uniform(0.6, 1.4) * np.pi)
        rv = b.radii * rng.uniform(*look.vein_radius_ratio)
        gap = rng.uniform(*look.vein_gap_m)
        for w, r, off in ((side, ra, outer + ra), (other, rv, outer + rv + gap)):
            pts = b.points + off[:, None] * w[None, :]
            p0.append(pts[:-1]), p1.append(pts[1:]), r0.append(r[:-1]), r1.append(r[1:])
    if not p0:
        return np.empty((0, 3)), np.empty((0, 3)), np.empty(0), np.empty(0)
    return (np.vstack(p0), np.vstack(p1), np.concatenate(r0), np.concatenate(r1))


def _tubes(segments, grid: VolumeGrid, wall=None) -> tuple[np.ndarray, np.ndarray]:
    """Partial-volume fractions (uint8 × 255) of capsule segments: (inner, inner + wall)."""
    p0, p1, r0, r1 = segments
    w0 = np.zeros(len(r0)) if wall is None else wall(2 * r0)
    w1 = np.zeros(len(r1)) if wall is None else wall(2 * r1)
    inner = np.zeros(grid.shape_zyx, np.uint8)
    outer = np.zeros(grid.shape_zyx, np.uint8)
    mask = np.zeros(grid.shape_zyx, bool)
    spacing = np.asarray(grid.spacing_m, float)
    _rasterise_capsules(np.ascontiguousarray(p0, float), np.ascontiguousarray(p1, float),
                        np.asarray(r0, float), np.asarray(r1, float), np.asarray(w0, float),
                        np.asarray(w1, float), np.asarray(grid.origin_m, float), spacing,
                        float(spacing[:2].mean()), inner, outer, mask)
    return inner, outer


def _segments_of(branches: list[Branch]):
    return (np.vstack([b.points[:-1] for b in branches]), np.vstack([b.points[1:] for b in branches]),
            np.concatenate([b.radii[:-1] for b in branches]),
            np.concatenate([b.radii[1:] for b in branches]))


def clinical_grids(top_z: float, bottom_z: float, spacing_m: float, look: ClinicalAppearance,
                   body_center_m, body_semi_axes_m, margin_m: float):
    """The scan grid and the fine rendering grid (CT frame, m).

    The scan covers the body and the table in x/y (plus ``margin_m``) and ``top_z`` down to
    ``bottom_z`` in slices of the thickness; the fine grid has the same x/y and a z step of
    thickness / ceil(thickness / spacing), extended by three profile sigmas below and above.
    """
    cx, cy = body_center_m
    a, b = body_semi_axes_m
    x0, x1 = cx - a - margin_m, cx + a + margin_m
    y0 = cy - b - margin_m
    y1 = cy + b + look.table_gap_m + look.table_thickness_m + margin_m
    nx = int(np.ceil((x1 - x0) / spacing_m)) + 1
    ny = int(np.ceil((y1 - y0) / spacing_m)) + 1
    t = look.slice_thickness_m
    nz = int(np.ceil((top_z - bottom_z) / t)) + 1
    scan = VolumeGrid((cx - (nx - 1) / 2 * spacing_m, y0, top_z - (nz - 1) * t),
                      (spacing_m, spacing_m, t), (nx, ny, nz))
    sub = int(np.ceil(t / spacing_m - 1e-9))
    dz = t / sub
    pad = int(np.ceil(3 * (t / FWHM_PER_SIGMA) / dz)) + 1
    fine = VolumeGrid((scan.origin_m[0], scan.origin_m[1], scan.origin_m[2] - pad * dz),
                      (spacing_m, spacing_m, dz), (nx, ny, (nz - 1) * sub + 1 + 2 * pad))
    return scan, fine, sub, pad


def _smooth_field(shape, scale_vox, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field of unit amplitude (max |value| = 1), float32 of ``shape``."""
    coarse = [max(int(np.ceil(n / max(s, 1.0))) + 2, 2) for n, s in zip(shape, scale_vox)]
    field = rng.uniform(-1.0, 1.0, size=coarse)
    zoom = [n / c for n, c in zip(shape, coarse)]
    out = ndimage.zoom(field, zoom, order=3, mode="nearest")[:shape[0], :shape[1], :shape[2]]
    out = np.pad(out, [(0, n - s) for n, s in zip(shape, out.shape)], mode="edge")
    return (out / max(np.abs(out).max(), 1e-6)).astype(np.float32)


def emphysema_blobs(labels: np.ndarray, fine: VolumeGrid, look: ClinicalAppearance,
                    rng: np.random.Generator) -> np.ndarray:
    """Where the parenchyma is destroyed (bool, the fine grid's z, y, x): the lung voxels (of
    ``labels``) where a smooth random field of correlation length ``look.emphysema_scale_m``,
    tilted towards the apex by ``look.emphysema_upper_weight``, is above the quantile that
    leaves ``look.emphysema_fraction`` of the lung destroyed."""
    lung = labels > 0
    if look.emphysema_fraction <= 0 or not lung.any():
        return np.zeros(labels.shape, bool)
    field = _smooth_field(labels.shape, [look.emphysema_scale_m / s
                                         for s in fine.spacing_m[::-1]], rng)
    k = np.flatnonzero(lung.any(axis=(1, 2)))
    z = np.zeros(labels.shape[0], np.float32)  # 0 at the lungs' base, 1 at their apex (+z up)
    z[k[0]:k[-1] + 1] = np.linspace(0.0, 1.0, k[-1] - k[0] + 1, dtype=np.float32)
    field += np.float32(look.emphysema_upper_weight) * z[:, None, None]
    threshold = np.quantile(field[lung][::7], 1.0 - look.emphysema_fraction)
    return lung & (field > threshold)


def _correlated_noise(shape2d, sigma_vox: float, std: float, rng: np.random.Generator):
    """In-plane correlated Gaussian noise of the given std (HU), float32."""
    white = rng.standard_normal(shape2d, dtype=np.float32)
    if sigma_vox <= 0:
        return std * white
    delta = np.zeros((int(8 * sigma_vox) * 2 + 1,) * 2, np.float32)
    delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1.0
    gain = float(np.sqrt((ndimage.gaussian_filter(delta, sigma_vox) ** 2).sum()))
    return ndimage.gaussian_filter(white, sigma_vox) * np.float32(std / gain)


def blur_to_scan(hu: np.ndarray, psf_sigma_px: float, thickness_m: float, dz_m: float) -> None:
    """Blur a rendering on the fine grid (z, y, x) in place as the scanner does: in-plane by
    the point spread (Gaussian of ``psf_sigma_px`` pixels), along z by the slice sensitivity
    profile alone — a Gaussian whose full width at half maximum is the nominal
    ``thickness_m``, as measured on scanners (the measured profile holds the z point spread);
    ``dz_m`` is the fine grid's z step."""
    z_sigma = thickness_m / FWHM_PER_SIGMA / dz_m
    ndimage.gaussian_filter(hu, (z_sigma, psf_sigma_px, psf_sigma_px), output=hu, mode="nearest",
                            truncate=3.0)


def render_clinical(config, tree: AirwayTree, nodules: list[Nodule], lungs: LungModel,
                    rng: np.random.Generator) -> ClinicalRender:
    """Render a phantom's anatomy as a clinical CT (see the module docstring).

    Parameters
    ----------
    config : PhantomConfig
        With ``config.clinical`` set (a :class:`ClinicalAppearance`).
    tree, nodules, lungs
        The ground-truth anatomy (CT frame, m).
    rng : numpy.random.Generator
        Seeded source of every random choice (plugs, vessels, noise).
    """
    look: ClinicalAppearance = config.clinical
    look.check()
    plugged_ids = choose_plugs(tree, look, rng)
    visible = AirwayTree([b for b in tree if b.id not in plugged_ids])
    plugged = [tree[i] for i in plugged_ids]
    bottom = lungs.bounds()[0][2] - config.margin_m
    scan, fine, sub, pad = clinical_grids(float(tree.trachea.start[2]), bottom, config.spacing_m,
                                          look, config.body_center_m, config.body_semi_axes_m,
                                          config.margin_m)
    lumen, tissue, _ = rasterise_airways(visible, fine, config.wall_thickness)
    rasterise_nodules(nodules, fine, tissue)
    mucus = (_tubes(_segments_of(plugged), fine, config.wall_thickness)[1] if plugged
             else np.zeros(fine.shape_zyx, np.uint8))
    segments = vessel_segments(visible, config.wall_thickness, look, rng)
    vessels = (_tubes(segments, fine)[0] if len(segments[0])
               else np.zeros(fine.shape_zyx, np.uint8))
    labels = lung_labels(lungs, fine)
    destroyed = emphysema_blobs(labels, fine, look, rng)
    x, y = fine.axis(0), fine.axis(1)
    cx, cy = config.body_center_m
    a, b = config.body_semi_axes_m
    rho = np.sqrt(((x[None, :] - cx) / a) ** 2 + ((y[:, None] - cy) / b) ** 2)
    depth = (1.0 - rho) * min(a, b)  # approximate depth below the skin (m)
    background = np.full(rho.shape, look.outside_air_hu, np.float32)
    table = ((y[:, None] >= cy + b + look.table_gap_m)
             & (y[:, None] <= cy + b + look.table_gap_m + look.table_thickness_m)
             & (np.abs(x[None, :] - cx) <= look.table_half_width_m))
    background[np.broadcast_to(table, rho.shape)] = look.table_hu
    background[depth >= 0] = config.hu_tissue
    background[(depth >= look.skin_m) & (depth < look.skin_m + look.fat_thickness_m)] = look.fat_hu
    lung_hu = (config.hu_lung + look.lung_gradient_hu_per_m * (y - cy)).astype(np.float32)
    drift = _smooth_field(fine.shape_zyx, [look.air_variation_scale_m / s
                                           for s in fine.spacing_m[::-1]], rng)
    hu = np.empty(fine.shape_zyx, np.float32)
    for k0 in range(0, fine.shape_zyx[0], _SLAB):
        k1 = min(k0 + _SLAB, fine.shape_zyx[0])
        f_l = lumen[k0:k1].astype(np.float32) / 255
        f_t = np.maximum(tissue[k0:k1], lumen[k0:k1]).astype(np.float32) / 255
        f_m = mucus[k0:k1].astype(np.float32) / 255
        f_v = vessels[k0:k1].astype(np.float32) / 255
        base = np.where(labels[k0:k1] > 0, lung_hu[None, :, None], background[None])
        base[destroyed[k0:k1]] = look.emphysema_hu
        base = f_m * look.mucus_hu + (1 - f_m) * (f_v * look.vessel_hu + (1 - f_v) * base)
        hu[k0:k1] = (f_l * config.hu_air + (f_t - f_l) * config.hu_tissue + (1 - f_t) * base
                     + look.air_variation_hu * drift[k0:k1])
    del lumen, tissue, mucus, vessels, labels, drift, destroyed
    blur_to_scan(hu, config.blur_sigma_vox, look.slice_thickness_m, fine.spacing_m[2])
    picked = hu[pad:pad + (scan.size[2] - 1) * sub + 1:sub]
    out = np.empty(scan.shape_zyx, np.int16)
    for k in range(scan.shape_zyx[0]):
        slab = picked[k] + _correlated_noise(picked[k].shape, look.noise_correlation_vox,
                                             config.noise_hu, rng)
        out[k] = np.clip(np.rint(slab), -32768, 32767)
    del hu, picked
    _, _, mask = rasterise_airways(visible, scan, config.wall_thickness)
    return ClinicalRender(scan, out, mask, lung_labels(lungs, scan), visible, plugged)
