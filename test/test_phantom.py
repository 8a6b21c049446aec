"""The synthetic phantom: ground-truth tree morphometry, lungs, nodules and the rendered CT."""

import numpy as np
import pytest
import SimpleITK as sitk

from bronchonav.airway.tree import LOBES
from bronchonav.ct.lungs import LungModel
from bronchonav.ct.phantom import (generate_phantom_tree, kitaoka_angles, make_phantom,
                                   phantom_config, phantom_ground_truth_map)
from bronchonav.errors import InputError

N_EXP = 2.8


@pytest.fixture(scope="module")
def truth():
    return generate_phantom_tree(phantom_config("default"))


@pytest.fixture(scope="module")
def tree(truth):
    return truth[0]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(phantom_config("default"))


@pytest.fixture(scope="module")
def ct(phantom):
    return sitk.GetArrayFromImage(phantom.image)


def _named(tree):
    return {b.name: b for b in tree if b.name is not None}


def _angle_from_vertical_deg(direction):
    return float(np.degrees(np.arccos(np.dot(direction, [0.0, 0.0, -1.0]))))


def _hu_block(phantom, ct, point_m, half=1):
    i, j, k = phantom.image.TransformPhysicalPointToIndex([float(v) * 1e3 for v in point_m])
    return ct[k - half:k + half + 1, j - half:j + half + 1, i - half:i + half + 1].astype(float)


# -- configuration --------------------------------------------------------------------------

def test_presets_and_unknown_name():
    full = phantom_config("full")
    assert full.spacing_m == pytest.approx(0.7e-3)
    assert tuple(full.volume_shape) == (512, 512, 450)
    assert full.min_diameter_m < phantom_config("default").min_diameter_m
    with pytest.raises(InputError, match="unknown phantom"):
        phantom_config("huge")


# -- determinism ----------------------------------------------------------------------------

def test_same_config_gives_identical_tree_and_nodules(truth):
    tree2, nodules2, _ = generate_phantom_tree(phantom_config("default"))
    tree, nodules, _ = truth
    assert sorted(b.id for b in tree) == sorted(b.id for b in tree2)
    for b in tree:
        c = tree2[b.id]
        assert (b.parent, b.generation, b.lobe, b.name) == (c.parent, c.generation, c.lobe, c.name)
        assert np.array_equal(b.points, c.points) and np.array_equal(b.radii, c.radii)
    assert [(n.id, n.lobe, n.note, n.radius) for n in nodules] == \
        [(n.id, n.lobe, n.note, n.radius) for n in nodules2]
    assert all(np.array_equal(a.center, b.center) for a, b in zip(nodules, nodules2))


def test_ct_rendering_is_deterministic_and_seeded():
    coarse = phantom_config("default")
    coarse.spacing_m = 3e-3                    # a cheap render: same pipeline, 27× fewer voxels
    a = sitk.GetArrayFromImage(make_phantom(coarse).image)
    b = sitk.GetArrayFromImage(make_phantom(coarse).image)
    assert np.array_equal(a, b)
    coarse.seed = 1
    c = sitk.GetArrayFromImage(make_phantom(coarse).image)
    assert c.shape == a.shape and not np.array_equal(a, c)


def test_other_seed_gives_other_tree_with_same_guarantees(tree):
    other, nodules, _ = generate_phantom_tree(phantom_config("default", seed=3))
    assert len(other) >= 200 and other.max_generation >= 8
    assert set(other.lobes()) == set(LOBES)
    assert not all(np.array_equal(other[b.id].points, b.points)
                   for b in tree if b.id in other and b.name is None)
    assert sum(n.note == "far from airways" for n in nodules) >= 1


# -- morphometry ------------------------------------------------------------------------------

def test_trachea(tree, phantom):
    t = tree.trachea
    assert t.id == 0 and t.generation == 0 and t.name == "trachea" and t.lobe is None
    assert 16e-3 <= t.diameter <= 20e-3
    assert 110e-3 <= t.length <= 120e-3
    assert _angle_from_vertical_deg(t.direction) < 2.0
    # the insertion point (first point) lies on the top slice of the CT
    top_z = phantom.grid.origin_m[2] + (phantom.grid.size[2] - 1) * phantom.grid.spacing_m[2]
    assert t.start[2] == pytest.approx(top_z, abs=1e-9)
    assert t.start[2] > t.end[2]


def test_main_bronchi(tree):
    n = _named(tree)
    rmb, lmb = n["RMB"], n["LMB"]
    assert rmb.parent == 0 and lmb.parent == 0 and rmb.generation == lmb.generation == 1
    assert rmb.direction[0] < 0 < lmb.direction[0]          # LPS: right is -x
    a_r, a_l = _angle_from_vertical_deg(rmb.direction), _angle_from_vertical_deg(lmb.direction)
    assert 20 <= a_r <= 32 and 38 <= a_l <= 52 and a_r < a_l
    assert rmb.length < lmb.length and 40e-3 <= lmb.length <= 55e-3
    assert rmb.diameter > lmb.diameter


def test_central_airway_names_and_lobes(tree):
    n = _named(tree)
    assert set(n) == {"trachea", "RMB", "LMB", "RUL", "BI", "RML", "RLL", "LUL", "LLL"}
    parent_of = {name: tree[b.parent].name for name, b in n.items() if b.parent is not None}
    assert parent_of == {"RMB": "trachea", "LMB": "trachea", "RUL": "RMB", "BI": "RMB",
                         "RML": "BI", "RLL": "BI", "LUL": "LMB", "LLL": "LMB"}
    for name in ("trachea", "RMB", "LMB", "BI"):
        assert n[name].lobe is None
    for lobe in LOBES:
        assert n[lobe].lobe == lobe
    # every branch below a lobar bronchus carries that bronchus' lobe
    for b in tree:
        if b.name is None:
            lobar = next(tree[i] for i in tree.path_from_root(b.id) if tree[i].name in LOBES)
            assert b.lobe == lobar.lobe


def test_size_generations_and_dichotomy(tree):
    assert len(tree) >= 200
    assert tree.max_generation >= 8
    assert set(tree.lobes()) == set(LOBES)
    assert all(len(b.children) in (0, 2) for b in tree)
    assert all(tree[c].generation == b.generation + 1 for b in tree for c in b.children)
    assert min(b.diameter for b in tree) >= phantom_config().min_diameter_m * 0.99


def test_diameter_rule_and_ratios(tree):
    """Kitaoka: d1^n + d2^n = d0^n (n = 2.8); daughter/parent ratios within Weibel/Horsfield."""
    ratios = []
    for b in tree:
        if len(b.children) == 2:
            d1, d2 = (tree[c].diameter for c in b.children)
            assert d1 ** N_EXP + d2 ** N_EXP == pytest.approx(b.diameter ** N_EXP, rel=1e-6)
            ratios += [d1 / b.diameter, d2 / b.diameter]
    ratios = np.array(ratios)
    assert ratios.min() > 0.45 and ratios.max() < 0.97
    assert 0.70 <= np.median(ratios) <= 0.86          # Weibel's symmetric 2^(-1/3) = 0.79


def test_lengths_and_angles(tree):
    grown = [b for b in tree if b.name is None]
    ld = np.array([b.length / b.diameter for b in grown])
    assert ld.min() >= 0.99 and ld.max() <= 3.0 + 1e-9
    assert 2.0 <= np.median(ld) <= 3.5
    g = tree.graph()
    angles = np.degrees([g.edges[tree[b.id].parent, b.id]["angle"] for b in grown])
    assert angles.max() <= 70.5
    assert 25 <= np.median(angles) <= 45


def test_centerlines_sampled_densely_and_joined(tree):
    for b in tree:
        step = np.linalg.norm(np.diff(b.points, axis=0), axis=1)
        assert step.max() <= 1.0e-3 + 1e-12
        if b.parent is not None:
            assert np.linalg.norm(b.start - tree[b.parent].end) < 1e-12
    tree.validate()


def test_kitaoka_angles_symmetric_optimum():
    # Murray's optimum for a symmetric bifurcation with n = 3: cos θ = 2^(-1/3), θ = 37.47°
    t1, t2 = kitaoka_angles(0.5, 3.0)
    assert np.degrees(t1) == pytest.approx(37.47, abs=0.01) and t1 == pytest.approx(t2)
    big, small = kitaoka_angles(0.8, 2.8)
    assert big < small


# -- lungs ----------------------------------------------------------------------------------

def test_branches_stay_inside_their_lung(truth):
    tree, _, lungs = truth
    side = {"RUL": 1, "RML": 1, "RLL": 1, "LUL": 2, "LLL": 2}
    for b in tree:
        if b.lobe is None:
            continue
        assert np.all(lungs.lung_of(b.end[None]) == side[b.lobe])
        if b.name is None:
            # beyond the bifurcation zone (the parent's radius) the lumen is clear of the pleura
            step = np.linalg.norm(np.diff(b.points, axis=0), axis=1)
            s = np.concatenate([[0.0], np.cumsum(step)])
            far = s > tree[b.parent].radii[-1]
            assert np.all(lungs.contains(b.points[far]))
            assert np.all(lungs.distance_to_pleura(b.points[far]) >= b.radii[far])
            assert np.all(lungs.lung_of(b.points[far]) == side[b.lobe])
    ends = np.array([tree[i].end for i in tree.leaves()])
    lobes = np.array([tree[i].lobe for i in tree.leaves()], dtype=object)
    assert np.mean(lungs.lobe_of(ends) == lobes) > 0.95


def test_airways_do_not_touch_unrelated_airways(tree):
    from scipy.spatial import cKDTree

    s = tree.samples(0.5e-3)
    related = {(b.id, c) for b in tree for c in b.children}
    related |= {(c, p) for (p, c) in related}
    for b in tree:
        if len(b.children) == 2:
            related |= {tuple(b.children), tuple(b.children[::-1])}
    # ignore the bifurcation zone at the start of each branch (within its parent's radius)
    start_zone = np.array([s.arclength[i] <= tree[tree[s.branch_ids[i]].parent].radii[-1]
                           if tree[s.branch_ids[i]].parent is not None else False
                           for i in range(len(s.points))])
    keep = ~start_zone
    pts, rad, ids = s.points[keep], s.radii[keep], s.branch_ids[keep]
    pairs = cKDTree(pts).query_pairs(2 * rad.max(), output_type="ndarray")
    a, b = pairs[:, 0], pairs[:, 1]
    unrelated = np.array([ids[i] != ids[j] and (ids[i], ids[j]) not in related for i, j in pairs])
    d = np.linalg.norm(pts[a] - pts[b], axis=1)
    assert np.all(d[unrelated] > rad[a][unrelated] + rad[b][unrelated])


def test_lung_model_lobes_and_distances():
    lungs = LungModel()
    total = lungs.volume()
    assert 3.0e-3 < total < 6.0e-3                           # adult lungs, 3–6 L
    fractions = {lobe: lungs.volume(lobe) / total for lobe in LOBES}
    assert sum(fractions.values()) == pytest.approx(1.0, abs=0.02)
    assert fractions["RML"] < min(fractions[k] for k in LOBES if k != "RML")
    assert lungs.volume("right") > lungs.volume("left")
    rng = np.random.default_rng(1)
    for lobe in LOBES:
        pts = lungs.sample_points(300, rng, lobe)
        assert np.all(lungs.lobe_of(pts) == lobe)
        assert np.all(lungs.lung_of(pts) == (1 if lobe.startswith("R") else 2))
        assert np.all(lungs.distance_to_pleura(pts) > -1.0e-3)
    # upper lobes above and in front of the lower lobes
    rul, rll = lungs.sample_points(2000, rng, "RUL"), lungs.sample_points(2000, rng, "RLL")
    assert rul[:, 2].mean() > rll[:, 2].mean() and rul[:, 1].mean() < rll[:, 1].mean()
    # distance to the pleura: along +x from the right lung's lateral wall
    lat = lungs.right_center[0] - lungs.right_semi_axes[0]
    p = np.array([[lat + 0.010, lungs.right_center[1], lungs.right_center[2]],
                  [lat - 0.008, lungs.right_center[1], lungs.right_center[2]]])
    assert lungs.distance_to_pleura(p) == pytest.approx([0.010, -0.008], abs=1.0e-3)
    assert list(lungs.contains(p)) == [True, False]
    with pytest.raises(InputError):
        lungs.sample_points(3, rng, "middle")


# -- nodules --------------------------------------------------------------------------------

def test_nodules(truth):
    tree, nodules, lungs = truth
    s = tree.samples()
    assert [n.id for n in nodules] == [f"N{i + 1}" for i in range(len(nodules))]
    assert all(8e-3 <= 2 * n.radius <= 30e-3 for n in nodules)
    near = [n for n in nodules if n.note == "near airway"]
    far = [n for n in nodules if n.note == "far from airways"]
    assert len(near) >= 4 and len(far) >= 1
    assert len({n.lobe for n in near}) >= 4
    reachable = np.array([tree[i].diameter >= 4e-3 for i in s.branch_ids])
    for n in nodules:
        gap = np.linalg.norm(s.points - n.center, axis=1) - s.radii - n.radius
        assert gap.min() > 0                                     # no overlap with any lumen
        assert lungs.distance_to_pleura(n.center[None])[0] > n.radius
        assert lungs.lobe_of(n.center[None])[0] == n.lobe
        if n.note == "near airway":
            assert 0 < gap[reachable].min() <= 15e-3 + 1e-4
    for n in far:
        assert (np.linalg.norm(s.points - n.center, axis=1) - s.radii).min() > 35e-3
    for i, a in enumerate(nodules):
        for b in nodules[i + 1:]:
            assert np.linalg.norm(a.center - b.center) > a.radius + b.radius


# -- CT ------------------------------------------------------------------------------------

def test_ct_geometry(phantom, ct):
    img = phantom.image
    assert img.GetPixelID() == sitk.sitkInt16
    assert img.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert img.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert phantom.lumen_mask.shape == ct.shape and phantom.lumen_mask.dtype == bool
    labels = phantom.lung_labels
    assert labels.GetSize() == img.GetSize() and labels.GetOrigin() == img.GetOrigin()
    # every trachea centreline point falls in a lumen voxel (physical mm = CT m × 1000)
    for p in phantom.tree.trachea.points:
        i, j, k = img.TransformPhysicalPointToIndex([float(v) * 1e3 for v in p])
        assert phantom.lumen_mask[k, j, i]
    # the lumen mask is the set of voxel centres inside the GT lumen
    rng = np.random.default_rng(0)
    lo, hi = phantom.tree.bounds()
    pts = rng.uniform(lo - 0.01, hi + 0.01, size=(20000, 3))
    idx = np.clip(np.rint(phantom.grid.index_of(pts)).astype(int), 0,
                  np.asarray(phantom.grid.size) - 1)
    centres = np.asarray(phantom.grid.origin_m) + idx * np.asarray(phantom.grid.spacing_m)
    # signed distance to the union of the branch tubes (the nearest sample alone is not enough
    # at bifurcations, where a wide parent's end cap reaches past a narrow child's axis)
    from scipy.spatial import cKDTree

    s = phantom.tree.samples()
    d, near = cKDTree(s.points).query(centres, k=64)
    margin = (d - s.radii[near]).min(axis=1)
    clear = np.abs(margin) > 0.5e-3
    in_mask = phantom.lumen_mask[idx[:, 2], idx[:, 1], idx[:, 0]]
    assert np.array_equal(in_mask[clear], (margin < 0)[clear])
    # lung labels agree with the analytic lungs at voxel centres
    lab = sitk.GetArrayViewFromImage(labels)[idx[:, 2], idx[:, 1], idx[:, 0]]
    assert np.array_equal(lab, phantom.lungs.lung_of(centres))


def test_lumen_volume_matches_tree(phantom):
    vox = np.prod(phantom.grid.spacing_m)
    analytic = sum(np.pi * b.mean_radius ** 2 * b.length for b in phantom.tree)
    assert phantom.lumen_mask.sum() * vox == pytest.approx(analytic, rel=0.12)


def test_ct_intensities(phantom, ct):
    trachea = _hu_block(phantom, ct, [0.0, 0.0, 0.06])
    assert trachea.mean() == pytest.approx(-1000, abs=25)
    # parenchyma far from airways, nodules and pleura
    lungs, tree = phantom.lungs, phantom.tree
    rng = np.random.default_rng(2)
    cand = lungs.sample_points(2000, rng)
    d, _ = tree.nearest(cand)
    ok = (d > 0.02) & (lungs.distance_to_pleura(cand) > 0.01)
    for n in phantom.nodules:
        ok &= np.linalg.norm(cand - n.center, axis=1) > n.radius + 0.01
    block = np.concatenate([_hu_block(phantom, ct, p, half=2).ravel() for p in cand[ok][:20]])
    assert block.mean() == pytest.approx(-850, abs=5)
    assert block.std() == pytest.approx(25, abs=5)              # the noise, blurred before it
    body = _hu_block(phantom, ct, [0.0, -0.090, 0.0], half=2)    # anterior chest wall
    assert body.mean() == pytest.approx(40, abs=12)
    assert ct[:, 0, 0].mean() == pytest.approx(-1000, abs=10)    # air outside the body
    for n in phantom.nodules:
        assert _hu_block(phantom, ct, n.center).mean() == pytest.approx(40, abs=25)


def _depth_in_ellipse(xy, center, semi_axes):
    """Signed distance (m) from points (N, 2) to an ellipse's boundary, positive inside (the
    boundary sampled every ~0.02 mm), capped at 30 mm."""
    from scipy.spatial import cKDTree

    t = np.linspace(0.0, 2 * np.pi, 50_000, endpoint=False)
    boundary = np.column_stack([center[0] + semi_axes[0] * np.cos(t),
                                center[1] + semi_axes[1] * np.sin(t)])
    d, _ = cKDTree(boundary).query(xy, distance_upper_bound=0.03)
    d = np.minimum(d, 0.03)
    inside = (((xy[:, 0] - center[0]) / semi_axes[0]) ** 2
              + ((xy[:, 1] - center[1]) / semi_axes[1]) ** 2) <= 1.0
    return np.where(inside, d, -d)


def test_lungs_lie_inside_the_body_behind_a_chest_wall(phantom, ct):
    import edt

    config = phantom.config
    wall = 10e-3
    # the analytic lungs
    pts = phantom.lungs.sample_points(100_000, np.random.default_rng(3))
    assert _depth_in_ellipse(pts[:, :2], config.body_center_m, config.body_semi_axes_m).min() >= wall
    # every rendered lung voxel
    k, j, i = np.nonzero(sitk.GetArrayViewFromImage(phantom.lung_labels))
    ji = np.unique(np.column_stack([j, i]), axis=0)
    xy = np.column_stack([phantom.grid.axis(0)[ji[:, 1]], phantom.grid.axis(1)[ji[:, 0]]])
    assert _depth_in_ellipse(xy, config.body_center_m, config.body_semi_axes_m).min() >= wall
    # in the CT, the air around the body (dark region holding the volume's corner) stays clear
    # of the lungs by a chest wall: no lung voxel within 10 mm of it
    from scipy import ndimage

    dark, _ = ndimage.label(ct < -400)
    outside = dark == dark[0, 0, 0]
    assert outside[:, 0, 0].all() and outside.mean() > 0.05
    depth = edt.edt(~outside, anisotropy=tuple(np.asarray(phantom.grid.spacing_m[::-1]) * 1e3),
                    black_border=False)
    assert depth[k, j, i].min() >= wall * 1e3


def test_ground_truth_map(tree):
    gt = phantom_ground_truth_map(phantom_config("default"))
    assert gt.metadata["source"] == {"kind": "phantom-ground-truth", "name": "default", "seed": 0}
    assert len(gt.tree) == len(tree) and len(gt.nodules) >= 5
    v, f = gt.mesh_vertices, gt.mesh_triangles
    assert len(f) > 10000 and f.max() < len(v)
    # vertices lie on the lumen surface (within a voxel), normals point out of the lumen
    d, i = tree.nearest(v)
    err = d - tree.samples().radii[i]
    assert np.median(np.abs(err)) < 0.3e-3 and np.percentile(np.abs(err), 95) < 1.0e-3
    c = v[f].mean(axis=1)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    _, j = tree.nearest(c)
    outward = np.einsum("ij,ij->i", n, c - tree.samples().points[j]) > 0
    assert outward.mean() > 0.95
    assert gt.lung_mask is not None
