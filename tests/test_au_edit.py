"""The AU-editing effect (``--au``, ``--expression-from``, ``--au-model``) on real frames: the
condition it builds, the composite at the face's real size, smoothing, pose fade, the bundled
model and the command line."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from tests import realdata
from warpcam.realtime.effects.au_edit import (AUEditEffect, AUEditSettings, DEFAULT_MODEL, SPEC,
                                              aligned_affine, load_au_model, parse_au_spec)
from warpcam.realtime.effects.base import LiveSettings, SettingsError

S = 96
AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15",
       "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")


class FakeModel:
    """Darkens the lower half of the crop by ``0.15`` (RGB, [0, 1]) with attention 0 there and
    1 above; records the conditions it was called with."""

    size, au_names, au_scale = S, AUS, 5.0

    def __init__(self):
        self.conds = []

    def __call__(self, crops, rel):
        n = crops.shape[0]
        self.conds.append(np.array(rel))
        att = np.ones((n, S, S), np.float32)
        att[:, S // 2:] = 0.0
        res = np.zeros((n, S, S, 3), np.float32)
        res[:, S // 2:] = -0.15
        return att, res


@pytest.fixture(scope="module")
def hd_frame_face():
    """A 1280 x 720 frame with the astronaut's face (about 300 px wide) and its tracked face."""
    from warpcam.realtime.tracker import FaceTracker
    img = cv2.resize(realdata.astronaut_bgr(), (720, 720), interpolation=cv2.INTER_CUBIC)
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, 280:1000] = img
    with FaceTracker(max_faces=1, static_images=True) as tr:
        faces = tr.track(frame)
    assert len(faces) == 1
    return frame, faces[0]


def test_parse_and_settings():
    assert parse_au_spec("AU12=+0.8,AU4=-0.5") == {"AU12": 0.8, "AU04": -0.5}
    assert parse_au_spec(" au6 = 1 ; AU45=0") == {"AU06": 1.0, "AU45": 0.0}
    assert parse_au_spec("") == {}
    for bad in ("AU12", "AU3=1", "AU12=x", "AU12=3", "AU12=1,AU12=0.5", "smile=1"):
        with pytest.raises(ValueError):
            parse_au_spec(bad)
    live = LiveSettings(AUEditSettings(edit="AU12=0.5"))
    with pytest.raises(SettingsError):
        live.update(edit="AU99=1")
    assert live.get().edit == "AU12=0.5"  # nothing applied
    assert not AUEditSettings().active and AUEditSettings(edit="AU4=-1").active
    flags = [f for f, _ in SPEC.extra_args]
    assert flags == ["--au-model"]


def test_sliders_add_to_the_text_and_the_switch_ramps_out(hd_frame_face):
    """Panel fields: one slider per AU adds to ``--au`` (sum clipped to [-2, 2]); ``enabled``
    off keeps the values, the condition ramps to 0 and then no job is made."""
    s = AUEditSettings(edit="AU12=0.5,AU4=-0.5", au12=0.3, au20=0.4)
    assert s.au_changes() == pytest.approx({"AU12": 0.8, "AU04": -0.5, "AU20": 0.4})
    assert AUEditSettings(edit="AU12=2", au12=1.5).au_changes() == {"AU12": 2.0}
    assert AUEditSettings(edit="AU12=0.5", au12=-0.5).au_changes() == {}
    assert not AUEditSettings(edit="AU12=0.5", au12=-0.5).active
    assert AUEditSettings(au07=0.2).active and not AUEditSettings(au07=0.2, enabled=False).active
    with pytest.raises(SettingsError):
        AUEditSettings(au12=1.6)
    frame, face = hd_frame_face
    m = FakeModel()
    eff = AUEditEffect(AUEditSettings(au12=0.6, au04=-0.4), m, follow=1.0, negative="pass")
    assert eff.hud() == "au AU04=-0.40,AU12=+0.60 x1.0"
    job = eff.jobs(frame, [face], 0.0)[0]
    want = np.zeros(len(AUS))
    want[AUS.index("AU12")], want[AUS.index("AU04")] = 0.6, -0.4
    assert np.allclose(job.meta["cond"], want) and np.allclose(m.conds[-1][0], want)
    eff.follow = 0.5
    eff.settings.update(enabled=False)
    assert eff.hud() == "au off" and eff.settings.get().au12 == 0.6
    conds = []
    for i in range(20):
        jobs = eff.jobs(frame, [face], (1 + i) / 30)
        conds.append(jobs[0].meta["cond"][AUS.index("AU12")] if jobs else 0.0)
    assert conds[0] == pytest.approx(0.3) and conds[1] == pytest.approx(0.15)
    assert np.all(np.diff(conds) <= 0) and conds[-1] == 0.0 and jobs == []
    eff.settings.update(enabled=True)
    assert eff.jobs(frame, [face], 1.0)[0].meta["cond"][AUS.index("AU12")] == pytest.approx(0.3)


def test_cli_flags_in_help(capsys):
    from warpcam.realtime import cli
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--au ", "--expression-from", "--au-model", "--au-strength"):
        assert flag in out, flag
    with pytest.raises(SystemExit) as e:
        cli.main(["--input", "x.png", "--output", "null", "--au", "AU3=1"])
    assert e.value.code != 0


def test_composite_keeps_frame_detail_at_real_size(hd_frame_face):
    """The job's crop has the face's real size (not the 96 px model crop), its colour is the
    frame's own pixels plus the residual, so the edited region keeps its fine texture; where
    the mask keeps the input the frame is byte-identical."""
    from warpcam.kernels.cpu import CpuCompositor
    frame, face = hd_frame_face
    m = FakeModel()
    eff = AUEditEffect(AUEditSettings(edit="AU12=1"), m, follow=1.0, regions=False)
    jobs = eff.jobs(frame, [face], 0.0)
    assert len(jobs) == 1
    job = jobs[0]
    A = aligned_affine(face.landmarks, S)
    real_side = S * np.hypot(A[0, 0], A[1, 0])   # the model crop's side in frame pixels
    assert np.allclose(job.crop_to_frame[:, :2], np.eye(2))  # unit scale, integer shift
    assert np.allclose(job.crop_to_frame[:, 2], job.crop_to_frame[:, 2].round())
    # the box is the integer hull of the footprint of the crop rectangle where the edit can
    # change a byte (AUEditEffect._support): for this model the lower half of the crop, one
    # texel grown, at the face's real size
    att, res = FakeModel()(np.zeros((1, 3, S, S), np.float32), np.zeros((1, len(AUS))))
    u0, v0, u1, v1 = eff._support(att[0], res[0], S, 1.0)
    assert (u0, v0, u1, v1) == (-1.0, S / 2 - 2, S, S)
    rect = np.array([[u0, v0, 1], [u1, v0, 1], [u0, v1, 1], [u1, v1, 1]]) @ A.T
    crop = np.array([[-0.5, -0.5, 1], [S - 0.5, -0.5, 1], [-0.5, S - 0.5, 1],
                     [S - 0.5, S - 0.5, 1]]) @ A.T  # the model crop's outer corners
    x0, y0 = job.crop_to_frame[:, 2]
    h, w = job.flow.shape[:2]
    assert w >= real_side > 2 * S and h >= 0.5 * real_side
    assert job.meta["box"] == (x0, y0, w, h)
    # the integer hull of the rectangle's footprint within that of the whole crop
    lo = np.maximum(np.floor(rect.min(0)), np.floor(crop.min(0)))
    hi = np.minimum(np.ceil(rect.max(0)), np.ceil(crop.max(0))) + 1
    assert (x0, y0, x0 + w, y0 + h) == (lo[0], lo[1], hi[0], hi[1])
    assert job.alpha.shape == job.color.shape[:2] == (h, w)
    assert m.conds[0][0, AUS.index("AU12")] == pytest.approx(1.0)
    assert np.count_nonzero(m.conds[0]) == 1
    out = CpuCompositor().composite(frame, jobs)
    # lower half of the crop, inside the feathered window: darker by about 0.15 * 255
    u = np.array([S / 2, S * 0.7, 1.0])
    x, y = (A @ u).round().astype(int)
    patch = (slice(y - 15, y + 15), slice(x - 15, x + 15))
    diff = out[patch].astype(float) - frame[patch].astype(float)
    assert -44 < diff.mean() < -33
    # the texture is the frame's own: high-pass of output and input agree
    lap_in = cv2.Laplacian(frame[patch].astype(np.float32), cv2.CV_32F)
    lap_out = cv2.Laplacian(out[patch].astype(np.float32), cv2.CV_32F)
    assert np.abs(lap_out - lap_in).mean() < 0.1 * np.abs(lap_in).mean() + 0.5
    # upper half of the crop (attention 1): untouched bytes
    x, y = (A @ np.array([S / 2, S * 0.25, 1.0])).round().astype(int)
    assert np.array_equal(out[y - 10:y + 10, x - 10:x + 10], frame[y - 10:y + 10, x - 10:x + 10])



class RampModel:
    """Attention 0 everywhere, a residual on **red only** (RGB channel 0) that falls along the
    crop's x: ``-0.05 - 0.002 u``; fixed AU names and size like :class:`FakeModel`."""

    size, au_names, au_scale = S, AUS, 5.0

    def __call__(self, crops, rel):
        n = crops.shape[0]
        res = np.zeros((n, S, S, 3), np.float32)
        res[..., 0] = -0.05 - 0.002 * np.arange(S, dtype=np.float32)
        return np.zeros((n, S, S), np.float32), res


def test_composite_is_the_models_rgb_edit_in_place(hd_frame_face):
    """Issue 13's purple, grid-patterned mouth is not the composite's doing: an RGB residual
    on red lands on the frame's red (BGR channel 2) only, at the crop pixel it was given for
    (the fields are resampled without a shift; a half-pixel slip would read as 0.001 here), and
    the bundled model's edit, composited live and cropped back, is the model's own composite
    ``x + window (1 - A) residual`` in RGB (not with R and B swapped)."""
    from warpcam.core.geometry import border_window
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects.base import FrameCrops
    frame, face = hd_frame_face
    A = aligned_affine(face.landmarks, S)
    out = CpuCompositor().composite(frame, AUEditEffect(AUEditSettings(edit="AU12=1"),
                                                        RampModel(), follow=1.0,
                                                        regions=False).jobs(
        frame, [face], 0.0))
    back = (FrameCrops(None, out).numpy(A[None], (S, S))[0]
            - FrameCrops(None, frame).numpy(A[None], (S, S))[0])  # RGB, [0, 1]
    inner = (slice(30, 66), slice(30, 66))  # window 1, skin not clipped at 0
    assert np.abs(back[1:][(slice(None),) + inner]).max() < 1.5 / 255  # G and B untouched
    u = np.arange(S, dtype=np.float64)[inner[1]]
    want = -0.05 - 0.002 * u
    got = back[0][inner].mean(0)
    assert np.abs(got - want).max() < 1.5 / 255
    assert abs(float(np.mean(got - want))) < 0.0005  # no shift: 0.002 per crop pixel
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled au_edit.pt2")
    m = load_au_model(device="cpu")
    x = FrameCrops(None, frame).numpy(A[None], (m.size, m.size))
    rel = np.zeros((1, len(m.au_names)), np.float32)
    rel[0, m.au_names.index("AU12")] = 1.0
    outs = [v[0] for v in m(x, rel)]
    att, res = outs[:2]
    xin = x[0].transpose(1, 2, 0)
    win = border_window(m.size, m.size, 0.12)
    if m.flow:  # the model's own composite: att warp(x, flow) + (1 - att) (x + res)
        g = np.arange(m.size, dtype=np.float32)
        warped = cv2.remap(xin, g[None] + outs[2][..., 0], g[:, None] + outs[2][..., 1],
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        edit = att[..., None] * warped + (1.0 - att[..., None]) * (xin + res) - xin
    else:
        edit = (1.0 - att)[..., None] * res
    model = xin + win[..., None] * edit
    out = CpuCompositor().composite(frame, AUEditEffect(AUEditSettings(edit="AU12=1"), m,
                                                        follow=1.0, regions=False).jobs(
        frame, [face], 0.0))
    live = FrameCrops(None, out).numpy(A[None], (m.size, m.size))[0].transpose(1, 2, 0)
    opened = np.abs(model - xin).max(axis=2) > 0.02
    assert opened.sum() > 50  # the edit changes the mouth
    straight = np.abs(live - model)[opened].mean(0)
    swapped = np.abs(live - model[..., ::-1])[opened].mean(0)
    assert straight.max() < 0.08  # both resamplings soften the network's 2-px grid a little
    assert swapped[0] > 2 * straight[0] and swapped[2] > 2 * straight[2]

class ShiftModel:
    """A flow model: attention 1 (keep the warped frame), no residual, and a backward warp of
    ``(+2, -1)`` crop pixels over the whole crop (``flow`` True: three outputs)."""

    size, au_names, au_scale, flow = S, AUS, 5.0, True

    def __call__(self, crops, rel):
        n = crops.shape[0]
        fl = np.zeros((n, S, S, 2), np.float32)
        fl[..., 0], fl[..., 1] = 2.0, -1.0
        return (np.ones((n, S, S), np.float32), np.zeros((n, S, S, 3), np.float32), fl)


def test_flow_model_moves_the_frames_own_pixels(hd_frame_face):
    """A flow model's crop-pixel displacement lands on the frame through the crop's affine:
    where the window is 1 the output is the frame sampled at ``p + L f`` (``L`` the crop ->
    frame linear part), so the edit moves the frame's own HD pixels, and nothing changes
    outside the face box."""
    from warpcam.kernels.cpu import CpuCompositor
    frame, face = hd_frame_face
    eff = AUEditEffect(AUEditSettings(edit="AU04=1"), ShiftModel(), follow=1.0, regions=False)
    jobs = eff.jobs(frame, [face], 0.0)
    assert len(jobs) == 1 and jobs[0].flow.any()
    out = CpuCompositor().composite(frame, jobs)
    A = aligned_affine(face.landmarks, S)
    d = A[:, :2] @ np.array([2.0, -1.0])
    assert np.hypot(*d) > 4.0  # the face is about 3 frame pixels per crop pixel
    mx = np.float32(np.arange(1280) + d[0])[None].repeat(720, 0)
    my = np.float32(np.arange(720) + d[1])[:, None].repeat(1280, 1)
    want = cv2.remap(frame, mx, my, cv2.INTER_LINEAR)
    # the crop's centre, where the window is 1 (crop 30..66)
    c = np.array([[30, 30, 1], [66, 66, 1]], np.float64) @ A.T
    x0, y0 = np.ceil(c.min(0)).astype(int)
    x1, y1 = np.floor(c.max(0)).astype(int)
    diff = np.abs(out[y0:y1, x0:x1].astype(int) - want[y0:y1, x0:x1].astype(int))
    moved = np.abs(frame[y0:y1, x0:x1].astype(int) - want[y0:y1, x0:x1].astype(int))
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 2, diff.max()
    assert moved.mean() > 3 * max(diff.mean(), 0.1)  # and the shift is really visible
    bx, by, bw, bh = jobs[0].meta["box"]
    outside = np.ones(frame.shape[:2], bool)
    outside[by:by + bh, bx:bx + bw] = False
    assert np.array_equal(out[outside], frame[outside])


class AlternatingModel(FakeModel):
    """:class:`FakeModel` whose residual alternates between -0.15 and -0.05 call by call (a
    network that jitters on a still face)."""

    def __call__(self, crops, rel):
        att, res = super().__call__(crops, rel)
        return att, res * (1.0 if len(self.conds) % 2 else 1.0 / 3.0)


def test_network_outputs_are_averaged_over_frames(hd_frame_face):
    """With ``temporal`` 0.5 (the default) a face's outputs are an exponential average in its
    aligned crop: after the -0.15 / -0.05 frames the composite uses -0.10, and the composited
    darkening of the mouth half follows (checked on the frame); with ``temporal`` 1 it is the
    last output; a face whose edit stops and restarts does not inherit old outputs."""
    from warpcam.kernels.cpu import CpuCompositor
    frame, face = hd_frame_face
    A = aligned_affine(face.landmarks, S)
    low = np.array([S / 2, S * 0.8, 1.0]) @ A.T  # a frame pixel in the mouth half, window 1
    x, y = int(round(low[0])), int(round(low[1]))
    got = {}
    for temporal in (0.5, 1.0):
        eff = AUEditEffect(AUEditSettings(edit="AU12=1"), AlternatingModel(), follow=1.0,
                           cache=False, temporal=temporal)
        for _ in range(2):
            jobs = eff.jobs(frame, [face], 0.0)
        res = eff.tracks[face.track_id].fields[1]
        got[temporal] = float(res[S - 5, S // 2, 0])
        out = CpuCompositor().composite(frame, jobs)
        d = (out[y, x].astype(float) - frame[y, x].astype(float)).mean()
        assert d == pytest.approx(255.0 * got[temporal], abs=2.0)
    assert got[0.5] == pytest.approx(-0.10, abs=1e-6)
    assert got[1.0] == pytest.approx(-0.05, abs=1e-6)
    eff = AUEditEffect(AUEditSettings(edit="AU12=1"), AlternatingModel(), follow=1.0,
                       cache=False)
    eff.jobs(frame, [face], 0.0)
    eff.settings.set(dataclasses.replace(eff.settings.get(), edit=""))
    for _ in range(30):  # ramps out: no job, no kept outputs
        eff.jobs(frame, [face], 0.0)
    assert eff.tracks.get(face.track_id) is None or \
        eff.tracks[face.track_id].fields is None
    with pytest.raises(ValueError):
        AUEditEffect(AUEditSettings(), FakeModel(), temporal=0.0)


def test_still_face_reuses_the_network_and_condition_is_smoothed(hd_frame_face):
    frame, face = hd_frame_face
    m = FakeModel()
    eff = AUEditEffect(AUEditSettings(edit="AU12=1"), m, follow=0.5)
    a12 = []
    for i in range(12):
        jobs = eff.jobs(frame, [face], i / 30)
        a12.append(jobs[0].meta["cond"][AUS.index("AU12")])
    assert a12[0] == pytest.approx(0.5) and a12[1] == pytest.approx(0.75)
    assert a12[-1] == pytest.approx(1.0)
    assert np.all(np.diff(a12) >= 0)
    calls = eff.calls
    for i in range(5):
        eff.jobs(frame, [face], (12 + i) / 30)
    assert eff.calls == calls  # still face, settled condition: the network's output is reused
    # zero condition: no job at all
    eff.settings.update(edit="AU12=0")
    for i in range(30):
        jobs = eff.jobs(frame, [face], (20 + i) / 30)
    assert jobs == []


def test_head_turn_fades_out(hd_frame_face):
    frame, face = hd_frame_face
    eff = AUEditEffect(AUEditSettings(edit="AU12=1"), FakeModel(), follow=1.0)
    turned = dataclasses.replace(face, yaw=40.0)
    assert eff.jobs(frame, [turned], 0.0) == []
    half = dataclasses.replace(face, yaw=27.5)
    job = eff.jobs(frame, [half], 1 / 30)[0]
    assert 0.3 < job.meta["fade"] < 0.7 and float(job.alpha.max()) <= job.meta["fade"] + 1e-6


def test_expression_from_a_smiling_photo_asks_for_a_smile(hd_frame_face):
    """``--expression-from`` with a smiling photo on a neutral face asks for more AU6 and AU12
    (reference AUs minus the user's, from the AU estimator); AU45 is never transferred."""
    happy = realdata.REAL / "images" / "smile_pairs" / "happy1.png"
    if not happy.exists():
        pytest.skip(f"{happy} not present")
    from warpcam.realtime.tracker import FaceTracker
    frame = realdata.read_frames("mead_w009_neutral_256.mp4", limit=1)[0]
    with FaceTracker(max_faces=1, static_images=True) as tr:
        face = tr.track(frame)[0]
    m = FakeModel()
    eff = AUEditEffect(AUEditSettings(expression_from=str(happy)), m, follow=1.0)
    eff.jobs(frame, [face], 0.0)
    c = m.conds[-1][0]
    assert c[AUS.index("AU12")] > 0.4 and c[AUS.index("AU06")] > 0.2  # 2 and 1 points
    assert c[AUS.index("AU45")] == 0.0
    from warpcam.realtime.effects.base import EffectError
    bad = AUEditEffect(AUEditSettings(expression_from=str(happy.with_name("nope.png"))), m)
    with pytest.raises(EffectError):
        bad.jobs(frame, [face], 0.0)


def test_refuses_bad_model_files(tmp_path):
    from warpcam.realtime.effects.au_edit import AUModelError
    from warpcam.realtime.effects.smile_model import DEFAULT_MODEL as SMILE
    with pytest.raises(AUModelError):
        load_au_model(tmp_path / "missing.pt2")
    (tmp_path / "empty.pt2").write_bytes(b"")
    with pytest.raises(AUModelError):
        load_au_model(tmp_path / "empty.pt2")
    with pytest.raises(AUModelError):
        load_au_model(SMILE)  # another kind


def test_bundled_model_edits_only_the_face(hd_frame_face):
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled au_edit.pt2")
    from warpcam.kernels.cpu import CpuCompositor
    m = load_au_model(device="cpu")
    assert m.au_names == AUS and m.size in (96, 128)
    frame, face = hd_frame_face
    eff = AUEditEffect(AUEditSettings(edit="AU12=1"), m, follow=1.0)
    jobs = eff.jobs(frame, [face], 0.0)
    out = CpuCompositor().composite(frame, jobs)
    changed = np.any(out != frame, axis=2)
    assert changed.any()
    ys, xs = np.nonzero(changed)
    p = face.landmarks
    w = p[:, 0].max() - p[:, 0].min()
    assert xs.min() > p[:, 0].min() - 0.5 * w and xs.max() < p[:, 0].max() + 0.5 * w


def test_edit_box_narrows_to_where_bytes_can_change(hd_frame_face, monkeypatch):
    """The job's box is cut to the footprint of the crop texels whose bound on the change is
    half a grey level or more (AUEditEffect._support): run over the whole face box instead,
    the bundled model changes no pixel outside the narrowed box, and inside it the two agree
    within the last-bit differences of OpenCV's warp coordinates (another box origin)."""
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled au_edit.pt2")
    from warpcam.kernels.cpu import CpuCompositor
    m = load_au_model(device="cpu")
    frame, face = hd_frame_face
    comp = CpuCompositor()
    narrowed = 0
    for edit in ("AU12=1", "AU04=1", "AU05=-1"):
        got = {}
        for narrow in (True, False):
            eff = AUEditEffect(AUEditSettings(edit=edit), m, follow=1.0)
            if not narrow:
                monkeypatch.setattr(eff, "_support", lambda *a, **k: None)
            jobs = eff.jobs(frame, [face], 0.0)
            assert len(jobs) == 1
            got[narrow] = (comp.composite(frame, jobs), jobs[0].meta["box"])
        (out_n, (x0, y0, w, h)), (out_f, (fx0, fy0, fw, fh)) = got[True], got[False]
        assert fx0 <= x0 and fy0 <= y0 and x0 + w <= fx0 + fw and y0 + h <= fy0 + fh
        narrowed += (fw * fh) - (w * h)
        changed = np.any(out_f != frame, axis=2)
        assert changed.sum() > 500  # the edit did something
        outside = changed.copy()
        outside[y0:y0 + h, x0:x0 + w] = False
        assert not outside.any(), (edit, int(outside.sum()))
        d = np.abs(out_n.astype(int) - out_f.astype(int)).max(axis=2)
        assert d.max() <= 4 and (d > 0).sum() <= 0.05 * changed.sum(), (edit, d.max())
    assert narrowed > 0  # at least one edit's box really shrank


def test_cli_video_keeps_frame_count(tmp_path):
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled au_edit.pt2")
    import av
    from warpcam.realtime import cli
    src = realdata.video("mead_w009_neutral_256.mp4")
    out = tmp_path / "out.mp4"
    rc = cli.main(["--input", str(src), "--output", str(out), "--au", "AU12=+1"])
    assert rc in (0, None)
    with av.open(str(src)) as a, av.open(str(out)) as b:
        na = sum(1 for _ in a.decode(video=0))
        nb = sum(1 for _ in b.decode(video=0))
    assert na == nb


def test_au_region_mask_follows_the_facs_regions(hd_frame_face):
    """The region of a brow AU covers the brows and leaves the mouth corners and nose tip at 0;
    a lip-corner AU's covers the corners and leaves brows and eye corners at 0 (the points the
    AU estimator's head frame rests on); a condition below ``REGION_FULL`` opens its region in
    proportion, and AUs add as a maximum."""
    from warpcam.core.geometry import invert_affine
    from warpcam.realtime.effects.au_edit import REGION_FULL, au_region_mask
    frame, face = hd_frame_face
    inv = invert_affine(aligned_affine(face.landmarks, S))
    p = face.landmarks[:, :2] @ inv[:, :2].T + inv[:, 2]

    def at(m, i):
        return float(m[int(round(p[i, 1])), int(round(p[i, 0]))])
    brows = au_region_mask(p, {"AU04": -1.0}, S, S)
    lips = au_region_mask(p, {"AU12": 1.0}, S, S)
    for i in (105, 334, 107, 336):  # brows
        assert at(brows, i) == 1.0 and at(lips, i) == 0.0
    for i in (61, 291):  # mouth corners
        assert at(lips, i) == 1.0 and at(brows, i) == 0.0
    for i in (33, 263):  # outer eye corners: the estimator's scale
        assert at(lips, i) == 0.0
    assert at(brows, 1) == 0.0  # nose tip
    half = au_region_mask(p, {"AU12": REGION_FULL / 2, "AU01": 0.0}, S, S)
    assert np.allclose(half, 0.5 * lips)
    both = au_region_mask(p, {"AU04": 1.0, "AU12": 0.3}, S, S)
    assert np.array_equal(both, np.maximum(brows, lips))
    assert not au_region_mask(p, {}, S, S).any()


def test_regions_keep_an_edit_off_the_rest_of_the_face(hd_frame_face):
    """A model that moves the whole crop: asked for AU04, the composite changes the brows but
    not a byte around the mouth corners; asked for AU12, the mouth but not the brows or the
    outer eye corners. Without regions (``regions=False``) both move everywhere."""
    from warpcam.kernels.cpu import CpuCompositor
    frame, face = hd_frame_face
    comp = CpuCompositor()

    def changed_near(out, idx, r=6):
        return any(np.any(out[int(y) - r:int(y) + r, int(x) - r:int(x) + r]
                          != frame[int(y) - r:int(y) + r, int(x) - r:int(x) + r])
                   for x, y in face.landmarks[list(idx), :2])
    brows, corners, eyes = (105, 334, 66, 296), (61, 291), (33, 263)
    for regions in (True, False):
        out4 = comp.composite(frame, AUEditEffect(AUEditSettings(edit="AU04=1"), ShiftModel(),
                                                  follow=1.0, regions=regions).jobs(
            frame, [face], 0.0))
        out12 = comp.composite(frame, AUEditEffect(AUEditSettings(edit="AU12=1"), ShiftModel(),
                                                   follow=1.0, regions=regions).jobs(
            frame, [face], 0.0))
        assert changed_near(out4, brows) and changed_near(out12, corners)
        assert changed_near(out4, corners) == (not regions)
        assert changed_near(out12, brows) == (not regions)
        assert changed_near(out12, eyes) == (not regions)


def test_negative_requests_act_only_on_what_the_face_shows(hd_frame_face):
    """The astronaut smiles (AU10 about 2, AU23 a trace below 1) and shows no AU15. ``gate``
    (the default): ``AU15=-1`` asks the model for nothing (no job), ``AU10=-1`` passes as given
    (her AU10 is above ``GATE_FULL``), ``AU23=-1`` is scaled by her AU23 / ``GATE_FULL``;
    ``floor``: at most minus her own intensity / 5; ``pass``: the -1 as given. Positive
    requests pass in every rule; an unknown rule is refused."""
    from warpcam.realtime.au import AUEstimator
    from warpcam.realtime.effects.au_edit import GATE_FULL
    frame, face = hd_frame_face
    cur = AUEstimator(calibrate=True).estimate(face, 0.0).intensities
    assert cur["AU15"] == 0.0 and cur["AU10"] > GATE_FULL and 0.05 < cur["AU23"] < GATE_FULL
    m = FakeModel()
    for rule in ("gate", "floor"):
        assert AUEditEffect(AUEditSettings(edit="AU15=-1"), m, follow=1.0,
                            negative=rule).jobs(frame, [face], 0.0) == [] and m.conds == []
    edit = "AU10=-1,AU15=-1,AU23=-1,AU20=0.5"
    want = {"gate": (-1.0, -cur["AU23"] / GATE_FULL, 0.0),
            "floor": (-cur["AU10"] / 5.0, -cur["AU23"] / 5.0, 0.0),
            "pass": (-1.0, -1.0, -1.0)}
    for rule, (a10, a23, a15) in want.items():
        job = AUEditEffect(AUEditSettings(edit=edit), m, follow=1.0, negative=rule).jobs(
            frame, [face], 0.0)[0]
        c = job.meta["cond"]
        got = (c[AUS.index("AU10")], c[AUS.index("AU23")], c[AUS.index("AU15")])
        assert np.allclose(got, (a10, a23, a15)), rule
        assert c[AUS.index("AU20")] == 0.5
    with pytest.raises(ValueError):
        AUEditEffect(AUEditSettings(), m, negative="clip")
