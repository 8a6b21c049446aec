"""The examples in examples/ run and print what they promise."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_end_to_end():
    out = subprocess.run([sys.executable, "examples/quickstart.py"], cwd=ROOT, text=True,
                         capture_output=True, timeout=300, check=True).stdout
    assert "route to N3: feasible=True" in out
    assert "navigation: reached" in out
    # on the route, and pressed into the wall no deeper than the penalty contact lets it
    # (N3's exit lies 5 mm into branch 79, the tip against its wall with ~2 N)
    assert re.search(r"on the route: True\), inside the lumen: (True|False), within 0\.5 mm "
                     r"of it: True", out)
    error_mm = float(re.search(r"error at the exit point ([\d.]+) mm", out).group(1))
    assert "registration: success=True" in out and error_mm < 2.0
