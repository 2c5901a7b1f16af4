"""The AU editor's landmark term (training/au/geometry.py): its measure is the estimator's, the
points it moves are where the tracker finds them after a real warp, the augmented landmark
coordinates follow the image, and the term teaches the flow a single AU."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tests import realdata
from tests.test_training_au import SIZE, _tiny_dataset
from warpcam.realtime import au
from warpcam.realtime.tracker import FaceTracker
from warpcam.training.au import geometry as G
from warpcam.training.au.data import AUFaces


def _track(img):
    with FaceTracker(max_faces=1, static_images=True) as tr:
        faces = tr.track(img)
    assert faces, "no face found"
    return au._points3d(faces[0])


@pytest.fixture(scope="module")
def astronaut():
    img = cv2.resize(realdata.astronaut_bgr(), (384, 384), interpolation=cv2.INTER_AREA)
    return img, _track(img)


def test_torch_measure_equals_the_estimators(astronaut):
    _, p = astronaut
    want = au.measure(p)
    got = G.moved_measure(torch.tensor(p)[None], torch.tensor(G.frame_params(p))[None])[0]
    assert np.allclose(got.numpy(), [want[k] for k in au.AU_NAMES], atol=1e-9)


def _stretch_flow(p, h, w, amount):
    """A smooth backward warp that widens the mouth horizontally about its centre (a lip
    stretch, AU20): ``F_x = -amount * (x - cx) * g``, ``g`` a Gaussian around the mouth."""
    cx, cy = p[list(au.MOUTH_CORNERS), :2].mean(0)
    half = 0.5 * float(np.linalg.norm(p[au.MOUTH_CORNERS[1], :2] - p[au.MOUTH_CORNERS[0], :2]))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    g = np.exp(-(((xs - cx) / (2.2 * half)) ** 2 + ((ys - cy) / (1.2 * half)) ** 2))
    fx = -amount * (xs - cx) * g
    return np.stack([fx, np.zeros_like(fx)]).astype(np.float32)


def test_moved_points_are_where_the_tracker_finds_them_after_the_warp(astronaut):
    """Warp a real face with a backward flow (cv2.remap), track it again: the landmarks sit
    where :func:`moved_points` says, and the AU20 change the term predicts is the one the
    estimator measures (same sign, within 35 %)."""
    img, p = astronaut
    h, w = img.shape[:2]
    flow = _stretch_flow(p, h, w, 0.35)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = cv2.remap(img, xs + flow[0], ys + flow[1], cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    p2 = _track(warped)
    pred = G.moved_points(torch.tensor(flow)[None], torch.tensor(p[None, :, :2]).float())[0]
    mouth = list(au.MOUTH_CORNERS)
    moved = np.linalg.norm(pred.numpy()[mouth] - p[mouth, :2], axis=1)
    err = np.linalg.norm(pred.numpy()[mouth] - p2[mouth, :2], axis=1)
    assert moved.min() > 4.0, moved           # the corners moved several pixels ...
    assert err.max() < 0.35 * moved.min(), (err, moved)  # ... to where the tracker finds them
    prm = torch.tensor(G.frame_params(p))[None]
    pp = torch.tensor(p)[None].clone()
    pp[0, :, :2] = pred.double()
    j = au.AU_NAMES.index("AU20")
    predicted = float(G.intensity(G.moved_measure(pp, prm))[0, j]
                      - G.intensity(G.moved_measure(torch.tensor(p)[None], prm))[0, j])
    measured = au.GAINS["AU20"] * (au.measure(p2)["AU20"] - au.measure(p)["AU20"])
    assert predicted > 1.0 and measured > 0, (predicted, measured)
    assert abs(predicted - measured) < 0.35 * predicted, (predicted, measured)


def test_augmented_landmarks_follow_the_image(tmp_path):
    data = _tiny_dataset(tmp_path / "d")
    G.crop_landmarks(data, progress=False)
    faces = AUFaces(data, "train", SIZE, geometry=True)
    assert bool(faces.has_points.all())
    g = torch.Generator().manual_seed(5)
    idx = torch.arange(len(faces))
    x, _, _, _, geo = faces.batch(idx, g, augment=True, geometry=True)
    x0, _, _, _, geo0 = faces.batch(idx, g, augment=False, geometry=True)
    assert bool(geo["flip"].any()) and not bool(geo["flip"].all())

    def colours(img, xy):
        grid = (xy + 0.5) * (2.0 / img.shape[-1]) - 1.0
        return torch.nn.functional.grid_sample(img, grid[:, :, None], align_corners=False)

    same = (colours(x, geo["xy"]) - colours(x0, geo0["xy"])).abs().mean()
    other = (colours(x, geo["xy"]) - colours(x0, geo0["xy"].roll(1, 0))).abs().mean()
    assert float(same) < 0.1 * float(other), (same, other)


def test_geo_term_teaches_the_flow_a_single_au(tmp_path):
    """A few Adam steps of the landmark term alone on the flow's condition basis: the loss
    falls, and AU20 +1 then moves AU20 up by more than the other AUs move."""
    from tests.test_training_au import _flow_net
    from warpcam.training.au.model import AU_NAMES
    data = _tiny_dataset(tmp_path / "d")
    G.crop_landmarks(data, progress=False)
    faces = AUFaces(data, "train", SIZE, geometry=True)
    net = _flow_net()
    x, _, _, _, geo = faces.batch(torch.arange(len(faces)), torch.Generator().manual_seed(0),
                                  augment=False, geometry=True)
    j = AU_NAMES.index("AU20")
    rel = torch.zeros(len(x), len(AU_NAMES))
    rel[:, j] = 1.0
    opt = torch.optim.Adam([net.G.flow_basis], lr=0.05)
    first = None
    for _ in range(30):
        out = G.geo_loss(net.G(x, rel)["flow"], geo["points"], geo["params"], geo["xy"],
                         geo["flip"], rel, geo["valid"])
        first = float(out["geo"].detach()) if first is None else first
        opt.zero_grad()
        out["geo"].backward()
        opt.step()
    assert float(out["geo"].detach()) < 0.8 * first, (first, float(out["geo"].detach()))
    ch = out["geo_change"]
    others = torch.cat([ch[:, :j], ch[:, j + 1:]], 1).abs().mean()
    assert float(ch[:, j].mean()) > 0.5 and float(ch[:, j].mean()) > float(others)


def test_training_with_the_landmark_term(tmp_path):
    """``--geo-weight`` trains (the term is logged) and refuses to run without ``--flow`` or
    without the landmark file."""
    from tests.test_training_au import _train
    data = _tiny_dataset(tmp_path / "d")
    with pytest.raises(SystemExit, match="needs --flow"):
        _train(data, tmp_path / "x", "--geo-weight", "100", "--stop-at-step", "1")
    with pytest.raises(SystemExit, match="au_landmarks_128.npz: missing"):
        _train(data, tmp_path / "y", "--flow", "--geo-weight", "100", "--stop-at-step", "1")
    G.crop_landmarks(data, progress=False)
    out = _train(data, tmp_path / "a", "--flow", "--geo-weight", "100", "--stop-at-step", "2")
    assert out["steps"] == 2 and out["final_losses"]["geo"] > 0
    assert "geo_AU20+" in out["val"][-1]
