"""ATM'22 metrics on hand-built cases whose answers are counted by hand."""

import numpy as np
import pytest
import SimpleITK as sitk

from bronchonav.airway.metrics import (airway_metrics, bifurcation_error, centerline_error,
                                      radius_error, rasterise_centerlines)
from bronchonav.airway.tree import AirwayTree, Branch

SHAPE = (9, 9, 30)  # k, j, i; 1 mm voxels, identity direction, origin 0


def _grid():
    img = sitk.Image(SHAPE[2], SHAPE[1], SHAPE[0], sitk.sitkUInt8)
    img.SetSpacing((1.0, 1.0, 1.0))
    return img


def _p(i, j=4, k=4):
    """CT point (m) of voxel (k, j, i) on the 1 mm grid."""
    return np.array([i, j, k], dtype=float) * 1e-3


def _gt_tree():
    """Two branches along x at (j, k) = (4, 4): A from i=2 to i=11, B from i=11 to i=20.

    Rasterised: A covers voxels i = 2..11 (10 voxels), B covers i = 11..20 (10 voxels), the
    bifurcation voxel i = 11 is shared: 19 distinct skeleton voxels.
    """
    a = Branch(0, None, 0, [_p(2), _p(11)], [1e-3, 1e-3])
    b = Branch(1, 0, 1, [_p(11), _p(20)], [1e-3, 1e-3])
    return AirwayTree([a, b])


def _tube(i0, i1, half=1):
    m = np.zeros(SHAPE, bool)
    m[4 - half:4 + half + 1, 4 - half:4 + half + 1, i0:i1 + 1] = True
    return m


def test_rasterised_gt_skeleton_is_the_hand_counted_voxels():
    vox, ids = rasterise_centerlines(_gt_tree(), _grid())
    assert sorted(vox[ids == 0][:, 2]) == list(range(2, 12))
    assert sorted(vox[ids == 1][:, 2]) == list(range(11, 21))
    assert np.all(vox[:, :2] == 4)


def test_prediction_covering_exactly_one_branch():
    gt_mask = _tube(2, 20)
    pred = _tube(2, 11)  # branch A, up to and including the bifurcation voxel
    m = airway_metrics(pred, gt_mask, _gt_tree(), _grid())
    assert m.bd == pytest.approx(0.5)  # A fully, B 1/10 of its voxels
    assert m.branches_detected == 1 and m.branches_gt == 2
    assert m.td == pytest.approx(10 / 19)
    assert m.precision == pytest.approx(1.0)
    assert m.dsc == pytest.approx(2 * 90 / (90 + 171))  # 3x3 cross-section x 10 and x 19 voxels
    assert m.fpr == 0.0


@pytest.mark.parametrize("last_i, detected", [(18, True), (17, False)])
def test_branch_detected_from_80_percent_of_its_skeleton(last_i, detected):
    # B's voxels 11..last_i inside: 8/10 (detected) or 7/10 (not detected)
    m = airway_metrics(_tube(2, last_i), _tube(2, 20), _gt_tree(), _grid())
    assert m.bd == pytest.approx(1.0 if detected else 0.5)
    assert m.td == pytest.approx((last_i - 1) / 19)


def test_leak_boundary_layer_and_disconnected_blob():
    gt_mask = _tube(2, 20)
    pred = gt_mask.copy()
    pred[6, 3:6, 2:21] = True  # one voxel layer touching the lumen: not a leak (57 voxels)
    pred[7:9, 2:7, 10:14] = True  # a leak beyond the boundary layer, attached: 40 voxels
    pred[0, 0, 25:28] = True  # a disconnected blob: not scored (largest component only)
    m = airway_metrics(pred, gt_mask, _gt_tree(), _grid())
    n_pred = 171 + 57 + 40
    assert m.precision == pytest.approx(171 / n_pred)
    assert m.fpr == pytest.approx(40 / n_pred)
    assert m.td == 1.0 and m.bd == 1.0
    assert m.dsc == pytest.approx(2 * 171 / (n_pred + 171))


def test_empty_prediction_scores_zero():
    m = airway_metrics(np.zeros(SHAPE, bool), _tube(2, 20), _gt_tree(), _grid())
    assert (m.td, m.bd, m.precision, m.fpr) == (0.0, 0.0, 0.0, 0.0)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        airway_metrics(np.zeros((3, 3, 3), bool), _tube(2, 20), _gt_tree(), _grid())


def test_centerline_error_of_a_shifted_tree():
    gt = _gt_tree()
    shift = np.array([0.0, 0.3e-3, 0.0])
    pred = AirwayTree([Branch(b.id, b.parent, b.generation, b.points + shift, b.radii) for b in gt])
    mean, p95 = centerline_error(pred, gt)
    assert mean == pytest.approx(0.3e-3, abs=1e-6)
    assert p95 == pytest.approx(0.3e-3, abs=1e-6)
    m = airway_metrics(_tube(2, 20), _tube(2, 20), gt, _grid(), pred_tree=pred)
    assert m.centerline_error_mean_m == pytest.approx(0.3e-3, abs=1e-6)


def test_radius_error_at_matched_points():
    """Branch A 0.2 mm too wide and B 0.5 mm too narrow along their whole length; a point 0.6 mm
    off the GT centerline (more than half the 1 mm GT radius) and the junction zones (within
    one GT radius of a branch end) are not matched."""
    gt = _gt_tree()
    a = Branch(0, None, 0, [_p(2), _p(11)], [1.2e-3, 1.2e-3])
    b = Branch(1, 0, 1, [_p(11), _p(20)], [0.5e-3, 0.5e-3])
    err = radius_error(AirwayTree([a, b]), gt)
    # matched: A's samples at 1 < s < 8 mm, B's at 1 < s < 8 mm (0.5 mm steps), 13 each
    assert np.count_nonzero(np.isclose(err, 0.2e-3)) == 13
    assert np.count_nonzero(np.isclose(err, -0.5e-3)) == 13
    assert len(err) == 26
    off = Branch(0, None, 0, [_p(4, 4.6), _p(8, 4.6)], [1e-3, 1e-3])
    assert len(radius_error(AirwayTree([off]), gt)) == 0
    m = airway_metrics(_tube(2, 20), _tube(2, 20), gt, _grid(), pred_tree=AirwayTree([a, b]))
    assert m.radius_error_median_m == pytest.approx(-0.15e-3, abs=1e-9)  # between the halves
    assert m.radius_error_p10_m == pytest.approx(-0.5e-3, abs=1e-9)
    assert m.radius_error_p90_m == pytest.approx(0.2e-3, abs=1e-9)
    assert np.isnan(airway_metrics(_tube(2, 20), _tube(2, 20), gt, _grid()).radius_error_median_m)


def test_bifurcation_error_is_the_distance_to_the_nearest_true_bifurcation():
    """The truth bifurcates at i = 11; a tree split 3 mm further down (i = 14) is 3 mm off, one
    that also splits a child at i = 17 is 3 and 6 mm off; a tree without a split has none."""
    gt = _gt_tree()
    gt = AirwayTree(list(gt) + [Branch(2, 0, 1, [_p(11), _p(11, 8)], [1e-3, 1e-3])])
    late = AirwayTree([Branch(0, None, 0, [_p(2), _p(14)], [1e-3] * 2),
                       Branch(1, 0, 1, [_p(14), _p(17)], [1e-3] * 2),
                       Branch(2, 0, 1, [_p(14), _p(14, 8)], [1e-3] * 2),
                       Branch(3, 1, 2, [_p(17), _p(20)], [1e-3] * 2),
                       Branch(4, 1, 2, [_p(17), _p(17, 0)], [1e-3] * 2)])
    assert sorted(bifurcation_error(late, gt)) == pytest.approx([3e-3, 6e-3])
    m = airway_metrics(_tube(2, 20), _tube(2, 20), gt, _grid(), pred_tree=late)
    assert m.bifurcation_error_median_m == pytest.approx(4.5e-3)
    assert len(bifurcation_error(AirwayTree([Branch(0, None, 0, [_p(2), _p(20)], [1e-3] * 2)]),
                                 gt)) == 0
