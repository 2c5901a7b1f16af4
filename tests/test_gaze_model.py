"""The model-driven gaze effect: loading checks, the GPU fallbacks, WarpJobs per eye, the
pipeline and the CLI, with the committed model and tiny exported ones."""
import json
import logging
import zipfile

import numpy as np
import pytest
import torch

from warpcam.core.eyes import eye_roi
from warpcam.realtime.effects.gaze import GazeEffect, GazeSettings
from warpcam.realtime.gaze_model import (CROP_H, CROP_W, DEFAULT_MODEL, GazeModelError,
                                         eye_crop, load_gaze_model)
from warpcam.realtime.runtime import _tensorrt_module
from warpcam.realtime.effects.gaze_model import ModelEyeWarp
from warpcam.realtime.tracker import FaceTracker
from tests.realdata import astronaut_bgr


def ModelGazeEffect(settings, model, cache=True):
    """The gaze effect with the network as its fulfiller (what ``--gaze-model`` builds)."""
    return GazeEffect(settings, ModelEyeWarp(model, cache=cache))




@pytest.fixture(scope="module")
def model():
    return load_gaze_model(device="cpu", threads=None)


def test_committed_model_is_small_and_described():
    assert DEFAULT_MODEL.exists(), "models/gaze_deepwarp.pt2 is the out-of-the-box gaze model"
    assert DEFAULT_MODEL.stat().st_size < 2_000_000
    meta = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert meta["kind"] == "warpcam.gaze.deepwarp"
    assert meta["crop"]["h"] == CROP_H and meta["crop"]["w"] == CROP_W
    assert meta["angle_units"] == "degrees" and meta["training_data"] and meta["commit"]


def test_bad_files_fail_clearly_before_any_frame(tmp_path):
    with pytest.raises(GazeModelError, match="not found"):
        load_gaze_model(tmp_path / "missing.pt2")
    (tmp_path / "empty.pt2").write_bytes(b"")
    with pytest.raises(GazeModelError, match="empty"):
        load_gaze_model(tmp_path / "empty.pt2")
    data = DEFAULT_MODEL.read_bytes()
    (tmp_path / "trunc.pt2").write_bytes(data[: len(data) // 2])
    with pytest.raises(GazeModelError, match="truncated"):
        load_gaze_model(tmp_path / "trunc.pt2")
    with zipfile.ZipFile(tmp_path / "other.pt2", "w") as z:
        z.writestr("other/data.txt", "x")
    with pytest.raises(GazeModelError, match="not a warpcam gaze model"):
        load_gaze_model(tmp_path / "other.pt2")
    # a valid archive whose metadata says it is another kind of model
    with zipfile.ZipFile(DEFAULT_MODEL) as src, zipfile.ZipFile(tmp_path / "kind.pt2", "w") as dst:
        for n in src.namelist():
            b = src.read(n)
            if n.endswith("warpcam_meta.json"):
                m = json.loads(b)
                m["kind"] = "warpcam.smile.deepwarp"
                b = json.dumps(m).encode()
            dst.writestr(n, b)
    with pytest.raises(GazeModelError, match="smile"):
        load_gaze_model(tmp_path / "kind.pt2")


def test_gpu_paths_fall_back_with_one_line(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="warpcam")
    if not torch.cuda.is_available():
        m = load_gaze_model(device="cuda", threads=None)
        assert m.backend == "torch-cpu" and m.device == "cpu"
        msgs = [r.getMessage() for r in caplog.records]
        assert any("no CUDA device" in s for s in msgs) and all("\n" not in s for s in msgs)
    caplog.clear()
    import builtins
    real_import = builtins.__import__

    def no_trt(name, *a, **k):
        if name == "torch_tensorrt":
            raise ImportError("No module named 'torch_tensorrt'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_trt)
    assert _tensorrt_module(None, DEFAULT_MODEL, {}, None) is None
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "torch-tensorrt is not installed" in msgs[0]
    assert "\n" not in msgs[0]


def test_eye_crop_geometry_matches_the_landmark_effect(astronaut_face):
    for side in ("right", "left"):
        A, flip, pts, eye_w, axis = eye_crop(astronaut_face.landmarks, side)
        centre, angle, w = eye_roi(astronaut_face.landmarks, side)
        assert flip == (side == "left")
        # the crop centre is the ROI centre, the crop spans 2 x the eye width
        np.testing.assert_allclose(A @ [(CROP_W - 1) / 2, (CROP_H - 1) / 2, 1], centre, atol=1e-6)
        assert np.hypot(*A[:, 0]) * CROP_W == pytest.approx(2 * w)
        # network view: outer corner on the left, inner corner on the right, iris inside
        assert pts[0, 0] < pts[8, 0] and pts[0, 0] < pts[18, 0] < pts[8, 0]


def test_model_jobs_move_the_iris_up(astronaut_face, model):
    eff = ModelGazeEffect(GazeSettings(pitch_deg=10.0), model)
    img = astronaut_bgr()
    jobs = eff.jobs(img, [astronaut_face])
    assert [j.kind for j in jobs] == ["eye_right", "eye_left"]
    assert eff.fulfiller.calls == 1  # both eyes in one batched call
    for j in jobs:
        assert j.flow.shape == (CROP_H, CROP_W, 2) and j.alpha.shape == (CROP_H, CROP_W)
        assert j.alpha[0].max() == 0 and j.alpha[:, 0].max() == 0  # feathered to the crop edge
        _, _, pts, _, _ = eye_crop(astronaut_face.landmarks, j.kind[4:])
        u, v = pts[18]
        if j.kind == "eye_left":
            u = CROP_W - 1 - u
        iy, ix = int(round(v)), int(round(u))
        # backward warp: the iris moves up, so the output samples from below (flow_y > 0)
        assert j.flow[iy - 2:iy + 3, ix - 2:ix + 3, 1].mean() > 0.3
        assert abs(j.flow[iy - 2:iy + 3, ix - 2:ix + 3, 0].mean()) < j.flow[iy - 2:iy + 3, ix - 2:ix + 3, 1].mean()
        assert j.meta["iris_shift_px"][1] < 0 and j.meta["model"]
    # still eye: fields come from the cache
    eff.jobs(img, [astronaut_face])
    assert eff.fulfiller.calls == 1
    # nothing asked: no jobs
    assert ModelGazeEffect(GazeSettings(), model).jobs(img, [astronaut_face]) == []


def test_left_and_right_eyes_are_mirror_consistent(model):
    """A mirror-symmetric face: the two eyes' flows mirror each other (x negated)."""
    img = astronaut_bgr()
    with FaceTracker(max_faces=1, static_images=True) as tr:
        f = tr.track(img)[0]
    eff = ModelGazeEffect(GazeSettings(yaw_deg=10.0), model, cache=False)
    jobs = {j.kind: j for j in eff.jobs(img, [f])}
    fr, fl = jobs["eye_right"].flow, jobs["eye_left"].flow
    # both irises move toward image +x for a yaw toward the subject's left
    _, _, pr, _, _ = eye_crop(f.landmarks, "right")
    _, _, pl, _, _ = eye_crop(f.landmarks, "left")
    for fl_, p, flip in ((fr, pr, False), (fl, pl, True)):
        u = CROP_W - 1 - p[18, 0] if flip else p[18, 0]
        iy, ix = int(round(p[18, 1])), int(round(u))
        assert fl_[iy - 2:iy + 3, ix - 2:ix + 3, 0].mean() < -0.3  # samples from the left


def test_pipeline_and_cli_use_the_model(tmp_path, astronaut_face, model):
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects import build_effects
    from warpcam.realtime.pipeline import Pipeline
    from warpcam.core.types import Frame

    img = astronaut_bgr()
    with FaceTracker(max_faces=1, static_images=True) as tr:
        pipe = Pipeline(tr, CpuCompositor(), build_effects(gaze=GazeSettings(pitch_deg=10),
                                                           options={"gaze": {"model": model}}))
        out, faces, jobs = pipe.process(Frame(img.copy(), 0))
    assert isinstance(pipe.effect("gaze").fulfiller, ModelEyeWarp) and len(jobs) == 2
    diff = np.abs(out.astype(int) - img.astype(int)).sum(-1)
    ys, xs = np.nonzero(diff)
    assert len(ys) > 50
    eyes = astronaut_face.landmarks[[33, 133, 263, 362]]
    assert xs.min() >= eyes[:, 0].min() - 40 and xs.max() <= eyes[:, 0].max() + 40
    assert ys.min() >= eyes[:, 1].min() - 40 and ys.max() <= eyes[:, 1].max() + 40

    import cv2
    from warpcam.realtime.cli import main
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), img)
    assert main(["--input", str(src), "--output", str(tmp_path / "out.png"), "--gaze-pitch", "10",
                 "--gaze-model", "--quiet"]) == 0
    res = cv2.imread(str(tmp_path / "out.png"))
    assert np.abs(res.astype(int) - img.astype(int)).max() > 20
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a model")
    assert main(["--input", str(src), "--output", str(tmp_path / "o2.png"),
                 "--gaze-model", str(bad), "--quiet"]) == 2
    assert not (tmp_path / "o2.png").exists()
