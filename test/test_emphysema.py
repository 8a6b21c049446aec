"""Emphysema in the scan: the low-attenuation area is measured on the lungs, and on a scan with
emphysema the top-hat refinement, which takes destroyed parenchyma against an airway wall for a
small airway, does not run (:func:`bronchonav.airway.segment.segment_airways`).

The scan is the clinical phantom preset with a fifth of the lung destroyed
(:class:`bronchonav.ct.clinical.ClinicalAppearance`), rendered at 1 mm voxels; the expectation
is its ground-truth lumen."""

import numpy as np
import pytest
import SimpleITK as sitk

from bronchonav.airway.segment import SegmentationParams, low_attenuation_area, segment_airways
from bronchonav.ct.phantom import make_phantom, phantom_config


def test_low_attenuation_area_of_a_known_lung():
    """A body (soft tissue) in air holding a lung of -850 HU, four slices in every ten of it at
    -990 HU, and an airway tube at -1000 HU given as the airways: the area is 4/10 of the lung,
    whatever the air around the body and the airway."""
    hu = np.full((60, 40, 40), -1000.0, np.float32)
    hu[:, 4:36, 4:36] = 30.0                       # the body
    hu[:, 8:32, 8:32] = -850.0                     # the lung
    hu[np.arange(60) % 10 < 4, 8:32, 8:32] = -990.0
    airways = np.zeros(hu.shape, bool)
    airways[:, 18:22, 18:22] = True
    hu[airways] = -1000.0
    assert low_attenuation_area(hu, airways, -950.0) == pytest.approx(0.4, abs=1e-12)
    assert low_attenuation_area(hu, airways, -1100.0) == 0.0


@pytest.fixture(scope="module")
def emphysema():
    config = phantom_config("clinical", 0)
    config.spacing_m = 1.0e-3
    config.clinical.emphysema_fraction = 0.2
    return make_phantom(config)


def _outside_truth(segmentation, phantom) -> float:
    """Segmented volume outside the true lumen, as a fraction of the true lumen's volume."""
    mask = segmentation.array()
    return float((mask & ~phantom.lumen_mask).sum() / phantom.lumen_mask.sum())


def test_with_emphysema_the_top_hat_refinement_does_not_leak(emphysema):
    seg = segment_airways(emphysema.image)
    assert seg.low_attenuation > SegmentationParams().emphysema_max_laa
    assert seg.refined_volume == 0.0
    outside = _outside_truth(seg, emphysema)
    assert outside < 0.005
    # the airways are still found beyond the region growing: the tubular refinement runs
    assert seg.tubular is not None and seg.tubular.added_volume > 0
    # with the refinement forced on, it leaks into the destroyed parenchyma
    leaky = segment_airways(emphysema.image, SegmentationParams(emphysema_max_laa=1.0))
    assert leaky.refined_volume > 0 and _outside_truth(leaky, emphysema) > max(3 * outside, 0.01)
