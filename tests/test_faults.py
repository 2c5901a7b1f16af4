"""Faults while running: a webcam that stalls, disconnects and comes back; a full disk; a read-only
output folder; Ctrl-C (a real SIGINT) during a file job; a slow sink in live mode; bounded memory
of the stage timer.

What is expected (issue 5):

- camera fault: the sink keeps receiving frames (the last good frame while the camera is late,
  then a clear "camera lost" frame), the device is reopened until it is back, and the stream goes
  on at the same size with increasing frame indices;
- full disk / read-only folder: a one-line error, exit status 2, no output and no temporary file;
- Ctrl-C: exit status 130, "warpcam: interrupted", the temporary file removed;
- slow sink, live source: stale frames are dropped, never queued.

Cameras are fakes (an OpenCV-capture stand-in fed with real frames) run through the real
:class:`~warpcam.realtime.io.WebcamSource` grabber thread. The full-disk test mounts a small tmpfs
when it runs as root and the kernel lets it, and otherwise (and always, as a second variant)
injects ``ENOSPC`` into the muxer. No timed assertions: every check is about what reached the sink.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from warpcam.realtime import cli
from warpcam.realtime.pipeline import Pipeline, StageTimer
from warpcam.realtime.io import (ReconnectingSource, Sink, SourceError, VideoFileSink,
                                 WebcamSource, camera_lost_image)
from tests import realdata
from tests.helpers import signal_when, with_stop_signals

REPO = Path(__file__).resolve().parents[1]
SMALL = "mead_w009_neutral_256.mp4"    # 256x256, 25 fps, 104 frames, no audio
LOOKS_DOWN = "looks_down_blinks_512.mp4"


# ------------------------------------------------------------------------------------------------
# fakes
# ------------------------------------------------------------------------------------------------

class FakeCapture:
    """``cv2.VideoCapture`` stand-in serving ``frames`` at ``fps``; after ``fail_after`` frames
    it returns ``(False, None)`` for ever (an unplugged V4L2 device), or raises with
    ``raise_after``."""

    def __init__(self, frames, fps=200.0, fail_after=None, raise_after=None, opened=True):
        self.frames, self.period = frames, 1.0 / fps
        self.fail_after, self.raise_after = fail_after, raise_after
        self.opened, self.released, self.n = opened, False, 0
        self.props = {}

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def read(self):
        time.sleep(self.period)
        if self.raise_after is not None and self.n >= self.raise_after:
            raise OSError("USB device disconnected")
        if self.fail_after is not None and self.n >= self.fail_after:
            return False, None
        img = self.frames[self.n % len(self.frames)]
        self.n += 1
        return True, img.copy()

    def release(self):
        self.released = True


class Device:
    """A camera that can be unplugged: each ``open()`` is one plug-in session. ``plan`` lists what
    each call does: an int N = a working camera that fails after N frames (None = never fails),
    ``"missing"`` = the device is not there (SourceError)."""

    def __init__(self, frames, plan, index=3, frame_timeout=0.6, fps=200.0, size=None):
        self.frames, self.plan, self.index = frames, list(plan), index
        self.frame_timeout, self.fps, self.size = frame_timeout, fps, size
        self.opens = 0
        self.captures = []

    def open(self) -> WebcamSource:
        self.opens += 1
        what = self.plan.pop(0) if self.plan else None
        if what == "missing":
            raise SourceError(f"cannot open webcam {self.index}: /dev/video{self.index} does not "
                              "exist")
        frames = self.frames
        if self.size is not None and self.opens > 1:  # comes back at another size
            import cv2
            frames = [cv2.resize(f, self.size) for f in frames]
        cap = FakeCapture(frames, fps=self.fps, fail_after=what)
        self.captures.append(cap)
        return WebcamSource(self.index, capture_factory=lambda i, api: cap,
                            frame_timeout=self.frame_timeout, first_frame_timeout=2.0)


class RecordingSink(Sink):
    """A live sink of a fixed size (like the virtual camera) that records what it got and asks
    the pipeline to stop (``frame_done`` returns False) once ``stop_when(self)`` is true."""

    def __init__(self, width, height, stop_when, limit=2000):
        super().__init__(width, height)
        self.got = []  # (index, status or None, image)
        self.stop_when, self.limit = stop_when, limit

    @property
    def is_live(self):
        return True

    def _write(self, frame, image):
        self.got.append((frame.index, getattr(frame, "status", None), image.copy(),
                         frame.pts_seconds))

    def frame_done(self, pipeline):
        """The pipeline's per-frame hook: False (like the preview's ``q``) stops the run."""
        return not (self.stop_when(self) or len(self.got) >= self.limit)

    def statuses(self):
        """Run-length list of what arrived: [("ok", n), ("lost", n), ...]."""
        runs = []
        for _, st, _, _ in self.got:
            st = st or "ok"
            if runs and runs[-1][0] == st:
                runs[-1][1] += 1
            else:
                runs.append([st, 1])
        return [tuple(r) for r in runs]


class NoFaceTracker:
    """Tracker stand-in for tests about frame flow, not faces (no mediapipe start-up)."""

    def track(self, image, t=None):
        return []


class CountingCompositor:
    def composite(self, frame, jobs, inplace=False):  # never called without faces
        raise AssertionError("no jobs expected")


@pytest.fixture(scope="module")
def cam_frames():
    """40 real 256x256 face frames (the astronaut when the shared videos are absent)."""
    if (realdata.VIDEOS / SMALL).exists():
        return list(realdata.read_frames(SMALL, limit=40))
    base = realdata.astronaut_bgr()[::2, ::2]
    return [np.roll(base, 3 * i, axis=1) for i in range(40)]


def after_reconnect(n):
    """stop_when: n real frames arrived after a "lost" run."""
    def cond(sink):
        runs = sink.statuses()
        seen_lost = False
        for st, k in runs:
            if st == "lost":
                seen_lost = True
            elif st == "ok" and seen_lost and k >= n:
                return True
        return False
    return cond


# ------------------------------------------------------------------------------------------------
# camera lost and back
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "single-thread"])
def test_camera_unplugged_mid_stream_shows_lost_then_reconnects(cam_frames, caplog, threaded):
    """Unplugged after 15 frames, missing for two reconnect attempts, then back."""
    dev = Device(cam_frames, plan=[15, "missing", "missing", None])
    caplog.set_level(logging.WARNING, logger="warpcam")
    src = ReconnectingSource(dev.open, hold_after=0.05, retry_every=0.1)
    h, w = cam_frames[0].shape[:2]
    assert (src.width, src.height, src.is_live) == (w, h, True)
    sink = RecordingSink(w, h, after_reconnect(10))
    with src:
        stats = Pipeline(NoFaceTracker(), CountingCompositor()).run(src, sink, threaded=threaded)
    assert sink.closed and src.closed
    runs = sink.statuses()
    kinds = [st for st, _ in runs]
    # good frames, (maybe a few held while the camera was late), lost, good frames again
    assert kinds[0] == "ok" and kinds[-1] == "ok" and "lost" in kinds, runs
    assert kinds.index("lost") < len(kinds) - 1
    assert set(kinds) <= {"ok", "held", "lost"}
    assert runs[-1][1] >= 10  # frames flow again after the reconnect (live: some are dropped)
    assert dev.opens == 4 and src.reconnects == 1
    # The stream never stops and never goes back: indices and timestamps keep increasing.
    idx = [i for i, _, _, _ in sink.got]
    pts = [p for _, _, _, p in sink.got]
    assert all(b > a for a, b in zip(idx, idx[1:]))
    assert all(b > a for a, b in zip(pts, pts[1:]))
    # Real frames are the camera's pixels; lost frames are the darkened last frame with text.
    ok = [img for _, st, img, _ in sink.got if st is None]
    assert any(np.array_equal(ok[0], f) for f in cam_frames)
    lost = [img for _, st, img, _ in sink.got if st == "lost"]
    assert lost[0].shape == (h, w, 3)
    assert lost[0].mean() < 0.45 * ok[0].mean()
    assert (lost[0] > 200).all(axis=2).sum() > 20, "no readable text on the 'camera lost' frame"
    assert stats["status_frames"]["lost"] == len(lost)
    # The user is told once when it is lost and once when it is back (not once per attempt).
    msgs = [r.getMessage() for r in caplog.records if r.name == "warpcam"]
    assert sum("lost" in m for m in msgs) == 1, msgs
    assert sum("is back" in m for m in msgs) == 1, msgs


def test_camera_that_raises_on_read_is_reopened(cam_frames):
    """A read that raises (USB reset) instead of returning False: lost at once, then reopened."""
    caps = []

    def opener():
        cap = FakeCapture(cam_frames, fps=200, raise_after=8 if not caps else None)
        caps.append(cap)
        return WebcamSource(1, capture_factory=lambda i, api: cap, frame_timeout=5.0)

    h, w = cam_frames[0].shape[:2]
    sink = RecordingSink(w, h, after_reconnect(5))
    with ReconnectingSource(opener, hold_after=0.05, retry_every=0.05) as src:
        Pipeline(NoFaceTracker(), CountingCompositor()).run(src, sink)
        assert src.reconnects == 1
    assert len(caps) == 2 and all(c.released for c in caps)
    assert "lost" in [st for st, _ in sink.statuses()]


def test_stalled_camera_gets_held_frames_with_the_last_edited_output(cam_frames):
    """A camera late for a moment (no error): the sink keeps receiving the last *output* (the
    edited picture, not the raw frame), and the stream resumes without a reconnect."""

    class StallingCapture(FakeCapture):
        def read(self):
            if self.n == 10 and not getattr(self, "stalled", False):
                self.stalled = True
                time.sleep(0.4)
            return super().read()

    cap = StallingCapture(cam_frames, fps=100)
    cam = WebcamSource(2, capture_factory=lambda i, api: cap, frame_timeout=5.0)

    p = Pipeline(NoFaceTracker(), CountingCompositor())

    def render(img, faces, t):  # an "effect" that visibly edits every real frame
        out = img.copy()
        out[:8, :8] = (255, 0, 255)
        p.frames += 1
        return out, []

    p.render = render
    h, w = cam_frames[0].shape[:2]
    sink = RecordingSink(w, h, lambda s: sum(st is None for _, st, _, _ in s.got) >= 25)
    with ReconnectingSource(lambda: cam, first=cam, hold_after=0.1) as src:
        p.run(src, sink)
        assert src.reconnects == 0 and src.state == "ok"
    runs = sink.statuses()
    assert ("held" in [st for st, _ in runs]) and "lost" not in [st for st, _ in runs], runs
    for k, (_, st, img, _) in enumerate(sink.got):
        if st == "held":
            prev = next(g for g in reversed(sink.got[:k]) if g[1] is None)
            assert np.array_equal(img, prev[2]), "a held frame must repeat the last output"
            assert (img[:8, :8] == (255, 0, 255)).all()


def test_camera_back_at_another_size_is_resized_to_the_first(cam_frames, caplog):
    dev = Device(cam_frames, plan=[6, None], size=(320, 240))
    h, w = cam_frames[0].shape[:2]
    sink = RecordingSink(w, h, after_reconnect(5))  # a fixed-size sink rejects other sizes
    caplog.set_level(logging.WARNING, logger="warpcam")
    with ReconnectingSource(dev.open, hold_after=0.05, retry_every=0.05) as src:
        Pipeline(NoFaceTracker(), CountingCompositor()).run(src, sink)
    assert all(img.shape == (h, w, 3) for _, _, img, _ in sink.got)
    assert any("resizing" in r.getMessage() for r in caplog.records)


def test_give_up_after_raises_and_aborts_the_sink(cam_frames):
    dev = Device(cam_frames, plan=[5] + ["missing"] * 100)
    h, w = cam_frames[0].shape[:2]
    sink = RecordingSink(w, h, lambda s: False)
    src = ReconnectingSource(dev.open, hold_after=0.05, retry_every=0.05, give_up_after=0.3)
    with src, pytest.raises(SourceError, match=r"lost for \d+ s .*giving up"):
        Pipeline(NoFaceTracker(), CountingCompositor()).run(src, sink)
    assert sink.closed and sink.frames_written >= 5


def test_missing_camera_at_start_still_fails_at_once():
    def opener():
        raise SourceError("cannot open webcam 9: /dev/video9 does not exist")

    with pytest.raises(SourceError, match="webcam 9"):
        ReconnectingSource(opener)


def test_camera_lost_image_sizes():
    for shape in ((720, 1280), (1, 1), (3, 5), (40, 2000)):
        img = camera_lost_image(None, shape[1], shape[0])
        assert img.shape == shape + (3,) and img.dtype == np.uint8
    last = np.full((64, 96, 3), 200, np.uint8)
    img = camera_lost_image(last, 96, 64)
    assert img is not last and (last == 200).all()  # a new picture; the last frame untouched
    assert img[0, 0].tolist() == [60, 60, 60]       # darkened to 30 %


def test_cli_webcam_survives_an_unplug(cam_frames, monkeypatch, capsys):
    """The whole CLI on a (fake) webcam: unplugged after 12 frames, back on the second attempt.
    The null sink stops the run with Ctrl-C once frames flow again."""
    import importlib

    from warpcam.realtime.io import NullSink as _Null

    dev = Device(cam_frames, plan=[12, "missing", None], index=0)
    # The CLI's open_source (it imports it from warpcam.realtime.io when it runs).
    for name in ("warpcam.realtime.io",):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        monkeypatch.setattr(mod, "open_source", lambda spec, **kw: dev.open())
    got = []

    def write(self, frame, image):
        got.append(getattr(frame, "status", None) or "ok")
        runs = "".join("L" if s == "lost" else ("o" if s == "ok" else "") for s in got)
        if "L" in runs and runs.endswith("o" * 5):
            raise KeyboardInterrupt  # the user quits once it works again

    monkeypatch.setattr(_Null, "_write", write)
    code = cli.main(["--input", "0", "--output", "null", "--quiet", "--no-eye-contact"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_INTERRUPTED, err
    assert "lost" in got and got[0] == "ok" and got[-1] == "ok"
    assert dev.opens == 3


# ------------------------------------------------------------------------------------------------
# a slow sink in live mode drops frames instead of queueing them
# ------------------------------------------------------------------------------------------------

def test_slow_sink_live_drops_instead_of_queueing(cam_frames):
    cap = FakeCapture(cam_frames, fps=250)
    cam = WebcamSource(5, capture_factory=lambda i, api: cap, frame_timeout=5.0)
    h, w = cam_frames[0].shape[:2]
    lags = []

    class SlowSink(RecordingSink):
        def _write(self, frame, image):
            lags.append(cap.n - 1 - frame.index)  # camera frames newer than this one
            time.sleep(0.03)
            super()._write(frame, image)

    sink = SlowSink(w, h, lambda s: len(s.got) >= 40)
    with cam:
        stats = Pipeline(NoFaceTracker(), CountingCompositor()).run(cam, sink)
    idx = [i for i, _, _, _ in sink.got]
    assert all(b > a for a, b in zip(idx, idx[1:]))
    assert stats["dropped"] > 0 and cap.n > 2 * len(idx)
    # A queue would fall further behind on every frame (about 7 camera frames per write here,
    # ~280 behind by the end); dropping keeps the age of what is shown bounded.
    assert max(lags) < 40, lags
    assert max(lags[-10:]) <= max(lags[:20]) + 10, lags


# ------------------------------------------------------------------------------------------------
# full disk, read-only folder
# ------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str, ro: bool = False):
    """Mount a tmpfs of ``size`` at ``path`` (skip when not root or mounts are not allowed)."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux") or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def call(argv, capsys):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warpcam: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


class _FullDiskContainer:
    """Proxy of a PyAV output container whose writes fail with ENOSPC after ``after`` packets
    (``after=None``: only the final flush in ``close`` fails)."""

    def __init__(self, real, after):
        self._real, self._after, self._n = real, after, 0

    def mux(self, packets):
        self._n += 1
        if self._after is not None and self._n > self._after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._real.mux(packets)

    def close(self):
        self._real.close()
        if self._after is None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.mark.parametrize("where", ["tmpfs", "injected-mid-stream", "injected-at-close"])
def test_full_disk_fails_cleanly_and_leaves_no_output(tmp_path, capsys, monkeypatch, where):
    src = realdata.video(SMALL)
    if where == "tmpfs":
        ctx = mounted_tmpfs(tmp_path / "small", "48k")  # a real disk that fills up
    else:
        after = 20 if where == "injected-mid-stream" else None
        real_open = VideoFileSink._open_output

        def open_output(self, *a, **kw):
            real_open(self, *a, **kw)
            self._out = _FullDiskContainer(self._out, after)

        monkeypatch.setattr(VideoFileSink, "_open_output", open_output)
        (tmp_path / "small").mkdir()
        ctx = contextlib.nullcontext(tmp_path / "small")
    with ctx as folder:
        out = folder / "out.mp4"
        code, err = call(["--input", src, "--output", out, "--quiet", "--smile", "0.3"], capsys)
        assert_one_line_error(code, err, "No space left on device", str(out))
        assert sorted(p.name for p in folder.iterdir()) == []


def test_read_only_output_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    src = realdata.video(SMALL)
    if os.geteuid() == 0:
        ctx = mounted_tmpfs(tmp_path / "ro", "64k", ro=True)  # root ignores chmod
    else:
        (tmp_path / "ro").mkdir()
        os.chmod(tmp_path / "ro", 0o555)
        ctx = contextlib.nullcontext(tmp_path / "ro")
    started = []
    monkeypatch.setattr(Pipeline, "run", lambda *a, **k: started.append(1))
    with ctx as folder:
        code, err = call(["--input", src, "--output", folder / "o.mp4"], capsys)
        assert_one_line_error(code, err, "not writable", str(folder))
        assert list(folder.iterdir()) == []
    assert started == [], "the job started before the output folder was checked"


# ------------------------------------------------------------------------------------------------
# Ctrl-C: a real SIGINT to a real process
# ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform.startswith("win"),
                    reason="POSIX signals")
def test_sigint_during_a_file_job_removes_the_temporary_file(tmp_path):
    src = realdata.video(LOOKS_DOWN)
    out = tmp_path / "out.mp4"
    tmp = tmp_path / ".out.warpcam-tmp.mp4"
    proc = subprocess.Popen(with_stop_signals([sys.executable, "run.py", "--input", src,
                                               "--output", out, "--quiet", "--gaze-pitch", "10"]),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # 0.2 s after the job starts writing: well inside the 354-frame job
    _, err = signal_when(proc, tmp.exists, signal.SIGINT, settle_s=0.2)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1] == "warpcam: interrupted", err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# long runs: the stage timer keeps a bounded record
# ------------------------------------------------------------------------------------------------

def test_stage_timer_window_is_bounded_by_default_and_keeps_the_newest():
    from warpcam.realtime.pipeline import DEFAULT_TIMER_WINDOW

    assert DEFAULT_TIMER_WINDOW is not None and DEFAULT_TIMER_WINDOW <= 1 << 20
    t = StageTimer(window=1000)
    for v in range(25_000):
        t.add("total", v / 1e3)
    v = t.values_ms("total")
    assert v.size == 1000 and v[0] == pytest.approx(24_000) and v[-1] == pytest.approx(24_999)
    assert np.all(np.diff(v) > 0)
    assert t.last_ms("total", 3).tolist() == pytest.approx([24_997, 24_998, 24_999])
    assert t.summary()["total"]["n"] == 1000
    everything = StageTimer(window=None)
    for v in range(5000):
        everything.add("x", 1.0)
    assert everything.summary()["x"]["n"] == 5000
    with pytest.raises(ValueError):
        StageTimer(window=0)
