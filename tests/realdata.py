"""Locations of the shared real-face material and helpers to skip when it is absent.

The material lives beside the checkout in ``../shared/data/real/`` (evaluation only: it is
never copied into the repository)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
VIDEOS = REAL / "videos"


def video(name: str) -> Path:
    """Path of a shared video, or skip the test with the reason."""
    p = VIDEOS / name
    if not p.exists():
        pytest.skip(f"real test video {p} not present (../shared/data/real is evaluation "
                    "material beside the checkout)")
    return p


def read_frames(name: str, every: int = 1, limit=None) -> list:
    """Decoded BGR frames of a shared video (every ``every``-th, at most ``limit``)."""
    return list(_read_frames(str(video(name)), every, limit))


@lru_cache(maxsize=8)
def _read_frames(path: str, every: int, limit) -> tuple:
    import av

    out = []
    with av.open(path) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % every == 0:
                out.append(f.to_ndarray(format="bgr24"))
                if limit is not None and len(out) >= limit:
                    break
    return tuple(out)


@lru_cache(maxsize=1)
def astronaut_bgr() -> np.ndarray:
    """The scikit-image astronaut photo (public domain), 512 x 512 BGR uint8."""
    import cv2
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
