"""Sources and sinks: the first and the last stage of the frame path (``../shared/DESIGN.md``).

One module per kind, one shared base each (:mod:`warpcam.realtime.io.base`):

========================  =========================================================================
module                    what
========================  =========================================================================
``base``                  :class:`Source`, :class:`Sink`, :class:`SourceError`,
                          :class:`SinkError`, :func:`to_bgr8`, extensions, temporary names
``slot``                  :class:`LatestSlot`, the one "newest frame wins" hand-over between threads
``video``                 :class:`VideoFileSource` (PyAV decode, every timestamp kept)
``webcam``                :class:`WebcamSource` (OpenCV capture, grabber thread, newest frame only)
``reconnect``             :class:`ReconnectingSource`, :class:`StatusFrame`, :func:`camera_lost_image`
``images``                :class:`ImageSource`, :class:`ImageSink`
``videofile``             :class:`VideoFileSink` (PyAV encode, other streams kept, own temp file +
                          lock + rename), :func:`plan_streams`
``vcam``                  :class:`VirtualCameraSink` (pyvirtualcam)
``preview``               :class:`PreviewSink`, its HUD (:func:`draw_hud`, :func:`hud_lines`) and
                          keys (:func:`handle_key`)
``null``                  :class:`NullSink`, :class:`TeeSink`
========================  =========================================================================

:func:`open_source` and :func:`open_sink` pick them from a command line's arguments.

Every failure a user can cause (missing file, not a video, truncated file, unplugged webcam, no
virtual camera, no display, missing output folder) is raised as :class:`SourceError` or
:class:`SinkError` with a one-line message that names the file or device and says why; no raw
PyAV or OpenCV exception leaves this package.

Example:
    >>> with open_source("in.mp4") as src, open_sink("out.mp4", source=src) as sink:  # doctest: +SKIP
    ...     for frame in src:
    ...         sink.write(frame, frame.image)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from warpcam.realtime.io.base import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, OutputLock, PathLike,
                                      Sink, SinkError, Source, SourceError, _is_image_path,
                                      create_temp_file, lock_path_for, remove_own_file,
                                      temp_path_for, to_bgr8)
from warpcam.realtime.io.images import ImageSink, ImageSource
from warpcam.realtime.io.null import NullSink, TeeSink
from warpcam.realtime.io.preview import PreviewSink, draw_hud, handle_key, hud_box, hud_lines
from warpcam.realtime.io.reconnect import ReconnectingSource, StatusFrame, camera_lost_image
from warpcam.realtime.io.slot import LatestSlot, SlotClosed
from warpcam.realtime.io.vcam import VirtualCameraSink
from warpcam.realtime.io.video import VideoFileSource
from warpcam.realtime.io.videofile import StreamPlan, VideoFileSink, plan_streams
from warpcam.realtime.io.webcam import WebcamSource

__all__ = [
    # base
    "Source", "Sink", "SourceError", "SinkError", "to_bgr8", "temp_path_for",
    "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS",
    # one job per output file, temporary files of its own
    "OutputLock", "lock_path_for", "create_temp_file", "remove_own_file",
    # the hand-over between threads
    "LatestSlot", "SlotClosed",
    # sources
    "VideoFileSource", "WebcamSource", "ImageSource", "ReconnectingSource", "StatusFrame",
    "camera_lost_image", "open_source",
    # sinks
    "VideoFileSink", "VirtualCameraSink", "PreviewSink", "ImageSink", "NullSink", "TeeSink",
    "draw_hud", "hud_box", "hud_lines", "handle_key", "open_sink",
    # what a video file sink keeps of its input's other streams
    "StreamPlan", "plan_streams",
]


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


def open_sink(output: Optional[PathLike], *, source: Source, preview: bool = False) -> Sink:
    """Open the sink a command line names, sized and timed like ``source``.

    - ``None`` -> :class:`VirtualCameraSink` (the source's size, its fps or 30);
    - ``"null"`` -> :class:`NullSink`;
    - a path ending in ``.mp4 .mov .mkv .avi`` -> :class:`VideoFileSink`; for a
      :class:`~warpcam.realtime.io.VideoFileSource` it gets the input's time base (same
      timestamps) and, when the input has audio or any other stream, ``audio_from=source.path``
      (every stream besides the edited video is kept: copied, or audio converted to AAC where
      the container cannot hold it; see :func:`~warpcam.realtime.io.videofile.plan_streams`);
    - for an :class:`~warpcam.realtime.io.ImageSource`: a path with an image extension or a folder
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
                if source.audio_stream_present or source.other_streams:
                    kwargs["audio_from"] = source.path  # every stream besides the video
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
