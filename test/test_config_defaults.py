"""One place for node defaults: ``config/bronchonav.yaml`` lists every parameter each node
declares, with the value the node declares as its default.

The launch files, the runner and ``ros2 run`` (the installed YAML is its default parameter file)
all start nodes with this file, so a node's declared default and the file's value must be the
same number: otherwise the node behaves differently when built without the file (tests, a user's
own launch file without ``--params-file``). These tests fail when the two drift apart or when a
newly declared parameter is missing from the file.
"""

import importlib
from pathlib import Path

import pytest
import yaml

from bronchonav.ros.launch_spec import NODES
from bronchonav.ros.params import load_yaml_params

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "bronchonav.yaml"


def declared(node_name):
    """The node's declared parameter specs (its module's ``PARAMS``), by name."""
    module = importlib.import_module(NODES[node_name].module)
    return {p.name: p for p in module.PARAMS}


def test_the_file_has_one_section_per_node_and_nothing_else():
    sections = yaml.safe_load(CONFIG.read_text())
    assert sorted(sections) == sorted(f"/**/{name}" for name in NODES)


def mismatches(node_name, path):
    """How the file at ``path`` differs from the node's declared parameters (empty: not at all)."""
    specs = declared(node_name)
    in_file = load_yaml_params(path, node_name)
    out = [f"{name}: missing from {path.name}" for name in sorted(set(specs) - set(in_file))]
    out += [f"{name}: not declared by the node" for name in sorted(set(in_file) - set(specs))]
    for name in sorted(set(specs) & set(in_file)):
        spec = specs[name]
        value = spec.check(in_file[name])  # the file's value has the parameter's type and range
        if value != spec.default or type(value) is not type(spec.default):
            out.append(f"{name}: {path.name} says {in_file[name]!r}, the node declares "
                       f"{spec.default!r}")
    return out


@pytest.mark.parametrize("node_name", sorted(NODES))
def test_the_file_holds_every_declared_parameter_with_its_default(node_name):
    assert mismatches(node_name, CONFIG) == []


def test_a_drift_is_caught(tmp_path):
    """A changed value and a missing parameter in a copy of the file are both reported."""
    sections = yaml.safe_load(CONFIG.read_text())
    sim = sections["/**/catheter_sim"]["ros__parameters"]
    sim["n_nodes"] += 10
    del sim["stale_after_s"]
    drifted = tmp_path / "bronchonav.yaml"
    drifted.write_text(yaml.safe_dump(sections))
    assert [m.split(":")[0] for m in mismatches("catheter_sim", drifted)] == ["stale_after_s",
                                                                              "n_nodes"]
