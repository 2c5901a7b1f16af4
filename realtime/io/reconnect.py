"""A live source that survives a stalled or unplugged camera.

:class:`ReconnectingSource` wraps a live source: it hands out the last good frame again, then a
clear "camera lost" frame (:class:`StatusFrame`, :func:`camera_lost_image`), and reopens the
device until it is back. Its worker thread hands the wrapped source's frames over through a
:class:`~warpcam.realtime.io.slot.LatestSlot`.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import cv2
import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import Source, SourceError
from warpcam.realtime.io.slot import LatestSlot

log = logging.getLogger("warpcam")

__all__ = ["ReconnectingSource", "StatusFrame", "camera_lost_image"]


@dataclass
class StatusFrame(Frame):
    """A frame made up by :class:`ReconnectingSource` while its camera delivers nothing.

    Attributes:
        status: ``"held"``: the camera is late (a USB hiccup, an exposure change) and ``image``
            is the last good frame again; ``"lost"``: the camera failed or was unplugged and
            ``image`` is :func:`camera_lost_image` of the last good frame.

    The pipeline neither tracks nor edits a status frame: a held frame repeats the last output
    the sink got, a lost frame goes out as it is.
    """

    status: str = "lost"


def camera_lost_image(last: Optional[np.ndarray], width: int, height: int,
                      text: str = "camera lost - reconnecting") -> np.ndarray:
    """The picture shown while the camera is gone: the last good frame darkened to 30 % (black
    when there is none or its size differs), with ``text`` centred on it.

    Returns:
        ``height x width x 3`` ``uint8`` BGR (a new array).
    """
    if last is not None and last.shape == (height, width, 3) and last.dtype == np.uint8:
        img = (last.astype(np.uint16) * 77 >> 8).astype(np.uint8)  # x 0.3, integer maths
    else:
        img = np.zeros((height, width, 3), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    unit_w = cv2.getTextSize(text, font, 1.0, 2)[0][0]
    scale = float(np.clip(0.6 * width / unit_w, 0.3, 1.5))  # 60 % of the width, readable
    thick = max(1, int(round(2 * scale)))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    org = (max(0, (width - tw) // 2), max(th, (height + th) // 2))
    cv2.putText(img, text, org, font, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return img


class ReconnectingSource(Source):
    """A live source that keeps the stream going when its camera stalls or disconnects.

    A worker thread reads the wrapped source and keeps only its newest frame (a frame replaced
    before the consumer took it is counted in :attr:`dropped`). Iteration never ends and never
    raises for a camera fault:

    - a new camera frame is handed out as soon as it arrives;
    - when none arrived for ``hold_after`` seconds, a :class:`StatusFrame` ``"held"`` (the last
      good frame again) is handed out every frame interval, so a virtual camera keeps receiving
      frames;
    - when the wrapped source raises (the webcam raises :class:`SourceError` after its
      ``frame_timeout`` without a frame, or when a read fails), the source is closed, a warning
      is logged, :class:`StatusFrame` ``"lost"`` frames (:func:`camera_lost_image`) are handed
      out every frame interval, and ``opener`` is called every ``retry_every`` seconds until it
      returns a source that delivers again. Frames of a camera that comes back at another size
      are resized to the first size (a virtual camera cannot change size).

    Frames keep increasing ``index`` (gaps are dropped frames) and ``pts_seconds`` (seconds since
    this source was opened, on one clock across reconnects).

    Args:
        opener: ``() -> Source`` opening the device (called again for every reconnect attempt).
        first: an already opened source to start with; default: ``opener()`` in the constructor,
            so a device missing at start-up still fails at once with its :class:`SourceError`.
        hold_after: seconds without a frame before held frames start.
        retry_every: seconds between reconnect attempts.
        give_up_after: seconds of "lost" after which iteration raises :class:`SourceError`;
            ``None`` (default) retries for ever (a plugin inside a meeting should not quit).
        fps: the rate of status frames; default the wrapped source's fps, else 30.

    Raises:
        SourceError: from ``opener()`` at construction; ``... lost for N s`` after
            ``give_up_after``.
    """

    def __init__(self, opener: Callable[[], Source], *, first: Optional[Source] = None,
                 hold_after: float = 0.25, retry_every: float = 1.0,
                 give_up_after: Optional[float] = None, fps: Optional[float] = None) -> None:
        super().__init__()
        for name, value in (("hold_after", hold_after), ("retry_every", retry_every)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        src = first if first is not None else opener()
        self._opener = opener
        self._name = repr(src)
        self._width, self._height = int(src.width), int(src.height)
        self._fps = float(fps or src.fps or 30.0)
        self._hold_after, self._retry_every = float(hold_after), float(retry_every)
        self._give_up_after = give_up_after
        self._cv = threading.Condition()
        self._src: Optional[Source] = src
        # The wrapped source's newest frame, guarded by (and notifying) self._cv.
        self._slot: LatestSlot = LatestSlot(self._cv)
        self._lost_since: Optional[float] = None
        self._lost_reason = ""
        self._fatal: Optional[SourceError] = None
        self._dropped_before = 0  # the wrapped sources' own drops, of closed sessions
        self._reconnects = 0
        self._status_counts = {"held": 0, "lost": 0}
        self._t0 = time.perf_counter()
        self._resize_warned = False
        self._last_image: Optional[np.ndarray] = None  # last camera picture handed out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="warpcam-reconnect", daemon=True)
        self._thread.start()

    # -- worker thread -------------------------------------------------------------------------
    def _work(self) -> None:
        src = self._src
        while not self._stop.is_set():
            if src is None:
                src = self._reopen()
                if src is None:
                    continue
            try:
                for frame in src:
                    with self._cv:
                        self._slot.put(frame)  # a frame nobody took yet is dropped, counted
                        if self._lost_since is not None:
                            log.warning(f"{self._name} is back after "
                                        f"{time.monotonic() - self._lost_since:.1f} s")
                            self._lost_since = None
                            self._reconnects += 1
                        self._cv.notify_all()
                    if self._stop.is_set():
                        break
                else:
                    raise SourceError(f"{src!r} ended")
            except Exception as exc:  # any failure of the device: lost, try again
                self._mark_lost(str(exc) or type(exc).__name__)
            finally:
                with self._cv:
                    self._dropped_before += int(getattr(src, "dropped", 0) or 0)
                    self._src = None
                try:
                    src.close()
                except Exception:
                    pass
                src = None

    def _mark_lost(self, reason: str) -> None:
        with self._cv:
            self._lost_reason = reason
            if self._lost_since is None and not self._stop.is_set():
                self._lost_since = time.monotonic()
                log.warning(f"{self._name} lost ({reason}): showing 'camera lost' and "
                            f"reconnecting every {self._retry_every:g} s")
            self._cv.notify_all()

    def _reopen(self) -> Optional[Source]:
        if self._stop.wait(self._retry_every):
            return None
        with self._cv:
            since = self._lost_since
        if (self._give_up_after is not None and since is not None
                and time.monotonic() - since > self._give_up_after):
            with self._cv:
                self._fatal = SourceError(
                    f"{self._name} lost for {time.monotonic() - since:.0f} s "
                    f"({self._lost_reason}): giving up")
                self._cv.notify_all()
            self._stop.set()
            return None
        try:
            src = self._opener()
        except Exception as exc:
            self._mark_lost(str(exc) or type(exc).__name__)
            return None
        with self._cv:
            if self._stop.is_set():
                src.close()
                return None
            self._src = src
        return src

    # -- consumer --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        self._check_open()
        period = 1.0 / self._fps
        last_real = time.monotonic()
        next_status: Optional[float] = None
        index = -1
        base: Optional[int] = None  # inner index -> our index, per camera session
        prev_inner: Optional[int] = None
        while True:
            frame: Optional[Frame] = None
            status = ""
            with self._cv:
                while True:
                    if self._fatal is not None:
                        raise self._fatal
                    if self._closed:
                        return
                    now = time.monotonic()
                    frame = self._slot.take(timeout=0)
                    if frame is not None:
                        break
                    lost = self._lost_since is not None
                    if lost or now - last_real >= self._hold_after:
                        if next_status is None:
                            next_status = now
                        if now >= next_status:
                            status = "lost" if lost else "held"
                            break
                        wake = next_status
                    else:
                        wake = last_real + self._hold_after
                    self._cv.wait(max(wake - now, 1e-4))
            if frame is not None:
                last_real = time.monotonic()
                next_status = None
                inner = int(frame.index)
                if base is None or prev_inner is None or inner <= prev_inner:
                    base = index + 1 - inner  # a new camera session: continue our numbering
                prev_inner = inner
                index = base + inner
                yield self._conform(frame, index)
            else:
                index += 1
                prev_inner = None
                next_status = max(next_status + period, time.monotonic() - period)
                self._status_counts[status] += 1
                yield self._status_frame(status, index)

    def _conform(self, frame: Frame, index: int) -> Frame:
        image = frame.image
        if image.shape[:2] != (self._height, self._width):
            if not self._resize_warned:
                self._resize_warned = True
                log.warning(f"{self._name} came back at {image.shape[1]}x{image.shape[0]}: "
                            f"resizing to {self._width}x{self._height}")
            image = cv2.resize(image, (self._width, self._height), interpolation=cv2.INTER_AREA)
        at = frame.captured_at if frame.captured_at is not None else time.perf_counter()
        self._last_image = image
        return dataclasses.replace(frame, image=image, index=index, pts_seconds=at - self._t0,
                                   captured_at=at)

    def _status_frame(self, status: str, index: int) -> StatusFrame:
        last = self._last_image
        if status == "lost":
            image = camera_lost_image(last, self._width, self._height)
        elif last is not None:
            image = last.copy()
        else:
            image = np.zeros((self._height, self._width, 3), np.uint8)
        at = time.perf_counter()
        return StatusFrame(image=image, index=index, pts_seconds=at - self._t0, captured_at=at,
                           status=status)

    # -- properties ------------------------------------------------------------------------------
    @property
    def is_live(self) -> bool:
        return True

    @property
    def fps(self) -> Optional[float]:
        return self._fps

    @property
    def state(self) -> str:
        """``"ok"`` or ``"lost"`` (between a camera failure and its first new frame)."""
        with self._cv:
            return "lost" if self._lost_since is not None else "ok"

    @property
    def reconnects(self) -> int:
        """How many times the camera came back after being lost."""
        with self._cv:
            return self._reconnects

    @property
    def status_frames(self) -> dict:
        """``{"held": n, "lost": n}``: status frames handed out so far."""
        return dict(self._status_counts)

    @property
    def dropped(self) -> int:
        """Camera frames replaced before anyone took them (here and in the wrapped sources)."""
        with self._cv:
            cur = int(getattr(self._src, "dropped", 0) or 0) if self._src is not None else 0
            return self._slot.dropped + self._dropped_before + cur

    def close(self) -> None:
        if getattr(self, "_thread", None) is None:
            super().close()
            return
        self._stop.set()
        with self._cv:
            self._closed = True
            src = self._src
            self._cv.notify_all()
        if src is not None:
            try:
                src.close()  # unblocks the worker's read
            except Exception:
                pass
        self._thread.join(timeout=5.0)
        self._thread = None
        super().close()

    def __repr__(self) -> str:
        return f"ReconnectingSource({self._name})"
