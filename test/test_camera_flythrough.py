"""Fly-through: camera poses along a route, and the ``bronchonav flythrough`` command."""

import json

import numpy as np
import pytest
from PIL import Image

from bronchonav.airway.tree import Nodule
from bronchonav.cli import main
from bronchonav.errors import InputError
from bronchonav.imaging.flythrough import route_poses, tree_path_waypoints
from bronchonav.imaging.tube_mesh import tube_mesh
from bronchonav.maps import AirwayMap, save_map
from test_camera import y_tree


def test_route_poses_follow_the_path_without_spinning():
    path = np.array([[0, 0, 0.06], [0, 0, 0.0], [0.03, 0.0, -0.03], [0.03, 0.02, -0.05]])
    poses = route_poses(path, step=2e-3, look_ahead=6e-3)
    R = poses[:, :3, :3]
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(R), 1.0)
    eye = poses[:, :3, 3]
    steps = np.linalg.norm(np.diff(eye, axis=0), axis=1)
    assert np.allclose(eye[0], path[0]) and np.allclose(eye[-1], path[-1])
    assert steps.max() < 2e-3 + 1e-9
    # looking down the trachea at the start, the image's up is anterior (-y, LPS)
    assert np.allclose(R[0][:, 2], [0, 0, -1]) and np.allclose(-R[0][:, 1], [0, -1, 0])
    # the roll is carried smoothly: consecutive image x axes turn at most as much as the view
    view_turn = np.arccos(np.clip(np.einsum("ij,ij->i", R[1:, :, 2], R[:-1, :, 2]), -1, 1))
    x_turn = np.arccos(np.clip(np.einsum("ij,ij->i", R[1:, :, 0], R[:-1, :, 0]), -1, 1))
    assert np.all(x_turn <= view_turn + 1e-6)
    with pytest.raises(InputError):
        route_poses(path[:1])


def test_tree_path_runs_from_the_trachea_to_the_branch_nearest_the_target():
    tree = y_tree()
    target = np.array([0.02, 0.008, -0.025])
    wp = tree_path_waypoints(tree, target)
    assert np.allclose(wp[0], tree.trachea.start)
    d, _ = tree.nearest(target)
    assert np.linalg.norm(wp[-1] - target) == pytest.approx(d[0], abs=5e-4)
    assert np.all(tree.nearest(wp)[0] < 1e-6)  # on the centerlines


@pytest.fixture(scope="module")
def y_map_with_nodule(tmp_path_factory):
    tree = y_tree()
    v, t = tube_mesh(tree, spacing=6e-4)
    nodule = Nodule("N1", [0.026, 0.0, -0.04], 0.004, note="test")
    return save_map(AirwayMap("y", tree, [nodule], v, t), tmp_path_factory.mktemp("fly") / "y")


def test_flythrough_command_writes_png_frames_and_a_gif(y_map_with_nodule, tmp_path, capsys):
    out, gif = tmp_path / "frames", tmp_path / "fly.gif"
    code = main(["flythrough", "--map", str(y_map_with_nodule), "--nodule", "N1", "--out", str(out),
                 "--gif", str(gif), "--step-mm", "4", "--width", "160", "--height", "120", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    pngs = sorted(out.glob("frame_*.png"))
    assert summary["frames"] == len(pngs) >= 10
    first = np.asarray(Image.open(pngs[0]))
    assert first.shape == (120, 160, 3) and first.std() > 5
    with Image.open(gif) as g:
        assert g.is_animated and g.n_frames == len(pngs)


def test_flythrough_command_unknown_nodule_is_one_error_line(y_map_with_nodule, tmp_path, capsys):
    code = main(["flythrough", "--map", str(y_map_with_nodule), "--nodule", "N9", "--out",
                 str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "N9" in err and len(err.strip().splitlines()) == 1
