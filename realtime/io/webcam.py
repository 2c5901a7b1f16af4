"""Webcams: an OpenCV capture read by a grabber thread that keeps only the newest frame.

The hand-over between the grabber thread and the consumer is a
:class:`~warpcam.realtime.io.slot.LatestSlot` (old frames are latency).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Iterator, Optional

import cv2
import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import Source, SourceError, to_bgr8
from warpcam.realtime.io.slot import LatestSlot, SlotClosed

__all__ = ["WebcamSource"]


def _default_api() -> int:
    if sys.platform.startswith("linux"):
        return cv2.CAP_V4L2
    if sys.platform.startswith("win"):
        return cv2.CAP_DSHOW
    if sys.platform == "darwin":
        return cv2.CAP_AVFOUNDATION
    return cv2.CAP_ANY


def _default_capture_factory(index: int, api: int):
    return cv2.VideoCapture(index, api)


class WebcamSource(Source):
    """A webcam read through OpenCV, with a grabber thread that keeps only the newest frame.

    The capture is opened with the platform's native backend (V4L2 on Linux, DirectShow on
    Windows, AVFoundation on macOS), asked for a 1-frame driver buffer, the requested size and
    frame rate, and MJPG (which most USB cameras need for 720p at 30 fps; a camera that does not
    offer it ignores the request). The size the camera actually delivers is read from the first
    frame, which the constructor waits for.

    A daemon thread reads frames as fast as the camera delivers them and keeps only the newest:
    a frame that is replaced before the consumer took it is counted in :attr:`dropped` (old
    frames are latency). Iteration blocks until a frame newer than the last one returned arrives.

    Each :class:`~warpcam.core.types.Frame` has ``index`` = capture sequence number (gaps are dropped
    frames), ``pts_seconds`` = ``time.monotonic()`` at grab time relative to the first grab, and
    ``captured_at`` = ``time.perf_counter()`` at grab time.

    Args:
        index: camera index (``/dev/video{index}`` on Linux).
        width, height: requested frame size in pixels.
        fps: requested frame rate.
        mjpg: request the MJPG pixel format.
        capture_factory: ``f(index, api) -> capture`` with the ``cv2.VideoCapture`` methods
            ``isOpened``, ``set``, ``get``, ``read``, ``release``; for tests and custom devices.
        api: OpenCV backend id; default: the platform's native one.
        first_frame_timeout: seconds to wait for the first frame in the constructor.
        frame_timeout: seconds iteration waits for a new frame before giving up.

    Raises:
        SourceError: ``cannot open webcam N: <reason>`` when the device is missing, busy or
            delivers no first frame; ``webcam N stopped delivering frames`` when no new frame
            arrives within ``frame_timeout`` during iteration, or the read itself fails.
    """

    def __init__(self, index: int = 0, width: int = 1280, height: int = 720, fps: float = 30,
                 mjpg: bool = True, *,
                 capture_factory: Optional[Callable[[int, int], object]] = None,
                 api: Optional[int] = None, first_frame_timeout: float = 5.0,
                 frame_timeout: float = 2.0) -> None:
        super().__init__()
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"webcam index must be an integer >= 0, got {index!r}")
        for name, value in (("width", width), ("height", height), ("fps", fps)):
            if value is None or value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        self._index = int(index)
        self._requested = (int(width), int(height), float(fps))
        self._frame_timeout = float(frame_timeout)
        self._api = _default_api() if api is None else int(api)
        self._fps_reported: Optional[float] = None

        injected = capture_factory is not None
        if (not injected and sys.platform.startswith("linux")
                and not os.path.exists(f"/dev/video{self._index}")):
            raise SourceError(f"cannot open webcam {self._index}: "
                              f"/dev/video{self._index} does not exist")
        factory = capture_factory or _default_capture_factory
        try:
            cap = factory(self._index, self._api)
        except Exception as exc:  # OpenCV raises cv2.error for some backends
            raise SourceError(f"cannot open webcam {self._index}: {exc}") from None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceError(f"cannot open webcam {self._index}: the device is busy, "
                              "not a camera, or access was denied")
        self._cap = cap
        try:
            self._configure(mjpg)
        except Exception as exc:
            cap.release()
            raise SourceError(f"cannot open webcam {self._index}: cannot configure it ({exc})") \
                from None

        # Shared state between the grabber thread and the consumer.
        # (image, pts_seconds, captured_at); the slot numbers them: seq = capture number.
        self._slot: LatestSlot = LatestSlot()
        self._error: Optional[str] = None
        self._stop = threading.Event()
        self._t0: Optional[float] = None
        self._thread = threading.Thread(target=self._grab_loop, name=f"webcam{self._index}",
                                        daemon=True)
        self._thread.start()

        first = self._wait_newer(first_frame_timeout)
        if first is None:
            reason = self._error or f"no frame within {first_frame_timeout:g} s"
            self.close()
            raise SourceError(f"cannot open webcam {self._index}: {reason}")
        self._height, self._width = first[1][0].shape[:2]

    def _configure(self, mjpg: bool) -> None:
        cap = self._cap
        w, h, fps = self._requested
        # Order matters on V4L2: the pixel format first, then the size, then the rate.
        if mjpg:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        try:
            reported = float(cap.get(cv2.CAP_PROP_FPS))
        except Exception:
            reported = 0.0
        self._fps_reported = reported if 0 < reported < 1000 else None

    # -- grabber thread --------------------------------------------------------------------------
    def _grab_loop(self) -> None:
        cap = self._cap
        try:
            while not self._stop.is_set():
                try:
                    ok, image = cap.read()
                except Exception as exc:  # a raising capture is fatal: report it
                    self._fail(f"read failed: {exc}")
                    return
                if not ok or image is None:
                    # Cameras hiccup (USB resets, exposure changes): keep trying; the consumer
                    # gives up after frame_timeout without a new frame.
                    self._stop.wait(0.005)
                    continue
                t_perf = time.perf_counter()
                t_mono = time.monotonic()
                if self._t0 is None:
                    self._t0 = t_mono
                try:
                    image = to_bgr8(image)
                except ValueError as exc:
                    self._fail(f"unexpected frame: {exc}")
                    return
                # Replaces (and counts as dropped) a frame the consumer did not take yet.
                self._slot.put((image, t_mono - self._t0, t_perf))
        finally:
            # The thread owns the capture: releasing it from another thread while read() blocks
            # can crash some backends.
            try:
                cap.release()
            except Exception:
                pass
            self._slot.close()  # the consumer stops waiting once the last frame is taken

    def _fail(self, reason: str) -> None:
        """The grabber cannot go on: keep the reason for the consumer's error and close the
        slot (a frame not taken yet is still handed out first)."""
        with self._slot.cond:
            self._error = reason
            self._slot.close()

    def _wait_newer(self, timeout: float, take: bool = False) -> Optional[tuple]:
        """Wait for a frame the consumer has not taken yet: ``(seq, (image, pts_seconds,
        captured_at))``, or ``None`` after ``timeout`` or once the grabber stopped. With
        ``take`` it is marked as returned (in the slot's critical section, so the grabber never
        counts a returned frame as dropped)."""
        try:
            if take:
                return self._slot.take(timeout, with_seq=True)
            return self._slot.peek(timeout, with_seq=True)
        except SlotClosed:
            return None

    # -- public ----------------------------------------------------------------------------------
    def read(self) -> Frame:
        """Block until a frame newer than the last one returned arrives and return it.

        Raises:
            SourceError: the camera delivered no new frame within ``frame_timeout`` seconds or
                its read failed.
        """
        self._check_open()
        latest = self._wait_newer(self._frame_timeout, take=True)
        if latest is None:
            why = self._error or f"no new frame for {self._frame_timeout:g} s"
            raise SourceError(f"webcam {self._index} stopped delivering frames ({why})")
        seq, (image, pts_seconds, captured_at) = latest
        return Frame(image=image, index=seq, pts_seconds=pts_seconds, captured_at=captured_at)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            yield self.read()

    @property
    def index(self) -> int:
        """Camera index."""
        return self._index

    @property
    def dropped(self) -> int:
        """Frames the grabber replaced before the consumer took them."""
        return self._slot.dropped

    @property
    def fps(self) -> Optional[float]:
        """Frame rate the driver reports, else the requested one."""
        return self._fps_reported or self._requested[2]

    @property
    def is_live(self) -> bool:
        return True

    def close(self) -> None:
        if getattr(self, "_thread", None) is not None:
            self._stop.set()
            self._thread.join(timeout=2.0)
            self._thread = None
        super().close()

    def __repr__(self) -> str:
        return f"WebcamSource({self._index})"
