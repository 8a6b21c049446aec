"""Decode the pictures the package writes and check what they show (not their file size).

- :func:`assert_png_figure`: a PNG decodes, has the expected size in pixels, and each panel's
  plotting area (the middle of its share of the width) holds drawn, non-background pixels of
  several colours.
- :func:`plotly_traces`: the traces of a plotly HTML page (``Plotly.newPlot`` data), with numeric
  arrays decoded (plotly >= 6 writes them base64-encoded as ``{"dtype", "bdata"}``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from PIL import Image


def read_png(path) -> np.ndarray:
    """The RGB pixels (H, W, 3) of a PNG file (the signature is checked)."""
    path = Path(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as img:
        img.load()
        return np.asarray(img.convert("RGB"))


def assert_png_figure(path, size: tuple[int, int], panels: int = 1,
                      min_drawn: float = 0.03, min_colours: int = 4) -> np.ndarray:
    """Check a matplotlib PNG: ``size`` = (width, height) in pixels; in each of ``panels``
    side-by-side panels, the central 60 % (width and height) of its share holds at least
    ``min_drawn`` non-white pixels and ``min_colours`` distinct colours. Returns the pixels.

    An empty matplotlib axes (frame, ticks and labels only) draws about 1 % of that region and
    one straight line about 2 %; the package's figures draw 6 % or more.
    """
    rgb = read_png(path)
    assert (rgb.shape[1], rgb.shape[0]) == tuple(size), f"{path}: {rgb.shape[1]}x{rgb.shape[0]} px"
    h, w = rgb.shape[:2]
    for k in range(panels):
        x0, x1 = int(w * (k + 0.2) / panels), int(w * (k + 0.8) / panels)
        region = rgb[int(0.2 * h):int(0.8 * h), x0:x1].reshape(-1, 3)
        drawn = np.any(region < 250, axis=1)
        assert drawn.mean() >= min_drawn, f"{path}: panel {k} is blank ({drawn.mean():.4f} drawn)"
        colours = len(np.unique(region[drawn], axis=0))
        assert colours >= min_colours, f"{path}: panel {k} has only {colours} colours"
    return rgb


def _decode(value):
    if isinstance(value, dict) and "bdata" in value and "dtype" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if isinstance(shape, str):  # "8, 16"
            shape = [int(v) for v in shape.split(",")]
        return arr.reshape(shape) if shape is not None else arr
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def plotly_traces(path) -> list[dict]:
    """The traces (list of dicts, arrays decoded) of the first ``Plotly.newPlot`` call in an
    HTML file."""
    text = Path(path).read_text()
    start = text.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    decoder = json.JSONDecoder()
    rest = text[start:].lstrip()
    _, end = decoder.raw_decode(rest)  # the div id
    rest = rest[end:].lstrip().lstrip(",").lstrip()
    traces, _ = decoder.raw_decode(rest)
    return _decode(traces)
