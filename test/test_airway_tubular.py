"""Thick slices and the dark-tube measure: near-isotropic resampling, Sato's line filter,
and segmentation of a thick-slice scan returned on the scan's own slices."""

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter1d

from bronchonav.airway.metrics import airway_metrics
from bronchonav.airway.segment import SegmentationParams, segment_airways
from bronchonav.airway.tubular import dark_tubeness
from bronchonav.ct.resample import slice_factor, upsample_slices
from test_segmentation import binary_tree, synthetic_ct


def _grid(n=41, h=0.5):
    c = (np.arange(n) - n // 2) * h
    return np.meshgrid(c, c, c, indexing="ij")  # z, y, x in mm


def test_upsampled_slices_keep_the_originals_and_reproduce_a_cubic_exactly_inside():
    z = np.arange(12, dtype=float)
    vol = (0.5 * z + 0.02 * z ** 3)[:, None, None] * np.ones((1, 3, 2))
    fine = upsample_slices(vol, 3)
    assert fine.shape == (34, 3, 2)
    assert np.array_equal(fine[::3], vol.astype(np.float32))
    # Catmull-Rom reproduces quadratics exactly; a cubic within its third difference
    zf = np.arange(34) / 3.0
    inner = (zf > 1) & (zf < 10)
    expect = 0.5 * zf + 0.02 * zf ** 3
    assert np.max(np.abs(fine[inner, 0, 0] - expect[inner])) < 0.02 * 6 / 8
    assert slice_factor((0.7, 0.7, 2.5)) == 4 and slice_factor((0.7, 0.7, 1.0)) == 1


def test_dark_tube_stands_out_and_a_dark_sheet_does_not():
    zz, yy, xx = _grid()
    r = 1.5
    tube = np.where(xx ** 2 + yy ** 2 < r ** 2, -1000.0, -800.0)   # along z, contrast 200 HU
    sheet = np.where(np.abs(xx) < r, -1000.0, -800.0)              # a slab, not a tube
    t_tube = dark_tubeness(tube, (0.5, 0.5, 0.5), (0.7, 1.0, 1.4))
    t_sheet = dark_tubeness(sheet, (0.5, 0.5, 0.5), (0.7, 1.0, 1.4))
    c = 20
    # on the axis the measure is a good part of the 200 HU contrast; a sheet has l2 ~ 0
    assert 40.0 < t_tube[c, c, c] < 200.0
    assert t_sheet[c, c, c] < 0.05 * t_tube[c, c, c]
    # only the voxels asked for are evaluated, with the same value
    where = np.zeros(tube.shape, bool)
    where[c, c, c] = True
    only = dark_tubeness(tube, (0.5, 0.5, 0.5), (0.7, 1.0, 1.4), where=where)
    assert only[c, c, c] == t_tube[c, c, c] and np.count_nonzero(only) == 1


def test_anisotropic_spacing_is_taken_in_mm():
    # the same tube sampled with 1 mm slices along its axis gives the same measure on the axis
    zz, yy, xx = _grid()
    tube = np.where(xx ** 2 + yy ** 2 < 1.5 ** 2, -1000.0, -800.0)
    iso = dark_tubeness(tube, (0.5, 0.5, 0.5), (1.0,))[20, 20, 20]
    thick = dark_tubeness(tube[::2], (0.5, 0.5, 1.0), (1.0,))[10, 20, 20]
    assert abs(thick - iso) < 0.05 * iso


def test_thick_slice_scan_is_segmented_on_its_own_slices():
    tree = binary_tree(depth=2)
    img, _ = synthetic_ct(tree, spacing=0.8, noise=15.0)
    # 2.4 mm slices with a Gaussian slice profile of that FWHM
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr = gaussian_filter1d(arr, 2.4 / 2.3548 / 0.8, axis=0)[::3]
    thick = sitk.GetImageFromArray(np.rint(arr).astype(np.int16))
    thick.SetSpacing((0.8, 0.8, 2.4))
    thick.SetOrigin(img.GetOrigin())
    seg = segment_airways(thick)
    assert seg.mask.GetSize() == thick.GetSize()
    assert seg.mask.GetSpacing() == thick.GetSpacing()
    # truth on the thick grid: voxel centres inside the lumen (every third fine slice)
    _, fine_lumen = synthetic_ct(tree, spacing=0.8, noise=15.0)
    lumen = fine_lumen[::3]
    m = airway_metrics(seg.array(), lumen, tree, thick)
    assert m.td > 0.85 and m.fpr < 0.05
    assert seg.tubular is not None and not seg.tubular.rejected


def test_a_tubular_refinement_that_grows_too_much_is_dropped():
    """The stage adds a few voxels to this tree; allowed no growth it is a leak, adds nothing
    and says so."""
    tree = binary_tree(depth=2)
    img, _ = synthetic_ct(tree, spacing=1.0, noise=25.0)
    free = segment_airways(img)
    assert free.tubular.added_volume > 0 and not free.tubular.rejected
    without = segment_airways(img, SegmentationParams(tubular=False)).array()
    seg = segment_airways(img, SegmentationParams(tube_max_growth=0.0))
    assert seg.tubular.rejected and seg.tubular.added_volume == 0.0
    assert np.array_equal(seg.array(), without)
