"""Gaze correction and smile control measured on real faces by re-running the tracker on the
output (the way a user would judge them: does the iris / the mouth corner move where asked)."""
import numpy as np
import pytest

from warpcam.kernels.cpu import CpuCompositor
from warpcam.core import landmarks as lm
from warpcam.realtime.effects.gaze import GazeSettings
from warpcam.realtime.effects import build_effects
from warpcam.realtime.pipeline import Pipeline
from warpcam.realtime.effects.smile import SmileSettings
from warpcam.realtime.tracker import FaceTracker
from warpcam.core.types import Frame
from tests.realdata import read_frames

IRIS = {"eye_right": lm.RIGHT_IRIS[0], "eye_left": lm.LEFT_IRIS[0]}
SIDE = {"eye_right": 0, "eye_left": 1}


def run_pipeline(frames, fps, **settings):
    """Process frames as the CLI does (smoothed tracking); return outputs and jobs per frame."""
    eff = build_effects(gaze=GazeSettings(**settings.get("gaze", {})),
                         smile=SmileSettings(settings.get("smile", 0.0)))
    outs, jobs_per = [], []
    with FaceTracker(max_faces=1) as tr:
        pipe = Pipeline(tr, CpuCompositor(), eff)
        for i, img in enumerate(frames):
            out, _, jobs = pipe.process(Frame(image=img, index=i, pts_seconds=i / fps))
            outs.append(out)
            jobs_per.append(jobs)
    return outs, jobs_per


def retrack(images):
    """Raw (unsmoothed, per-image) tracking of each image: list of Face or None."""
    with FaceTracker(max_faces=1, static_images=True) as tr:
        return [(f[0] if f else None) for f in (tr.track(im) for im in images)]


@pytest.fixture(scope="module")
def gaze_up_10():
    frames = read_frames("looks_down_blinks_512.mp4")
    outs, jobs = run_pipeline(frames, 30.0, gaze=dict(pitch_deg=10.0))
    return frames, outs, jobs, retrack(frames), retrack(outs)


def test_gaze_up_moves_iris_up_on_real_video(gaze_up_10):
    frames, outs, jobs, before, after = gaze_up_10
    ratios, asked = [], []
    for i, js in enumerate(jobs):
        if before[i] is None or after[i] is None:
            continue
        for j in js:
            d = j.meta["iris_shift_px"]
            if before[i].eye_openness[SIDE[j.kind]] < 0.18 or d[1] > -0.5:
                continue  # closed or closing eye, or faded out
            moved = after[i].landmarks_raw[IRIS[j.kind]] - before[i].landmarks_raw[IRIS[j.kind]]
            ratios.append(moved[1] / d[1])
            asked.append(-d[1])
    ratios = np.array(ratios)
    # Most open-eye frames get the full 10 degrees (no fade): about 0.36 iris diameters.
    assert len(ratios) > 300, len(ratios)
    assert np.median(asked) > 3.0
    # The tracker's iris regressor under-reports iris-only motion (an iris disc pasted 3.5 px
    # higher with everything else fixed reads as ~36%), so these bounds are what a correct
    # warp with lid follow measures (median ~0.76), not 90%: see the README.
    assert np.median(ratios) >= 0.65, np.median(ratios)
    assert np.mean(ratios >= 0.5) >= 0.8, np.mean(ratios >= 0.5)
    # and never the wrong way
    assert np.mean(ratios < 0) < 0.02


def test_gaze_leaves_closed_eyes_alone(gaze_up_10):
    frames, outs, jobs, before, after = gaze_up_10
    closed = [(i, k) for i, f in enumerate(before) if f is not None
              for k in (0, 1) if f.eye_openness[k] < 0.10]
    assert len(closed) >= 10, "expected blinks in looks_down_blinks_512.mp4"
    for i, k in closed:
        pts = before[i].landmarks_raw
        contour = lm.eye_contour(pts, ("right", "left")[k])
        x0, y0 = np.floor(contour.min(axis=0)).astype(int) - 3
        x1, y1 = np.ceil(contour.max(axis=0)).astype(int) + 4
        a = frames[i][y0:y1, x0:x1].astype(np.int16)
        b = outs[i][y0:y1, x0:x1].astype(np.int16)
        # no iris painted over the closed lid: the lid region is (almost) unchanged
        assert np.abs(a - b).mean() < 1.5, (i, k, np.abs(a - b).mean())


@pytest.fixture(scope="module")
def mead_neutral():
    return read_frames("mead_w009_neutral_256.mp4", every=4)


def corner_height(face):
    """Mean mouth-corner y minus the lip-centre y, in pixels (negative = corners higher)."""
    p = face.landmarks_raw
    corners = 0.5 * (p[lm.MOUTH_RIGHT_CORNER, 1] + p[lm.MOUTH_LEFT_CORNER, 1])
    centre = 0.5 * (p[lm.UPPER_LIP_CENTRE, 1] + p[lm.LOWER_LIP_CENTRE, 1])
    return corners - centre


@pytest.mark.parametrize("strength, sign", [(0.8, -1), (-0.8, +1)])
def test_smile_moves_mouth_corners(mead_neutral, strength, sign):
    outs, jobs = run_pipeline(mead_neutral, 25.0 / 4, smile=strength)
    assert all(len(j) == 1 and j[0].kind == "mouth" for j in jobs)
    before = retrack(mead_neutral)
    after = retrack(outs)
    delta = np.array([corner_height(a) - corner_height(b) for a, b in zip(after, before)
                      if a is not None and b is not None])
    assert len(delta) >= 20
    # corners rise (S > 0) or fall (S < 0) relative to the lip centre on every frame
    assert np.all(sign * delta > 0.5), delta
    assert sign * np.median(delta) > 1.5, np.median(delta)
