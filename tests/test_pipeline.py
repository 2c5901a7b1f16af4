"""Pipeline (realtime/pipeline.py) with a real FaceTracker and the CPU compositor: pass-through of
frames without faces, edits confined to the jobs' boxes, stage timing, preview hotkeys, run()
ending the sink properly, non-finite jobs, input layouts and in-place compositing.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from warpcam.kernels.cpu import CpuCompositor
from warpcam.realtime.effects.gaze import GazeSettings
from warpcam.realtime.effects import build_effects
from warpcam.realtime.pipeline import Pipeline, StageTimer
from warpcam.realtime.effects.smile import SmileSettings
from warpcam.realtime.io import NullSink
from warpcam.realtime.io import SourceError
from warpcam.realtime.tracker import FaceTracker
from warpcam.core.types import Frame
from tests.helpers import job_mask
from tests import realdata

pytest.importorskip("mediapipe")


def effect_settings(pitch=10.0, smile=0.5) -> list:
    return build_effects(gaze=GazeSettings(pitch_deg=pitch), smile=SmileSettings(smile))




@pytest.fixture(scope="module")
def astro_result(static_tracker, astronaut):
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    frame = Frame(astronaut.copy(), 0)
    out, faces, jobs = p.process(frame)
    return p, frame, out, faces, jobs


def run_modes():
    """``run()`` keyword sets to test: both capture/tracking modes when ``run`` has ``threaded``."""
    import inspect

    if "threaded" in inspect.signature(Pipeline.run).parameters:
        return [dict(threaded=True), dict(threaded=False)]
    return [dict()]


RUN_MODES = run_modes()
RUN_IDS = ["-".join(f"{k}={v}" for k, v in m.items()) or "default" for m in RUN_MODES]


class FakeSink:
    """Records what the pipeline does to a sink; ``keys`` are returned by poll_key in order."""

    def __init__(self, keys=()):
        self.keys = list(keys)
        self.written = []
        self.hud = []
        self.closed = 0
        self.aborted = 0

    def write(self, frame, image):
        self.written.append((frame.index, image.copy()))

    def poll_key(self):
        return self.keys.pop(0) if self.keys else None

    def set_hud_lines(self, lines):
        self.hud.append(list(lines))

    def frame_done(self, pipeline):
        """The sink hook the pipeline calls after each frame; ``q`` stops the run."""
        return self.poll_key() != "q"

    def close(self):
        self.closed += 1

    def abort(self):
        self.aborted += 1


class ListSource:
    """Yields frames, then raises ``fail`` (if given) instead of ending."""

    is_live = False

    def __init__(self, images, fail=None):
        self.images, self.fail = images, fail

    def __iter__(self):
        for i, img in enumerate(self.images):
            yield Frame(img.copy(), i, pts_seconds=i / 30.0)
        if self.fail is not None:
            raise self.fail


# ------------------------------------------------------------------------------------------------
# pass-through
# ------------------------------------------------------------------------------------------------

def test_frames_without_a_face_pass_through_untouched():
    crowd = realdata.read_frames("hard_crowd_tiny_faces_1080p.mp4", every=50, limit=2)
    blank = np.zeros((720, 1280, 3), np.uint8)
    with FaceTracker() as tr:
        p = Pipeline(tr, CpuCompositor(), effect_settings())
        for i, img in enumerate(list(crowd) + [blank]):
            before = img.copy()
            frame = Frame(img, i, pts_seconds=i / 25.0)
            out, faces, jobs = p.process(frame)
            assert faces == [] and jobs == []
            assert out is frame.image  # no copy, no conversion
            assert np.array_equal(out, before)
    assert p.frames == 3 and p.faces_seen == 0


def test_face_with_no_active_effect_passes_through(static_tracker, astronaut):
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings(pitch=0.0, smile=0.0))
    frame = Frame(astronaut.copy(), 0)
    out, faces, jobs = p.process(frame)
    assert len(faces) == 1 and jobs == []
    assert out is frame.image and np.array_equal(out, astronaut)


# ------------------------------------------------------------------------------------------------
# edits stay inside the jobs' boxes
# ------------------------------------------------------------------------------------------------

def test_edit_changes_only_the_union_of_job_boxes(astro_result, astronaut):
    p, frame, out, faces, jobs = astro_result
    assert len(faces) == 1
    kinds = sorted(j.kind for j in jobs)
    assert kinds == ["eye_left", "eye_right", "mouth"]
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    assert out is not frame.image
    assert np.array_equal(frame.image, astronaut), "inplace=False must not write into the frame"
    inside = job_mask(jobs, astronaut.shape)
    changed = np.any(out != astronaut, axis=2)
    assert changed.any()
    assert not changed[~inside].any(), "pixels outside every job's frame box changed"
    assert np.array_equal(out[~inside], astronaut[~inside])
    # Each effect did something inside its own box.
    for j in jobs:
        x0, y0, x1, y1 = j.frame_bbox(astronaut.shape)
        assert changed[y0:y1, x0:x1].sum() > 20, f"{j.kind} changed nothing"
    # The boxes are small: the edit touches a few percent of the frame.
    assert inside.mean() < 0.1


def test_gaze_up_moves_the_irises_up(astro_result, static_tracker):
    """The eye edit is a gaze change, not noise: the tracker sees the irises higher."""
    p, frame, out, faces, jobs = astro_result
    after = static_tracker.track(np.ascontiguousarray(out))
    assert len(after) == 1
    for k in (468, 473):
        dy = after[0].landmarks[k, 1] - faces[0].landmarks[k, 1]
        assert dy < -0.3, f"iris {k} moved by {dy:+.2f} px (expected up, i.e. negative)"


def test_stats_have_percentiles_per_stage(astro_result):
    p = astro_result[0]
    st = p.stats()
    assert st["frames"] == 1 and st["faces"] == 1
    for stage in ("tracking", "effects", "composite"):
        s = st["stages"][stage]
        assert set(s) >= {"p50_ms", "p99_ms", "mean_ms", "n"}
        assert s["n"] == 1
        assert 0 <= s["p50_ms"] <= s["p99_ms"]
        assert np.isfinite(s["p99_ms"])


def test_stage_timer_percentiles():
    t = StageTimer()
    for v in range(1, 101):
        t.add("tracking", v / 1000.0)
    s = t.summary()["tracking"]
    assert s["n"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["mean_ms"] == pytest.approx(50.5)
    w = StageTimer(window=10)
    for v in range(100):
        w.add("x", v / 1000.0)
    assert w.summary()["x"]["n"] == 10 and w.summary()["x"]["p50_ms"] == pytest.approx(94.5)


# ------------------------------------------------------------------------------------------------
# run(): sink life cycle (the preview's hotkeys and HUD are tested in test_sources_sinks.py)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", RUN_MODES, ids=RUN_IDS)
def test_run_closes_the_sink_on_success(static_tracker, astronaut, mode):
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings(), inplace=True)
    sink = FakeSink()
    seen = []
    stats = p.run(ListSource([astronaut, astronaut]), sink, **mode,
                  on_frame=lambda frame, out, faces, jobs: seen.append(len(jobs)))
    assert sink.closed == 1 and sink.aborted == 0
    assert [i for i, _ in sink.written] == [0, 1]
    assert seen == [3, 3]
    # The sink got the edited pictures.
    for _, img in sink.written:
        assert not np.array_equal(img, astronaut)
    assert stats["frames"] == 2 and stats["faces"] == 2
    for stage in ("capture", "tracking", "effects", "composite", "output", "total"):
        assert stats["stages"][stage]["n"] == 2


@pytest.mark.parametrize("mode", RUN_MODES, ids=RUN_IDS)
def test_run_aborts_the_sink_when_the_source_fails(static_tracker, astronaut, mode):
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    sink = FakeSink()
    err = SourceError("video x.mp4 is truncated: decoded 2 of 9 frames")
    with pytest.raises(SourceError, match="truncated"):
        p.run(ListSource([astronaut, astronaut], fail=err), sink, **mode)
    assert sink.aborted == 1 and sink.closed == 0
    assert len(sink.written) == 2  # the good frames were written before the failure


@pytest.mark.parametrize("mode", RUN_MODES, ids=RUN_IDS)
def test_run_aborts_the_sink_on_interrupt(static_tracker, astronaut, mode):
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    sink = FakeSink()

    def interrupt(*_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        p.run(ListSource([astronaut, astronaut]), sink, on_frame=interrupt, **mode)
    assert sink.aborted == 1 and sink.closed == 0


@pytest.mark.parametrize("mode", RUN_MODES, ids=RUN_IDS)
def test_run_stops_on_q_and_on_max_frames(static_tracker, mode):
    blank = np.zeros((64, 64, 3), np.uint8)
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    sink = FakeSink(keys=[None, None, "q"])
    p.run(ListSource([blank] * 10), sink, **mode)
    assert len(sink.written) == 3 and sink.closed == 1 and sink.aborted == 0
    p2 = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    sink2 = FakeSink()
    stats = p2.run(ListSource([blank] * 10), sink2, max_frames=4, **mode)
    assert len(sink2.written) == 4 and stats["frames"] == 4 and sink2.closed == 1


@pytest.mark.parametrize("mode", RUN_MODES, ids=RUN_IDS)
def test_run_hands_every_file_frame_over_in_order(static_tracker, mode):
    """A non-live source: every frame reaches the sink, in order, with its own pixels."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(25)]
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    sink = FakeSink()
    stats = p.run(ListSource(images), sink, **mode)
    assert [i for i, _ in sink.written] == list(range(25))
    for (i, got), want in zip(sink.written, images):
        assert np.array_equal(got, want), f"frame {i}"
    assert stats["frames"] == 25 and stats.get("dropped", 0) == 0


def test_run_into_a_real_null_sink(static_tracker, astronaut):
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    sink = NullSink()
    p.run(ListSource([astronaut]), sink)
    assert sink.frames_written == 1 and sink.closed


# ------------------------------------------------------------------------------------------------
# non-finite jobs
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["flow", "alpha", "palette"])
def test_job_with_nan_is_dropped_and_warned_once(static_tracker, astronaut, caplog, monkeypatch,
                                                 field):
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    real_jobs = p.effect("smile").jobs

    def poisoned(image, faces, t=0.0, crops=None):
        jobs = real_jobs(image, faces, t, crops)
        for j in jobs:
            h, w = j.size
            if field == "flow":
                j.flow[h // 2, w // 2, 0] = np.nan
            elif field == "alpha":
                j.alpha[h // 2, w // 2] = np.inf
            else:
                j.palette_mix = (np.full((h, w), 0.5, np.float32),
                                 np.array([np.nan, 0, 0], np.float32))
        return jobs

    monkeypatch.setattr(p.effect("smile"), "jobs", poisoned)
    caplog.set_level(logging.WARNING, logger="warpcam")
    for i in range(2):
        out, faces, jobs = p.process(Frame(astronaut.copy(), i))
        assert sorted(j.kind for j in jobs) == ["eye_left", "eye_right"]
        assert np.isfinite(out.astype(np.float64)).all()
        # The mouth ROI passes through: out is exactly the eye jobs composited.
        ref = CpuCompositor().composite(astronaut, jobs)
        assert np.array_equal(out, ref)
        # In particular the mouth (below both eye boxes) is untouched.
        mouth_y = int(faces[0].landmarks[13, 1])
        eye_bottom = max(j.frame_bbox(astronaut.shape)[3] for j in jobs)
        assert mouth_y > eye_bottom
        assert np.array_equal(out[eye_bottom:], astronaut[eye_bottom:])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "non-finite" in r.getMessage()]
    assert len(warnings) == 1
    assert "mouth" in warnings[0].getMessage()


# ------------------------------------------------------------------------------------------------
# input layouts
# ------------------------------------------------------------------------------------------------

def test_uint16_and_bgra_frames_give_the_same_result_as_bgr8(static_tracker, astronaut,
                                                             astro_result):
    ref = astro_result[2]
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    u16 = astronaut.astype(np.uint16) * 257
    out, faces, jobs = p.process(Frame(u16, 0))
    assert out.shape == astronaut.shape and out.dtype == np.uint8 and len(faces) == 1
    assert np.array_equal(out, ref)
    assert np.array_equal(u16, astronaut.astype(np.uint16) * 257)  # input untouched
    bgra = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = 77
    out, faces, jobs = p.process(Frame(bgra, 1))
    assert out.shape == astronaut.shape and np.array_equal(out, ref)


@pytest.mark.parametrize("layout", ["HxW", "HxWx1"])
def test_grayscale_frames_are_accepted(static_tracker, astronaut, layout):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    img = grey if layout == "HxW" else grey[..., None]
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    out, faces, jobs = p.process(Frame(img.copy(), 0))
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    assert len(faces) == 1 and jobs
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    inside = job_mask(jobs, bgr.shape)
    assert np.array_equal(out[~inside], bgr[~inside])
    assert np.any(out[inside] != bgr[inside])


@pytest.mark.parametrize("bad", [np.zeros(10, np.uint8), np.zeros((4, 4, 2), np.uint8),
                                 np.zeros((4, 4, 3), np.int32)],
                         ids=["1-D", "2-channel", "int32"])
def test_invalid_frames_raise_value_error(static_tracker, bad):
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    with pytest.raises(ValueError):
        p.process(Frame(bad, 0))


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 16, 3), (16, 0), (0, 0)])
def test_zero_size_frame_raises_value_error(static_tracker, shape):
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings())
    with pytest.raises(ValueError):
        p.process(Frame(np.zeros(shape, np.uint8), 0))


# ------------------------------------------------------------------------------------------------
# in place
# ------------------------------------------------------------------------------------------------

def test_inplace_writes_into_the_frame_and_matches_the_copy(static_tracker, astronaut,
                                                            astro_result):
    ref = astro_result[2]
    p = Pipeline(static_tracker, CpuCompositor(), effect_settings(), inplace=True)
    img = astronaut.copy()
    frame = Frame(img, 0)
    out, faces, jobs = p.process(frame)
    assert out is img, "inplace=True must composite into the frame's own array"
    assert np.array_equal(img, ref)
    assert np.array_equal(out, ref)


def test_inplace_run_does_not_alter_an_image_source(static_tracker, astronaut, tmp_path):
    from warpcam.realtime.io import ImageSource

    path = tmp_path / "astronaut.png"
    assert cv2.imwrite(str(path), astronaut)
    src = ImageSource(path)
    outs = []
    for _ in range(2):
        p = Pipeline(static_tracker, CpuCompositor(), effect_settings(), inplace=True)
        p.run(src, NullSink(), on_frame=lambda frame, out, faces, jobs: outs.append(out.copy()))
    assert np.array_equal(outs[0], outs[1])
    assert np.array_equal(next(iter(src)).image, astronaut)
