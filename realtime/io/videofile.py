"""Video files as a sink: PyAV encode with the input's timestamps, its audio copied unchanged,
written to a temporary name beside the output and renamed only when everything was flushed."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import (VIDEO_EXTENSIONS, PathLike, Sink, SinkError,
                                      _check_output_folder, _remove_quietly, _same_file,
                                      temp_path_for)

__all__ = ["VideoFileSink"]


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
