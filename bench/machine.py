"""What machine a benchmark ran on, for the ``machine`` entry of every benchmark's JSON."""

from __future__ import annotations

import importlib
import os
import platform


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
