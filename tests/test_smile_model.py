"""The model-driven smile (``--smile S --smile-model``): the aligned crop, WarpJobs feathered
at the crop border, continuous delta, temporal stability, the yaw fade, loading checks and the
bundled model."""
import dataclasses
import json

import numpy as np
import pytest

from warpcam.realtime.effects import smile as smile_mod
from warpcam.realtime.effects.smile import SmileEffect, SmileSettings
from warpcam.realtime.effects.smile_model import (CROP, DEFAULT_MODEL, ModelSmileEffect,
                                                  SmileModelError, aligned_affine,
                                                  load_smile_model)


class FakeModel:
    """Constant upward flow in the mouth area, a small palette weight."""

    anchors = 0

    def __init__(self):
        self.inputs = []

    def __call__(self, crops, delta, anchors=None):
        crops = np.asarray(crops)
        assert crops.shape[1:] == (3, CROP, CROP) and 0 <= crops.min() and crops.max() <= 1
        self.inputs.append((crops.copy(), np.asarray(delta).copy()))
        n = len(crops)
        flow = np.zeros((n, CROP, CROP, 2), np.float32)
        flow[:, 40:52, 16:48, 1] = 2.0 * np.asarray(delta, np.float32).reshape(-1, 1, 1)
        w = np.full((n, CROP, CROP), 0.1, np.float32)
        return flow, w, np.array([0.8, 0.5, 0.4], np.float32)


def _effect(s, model=None):
    return ModelSmileEffect(SmileSettings(strength=s), model or FakeModel())


def test_spec_has_the_model_option():
    flags = [f for f, _ in smile_mod.SPEC.extra_args]
    assert flags == ["--smile-model"]
    live = smile_mod.LiveSettings(SmileSettings(strength=0.5))
    assert isinstance(smile_mod.SPEC.factory(live, {}), SmileEffect)
    assert isinstance(smile_mod.SPEC.factory(live, {"model": FakeModel()}), ModelSmileEffect)


def test_aligned_crop_is_the_training_crop(astronaut_face):
    from warpcam.training.data import align
    np.testing.assert_allclose(aligned_affine(astronaut_face.landmarks),
                               align.align_affine(astronaut_face.landmarks, 64), atol=1e-9)


def test_jobs_feathered_continuous_and_still(astronaut, astronaut_face):
    m = FakeModel()
    eff = _effect(1.0, m)
    for _ in range(8):  # delta converges (smoothed)
        jobs = eff.jobs(astronaut, [astronaut_face])
    assert len(jobs) == 1 and jobs[0].kind == "face"
    j = jobs[0]
    assert j.flow.shape == (CROP, CROP, 2) and j.alpha.shape == (CROP, CROP)
    for a in (j.alpha, j.flow[..., 1], j.palette_mix[0]):  # zero on the crop border
        assert np.abs(a[0]).max() == 0 and np.abs(a[-1]).max() == 0
        assert np.abs(a[:, 0]).max() == 0 and np.abs(a[:, -1]).max() == 0
    assert m.inputs[-1][1].tolist() == [1.0]  # the network runs at sign(delta)
    calls = eff.calls
    again = eff.jobs(astronaut, [astronaut_face])[0]
    assert eff.calls == calls, "a still face reuses the network's fields"
    np.testing.assert_array_equal(again.flow, j.flow)
    np.testing.assert_array_equal(again.crop_to_frame, j.crop_to_frame)
    half = _effect(0.5, FakeModel())
    for _ in range(8):
        h = half.jobs(astronaut, [astronaut_face])[0]
    np.testing.assert_allclose(h.flow, 0.5 * j.flow, atol=1e-6)
    neg = _effect(-1.0, m)
    for _ in range(8):
        jn = neg.jobs(astronaut, [astronaut_face])[0]
    assert m.inputs[-1][1].tolist() == [-1.0] and jn.flow[..., 1].min() < 0
    assert _effect(0.0).jobs(astronaut, [astronaut_face]) == []


def test_small_motion_keeps_the_crop_and_large_follows(astronaut, astronaut_face):
    eff = _effect(1.0)
    a0 = eff.jobs(astronaut, [astronaut_face])[0].crop_to_frame
    jig = dataclasses.replace(astronaut_face, landmarks=astronaut_face.landmarks + 0.3)
    np.testing.assert_array_equal(eff.jobs(astronaut, [jig])[0].crop_to_frame, a0)
    moved = dataclasses.replace(astronaut_face, landmarks=astronaut_face.landmarks + 20.0)
    a2 = eff.jobs(astronaut, [moved])[0].crop_to_frame
    assert abs(a2[0, 2] - a0[0, 2]) > 5


def test_yaw_fade(astronaut, astronaut_face):
    turned = dataclasses.replace(astronaut_face, yaw=50.0)
    eff = _effect(1.0)
    assert all(eff.jobs(astronaut, [turned]) == [] for _ in range(3))
    half = dataclasses.replace(astronaut_face, yaw=27.5)
    eff = _effect(1.0)
    for _ in range(10):
        j = eff.jobs(astronaut, [half])[0]
    assert 0.2 < j.meta["fade"] < 0.8 and abs(j.meta["strength"] - j.meta["fade"]) < 1e-6


def test_refuses_bad_files(tmp_path):
    with pytest.raises(SmileModelError):
        load_smile_model(tmp_path / "missing.pt2")
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(SmileModelError):
        load_smile_model(tmp_path / "junk.pt2")
    from warpcam.realtime.gaze_model import DEFAULT_MODEL as GAZE
    with pytest.raises(SmileModelError, match="smile"):
        load_smile_model(GAZE)


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="models/smile_deepwarp.pt2 not built")
def test_bundled_model_runs_on_the_astronaut(astronaut, astronaut_face):
    meta = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert meta["kind"] == "warpcam.smile.deepwarp" and meta["training_data"]
    assert DEFAULT_MODEL.stat().st_size < 2_000_000
    model = load_smile_model(device="cpu", threads=None)
    eff = ModelSmileEffect(SmileSettings(strength=1.0), model)
    from warpcam.kernels.cpu import CpuCompositor
    for _ in range(6):
        jobs = eff.jobs(astronaut, [astronaut_face])
    out = CpuCompositor().composite(astronaut, jobs)
    diff = np.abs(out.astype(int) - astronaut.astype(int)).max(axis=2)
    assert diff.max() > 0
    ys, xs = np.nonzero(diff)
    corners = np.array([[0, 0, 1], [63, 0, 1], [0, 63, 1], [63, 63, 1]]) @ jobs[0].crop_to_frame.T
    assert xs.min() >= corners[:, 0].min() - 2 and xs.max() <= corners[:, 0].max() + 2
    assert ys.min() >= corners[:, 1].min() - 2 and ys.max() <= corners[:, 1].max() + 2


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="models/smile_deepwarp.pt2 not built")
def test_cli_smile_model(tmp_path, capsys):
    import cv2
    from warpcam.realtime import cli
    from tests.realdata import astronaut_bgr
    img = astronaut_bgr()
    src, out = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(src), img)
    try:
        code = cli.main(["--input", str(src), "--output", str(out), "--smile", "1",
                         "--smile-model"])
    except SystemExit as exc:
        code = exc.code
    assert code == 0, capsys.readouterr().err
    res = cv2.imread(str(out))
    assert res.shape == img.shape and np.any(res != img)
    try:
        code = cli.main(["--input", str(src), "--output", str(tmp_path / "c.png"), "--smile",
                         "1", "--smile-model", str(tmp_path / "missing.pt2")])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "smile model" in capsys.readouterr().err


def test_landmark_hint_is_the_landmark_smile_in_the_aligned_crop(astronaut, astronaut_face):
    """The hint (and the combination) is the landmark smile's own flow, resampled into the
    aligned crop: warping the frame with it through the crop gives the landmark smile's output
    inside the mouth; +1 lifts the corners, -1 lowers them."""
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.core.types import WarpJob
    from warpcam.realtime.effects.smile_model import landmark_hint
    A = aligned_affine(astronaut_face.landmarks)
    up = landmark_hint(astronaut_face.landmarks, A, 1.0)
    dn = landmark_hint(astronaut_face.landmarks, A, -1.0)
    assert up.shape == (CROP, CROP, 2) and up.dtype == np.float32
    assert np.abs(up[: int(0.45 * CROP)]).max() == 0  # nothing above the mouth ROI
    assert 0.5 < np.abs(up).max() < 6
    # corners at the template's mouth height +- a quarter of the crop: backward flow samples
    # from below where the corners rise (+1) and from above where they fall (-1)
    band = (slice(40, 50), np.r_[14:24, 40:50])
    assert up[band][..., 1].mean() > 0.2 and dn[band][..., 1].mean() < -0.2
    comp = CpuCompositor()
    ref = comp.composite(astronaut, SmileEffect(SmileSettings(strength=1.0), cache=False).jobs(
        astronaut, [astronaut_face]))
    got = comp.composite(astronaut, [WarpJob(crop_to_frame=A, flow=up,
                                             alpha=np.ones((CROP, CROP), np.float32),
                                             kind="face")])
    changed = np.abs(ref.astype(int) - astronaut.astype(int)).max(axis=2) > 8
    assert changed.sum() > 50
    err = np.abs(got.astype(int) - ref.astype(int)).max(axis=2)[changed]
    assert np.median(err) <= 4  # the same warp, sampled through a 64-px field


class FakeHintModel(FakeModel):
    hint = True

    def __call__(self, crops, delta, anchors=None, hint=None):
        assert hint is not None and np.asarray(hint).shape == (len(crops), CROP, CROP, 2)
        self.hints = np.asarray(hint).copy()
        flow, w, pal = super().__call__(crops, delta, anchors)
        return flow + hint, w, pal


def test_hint_model_and_combination(astronaut, astronaut_face):
    from warpcam.realtime.effects.smile_model import landmark_hint
    A = aligned_affine(astronaut_face.landmarks)
    m = FakeHintModel()
    eff = _effect(-1.0, m)
    for _ in range(8):
        j = eff.jobs(astronaut, [astronaut_face])[0]
    np.testing.assert_allclose(m.hints[0], landmark_hint(astronaut_face.landmarks, A, -1.0),
                               atol=1e-6)
    plain = _effect(-1.0, FakeModel())
    mixed = ModelSmileEffect(SmileSettings(strength=-1.0), FakeModel(), landmark_mix=0.5)
    for _ in range(8):
        jp = plain.jobs(astronaut, [astronaut_face])[0]
        jm = mixed.jobs(astronaut, [astronaut_face])[0]
    np.testing.assert_allclose(jm.flow - jp.flow, 0.5 * m.hints[0] * eff.window[..., None],
                               atol=1e-5)
    np.testing.assert_allclose(j.flow - jp.flow, m.hints[0] * eff.window[..., None], atol=1e-5)


def test_combination_default_comes_from_the_model_metadata():
    m = FakeModel()
    assert ModelSmileEffect(SmileSettings(strength=1.0), m).landmark_mix == 0.0
    m.meta = {"landmark_mix": 0.5}
    assert ModelSmileEffect(SmileSettings(strength=1.0), m).landmark_mix == 0.5
    assert ModelSmileEffect(SmileSettings(strength=1.0), m, landmark_mix=0.0).landmark_mix == 0.0


def test_network_gain_scales_the_network_not_the_landmark_part(astronaut, astronaut_face):
    from warpcam.realtime.effects.smile_model import landmark_hint
    A = aligned_affine(astronaut_face.landmarks)
    hint = landmark_hint(astronaut_face.landmarks, A, 1.0)
    m = FakeModel()
    m.meta = {"landmark_mix": 1.0, "network_gain": 0.5}
    eff = ModelSmileEffect(SmileSettings(strength=1.0), m)
    plain = _effect(1.0, FakeModel())
    for _ in range(8):
        j = eff.jobs(astronaut, [astronaut_face])[0]
        jp = plain.jobs(astronaut, [astronaut_face])[0]
    win = eff.window[..., None]
    np.testing.assert_allclose(j.flow, 0.5 * jp.flow + hint * win, atol=1e-5)
    np.testing.assert_allclose(j.palette_mix[0], 0.5 * jp.palette_mix[0], atol=1e-6)
