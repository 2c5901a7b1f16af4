"""Frame sinks: the last stage of the frame path (see ``../shared/DESIGN.md``).

Every sink is a small class with one shared base, :class:`Sink`: a context manager with
``write(frame, image)``, ``close()`` (success: finish and keep the output) and ``abort()``
(failure: discard the output). Leaving a ``with`` block normally closes the sink; leaving it with
an exception aborts it.

- :class:`VideoFileSink` encodes with PyAV, reproducing the input's frame count and timestamps and
  copying its audio packets unchanged; it writes a temporary file beside the output and renames
  it only when everything was flushed, so a failed run leaves nothing behind.
- :class:`VirtualCameraSink` hands frames to a virtual camera (pyvirtualcam).
- :class:`PreviewSink` shows frames in an OpenCV window with a HUD (:func:`draw_hud`).
- :class:`ImageSink` writes still images; :class:`NullSink` discards (benchmarks);
  :class:`TeeSink` fans one stream out to several sinks.
- :func:`open_sink` picks sinks from a command line's output argument.

``write`` checks the image at the door: ``H x W x 3`` ``uint8`` BGR (the size the sink was opened
with, for sinks that have one); anything else raises ``ValueError`` naming both shapes. Errors a
user can cause (missing folder, no virtual camera driver, no display) raise :class:`SinkError`
with a one-line reason, before any file is created where that is possible.

Example:
    >>> from warpcam.realtime.sources import open_source
    >>> with open_source("in.mp4") as src, open_sink("out.mp4", source=src) as sink:  # doctest: +SKIP
    ...     for frame in src:
    ...         sink.write(frame, frame.image)
"""
from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import cv2
import numpy as np

from .sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ImageSource, Source, VideoFileSource
from warpcam.core.types import Frame

__all__ = [
    "SinkError",
    "Sink",
    "NullSink",
    "VideoFileSink",
    "VirtualCameraSink",
    "PreviewSink",
    "ImageSink",
    "TeeSink",
    "draw_hud",
    "hud_box",
    "open_sink",
    "temp_path_for",
]

PathLike = Union[str, os.PathLike]


class SinkError(RuntimeError):
    """A sink could not be opened or could not finish its output.

    The message is one line that says what and why, and how to fix it where there is a fix,
    e.g. ``output folder does not exist: /data/out``.
    """


def temp_path_for(path: PathLike) -> Path:
    """Temporary name used while writing ``path``: ``.NAME.warpcam-tmp.EXT`` in the same folder.

    Same folder, so the final ``os.replace`` is an atomic rename on the same file system; same
    extension, so the muxer / image encoder is chosen from it as for the final name.
    """
    p = Path(path)
    return p.with_name(f".{p.stem}.warpcam-tmp{p.suffix}")


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file (existing: samefile; else resolved paths)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.expanduser().resolve() == pb.expanduser().resolve()


def _check_output_folder(path: Path, what: str = "output") -> Path:
    """Raise SinkError unless the folder that will hold ``path`` exists and is writable."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise SinkError(f"{what} folder does not exist: {folder}")
    if not folder.is_dir():
        raise SinkError(f"{what} folder is not a folder: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SinkError(f"{what} folder is not writable: {folder}")
    return folder


# ------------------------------------------------------------------------------------------------
# Base
# ------------------------------------------------------------------------------------------------

class Sink:
    """Base class of every frame sink.

    A sink is a context manager: leaving the ``with`` block normally calls :meth:`close`,
    leaving it with an exception calls :meth:`abort`. Both are safe to call more than once, and
    the first one wins.

    Subclasses implement ``_write``, ``_close`` and ``_abort``; the base validates images, counts
    frames and refuses writes after the end.

    Args:
        width, height: the frame size the sink accepts, or ``None`` for any size.
    """

    def __init__(self, width: Optional[int] = None, height: Optional[int] = None) -> None:
        self._expected_size = (None if width is None or height is None
                               else (int(height), int(width)))
        self._frames_written = 0
        self._finished = False

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- public API ------------------------------------------------------------------------------
    def write(self, frame: Frame, image: Optional[np.ndarray] = None) -> None:
        """Write the processed image of ``frame``.

        Args:
            frame: the source frame (its ``index``, ``pts``, ``time_base``, ``name`` are used).
            image: the processed picture for that frame, ``H x W x 3`` ``uint8`` BGR; default:
                ``frame.image``.

        Raises:
            ValueError: the image is not ``H x W x 3`` ``uint8`` or not the sink's size.
            SinkError: the sink was already closed or aborted, or the device/file failed.
        """
        if self._finished:
            raise SinkError(f"{self!r}: write after close/abort")
        image = frame.image if image is None else image
        self._validate(image)
        self._write(frame, image)
        self._frames_written += 1

    def close(self) -> None:
        """Finish the output successfully (flush, rename, release). Safe to call twice."""
        if self._finished:
            return
        self._finished = True
        self._close()

    def abort(self) -> None:
        """Discard the output (remove temporary files, release devices). Never raises."""
        if self._finished:
            return
        self._finished = True
        try:
            self._abort()
        except Exception:
            pass

    def set_hud_lines(self, lines: Sequence[str]) -> None:
        """Text lines for a HUD (statistics); ignored by sinks without one."""

    def poll_key(self) -> Optional[str]:
        """The key pressed in a preview window since the last call, or ``None``."""
        return None

    @property
    def is_live(self) -> bool:
        """``True`` when frames go to a live consumer (camera, window), not to storage."""
        return False

    @property
    def frames_written(self) -> int:
        """Number of frames accepted by :meth:`write`."""
        return self._frames_written

    @property
    def closed(self) -> bool:
        return self._finished

    # -- for subclasses --------------------------------------------------------------------------
    def _validate(self, image: np.ndarray) -> None:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", None)
        if self._expected_size is not None:
            want = self._expected_size + (3,)
            if shape != want or dtype != np.uint8:
                raise ValueError(f"image must be {want[0]}x{want[1]}x3 uint8 BGR, got shape "
                                 f"{shape} dtype {dtype}")
        elif (shape is None or len(shape) != 3 or shape[2] != 3 or dtype != np.uint8
              or shape[0] == 0 or shape[1] == 0):
            raise ValueError(f"image must be HxWx3 uint8 BGR, got shape {shape} dtype {dtype}")

    def _write(self, frame: Frame, image: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _abort(self) -> None:
        self._close()


class NullSink(Sink):
    """Discards every frame (benchmarks, dry runs); :attr:`frames_written` counts them."""

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        pass

    def __repr__(self) -> str:
        return "NullSink()"


class TeeSink(Sink):
    """Writes every frame to several sinks, in order.

    ``close`` closes every member even when one fails (the first error is re-raised after);
    ``abort`` aborts every member. ``set_hud_lines`` and ``poll_key`` reach the members that
    have them (the first key any member returns wins).
    """

    def __init__(self, sinks: Iterable[Sink]) -> None:
        super().__init__()
        self._sinks: List[Sink] = list(sinks)
        if not self._sinks:
            raise ValueError("TeeSink needs at least one sink")

    @property
    def sinks(self) -> List[Sink]:
        return list(self._sinks)

    def _validate(self, image: np.ndarray) -> None:
        for s in self._sinks:
            s._validate(image)

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        for s in self._sinks:
            s.write(frame, image)

    def _close(self) -> None:
        first: Optional[BaseException] = None
        for s in self._sinks:
            try:
                s.close()
            except Exception as exc:  # keep closing the others, report the first failure
                if first is None:
                    first = exc
        if first is not None:
            for s in self._sinks:
                s.abort()
            raise first

    def _abort(self) -> None:
        for s in self._sinks:
            s.abort()

    def set_hud_lines(self, lines: Sequence[str]) -> None:
        for s in self._sinks:
            s.set_hud_lines(lines)

    def poll_key(self) -> Optional[str]:
        key = None
        for s in self._sinks:
            k = s.poll_key()
            if key is None:
                key = k
        return key

    @property
    def is_live(self) -> bool:
        return any(s.is_live for s in self._sinks)

    def __repr__(self) -> str:
        return f"TeeSink({self._sinks!r})"


# ------------------------------------------------------------------------------------------------
# Video files (PyAV)
# ------------------------------------------------------------------------------------------------

_AUDIO_LEAD_SECONDS = 0.5  # audio is muxed up to this far ahead of the newest video frame


def _encoder_available(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def _pad_even(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    ph, pw = h & 1, w & 1
    if not (ph or pw):
        return image
    return cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REPLICATE)


class VideoFileSink(Sink):
    """Encode frames to a video file with PyAV, keeping the input's timestamps and audio.

    Video: H.264 (``libx264``, ``yuv420p``, CRF 18, preset ``veryfast``, no B-frames) when the
    PyAV build has it, else MPEG-4 Part 2 (``mpeg4``, quantiser 3). The BGR -> YUV conversion
    uses the BT.601 matrix with limited range, and the stream is tagged that way so players
    decode the colours back exactly.

    Timestamps: with ``time_base`` given (the input stream's), every frame is written with
    ``pts = Frame.pts`` in that time base, so the output has the input's frame count and
    timestamps exactly in MP4 and MOV. MKV stores milliseconds and shifts every stream so the
    earliest packet (often the audio's priming packet, about -23 ms) starts at 0; AVI has a
    constant rate, so there ``pts = round(pts_seconds * fps)``. Without ``time_base`` the time
    base is ``1 / fps`` and ``pts = Frame.index``. A timestamp that does not increase is bumped
    to the previous one + 1 tick (muxers reject it otherwise).

    Audio: when ``audio_from`` names a file with an audio stream, its first audio stream's
    packets are copied unchanged (no re-encode) into the output, interleaved as the video is
    written: on each :meth:`write` the audio is demuxed up to the frame's time plus 0.5 s, and
    the rest at :meth:`close`, so memory stays bounded for long files.

    Odd frame sizes: ``yuv420p`` needs even sizes, so a frame with an odd width or height is
    padded by one column/row that repeats the last one; the output is then up to one pixel wider
    and taller than the input.

    Output safety: frames go to :func:`temp_path_for` (``.NAME.warpcam-tmp.EXT``) in the output
    folder, created when the first packet is written; :meth:`close` flushes the encoder, writes
    the remaining audio, closes the file and only then renames it onto ``path``. :meth:`abort`,
    or any failure inside :meth:`close`, removes the temporary file, so a failed run leaves
    neither a partial output nor litter.

    Args:
        path: output file: ``.mp4``, ``.mov``, ``.mkv`` or ``.avi``.
        width, height: size of the frames that will be written (pixels, > 0).
        fps: nominal frame rate (encoder rate control; the time base when ``time_base`` is None).
        time_base: the input stream's time base (:class:`fractions.Fraction`), or ``None``.
        audio_from: a media file whose first audio stream is copied, or ``None``.
        codec: video encoder name (``"libx264"``, ``"mpeg4"``, ...); default: the best available.
        input_path: the input file, to refuse overwriting it (``audio_from`` is checked too).

    Raises:
        SinkError: at construction, before any file is created: unsupported extension, output
            folder missing or not writable, output equal to the input, output is a folder,
            unknown encoder, unreadable ``audio_from``. In :meth:`write` / :meth:`close`: the
            encoder or muxer failed (the temporary file is removed).
        ValueError: bad ``width`` / ``height`` / ``fps``; a frame of the wrong shape or dtype.
    """

    def __init__(self, path: PathLike, *, width: int, height: int, fps: Optional[float] = 30.0,
                 time_base: Optional[Fraction] = None, audio_from: Optional[PathLike] = None,
                 codec: Optional[str] = None, input_path: Optional[PathLike] = None) -> None:
        import av

        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if fps is None:
            fps = 30.0
        if not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        super().__init__(width, height)
        self._path = Path(path)
        ext = self._path.suffix.lower()
        if ext not in VIDEO_EXTENSIONS:
            raise SinkError(f"unsupported video output extension {ext or '(none)'!r} for "
                            f"{self._path} (use {', '.join(VIDEO_EXTENSIONS)})")
        if self._path.is_dir():
            raise SinkError(f"output path is a folder: {self._path}")
        _check_output_folder(self._path)
        for other in (input_path, audio_from):
            if other is not None and _same_file(self._path, other):
                raise SinkError(f"output {self._path} is the input file: choose another name "
                                "(the input is read while the output is written)")
        codec = codec or ("libx264" if _encoder_available("libx264") else "mpeg4")
        if not _encoder_available(codec):
            raise SinkError(f"video encoder {codec!r} is not available in this PyAV build")

        self._fps = float(fps)
        self._width, self._height = int(width), int(height)
        self._rate = Fraction(self._fps).limit_denominator(1001)
        self._avi = ext == ".avi"
        if time_base is not None and not self._avi:
            self._tb = Fraction(time_base)
            self._use_pts = True
        else:  # no input time base, or AVI (no per-frame timestamps): constant rate 1/fps
            self._tb = 1 / self._rate
            self._use_pts = False
        self._keep_offsets = time_base is not None
        self._last_pts: Optional[int] = None
        self._last_enc_pts: Optional[int] = None
        self._tmp = temp_path_for(self._path)
        self._out = None
        self._audio_in = None
        self._audio_packets = None
        self._audio_peek = None
        self._audio_stream = None
        self._audio_packets_copied = 0
        if self._tmp.exists():  # left over from a crashed run
            _remove_quietly(self._tmp)
        try:
            self._open_output(av, codec, audio_from)
        except SinkError:
            self._discard()
            raise
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise SinkError(f"cannot write video {self._path}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None

    def _open_output(self, av, codec: str, audio_from: Optional[PathLike]) -> None:
        self._out = av.open(str(self._tmp), mode="w")
        enc_w, enc_h = self._width + (self._width & 1), self._height + (self._height & 1)
        stream = self._out.add_stream(codec, rate=self._rate)
        stream.width, stream.height = enc_w, enc_h
        stream.pix_fmt = "yuv420p"
        enc_tb = self._tb
        if codec == "mpeg4" and enc_tb.denominator > 65535:
            # MPEG-4 Part 2 cannot code a time base finer than 1/65535 s.
            enc_tb = Fraction(1, 65535)
        self._enc_tb = enc_tb
        stream.time_base = enc_tb
        cc = stream.codec_context
        cc.time_base = enc_tb
        cc.framerate = self._rate
        # BT.601 limited range, the swscale default for BGR -> YUV: tag it so it is decoded back
        # with the same matrix (AVCOL_SPC_SMPTE170M = 6, AVCOL_RANGE_MPEG = 1).
        cc.colorspace = 6
        cc.color_range = 1
        if codec == "libx264":
            cc.options = {"crf": "18", "preset": "veryfast", "bf": "0"}
        elif codec == "mpeg4":
            cc.options = {"flags": "+qscale", "global_quality": str(3 * 118), "bf": "0"}
        self._video = stream
        if audio_from is not None:
            self._open_audio(av, Path(audio_from))

    def _open_audio(self, av, audio_path: Path) -> None:
        try:
            self._audio_in = av.open(str(audio_path), mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SinkError(f"cannot read audio from {audio_path}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
        if not self._audio_in.streams.audio:
            self._audio_in.close()
            self._audio_in = None
            return
        in_audio = self._audio_in.streams.audio[0]
        try:
            self._audio_stream = self._out.add_stream_from_template(in_audio)
        except (av.error.FFmpegError, ValueError) as exc:
            raise SinkError(f"cannot copy the {in_audio.codec_context.name} audio of "
                            f"{audio_path} into {self._path.suffix}: {exc}") from None
        self._audio_packets = self._audio_in.demux(in_audio)

    # -- properties ------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The final output file (exists only after a successful :meth:`close`)."""
        return self._path

    @property
    def temp_path(self) -> Path:
        """The temporary file being written."""
        return self._tmp

    @property
    def has_audio(self) -> bool:
        """Whether an audio stream is being copied."""
        return self._audio_stream is not None

    @property
    def codec(self) -> str:
        return self._video.codec_context.name

    @property
    def time_base(self) -> Fraction:
        return self._tb

    # -- writing ---------------------------------------------------------------------------------
    def _frame_pts(self, frame: Frame) -> int:
        if self._use_pts:
            if frame.pts is not None and frame.time_base is not None \
                    and Fraction(frame.time_base) == self._tb:
                pts = int(frame.pts)
            elif frame.pts_seconds is not None:
                pts = int(round(Fraction(frame.pts_seconds) / self._tb))
            else:
                pts = int(round(frame.index / self._rate / self._tb))
        elif self._keep_offsets and frame.pts_seconds is not None:
            # AVI from a file: constant rate, but keep the input's start offset and gaps.
            pts = int(round(frame.pts_seconds * self._rate))
        else:
            pts = int(frame.index)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def _mux_audio_until(self, seconds: Optional[float]) -> None:
        """Copy audio packets whose time is before ``seconds`` (all of them for ``None``)."""
        if self._audio_packets is None:
            return
        while True:
            pkt = self._audio_peek
            if pkt is None:
                try:
                    pkt = next(self._audio_packets)
                except StopIteration:
                    self._audio_packets = None
                    return
                if pkt.dts is None and pkt.pts is None:  # demuxer's empty flush packet
                    continue
                self._audio_peek = pkt
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            if seconds is not None and pkt.time_base is not None \
                    and float(ts * pkt.time_base) >= seconds:
                return
            self._audio_peek = None
            pkt.stream = self._audio_stream
            self._out.mux(pkt)
            self._audio_packets_copied += 1

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        import av
        from av.video.reformatter import ColorRange, Colorspace

        pts = self._frame_pts(frame)
        try:
            vf = av.VideoFrame.from_ndarray(_pad_even(np.ascontiguousarray(image)),
                                            format="bgr24")
            vf = vf.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU601,
                             dst_color_range=ColorRange.MPEG)
            if self._enc_tb != self._tb:
                pts_enc = int(round(pts * self._tb / self._enc_tb))
                if self._last_enc_pts is not None and pts_enc <= self._last_enc_pts:
                    pts_enc = self._last_enc_pts + 1
                self._last_enc_pts = pts_enc
            else:
                pts_enc = pts
            vf.pts = pts_enc
            vf.time_base = self._enc_tb
            if self._audio_packets is not None:
                self._mux_audio_until(float(pts * self._tb) + _AUDIO_LEAD_SECONDS)
            self._out.mux(self._video.encode(vf))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SinkError(f"cannot write video {self._path} at frame {frame.index}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None

    def _close(self) -> None:
        import av

        try:
            if self._frames_written == 0:
                raise SinkError(f"no frames were written: {self._path} not created")
            self._out.mux(self._video.encode(None))
            self._mux_audio_until(None)
            self._out.close()
            self._out = None
            os.replace(self._tmp, self._path)
        except SinkError:
            self._discard()
            raise
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise SinkError(f"cannot finish video {self._path}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
        except BaseException:
            self._discard()
            raise
        finally:
            self._close_audio_input()

    def _abort(self) -> None:
        self._discard()

    def _close_audio_input(self) -> None:
        if self._audio_in is not None:
            try:
                self._audio_in.close()
            except Exception:
                pass
            self._audio_in = None
        self._audio_packets = None
        self._audio_peek = None

    def _discard(self) -> None:
        """Close everything without caring about errors and remove the temporary file."""
        if self._out is not None:
            try:
                self._out.close()
            except Exception:
                pass
            self._out = None
        self._close_audio_input()
        _remove_quietly(self._tmp)

    def __repr__(self) -> str:
        return f"VideoFileSink({str(self._path)!r})"


# ------------------------------------------------------------------------------------------------
# Virtual camera (pyvirtualcam)
# ------------------------------------------------------------------------------------------------

def _virtual_camera_hint() -> str:
    if sys.platform.startswith("linux"):
        return ("no virtual camera device: load v4l2loopback with `sudo modprobe v4l2loopback "
                "devices=1 exclusive_caps=1 card_label=warpcam`")
    if sys.platform.startswith("win"):
        return ("no virtual camera: install OBS Studio (its Virtual Camera) or Unity Capture")
    if sys.platform == "darwin":
        return "no virtual camera: install OBS Studio and start its Virtual Camera once"
    return "no virtual camera backend for this platform"


class VirtualCameraSink(Sink):
    """Send frames to a virtual camera that video-call apps can pick (pyvirtualcam).

    The camera is opened with ``PixelFormat.BGR``, so frames go out without a colour conversion
    on our side. :meth:`write` sends at once and never sleeps: pacing a live stream is the
    source's job (the webcam delivers at its own rate).

    Args:
        width, height: frame size in pixels.
        fps: the rate announced to the consumers.
        device: backend-specific device (``/dev/video10`` for v4l2loopback), default: the first.
        backend: pyvirtualcam backend name (``v4l2loopback``, ``obs``, ``unitycapture``).

    Raises:
        SinkError: no virtual camera driver/device; the message says how to install one and
            includes pyvirtualcam's reason.
    """

    def __init__(self, width: int, height: int, fps: Optional[float] = 30.0,
                 device: Optional[str] = None, backend: Optional[str] = None) -> None:
        super().__init__(width, height)
        fps = 30.0 if fps is None else float(fps)
        try:
            import pyvirtualcam
        except ImportError as exc:
            raise SinkError(f"pyvirtualcam is not installed ({exc}): pip install pyvirtualcam") \
                from None
        try:
            self._cam = pyvirtualcam.Camera(int(width), int(height), fps,
                                            fmt=pyvirtualcam.PixelFormat.BGR, device=device,
                                            backend=backend, print_fps=False)
        except Exception as exc:  # pyvirtualcam raises RuntimeError / ValueError per backend
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise SinkError(f"{_virtual_camera_hint()} ({reason})") from None

    @property
    def device(self) -> str:
        """The device the frames go to (e.g. ``/dev/video10``, ``OBS Virtual Camera``)."""
        return self._cam.device

    @property
    def backend(self) -> str:
        return self._cam.backend

    @property
    def is_live(self) -> bool:
        return True

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        try:
            self._cam.send(np.ascontiguousarray(image))
        except Exception as exc:
            raise SinkError(f"virtual camera {self.device}: send failed: {exc}") from None

    def _close(self) -> None:
        self._cam.close()

    def __repr__(self) -> str:
        return f"VirtualCameraSink({getattr(self._cam, 'device', '?')!r})"


# ------------------------------------------------------------------------------------------------
# Preview window with HUD
# ------------------------------------------------------------------------------------------------

_HUD_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _hud_metrics(image_shape, lines: Sequence[str]):
    h = int(image_shape[0])
    scale = float(np.clip(h / 720.0 * 0.55, 0.35, 1.2))
    thickness = 1 if scale < 0.8 else 2
    pad = max(4, int(round(8 * scale)))
    sizes = [cv2.getTextSize(str(t), _HUD_FONT, scale, thickness) for t in lines]
    line_h = max((s[0][1] + s[1] for s in sizes), default=0) + pad // 2
    text_w = max((s[0][0] for s in sizes), default=0)
    return scale, thickness, pad, line_h, text_w


def hud_box(image_shape, lines: Sequence[str]) -> Optional[tuple]:
    """Pixel box ``(x0, y0, x1, y1)`` (exclusive end, clipped to the image) that
    :func:`draw_hud` changes for these lines; ``None`` for no lines."""
    if not lines:
        return None
    scale, thickness, pad, line_h, text_w = _hud_metrics(image_shape, lines)
    H, W = int(image_shape[0]), int(image_shape[1])
    x0, y0 = pad, pad
    x1 = min(W, x0 + text_w + 2 * pad)
    y1 = min(H, y0 + line_h * len(lines) + pad)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def draw_hud(image: np.ndarray, lines: Sequence[str], *, opacity: float = 0.6,
             color=(80, 255, 80)) -> np.ndarray:
    """Draw text lines on a semi-transparent dark box in the top-left corner.

    Pure: returns a new image and leaves ``image`` untouched. Pixels outside :func:`hud_box`
    are byte-identical to the input. Text size follows the image height (readable from 240p to
    4K).

    Args:
        image: ``H x W x 3`` ``uint8`` BGR.
        lines: text lines, e.g. ``["fps 29.8", "track 6.1 ms"]``; empty -> a plain copy.
        opacity: how dark the box is, in [0, 1] (0 = no box, only text).
        color: BGR text colour.

    Returns:
        ``H x W x 3`` ``uint8`` BGR, same shape as ``image``.

    Raises:
        ValueError: ``image`` is not ``H x W x 3`` ``uint8``.
    """
    if getattr(image, "ndim", 0) != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 BGR, got shape "
                         f"{getattr(image, 'shape', None)} dtype {getattr(image, 'dtype', None)}")
    out = image.copy()
    box = hud_box(image.shape, [str(t) for t in lines])
    if box is None:
        return out
    x0, y0, x1, y1 = box
    scale, thickness, pad, line_h, _ = _hud_metrics(image.shape, [str(t) for t in lines])
    roi = out[y0:y1, x0:x1]
    # Darken towards black: (1 - opacity) * roi, rounded.
    roi[...] = (roi.astype(np.float32) * (1.0 - float(opacity)) + 0.5).astype(np.uint8)
    # Draw the text into the box only, so nothing outside it can change.
    canvas = np.ascontiguousarray(roi)
    for i, text in enumerate(lines):
        baseline_y = pad // 2 + line_h * (i + 1) - pad // 2
        cv2.putText(canvas, str(text), (pad, baseline_y), _HUD_FONT, scale, color, thickness,
                    cv2.LINE_AA)
    out[y0:y1, x0:x1] = canvas
    return out


def _display_problem() -> Optional[str]:
    """Why no window can be opened here, or ``None`` when a display looks available.

    OpenCV's Qt backend aborts the whole process (not a Python exception) when it cannot
    reach an X server, so this is checked before the first ``cv2.imshow``.
    """
    if sys.platform.startswith("win") or sys.platform == "darwin":
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        if os.environ.get("WAYLAND_DISPLAY"):
            return "DISPLAY is not set (OpenCV's windows need X11/XWayland)"
        return "DISPLAY is not set (no desktop session; run without --preview)"
    if display.startswith(":"):  # local X server: its socket must exist
        num = display[1:].split(".")[0]
        if num.isdigit() and not os.path.exists(f"/tmp/.X11-unix/X{num}"):
            return f"DISPLAY={display} but no X server socket /tmp/.X11-unix/X{num}"
    return None


class PreviewSink(Sink):
    """Show frames in an OpenCV window, with an optional HUD.

    The pipeline passes its statistics with :meth:`set_hud_lines`; they are drawn on every
    following frame with :func:`draw_hud`. :meth:`write` also pumps the window's events
    (``cv2.waitKey(1)``) and keeps the key pressed for :meth:`poll_key`.

    Args:
        window: window title.
        hud: draw the HUD lines.

    Raises:
        SinkError: ``no display for --preview: ...`` at construction when no display is
            reachable (checked up front because OpenCV's Qt backend aborts the process instead
            of raising), or on the first write if ``cv2.imshow`` fails.
    """

    def __init__(self, window: str = "warpcam", hud: bool = True) -> None:
        super().__init__()
        problem = _display_problem()
        if problem:
            raise SinkError(f"no display for --preview: {problem}")
        self._window = str(window)
        self._hud = bool(hud)
        self._lines: List[str] = []
        self._pending_key: Optional[str] = None
        self._shown = False

    @property
    def is_live(self) -> bool:
        return True

    @property
    def window(self) -> str:
        return self._window

    def set_hud_lines(self, lines: Sequence[str]) -> None:
        self._lines = [str(t) for t in lines]

    @staticmethod
    def _key(code: int) -> Optional[str]:
        if code is None or code < 0:
            return None
        code &= 0xFF
        return chr(code) if code else None

    def poll_key(self) -> Optional[str]:
        if self._pending_key is not None:
            key, self._pending_key = self._pending_key, None
            return key
        if not self._shown or self._finished:
            return None
        return self._key(cv2.waitKey(1))

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        shown = draw_hud(image, self._lines) if (self._hud and self._lines) else image
        try:
            cv2.imshow(self._window, shown)
            key = self._key(cv2.waitKey(1))
        except cv2.error as exc:
            msg = " ".join(str(exc).split())
            raise SinkError(f"no display for --preview: {msg}") from None
        self._shown = True
        if key is not None:
            self._pending_key = key

    def _close(self) -> None:
        if self._shown:
            try:
                cv2.destroyWindow(self._window)
                cv2.waitKey(1)
            except cv2.error:
                pass

    def __repr__(self) -> str:
        return f"PreviewSink({self._window!r})"


# ------------------------------------------------------------------------------------------------
# Still images
# ------------------------------------------------------------------------------------------------

class ImageSink(Sink):
    """Write still images: one file, or one file per frame into a folder.

    - ``path`` with an image extension: a single image. The frame is encoded to a temporary
      file at :meth:`write` and renamed onto ``path`` at :meth:`close`; a second frame raises
      :class:`SinkError` (give a folder for several).
    - any other ``path``: a folder (created at the first write if missing; its parent must
      exist). Each frame is written as ``Frame.name`` (``NNNNNN.png`` when it has none) through
      a temporary file renamed at once, so every file in the folder is complete; :meth:`abort`
      only removes a file still being written.

    The format follows the extension (``.png .jpg .jpeg .bmp .webp .tif .tiff``); JPEG quality 95.

    Args:
        path: output image file or folder.
        input_path: the input image or folder, to refuse overwriting it.

    Raises:
        SinkError: parent folder missing or not writable, unsupported extension, output equal
            to the input, a second frame for a single-image output, encoding failure.
    """

    def __init__(self, path: PathLike, *, input_path: Optional[PathLike] = None) -> None:
        super().__init__()
        self._path = Path(path)
        self._single = self._path.suffix.lower() in IMAGE_EXTENSIONS and not self._path.is_dir()
        if self._single:
            _check_output_folder(self._path)
        else:
            if self._path.suffix and self._path.suffix.lower() in VIDEO_EXTENSIONS:
                raise SinkError(f"image output {self._path} has a video extension")
            if self._path.exists() and not self._path.is_dir():
                raise SinkError(f"image output folder {self._path} is a file (for one image "
                                f"use an extension: {' '.join(IMAGE_EXTENSIONS)})")
            if self._path.exists():
                if not os.access(self._path, os.W_OK | os.X_OK):
                    raise SinkError(f"output folder is not writable: {self._path}")
            else:
                _check_output_folder(self._path)
        if input_path is not None and _same_file(self._path, input_path):
            raise SinkError(f"output {self._path} is the input: choose another name "
                            "(the input images would be overwritten)")
        self._input_dir = None
        if input_path is not None and Path(input_path).is_dir():
            self._input_dir = Path(input_path)
        self._pending: Optional[Path] = None  # single mode: temp file to rename at close

    @property
    def path(self) -> Path:
        return self._path

    def _target(self, frame: Frame) -> Path:
        if self._single:
            return self._path
        name = frame.name or f"{frame.index:06d}.png"
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            name = f"{Path(name).stem}.png"
        return self._path / Path(name).name

    def _encode_to(self, target: Path, image: np.ndarray) -> Path:
        tmp = temp_path_for(target)
        ext = target.suffix.lower()
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
        try:
            ok, buf = cv2.imencode(ext, image, params)
        except cv2.error as exc:
            raise SinkError(f"cannot encode image {target}: {' '.join(str(exc).split())}") \
                from None
        if not ok:
            raise SinkError(f"cannot encode image {target}")
        try:
            buf.tofile(str(tmp))
        except OSError as exc:
            _remove_quietly(tmp)
            raise SinkError(f"cannot write image {target}: {exc.strerror or exc}") from None
        return tmp

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        if self._single:
            if self._pending is not None:
                raise SinkError(f"single-image output {self._path} got a second frame: give a "
                                "folder to write several images")
            self._pending = self._encode_to(self._path, image)
            return
        if not self._path.exists():
            try:
                self._path.mkdir()
            except OSError as exc:
                raise SinkError(f"cannot create output folder {self._path}: "
                                f"{exc.strerror or exc}") from None
        target = self._target(frame)
        tmp = self._encode_to(target, image)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            _remove_quietly(tmp)
            raise SinkError(f"cannot write image {target}: {exc.strerror or exc}") from None

    def _close(self) -> None:
        if self._pending is not None:
            try:
                os.replace(self._pending, self._path)
            except OSError as exc:
                _remove_quietly(self._pending)
                raise SinkError(f"cannot write image {self._path}: {exc.strerror or exc}") \
                    from None
            finally:
                self._pending = None

    def _abort(self) -> None:
        if self._pending is not None:
            _remove_quietly(self._pending)
            self._pending = None

    def __repr__(self) -> str:
        return f"ImageSink({str(self._path)!r})"


# ------------------------------------------------------------------------------------------------
# Factory
# ------------------------------------------------------------------------------------------------

def open_sink(output: Optional[PathLike], *, source: Source, preview: bool = False) -> Sink:
    """Open the sink a command line names, sized and timed like ``source``.

    - ``None`` -> :class:`VirtualCameraSink` (the source's size, its fps or 30);
    - ``"null"`` -> :class:`NullSink`;
    - a path ending in ``.mp4 .mov .mkv .avi`` -> :class:`VideoFileSink`; for a
      :class:`~warpcam.realtime.sources.VideoFileSource` it gets the input's time base (same
      timestamps) and, when the input has audio, ``audio_from=source.path``;
    - for an :class:`~warpcam.realtime.sources.ImageSource`: a path with an image extension or a folder
      -> :class:`ImageSink`.

    With ``preview=True`` the result is a :class:`TeeSink` of that sink and a
    :class:`PreviewSink`.

    Raises:
        SinkError: an output that does not fit the source (an image path for a video or camera
            input, a folder for a single image), or what the chosen sink raises.
    """
    main: Sink
    fps = source.fps or 30.0
    if output is None:
        main = VirtualCameraSink(source.width, source.height, fps)
    elif isinstance(output, str) and output.strip().lower() == "null":
        main = NullSink()
    else:
        path = Path(output).expanduser()
        ext = path.suffix.lower()
        source_path = getattr(source, "path", None)
        if ext in VIDEO_EXTENSIONS:
            kwargs = {}
            if isinstance(source, VideoFileSource):
                kwargs["time_base"] = source.time_base
                if source.audio_stream_present:
                    kwargs["audio_from"] = source.path
            main = VideoFileSink(path, width=source.width, height=source.height, fps=fps,
                                 input_path=source_path, **kwargs)
        elif isinstance(source, ImageSource):
            if ext in IMAGE_EXTENSIONS and source.frame_count > 1:
                raise SinkError(f"output {path} is one image but the input {source.path} has "
                                f"{source.frame_count}: give a folder")
            if ext and ext not in IMAGE_EXTENSIONS and not path.is_dir():
                raise SinkError(f"unsupported output extension {ext!r} for {path} (images: "
                                f"{' '.join(IMAGE_EXTENSIONS)}; videos: "
                                f"{' '.join(VIDEO_EXTENSIONS)})")
            main = ImageSink(path, input_path=source_path)
        else:
            raise SinkError(f"unsupported output {path} for a {type(source).__name__}: use a "
                            f"video file ({' '.join(VIDEO_EXTENSIONS)}), 'null', or no output "
                            "for the virtual camera")
    if not preview:
        return main
    try:
        return TeeSink([main, PreviewSink()])
    except BaseException:
        main.abort()
        raise
