"""What machine a benchmark ran on, for the ``machine`` entry of every benchmark's JSON, and
how a benchmark hands its JSON over."""

from __future__ import annotations

import importlib
import json
import os
import platform
from pathlib import Path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(*libraries: str) -> dict:
    """CPU model, core count, OS, Python, load average and the versions of ``libraries``.

    The 1-minute load average is included because other work on a 2-core machine shows up in
    wall-clock timings.
    """
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 2)}
    for name in ("numpy", *libraries):
        info[name] = importlib.import_module(name).__version__
    return info


def emit(result: dict, out: Path | None = None, allow_nan: bool = True) -> None:
    """Print ``result`` as indented JSON and, given ``out``, also write it there."""
    text = json.dumps(result, indent=1, allow_nan=allow_nan)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
