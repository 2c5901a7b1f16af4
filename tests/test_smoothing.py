"""OneEuroFilter (realtime/smoothing.py): jitter removal on real landmark noise, small lag on fast
motion, restarts, parameter validation.

Real data: the raw (unsmoothed) FaceMesh landmarks of the first 25 frames of
``eyes_left_right_wink_512.mp4``, where the head is still (the face centre moves by ~3 px).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from warpcam.realtime.smoothing import OneEuroFilter
from tests import realdata

FPS = 30.0
# Face-oval and nose-bridge points: rigid, away from the eyes and mouth (which move in this clip).
FACE_RIGID = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
              377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
              109, 1, 4, 5, 195, 197, 6]
# The tracker's mesh filter parameters (realtime/tracker.py, _Track.f_mesh).
MESH = dict(min_cutoff=1.5, beta=0.08, d_cutoff=1.0)


def run_filter(f: OneEuroFilter, xs, fps: float = FPS) -> np.ndarray:
    return np.array([f(x, i / fps) for i, x in enumerate(xs)])


@pytest.fixture(scope="module")
def still_raw_landmarks() -> np.ndarray:
    """``25 x 478 x 2`` raw landmarks of a still head (FaceTracker(smooth=False))."""
    frames = realdata.read_frames("eyes_left_right_wink_512.mp4", limit=25)
    from warpcam.realtime.tracker import FaceTracker

    out = []
    with FaceTracker(smooth=False) as tr:
        for i, img in enumerate(frames):
            faces = tr.track(img, i / FPS)
            assert len(faces) == 1, f"frame {i}: expected one face"
            assert np.array_equal(faces[0].landmarks, faces[0].landmarks_raw)
            out.append(faces[0].landmarks_raw.astype(np.float64))
    raw = np.stack(out)
    centre = raw[:, FACE_RIGID].mean(axis=1)
    assert np.ptp(centre, axis=0).max() < 6.0, "the head is expected to be still in these frames"
    return raw


def _shape_std(a: np.ndarray) -> float:
    """RMS deviation of the rigid points from their temporal mean, after removing each frame's
    translation (what is left is landmark jitter), skipping the filter's first frames."""
    p = a[:, FACE_RIGID] - a[:, FACE_RIGID].mean(axis=1, keepdims=True)
    p = p[5:]
    return float(np.sqrt(((p - p.mean(axis=0)) ** 2).mean()))


def _accel_rms(a: np.ndarray) -> float:
    """RMS second difference of the rigid points (px / frame^2): jitter, not steady motion."""
    d = np.diff(a[:, FACE_RIGID], n=2, axis=0)
    return float(np.sqrt((d ** 2).mean()))


# ------------------------------------------------------------------------------------------------
# jitter
# ------------------------------------------------------------------------------------------------

def test_real_still_face_landmark_jitter_is_removed(still_raw_landmarks):
    raw = still_raw_landmarks
    assert _accel_rms(raw) > 0.5, "raw FaceMesh landmarks are expected to jitter"
    filt = run_filter(OneEuroFilter(min_cutoff=1.0, beta=0.0), raw)
    assert filt.shape == raw.shape and filt.dtype == np.float64
    assert _shape_std(filt) < 0.5 * _shape_std(raw)
    assert _accel_rms(filt) < 0.25 * _accel_rms(raw)
    # The filter removes jitter, it does not move the face: the mean position is kept.
    assert np.abs(filt[10:, FACE_RIGID].mean(0) - raw[10:, FACE_RIGID].mean(0)).max() < 3.0


def test_real_still_face_with_tracker_mesh_parameters(still_raw_landmarks):
    raw = still_raw_landmarks
    filt = run_filter(OneEuroFilter(**MESH), raw)
    assert _accel_rms(filt) < 0.5 * _accel_rms(raw)


def test_synthetic_still_noise_std_drops():
    rng = np.random.default_rng(0)
    x = 100.0 + rng.normal(0.0, 0.5, size=(300, 50))
    filt = run_filter(OneEuroFilter(min_cutoff=1.0, beta=0.0), x)
    raw_std = x[30:].std(axis=0).mean()
    filt_std = filt[30:].std(axis=0).mean()
    # A first-order low-pass at 1 Hz sampled at 30 Hz keeps sqrt(a / (2 - a)) ~ 0.31 of white noise.
    assert filt_std < 0.4 * raw_std
    assert abs(filt[30:].mean() - 100.0) < 0.05


def test_constant_signal_is_returned_exactly():
    f = OneEuroFilter(**MESH)
    x = np.full((478, 2), 123.25)
    for i in range(20):
        y = f(x, i / FPS)
    assert np.array_equal(y, x)


# ------------------------------------------------------------------------------------------------
# lag
# ------------------------------------------------------------------------------------------------

def test_fast_ramp_is_tracked_with_small_lag_thanks_to_beta():
    speed = 300.0  # px / s: a quick head turn at 720p
    t = np.arange(45) / FPS
    x = speed * t
    fast = run_filter(OneEuroFilter(**MESH), x[:, None])[:, 0]
    slow = run_filter(OneEuroFilter(min_cutoff=MESH["min_cutoff"], beta=0.0), x[:, None])[:, 0]
    lag_fast = np.abs(x - fast)
    lag_slow = np.abs(x - slow)
    # After 0.5 s the speed-adaptive filter is within a few pixels ...
    assert lag_fast[15:].max() < 3.0
    # ... while the same filter without speed adaptation lags by a lot.
    assert lag_slow[15:].min() > 15.0
    # Never overshoots a monotone ramp.
    assert np.all(fast <= x + 1e-9)


def test_step_settles():
    f = OneEuroFilter(**MESH)
    y = [f(np.array([0.0]), i / FPS) for i in range(5)]
    y = [f(np.array([50.0]), (5 + i) / FPS)[0] for i in range(30)]
    assert 0 < y[0] < 50
    assert np.all(np.diff(y) >= -1e-9)
    assert abs(y[-1] - 50.0) < 1.0


def test_irregular_sampling_uses_the_time_stamps():
    """The same ramp sampled at 60 Hz instead of 30 Hz lags no more in seconds."""
    speed = 300.0
    x30 = speed * np.arange(30) / 30.0
    x60 = speed * np.arange(60) / 60.0
    y30 = run_filter(OneEuroFilter(**MESH), x30[:, None], fps=30.0)[:, 0]
    y60 = run_filter(OneEuroFilter(**MESH), x60[:, None], fps=60.0)[:, 0]
    # Same instant t = 29/30 s = 58/60 s.
    assert abs((x60[58] - y60[58]) - (x30[29] - y30[29])) < 1.5


def test_non_increasing_time_stays_finite():
    f = OneEuroFilter(**MESH)
    f(np.array([1.0, 2.0]), 1.0)
    y1 = f(np.array([2.0, 3.0]), 1.0)   # same time stamp
    y2 = f(np.array([3.0, 4.0]), 0.5)   # time going backwards
    assert np.isfinite(y1).all() and np.isfinite(y2).all()
    assert np.all((y1 > 1.0) & (y1 < 3.0))


# ------------------------------------------------------------------------------------------------
# restarts and state
# ------------------------------------------------------------------------------------------------

def test_first_sample_is_returned_unchanged_and_not_aliased():
    f = OneEuroFilter(**MESH)
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    y = f(x, 0.0)
    assert np.array_equal(y, x) and y is not x
    y[:] = 1e6  # mutating the output must not corrupt the filter state
    x[:] = 0.0  # nor mutating the input
    z = f(np.array([[1.0, 2.0], [3.0, 4.0]]), 1 / FPS)
    assert np.allclose(z, [[1.0, 2.0], [3.0, 4.0]])


def test_reset_restarts():
    f = OneEuroFilter(**MESH)
    for i in range(10):
        f(np.zeros(3), i / FPS)
    f.reset()
    x = np.array([10.0, 20.0, 30.0])
    assert np.array_equal(f(x, 11 / FPS), x)
    # And the new state is used afterwards (no memory of the zeros).
    assert np.allclose(f(x, 12 / FPS), x)


def test_shape_change_restarts():
    f = OneEuroFilter(**MESH)
    for i in range(10):
        f(np.zeros((2, 5, 2)), i / FPS)
    x = np.arange(6, dtype=np.float64).reshape(3, 2) + 7.0
    assert np.array_equal(f(x, 11 / FPS), x)


def test_scalar_and_integer_input():
    f = OneEuroFilter()
    assert f(5, 0.0) == 5.0
    y = f(7, 1 / FPS)
    assert y.shape == () and 5.0 < float(y) < 7.0
    g = OneEuroFilter()
    g(np.array([5], dtype=np.int32), 0.0)
    y = g(np.array([7], dtype=np.int32), 1 / FPS)
    assert y.dtype == np.float64 and 5.0 < y[0] < 7.0


# ------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(min_cutoff=0.0), dict(min_cutoff=-1.0), dict(d_cutoff=0.0), dict(d_cutoff=-2.0),
    dict(beta=-0.1)])
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        OneEuroFilter(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(min_cutoff=math.nan), dict(beta=math.nan),
                                    dict(d_cutoff=math.nan), dict(beta=math.inf)])
def test_nan_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        OneEuroFilter(**kwargs)

