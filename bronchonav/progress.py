"""Progress messages for long steps, on stderr so that ``--json`` output stays clean."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn progress messages on or off (they are on by default)."""
    global _enabled
    _enabled = enabled


@contextmanager
def step(message: str):
    """Print ``message …`` before a step and its duration after it."""
    t0 = time.perf_counter()
    if _enabled:
        print(f"  {message} …", file=sys.stderr, end="", flush=True)
    try:
        yield
    finally:
        if _enabled:
            print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
