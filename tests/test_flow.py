"""Flow-field unit tests on a synthetic eye: zero outside the ROI, one-to-one, iris moved by
the requested amount."""
import math

import cv2
import numpy as np
import pytest

from warpcam.kernels.cpu import CpuCompositor
from warpcam.core.eyes import EYEBALL_PER_IRIS, gaze_shift_px
from warpcam.core.eyewarp import iris_shift_flow
from warpcam.core.geometry import flow_jacobian_det
from warpcam.core.types import WarpJob

H, W = 60, 80


def synthetic_eye(iris_c=(40.0, 30.0), r=8.0, open_h=14.0, seed=0):
    """A 60 x 80 eye: skin, an almond opening with white sclera, a textured dark iris with a
    pupil. Returns (BGR image, upper lid chain, lower lid chain)."""
    rng = np.random.default_rng(seed)
    u = np.linspace(10, 70, 13)
    t = (u - 10) / 60
    upper = np.stack([u, 30 - open_h * np.sin(np.pi * t)], 1)
    lower = np.stack([u, 30 + 0.8 * open_h * np.sin(np.pi * t)], 1)
    img = np.full((H, W, 3), (120, 150, 200), np.uint8)  # skin (BGR)
    opening = np.concatenate([upper, lower[-2:0:-1]])
    eye = np.zeros((H, W), np.uint8)
    cv2.fillPoly(eye, [np.round(opening * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    sclera = np.full((H, W, 3), (225, 230, 235), np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    d = np.hypot(xx - iris_c[0], yy - iris_c[1])
    ang = np.arctan2(yy - iris_c[1], xx - iris_c[0])
    iris = (60 + 25 * np.sin(9 * ang) + rng.normal(0, 4, (H, W))).clip(0, 255)
    iris_img = np.stack([iris * 0.6, iris * 0.8, iris * 0.5], -1).astype(np.uint8)
    iris_img[d < 0.4 * r] = 10
    ball = np.where((d < r)[..., None], iris_img, sclera)
    a = eye.astype(np.float32)[..., None] / 255
    img = (a * ball + (1 - a) * img).astype(np.uint8)
    return img, upper, lower


def iris_centroid(img, upper, lower):
    """Centroid of dark (iris) pixels inside the opening."""
    gray = img.astype(np.float32).mean(axis=2)
    opening = np.concatenate([upper, lower[-2:0:-1]])
    m = np.zeros(gray.shape, np.uint8)
    cv2.fillPoly(m, [np.round(opening).astype(np.int32)], 1)
    sel = (gray < 140) & (m > 0)
    yy, xx = np.nonzero(sel)
    return np.array([xx.mean(), yy.mean()])


def apply(img, flow, alpha=None):
    job = WarpJob(crop_to_frame=np.array([[1.0, 0, 0], [0, 1.0, 0]]), flow=flow,
                  alpha=np.ones(flow.shape[:2], np.float32) if alpha is None else alpha)
    return CpuCompositor().composite(img, [job])


def test_gaze_shift_px_eyeball_model():
    # 10 deg up with a 20 px iris: R = 12/11.7 * 20 px, shift = R sin(10 deg) upward.
    d = gaze_shift_px(10.0, 0.0, 20.0)
    assert d[0] == pytest.approx(0.0)
    assert d[1] == pytest.approx(-EYEBALL_PER_IRIS * 20 * math.sin(math.radians(10)))
    # yaw toward the subject's left moves the iris toward image +x
    assert gaze_shift_px(0.0, 10.0, 20.0)[0] > 0


@pytest.mark.parametrize("shift", [(0, -3.0), (0, 3.0), (3.0, 0), (-2.0, -2.0), (0, -5.0)])
def test_flow_zero_outside_opening_and_one_to_one(shift):
    img, upper, lower = synthetic_eye()
    ew = iris_shift_flow(H, W, upper, lower, (40, 30), 8.0, shift)
    flow, mask = ew.flow, ew.mask
    np.testing.assert_allclose(ew.shift, shift)  # no shrink needed on this eye
    moving = np.abs(flow).max(axis=2) > 1e-6
    assert moving.any()
    assert not moving[mask == 0].any(), "flow leaks outside the eye opening"
    assert flow_jacobian_det(flow).min() > 0.0


@pytest.mark.parametrize("seed", range(20))
def test_flow_one_to_one_random_geometry(seed):
    rng = np.random.default_rng(seed)
    c = (40 + rng.uniform(-10, 10), 30 + rng.uniform(-4, 4))
    r = rng.uniform(5, 10)
    _, upper, lower = synthetic_eye(c, r, open_h=rng.uniform(6, 16))
    shift = rng.uniform(-0.5, 0.5, 2) * r
    lid = (rng.uniform(0, 1), rng.uniform(0, 0.5))
    ew = iris_shift_flow(H, W, upper, lower, c, r, shift, lid)
    assert np.isfinite(ew.flow).all()
    assert flow_jacobian_det(ew.flow).min() > 0.0
    # the guard may shrink the shift on narrow eyes, but only along the requested direction
    assert np.linalg.norm(ew.shift) <= np.linalg.norm(shift) + 1e-9
    if np.linalg.norm(ew.shift) > 0:
        cos = ew.shift @ shift / (np.linalg.norm(ew.shift) * np.linalg.norm(shift))
        assert cos == pytest.approx(1.0)


@pytest.mark.parametrize("shift", [(0, -3.0), (0, 2.5), (3.0, 0), (-2.0, 0)])
def test_iris_moves_by_requested_amount(shift):
    # A wide-open eye (iris fully visible) and fixed lids: the iris centroid moves by `shift`.
    img, upper, lower = synthetic_eye(open_h=20)
    flow = iris_shift_flow(H, W, upper, lower, (40, 30), 8.0, shift).flow
    out = apply(img, flow)
    moved = iris_centroid(out, upper, lower) - iris_centroid(img, upper, lower)
    np.testing.assert_allclose(moved, shift, atol=0.35)


def test_no_second_iris_and_lids_stay():
    # Moving the iris up must not leave a copy behind: the number of dark pixels stays about the
    # same, and the skin outside the opening is unchanged.
    img, upper, lower = synthetic_eye(open_h=20)
    ew = iris_shift_flow(H, W, upper, lower, (40, 30), 8.0, (0, -4.0))
    flow, mask = ew.flow, ew.mask
    out = apply(img, flow)
    dark = lambda im: int((im.mean(axis=2) < 140).sum())
    assert abs(dark(out) - dark(img)) < 0.1 * dark(img)
    outside = cv2.erode((mask == 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert np.array_equal(out[outside], img[outside])


def test_lid_follows_upward_gaze():
    img, upper, lower = synthetic_eye()
    up = iris_shift_flow(H, W, upper, lower, (40, 30), 8.0, (0, -3.0), (1.0, 0.0))
    flow, mask_up = up.flow, up.mask
    mask_fixed = iris_shift_flow(H, W, upper, lower, (40, 30), 8.0, (0, -3.0), (0.0, 0.0)).mask
    # the opening grows upward by about the shift at mid-lid
    col = 40
    top_up = np.nonzero(mask_up[:, col] > 0.5)[0].min()
    top_fixed = np.nonzero(mask_fixed[:, col] > 0.5)[0].min()
    assert top_fixed - top_up in (2, 3, 4)
    assert flow_jacobian_det(flow).min() > 0


def test_bad_geometry_raises():
    _, upper, lower = synthetic_eye()
    with pytest.raises(ValueError):
        iris_shift_flow(H, W, upper, lower, (40, 30), 0.0, (0, -3))
    with pytest.raises(ValueError):
        iris_shift_flow(H, W, upper, lower, (np.nan, 30), 8.0, (0, -3))
