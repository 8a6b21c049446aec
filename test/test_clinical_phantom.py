"""The clinical phantom preset: it looks like a clinical chest CT, with its ground truth.

Rendered once per module at a reduced size (1 mm pixels, 2.5 mm slices; about 10 s).
"""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from bronchonav.ct.clinical import ClinicalAppearance, emphysema_blobs
from bronchonav.ct.phantom import make_phantom, phantom_config
from bronchonav.ct.render import VolumeGrid
from bronchonav.errors import InputError


@pytest.fixture(scope="module")
def clinical():
    config = phantom_config("clinical", 0, slice_thickness_m=2.5e-3)
    config.spacing_m = 1.0e-3
    return make_phantom(config)


def _ct(p):
    return sitk.GetArrayFromImage(p.image).astype(float)


def test_grid_is_thick_slices_with_the_truth_on_it(clinical):
    assert clinical.image.GetSpacing() == pytest.approx((1.0, 1.0, 2.5))
    assert clinical.lumen_mask.shape == sitk.GetArrayFromImage(clinical.image).shape
    assert sitk.GetArrayFromImage(clinical.lung_labels).shape == clinical.lumen_mask.shape
    # the top slice passes through the trachea's first centreline point
    top = clinical.grid.axis(2)[-1]
    assert top == pytest.approx(clinical.tree.trachea.start[2])


def test_air_noise_and_density_gradient(clinical):
    ct = _ct(clinical)
    # air in the trachea: brighter than -1000 HU (-960 HU preset, blur, drift)
    tr = clinical.tree.trachea
    idx = np.rint(clinical.grid.index_of(tr.points[len(tr.points) // 3:2 * len(tr.points) // 3]))
    core = ct[idx[:, 2].astype(int), idx[:, 1].astype(int), idx[:, 0].astype(int)]
    assert -1000 < np.median(core) < -900
    # noise: std 30-60 HU in the outside air, correlated between neighbouring pixels
    k = ct.shape[0] // 2
    patch = ct[k, 1:8, 5:-5]  # air in front of the body, first rows of the scan
    resid = patch - ndimage.uniform_filter(patch, 7, mode="nearest")
    assert 25 < patch.std() < 70
    corr = np.corrcoef(resid[:, :-1].ravel(), resid[:, 1:].ravel())[0, 1]
    assert corr > 0.2
    # dependent density: posterior parenchyma denser than anterior (same lung, same slices)
    labels = sitk.GetArrayFromImage(clinical.lung_labels)
    lung = (labels > 0) & ~ndimage.binary_dilation(clinical.lumen_mask, iterations=4)
    lung &= ct < -500  # parenchyma, not vessels or walls
    y = clinical.grid.axis(1)[None, :, None] * np.ones_like(ct)
    ys = y[lung]
    front = np.median(ct[lung][ys < np.percentile(ys, 20)])
    back = np.median(ct[lung][ys > np.percentile(ys, 80)])
    assert back - front > 30


def test_mucus_plug_is_not_in_the_truth_and_is_solid(clinical):
    assert len(clinical.plugged) == 1
    plug = clinical.plugged[0]
    assert plug.id not in clinical.tree
    mid = plug.points[len(plug.points) // 2]
    i, j, k = np.rint(clinical.grid.index_of(mid)[0]).astype(int)
    assert _ct(clinical)[k, j, i] > -300
    assert not clinical.lumen_mask[k, j, i]


def test_vessels_touch_airways_and_table_under_the_back(clinical):
    ct = _ct(clinical)
    # around lobar and smaller airways (outside the lumen, within 2 radii) there is blood:
    # bright voxels well above the parenchyma next to many airway centreline points
    hits = 0
    branches = [b for b in clinical.tree if b.generation >= 3 and b.diameter > 4e-3]
    for b in branches:
        p = b.points[len(b.points) // 2]
        r = b.radii[len(b.points) // 2]
        ring = p + np.array([[np.cos(a), np.sin(a), 0.0] for a in np.linspace(0, 2 * np.pi, 24)]) \
            * (2.0 * r + 1e-3)
        idx = np.rint(clinical.grid.index_of(ring)).astype(int)
        vals = ct[idx[:, 2], idx[:, 1], idx[:, 0]]
        hits += vals.max() > -300
    assert hits >= 0.7 * len(branches)
    # the table: a bright horizontal plate below (posterior to) the body, in every slice
    k = ct.shape[0] // 2
    row_max = np.array([np.median(ct[k, j, :]) for j in range(ct.shape[1])])
    assert row_max[-20:].max() > 100


def test_clinical_options_are_checked():
    with pytest.raises(InputError, match="slice thickness"):
        phantom_config("clinical", 0, slice_thickness_m=5e-3)
    with pytest.raises(InputError, match="emphysema fraction"):
        ClinicalAppearance(emphysema_fraction=0.7).check()
    with pytest.raises(InputError, match="emphysema fraction"):
        phantom_config("clinical", 0, emphysema_fraction=-0.1)
    with pytest.raises(InputError, match="pixel spacing"):
        phantom_config("clinical", 0, pixel_spacing_m=3e-3)
    with pytest.raises(InputError, match="clinical preset only"):
        phantom_config("default", 0, emphysema_fraction=0.2)
    with pytest.raises(InputError, match="seed"):
        phantom_config("clinical", -1)
    config = phantom_config("clinical", 3, slice_thickness_m=2.5e-3, pixel_spacing_m=0.5e-3,
                            emphysema_fraction=0.1)
    assert (config.seed, config.spacing_m) == (3, 0.5e-3)
    assert config.clinical.slice_thickness_m == 2.5e-3
    assert config.clinical.emphysema_fraction == 0.1


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_emphysema_destroys_the_asked_fraction_of_the_lung_upper_zones_most(fraction):
    """Emphysema blobs: the requested fraction of the lung (within the quantile's sampling),
    nothing outside it, more in the upper third than in the lower, blobs of several voxels
    (not salt noise), and nothing at all when the fraction is 0."""
    grid = VolumeGrid((0.0, 0.0, 0.0), (1e-3, 1e-3, 1e-3), (60, 50, 90))
    labels = np.zeros(grid.shape_zyx, np.uint8)
    labels[5:85, 5:45, 5:28] = 1  # right lung: a box of 80 slices (z up = head)
    labels[5:85, 5:45, 32:55] = 2
    look = ClinicalAppearance(emphysema_fraction=fraction)
    destroyed = emphysema_blobs(labels, grid, look, np.random.default_rng(0))
    lung = labels > 0
    assert not destroyed[~lung].any()
    assert destroyed[lung].mean() == pytest.approx(fraction, abs=0.01)
    lower, upper = destroyed[5:32][lung[5:32]].mean(), destroyed[58:85][lung[58:85]].mean()
    assert upper > 1.5 * lower
    _, n_blobs = ndimage.label(destroyed)
    assert destroyed.sum() / n_blobs > 8  # voxels per blob
    look.emphysema_fraction = 0.0
    assert not emphysema_blobs(labels, grid, look, np.random.default_rng(0)).any()


def _fwhm(profile: np.ndarray, step: float) -> float:
    """Full width at half maximum of a sampled Gaussian: a parabola through the logarithm of
    its three highest samples gives its sigma."""
    i = int(np.argmax(profile))
    a, b, c = np.log(profile[i - 1:i + 2])
    return 2.0 * np.sqrt(2.0 * np.log(2.0)) * step / np.sqrt(2.0 * b - a - c)


@pytest.mark.parametrize("thickness_m", [0.6e-3, 1.0e-3, 2.5e-3])
def test_the_slice_profile_is_the_nominal_thickness_at_half_maximum(thickness_m):
    # what the renderer does to a thin plate and a thin line of the fine grid (0.7 mm pixels,
    # z step thickness / ceil(thickness / 0.7 mm)): the nominal thickness is the z response's
    # full width at half maximum (as on a measured scanner); in-plane, the point spread
    from bronchonav.ct.clinical import blur_to_scan

    dz = thickness_m / np.ceil(thickness_m / 0.7e-3 - 1e-9)
    plate = np.zeros((61, 9, 9), np.float32)
    plate[30] = 1.0
    blur_to_scan(plate, 0.8, thickness_m, dz)
    assert _fwhm(plate[:, 4, 4].astype(float), dz) == pytest.approx(thickness_m, rel=0.02)
    line = np.zeros((9, 41, 41), np.float32)
    line[:, 20, :] = 1.0
    blur_to_scan(line, 0.8, thickness_m, dz)
    assert _fwhm(line[4, :, 20].astype(float), 1.0) == pytest.approx(2.3548 * 0.8, rel=0.02)
