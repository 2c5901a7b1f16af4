"""Video files as a source: PyAV decode of the first video stream, every frame's timestamp kept.

The audio is left in the file for the file sink (:mod:`warpcam.realtime.io.videofile`) to copy.
"""
from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Union

import cv2
import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import Source, SourceError

__all__ = ["VideoFileSource"]


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
