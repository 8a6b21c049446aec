"""Device files: the shipped default, round trips, and errors naming the key."""

import numpy as np
import pytest
import yaml

from bronchonav.catheter import CatheterParams
from bronchonav.catheter.device import default_device_path, params_to_dict, save_device
from bronchonav.errors import InputError
from bronchonav.planning.constraints import DeviceConstraints


def test_default_is_the_shipped_file_with_the_documented_numbers():
    assert default_device_path().name == "bronchoscope_3p5.yaml"
    p = CatheterParams.default()
    shaft, tip = p.segments
    assert (shaft.length, shaft.EI, shaft.GJ, shaft.EA, shaft.GA, shaft.mass_per_length) == \
        (0.56, 2.0e-3, 1.5e-3, 1.5e4, 5.0e3, 0.012)
    assert (tip.length, tip.EI, tip.GJ, tip.EA, tip.GA, tip.mass_per_length) == \
        (0.04, 2.5e-4, 1.9e-4, 4.0e3, 1.5e3, 0.010)
    for k, t in enumerate(p.tendons):
        assert (t.offset, t.start_segment, t.end_segment, t.stiffness_EA) == (1.4e-3, 1, 1, 6e3)
        assert t.angle == pytest.approx(k * np.pi / 2, abs=1e-15)
        assert (t.friction, t.pretension, t.zero_offset, t.wire_stiffness) == (0, 0, 0, None)
    # one tendon at the tension limit bends the 40 mm tip through 180 degrees
    assert p.limits.tension_max == pytest.approx(np.pi / 0.04 * 2.5e-4 / 1.4e-3, rel=1e-15)
    assert p.limits.max_insertion == 0.35
    assert np.all(p.limits.displacement_min == -5e-3) and np.all(p.limits.displacement_max == 8e-3)
    assert (p.outer_diameter, p.channel_diameter, p.articulation_segment) == (3.5e-3, 2e-3, 1)


def test_round_trip_and_consumers(tmp_path):
    p = CatheterParams.default()
    p.tendons[1].friction, p.tendons[1].zero_offset = 0.12, -3e-4
    p.tendons[2].wire_stiffness = 1.2e4
    p.base_pose[:3, 3] = [0.01, 0.02, -0.03]
    path = save_device(p, tmp_path / "dev.yaml", extra={"calibration": {"note": "x"}})
    q = CatheterParams.from_file(path)
    assert params_to_dict(q) == params_to_dict(p)
    # the planner's device constraints read any such file
    c = DeviceConstraints.from_catheter(q)
    assert c.outer_diameter == q.outer_diameter and c.min_bend_radius == q.min_bend_radius


def write(tmp_path, data):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, key", [
    (lambda d: d["segments"][1].pop("EI"), "segments[1].EI"),
    (lambda d: d["tendons"][2].update(offset="wide"), "tendons[2].offset"),
    (lambda d: d["tendons"][0].update(frition=0.1), "tendons[0].frition"),
    (lambda d: d["limits"].update(displacement_min=[0, 1]), "limits.displacement_min"),
    (lambda d: d["tendons"][3].update(friction=-0.1), "tendons[3]"),
    (lambda d: d["tendons"][0].update(wire_stiffness=1e4), "tendons[0].wire_stiffness"),
    (lambda d: d.update(outer_diameter=None), "outer_diameter"),
])
def test_invalid_files_name_the_key(tmp_path, edit, key):
    data = yaml.safe_load(default_device_path().read_text())
    edit(data)
    with pytest.raises(InputError, match=key.replace("[", "\\[").replace("]", "\\]")):
        CatheterParams.from_file(write(tmp_path, data))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        CatheterParams.from_file(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("segments: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        CatheterParams.from_file(bad)


def test_urdf_chain_from_a_device_file():
    from bronchonav.ros.urdf_gen import DEFAULT_CHAIN, ChainSpec

    assert ChainSpec.from_catheter(CatheterParams.default()) == DEFAULT_CHAIN
    p = CatheterParams.default()
    p.outer_diameter, p.limits.max_insertion = 4.2e-3, 0.402
    spec = ChainSpec.from_catheter(p)
    assert spec.outer_diameter == 4.2e-3 and spec.length >= 0.402 > spec.length - 0.005
