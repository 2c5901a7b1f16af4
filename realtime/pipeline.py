"""The frame pipeline: Source → Tracker → Effects → Compositor → Sink, with per-stage timing.

The pipeline is the one place that knows the order of the stages (see ``../shared/DESIGN.md``).
File sources are processed frame by frame, every frame. Live sources (webcams) hand over only
their newest frame (their grabber thread drops stale ones), so a slow stage drops frames
instead of growing a queue.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict, deque
from typing import Callable, Dict, List, Optional

import numpy as np

from warpcam.core.types import Face, Frame, WarpJob
from warpcam.realtime.effects import Effect, FrameCrops, LiveSettings, build_effects
from warpcam.realtime.io import LatestSlot, SlotClosed, to_bgr8

log = logging.getLogger("warpcam")

STAGES = ("capture", "tracking", "effects", "composite", "output", "total")


#: Samples a :class:`StageTimer` keeps per stage by default: about 73 minutes at 30 fps, at most
#: 1 MiB per stage. A live session runs for hours; an unbounded record grew by ~24 MB an hour.
DEFAULT_TIMER_WINDOW = 1 << 17


class _Ring:
    """The last ``window`` float64 samples (all of them for ``window=None``) in a NumPy array
    that grows by doubling: 8 bytes a sample instead of a Python float in a deque (~32)."""

    __slots__ = ("window", "buf", "n")

    def __init__(self, window: Optional[int]):
        self.window = window
        self.buf = np.empty(64 if window is None else min(64, window), np.float64)
        self.n = 0  # samples ever added

    def append(self, x: float) -> None:
        cap = self.buf.size
        if self.window is None or cap < self.window:
            if self.n == cap:
                grown = np.empty(cap * 2 if self.window is None else min(cap * 2, self.window),
                                 np.float64)
                grown[:cap] = self.buf
                self.buf = grown
            self.buf[self.n] = x
        else:
            self.buf[self.n % cap] = x
        self.n += 1

    def values(self) -> np.ndarray:
        cap = self.buf.size
        if self.n <= cap:
            return self.buf[: self.n].copy()
        k = self.n % cap
        return np.concatenate([self.buf[k:], self.buf[:k]])

    def last(self, k: int) -> np.ndarray:
        cap = self.buf.size
        m = min(k, self.n, cap)
        if self.n <= cap:
            return self.buf[self.n - m: self.n].copy()
        idx = (np.arange(self.n - m, self.n)) % cap
        return self.buf[idx]

    def __len__(self) -> int:
        return min(self.n, self.buf.size)


class _SafeBar:
    """A tqdm progress bar that never stops the work: the first failure to draw it (stderr
    closed, a broken pipe, a full disk) turns it off for the rest of the run."""

    def __init__(self, **kwargs):
        try:
            from tqdm import tqdm
            self._bar = tqdm(**kwargs)
        except Exception:
            self._bar = None

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            try:
                self._bar.update(n)
            except Exception:
                self._off()

    def close(self) -> None:
        if self._bar is not None:
            try:
                self._bar.close()
            except Exception:
                pass
            self._bar = None

    def _off(self) -> None:
        bar, self._bar = self._bar, None
        try:
            bar.disable = True  # tqdm's close() then writes nothing
            bar.close()
        except Exception:
            pass


class StageTimer:
    """Collects per-stage durations (seconds) and summarises them in milliseconds.

    Args:
        window: how many of the most recent samples each stage keeps (``None``: all of them,
            for benchmarks that need every sample; memory then grows with the run).
    """

    def __init__(self, window: Optional[int] = DEFAULT_TIMER_WINDOW):
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window!r}")
        self._t: Dict[str, _Ring] = defaultdict(lambda: _Ring(window))

    def add(self, stage: str, seconds: float) -> None:
        self._t[stage].append(seconds)

    def values_ms(self, stage: str) -> np.ndarray:
        """The kept samples of ``stage`` in milliseconds, oldest first."""
        ring = self._t.get(stage)
        return ring.values() * 1e3 if ring is not None else np.zeros(0, np.float64)

    def last_ms(self, stage: str, n: int) -> np.ndarray:
        """The ``n`` most recent samples of ``stage`` in milliseconds (cheap: for the HUD)."""
        ring = self._t.get(stage)
        return ring.last(n) * 1e3 if ring is not None else np.zeros(0, np.float64)

    def summary(self) -> Dict[str, dict]:
        """``{stage: {"p50_ms", "p99_ms", "mean_ms", "n"}}`` for every stage seen."""
        out = {}
        for stage in list(STAGES) + sorted(set(self._t) - set(STAGES)):
            v = self.values_ms(stage)
            if v.size:
                out[stage] = dict(p50_ms=float(np.percentile(v, 50)),
                                  p99_ms=float(np.percentile(v, 99)),
                                  mean_ms=float(v.mean()), n=int(v.size))
        return out


class Pipeline:
    """Tracks faces, runs the effects and composites one frame at a time.

    Args:
        tracker: a :class:`~warpcam.realtime.tracker.FaceTracker` (or anything with
            ``track(img, t)``).
        compositor: a backend from :func:`warpcam.kernels.get_compositor`; the effects' crops
            go through it too (:class:`~warpcam.realtime.effects.FrameCrops`).
        effects: the ordered effect list (default: every registered effect with its default
            settings, :func:`~warpcam.realtime.effects.build_effects`). Their jobs are
            composited in this order.
        timer: where stage times go (a new :class:`StageTimer` by default).
        inplace: composite into the frame's own array (saves a full-frame copy; use it when
            the frames are not needed afterwards, as in :meth:`run`).

    Attributes:
        settings: ``{effect name: LiveSettings}``, the one owner of each effect's settings:
            ``pipeline.settings["smile"].update(strength=0.5)`` from any thread applies at the
            next frame, as a whole.
    """

    def __init__(self, tracker, compositor, effects: Optional[List[Effect]] = None,
                 timer: Optional[StageTimer] = None, inplace: bool = False):
        self.tracker = tracker
        self.compositor = compositor
        self.effects: List[Effect] = list(effects) if effects is not None else build_effects()
        self.settings: Dict[str, LiveSettings] = {e.name: e.settings for e in self.effects}
        self.timer = timer or StageTimer()
        self.inplace = inplace
        self.frames = 0
        self.faces_seen = 0
        self._warned: set = set()

    def effect(self, name: str) -> Effect:
        """The effect called ``name``. Raises ``KeyError``."""
        for e in self.effects:
            if e.name == name:
                return e
        raise KeyError(f"no effect {name!r} in this pipeline")

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg)

    def process(self, frame: Frame) -> tuple:
        """Process one frame: returns ``(image, faces, jobs)``; ``image`` is the input array
        itself when no job applies (a frame with no face passes byte-identical)."""
        img, faces, t = self.track(frame)
        out, jobs = self.render(img, faces, t)
        return out, faces, jobs

    def track(self, frame: Frame) -> tuple:
        """Tracking stage: ``(image H x W x 3 uint8 BGR, faces, t seconds)``.

        Raises:
            ValueError: a frame that is not an image (see :func:`warpcam.realtime.io.to_bgr8`).
        """
        img = to_bgr8(frame.image)
        t = frame.pts_seconds if frame.pts_seconds is not None else frame.index / 30.0
        if getattr(frame, "status", None) is not None:
            # A frame a ReconnectingSource made up (camera late or lost): nothing to track.
            return img, [], t
        t0 = time.perf_counter()
        faces: List[Face] = self.tracker.track(img, t)
        self.timer.add("tracking", time.perf_counter() - t0)
        return img, faces, t

    def render(self, img: np.ndarray, faces: List[Face], t: float) -> tuple:
        """Effects and composite stages: ``(output image, jobs)``. The effects' crops and the
        composite of the frame share one upload of it on a device backend
        (:meth:`warpcam.kernels.base.Compositor.frame`)."""
        scope = getattr(self.compositor, "frame", None)
        with (scope(img) if scope is not None else contextlib.nullcontext()):
            t1 = time.perf_counter()
            jobs: List[WarpJob] = []
            if faces:
                crops = FrameCrops(self.compositor, img)
                for effect in self.effects:
                    te = time.perf_counter()
                    jobs += effect.jobs(img, faces, t, crops)
                    self.timer.add(f"effect.{effect.name}", time.perf_counter() - te)
                jobs = self._finite(jobs)
            t2 = time.perf_counter()
            if not jobs:
                out = img
            elif self.inplace:
                out = self.compositor.composite(img, jobs, inplace=True)
            else:
                out = self.compositor.composite(img, jobs)
            t3 = time.perf_counter()
        self.timer.add("effects", t2 - t1)
        self.timer.add("composite", t3 - t2)
        self.frames += 1
        self.faces_seen += len(faces)
        return out, jobs

    def _finite(self, jobs: List[WarpJob]) -> List[WarpJob]:
        """Drop jobs with NaN/Inf fields (the ROI passes through); warn once."""
        ok = []
        for j in jobs:
            fields = [j.flow, j.alpha] + [x for x in (j.lightness, j.color, j.attention)
                                          if x is not None]
            if j.palette_mix is not None:
                fields += [np.asarray(j.palette_mix[0]), np.asarray(j.palette_mix[1])]
            if all(np.isfinite(f).all() for f in fields):
                ok.append(j)
            else:
                self._warn_once("nonfinite", f"non-finite values in a {j.kind} warp: that ROI "
                                "passes through unchanged (warned once)")
        return ok

    def run(self, source, sink, *, progress: bool = False, max_frames: Optional[int] = None,
            on_frame: Optional[Callable] = None, threaded: bool = True) -> dict:
        """Pull frames from ``source`` through the pipeline into ``sink`` until the source ends,
        ``max_frames`` is reached, or the sink asks to quit (preview ``q``).

        With ``threaded`` (the default) capture and tracking run in a second thread, one frame
        ahead of effects, composite and output: mediapipe releases the GIL, so on two cores the
        frame rate is set by the slower of the two halves rather than their sum. A file source
        hands over every frame in order; a live source hands over only its newest frame (a
        frame still waiting when a newer one is tracked is dropped and counted, never queued).

        Status frames of a :class:`~warpcam.realtime.io.ReconnectingSource` (camera late or lost)
        are not tracked or edited: a ``"held"`` frame sends the last output again (the virtual
        camera keeps showing the edited picture), a ``"lost"`` frame goes out as it is. They
        are counted in ``stats()["status_frames"]`` and left out of the latency statistics.

        On any exception the sink is aborted (a file sink removes its temporary file) and the
        exception propagates; on success the sink is closed (a file sink renames its file into
        place). Returns :meth:`stats`.
        """
        bar = None
        if progress and not getattr(source, "is_live", False):
            bar = _SafeBar(total=getattr(source, "frame_count", None), unit="frame",
                           desc="warpcam", dynamic_ncols=True)
        started = time.perf_counter()
        live = bool(getattr(source, "is_live", False))
        feed = _Feed(self, source, live, max_frames) if threaded else None
        try:
            items = feed.items() if feed is not None else self._tracked(source, max_frames)
            last_out = None
            self.status_frames = {"held": 0, "lost": 0}
            for frame, img, faces, t, t_cap in items:
                status = getattr(frame, "status", None)
                if status is not None:
                    self.status_frames[status] = self.status_frames.get(status, 0) + 1
                    held = status == "held" and last_out is not None \
                        and last_out.shape == img.shape
                    out, jobs = (last_out, []) if held else (img, [])
                    sink.write(frame, out)
                    if not self._frame_done(sink):
                        break
                    continue
                out, jobs = self.render(img, faces, t)
                t_out0 = time.perf_counter()
                sink.write(frame, out)
                t_end = time.perf_counter()
                last_out = out
                self.timer.add("output", t_end - t_out0)
                self.timer.add("total", t_end - t_cap)
                if frame.captured_at is not None:
                    self.timer.add("latency", t_end - frame.captured_at)
                if bar is not None:
                    bar.update(1)
                if on_frame is not None:
                    on_frame(frame, out, faces, jobs)
                if not self._frame_done(sink):
                    break
        except BaseException:
            if feed is not None:
                feed.stop()
            sink.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        if feed is not None:
            feed.stop()
        # Every camera frame that never reached the sink: replaced in the source's grabber
        # (webcam, reconnecting source) or in the feed's 1-slot mailbox.
        self.dropped = (feed.dropped if feed is not None else 0) \
            + int(getattr(source, "dropped", 0) or 0)
        sink.close()
        self.wall_seconds = time.perf_counter() - started
        return self.stats()

    def _tracked(self, source, max_frames):
        """Capture and tracking, one frame at a time (the single-thread path)."""
        it = iter(source)
        n = 0
        while max_frames is None or n < max_frames:
            tc = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                return
            t_cap = time.perf_counter()
            self.timer.add("capture", t_cap - tc)
            img, faces, t = self.track(frame)
            n += 1
            yield frame, img, faces, t, t_cap

    def _frame_done(self, sink) -> bool:
        """Hand the sink its per-frame hook (the preview updates its HUD and applies its keys to
        the live settings, :mod:`warpcam.realtime.io.preview`); False stops the run."""
        done = getattr(sink, "frame_done", None)
        return True if done is None else bool(done(self))

    def stats(self) -> dict:
        """Frames processed, faces seen, live frames dropped, wall time and the per-stage timing
        summary (ms)."""
        return dict(frames=self.frames, faces=self.faces_seen, stages=self.timer.summary(),
                    dropped=getattr(self, "dropped", 0),
                    status_frames=dict(getattr(self, "status_frames", {})),
                    wall_seconds=getattr(self, "wall_seconds", None))


class _Feed:
    """Capture + tracking in a background thread, handing ``(frame, img, faces, t, t_cap)``
    to the consumer: in order through a 2-slot queue for files (the tracker waits for the
    consumer), through the one "newest frame wins" slot (:class:`~warpcam.realtime.io.LatestSlot`)
    for live sources (a stale item is replaced and counted in ``dropped``). Exceptions from the
    source or the tracker are re-raised in the consumer."""

    def __init__(self, pipeline: "Pipeline", source, live: bool, max_frames: Optional[int]):
        self._p, self._source, self._live, self._max = pipeline, source, live, max_frames
        self._slot: Optional[LatestSlot] = LatestSlot() if live else None
        self._cv = threading.Condition()
        self._q: deque = deque()
        self._cap = 2
        self._done = False
        self._stop = False
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="warpcam-track", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        return self._slot.dropped if self._slot is not None else 0

    def _run(self) -> None:
        if self._slot is not None:
            try:
                for item in self._p._tracked(self._source, self._max):
                    if self._slot.closed:
                        return
                    self._slot.put(item)
            except BaseException as exc:  # handed to the consumer by take()
                self._slot.close(exc)
            finally:
                self._slot.close()
            return
        try:
            for item in self._p._tracked(self._source, self._max):
                with self._cv:
                    while len(self._q) >= self._cap and not self._stop:
                        self._cv.wait(0.1)
                    if self._stop:
                        return
                    self._q.append(item)
                    self._cv.notify_all()
        except BaseException as exc:  # handed to the consumer
            with self._cv:
                self._error = exc
        finally:
            with self._cv:
                self._done = True
                self._cv.notify_all()

    def items(self):
        if self._slot is not None:
            while True:
                try:
                    item = self._slot.take()
                except SlotClosed:
                    return
                yield item
        while True:
            with self._cv:
                while not self._q and not self._done:
                    self._cv.wait(0.1)
                if self._q:
                    item = self._q.popleft()
                    self._cv.notify_all()
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield item

    def stop(self) -> None:
        if self._slot is not None:
            self._slot.close()
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=5.0)
