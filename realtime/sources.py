"""Deprecated location: the sources live in :mod:`warpcam.realtime.io` (one module per kind).

This module only re-exports them until every import is switched; import from
``warpcam.realtime.io`` instead.
"""
from __future__ import annotations

from warpcam.realtime.io import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ImageSource,  # noqa: F401
                                 ReconnectingSource, Source, SourceError, StatusFrame,
                                 VideoFileSource, WebcamSource, camera_lost_image, open_source,
                                 to_bgr8)

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
