"""Frame sources: the first stage of the frame path (see ``../shared/DESIGN.md``).

Every source is a small class with one shared base, :class:`Source`: a context manager and an
iterable of :class:`~warpcam.core.types.Frame`, each carrying an ``H x W x 3`` ``uint8`` **BGR** image.

- :class:`VideoFileSource` decodes a video file with PyAV, keeping every frame's timestamp (``pts``
  in the stream's ``time_base``) so the file sink can reproduce it exactly; the audio is left in
  the file for the sink to copy.
- :class:`WebcamSource` reads an OpenCV capture from a grabber thread that keeps only the newest
  frame (old frames are latency).
- :class:`ImageSource` reads one still image or a folder of them.
- :class:`ReconnectingSource` wraps a live source so that a camera that stalls or disconnects
  never stops the stream: it hands out the last good frame again, then a clear "camera lost"
  frame (:class:`StatusFrame`), and reopens the device until it is back.
- :func:`open_source` picks one of them from a command-line spec.

Every failure a user can cause (missing file, not a video, truncated file, unplugged webcam) is
raised as :class:`SourceError` with a one-line message that names the file or device and says
why; no raw PyAV or OpenCV exception leaves this module.

Example:
    >>> with open_source("talk.mp4") as src:                      # doctest: +SKIP
    ...     for frame in src:
    ...         print(frame.index, frame.pts_seconds, frame.image.shape)
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

import cv2
import numpy as np

from warpcam.core.types import Frame

log = logging.getLogger("warpcam")

__all__ = [
    "SourceError",
    "Source",
    "VideoFileSource",
    "WebcamSource",
    "ImageSource",
    "ReconnectingSource",
    "StatusFrame",
    "camera_lost_image",
    "open_source",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "to_bgr8",
]

#: File extensions (lower case, with the dot) read as still images.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: File extensions the video sink writes (any container FFmpeg can read is accepted as input).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi")


class SourceError(RuntimeError):
    """A source could not be opened or stopped delivering frames.

    The message is one line that names the device or file and says why, e.g.
    ``cannot open webcam 0: /dev/video0 does not exist``.
    """


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Convert any common OpenCV image layout to ``H x W x 3`` ``uint8`` BGR, C-contiguous.

    Accepts ``H x W`` or ``H x W x 1`` grey, ``H x W x 3`` BGR, ``H x W x 4`` BGRA (alpha is
    dropped), in ``uint8``, ``uint16`` (scaled by 1/257, i.e. 65535 -> 255) or float in [0, 1].

    Args:
        image: the array to convert.

    Returns:
        ``H x W x 3`` ``uint8`` BGR; the input itself when it already is one (no copy).

    Raises:
        ValueError: for any other shape or dtype.
    """
    img = np.asarray(image)
    if img.size == 0:
        raise ValueError(f"image is empty (shape {img.shape})")
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 + 32767) // 65535
        img = img.astype(np.uint8)
    elif img.dtype.kind == "f":
        img = np.clip(np.nan_to_num(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8, uint16 or float, got {img.dtype}")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        img = cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ValueError(f"image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {img.shape}")
    return np.ascontiguousarray(img)


class Source:
    """Base class of every frame source.

    A source is a context manager (``__exit__`` calls :meth:`close`) and an iterable of
    :class:`~warpcam.core.types.Frame`. ``close`` may be called more than once.

    Properties shared by every source:

    - ``width``, ``height``: frame size in pixels (of the first frame for an image folder).
    - ``fps``: nominal frames per second as a float, ``None`` when unknown (still images).
    - ``is_live``: ``True`` for a camera (the pipeline drops stale frames instead of queueing).
    - ``frame_count``: number of frames when known in advance, else ``None``.
    """

    def __init__(self) -> None:
        self._closed = False
        self._width = 0
        self._height = 0

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> "Source":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the file or device. Safe to call twice."""
        self._closed = True

    # -- properties ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self._width

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self._height

    @property
    def fps(self) -> Optional[float]:
        """Nominal frame rate, ``None`` when unknown."""
        return None

    @property
    def is_live(self) -> bool:
        """``True`` for live sources (cameras)."""
        return False

    @property
    def frame_count(self) -> Optional[int]:
        """Number of frames when known in advance, else ``None``."""
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise SourceError(f"{self!r} is closed")


# ------------------------------------------------------------------------------------------------
# Video files (PyAV)
# ------------------------------------------------------------------------------------------------

def _av_reason(exc: BaseException) -> str:
    """Short human reason from a PyAV / OS exception (without the repeated file name)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason).strip().rstrip(".")


def _rotate_code(rotation: float) -> Optional[int]:
    """cv2.rotate code that undoes a display-matrix rotation of ``rotation`` degrees.

    PyAV's ``VideoFrame.rotation`` is the angle (counter-clockwise, degrees) by which the
    display matrix rotates the stored picture for display, so we rotate the picture by the same
    angle counter-clockwise (FFmpeg's ``autorotate`` does the same).
    """
    quarter = int(round(float(rotation) / 90.0)) % 4
    return {0: None, 1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180,
            3: cv2.ROTATE_90_CLOCKWISE}[quarter]


class VideoFileSource(Source):
    """Decode the first video stream of a file with PyAV.

    Each :class:`~warpcam.core.types.Frame` carries:

    - ``image``: ``H x W x 3`` ``uint8`` BGR (``VideoFrame.to_ndarray(format="bgr24")``, which
      honours the stream's colour matrix tag, e.g. BT.709).
    - ``index``: 0-based position in presentation order.
    - ``pts``: the frame's presentation timestamp (int) in ``time_base`` units, ``time_base``: the
      stream's time base (:class:`fractions.Fraction`), ``pts_seconds = pts * time_base``.
    - ``captured_at``: ``time.perf_counter()`` right after the frame was decoded.

    Rotation: phone videos store the picture sideways plus a display matrix. With
    ``autorotate=True`` (default) the picture is turned upright with :func:`cv2.rotate` by the
    matrix's rotation (multiples of 90 degrees; mirror flags are ignored), and ``width`` /
    ``height`` describe the upright picture. The file sink then writes upright pixels without a
    display matrix, so players show the same picture.

    The file is opened and its first frame decoded in the constructor, so a missing, non-video or
    unreadable file fails there. Iterating a second time re-opens the file and starts again.

    Args:
        path: the video file.
        autorotate: turn display-matrix rotated videos upright (see above).

    Raises:
        SourceError: the file does not exist, is not a video, has no video stream, cannot be
            decoded (at construction or mid-stream), or is truncated: it declares ``M`` frames but
            only ``N < M`` decode (``"... truncated: decoded N of M frames"``, raised after the
            last good frame was yielded, so a file sink can discard its partial output).
    """

    def __init__(self, path: Union[str, os.PathLike], *, autorotate: bool = True) -> None:
        super().__init__()
        self._path = Path(path)
        self._autorotate = bool(autorotate)
        if not self._path.exists():
            raise SourceError(f"input not found: {self._path}")
        if self._path.is_dir():
            raise SourceError(f"cannot open video {self._path}: it is a folder")
        self._container = None
        self._pending = None  # (container, stream, decode iterator, first av frame)
        container, stream, frames, first = self._open()
        self._pending = (container, stream, frames, first)
        self._container = container
        self._time_base = Fraction(stream.time_base) if stream.time_base else None
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self._fps = float(rate) if rate else None
        self._declared_frames = int(stream.frames or 0)
        self._audio_present = len(container.streams.audio) > 0
        self._rotation = int(round(getattr(first, "rotation", 0) or 0)) if autorotate else 0
        w, h = first.width, first.height
        if _rotate_code(self._rotation) in (cv2.ROTATE_90_CLOCKWISE,
                                            cv2.ROTATE_90_COUNTERCLOCKWISE):
            w, h = h, w
        self._width, self._height = int(w), int(h)

    # -- opening ---------------------------------------------------------------------------------
    def _open(self):
        import av  # local: keeps `import warpcam.realtime.sources` cheap for webcam-only users

        try:
            container = av.open(str(self._path), mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(
                f"cannot open video {self._path}: {_av_reason(exc)} "
                "(not a video file, or unreadable)") from None
        try:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                raise SourceError(f"cannot open video {self._path}: no video stream "
                                  f"(streams: {', '.join(kinds)})")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = container.decode(stream)
            try:
                first = next(frames)
            except StopIteration:
                raise SourceError(
                    f"cannot open video {self._path}: the video stream has no decodable frame") \
                    from None
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                raise SourceError(
                    f"cannot decode video {self._path}: {_av_reason(exc)}") from None
        except BaseException:
            container.close()
            raise
        return container, stream, frames, first

    # -- properties ------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The input file."""
        return self._path

    @property
    def fps(self) -> Optional[float]:
        """Average frame rate of the video stream (``None`` if the file does not say)."""
        return self._fps

    @property
    def frame_count(self) -> Optional[int]:
        """Frame count declared by the container, ``None`` when it declares none (e.g. MKV)."""
        return self._declared_frames or None

    @property
    def time_base(self) -> Optional[Fraction]:
        """Time base of the video stream: ``Frame.pts * time_base`` is seconds."""
        return self._time_base

    @property
    def audio_stream_present(self) -> bool:
        """Whether the file has at least one audio stream (the file sink copies the first)."""
        return self._audio_present

    @property
    def rotation(self) -> int:
        """Display rotation applied to every frame, degrees counter-clockwise (0 when none)."""
        return self._rotation

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        import av

        self._check_open()
        if self._pending is None:  # second pass: start again from a fresh demuxer
            if self._container is not None:
                self._container.close()
            self._pending = self._open()
            self._container = self._pending[0]
        container, stream, frames, first = self._pending
        self._pending = None
        tb = self._time_base
        rot = _rotate_code(self._rotation)
        step = None
        if self._fps and tb:
            step = max(1, int(round(1.0 / (self._fps * tb))))
        index = 0
        last_pts: Optional[int] = None
        av_frame = first
        while True:
            pts = av_frame.pts
            if pts is None:  # rare (raw streams): continue the cadence of the previous frames
                pts = (last_pts + (step or 1)) if last_pts is not None else 0
            pts = int(pts)
            image = av_frame.to_ndarray(format="bgr24")
            if rot is not None:
                image = cv2.rotate(image, rot)
            yield Frame(
                image=np.ascontiguousarray(image),
                index=index,
                pts_seconds=float(pts * tb) if tb else None,
                pts=pts,
                time_base=tb,
                captured_at=time.perf_counter(),
            )
            index += 1
            last_pts = pts
            try:
                av_frame = next(frames)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                raise SourceError(
                    f"cannot decode video {self._path} after frame {index}: "
                    f"{_av_reason(exc)}") from None
        if self._declared_frames and index < self._declared_frames \
                and self._ends_early(stream, last_pts, step):
            raise SourceError(f"video {self._path} is truncated: decoded {index} of "
                              f"{self._declared_frames} frames")

    def _ends_early(self, stream, last_pts: Optional[int], step: Optional[int]) -> bool:
        """Whether decoding stopped clearly before the end the container declares.

        A frame count below the declared one alone is not proof: an edit list may discard
        leading frames and AVI counts empty chunks. So when the stream declares its duration,
        the last frame must also end more than two frame intervals before it.
        """
        tb = self._time_base
        if not stream.duration or tb is None or last_pts is None:
            return True
        end = (stream.start_time or 0) + stream.duration
        return last_pts + 3 * (step or 1) < end

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # closing a broken file must not mask the original error
                pass
            self._container = None
        self._pending = None
        super().close()

    def __repr__(self) -> str:
        return f"VideoFileSource({str(self._path)!r})"


# ------------------------------------------------------------------------------------------------
# Webcams (OpenCV + grabber thread)
# ------------------------------------------------------------------------------------------------

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
        self._cond = threading.Condition()
        self._latest: Optional[tuple] = None  # (seq, image, pts_seconds, captured_at)
        self._seq = -1
        self._returned_seq = -1
        self._dropped = 0
        self._error: Optional[str] = None
        self._stop = threading.Event()
        self._t0: Optional[float] = None
        self._thread = threading.Thread(target=self._grab_loop, name=f"webcam{self._index}",
                                        daemon=True)
        self._thread.start()

        first = self._wait_newer(-1, first_frame_timeout)
        if first is None:
            reason = self._error or f"no frame within {first_frame_timeout:g} s"
            self.close()
            raise SourceError(f"cannot open webcam {self._index}: {reason}")
        self._height, self._width = first[1].shape[:2]

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
                    with self._cond:
                        self._error = f"read failed: {exc}"
                        self._cond.notify_all()
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
                    with self._cond:
                        self._error = f"unexpected frame: {exc}"
                        self._cond.notify_all()
                    return
                with self._cond:
                    if self._latest is not None and self._latest[0] > self._returned_seq:
                        self._dropped += 1  # replaced before anyone took it
                    self._seq += 1
                    self._latest = (self._seq, image, t_mono - self._t0, t_perf)
                    self._cond.notify_all()
        finally:
            # The thread owns the capture: releasing it from another thread while read() blocks
            # can crash some backends.
            try:
                cap.release()
            except Exception:
                pass

    def _wait_newer(self, after_seq: int, timeout: float, take: bool = False) -> Optional[tuple]:
        """Wait for a frame newer than ``after_seq``; with ``take`` mark it as returned (in the
        same critical section, so the grabber never counts a returned frame as dropped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._latest is not None and self._latest[0] > after_seq:
                    if take:
                        self._returned_seq = self._latest[0]
                    return self._latest
                if self._error is not None or not self._thread.is_alive():
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    # -- public ----------------------------------------------------------------------------------
    def read(self) -> Frame:
        """Block until a frame newer than the last one returned arrives and return it.

        Raises:
            SourceError: the camera delivered no new frame within ``frame_timeout`` seconds or
                its read failed.
        """
        self._check_open()
        latest = self._wait_newer(self._returned_seq, self._frame_timeout, take=True)
        if latest is None:
            why = self._error or f"no new frame for {self._frame_timeout:g} s"
            raise SourceError(f"webcam {self._index} stopped delivering frames ({why})")
        seq, image, pts_seconds, captured_at = latest
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
        with self._cond:
            return self._dropped

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


# ------------------------------------------------------------------------------------------------
# Live sources that survive a stalled or unplugged camera
# ------------------------------------------------------------------------------------------------

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
        self._latest: Optional[Frame] = None
        self._lost_since: Optional[float] = None
        self._lost_reason = ""
        self._fatal: Optional[SourceError] = None
        self._dropped = 0
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
                        if self._latest is not None:
                            self._dropped += 1
                        self._latest = frame
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
                    if self._latest is not None:
                        frame, self._latest = self._latest, None
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
            return self._dropped + self._dropped_before + cur

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


# ------------------------------------------------------------------------------------------------
# Still images
# ------------------------------------------------------------------------------------------------

def _is_image_path(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _read_image(path: Path) -> np.ndarray:
    """Read an image as ``H x W x 3`` ``uint8`` BGR, or raise SourceError naming it."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile: non-ASCII paths on Windows
    except OSError as exc:
        raise SourceError(f"cannot read image {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None:
        raise SourceError(f"cannot read image {path}: not an image or corrupt"
                          + (" (empty file)" if buf.size == 0 else ""))
    return to_bgr8(image)


class ImageSource(Source):
    """One still image, or every image of a folder in sorted file-name order.

    Images are read with ``cv2.imdecode(..., cv2.IMREAD_COLOR)``, which applies the EXIF
    orientation and turns grey, BGRA and 16-bit images into 8-bit BGR. Each
    :class:`~warpcam.core.types.Frame` has ``name`` = the file name, ``index`` = position in the
    sorted list, ``pts_seconds = None``. Images of a folder may differ in size; ``width`` and
    ``height`` are those of the first image.

    Args:
        path: an image file (``.png .jpg .jpeg .bmp .webp .tif .tiff``) or a folder of them
            (hidden files and other extensions are skipped; not recursive).

    Raises:
        SourceError: the path does not exist, a folder holds no image, or an image cannot be
            read (at construction for the first image, during iteration for later ones).
    """

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        super().__init__()
        self._path = Path(path)
        if not self._path.exists():
            raise SourceError(f"input not found: {self._path}")
        if self._path.is_dir():
            files = sorted(p for p in self._path.iterdir()
                           if p.is_file() and not p.name.startswith(".") and _is_image_path(p))
            if not files:
                raise SourceError(f"no images in folder {self._path} (looked for "
                                  f"{' '.join(IMAGE_EXTENSIONS)})")
        else:
            files = [self._path]
        self._files: List[Path] = files
        self._first = _read_image(files[0])
        self._height, self._width = self._first.shape[:2]

    @property
    def path(self) -> Path:
        """The image file or folder given."""
        return self._path

    @property
    def is_folder(self) -> bool:
        return self._path.is_dir()

    @property
    def files(self) -> List[Path]:
        """The image files, in iteration order."""
        return list(self._files)

    @property
    def frame_count(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[Frame]:
        self._check_open()
        for i, f in enumerate(self._files):
            if i == 0 and self._first is not None:
                # handed over once: an in-place pipeline edits it, a second pass re-reads
                image, self._first = self._first, None
            else:
                image = _read_image(f)
            yield Frame(image=image, index=i, name=f.name, captured_at=time.perf_counter())

    def __repr__(self) -> str:
        return f"ImageSource({str(self._path)!r})"


# ------------------------------------------------------------------------------------------------
# Factory
# ------------------------------------------------------------------------------------------------

def open_source(spec: Union[int, str, os.PathLike], *, width: int = 1280, height: int = 720,
                fps: float = 30) -> Source:
    """Open the source a command line names.

    - an ``int``, a digit string (``"0"``) or ``/dev/videoN`` -> :class:`WebcamSource` with the
      requested ``width``, ``height`` and ``fps``;
    - a folder, or a file with an image extension -> :class:`ImageSource`;
    - any other existing file -> :class:`VideoFileSource` (``width``/``height``/``fps`` are
      ignored: files keep their own).

    Raises:
        SourceError: ``input not found: PATH`` when the path does not exist, or what the chosen
            source raises.
    """
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return WebcamSource(int(spec), width, height, fps)
    text = os.fspath(spec)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    stripped = text.strip()
    if stripped.isdigit():
        return WebcamSource(int(stripped), width, height, fps)
    if stripped.startswith("/dev/video") and stripped[len("/dev/video"):].isdigit():
        return WebcamSource(int(stripped[len("/dev/video"):]), width, height, fps)
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceError(f"input not found: {path}")
    if path.is_dir() or _is_image_path(path):
        return ImageSource(path)
    return VideoFileSource(path)
