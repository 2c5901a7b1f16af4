"""Gaze fades (blink, head turn, unreliable iris), eye contact, and the smile's fold check, on
the astronaut photo's real landmarks."""
import dataclasses

import numpy as np
import pytest

from warpcam.realtime.effects.gaze import GazeEffect, GazeSettings, fade_between
from warpcam.core.geometry import flow_jacobian_det
from warpcam.realtime.effects.smile import SmileEffect, SmileSettings
from warpcam.realtime.tracker import FaceTracker
from tests.realdata import astronaut_bgr, read_frames




def shifts(astronaut_face, **kw):
    jobs = GazeEffect(GazeSettings(**kw), cache=False).jobs(astronaut_bgr(), [astronaut_face])
    return {j.kind: np.hypot(*j.meta["iris_shift_px"]) for j in jobs}


def test_fade_between():
    assert fade_between(5, 10, 35) == 1.0
    assert fade_between(40, 10, 35) == 0.0
    mid = fade_between(22.5, 10, 35)
    assert 0.4 < mid < 0.6
    assert fade_between(15, 10, 35) > fade_between(20, 10, 35)


def test_full_strength_on_a_frontal_open_face(astronaut_face):
    s = shifts(astronaut_face, pitch_deg=10.0)
    assert set(s) == {"eye_right", "eye_left"}
    for k, side in enumerate(("eye_right", "eye_left")):
        expected = 12 / 11.7 * astronaut_face.iris_diameter_px[k] * np.sin(np.radians(10))
        assert s[side] == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("yaw, pitch, expect", [(5.0, 0.0, 1.0), (22.5, 0.0, 0.5),
                                                (-40.0, 0.0, 0.0), (0.0, 15.0, 1.0),
                                                (0.0, -32.5, 0.5), (0.0, 50.0, 0.0)])
def test_head_turn_fades_the_correction(astronaut_face, yaw, pitch, expect):
    full = shifts(dataclasses.replace(astronaut_face, yaw=0.0, pitch=0.0), pitch_deg=10.0)
    turned = shifts(dataclasses.replace(astronaut_face, yaw=yaw, pitch=pitch), pitch_deg=10.0)
    for side, v in full.items():
        assert turned.get(side, 0.0) == pytest.approx(expect * v, abs=0.12 * v)


def test_blink_and_wink_fade_per_eye(astronaut_face):
    winking = dataclasses.replace(astronaut_face, eye_openness=(0.05, astronaut_face.eye_openness[1]))
    s = shifts(winking, pitch_deg=10.0)
    assert "eye_right" not in s and "eye_left" in s


def test_unreliable_iris_fades(astronaut_face):
    s = shifts(dataclasses.replace(astronaut_face, iris_confidence=(0.0, 0.0)), pitch_deg=10.0)
    assert s == {}


def test_no_jobs_when_disabled_or_zero(astronaut_face):
    assert shifts(astronaut_face) == {}
    assert shifts(astronaut_face, pitch_deg=10.0, enabled=False) == {}


def test_eye_contact_redirects_up_for_someone_looking_down():
    frames = read_frames("looks_down_blinks_512.mp4", every=3)
    g = GazeEffect(GazeSettings(eye_contact=True, camera_offset_cm=3.0))
    deltas = []
    with FaceTracker(max_faces=1) as tr:
        for i, img in enumerate(frames):
            faces = tr.track(img, i * 0.1)
            deltas += [j.meta["delta_deg"] for j in g.jobs(img, faces, i * 0.1)]
    deltas = np.array(deltas)
    assert len(deltas) > 30
    # Camera above the screen the person reads: the median correction points up.
    assert np.median(deltas[:, 0]) > 1.0
    assert np.all(np.abs(deltas) < 40)


@pytest.mark.parametrize("strength", [-1.0, -0.5, 0.5, 1.0])
def test_smile_flow_is_fold_free_and_local(astronaut_face, strength):
    jobs = SmileEffect(SmileSettings(strength), cache=False).jobs(astronaut_bgr(), [astronaut_face])
    assert len(jobs) == 1
    j = jobs[0]
    assert flow_jacobian_det(j.flow).min() > 0.25
    # zero on the crop border: feathered into the astronaut_face
    assert np.abs(j.flow[0]).max() == 0 and np.abs(j.flow[-1]).max() == 0
    assert np.abs(j.flow[:, 0]).max() == 0 and np.abs(j.flow[:, -1]).max() == 0
    # the corners move up for a smile, down for a frown (frame y points down)
    assert np.sign(j.meta["corner_shift_px"][:, 1]).tolist() == [-np.sign(strength)] * 2


def test_smile_switched_off_keeps_its_strength_and_moves_nothing(astronaut_face):
    from warpcam.realtime.effects.base import LiveSettings

    live = LiveSettings(SmileSettings(0.8))
    eff = SmileEffect(live, cache=False)
    assert len(eff.jobs(astronaut_bgr(), [astronaut_face])) == 1 and eff.hud() == "smile +0.8"
    live.update(enabled=False)
    assert eff.jobs(astronaut_bgr(), [astronaut_face]) == [] and eff.hud() == "smile off"
    assert live.get().strength == 0.8 and not live.get().active


def test_smile_strength_is_validated():
    with pytest.raises(ValueError):
        SmileSettings(1.5)
    with pytest.raises(ValueError):
        SmileSettings(float("nan"))


def test_eye_contact_holds_its_size_over_a_ten_minute_call():
    """The eye-contact bias adapts (10 s time constant) toward "looks at the screen centre,
    camera_offset_cm below the camera", so over a long call the correction converges to the
    camera-to-screen angle. With the default offset (10 cm, a laptop camera) that angle stays
    big enough to see for the whole run: a real talking-head clip looped for 10 minutes."""
    import math

    from warpcam.core.eyes import IRIS_DIAMETER_MM
    from warpcam.realtime.effects.gaze import GazePlanner

    frames = read_frames("news_talking_head_512.mp4", every=2, limit=60)
    with FaceTracker(max_faces=1) as tr:
        tracked = [(img, tr.track(img, i / 15.0)) for i, img in enumerate(frames)]
    tracked = [(img, faces) for img, faces in tracked if faces]
    assert len(tracked) > 40
    s = GazeSettings(eye_contact=True)
    assert s.camera_offset_cm == 10.0
    planner = GazePlanner()
    pitch, fades, expected = [], [], []
    fps = 10.0
    for n in range(int(600 * fps)):  # 10 minutes at 10 fps, the clip looped
        img, faces = tracked[n % len(tracked)]
        reqs = planner.plan(s, img, faces, n / fps)
        if reqs:
            pitch.append(float(reqs[0].delta_deg[0]))
            fades.append(float(np.mean([r.fade for r in reqs])))
        f = faces[0]
        f_px = 0.5 * img.shape[1] / math.tan(math.radians(s.fov_deg) / 2.0)
        z_mm = f_px * IRIS_DIAMETER_MM / float(np.mean(f.iris_diameter_px))
        expected.append(math.degrees(math.atan2(10.0 * s.camera_offset_cm, z_mm)))
    pitch = np.array(pitch)
    first, last = pitch[: int(60 * fps)], pitch[-int(60 * fps):]
    geometric = float(np.median(expected))
    # the correction (upward) keeps its size to the end of the call ...
    assert np.median(last) > 0.8 * geometric, (np.median(last), geometric)
    assert np.median(last) > 5.0
    assert abs(np.median(last) - np.median(first)) < 0.3 * geometric
    # ... and the fades (head turn, blink, gaze offset, occluders) take no more of it at the
    # end than at the start
    fades = np.array(fades)
    assert np.median(fades[-int(60 * fps):]) > 0.9 * np.median(fades[: int(60 * fps)]) > 0.3
