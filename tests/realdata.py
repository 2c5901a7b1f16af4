"""Locations of the shared real-face material and helpers to skip when it is absent.

The material lives beside the checkout in ``../shared/data/real/`` (evaluation only: it is
never copied into the repository)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
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


def astronaut_clip(dst: Path, frames: int = 540, fps: int = 30) -> Path:
    """A video of the public-domain astronaut photo (enlarged 1.6x, the 512 x 512 around her
    face, as a video call frames it) swaying slowly (a few pixels and about a
    degree, period 3 s), H.264 ``yuv420p``, ``frames`` frames at ``fps``: live input for tests
    whose pictures may end up in the README (shared videos may not)."""
    import av

    big = cv2.resize(astronaut_bgr(), None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC)
    wall = [float(v) for v in np.median(big[:8, 200:700].reshape(-1, 3), axis=0)]
    big = cv2.copyMakeBorder(big, 110, 0, 0, 0, cv2.BORDER_CONSTANT, value=wall)  # more wall
    big[:140] = cv2.GaussianBlur(big[:140], (0, 0), 6)  # no seam where the photo starts
    img = np.ascontiguousarray(big[0:512, 128:640])  # 512 x 512 around the face, as a call
    h, w = img.shape[:2]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(dst), "w") as o:
        s = o.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for k in range(frames):
            ph = 2 * np.pi * k / (3 * fps)
            M = cv2.getRotationMatrix2D((w / 2, h / 2), 1.0 * np.sin(ph), 1.0)
            M[:, 2] += (4 * np.sin(ph), 2 * np.cos(ph))
            f = cv2.warpAffine(img, M, (w, h), borderMode=cv2.BORDER_REPLICATE)
            o.mux(s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")))
        o.mux(s.encode(None))
    return dst


def trim_video(src: Path, dst: Path, frames: int) -> int:
    """The first ``frames`` frames of the video ``src`` re-encoded into ``dst`` (H.264
    ``yuv420p`` at the source's frame rate, no audio; its folder is created); returns the
    frames written."""
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        vs = i.streams.video[0]
        s = o.add_stream("libx264", rate=vs.average_rate or 25)
        s.width, s.height, s.pix_fmt = vs.codec_context.width, vs.codec_context.height, "yuv420p"
        for k, f in enumerate(i.decode(vs)):
            if k >= frames:
                break
            o.mux(s.encode(av.VideoFrame.from_ndarray(f.to_ndarray(format="bgr24"),
                                                      format="bgr24")))
            n += 1
        o.mux(s.encode(None))
    return n
