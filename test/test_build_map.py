"""The map pipeline on the default phantom: quality against ground truth, graph invariants,
lobes, the CLI, and the shipped ``maps/phantom_default`` being what the code produces.

The default-phantom build (about 15 s) runs once per module through the CLI.
"""

import contextlib
import io
import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from figure_checks import assert_png_figure
import SimpleITK as sitk

from bronchonav.airway.centerline import CenterlineParams
from bronchonav.cli import main
from bronchonav.ct.io import read_ct
from bronchonav.ct.phantom import generate_phantom_tree, make_phantom, phantom_config
from bronchonav.maps import load_map, nodules_from_list, tree_from_dict

SHIPPED = Path(__file__).resolve().parents[1] / "maps" / "phantom_default"


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("map") / "phantom_default"
    code, out, err = _run(["build-map", "--phantom", "default", "--out", str(folder), "--json"])
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1  # one JSON object on stdout, progress on stderr
    return json.loads(out), load_map(folder), folder


def test_json_summary(built):
    summary, airway_map, _ = built
    assert summary["branches"] == len(airway_map.tree)
    assert summary["max_generation"] == airway_map.tree.max_generation
    assert summary["seconds"] > 0
    for key in ("td", "bd", "dsc", "precision", "fpr"):
        assert 0.0 <= summary["metrics"][key] <= 1.0
    assert summary["metrics"]["centerline_error_mean_m"] < 1.5e-3
    assert airway_map.metadata["source"] == {"kind": "phantom", "name": "default", "seed": 0}
    assert airway_map.metadata["metrics"] == summary["metrics"]


def test_quality_bars_on_the_default_phantom(built):
    summary, _, _ = built
    m = summary["metrics"]
    assert m["td"] >= 0.95
    assert m["bd"] >= 0.90
    assert m["fpr"] <= 0.02
    assert summary["max_generation"] >= 8
    # radii unbiased against the ground truth (the plain half maximum was 0.5 mm small)
    assert abs(m["radius_error_median_m"]) <= 0.2e-3
    assert -0.3e-3 < m["radius_error_p10_m"] < 0 < m["radius_error_p90_m"] < 0.4e-3


def test_radii_unbiased_across_airway_sizes(built):
    """Median extracted minus true radius within 0.15 mm for GT lumen radii of 1.3-2, 2-3, 3-5
    and 5-10 mm, at extracted points within 0.5 mm of a GT centerline, away from junctions."""
    _, airway_map, _ = built
    gt, _, _ = generate_phantom_tree(phantom_config("default", 0))
    s, g = airway_map.tree.samples(), gt.samples()
    d, i = gt.nearest(s.points)
    r_gt, arc = g.radii[i], g.arclength[i]
    length = np.array([gt[int(b)].length for b in g.branch_ids[i]])
    ok = (d < 0.5e-3) & (arc > r_gt) & (arc < length - r_gt)
    for lo, hi in ((1.3e-3, 2e-3), (2e-3, 3e-3), (3e-3, 5e-3), (5e-3, 10e-3)):
        sel = ok & (r_gt >= lo) & (r_gt < hi)
        assert sel.sum() > 100, (lo, hi)
        assert abs(np.median(s.radii[sel] - r_gt[sel])) < 0.15e-3, (lo, hi)


def test_radii_unbiased_on_another_seed():
    from bronchonav.airway.build import build_map_from_phantom

    m = build_map_from_phantom("default", seed=1).metrics
    assert abs(m.radius_error_median_m) <= 0.2e-3
    assert m.radius_error_p90_m - m.radius_error_p10_m < 0.7e-3
    assert m.td >= 0.95 and m.bd >= 0.90 and m.fpr <= 0.02


def test_graph_invariants(built):
    _, airway_map, _ = built
    tree = airway_map.tree
    tree.validate(join_tolerance=0.0)  # every child starts exactly at its parent's end
    g = tree.graph()
    assert nx.is_tree(g.to_undirected())  # connected, no cycles
    assert nx.is_directed_acyclic_graph(g)
    assert [n for n in g if g.in_degree(n) == 0] == [tree.root]
    depth = nx.shortest_path_length(g, tree.root)
    assert all(tree[b].generation == depth[b] for b in g)
    assert all(tree[c].generation == tree[b].generation + 1 for b, c in g.edges)
    # no spur shorter than the pruning length of its parent (at the parent's smallest radius)
    params = CenterlineParams()
    for leaf in tree.leaves():
        parent = tree[leaf].parent
        if parent is not None:
            limit_m = params.prune_length_mm(tree[parent].radii.min() * 1e3) * 1e-3
            assert tree[leaf].length >= limit_m, leaf
    # radii positive and below the trachea's
    assert all(0 < b.radii.max() <= 1.2 * airway_map.tree.trachea.radii.max() for b in tree)


def test_lobes_agree_with_the_ground_truth(built):
    _, airway_map, _ = built
    gt, _, _ = generate_phantom_tree(phantom_config("default", 0))
    ids = gt.samples().branch_ids
    agree = total = 0
    for b in airway_map.tree:
        _, i = gt.nearest(b.points[len(b.points) // 2])
        gt_lobe = gt[int(ids[i[0]])].lobe
        if gt_lobe is None:
            continue
        total += 1
        agree += b.lobe == gt_lobe
    assert total > 100
    assert agree / total >= 0.9
    # generations: most branches have the generation of the GT branch they lie on
    same = 0
    for b in airway_map.tree:
        _, i = gt.nearest(b.points[len(b.points) // 2])
        same += b.generation == gt[int(ids[i[0]])].generation
    assert same / len(airway_map.tree) >= 0.75
    assert set(airway_map.tree.lobes()) == {"RUL", "RML", "RLL", "LUL", "LLL"}


def test_nodules_and_lung_mask_are_the_phantoms(built):
    _, airway_map, _ = built
    _, nodules, _ = generate_phantom_tree(phantom_config("default", 0))
    assert [n.id for n in airway_map.nodules] == [n.id for n in nodules]
    for a, b in zip(airway_map.nodules, nodules):
        np.testing.assert_array_equal(a.center, b.center)
    labels = sitk.GetArrayViewFromImage(airway_map.lung_mask)
    assert set(np.unique(labels)) == {0, 1, 2}


def test_shipped_map_is_what_the_code_builds(built):
    """Regenerating maps/phantom_default gives the same tree (the build is deterministic).

    If this fails after a change to the phantom or the extraction, regenerate the map with
    ``bronchonav build-map --phantom default --out maps/phantom_default --force``.
    """
    _, airway_map, _ = built
    shipped = load_map(SHIPPED)
    assert shipped.metadata["source"] == airway_map.metadata["source"]
    a, b = shipped.tree, airway_map.tree
    assert len(a) == len(b) and a.max_generation == b.max_generation
    for branch in b:
        other = a[branch.id]
        assert (other.parent, other.generation, other.lobe) == \
            (branch.parent, branch.generation, branch.lobe)
        np.testing.assert_allclose(other.points, branch.points, rtol=0, atol=1e-9)
        np.testing.assert_allclose(other.radii, branch.radii, rtol=0, atol=1e-9)
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) < 8e6


def test_map_info_and_render(built, tmp_path):
    summary, airway_map, folder = built
    code, out, _ = _run(["map-info", str(folder), "--json"])
    info = json.loads(out)
    assert code == 0
    assert info["branches"] == summary["branches"]
    assert info["lobes"] == airway_map.tree.lobes()
    assert len(info["nodules"]) == len(airway_map.nodules)
    assert sum(info["branches_per_generation"].values()) == info["branches"]
    code, out, _ = _run(["map-info", str(folder)])
    assert code == 0 and "branches" in out and "N1" in out
    png = tmp_path / "tree.png"
    code, _, _ = _run(["render-map", str(folder), "--out", str(png)])
    assert code == 0
    assert_png_figure(png, (1440, 840), panels=2)  # 12 x 7 in at 120 dpi, two projections


def test_phantom_command_writes_ct_and_ground_truth(tmp_path):
    code, _, err = _run(["phantom", "--name", "default", "--seed", "0", "--out", str(tmp_path)])
    assert code == 0, err
    phantom = make_phantom(phantom_config("default", 0))
    ct = read_ct(tmp_path / "ct.nii.gz")  # NIfTI (RAS on disk) back to LPS
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(phantom.image))
    np.testing.assert_allclose(ct.GetOrigin(), phantom.image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(ct.GetSpacing(), phantom.image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(np.reshape(ct.GetDirection(), (3, 3)), np.eye(3), atol=1e-9)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "gt_lumen_mask.nii.gz")))
    np.testing.assert_array_equal(mask > 0, phantom.lumen_mask)
    gt = tree_from_dict(json.loads((tmp_path / "gt_tree.json").read_text()))
    assert len(gt) == len(phantom.tree)
    for b in phantom.tree:
        np.testing.assert_array_equal(gt[b.id].points, b.points)
    nodules = nodules_from_list(json.loads((tmp_path / "nodules.json").read_text()))
    assert [n.id for n in nodules] == [n.id for n in phantom.nodules]


def test_plot_tree_views_share_one_projection(built):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bronchonav.viz.tree_plot import plot_tree, view_coordinates

    _, airway_map, _ = built
    tree = airway_map.tree
    fig = plt.figure()
    ax = fig.add_subplot(1, 3, 1)
    lines = plot_tree(ax, tree, airway_map.nodules, view="coronal")
    segments = lines.get_segments()
    assert len(segments) == len(tree)
    by_generation = sorted(tree, key=lambda b: b.generation)
    np.testing.assert_allclose(segments[0], view_coordinates(by_generation[0].points, "coronal"))
    np.testing.assert_allclose(view_coordinates(np.array([[0.01, 0.02, 0.03]]), "sagittal"),
                               [[20.0, 30.0]])
    ax2 = fig.add_subplot(1, 3, 2)
    plot_tree(ax2, tree, view="axial")
    assert ax2.get_ylim()[0] > ax2.get_ylim()[1]  # anterior (-y) up
    ax3 = fig.add_subplot(1, 3, 3, projection="3d")
    lines3 = plot_tree(ax3, tree, airway_map.nodules)
    assert len(lines3.get_array()) == len(tree)
    plt.close(fig)
    with pytest.raises(ValueError, match="unknown view"):
        view_coordinates(np.zeros((1, 3)), "oblique")
