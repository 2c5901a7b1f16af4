"""ROI extraction: the CPU reference (cv2.warpAffine), the host build of the CUDA crop kernel and
the torch backend produce the same normalised NCHW RGB batches.

OpenCV's warpAffine on uint8 rounds coordinates to 1/32 pixel and the sample to uint8, so against
it the bound is one grey level (``1 / (255 std)`` in output units) on >= 99 % of values and a few
levels at most on the sharpest edges; the host build and torch both sample in float32 and agree
to float rounding (fp16: to half-precision rounding).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from warpcam.kernels import crop
from warpcam.kernels.torch_backend import TorchCompositor

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
VIDEO = REAL / "videos" / "two_faces_1280x720.mp4"
MEAN, STD = (0.5, 0.45, 0.4), (0.5, 0.25, 0.2)




@pytest.fixture(scope="module")
def torch_be():
    return TorchCompositor("cpu")


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])


def video_frame() -> np.ndarray:
    if not VIDEO.exists():
        pytest.skip(f"real-face video absent ({VIDEO}): shared/data/real is not beside the repo")
    cap = cv2.VideoCapture(str(VIDEO))
    ok, img = cap.read()
    cap.release()
    if not ok:
        pytest.skip(f"cannot decode {VIDEO}")
    return np.ascontiguousarray(img)


def random_affines(rng, n, frame_shape, scale=(0.4, 3.0), margin=0.1):
    H, W = frame_shape[:2]
    out = []
    for _ in range(n):
        t, s = rng.uniform(-0.6, 0.6), rng.uniform(*scale)
        tx = rng.uniform(-margin * W, (1 + margin) * W - 60)
        ty = rng.uniform(-margin * H, (1 + margin) * H - 60)
        out.append([[s * np.cos(t), -s * np.sin(t), tx], [s * np.sin(t), s * np.cos(t), ty]])
    return np.array(out)


def levels(a, b, std=STD) -> np.ndarray:
    """|a - b| in grey levels of the 0-255 input."""
    unit = (1.0 / (255.0 * np.asarray(std, np.float64)))[None, :, None, None]
    return np.abs(a.astype(np.float64) - b.astype(np.float64)) / unit


@pytest.mark.parametrize("frame_fn", [astronaut, video_frame], ids=["astronaut", "video"])
@pytest.mark.parametrize("border", ["replicate", "constant"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cpu_host_torch_crops_agree(frame_fn, border, dtype, host, torch_be):
    frame = frame_fn()
    rng = np.random.default_rng(7)
    a = random_affines(rng, 8, frame.shape)
    kw = dict(size=(41, 51), mean=MEAN, std=STD, dtype=dtype, flip=[k % 2 == 0 for k in range(8)],
              border=border)
    ref = crop.crop_rois(frame, a, **kw)
    got_host = host.crop_rois(frame, a, **kw)
    got_torch = torch_be.crop_rois(frame, a, **kw).numpy()
    for got in (ref, got_host, got_torch):
        assert got.shape == (8, 3, 41, 51) and got.dtype == dtype and got.flags.c_contiguous
    for name, got in (("host", got_host), ("torch", got_torch)):
        d = levels(got, ref)
        assert (d <= 1.0).mean() >= 0.99, f"{name} vs cpu: {(d <= 1).mean():.4f} within 1 level"
        # OpenCV's uint8 rounding alone gives a mean of 0.25 levels.
        assert d.mean() < 0.35 and d.max() < 6, f"{name} vs cpu: mean {d.mean()}, max {d.max()}"
    tol = 0.01 if dtype == np.float32 else 0.12  # fp16 half-ulp at |x| <= 4: 2**-9 (~0.1 level)
    d = levels(got_host, got_torch)
    assert d.max() <= tol, f"host vs torch: max {d.max()} levels"


def test_integer_translation_crop_is_exact_slicing(host, torch_be):
    frame = astronaut()
    x0, y0, h, w = 150, 90, 41, 51
    a = np.array([[[1.0, 0, x0], [0, 1.0, y0]]])
    want = frame[y0:y0 + h, x0:x0 + w, ::-1].astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    for name, got in (("cpu", crop.crop_rois(frame, a, (h, w))),
                      ("host", host.crop_rois(frame, a, (h, w))),
                      ("torch", torch_be.crop_rois(frame, a, (h, w)).numpy())):
        # torch: grid_sample's normalised coordinates cost ~1e-5 px at these positions.
        np.testing.assert_allclose(got, want, atol=2e-5 if name == "torch" else 1e-6,
                                   err_msg=name)


def test_flip_mirrors_left_right(host, torch_be):
    frame = astronaut()
    a = random_affines(np.random.default_rng(3), 4, frame.shape, scale=(1.0, 2.0))
    for name, fn in (("cpu", crop.crop_rois), ("host", host.crop_rois),
                     ("torch", lambda *a, **k: torch_be.crop_rois(*a, **k).numpy())):
        plain = fn(frame, a, (32, 40), MEAN, STD)
        flipped = fn(frame, a, (32, 40), MEAN, STD, flip=True)
        d = levels(flipped, plain[..., ::-1])
        # Same sample points; the float paths may differ in the last bit, OpenCV's fixed point
        # by one 1/32-pixel rounding step.
        if name == "cpu":
            assert (d <= 1.0).mean() >= 0.99 and d.max() < 6, name
        else:
            assert d.max() <= 0.01, name
        some = fn(frame, a, (32, 40), MEAN, STD, flip=[False, True, False, True])
        np.testing.assert_array_equal(some[0], plain[0])
        np.testing.assert_array_equal(some[1], flipped[1])


def test_channel_order_and_normalisation(host, torch_be):
    frame = np.zeros((20, 30, 3), np.uint8)
    frame[..., 0] = 255  # pure blue in BGR
    a = np.array([[[1.0, 0, 5], [0, 1.0, 5]]])
    for name, got in (("cpu", crop.crop_rois(frame, a, (8, 8), 0.5, 0.5)),
                      ("host", host.crop_rois(frame, a, (8, 8), 0.5, 0.5)),
                      ("torch", torch_be.crop_rois(frame, a, (8, 8), 0.5, 0.5).numpy())):
        # RGB output, [-1, 1]: R = G = -1, B = +1.
        np.testing.assert_allclose(got[0, 0], -1.0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got[0, 1], -1.0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got[0, 2], 1.0, atol=1e-6, err_msg=name)


def test_constant_border_reads_black(host, torch_be):
    frame = np.full((20, 30, 3), 200, np.uint8)
    a = np.array([[[1.0, 0, -100], [0, 1.0, -100]]])  # wholly outside the frame
    for name, got in (("cpu", crop.crop_rois(frame, a, (4, 4), 0, 1, border="constant")),
                      ("host", host.crop_rois(frame, a, (4, 4), 0, 1, border="constant")),
                      ("torch", torch_be.crop_rois(frame, a, (4, 4), 0, 1,
                                                   border="constant").numpy())):
        assert np.all(got == 0), name
    for name, got in (("cpu", crop.crop_rois(frame, a, (4, 4), 0, 1)),
                      ("host", host.crop_rois(frame, a, (4, 4), 0, 1))):
        np.testing.assert_allclose(got, 200 / 255, atol=1e-6, err_msg=name)


def test_one_launch_for_several_networks(host, torch_be):
    # Eyes, mouth and face crops of two faces in one launch of the crop kernel: each group's
    # result equals cropping it alone.
    frame = astronaut()
    rng = np.random.default_rng(5)
    specs = [crop.CropSpec(random_affines(rng, 4, frame.shape), (41, 51), 0.5, 0.5,
                           flip=[False, True, False, True]),
             crop.CropSpec(random_affines(rng, 2, frame.shape), (64, 64), MEAN, STD),
             crop.CropSpec(random_affines(rng, 2, frame.shape), (128, 128), 0.0, 1.0,
                           border="constant")]
    for dtype in (np.float32, np.float16):
        together = host.crop_groups(frame, specs, dtype)
        alone = [host.crop_rois(frame, s.affines, s.size, s.mean, s.std, dtype, s.flip, s.border)
                 for s in specs]
        by_torch = torch_be.crop_groups(frame, specs, dtype)
        by_cpu = crop.crop_groups(frame, specs, dtype)
        for k, s in enumerate(specs):
            assert together[k].shape == (len(s.affines), 3) + s.size
            np.testing.assert_array_equal(together[k], alone[k])
            assert by_torch[k].shape == together[k].shape == by_cpu[k].shape
            assert by_cpu[k].dtype == together[k].dtype == dtype


def test_float_to_half_is_bit_exact(host):
    # The crop kernel's fp16 store (host branch of wc_float_to_half_bits) rounds like numpy:
    # to nearest, ties to even, through subnormals, overflow and infinities.
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, 1.0, -1.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, np.inf,
                        -np.inf, 2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0000001, 2.0 ** -26,
                        2.0 ** -14, 2.0 ** -14 * (1 - 2.0 ** -11), 6.1e-5, 1.0 + 2.0 ** -11,
                        1.0 + 3 * 2.0 ** -11, 1e-8], np.float32)
    bits = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ties = (np.arange(-3000, 3000, dtype=np.float32) + 0.5) * np.float32(2.0 ** -11)
    x = np.concatenate([special, bits[np.isfinite(bits)], ties,
                        rng.uniform(-5, 5, 100_000).astype(np.float32)])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    np.testing.assert_array_equal(host.float_to_half(x).view(np.uint16), want.view(np.uint16))
    assert np.isnan(host.float_to_half(np.array([np.nan], np.float32))[0])


@pytest.mark.parametrize("bad, match", [
    (dict(affines=np.zeros((2, 3, 3))), "affines must be"),
    (dict(size=(0, 4)), "size must be positive"),
    (dict(size=(4,)), "size must be"),
    (dict(mean=(0.5, 0.5)), "mean and std"),
    (dict(std=0.0), "std must be positive"),
    (dict(dtype=np.int32), "dtype must be"),
    (dict(flip=[True, False, True]), "flip must be"),
    (dict(border="reflect"), "border must be"),
])
def test_bad_arguments_raise(bad, match, host, torch_be):
    frame = np.zeros((10, 12, 3), np.uint8)
    kw = dict(affines=np.tile(np.eye(2, 3), (2, 1, 1)), size=(4, 4))
    kw.update(bad)
    for fn in (crop.crop_rois, host.crop_rois, torch_be.crop_rois):
        with pytest.raises(ValueError, match=match):
            fn(frame, **kw)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        crop.crop_rois(np.zeros((10, 12), np.uint8), np.eye(2, 3), (4, 4))
