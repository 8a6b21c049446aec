"""Lung mask of a chest CT, split into right and left from the scan's patient axes.

Frames and units
----------------
The CT is reoriented (losslessly) to LPS index order, so that the index ``i`` grows towards the
patient's left (+x of the CT frame) whatever the file's orientation; right and left are decided
from the CT frame's x coordinate (LPS, m), never from the array order of the file. The output
label image has the input's geometry: 0 outside, 1 right lung, 2 left lung (as the phantom's
lung labels).
"""

from __future__ import annotations

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bronchonav.airway.segment import outside_air
from bronchonav.ct.io import index_to_ct
from bronchonav.errors import CTError

RIGHT_LUNG = 1
LEFT_LUNG = 2

LUNG_MAX_HU = -400.0
"""Voxels darker than this (HU) inside the body are lung or airway."""
MIN_LUNG_VOLUME_M3 = 0.2e-3
"""A lung component must hold at least this volume (m^3)."""


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """Fill the holes (vessels, nodules, airway walls) of every axial slice."""
    out = np.empty_like(mask)
    for k in range(mask.shape[0]):
        out[k] = ndimage.binary_fill_holes(mask[k])
    return out


def segment_lungs(image: sitk.Image, airway_mask: sitk.Image) -> sitk.Image:
    """Right and left lung labels of a chest CT.

    Dark voxels (below :data:`LUNG_MAX_HU`) that are not air around the
    patient and not the segmented airways (dilated by one voxel) form the lungs; components
    smaller than :data:`MIN_LUNG_VOLUME_M3` are dropped, holes of each axial slice filled
    (vessels). With two large components the one whose centroid lies at larger CT-frame x
    (LPS: patient left) is the left lung; with one (lungs touching in front of the mediastinum)
    it is split by the sagittal plane through the trachea's centre.

    Parameters
    ----------
    image : SimpleITK.Image
        CT in HU (any orientation).
    airway_mask : SimpleITK.Image
        Airway lumen mask on the same grid (nonzero inside).

    Returns
    -------
    SimpleITK.Image
        uint8 labels (0 outside, 1 right lung, 2 left lung), geometry of ``image``.

    Raises
    ------
    CTError
        If no lung is found.
    """
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        image.GetDirection())
    lps = sitk.DICOMOrient(image, "LPS")
    airway = sitk.GetArrayFromImage(sitk.DICOMOrient(airway_mask, "LPS")) > 0
    spacing = np.asarray(lps.GetSpacing(), float)
    dark = sitk.GetArrayViewFromImage(lps) < LUNG_MAX_HU  # noise is far below the lung contrast
    dark &= ~outside_air(dark)
    dark &= ~ndimage.binary_dilation(airway, iterations=1)
    labels, n = cc3d.connected_components(dark, connectivity=6, return_N=True)
    voxel_m3 = float(np.prod(spacing)) * 1e-9
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    counts[0] = 0
    big = [int(c) for c in np.argsort(counts)[::-1][:2]
           if counts[c] * voxel_m3 >= MIN_LUNG_VOLUME_M3]
    if not big:
        raise CTError("no lung found in the CT (no dark region of at least "
                      f"{MIN_LUNG_VOLUME_M3 * 1e3:g} L inside the body)")
    out = np.zeros(labels.shape, np.uint8)
    if len(big) == 2:
        cx = []
        for c in big:
            kji = np.argwhere(labels[::2, ::2, ::2] == c) * 2
            cx.append(float(index_to_ct(lps, kji.mean(axis=0))[0, 0]))
        left, right = (big[0], big[1]) if cx[0] > cx[1] else (big[1], big[0])
        out[labels == right] = RIGHT_LUNG
        out[labels == left] = LEFT_LUNG
    else:
        kji = np.argwhere(airway)
        if len(kji) == 0:
            raise CTError("cannot split one lung region into right and left without airways")
        top = kji[:, 0] >= np.percentile(kji[:, 0], 90)  # the trachea (LPS: k grows upwards)
        x_mid = float(index_to_ct(lps, kji[top].mean(axis=0))[0, 0])
        x_of_i = index_to_ct(lps, np.column_stack([np.zeros(labels.shape[2]),
                                                   np.zeros(labels.shape[2]),
                                                   np.arange(labels.shape[2])]))[:, 0]
        one = labels == big[0]
        out[one & (x_of_i < x_mid)[None, None, :]] = RIGHT_LUNG
        out[one & (x_of_i >= x_mid)[None, None, :]] = LEFT_LUNG
    del labels
    for value in (RIGHT_LUNG, LEFT_LUNG):
        where = np.nonzero(out == value)
        if not len(where[0]):
            continue
        box = tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)
        sub = out[box]
        sub[_fill_slices(sub == value) & (sub == 0)] = value
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(lps)
    return sitk.DICOMOrient(result, orientation)
