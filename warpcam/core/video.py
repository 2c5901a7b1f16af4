"""Decoding a video file upright, defined once for the app's file source, the pair miner and
the dataset builder.

PyAV stores a display-matrix rotation on each decoded frame (``VideoFrame.rotation``, degrees
counter-clockwise); players turn the picture by it (FFmpeg's ``autorotate``), and so does
warpcam, in multiples of 90 degrees.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import cv2
import numpy as np


def rotate_code(rotation: float) -> Optional[int]:
    """cv2.rotate code that turns a picture stored with a display-matrix rotation of
    ``rotation`` degrees (counter-clockwise) upright, or ``None`` for no turn."""
    quarter = int(round(float(rotation or 0) / 90.0)) % 4
    return {0: None, 1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180,
            3: cv2.ROTATE_90_CLOCKWISE}[quarter]


def decode_upright(path, max_frames: Optional[int] = None
                   ) -> Iterator[Tuple[int, float, np.ndarray]]:
    """``(index, time seconds, H x W x 3 uint8 BGR)`` of every frame of the first video stream
    of ``path``, in decode order, upright (the first frame's rotation applies to all), at most
    ``max_frames``. A frame without a timestamp gets ``index / 30``.

    Raises:
        av.error.FFmpegError: a file PyAV cannot open or decode.
    """
    import av

    with av.open(str(path)) as c:
        rot = None
        for i, fr in enumerate(c.decode(video=0)):
            if max_frames is not None and i >= max_frames:
                break
            if i == 0:
                rot = rotate_code(getattr(fr, "rotation", 0))
            img = fr.to_ndarray(format="bgr24")
            if rot is not None:
                img = np.ascontiguousarray(cv2.rotate(img, rot))
            t = float(fr.time) if fr.time is not None else i / 30.0
            yield i, t, img
