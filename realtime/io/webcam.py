"""Webcams: an OpenCV capture read by a grabber thread that keeps only the newest frame.

The hand-over between the grabber thread and the consumer is a
:class:`~warpcam.realtime.io.slot.LatestSlot` (old frames are latency).

A camera that is unplugged and plugged in again may come back under another ``/dev/videoN``:
:func:`camera_identity` reads what identifies it in sysfs (its name, its USB port, its node
number on the device), :func:`find_camera` looks for that identity among the current nodes, and
:func:`follow_camera` makes the reopening function the CLI hands to
:class:`~warpcam.realtime.io.reconnect.ReconnectingSource`.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

import cv2
import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import Source, SourceError, to_bgr8
from warpcam.realtime.io.slot import LatestSlot, SlotClosed

__all__ = ["WebcamSource", "CameraIdentity", "camera_identity", "find_camera", "follow_camera",
           "SYSFS_VIDEO4LINUX"]

log = logging.getLogger("warpcam")

#: Where Linux lists the video nodes (``videoN/name``, ``videoN/index``, ``videoN/device`` ->
#: the USB interface). Tests point it at a fake tree (``sysfs_root=`` or this variable).
SYSFS_VIDEO4LINUX = Path("/sys/class/video4linux")


@dataclass(frozen=True)
class CameraIdentity:
    """What identifies a camera across unplugging, read from sysfs.

    Attributes:
        index: the ``N`` of ``/dev/videoN`` when it was read.
        name: the driver's name of the device (``videoN/name``, e.g. ``"HD Pro Webcam C920"``).
        bus_path: the USB port it hangs off: the ``videoN/device`` link resolved and made
            relative to the sysfs root (``devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0``);
            ``None`` without the link.
        node: ``videoN/index``: which node of the device this is (a UVC camera has a capture
            node, 0, and a metadata node, 1, with the same name and port); ``None`` if absent.
    """

    index: int
    name: str
    bus_path: Optional[str]
    node: Optional[int]

    def __str__(self) -> str:
        port = f", port {self.bus_path.rstrip('/').split('/')[-1]}" if self.bus_path else ""
        return f"{self.name!r}{port}"


def _sysfs(root: Optional[Union[str, os.PathLike]]) -> Path:
    return Path(root) if root is not None else SYSFS_VIDEO4LINUX


def camera_identity(index: int, *, sysfs_root: Optional[Union[str, os.PathLike]] = None
                    ) -> Optional[CameraIdentity]:
    """The identity of ``/dev/video{index}``, or ``None`` when sysfs does not describe it (not
    Linux, no such node, unreadable)."""
    node_dir = _sysfs(sysfs_root) / f"video{int(index)}"
    try:
        name = (node_dir / "name").read_text(errors="replace").strip()
    except OSError:
        return None
    bus = None
    dev = node_dir / "device"
    if dev.exists():
        target = Path(os.path.realpath(dev))
        base = Path(os.path.realpath(_sysfs(sysfs_root))).parent.parent  # the sysfs mount
        try:
            bus = str(target.relative_to(base))
        except ValueError:
            bus = str(target)
    node = None
    try:
        node = int((node_dir / "index").read_text().strip())
    except (OSError, ValueError):
        pass
    return CameraIdentity(int(index), name, bus, node)


def _indices(sysfs_root) -> List[int]:
    root = _sysfs(sysfs_root)
    try:
        names = [p.name for p in root.iterdir()]
    except OSError:
        return []
    return sorted(int(n[5:]) for n in names if n.startswith("video") and n[5:].isdigit())


def find_camera(identity: CameraIdentity, *,
                sysfs_root: Optional[Union[str, os.PathLike]] = None) -> Optional[int]:
    """The current ``N`` of the camera ``identity`` describes, or ``None`` when it is not
    plugged in.

    Matched on the same node number (capture, not metadata) and, best first: the same name on
    the same USB port; the same name on another port (moved to another socket); the same port
    with another name (a driver that renames). Among equal matches the old index wins, then
    the lowest.
    """
    best = None
    for i in _indices(sysfs_root):
        cur = camera_identity(i, sysfs_root=sysfs_root)
        if cur is None or cur.node != identity.node:
            continue
        same_name, same_port = cur.name == identity.name, (
            identity.bus_path is not None and cur.bus_path == identity.bus_path)
        if same_name and same_port:
            rank = 0
        elif same_name:
            rank = 1
        elif same_port:
            rank = 2
        else:
            continue
        key = (rank, i != identity.index, i)
        if best is None or key < best[0]:
            best = (key, i)
    return None if best is None else best[1]


def follow_camera(index: int, open_index: Callable[[str], object], *,
                  sysfs_root: Optional[Union[str, os.PathLike]] = None) -> Callable[[], object]:
    """A reopening function for :class:`~warpcam.realtime.io.reconnect.ReconnectingSource`
    that finds the camera again when it comes back under another ``/dev/videoN``.

    The identity of ``/dev/video{index}`` is read now (while it is plugged in). Each call
    looks it up again and calls ``open_index(str(N))`` with its current ``N``; while it is not
    plugged in, it raises :class:`SourceError` rather than open another camera that took the
    old number. Without a sysfs description (not Linux) it always opens ``index``.
    """
    ident = camera_identity(index, sysfs_root=sysfs_root)
    last = [int(index)]

    def reopen():
        if ident is None:
            return open_index(str(index))
        now = find_camera(ident, sysfs_root=sysfs_root)
        if now is None:
            raise SourceError(f"webcam {ident} is not plugged in (was /dev/video{ident.index})")
        if now != last[0]:
            log.warning(f"webcam {ident} is back as /dev/video{now} (was /dev/video{last[0]})")
            last[0] = now
        return open_index(str(now))

    reopen.identity = ident
    return reopen


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
