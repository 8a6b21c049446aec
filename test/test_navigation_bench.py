"""bench/navigation_bench.py writes the campaign it runs: seeds, poses and the maps' source."""

import importlib.util
import sys
from pathlib import Path

import pytest

from bronchonav.campaign.spec import load_spec

BENCH = Path(__file__).resolve().parents[1] / "bench" / "navigation_bench.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH.parent))  # the bench's own helpers (machine.py), as when run
    try:
        spec = importlib.util.spec_from_file_location("navigation_bench", BENCH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    return module


@pytest.mark.parametrize("maps, suffix", [("ground_truth", ""), ("build", "_built")])
def test_the_campaign_file_has_the_seeds_poses_and_map_source_asked_for(bench, tmp_path, maps,
                                                                        suffix):
    path = bench.campaign_file([8, 9, 10], ["truth"], tmp_path, maps)
    spec = load_spec(path)
    assert spec.name == f"navigation_s8-10_truth{suffix}"
    assert [(s.seed, s.map_mode) for s in spec.subjects] == [(8, maps), (9, maps), (10, maps)]
    assert spec.stage_options["rehearse"]["poses"] == "truth"
