"""DeepWarp gaze training on tiny data: renderer, pair datasets, loss, checkpoints, DDP,
export, public-dataset loaders, mining and calibration."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from warpcam.training.gaze import data as gdata
from warpcam.training.gaze.model import (DeepWarpGaze, GazeInference, GazeNetConfig, anchor_points,
                                 gaze_loss, warp)
from warpcam.training.gaze.render import EYE_R, IRIS_R, render_groups
from warpcam.training.gaze.train import get_args_parser, main as train_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    d = render_groups(24, 4, seed=3)
    p = tmp_path_factory.mktemp("gaze") / "tiny.npz"
    np.savez(p, **d)
    return p


def _args(out, npz, *extra):
    return get_args_parser().parse_args(
        ["--synthetic", str(npz), "--output-dir", str(out), "--batch-size", "8",
         "--steps-per-epoch", "3", "--epochs", "2", "--no-progress", "--threads", "1",
         "--log-every", "1", "--device", "cpu", *extra])


def test_renderer_pairs_have_exact_angles():
    d = render_groups(6, 3, seed=1)
    assert d["images"].shape == (6, 3, 41, 51, 3) and d["images"].dtype == np.uint8
    ds = gdata.SyntheticPairs(d)
    assert len(ds) == 6 * 3 * 2
    it = ds[0]
    g, a, b = ds.index[0]
    np.testing.assert_allclose(it["angle"], d["gaze"][g, b] - d["gaze"][g, a])
    # The iris landmark moves the way the angle says: yaw + -> crop +x, pitch + -> up (y -).
    for g in range(6):
        for a in range(3):
            for b in range(3):
                dg = d["gaze"][g, b] - d["gaze"][g, a]
                dl = d["landmarks"][g, b, 18] - d["landmarks"][g, a, 18]
                if abs(dg[1]) > 8:
                    assert np.sign(dl[0]) == np.sign(dg[1])
                if abs(dg[0]) > 8:
                    assert np.sign(dl[1]) == -np.sign(dg[0])
    # Frontal head, pure yaw change: the iris moves by 12 mm * sin (the pipeline's eyeball model).
    from warpcam.training.gaze.render import crop_affines, render, sample_eyes
    rng = np.random.default_rng(0)
    p = sample_eyes(rng, 2)
    p["head_yaw"][:] = 0
    p["head_pitch"][:] = 0
    p["jitter"][:] = 0
    gaze = np.array([[0.0, 0.0], [0.0, 20.0]], np.float32)
    A = crop_affines(p, np.zeros(2))
    p2 = {k: v[[0, 0]] for k, v in p.items()}
    _, lms, iris_d = render(p2, gaze, A[[0, 0]], rng)
    moved = lms[1, 18, 0] - lms[0, 18, 0]
    expect = 12 / 11.7 * iris_d[0] * math.sin(math.radians(20))
    assert moved == pytest.approx(expect, rel=0.02)
    assert iris_d[0] * (2 * float(p["eye_w"][0]) / 51) == pytest.approx(2 * IRIS_R, rel=0.05)
    assert EYE_R == 12.0


def test_warp_is_backward_in_pixels():
    img = torch.zeros(1, 3, 41, 51)
    img[:, :, 20, 30] = 1.0
    flow = torch.zeros(1, 2, 41, 51)
    flow[:, 0] = 5.0  # out(u, v) = in(u + 5, v)
    out = warp(img, flow)
    assert out[0, 0, 20, 25] == pytest.approx(1.0, abs=1e-4)


def test_training_step_lowers_the_loss(tiny_npz):
    torch.manual_seed(0)
    ds = gdata.SyntheticPairs(str(tiny_npz))
    batch = gdata.collate([ds[i] for i in range(0, len(ds), 9)][:8])
    for cfg in (GazeNetConfig(), GazeNetConfig(lcm=False, anchors=True, fine_layers=3)):
        net = DeepWarpGaze(cfg)
        opt = torch.optim.Adam(net.parameters(), lr=6e-3)
        anchors = anchor_points(batch["landmarks"]) if cfg.anchors else None
        losses = []
        for _ in range(20):
            loss, parts = gaze_loss(net(batch["src"], batch["angle"], anchors), batch["tgt"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.85 * losses[0], (cfg, losses[0], losses[-1])


def test_untrained_model_is_identity_and_anchor_option_is_checked():
    net = DeepWarpGaze(GazeNetConfig())
    x = torch.rand(2, 3, 41, 51)
    out = net(x, torch.tensor([[10.0, 0.0], [0.0, -10.0]]))
    assert out["flow"].abs().max() == 0  # zero-initialised flow heads
    assert out["lcm_weight"].max() < 0.01
    with pytest.raises(ValueError, match="anchors"):
        DeepWarpGaze(GazeNetConfig(anchors=True))(x, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="41"):
        net(torch.rand(1, 3, 40, 51), torch.zeros(1, 2))


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_checkpoint_resume_is_exact(tmp_path, tiny_npz):
    a = _args(tmp_path / "straight", tiny_npz)
    train_main(a)
    b = _args(tmp_path / "split", tiny_npz, "--stop-at-step", "4")
    sb = train_main(b)
    assert sb["steps"] == 4 and sb["stopped_by_budget"]
    train_main(_args(tmp_path / "split", tiny_npz, "--resume", "auto"))
    s1, s2 = _state(tmp_path / "straight/checkpoint.pt"), _state(tmp_path / "split/checkpoint.pt")
    assert s1["step"] == s2["step"] == 6
    for k in s1["model"]:
        assert torch.equal(s1["model"][k], s2["model"][k]), k
    assert (tmp_path / "straight/tb/scalars.jsonl").exists()
    try:  # TensorBoard is the [train] extra; without it the JSON-lines log stands alone
        import tensorboard  # noqa: F401
        has_tb = True
    except ImportError:
        has_tb = False
    assert bool(list((tmp_path / "straight/tb").glob("events.out.tfevents.*"))) == has_tb
    with pytest.raises(SystemExit, match="no such checkpoint"):
        train_main(_args(tmp_path / "x", tiny_npz, "--resume", str(tmp_path / "nope.pt")))


def test_sharded_sampler_splits_global_batches():
    one = list(gdata.ShardedBatchSampler(40, 8, 0, 1, seed=5))
    r0 = list(gdata.ShardedBatchSampler(40, 8, 0, 2, seed=5))
    r1 = list(gdata.ShardedBatchSampler(40, 8, 1, 2, seed=5))
    assert [a + b for a, b in zip(r0, r1)] == one
    s = gdata.ShardedBatchSampler(40, 8, 0, 1, seed=5)
    s.set_epoch(0, skip=2)
    assert list(s) == one[2:]
    with pytest.raises(ValueError, match="multiple"):
        gdata.ShardedBatchSampler(40, 7, 0, 2)


def test_torchrun_two_processes_match_one(tmp_path, tiny_npz):
    common = ["--synthetic", str(tiny_npz), "--batch-size", "8", "--steps-per-epoch", "3",
              "--epochs", "1", "--no-progress", "--threads", "1", "--device", "cpu",
              "--mined", str(_mined_fixture(tmp_path)), "--mix", "0.7", "0.3",
              "--mix-length", "64", "--val-synthetic", str(tiny_npz), "--val-size", "16"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "warpcam.training.gaze.train", *common,
                        "--output-dir", str(tmp_path / "ddp")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    train_main(get_args_parser().parse_args(common + ["--output-dir", str(tmp_path / "one")]))
    s1, s2 = _state(tmp_path / "one/checkpoint.pt"), _state(tmp_path / "ddp/checkpoint.pt")
    assert s2["extra"]["world_size"] == 2 and s1["extra"]["world_size"] == 1
    for k in s1["model"]:
        torch.testing.assert_close(s1["model"][k], s2["model"][k], atol=2e-6, rtol=1e-5)
    summ = json.loads((tmp_path / "one/summary.json").read_text())
    assert summ["val"] and summ["val"][0]["n"] == 16


def _mined_fixture(tmp_path):
    d = render_groups(8, 2, seed=9)
    pairs = [dict(src=d["images"][i, 0], tgt=d["images"][i, 1],
                  angle=d["gaze"][i, 1] - d["gaze"][i, 0], landmarks=d["landmarks"][i, 0],
                  iris_d=d["iris_d"][i, 0]) for i in range(8)]
    p = tmp_path / "mined.npz"
    gdata.save_pairs(p, pairs, source="mined")
    assert len(gdata.StoredPairs(p)) == 8
    return p


def test_help_documents_the_options():
    r = subprocess.run([sys.executable, "-m", "warpcam.training.gaze.train", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for opt in ("--synthetic", "--mined", "--columbia", "--unityeyes", "--resume", "--amp",
                "--seed", "--max-minutes", "torchrun"):
        assert opt in r.stdout


def _export_tiny(tmp_path, **cfg):
    from warpcam.training.gaze.export import export, metadata
    torch.manual_seed(1)
    net = DeepWarpGaze(GazeNetConfig(**cfg))
    with torch.no_grad():  # make the flow non-trivial
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = export(net, metadata(net.cfg, {"extra": {"data": ["test"]}, "step": 1}),
                 tmp_path / "m.pt2")
    return net.eval(), out


@pytest.mark.parametrize("cfg", [{}, {"anchors": True, "lcm": False}])
def test_export_and_load_match_eager(tmp_path, cfg):
    from warpcam.realtime.gaze_model import load_gaze_model
    net, path = _export_tiny(tmp_path, **cfg)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["kind"] == "warpcam.gaze.deepwarp" and meta["angle_units"] == "degrees"
    assert meta["crop"]["h"] == 41 and meta["crop"]["w"] == 51
    m = load_gaze_model(path, device="cpu", threads=None)
    x = torch.rand(5, 3, 41, 51)
    a = torch.randn(5, 2) * 10
    anc = torch.rand(5, 7, 2) * 40
    with torch.no_grad():
        f0, w0, p0 = GazeInference(net)(x, a, anc if cfg else None)
    f, w, p = m(x.numpy(), a.numpy(), anc.numpy())
    assert np.abs(f0).max() > 0.01
    np.testing.assert_allclose(f, f0.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(w, w0[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(p, p0.numpy(), atol=1e-6)


# -- public data set loaders, on fixtures written in their layouts ------------------------------

def _fake_face_landmarks(eye_right_c, eye_left_c, eye_w, iris_off):
    """478 x 2 landmarks with only the eye points meaningful (both eyes level)."""
    from warpcam.core import landmarks as lm
    pts = np.zeros((478, 2))
    for side, c in (("right", eye_right_c), ("left", eye_left_c)):
        ix = lm.eye_indices(side)
        sign = 1 if side == "right" else -1  # right eye: outer corner on the image left
        xs = np.linspace(-eye_w / 2, eye_w / 2, 9) * sign
        prof = np.sin(np.linspace(0, np.pi, 9))
        pts[ix["upper"]] = np.stack([c[0] + xs, c[1] - 0.3 * eye_w * prof], 1)
        pts[ix["lower"]] = np.stack([c[0] + xs, c[1] + 0.2 * eye_w * prof], 1)
        ic = np.array(c) + iris_off
        r = 0.22 * eye_w
        pts[ix["iris"]] = [ic, ic + (r, 0), ic + (0, -r), ic - (r, 0), ic + (0, r)]
    return pts


def test_columbia_loader(tmp_path):
    from warpcam.training.gaze.datasets import columbia_pairs, parse_columbia_name
    assert parse_columbia_name("0003_2m_-15P_10V_-5H.jpg") == dict(
        subject="0003", distance=2, pose=-15, v=10, h=-5)
    assert parse_columbia_name("notes.txt") is None
    d = render_groups(2, 3, seed=4)
    names = {}
    for s, subj in enumerate(("0001", "0002")):
        (tmp_path / subj).mkdir()
        for k, (v, h) in enumerate(((0, 0), (10, -5), (-10, 15))):
            img = np.full((200, 300, 3), 128, np.uint8)
            eye = cv2.resize(d["images"][s, k][..., ::-1], (102, 82))
            img[60:142, 30:132] = eye
            img[60:142, 170:272] = eye[:, ::-1]
            name = f"{subj}_2m_0P_{v}V_{h}H.jpg"
            cv2.imwrite(str(tmp_path / subj / name), img)
            names[name] = (v, h)
    (tmp_path / "0001" / "0001_2m_15P_0V_0H.jpg").write_bytes(
        (tmp_path / "0001" / "0001_2m_0P_0V_0H.jpg").read_bytes())  # lone pose: no pair

    def landmarker(img):
        return _fake_face_landmarks((81, 101), (221, 101), 50.0, (0.0, 0.0))
    ds = columbia_pairs(tmp_path, landmarker=landmarker)
    # 2 subjects x 3 x 2 ordered pairs x 2 eyes
    assert len(ds) == 2 * 6 * 2
    angles = {tuple(np.round(ds[i]["angle"]).astype(int)) for i in range(len(ds))}
    assert (10, -5) in angles and (10, 5) in angles  # right eye, and the flipped left eye
    it = ds[0]
    assert it["src"].shape == (41, 51, 3) and it["source"] == "columbia"
    # the flipped left eye shows the same picture as the right one (mirrored fixture)
    assert np.abs(ds[0]["src"].astype(int) - ds[1]["src"].astype(int)).mean() < 3


def test_unityeyes_loader(tmp_path):
    from warpcam.training.gaze.datasets import unityeyes_pairs
    H, W = 240, 320
    for n, (look, iris_x) in enumerate((((0.0, 0.0, -1.0), 160.0),
                                        ((0.3420, 0.0, -0.9397), 175.0),
                                        ((0.0, 0.1736, -0.9848), 160.0))):
        img = np.full((H, W, 3), 140, np.uint8)
        cv2.ellipse(img, (160, 120), (60, 25), 0, 0, 360, (230, 230, 230), -1)
        cv2.circle(img, (int(iris_x), 120), 18, (60, 40, 30), -1)
        cv2.imwrite(str(tmp_path / f"{n + 1}.jpg"), img)
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        margin = [f"({160 + 60 * math.cos(a):.2f}, {H - (120 + 25 * math.sin(a)):.2f}, 0.0)" for a in t]
        iris = [f"({iris_x + 18 * math.cos(a):.2f}, {H - (120 + 18 * math.sin(a)):.2f}, 0.0)" for a in t]
        car = [f"({212 + i:.1f}, {H - 120:.1f}, 0.0)" for i in range(3)]  # inner corner on the right
        js = dict(interior_margin_2d=margin, caruncle_2d=car, iris_2d=iris,
                  eye_details=dict(look_vec=f"({look[0]}, {look[1]}, {look[2]}, 0.0)",
                                   pupil_size="0.1", iris_size="1.0", iris_texture="eyeball_brown"),
                  head_pose="(351.0, 5.0, 0.0)", lighting_details=dict(light_rotation="(1,2,3)"))
        (tmp_path / f"{n + 1}.json").write_text(json.dumps(js))
    ds = unityeyes_pairs(tmp_path)
    assert len(ds) == 6
    by = {tuple(np.round(ds[i]["angle"]).astype(int)): ds[i] for i in range(len(ds))}
    assert (0, 20) in by and (10, 0) in by and (0, -20) in by
    it = by[(0, 20)]
    # the iris moved to crop +x in the target
    def iris_x(img):
        dark = img.sum(-1) < 300
        return np.nonzero(dark)[1].mean()
    assert iris_x(it["tgt"]) > iris_x(it["src"]) + 1
    assert abs(it["landmarks"][0, 1] - it["landmarks"][8, 1]) < 1  # level corners


# -- mining ---------------------------------------------------------------------------------------

def test_mining_rules_and_corner_alignment():
    from warpcam.training.gaze.mine import EyeObs, choose_pairs, compose, similarity
    a1, b1 = np.array([10.0, 10.0]), np.array([30.0, 10.0])
    a2, b2 = np.array([12.0, 11.0]), np.array([32.0, 13.0])
    S = similarity((a1, b1), (a2, b2))
    np.testing.assert_allclose(S[:, :2] @ b1 + S[:, 2], b2, atol=1e-9)
    A = np.array([[1.0, 0, 5], [0, 1.0, 7]])
    np.testing.assert_allclose(compose(S, A)[:, 2], S[:, :2] @ A[:, 2] + S[:, 2])

    def ob(frame, gaze, head=(0, 0, 0), op=0.3, conf=1.0, ew=30.0):
        return EyeObs(frame, 0, "right", 0, np.zeros((478, 2)), np.array(head, float), op, conf,
                      12.0, ew, np.array(gaze, float))
    obs = [ob(0, (0, 0)), ob(5, (0, 10)), ob(10, (0, 10.5)), ob(15, (0, 0), head=(6, 0, 0)),
           ob(20, (0, 20), op=0.1), ob(25, (5, 0), conf=0.2), ob(30, (0, -8), ew=40)]
    pairs = set(choose_pairs(obs, np.random.default_rng(0)))
    assert (0, 1) in pairs and (1, 0) in pairs and (0, 2) in pairs
    assert (1, 2) not in pairs  # 0.5 deg: too small a change
    assert not any(3 in p or 4 in p or 5 in p or 6 in p for p in pairs)


def test_mine_real_video_and_calibrate(tmp_path):
    from tests.realdata import video
    from warpcam.training.gaze.mine import mine_video
    path = video("eyes_left_right_wink_512.mp4")
    import av
    clip = tmp_path / "clip.avi"  # a short clip: the first 60 frames, MJPEG
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="bgr24") for _, f in zip(range(60), c.decode(video=0))]
    wr = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30, frames[0].shape[1::-1])
    for f in frames:
        wr.write(f)
    wr.release()
    pairs = mine_video(clip, np.random.default_rng(0), max_faces=1)
    assert len(pairs) > 20
    ang = np.stack([p["angle"] for p in pairs])
    assert np.abs(ang[:, 1]).max() > 5  # the eyes move left and right
    assert all(p["src"].shape == (41, 51, 3) for p in pairs[:5])
    # calibration on the same clip (as a video file), from a tiny base model
    from warpcam.training.gaze.calibrate import main as calibrate
    _, base = _export_tiny(tmp_path)
    out = tmp_path / "personal.pt2"
    rc = calibrate(["--input", str(clip), "--seconds", "1.2", "--base", str(base), "--out", str(out),
                    "--steps", "3", "--synthetic-eyes", "8", "--quiet", "--no-window"])
    assert rc == 0 and out.exists()
    from warpcam.realtime.gaze_model import load_gaze_model
    meta = load_gaze_model(out, device="cpu", threads=None).meta
    assert any("calibration" in s for s in meta["training_data"])
    # `warpcam calibrate` (the app's recorder, realtime/calibrate.py) with the same flags, on
    # the clip as its source: records it, then hands the recording to the training part
    from warpcam.realtime.calibrate import main as app_calibrate
    out2, kept = tmp_path / "personal2.pt2", tmp_path / "kept.avi"
    rc = app_calibrate(["--input", str(clip), "--seconds", "1.2", "--base", str(base),
                        "--out", str(out2), "--steps", "2", "--synthetic-eyes", "0", "--quiet",
                        "--no-window", "--keep-recording", str(kept)])
    assert rc == 0 and out2.exists() and kept.stat().st_size > 0
    meta = load_gaze_model(out2, device="cpu", threads=None).meta
    assert any(s.startswith("calibration:clip.avi") for s in meta["training_data"])


def test_training_calibrate_takes_recordings_not_webcams(tmp_path, capsys):
    """The training entry point takes recorded videos; a webcam index is the app's
    (`warpcam calibrate`): one line, exit status 2, before any model is read."""
    from warpcam.training.gaze.calibrate import main as calibrate
    assert calibrate(["--input", "0", "--out", str(tmp_path / "x.pt2"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "warpcam calibrate" in err
    assert calibrate(["--input", str(tmp_path / "missing.avi"), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err


def _old_eye_angles(pts, side, iris_d):
    """The pair miner's eye-in-head angle before it moved to warpcam.core.eyes (literal copy)."""
    from warpcam.core import landmarks as lm
    from warpcam.core.eyes import EYEBALL_PER_IRIS
    ix = lm.eye_indices(side)
    a, b = pts[ix["outer"]].astype(np.float64), pts[ix["inner"]].astype(np.float64)
    a, b = (b, a) if side == "left" else (a, b)
    axis = (b - a) / (np.linalg.norm(b - a) + 1e-9)
    normal = np.array([-axis[1], axis[0]])
    off = pts[ix["iris"][0]] - 0.5 * (a + b)
    r = EYEBALL_PER_IRIS * max(iris_d, 1e-3)
    yaw = math.degrees(math.asin(float(np.clip(off @ axis / r, -1, 1))))
    pitch = -math.degrees(math.asin(float(np.clip(off @ normal / r, -1, 1))))
    return np.array([pitch, yaw])


def test_eye_in_head_angle_is_the_miners(astronaut_face):
    """The unified eye-in-head angle (corner midpoint, core.eyes) gives the mined labels of
    before: exactly on the astronaut's tracked landmarks, and within 1e-12 degrees (rounding of
    the eye width: math.hypot against np.linalg.norm) on moved, scaled and noisy copies."""
    from warpcam.core.eyes import eye_in_head_angles
    pts0 = astronaut_face.landmarks
    for k, side in enumerate(("right", "left")):
        d = float(astronaut_face.iris_diameter_px[k])
        np.testing.assert_array_equal(eye_in_head_angles(pts0, side, d),
                                      _old_eye_angles(pts0, side, d))
    rng = np.random.default_rng(0)
    worst = 0.0
    for t in range(300):
        th, s = rng.uniform(-0.5, 0.5), rng.uniform(0.3, 3.0)
        rot = s * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        pts = pts0.astype(np.float64) @ rot.T + rng.uniform(-500, 500, 2) + rng.normal(0, 1, (478, 2))
        for k, side in enumerate(("right", "left")):
            d = float(astronaut_face.iris_diameter_px[k]) * s
            worst = max(worst, float(np.abs(eye_in_head_angles(pts, side, d)
                                            - _old_eye_angles(pts, side, d)).max()))
    assert worst < 1e-12


def test_renderer_roi_is_the_core_rule():
    """The renderer's crops come from core.eyes.roi_affines_for and equal, bit for bit, the
    renderer's own ROI code of before (contour mean over both projected lids, 2 x 1.6 eye
    widths, jitter)."""
    from warpcam.training.gaze.render import (CROP_H, CROP_W, _contour, _project, _rot,
                                              crop_affines, sample_eyes)
    p = sample_eyes(np.random.default_rng(5), 200)
    pitch = np.random.default_rng(6).normal(0, 10, 200)
    R = _rot(p["head_yaw"], p["head_pitch"])
    up, lo = _contour(p, pitch)
    up2, lo2 = _project(R, up), _project(R, lo)
    a, b = up2[:, 0], up2[:, -1]
    eye_w = np.linalg.norm(b - a, axis=1)
    centre = np.concatenate([up2, lo2[:, -2:0:-1]], axis=1).mean(axis=1)
    ang = np.arctan2(b[:, 1] - a[:, 1], b[:, 0] - a[:, 0])
    j = p["jitter"]
    centre = centre + eye_w[:, None] * 0.02 * j[:, :2]
    eye_w = eye_w * (1 + 0.03 * j[:, 2])
    ang = ang + np.radians(2.0) * j[:, 3]
    sx, sy = 2.0 * eye_w / CROP_W, 1.6 * eye_w / CROP_H
    c, s = np.cos(ang), np.sin(ang)
    lin = np.stack([np.stack([c * sx, -s * sy], -1), np.stack([s * sx, c * sy], -1)], -2)
    off = centre - np.einsum("nij,j->ni", lin, np.array([(CROP_W - 1) / 2, (CROP_H - 1) / 2]))
    np.testing.assert_array_equal(crop_affines(p, pitch), np.concatenate([lin, off[..., None]], -1))


def test_evaluate_writes_table_and_plot(tmp_path, tiny_npz):
    from warpcam.training.gaze.evaluate import main as evaluate
    _, model = _export_tiny(tmp_path)
    mined = _mined_fixture(tmp_path)
    res = evaluate(["--synthetic", str(tiny_npz), "--real", str(mined), "--model", f"tiny={model}",
                    "--limit", "40", "--out-dir", str(tmp_path / "docs"), "--crops",
                    "--json", str(tmp_path / "eval.json")])
    assert set(res) == {"synthetic", "real"}
    assert set(res["real"]["methods"]) == {"identity", "landmark warp", "tiny"}
    for name in ("gaze_model_eval.md", "gaze_model_error_vs_angle.png",
                 "gaze_model_crops_synthetic.png"):
        assert (tmp_path / "docs" / name).stat().st_size > 100
    # the landmark warp with the exact synthetic landmarks beats no warp on renders
    m = res["synthetic"]["methods"]
    assert m["landmark warp"]["mse"] < m["identity"]["mse"]
