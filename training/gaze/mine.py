"""Mine gaze pairs from ordinary face videos.

    python -m warpcam.training.gaze.mine --videos a.mp4 b.mp4 --out /tmp/warpcam/mined.npz

A pair is two frames of the same tracked person in which one eye has the same head pose
(yaw, pitch and roll within ``--max-pose`` degrees), the same size (corner-to-corner width
within 5 %) and the same openness (within ``--max-open``), both open and with a reliable iris,
and whose irises point in different directions (``--min-angle`` to ``--max-angle`` degrees).

- The **source** crop is the pipeline's eye ROI of the first frame
  (:func:`warpcam.core.eyes.eye_crop`); the **target** crop is the second frame through the same
  ROI carried over by the similarity that maps the first frame's eye corners onto the second's,
  so both crops show the eye in the same eye-corner frame (small head motion cancels out).
- The **angle difference** comes from the iris centres, measured in the eye-corner frame of
  each frame with the pipeline's eyeball model (:func:`warpcam.core.eyes.eye_in_head_angles`):
  ``yaw = asin(x / r)``, ``pitch = -asin(y / r)`` with ``(x, y)`` the iris offset from the
  corner midpoint along and across the eye axis and ``r = 12 / 11.7 * iris diameter``
  (:data:`warpcam.core.eyes.EYEBALL_PER_IRIS`).

Two passes over each video: tracking (landmarks only), then decoding again to cut just the
crops the chosen pairs need (a long video never sits in memory). Frames are decoded with PyAV
and turned upright when the file carries a display-matrix rotation (phone videos), as the
app's video source does.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

import cv2
import numpy as np
from warpcam.training.gaze.data import save_pairs

from warpcam.core.eyes import EYE_CROP_H as CROP_H
from warpcam.core.eyes import EYE_CROP_W as CROP_W
from warpcam.core.eyes import eye_corners, eye_crop, eye_in_head_angles
from warpcam.core.video import decode_upright


@dataclass
class EyeObs:
    """One eye in one frame (frame pixels)."""

    frame: int
    track: int
    side: str
    k: int
    landmarks: np.ndarray  # 478 x 2
    head: np.ndarray  # yaw, pitch, roll
    openness: float
    iris_conf: float
    iris_d: float
    eye_w: float
    gaze: np.ndarray  # (pitch, yaw) degrees, eye in head, yaw toward image +x


def similarity(src_pts: tuple, dst_pts: tuple) -> np.ndarray:
    """2 x 3 similarity mapping the two points ``src_pts`` onto ``dst_pts``."""
    (a1, b1), (a2, b2) = src_pts, dst_pts
    z1 = complex(*(b1 - a1))
    z2 = complex(*(b2 - a2))
    m = z2 / z1
    lin = np.array([[m.real, -m.imag], [m.imag, m.real]])
    off = a2 - lin @ a1
    return np.hstack([lin, off[:, None]])


def compose(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Affine ``s o a`` (2 x 3 each)."""
    return np.hstack([s[:, :2] @ a[:, :2], (s[:, :2] @ a[:, 2] + s[:, 2])[:, None]])


def observe(frames: Iterable, max_faces: int = 2, tracker=None) -> List[EyeObs]:
    """Pass 1: track every frame (smoothed, video mode) and record every eye."""
    from warpcam.realtime.tracker import FaceTracker

    obs = []
    own = tracker is None
    tr = tracker or FaceTracker(max_faces=max_faces)
    try:
        for i, img in enumerate(frames):
            for f in tr.track(img, i / 30.0):
                for k, side in enumerate(("right", "left")):
                    a, b = eye_corners(f.landmarks, side)
                    ew = float(np.linalg.norm(b - a))
                    obs.append(EyeObs(i, f.track_id, side, k, f.landmarks.copy(),
                                      np.array([f.yaw, f.pitch, f.roll]),
                                      float(f.eye_openness[k]), float(f.iris_confidence[k]),
                                      float(f.iris_diameter_px[k]), ew,
                                      eye_in_head_angles(f.landmarks, side,
                                                         f.iris_diameter_px[k])))
    finally:
        if own:
            tr.close()
    return obs


def choose_pairs(obs: List[EyeObs], rng: np.random.Generator, max_pose: float = 2.5,
                 max_open: float = 0.05, min_angle: float = 2.0, max_angle: float = 30.0,
                 min_open: float = 0.2, min_eye_px: float = 18.0, max_per_eye: int = 1500,
                 min_gap: int = 2) -> list:
    """Index pairs ``(i, j)`` into ``obs`` that satisfy the matching rules (module docstring)."""
    groups = {}
    for n, o in enumerate(obs):
        if (o.openness >= min_open and o.iris_conf >= 0.6 and o.eye_w >= min_eye_px
                and abs(o.head[0]) < 30 and abs(o.head[1]) < 30):
            groups.setdefault((o.track, o.side), []).append(n)
    pairs = []
    for key, idx in groups.items():
        if len(idx) < 2:
            continue
        idx = np.array(idx)
        head = np.stack([obs[n].head for n in idx])
        op = np.array([obs[n].openness for n in idx])
        ew = np.array([obs[n].eye_w for n in idx])
        gz = np.stack([obs[n].gaze for n in idx])
        fr = np.array([obs[n].frame for n in idx])
        ok = ((np.abs(head[:, None] - head[None]) < max_pose).all(-1)
              & (np.abs(op[:, None] - op[None]) < max_open)
              & (np.abs(ew[:, None] / ew[None] - 1) < 0.05)
              & (np.abs(fr[:, None] - fr[None]) >= min_gap))
        dg = gz[None] - gz[:, None]  # target - source
        mag = np.hypot(dg[..., 0], dg[..., 1])
        ok &= (mag >= min_angle) & (np.abs(dg).max(-1) <= max_angle)
        ii, jj = np.nonzero(ok)
        if len(ii) > max_per_eye:
            sel = rng.choice(len(ii), max_per_eye, replace=False)
            ii, jj = ii[sel], jj[sel]
        pairs += [(int(idx[a]), int(idx[b])) for a, b in zip(ii, jj)]
    return pairs


def _crop(img: np.ndarray, A: np.ndarray, flip: bool) -> np.ndarray:
    """41 x 51 uint8 RGB crop through ``A`` (crop -> frame), mirrored when ``flip``."""
    out = cv2.warpAffine(img, A, (CROP_W, CROP_H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    if flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out[..., ::-1])


def build_pairs(frames: Iterable, obs: List[EyeObs], pairs: list) -> list:
    """Pass 2: cut the source and target crops of ``pairs`` from ``frames`` (decoded again)."""
    need = {}  # frame -> list of (pair number, role, affine, flip)
    items = []
    for p, (i, j) in enumerate(pairs):
        s, t = obs[i], obs[j]
        A, flip, crop_pts, _, _ = eye_crop(s.landmarks, s.side)
        S = similarity(eye_corners(s.landmarks, s.side), eye_corners(t.landmarks, t.side))
        d = t.gaze - s.gaze
        angle = np.array([d[0], -d[1] if flip else d[1]], np.float32)
        scale = 2.0 * s.eye_w / CROP_W
        items.append(dict(angle=angle, landmarks=crop_pts, iris_d=s.iris_d / scale,
                          src=None, tgt=None))
        need.setdefault(s.frame, []).append((p, "src", A, flip))
        need.setdefault(t.frame, []).append((p, "tgt", compose(S, A), flip))
    for f, img in enumerate(frames):
        for p, role, A, flip in need.get(f, ()):
            items[p][role] = _crop(img, A, flip)
    return [it for it in items if it["src"] is not None and it["tgt"] is not None]


def video_fps(path) -> Optional[float]:
    """Frame rate the first video stream of ``path`` declares (None when it declares none)."""
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        rate = st.average_rate or st.guessed_rate or st.base_rate
        return float(rate) if rate else None


def video_frames(path, max_frames: Optional[int] = None) -> Iterable[np.ndarray]:
    """BGR uint8 frames of a video file (PyAV), in order, upright (display-matrix rotation
    undone, :func:`warpcam.core.video.decode_upright`), at most ``max_frames`` of them."""
    for _, _, img in decode_upright(path, max_frames):
        yield img


def mine_video(path, rng: np.random.Generator, max_faces: int = 2,
               max_frames: Optional[int] = None, **rules) -> list:
    """Pairs (module docstring) from the first ``max_frames`` frames (all by default) of one
    video file."""
    obs = observe(video_frames(path, max_frames), max_faces=max_faces)
    pairs = choose_pairs(obs, rng, **rules)
    return build_pairs(video_frames(path, max_frames), obs, pairs)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Mine same-eye, same-pose gaze pairs from videos "
                                 "into an .npz for `warpcam.training.gaze.train --mined`.")
    ap.add_argument("--videos", nargs="+", required=True, help="face videos")
    ap.add_argument("--out", required=True, help="output .npz (keep it out of the repository)")
    ap.add_argument("--max-pose", type=float, default=2.5, help="head pose match, degrees")
    ap.add_argument("--max-open", type=float, default=0.05, help="openness match (unitless)")
    ap.add_argument("--min-angle", type=float, default=2.0, help="smallest gaze change, degrees")
    ap.add_argument("--max-angle", type=float, default=30.0, help="largest gaze change, degrees")
    ap.add_argument("--max-per-eye", type=int, default=1500,
                    help="most pairs per tracked eye and video")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    allp = []
    for v in a.videos:
        ps = mine_video(v, rng, max_pose=a.max_pose, max_open=a.max_open, min_angle=a.min_angle,
                        max_angle=a.max_angle, max_per_eye=a.max_per_eye)
        print(f"{Path(v).name}: {len(ps)} pairs")
        allp += ps
    if not allp:
        raise SystemExit("no pairs found")
    save_pairs(a.out, allp, source="mined", videos=np.array([Path(v).name for v in a.videos]))
    ang = np.stack([p["angle"] for p in allp])
    print(f"{len(allp)} pairs in {time.perf_counter() - t0:.0f} s -> {a.out}; |angle| median "
          f"{np.median(np.hypot(ang[:, 0], ang[:, 1])):.1f} deg")


if __name__ == "__main__":
    main()
