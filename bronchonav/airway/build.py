"""The map-building pipeline: CT (or phantom) → segmentation → tree → lobes and segments → mesh
→ AirwayMap.

All outputs are in the CT frame (LPS, metres). For a phantom the extraction is scored against
the phantom's ground truth (:mod:`bronchonav.airway.metrics`) and the phantom's nodules and lung
labels are carried into the map; for a real CT the lungs are segmented from the scan and the
map has no nodules until some are added (:mod:`bronchonav.maps`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import SimpleITK as sitk

from bronchonav.airway.centerline import CenterlineParams, extract_tree
from bronchonav.airway.lobes import label_lobes
from bronchonav.airway.lungs import segment_lungs
from bronchonav.airway.segments import label_segments
from bronchonav.airway.mesh import lumen_mesh
from bronchonav.airway.metrics import AirwayMetrics, airway_metrics
from bronchonav.airway.segment import Segmentation, SegmentationParams, segment_airways
from bronchonav.airway.tree import Nodule
from bronchonav.ct.io import GANTRY_TILT_KEY, SERIES_UID_KEY, read_ct, spacing_m
from bronchonav.maps import AirwayMap
from bronchonav.progress import step


@dataclass
class BuildParams:
    """Parameters of the whole pipeline."""

    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    centerline: CenterlineParams = field(default_factory=CenterlineParams)
    max_triangles: int = 100_000
    """Upper bound on the lumen mesh's triangle count."""


@dataclass
class BuildResult:
    """What :func:`build_map` produced.

    Attributes
    ----------
    airway_map : AirwayMap
        The map (tree with lobes, nodules, lumen mesh, metadata, lung mask if known).
    segmentation : Segmentation
        The lumen segmentation (mask on the CT grid, seed, chosen threshold).
    metrics : AirwayMetrics or None
        Quality against ground truth (phantoms only).
    seconds : float
        Wall-clock time of the extraction (segmentation to mesh), s.
    timings : dict
        Seconds per step.
    """

    airway_map: AirwayMap
    segmentation: Segmentation
    metrics: AirwayMetrics | None
    seconds: float
    timings: dict


def build_map(image: sitk.Image, name: str, source: dict, nodules: list[Nodule] | tuple = (),
              lung_mask: sitk.Image | None = None, params: BuildParams | None = None) -> BuildResult:
    """Extract the airway map of a CT image.

    Parameters
    ----------
    image : SimpleITK.Image
        3D CT in HU (ITK geometry, as from :func:`bronchonav.ct.io.read_ct`).
    name : str
        Map name.
    source : dict
        Where the CT came from (stored in the metadata), e.g. ``{"kind": "ct", "path": ...}``.
    nodules : sequence of Nodule
        Lesions to carry into the map (CT frame, m).
    lung_mask : SimpleITK.Image, optional
        Lung label image (0 outside, 1 right, 2 left) to store with the map; without one the
        lungs are segmented from the CT (:func:`bronchonav.airway.lungs.segment_lungs`).
    params : BuildParams, optional

    Returns
    -------
    BuildResult
        With ``metrics=None`` (see :func:`build_map_from_phantom` for scored builds).
    """
    params = params or BuildParams()
    timings = {}
    t_start = time.perf_counter()

    def timed(label, message, fn, *args):
        t0 = time.perf_counter()
        with step(message):
            out = fn(*args)
        timings[label] = round(time.perf_counter() - t0, 3)
        return out

    seg = timed("segmentation", "segmenting the airways", segment_airways, image, params.segmentation)
    tree = timed("centerlines", "extracting centerlines and the tree", extract_tree, seg.mask,
                 params.centerline, image)
    label_lobes(tree)
    label_segments(tree)
    if lung_mask is None:
        lung_mask = timed("lungs", "segmenting the lungs", segment_lungs, image, seg.mask)
    vertices, triangles = timed("mesh", "meshing the lumen surface", lumen_mesh, seg.mask,
                                params.max_triangles)
    seconds = time.perf_counter() - t_start
    metadata = {
        "source": source,
        "spacing_m": list(spacing_m(image)),
        "size_voxels": list(image.GetSize()),
        "creation": {
            "seed_ct_m": [float(v) for v in seg.seed_ct],
            "threshold_hu": seg.threshold_hu,
            "refined_volume_m3": seg.refined_volume,
            "low_attenuation_area": seg.low_attenuation,
            "tubular_refinement": asdict(seg.tubular) if seg.tubular is not None else None,
            "tracking": asdict(seg.tracking) if seg.tracking is not None else None,
            "segmentation_params": asdict(params.segmentation),
            "centerline_params": asdict(params.centerline),
            "max_triangles": params.max_triangles,
        },
    }
    airway_map = AirwayMap(name, tree, list(nodules), vertices, triangles, metadata, lung_mask)
    return BuildResult(airway_map, seg, None, seconds, timings)


def build_map_from_ct(path: str | Path, name: str | None = None,
                      params: BuildParams | None = None, series: str | None = None
                      ) -> BuildResult:
    """Read a CT (DICOM folder, NIfTI, NRRD, MHA/MHD) and build its map (no nodules).

    The CT is read and checked before any progress output, so a bad input fails with its
    error alone. ``series`` chooses the DICOM series of a folder holding several
    (:func:`~bronchonav.ct.io.read_ct`); the map's source names the series read, and the
    gantry tilt taken out of a tilted series (:func:`~bronchonav.ct.io.undo_gantry_tilt`).
    """
    path = Path(path)
    image = read_ct(path, series=series)
    label = name or path.name.split(".")[0] or "ct"
    source = {"kind": "ct", "path": str(path.resolve())}
    if image.HasMetaDataKey(SERIES_UID_KEY):
        source["series_uid"] = image.GetMetaData(SERIES_UID_KEY)
    if image.HasMetaDataKey(GANTRY_TILT_KEY):
        source["gantry_tilt_corrected_deg"] = float(image.GetMetaData(GANTRY_TILT_KEY))
    return build_map(image, label, source, params=params)


def _phantom_source(phantom_name: str, config) -> dict:
    source = {"kind": "phantom", "name": phantom_name, "seed": int(config.seed)}
    if config.clinical is not None:
        source.update(pixel_m=float(config.spacing_m),
                      slice_thickness_m=float(config.clinical.slice_thickness_m))
    return source


def build_map_from_phantom(phantom_name: str = "default", seed: int = 0,
                           params: BuildParams | None = None, config=None) -> BuildResult:
    """Generate a phantom, build its map, and score the extraction against its ground truth.

    The map carries the phantom's nodules and lung labels; ``metrics`` is filled and also
    stored in the map metadata. ``config`` (a :class:`~bronchonav.ct.phantom.PhantomConfig`)
    replaces the preset ``phantom_name``/``seed`` when given.
    """
    from bronchonav.ct.phantom import make_phantom, phantom_config

    config = config or phantom_config(phantom_name, seed)
    with step(f"generating the {phantom_name!r} phantom (seed {config.seed})"):
        phantom = make_phantom(config)
    result = build_map(phantom.image, f"phantom_{phantom_name}",
                       _phantom_source(phantom_name, config),
                       phantom.nodules, phantom.lung_labels, params)
    with step("scoring against the ground truth"):
        result.metrics = airway_metrics(result.segmentation.array(), phantom.lumen_mask,
                                        phantom.tree, phantom.image, result.airway_map.tree)
    result.airway_map.metadata["metrics"] = result.metrics.to_dict()
    return result
