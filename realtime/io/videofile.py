"""Video files as a sink: PyAV encode with the input's timestamps, every other stream of the input
kept (copied unchanged, or audio converted to AAC where the container cannot hold it), written to
a temporary file of this job's own beside the output, under a lock on the output, and renamed
only when everything was flushed."""
from __future__ import annotations

import io
import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import (VIDEO_EXTENSIONS, OutputLock, PathLike, Sink, SinkError,
                                      _check_output_folder, _same_file, _unique_temp_path,
                                      create_temp_file, remove_own_file, temp_path_for)
from warpcam.realtime.io.video import TimelineMender, _forget_timeline_jump, note_timeline_jump

__all__ = ["VideoFileSink", "StreamPlan", "plan_streams"]

log = logging.getLogger("warpcam")

_AUDIO_LEAD_SECONDS = 0.5  # other streams are muxed up to this far ahead of the newest frame
_FIRST_PACKETS_SCAN = 4000  # packets read up front to find each stream's first packet (trials)

#: FFmpeg muxer of each output extension.
_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


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


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).strip().splitlines()[0].rstrip(".")


def _codec_name(stream) -> str:
    cc = getattr(stream, "codec_context", None)
    name = getattr(cc, "name", None) if cc is not None else None
    if not name and stream.type == "data":
        name = getattr(stream, "name", None)  # DataStream.name is its codec (klv, ...)
    if not name:
        codec = getattr(stream, "codec", None)
        name = getattr(codec, "name", None)
    return name or "unknown codec"


def _describe(stream) -> str:
    if stream.type == "attachment":
        return f"#{stream.index} attachment {getattr(stream, 'name', '') or ''}".rstrip()
    return f"#{stream.index} {stream.type} ({_codec_name(stream)})"


class StreamPlan:
    """What a :class:`VideoFileSink` does with each stream of its input besides the main video.

    Decided before the first frame (by :func:`plan_streams`): ``actions`` maps each stream's
    index in the input to ``"copy"`` (packets copied unchanged), ``"aac"`` (audio the output
    container cannot hold, decoded and encoded to AAC), ``"attach"`` (a Matroska attachment) or
    ``"drop"`` (a non-audio stream the container cannot carry); ``reasons`` says why for the
    last two; ``descriptions`` names each stream (``"#1 audio (pcm_s16le)"``).
    """

    def __init__(self) -> None:
        self.actions: Dict[int, str] = {}
        self.reasons: Dict[int, str] = {}
        self.descriptions: Dict[int, str] = {}

    def streams(self, action: str) -> List[int]:
        return [i for i, a in self.actions.items() if a == action]

    def messages(self, output: Path) -> List[str]:
        """The one-line notes a user should see (conversions, streams not kept)."""
        out = []
        ext = output.suffix.lower()
        conv = self.streams("aac")
        if conv:
            what = ", ".join(f"{self.descriptions[i]}: {self.reasons[i]}" for i in conv)
            out.append(f"{output}: converting audio to AAC, {ext} cannot hold it as it is "
                       f"({what})")
        dropped = self.streams("drop")
        if dropped:
            what = ", ".join(f"{self.descriptions[i]}: {self.reasons[i]}" for i in dropped)
            out.append(f"{output}: {ext} cannot carry these streams of the input, not kept: "
                       f"{what}")
        return out


def _first_packets(container, streams) -> Dict[int, object]:
    """First packet with data of each stream (reading at most a few thousand packets)."""
    wanted = {s.index for s in streams}
    found: Dict[int, object] = {}
    if not wanted:
        return found
    try:
        for n, pkt in enumerate(container.demux(*streams)):
            if pkt.size and pkt.stream.index not in found:
                found[pkt.stream.index] = pkt
                if len(found) == len(wanted):
                    break
            if n >= _FIRST_PACKETS_SCAN:
                break
    except Exception:  # a damaged file: the trials go on without packets
        pass
    return found


def _trial_copy(av, fmt: str, stream, first) -> Optional[str]:
    """Why the muxer ``fmt`` cannot hold ``stream``'s packets unchanged, or ``None`` if it can.

    Writes the stream's header, its first packet and the trailer into memory: some muxers only
    refuse at the trailer (an MP4 with PCM of an unspecified channel layout).
    """
    try:
        out = av.open(io.BytesIO(), mode="w", format=fmt)
    except Exception as exc:  # pragma: no cover - the format exists: it was chosen from a list
        return _reason(exc)
    try:
        try:
            ostream = out.add_stream_from_template(stream)
        except Exception as exc:
            return _reason(exc)
        try:
            if first is not None:
                pkt = av.Packet(bytes(first))
                pkt.pts, pkt.dts, pkt.duration = first.pts, first.dts, first.duration
                pkt.time_base = first.time_base or stream.time_base
                pkt.is_keyframe = first.is_keyframe
                pkt.stream = ostream
                out.mux(pkt)
            else:
                out.start_encoding()
            out.close()
            out = None
        except Exception as exc:
            return _reason(exc)
        return None
    finally:
        if out is not None:
            try:
                out.close()
            except Exception:
                pass


_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1",
                    8: "7.1"}


def _aac_layout(av, stream):
    """The channel layout to encode ``stream``'s audio with, and its channel count."""
    cc = stream.codec_context
    layout = cc.layout
    channels = len(layout.channels) or int(getattr(cc, "channels", 0) or 2)
    name = getattr(layout, "name", "") or ""
    if not name or "channels" in name:  # an unspecified order ("2 channels"): the usual one
        name = _DEFAULT_LAYOUTS.get(channels, name or "stereo")
    return av.AudioLayout(name), channels


def _trial_aac(av, fmt: str, stream) -> Optional[str]:
    """Why AAC encoding of ``stream`` into ``fmt`` cannot work, or ``None``."""
    if not _encoder_available("aac"):
        return "no AAC encoder in this PyAV build"
    try:
        out = av.open(io.BytesIO(), mode="w", format=fmt)
        try:
            layout, _ = _aac_layout(av, stream)
            ostream = out.add_stream("aac", rate=int(stream.codec_context.sample_rate))
            ostream.codec_context.layout = layout
            out.start_encoding()
        finally:
            out.close()
    except Exception as exc:
        return _reason(exc)
    return None


def plan_streams(input_path: PathLike, output: PathLike) -> StreamPlan:
    """Decide, before any frame, what happens to each stream of ``input_path`` in ``output``.

    Every stream besides the first video stream (the one that is edited) is tried against the
    output's muxer (:func:`_trial_copy`, in memory): kept unchanged when it fits; audio that does
    not fit (PCM into ``.mp4``, Opus into ``.mov`` or ``.avi``, ...) is converted to AAC; any other
    stream that does not fit (subtitles of a kind the container has no tag for, data streams,
    attachments outside ``.mkv``) is dropped with its reason (:meth:`StreamPlan.messages`).

    Raises:
        SinkError: the input cannot be read; an audio stream can be neither copied nor
            converted (nothing is lost silently).
    """
    import av

    src, out = Path(input_path), Path(output)
    ext = out.suffix.lower()
    fmt = _FORMATS.get(ext)
    if fmt is None:
        raise SinkError(f"unsupported video output extension {ext!r} for {out}")
    try:
        container = av.open(str(src), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise SinkError(f"cannot read the streams of {src}: {_reason(exc)}") from None
    plan = StreamPlan()
    try:
        main = container.streams.video[0].index if container.streams.video else None
        others = [s for s in container.streams if s.index != main]
        media = [s for s in others if s.type in ("audio", "video", "subtitle", "data")]
        firsts = _first_packets(container, media)
        for s in others:
            plan.descriptions[s.index] = _describe(s)
            if s.type == "attachment":
                if fmt == "matroska" and getattr(s, "data", None) is not None:
                    plan.actions[s.index] = "attach"
                else:
                    plan.actions[s.index] = "drop"
                    plan.reasons[s.index] = "attachments only in .mkv"
                continue
            if s.type not in ("audio", "video", "subtitle", "data"):
                plan.actions[s.index] = "drop"
                plan.reasons[s.index] = f"{s.type} streams are not copied"
                continue
            why = None
            if s.type == "audio" and ext == ".mp4" and _codec_name(s).startswith("pcm_"):
                # MP4 has PCM only in the 2019 amendment ("ipcm") few players read, and FFmpeg
                # refuses it for many channel layouts at the very end of the file.
                why = "PCM in MP4"
            else:
                why = _trial_copy(av, fmt, s, firsts.get(s.index))
                if why is not None and why.lower().startswith("invalid argument"):
                    why = f"the {ext} muxer refuses {_codec_name(s)}"
            if why is None:
                plan.actions[s.index] = "copy"
                continue
            if s.type == "audio":
                why_aac = _trial_aac(av, fmt, s)
                if why_aac is not None:
                    raise SinkError(f"cannot keep the audio {_describe(s)} of {src} in {out}: "
                                    f"{why}, and converting it to AAC failed ({why_aac}): "
                                    "choose .mkv")
                plan.actions[s.index] = "aac"
                plan.reasons[s.index] = why
            else:
                plan.actions[s.index] = "drop"
                plan.reasons[s.index] = why
    finally:
        container.close()
    return plan


class _Kept:
    """One kept stream of the input while it is written: its packets in, its packets out."""

    def __init__(self, action: str, in_stream, out_stream, desc: str) -> None:
        self.action = action
        self.in_stream = in_stream
        self.out_stream = out_stream
        self.desc = desc
        self.mender = TimelineMender(allow_equal=in_stream.type == "subtitle")
        self.packets_in = 0
        self.packets_out = 0  # copy: packets muxed; aac: input packets decoded
        self.shift: Optional[int] = None  # AVI: keep the first timestamp >= 0 (see _mux_out)
        self.rate = (int(in_stream.codec_context.sample_rate)
                     if action == "aac" else None)
        self.next_pts: Optional[int] = None  # aac: next sample position (1/rate)
        self.decoded_samples = 0


class VideoFileSink(Sink):
    """Encode frames to a video file with PyAV, keeping the input's timestamps and streams.

    Video: H.264 (``libx264``, ``yuv420p``, CRF 18, preset ``veryfast``, no B-frames) when the
    PyAV build has it, else MPEG-4 Part 2 (``mpeg4``, quantiser 3); AVI outputs always get
    MPEG-4 Part 2 (AVI has no presentation timestamps: FFmpeg reads H.264 in AVI back one frame
    late). The BGR -> YUV conversion uses the BT.601 matrix with limited range, and the stream
    is tagged that way so players decode the colours back exactly.

    Timestamps: with ``time_base`` given (the input stream's), every frame is written with
    ``pts = Frame.pts`` in that time base, so the output has the input's frame count and
    timestamps exactly in MP4 and MOV. MKV stores milliseconds and shifts every stream so the
    earliest packet (often the audio's priming packet, about -23 ms) starts at 0; AVI has a
    constant rate, so there ``pts = round(pts_seconds * fps)``, and the other streams are moved
    to start at 0 or later so the muxer does not shift the video to make room for an AAC priming
    packet. Without ``time_base`` the time base is ``1 / fps`` and ``pts = Frame.index``. A
    timestamp that does not increase is bumped to the previous one + 1 tick (muxers reject it
    otherwise; :class:`~warpcam.realtime.io.VideoFileSource` already continues timelines that
    jump back, so this only happens with hand-made frames).

    Other streams: when ``audio_from`` names a file, every stream of it besides its first video
    stream is kept (:func:`plan_streams`, decided here, before the first frame, and said in one
    warning line each for conversions and for streams not kept): packets copied unchanged (every
    audio track, subtitles, data streams the container can carry; attachments into ``.mkv``),
    audio the container cannot hold converted to AAC. They are interleaved as the video is
    written: on each :meth:`write` the input is demuxed up to the frame's time plus 0.5 s, and
    the rest at :meth:`close`, so memory stays bounded for long files. Their timestamps are
    continued across jumps back like the video's. :meth:`close` fails unless every packet read
    was written.

    Odd frame sizes: ``yuv420p`` needs even sizes, so a frame with an odd width or height is
    padded by one column/row that repeats the last one; the output is then up to one pixel wider
    and taller than the input.

    Output safety: the constructor takes an :class:`~warpcam.realtime.io.base.OutputLock` on
    ``path`` (a second job on the same output fails at once, naming the pid that holds it);
    the first :meth:`write` creates the temporary file exclusively
    (:func:`~warpcam.realtime.io.base.create_temp_file`: ``.NAME.warpcam-tmp.EXT``, or
    ``.NAME.warpcam-PID-RANDOM.tmp.EXT`` when a file of that name exists, which is left alone);
    :meth:`close` flushes the encoder, writes the remaining packets, closes the file and only then
    renames it onto ``path``. :meth:`abort`, or any failure inside :meth:`close`, removes the
    temporary file (only while it is still the file this job created) and the lock, so a failed
    run leaves neither a partial output nor litter, and never deletes anyone else's file.

    Args:
        path: output file: ``.mp4``, ``.mov``, ``.mkv`` or ``.avi``.
        width, height: size of the frames that will be written (pixels, > 0).
        fps: nominal frame rate (encoder rate control; the time base when ``time_base`` is None).
        time_base: the input stream's time base (:class:`fractions.Fraction`), or ``None``.
        audio_from: the input media file whose other streams are kept (see above), or ``None``.
        codec: video encoder name (``"libx264"``, ``"mpeg4"``, ...); default: the best available.
        input_path: the input file, to refuse overwriting it (``audio_from`` is checked too).

    Raises:
        SinkError: at construction, before any file is created: unsupported extension, output
            folder missing or not writable, output equal to the input, output is a folder,
            unknown encoder, unreadable ``audio_from``, audio that can be neither copied nor
            converted, another job writing ``path``. In :meth:`write` / :meth:`close`: the
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
        self._out = None
        self._in = None
        self._lock: Optional[OutputLock] = None
        self._tmp_id = None
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
        self._avi = ext == ".avi"
        if codec is None:
            codec = "mpeg4" if self._avi else (
                "libx264" if _encoder_available("libx264") else "mpeg4")
        if not _encoder_available(codec):
            raise SinkError(f"video encoder {codec!r} is not available in this PyAV build")

        self._fps = float(fps)
        self._width, self._height = int(width), int(height)
        self._rate = Fraction(self._fps).limit_denominator(1001)
        if time_base is not None and not self._avi:
            self._tb = Fraction(time_base)
            self._use_pts = True
        else:  # no input time base, or AVI (no per-frame timestamps): constant rate 1/fps
            self._tb = 1 / self._rate
            self._use_pts = False
        self._keep_offsets = time_base is not None
        self._last_pts: Optional[int] = None
        self._last_enc_pts: Optional[int] = None
        self._audio_from = Path(audio_from) if audio_from is not None else None
        self._plan = StreamPlan()
        self._kept: Dict[int, _Kept] = {}
        self._packets = None
        self._peek = None
        self._inputs = [p for p in (input_path, audio_from) if p is not None]

        # The streams are decided first (reads the input only), then the output is locked.
        if self._audio_from is not None:
            self._plan = plan_streams(self._audio_from, self._path)
        self._lock = OutputLock(self._path)
        try:
            self._report_leftovers()
            self._tmp = self._choose_temp_name()
            self._open_output(av, codec)
        except SinkError:
            self._discard()
            raise
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise SinkError(f"cannot write video {self._path}: {_reason(exc)}") from None
        except BaseException:
            self._discard()
            raise
        for line in self._plan.messages(self._path):
            log.warning(line)

    # -- opening ---------------------------------------------------------------------------------
    def _report_leftovers(self) -> None:
        lock = self._lock
        if lock is None or lock.stale_pid is None:
            return
        left = [p for p in lock.leftovers()
                if not any(_same_file(p, other) for other in self._inputs)]
        if left:
            log.warning(f"{self._path}: a warpcam job (pid {lock.stale_pid}) stopped without "
                        f"finishing and left {', '.join(p.name for p in left)} beside it; "
                        "not deleted (remove it if it is not yours)")

    def _choose_temp_name(self) -> Path:
        """This job's temporary name: the usual one, or a unique one when that name is taken."""
        first = temp_path_for(self._path)
        if os.path.lexists(first):
            return _unique_temp_path(self._path)
        return first

    def _open_output(self, av, codec: str) -> None:
        # PyAV creates the file only at the first packet; _create_temp makes it exclusively
        # (O_EXCL) just before that.
        self._out = av.open(str(self._tmp), mode="w", format=_FORMATS[self._path.suffix.lower()])
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
        if self._audio_from is not None and self._plan.actions:
            self._open_streams(av)

    def _open_streams(self, av) -> None:
        try:
            self._in = av.open(str(self._audio_from), mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SinkError(f"cannot read the streams of {self._audio_from}: "
                            f"{_reason(exc)}") from None
        demuxed = []
        for index, action in self._plan.actions.items():
            in_stream = self._in.streams[index]
            desc = self._plan.descriptions[index]
            try:
                if action == "attach":
                    self._out.add_attachment(in_stream.name or f"attachment{index}",
                                             in_stream.mimetype or "application/octet-stream",
                                             bytes(in_stream.data))
                    continue
                if action == "drop":
                    continue
                if action == "copy":
                    out_stream = self._out.add_stream_from_template(in_stream)
                else:  # "aac"
                    layout, channels = _aac_layout(av, in_stream)
                    out_stream = self._out.add_stream("aac",
                                                      rate=int(in_stream.codec_context.sample_rate))
                    out_stream.codec_context.layout = layout
                    out_stream.codec_context.bit_rate = (96000 if channels == 1
                                                         else min(64000 * channels, 512000))
            except (av.error.FFmpegError, ValueError) as exc:
                raise SinkError(f"cannot keep the stream {desc} of {self._audio_from} in "
                                f"{self._path}: {_reason(exc)}") from None
            self._kept[index] = _Kept(action, in_stream, out_stream, desc)
            demuxed.append(in_stream)
        if demuxed:
            self._packets = self._in.demux(*demuxed)

    def _create_temp(self) -> None:
        """Create the temporary file, exclusively, under the name the muxer was opened with."""
        if self._tmp_id is not None:
            return
        try:
            tmp, file_id = create_temp_file(self._path, preferred=self._tmp)
        except OSError as exc:
            raise SinkError(f"cannot create the temporary file {self._tmp}: "
                            f"{_reason(exc)}") from None
        if tmp != self._tmp:  # someone made a file of that name since the constructor
            remove_own_file(tmp, file_id)
            raise SinkError(f"cannot write video {self._path}: {self._tmp} appeared while the "
                            "job started (not touched): run it again")
        self._tmp_id = file_id

    # -- properties ------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The final output file (exists only after a successful :meth:`close`)."""
        return self._path

    @property
    def temp_path(self) -> Path:
        """The temporary file being written (created exclusively at the first :meth:`write`)."""
        return self._tmp

    @property
    def lock_path(self) -> Optional[Path]:
        """The lock file held while writing (``None`` once released)."""
        return self._lock.path if self._lock is not None and self._lock.held else None

    @property
    def has_audio(self) -> bool:
        """Whether at least one audio stream is being kept (copied or converted)."""
        return any(k.in_stream.type == "audio" for k in self._kept.values())

    @property
    def stream_plan(self) -> StreamPlan:
        """What happens to each stream of ``audio_from`` besides the main video."""
        return self._plan

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

    def _mux_out(self, kept: _Kept, pkt) -> None:
        if self._avi:
            ts = pkt.dts if pkt.dts is not None else pkt.pts
            if kept.shift is None:
                kept.shift = max(0, -int(ts)) if ts is not None else 0
            if kept.shift:
                if pkt.pts is not None:
                    pkt.pts += kept.shift
                if pkt.dts is not None:
                    pkt.dts += kept.shift
        pkt.stream = kept.out_stream
        self._out.mux(pkt)

    def _next_packet(self):
        """The next input packet of a kept stream, its timestamps continued; ``None`` at the end."""
        while True:
            try:
                pkt = next(self._packets)
            except StopIteration:
                self._packets = None
                return None
            kept = self._kept.get(pkt.stream.index)
            if kept is None:
                continue
            if pkt.size == 0 and pkt.dts is None and pkt.pts is None:  # demuxer's flush packet
                continue
            kept.packets_in += 1
            ts = pkt.dts if pkt.dts is not None else pkt.pts
            if ts is not None:
                jumps = kept.mender.jumps
                off = kept.mender(ts, pkt.duration)
                if off:
                    if pkt.pts is not None:
                        pkt.pts += off
                    if pkt.dts is not None:
                        pkt.dts += off
                if kept.mender.jumps != jumps and jumps == 0 and self._audio_from is not None:
                    tb = pkt.time_base
                    note_timeline_jump(self._audio_from, kept.in_stream.type,
                                       float(kept.mender.first_jump_at * tb) if tb else None)
            return pkt

    def _mux_streams_until(self, seconds: Optional[float]) -> None:
        """Write the kept streams' packets whose time is before ``seconds`` (all for ``None``)."""
        while self._packets is not None or self._peek is not None:
            pkt = self._peek
            if pkt is None:
                pkt = self._next_packet()
                if pkt is None:
                    return
                self._peek = pkt
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            if seconds is not None and ts is not None and pkt.time_base is not None \
                    and float(ts * pkt.time_base) >= seconds:
                return
            self._peek = None
            kept = self._kept[pkt.stream.index]
            if kept.action == "copy":
                self._mux_out(kept, pkt)
                kept.packets_out += 1
            else:
                self._transcode(kept, pkt)

    def _transcode(self, kept: _Kept, pkt) -> None:
        """Decode one packet of ``kept``'s audio and encode it to AAC (``pkt`` None: flush)."""
        import av

        try:
            frames = kept.in_stream.codec_context.decode(pkt)
        except (av.error.FFmpegError, ValueError) as exc:
            raise SinkError(f"cannot convert the audio {kept.desc} of {self._audio_from} to AAC: "
                            f"{_reason(exc)}") from None
        if pkt is not None:
            kept.packets_out += 1
        rate = kept.rate
        for frame in frames:
            if frame.pts is not None and frame.time_base is not None:
                pts = int(round(frame.pts * frame.time_base * rate))
            else:
                pts = kept.next_pts or 0
            if kept.next_pts is not None and pts < kept.next_pts:
                pts = kept.next_pts  # never overlap (the timeline was already continued)
            frame.pts = pts
            frame.time_base = Fraction(1, rate)
            kept.next_pts = pts + frame.samples
            kept.decoded_samples += frame.samples
            for out_pkt in kept.out_stream.encode(frame):
                self._mux_out(kept, out_pkt)
        if pkt is None:
            for out_pkt in kept.out_stream.encode(None):
                self._mux_out(kept, out_pkt)

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        import av

        self._create_temp()
        pts = self._frame_pts(frame)
        try:
            # BGR -> BT.601 limited-range YUV 4:2:0 (what the stream is tagged with) by
            # OpenCV's SIMD conversion: 0.2 ms a 720p frame where swscale's bgr24 path took
            # 5.7 ms, the largest cost of a file job's output thread. Y agrees with swscale's
            # within one level; chroma is the 2 x 2 mean where swscale filters bilinearly
            # (a few levels apart at sharp colour edges, well under the encoder's own error).
            yuv = cv2.cvtColor(_pad_even(np.ascontiguousarray(image)), cv2.COLOR_BGR2YUV_I420)
            vf = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            if self._enc_tb != self._tb:
                pts_enc = int(round(pts * self._tb / self._enc_tb))
                if self._last_enc_pts is not None and pts_enc <= self._last_enc_pts:
                    pts_enc = self._last_enc_pts + 1
                self._last_enc_pts = pts_enc
            else:
                pts_enc = pts
            vf.pts = pts_enc
            vf.time_base = self._enc_tb
            if self._packets is not None or self._peek is not None:
                self._mux_streams_until(float(pts * self._tb) + _AUDIO_LEAD_SECONDS)
            self._out.mux(self._video.encode(vf))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SinkError(f"cannot write video {self._path} at frame {frame.index}: "
                            f"{_reason(exc)}") from None

    def _check_complete(self) -> None:
        for kept in self._kept.values():
            if kept.packets_out != kept.packets_in:
                raise SinkError(f"cannot finish video {self._path}: the stream {kept.desc} has "
                                f"{kept.packets_in} packets but {kept.packets_out} were written")

    def _close(self) -> None:
        import av

        try:
            if self._frames_written == 0:
                raise SinkError(f"no frames were written: {self._path} not created")
            self._create_temp()
            self._out.mux(self._video.encode(None))
            self._mux_streams_until(None)
            for kept in self._kept.values():
                if kept.action == "aac":
                    self._transcode(kept, None)
            self._check_complete()
            self._out.close()
            self._out = None
            st = os.lstat(self._tmp)
            if (st.st_dev, st.st_ino) != tuple(self._tmp_id):
                raise SinkError(f"cannot finish video {self._path}: its temporary file "
                                f"{self._tmp} was replaced by another file (left alone)")
            os.replace(self._tmp, self._path)
            self._tmp_id = None
        except SinkError:
            self._discard()
            raise
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise SinkError(f"cannot finish video {self._path}: {_reason(exc)}") from None
        except BaseException:
            self._discard()
            raise
        finally:
            self._close_input()
            self._release_lock()

    def _abort(self) -> None:
        self._discard()

    def _close_input(self) -> None:
        if self._in is not None:
            try:
                self._in.close()
            except Exception:
                pass
            self._in = None
            # the video source has warned by now if it was going to: the next job warns again
            _forget_timeline_jump(self._audio_from)
        self._packets = None
        self._peek = None

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def _discard(self) -> None:
        """Close everything without caring about errors, remove this job's temporary file (only
        if it is still the one it created) and release the lock."""
        if self._out is not None:
            try:
                self._out.close()
            except Exception:
                pass
            self._out = None
        self._close_input()
        remove_own_file(getattr(self, "_tmp", None), self._tmp_id)
        self._tmp_id = None
        self._release_lock()

    def __repr__(self) -> str:
        return f"VideoFileSink({str(self._path)!r})"
