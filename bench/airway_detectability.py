"""Which truth airways does extraction miss on the clinical preset, and is their signal there?

One command, JSON on stdout (progress on stderr)::

    .venv/bin/python bench/airway_detectability.py                  # 2.5 mm slices, seed 0
    .venv/bin/python bench/airway_detectability.py --slice-mm 1.0

The clinical phantom is rendered twice from the same seed: as shipped and without noise (the
random anatomy, vessels and drift are drawn before the noise, so both have the same anatomy).
The airways are segmented on the noisy scan (:func:`bronchonav.airway.segment.segment_airways`)
and every truth branch is scored as in ``airway_bench.py`` (detected: >= 80 % of its centerline
voxels in the largest component). Per class of lumen diameter and angle to the z axis the
report gives:

* ``missed`` / ``n``: branches missed;
* ``clean_lumen_minus_parenchyma_hu``: median over the class of the noise-free HU on the
  branch's centerline (ends trimmed by one radius) minus the median noise-free parenchyma within
  6 mm of the branch (voxels between -950 and -600 HU, 2 voxels away from any lumen). Positive:
  the lumen reads *brighter* than the parenchyma around it (partial volume with its walls and
  the vessels beside it), so no threshold can take it without the parenchyma.
* ``clean_crossing_minus_parenchyma_hu``: the best case on the scan's own slices: at every
  slice whose centre plane the branch's axis crosses, the darkest noise-free value within 1 mm
  in-plane of the crossing minus the parenchyma around; the median over the slices, then over
  the class. Against ``noise_hu`` it says how far a detector that looks at one slice at a time
  could see the airway.

``noise_hu`` is the std of (noisy - noise-free) in the lungs after the segmentation's 0.5 mm
Gaussian smoothing.

``template``: a straight tube template (mean on a coaxial shell on the wall minus mean on the
axis, median over 8 shell angles, averaged over 4, 6 or 9 mm of length), as a z-score against
the same template at random starts and directions in parenchyma more than 8 mm from the
segmentation. ``missed_children_z``: at the truth start of each missed branch that leaves
the segmentation, the best z within 10 degrees of its truth direction. ``clutter_z``: from every
end of the extracted tree (CT-only, as a tracker would start), the best z over a 75 degree cone
among the directions whose template lies more than 2.5 mm from every truth centerline (no
airway there). ``auc`` = P(missed child's z > clutter's z), and the fraction of missed
children above the 90th / 95th percentile of the clutter: what a tracker from the segmentation's
ends could add at that false-start rate.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from machine import emit, machine_info

DIAMETER_BINS_MM = (0.0, 2.5, 3.5, 4.5, 100.0)
TILT_BINS_DEG = (0.0, 30.0, 60.0, 90.01)
LENGTHS_MM = (4.0, 6.0, 9.0)
RADII_MM = (1.0, 1.25, 1.5, 1.75, 2.0)


def _sphere(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors (Fibonacci lattice) in array order (k, j, i)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5 ** 0.5) * i
    rho = np.sqrt(1.0 - z * z)
    return np.column_stack([z, rho * np.sin(phi), rho * np.cos(phi)])


class Template:
    """Straight tube template on a volume (positions in array mm: index times spacing)."""

    def __init__(self, hu: np.ndarray, mask: np.ndarray, spacing_kji: np.ndarray):
        self.hu, self.mask, self.h = hu, mask, np.asarray(spacing_kji, float)
        self.dirs = _sphere(1200)
        helper = np.where(np.abs(self.dirs[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
        e1 = np.cross(self.dirs, helper)
        self.e1 = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
        self.e2 = np.cross(self.dirs, self.e1)
        a = 2 * np.pi * np.arange(8) / 8
        self.cos, self.sin = np.cos(a), np.sin(a)
        self.null: dict = {}

    def _sample(self, q):
        idx = (q / self.h).reshape(-1, 3).T
        return ndimage.map_coordinates(self.hu, idx, order=1, mode="nearest",
                                       prefilter=False).reshape(q.shape[:-1])

    def raw(self, starts, which, radius, offset, length):
        """(contrast HU, axis HU, fraction of the axis in the mask, axis midpoints)."""
        s = offset + np.arange(0.0, length + 1e-9, 0.5)
        u = self.dirs[which]
        starts = np.broadcast_to(np.asarray(starts, float), u.shape)
        axis = starts[:, None] + s[None, :, None] * u[:, None]
        ring = (self.cos[:, None, None] * self.e1[which][None]
                + self.sin[:, None, None] * self.e2[which][None])
        shell = axis[None] + (radius + 0.2) * ring[:, :, None]
        a_hu = self._sample(axis).mean(axis=1)
        s_hu = self._sample(shell).mean(axis=2)
        idx = np.clip(np.rint(axis / self.h).astype(int), 0, np.array(self.hu.shape) - 1)
        inside = self.mask[idx[..., 0], idx[..., 1], idx[..., 2]].mean(axis=1)
        return np.median(s_hu, axis=0) - a_hu, a_hu, inside, axis[:, len(s) // 2]

    def calibrate(self, starts, rng, max_hu):
        for L in LENGTHS_MM:
            for r in RADII_MM:
                c, a, _, _ = self.raw(starts[rng.integers(len(starts), size=300)],
                                      rng.integers(len(self.dirs), size=300), r, 0.0, L)
                c = c[a < max_hu]
                self.null[(L, r)] = (float(c.mean()), float(c.std()))

    def z(self, start, which, radius, offset, max_hu):
        """Best z over the lengths per direction, and the midpoint of the best template."""
        r = min(RADII_MM, key=lambda x: abs(x - radius))
        best = np.full(len(which), -np.inf)
        mid = np.zeros((len(which), 3))
        for L in LENGTHS_MM:
            c, a, inside, m = self.raw(start, which, r, offset, L)
            mean, std = self.null[(L, r)]
            zl = np.where((a < max_hu) & (inside <= 0.25), (c - mean) / std, -np.inf)
            better = zl > best
            best[better], mid[better] = zl[better], m[better]
        return best, mid


def _crossing_contrast(clean: np.ndarray, parenchyma: np.ndarray, idx: np.ndarray,
                       spacing_kji: np.ndarray) -> float:
    """The airway's best case on the scan's own slices: at every slice whose centre plane its
    axis crosses, the darkest noise-free value within 1 mm (in-plane) of the crossing minus
    the median parenchyma within about 6 mm; the median over those slices (HU). ``idx``: the
    branch's centerline as fractional (k, j, i) indices."""
    values = []
    half = np.ceil(1.0 / spacing_kji[1:]).astype(int)
    around = np.ceil([2.0, 6.0, 6.0] / spacing_kji).astype(int)
    for k in range(int(np.ceil(idx[:, 0].min())), int(np.floor(idx[:, 0].max())) + 1):
        f = idx[:, 0] - k
        cross = np.flatnonzero(np.sign(f[:-1]) != np.sign(f[1:]))
        if len(cross):
            j = int(cross[0])
            p = idx[j] + f[j] / (f[j] - f[j + 1]) * (idx[j + 1] - idx[j])
        else:
            p = idx[int(np.argmin(np.abs(f)))]
        c = np.rint(p).astype(int)
        c[0] = k
        near = (k, *(slice(max(v - h, 0), v + h + 1) for v, h in zip(c[1:], half)))
        box = tuple(slice(max(v - h, 0), v + h + 1) for v, h in zip(c, around))
        local = clean[box][parenchyma[box]]
        if local.size >= 10 and clean[near].size:
            values.append(float(clean[near].min()) - float(np.median(local)))
    return float(np.median(values)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slice-mm", type=float, default=2.5)
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args()

    from pathlib import Path

    from bronchonav.airway.centerline import extract_tree
    from bronchonav.airway.metrics import largest_component, rasterise_centerlines
    from bronchonav.airway.segment import segment_airways
    from bronchonav.ct.io import ct_to_index, index_to_ct
    from bronchonav.ct.phantom import make_phantom, phantom_config

    t0 = time.perf_counter()
    print("  rendering the clinical phantom, with and without noise …", file=sys.stderr,
          flush=True)
    config = phantom_config("clinical", args.seed, slice_thickness_m=args.slice_mm * 1e-3)
    phantom = make_phantom(config)
    clean_config = phantom_config("clinical", args.seed, slice_thickness_m=args.slice_mm * 1e-3)
    clean_config.noise_hu = 0.0
    clean = sitk.GetArrayFromImage(make_phantom(clean_config).image).astype(np.float32)
    image, tree = phantom.image, phantom.tree
    noisy = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing_kji = np.array(image.GetSpacing())[::-1]
    print("  segmenting …", file=sys.stderr, flush=True)
    seg = segment_airways(image)
    pred = largest_component(seg.array())

    vox, ids = rasterise_centerlines(tree, image)
    hit = pred[tuple(vox.T)]
    detected = {b.id: float(hit[ids == b.id].mean()) >= 0.8 for b in tree}

    sigma = [0.5 / s for s in spacing_kji]
    lungs = sitk.GetArrayFromImage(phantom.lung_labels) > 0
    parenchyma = lungs & (clean > -950) & (clean < -600)
    parenchyma &= ~ndimage.binary_dilation(phantom.lumen_mask, iterations=2)
    residual = ndimage.gaussian_filter(noisy - clean, sigma)
    noise_hu = float(residual[lungs & (clean < -600)].std())

    def index_of(points_ct):
        return ct_to_index(image, points_ct)

    rows = []
    for b in tree:
        r_mm = b.mean_radius * 1e3
        pts = b.points
        seg_len = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        cum = np.concatenate([[0.0], np.cumsum(seg_len)]) * 1e3
        arc = np.arange(0.0, cum[-1], 0.25)
        arc = arc[(arc > r_mm) & (arc < cum[-1] - r_mm)] if cum[-1] > 2 * r_mm + 0.5 else arc
        p = np.column_stack([np.interp(arc, cum, pts[:, a]) for a in range(3)])
        centre = ndimage.map_coordinates(clean, index_of(p).T, order=1)
        mid = np.rint(index_of(pts[len(pts) // 2][None])[0]).astype(int)
        half = np.ceil(6.0 / spacing_kji).astype(int)
        box = tuple(slice(max(c - q, 0), c + q + 1) for c, q in zip(mid, half))
        local = clean[box][parenchyma[box]]
        lung_level = float(np.median(local)) if local.size else float("nan")
        tilt = float(np.degrees(np.arccos(min(abs(b.direction[2]), 1.0))))
        rows.append({"id": b.id, "detected": detected[b.id], "diameter_mm": 2 * r_mm,
                     "tilt_deg": tilt, "contrast": float(np.median(centre)) - lung_level,
                     "crossing": _crossing_contrast(clean, parenchyma, index_of(pts),
                                                    spacing_kji)})

    classes = []
    for d0, d1 in zip(DIAMETER_BINS_MM[:-1], DIAMETER_BINS_MM[1:]):
        for t0_, t1 in zip(TILT_BINS_DEG[:-1], TILT_BINS_DEG[1:]):
            sel = [r for r in rows if d0 <= r["diameter_mm"] < d1 and t0_ <= r["tilt_deg"] < t1]
            if not sel:
                continue
            classes.append({
                "diameter_mm": [d0, d1], "tilt_deg": [t0_, round(t1)], "n": len(sel),
                "missed": sum(not r["detected"] for r in sel),
                "clean_lumen_minus_parenchyma_hu": round(float(np.nanmedian(
                    [r["contrast"] for r in sel])), 1),
                "clean_crossing_minus_parenchyma_hu": round(float(np.nanmedian(
                    [r["crossing"] for r in sel])), 1)})
    missed = [r for r in rows if not r["detected"]]

    print("  tube-template separability …", file=sys.stderr, flush=True)
    hu = ndimage.gaussian_filter(noisy, sigma)
    lung_hu = float(np.median(hu[lungs & (clean > -950) & (clean < -600)][::7]))
    max_hu = 0.5 * (lung_hu - 500.0)
    tmpl = Template(hu, pred, spacing_kji)
    rng = np.random.default_rng(args.seed)
    far = ndimage.distance_transform_edt(~pred, sampling=spacing_kji) > 8.0
    starts = np.argwhere(far & lungs & (np.abs(hu - lung_hu) < 50.0))[::97] * spacing_kji
    tmpl.calibrate(starts, rng, max_hu)

    def q_of(points_ct):
        return index_of(points_ct) * spacing_kji

    def unit(v):
        return v / np.linalg.norm(v)

    cos10, cos75 = np.cos(np.radians(10.0)), np.cos(np.radians(75.0))
    child_z = []
    for r in missed:
        b = tree[r["id"]]
        if b.parent is None:
            continue
        parent = tree[b.parent]
        q0 = q_of(b.points[0])[0]
        u = unit(q_of(b.points[min(len(b.points) - 1, 6)])[0] - q0)
        near = np.flatnonzero(tmpl.dirs @ u >= cos10)
        z, _ = tmpl.z(q0, near, 0.8 * parent.mean_radius * 1e3, 0.8 * parent.mean_radius * 1e3,
                      max_hu)
        if np.isfinite(z).any():
            child_z.append(float(z.max()))
    extracted = extract_tree(seg.mask)
    clutter_z = []
    for b in extracted:
        if b.children or len(b.points) < 3:
            continue
        q = q_of(b.points)
        q0, axis = q[-1], unit(q[-1] - q[max(len(q) - 6, 0)])
        cone = np.flatnonzero(tmpl.dirs @ axis >= cos75)
        radius = 0.8 * float(np.median(b.radii[-5:])) * 1e3
        z, mid = tmpl.z(q0, cone, radius, radius, max_hu)
        mid_ct = index_to_ct(image, mid / spacing_kji)
        dist, _ = tree.nearest(mid_ct)
        z = z[dist > 2.5e-3]
        if np.isfinite(z).any():
            clutter_z.append(float(z.max()))
    child_z, clutter_z = np.array(child_z), np.array(clutter_z)
    auc = (float(np.mean(child_z[:, None] > clutter_z[None, :]))
           if len(child_z) and len(clutter_z) else float("nan"))

    def pct(a, q):
        return [round(float(v), 2) for v in np.percentile(a, q)] if len(a) else []

    report = {
        "benchmark": "airway_detectability",
        "machine": machine_info("SimpleITK"),
        "phantom": {"name": "clinical", "seed": args.seed, "slice_mm": args.slice_mm,
                    "noise_hu_preset": config.noise_hu},
        "branches": len(rows), "missed": len(missed),
        "noise_hu": round(noise_hu, 1),
        "classes": classes,
        "template": {
            "missed_children": len(child_z),
            "missed_children_z_p25_p50_p75": pct(child_z, [25, 50, 75]),
            "clutter_ends": len(clutter_z),
            "clutter_z_p50_p90_p95": pct(clutter_z, [50, 90, 95]),
            "auc": round(auc, 3),
            **{f"missed_children_above_clutter_p{q}":
               round(float(np.mean(child_z > np.percentile(clutter_z, q))), 3)
               if len(clutter_z) else None for q in (90, 95)},
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    emit(report, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
