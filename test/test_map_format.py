"""Map folders: lossless save → load, and broken or edited maps refused with a clear error."""

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from bronchonav.airway.tree import AirwayTree, Branch, Nodule
from bronchonav.cli import main
from bronchonav.errors import MapError
from bronchonav.maps import AirwayMap, load_map, save_map
from bronchonav.planning.exit import LungRegion


def _map():
    rng = np.random.default_rng(7)
    trachea = Branch(0, None, 0, [[0, 0, 0.1], [0, 0.001, 0.05], [0, 0, 0]], [0.009, 0.0085, 0.008],
                     name="trachea")
    left = Branch(1, 0, 1, [[0, 0, 0], [0.0301234567891, 0.001, -0.0312]], [0.006, 0.0055],
                  lobe="LUL", name="LMB")
    right = Branch(2, 0, 1, [[0, 0, 0], [-1 / 30, 1e-17, -0.03]], [0.0061, 0.006], lobe="RLL")
    tree = AirwayTree([trachea, left, right])
    nodules = [Nodule("N1", [0.05, 0.01, -0.04], 0.006, "LUL", "near airway"),
               Nodule("N2", [-0.07, 0.02, -0.05], 0.004, None, "far from airways")]
    vertices = rng.normal(size=(50, 3)) * 0.01
    triangles = rng.integers(0, 50, size=(80, 3))
    labels = sitk.GetImageFromArray(rng.integers(0, 3, size=(6, 7, 8)).astype(np.uint8))
    labels.SetSpacing((1.5, 1.5, 2.0))
    labels.SetOrigin((-10.0, 5.0, -30.0))
    metadata = {"source": {"kind": "phantom", "name": "default", "seed": 3},
                "spacing_m": [0.001, 0.001, 0.001], "creation": {"threshold_hu": -725.0}}
    return AirwayMap("unit", tree, nodules, vertices, triangles, metadata, labels)


def test_save_load_is_lossless(tmp_path):
    original = _map()
    save_map(original, tmp_path / "m")
    loaded = load_map(tmp_path / "m")
    assert loaded.name == "unit"
    assert sorted(loaded.tree.branches) == sorted(original.tree.branches)
    for b in original.tree:
        c = loaded.tree[b.id]
        assert (c.parent, c.generation, c.lobe, c.name, c.children) == \
            (b.parent, b.generation, b.lobe, b.name, b.children)
        np.testing.assert_array_equal(c.points, b.points)  # bit-exact
        np.testing.assert_array_equal(c.radii, b.radii)
    for n, m in zip(original.nodules, loaded.nodules):
        assert (m.id, m.radius, m.lobe, m.note) == (n.id, n.radius, n.lobe, n.note)
        np.testing.assert_array_equal(m.center, n.center)
    np.testing.assert_array_equal(loaded.mesh_vertices, original.mesh_vertices)
    np.testing.assert_array_equal(loaded.mesh_triangles, original.mesh_triangles)
    assert loaded.metadata == original.metadata
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded.lung_mask),
                                  sitk.GetArrayFromImage(original.lung_mask))
    assert loaded.lung_mask.GetSpacing() == original.lung_mask.GetSpacing()
    assert loaded.lung_mask.GetOrigin() == original.lung_mask.GetOrigin()
    # and a second save of the loaded map gives the same files
    save_map(loaded, tmp_path / "m2")
    for name in ("tree.json", "nodules.json", "lumen.ply"):
        assert (tmp_path / "m" / name).read_bytes() == (tmp_path / "m2" / name).read_bytes()


def _resign(folder, name):
    """Update the SHA-256 recorded for ``name`` (an edit made to look legitimate)."""
    meta = yaml.safe_load((folder / "map.yaml").read_text())
    for entry in meta["files"].values():
        if entry["path"] == name:
            entry["sha256"] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "map.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def _edit_tree_digit(f):
    text = (f / "tree.json").read_text()
    (f / "tree.json").write_text(text.replace("0.0301234567891", "0.0301234567892"))


def _wrong_generation(f):
    data = json.loads((f / "tree.json").read_text())
    data["branches"][1]["generation"] = 2
    (f / "tree.json").write_text(json.dumps(data))
    _resign(f, "tree.json")


def _cycle(f):
    data = json.loads((f / "tree.json").read_text())
    data["branches"][0]["parent"] = 1  # the trachea's parent is its own child: no root
    (f / "tree.json").write_text(json.dumps(data))
    _resign(f, "tree.json")


def _truncate_mesh(f):
    (f / "lumen.ply").write_bytes((f / "lumen.ply").read_bytes()[:-7])
    _resign(f, "lumen.ply")


def _bad_json(f):
    (f / "nodules.json").write_text("[{]")
    _resign(f, "nodules.json")


def _bad_nodule(f):
    (f / "nodules.json").write_text(json.dumps([{"id": "N1", "center_m": [0, 0, "x"],
                                                 "radius_m": 0.01}]))
    _resign(f, "nodules.json")


def _version(f):
    meta = yaml.safe_load((f / "map.yaml").read_text())
    meta["format_version"] = 99
    (f / "map.yaml").write_text(yaml.safe_dump(meta))


BREAKAGES = {
    "edited tree": (_edit_tree_digit, "SHA-256"),
    "missing mesh": (lambda f: (f / "lumen.ply").unlink(), "missing"),
    "missing metadata": (lambda f: (f / "map.yaml").unlink(), "map.yaml is missing"),
    "invalid yaml": (lambda f: (f / "map.yaml").write_text("a: [1, 2\n"), "not valid YAML"),
    "future version": (_version, "not supported"),
    "wrong generation": (_wrong_generation, "generation"),
    "cycle": (_cycle, "root"),
    "truncated mesh": (_truncate_mesh, "truncated or corrupt"),
    "invalid json": (_bad_json, "not valid JSON"),
    "bad nodule": (_bad_nodule, "malformed nodule"),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_broken_map_is_refused(tmp_path, case, capsys):
    folder = save_map(_map(), tmp_path / "m")
    load_map(folder)  # intact: loads
    breaker, words = BREAKAGES[case]
    breaker(folder)
    with pytest.raises(MapError, match=words):
        load_map(folder)
    code = main(["map-info", str(folder)])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("bronchonav map-info: error:")


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(MapError, match="not found"):
        load_map(tmp_path / "nowhere")


def test_malformed_file_entry_is_a_map_error(tmp_path):
    """A 'files' entry that is not a {path, sha256} mapping is refused with MapError."""
    folder = save_map(_map(), tmp_path / "m")
    meta = yaml.safe_load((folder / "map.yaml").read_text())
    meta["files"]["tree"] = "tree.json"
    (folder / "map.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(MapError, match="file entry 'tree'"):
        load_map(folder)


def test_a_map_is_also_named_by_its_yaml_file(tmp_path):
    """As nav2's map server takes a map's YAML file: ``…/map.yaml`` loads the folder's map, and
    ``add-nodule`` given it updates the folder in place (still a valid map, the nodule kept)."""
    folder = save_map(_map(), tmp_path / "m")
    by_yaml = load_map(folder / "map.yaml")
    assert sorted(by_yaml.tree.branches) == sorted(load_map(folder).tree.branches)
    region = LungRegion(by_yaml.lung_mask)
    voxel = np.argwhere(region.labels > 0)[0]  # (z, y, x) of a lung voxel
    center = region.grid.index_to_ct(voxel[None].astype(float))[0]
    assert main(["add-nodule", str(folder / "map.yaml"), "--id", "N3",
                 "--center=" + ",".join(f"{v:.6f}" for v in center), "--radius", "0.004"]) == 0
    assert [n.id for n in load_map(folder).nodules] == ["N1", "N2", "N3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with pytest.raises(MapError, match="not found"):  # any other file is not a map
        load_map(folder / "tree.json")
