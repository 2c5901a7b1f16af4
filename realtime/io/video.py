"""Video files as a source: PyAV decode of the first video stream, every frame's timestamp kept.

The audio (and every other stream) is left in the file for the file sink
(:mod:`warpcam.realtime.io.videofile`) to copy.

Timestamps that jump back (two MPEG-TS recordings joined with ``cat``, a recorder that restarted
its clock) are continued the way a player does: :class:`TimelineMender` adds an offset to every
later timestamp so the timeline stays monotonic at the stream's own spacing, and one warning
(logger ``"warpcam"``) says so, once per input (:func:`note_timeline_jump`).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Union

import cv2
import numpy as np

from warpcam.core.types import Frame
from warpcam.core.video import rotate_code
from warpcam.realtime.io.base import Source, SourceError

__all__ = ["VideoFileSource", "TimelineMender", "note_timeline_jump"]

log = logging.getLogger("warpcam")


class TimelineMender:
    """Keep one stream's timestamps monotonic across jumps back, like a player.

    Call it with each timestamp in order (``ts``, in the stream's time base, and the packet's
    ``duration`` when known); it returns the offset to add to that timestamp (and to the ones
    after it). Normally 0. When a timestamp goes back (or repeats, unless ``allow_equal``), the
    offset grows so that it lands one step after the previous one: the previous packet's
    duration, else the last spacing seen, else ``default_step``. A jump forward is a gap and is
    kept. :attr:`jumps` counts the corrections, :attr:`first_jump_at` is the (corrected)
    timestamp of the first one.
    """

    def __init__(self, *, allow_equal: bool = False) -> None:
        self.offset = 0
        self.jumps = 0
        self.first_jump_at: Optional[int] = None
        self._allow_equal = bool(allow_equal)
        self._last: Optional[int] = None
        self._last_duration: Optional[int] = None
        self._spacing: Optional[int] = None

    def __call__(self, ts: int, duration: Optional[int] = None, default_step: int = 1) -> int:
        t = int(ts) + self.offset
        if self._last is not None:
            if t < self._last or (t == self._last and not self._allow_equal):
                step = self._last_duration or self._spacing or max(1, int(default_step))
                self.offset += self._last + step - t
                t = self._last + step
                self.jumps += 1
                if self.first_jump_at is None:
                    self.first_jump_at = t
            elif t > self._last:
                self._spacing = t - self._last
        self._last = t
        self._last_duration = int(duration) if duration and duration > 0 else None
        return self.offset


_jump_lock = threading.Lock()
_jump_noted: set = set()


def _jump_key(path) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return str(path)


def note_timeline_jump(path, what: str, at_seconds: Optional[float]) -> None:
    """Log, once per input file (until its source is closed), that its timeline was continued."""
    key = _jump_key(path)
    with _jump_lock:
        if key in _jump_noted:
            return
        _jump_noted.add(key)
    where = f" at {at_seconds:.2f} s" if at_seconds is not None else ""
    log.warning(f"{path}: timestamps jump back{where} ({what}; joined recordings?): continuing "
                "the timeline as a player does")


def _forget_timeline_jump(path) -> None:
    with _jump_lock:
        _jump_noted.discard(_jump_key(path))


def _av_reason(exc: BaseException) -> str:
    """Short human reason from a PyAV / OS exception (without the repeated file name)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason).strip().rstrip(".")


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

    Timestamps that jump back (joined MPEG-TS files) are continued like a player does: every
    later frame's ``pts`` gets an offset so it follows the previous one at the stream's spacing,
    and one warning says so (see :class:`TimelineMender`). ``index`` counts every frame.

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
        self._main_index = int(stream.index)
        self._other_streams = tuple(
            f"#{st.index} {st.type}" for st in container.streams if st.index != stream.index)
        self._rotation = int(round(getattr(first, "rotation", 0) or 0)) if autorotate else 0
        w, h = first.width, first.height
        if rotate_code(self._rotation) in (cv2.ROTATE_90_CLOCKWISE,
                                            cv2.ROTATE_90_COUNTERCLOCKWISE):
            w, h = h, w
        self._width, self._height = int(w), int(h)

    # -- opening ---------------------------------------------------------------------------------
    def _open(self):
        import av  # local: keeps `import warpcam.realtime.io` cheap for webcam-only users

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
        """Whether the file has at least one audio stream (the file sink keeps every one)."""
        return self._audio_present

    @property
    def other_streams(self) -> tuple:
        """The file's streams besides the decoded video (``"#1 audio"``, ...), for the sink."""
        return self._other_streams

    @property
    def main_stream_index(self) -> int:
        """Index (in the file) of the video stream that is decoded."""
        return self._main_index

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
        rot = rotate_code(self._rotation)
        step = None
        if self._fps and tb:
            step = max(1, int(round(1.0 / (self._fps * tb))))
        index = 0
        last_pts: Optional[int] = None
        mender = TimelineMender()
        reported = False
        av_frame = first
        while True:
            pts = av_frame.pts
            if pts is None:  # rare (raw streams): continue the cadence of the previous frames
                pts = (last_pts + (step or 1)) if last_pts is not None else 0
            pts = int(pts)
            last_pts = pts
            pts += mender(pts, default_step=step or 1)
            if mender.jumps and not reported:
                reported = True
                note_timeline_jump(self._path, "video",
                                   float(mender.first_jump_at * tb) if tb else None)
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
        _forget_timeline_jump(self._path)
        super().close()

    def __repr__(self) -> str:
        return f"VideoFileSource({str(self._path)!r})"
