"""A scan that cuts the trachea: chest CTs often start at the lung apices, a few centimetres
above the carina, where the apical bronchi end higher than the cut trachea. The tree must still
be rooted at the trachea (:func:`bronchonav.airway.centerline.root_end`), or every generation
and lobe label below it is wrong. The default phantom with its top 80 mm removed keeps 35 mm of
trachea, below the ends of the upper lobes' apical bronchi; the truth is the phantom's tree."""

import numpy as np
import pytest

from bronchonav.airway.build import build_map
from bronchonav.airway.centerline import root_end
from bronchonav.airway.metrics import lobe_agreement
from bronchonav.ct.phantom import make_phantom, phantom_config


def test_the_root_is_the_widest_ends_top_not_the_highest_end():
    z = np.array([0.030, 0.050, 0.045, -0.020])      # m
    radius = np.array([8.0, 1.5, 1.2, 2.0])          # mm: a trachea end and bronchi ends
    assert root_end(np.arange(4), z, radius) == 0
    # ends alike in width: the most superior (the rule of a scan whose trachea is whole)
    assert root_end(np.array([1, 2, 3]), z, radius) == 1


@pytest.fixture(scope="module")
def cut():
    phantom = make_phantom(phantom_config("default", 0))
    keep = phantom.image.GetSize()[2] - 80                 # 1 mm slices, index k grows with +z
    return phantom, phantom.image[:, :, :keep]


def test_a_scan_that_cuts_the_trachea_is_rooted_in_it(cut):
    phantom, image = cut
    z_top = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))[2] * 1e-3
    trachea = phantom.tree.trachea
    apical_ends = [b.end[2] for b in phantom.tree if not b.children]
    assert trachea.end[2] + 0.02 < z_top < max(apical_ends)  # the case: bronchi end above the cut
    tree = build_map(image, "cut", {"kind": "test"}).airway_map.tree
    root = tree.trachea
    # the root runs down the true trachea to the carina
    _, nearest = phantom.tree.nearest(root.points)
    labels = phantom.tree.samples().branch_ids[np.atleast_1d(nearest)]
    assert np.mean(labels == trachea.id) > 0.9
    assert np.linalg.norm(root.end - trachea.end) < 0.005
    assert [tree[c].generation for c in root.children] == [1, 1]
    assert lobe_agreement(tree, phantom.tree) >= 0.95
