"""Deprecated location: the sinks live in :mod:`warpcam.realtime.io` (one module per kind).

This module only re-exports them until every import is switched; import from
``warpcam.realtime.io`` instead.
"""
from __future__ import annotations

from warpcam.realtime.io import (ImageSink, NullSink, PreviewSink, Sink, SinkError,  # noqa: F401
                                 TeeSink, VideoFileSink, VirtualCameraSink, draw_hud, hud_box,
                                 open_sink, temp_path_for)

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
