"""Thick slices on the clinical preset: why small airways near the slice plane are lost, and a
refinement that does not open into the parenchyma there.

Rendered at a reduced size (1 mm pixels, 2.5 mm slices), as in test_clinical_phantom.py.
"""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from bronchonav.airway.metrics import airway_metrics
from bronchonav.airway.segment import ScanLevels, SegmentationParams, adapt_to_scan, segment_airways
from bronchonav.ct.phantom import make_phantom, phantom_config


def _clinical(noise_hu):
    config = phantom_config("clinical", 0, slice_thickness_m=2.5e-3)
    config.spacing_m = 1.0e-3
    config.noise_hu = noise_hu
    return make_phantom(config)


def test_thick_slices_bound_the_refinement_by_the_parenchyma():
    params = SegmentationParams()
    quiet = ScanLevels(air_hu=-960.0, noise_hu=10.0, lung_hu=-840.0)  # 3 noise stds < 45 HU
    assert adapt_to_scan(params, quiet).refine_max_hu == params.refine_max_hu
    assert adapt_to_scan(params, quiet, thick_slices=True).refine_max_hu == pytest.approx(-795.0)
    noisy = ScanLevels(air_hu=-960.0, noise_hu=30.0, lung_hu=-840.0)  # 3 stds = 90 HU
    for thick in (False, True):
        out = adapt_to_scan(params, noisy, thick_slices=thick)
        assert out.refine_max_hu == pytest.approx(-750.0)
        assert out.tophat_min_hu == pytest.approx(90.0)


def test_small_airways_near_the_slice_plane_read_brighter_than_the_parenchyma():
    """Noise-free, a 2.5-3.5 mm airway within 30 degrees of the slice plane is averaged by the
    2.5 mm slice profile with its walls and the vessels beside it: its centreline reads brighter
    than the parenchyma around it, while wide lobar and segmental airways along z stay much
    darker."""
    p = _clinical(0.0)
    ct = sitk.GetArrayFromImage(p.image).astype(float)
    lungs = sitk.GetArrayFromImage(p.lung_labels) > 0
    parenchyma = lungs & (ct > -950) & (ct < -600)
    parenchyma &= ~ndimage.binary_dilation(p.lumen_mask, iterations=2)

    def contrast(b):
        n = len(b.points)
        mid = b.points[n // 4: n - n // 4] if n >= 4 else b.points
        idx = p.grid.index_of(mid)[:, ::-1]  # (k, j, i)
        centre = np.median(ndimage.map_coordinates(ct, idx.T, order=1))
        c = np.rint(p.grid.index_of(b.points[n // 2][None])[0][::-1]).astype(int)
        box = tuple(slice(max(v - q, 0), v + q + 1) for v, q in zip(c, (3, 6, 6)))
        return centre - np.median(ct[box][parenchyma[box]])

    flat = [contrast(b) for b in p.tree if 2.5e-3 <= b.diameter < 3.5e-3
            and abs(b.direction[2]) < np.sin(np.radians(30))]
    upright = [contrast(b) for b in p.tree if b.diameter >= 4.5e-3 and b.generation >= 2
               and abs(b.direction[2]) > np.cos(np.radians(30))]
    assert len(flat) >= 20 and len(upright) >= 5
    assert np.median(flat) > 0
    assert np.median(upright) < -100


@pytest.fixture(scope="module")
def standard_dose():
    """2.5 mm slices with the 25 HU noise of a standard-dose reconstruction, segmented."""
    p = _clinical(25.0)
    return p, segment_airways(p.image)


def test_thick_slices_with_standard_dose_noise_do_not_leak(standard_dose):
    """2.5 mm slices with 25 HU noise: the refinement stays out of the parenchyma pockets."""
    p, seg = standard_dose
    m = airway_metrics(seg.array(), p.lumen_mask, p.tree, p.image)
    assert m.fpr <= 0.02
    assert m.td >= 0.6


def test_tracking_from_the_branch_ends_adds_airways(standard_dose):
    """What the tracking from the terminal branches adds lies mostly in the truth lumen (or
    one voxel beside it), and it adds truth centreline."""
    p, seg = standard_dose
    without = segment_airways(p.image, SegmentationParams(track=False)).array()
    added = seg.array() & ~without
    assert seg.tracking is not None and seg.tracking.tracks >= 5
    assert added.sum() >= 100
    assert ndimage.binary_dilation(p.lumen_mask)[added].mean() >= 0.5
    gained = airway_metrics(seg.array(), p.lumen_mask, p.tree, p.image).td
    assert gained > airway_metrics(without, p.lumen_mask, p.tree, p.image).td
