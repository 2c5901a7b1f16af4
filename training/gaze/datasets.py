"""Loaders for public gaze data sets in their own layouts, as pair datasets
(:class:`warpcam.training.gaze.data.StoredPairs`, the interface of :mod:`warpcam.training.gaze.data`).

**Columbia Gaze** (Smith et al., UIST 2013): ``ROOT/<subject>/<subject>_<d>m_<P>P_<V>V_<H>H.jpg``,
e.g. ``0003/0003_2m_-15P_10V_-5H.jpg``: head pose ``P`` (yaw, degrees), vertical gaze ``V`` and
horizontal gaze ``H`` (degrees) in the file name. Pairs: same subject, distance and head pose,
different ``(V, H)``; the change is ``(V_t - V_s, H_t - H_s)``. ``H`` is taken as positive toward
the image +x (the subject's left, warpcam's yaw convention); :data:`COLUMBIA_H_SIGN` flips it.
Eyes are found with mediapipe (:func:`mediapipe_landmarker`, or any ``landmarker(image) -> 478 x 2
or None``) and cropped with the pipeline's eye ROI (:func:`warpcam.core.eyes.eye_crop`); the
target crop is carried over by the eye-corner similarity, as for mined pairs.

**UnityEyes** (Wood et al., ETRA 2016): ``ROOT/<n>.jpg`` with ``ROOT/<n>.json`` holding
``interior_margin_2d``, ``caruncle_2d``, ``iris_2d`` (strings ``"(x, y, z)"``, y up from the
image bottom), ``eye_details.look_vec`` (``"(x, y, z, 0)"``, unit gaze vector, -z toward the
camera), ``head_pose`` and ``lighting_details``. Pairs: renders of the same eye (iris texture
and size), head pose and lighting (UnityEyes' fixed-camera mode, as the seed's data set was
made); angles from the look vectors (pitch ``asin(y)``, yaw ``atan2(x, -z)``, degrees). The crop
is the pipeline rule (:func:`warpcam.core.eyes.roi_affine_for`) on the interior margin (corners
= its extreme points); an eye whose caruncle lies on the image left is mirrored so that every
crop has the right-eye layout.
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from warpcam.core.eyes import EYE_CROP_H as CROP_H, EYE_CROP_W as CROP_W, eye_corners, eye_crop
from warpcam.core.eyes import roi_affine_for
from warpcam.core.geometry import to_crop
from warpcam.training.gaze.data import StoredPairs
from warpcam.training.gaze.mine import _crop, compose, similarity

COLUMBIA_RE = re.compile(r"^(\d+)_(\d+)m_(-?\d+)P_(-?\d+)V_(-?\d+)H\.(jpg|jpeg|png)$", re.I)
COLUMBIA_H_SIGN = 1.0


def parse_columbia_name(name: str) -> Optional[dict]:
    """``{"subject", "distance", "pose", "v", "h"}`` from a Columbia Gaze file name, or None."""
    m = COLUMBIA_RE.match(Path(name).name)
    if not m:
        return None
    return dict(subject=m.group(1), distance=int(m.group(2)), pose=int(m.group(3)),
                v=int(m.group(4)), h=int(m.group(5)))


def mediapipe_landmarker(max_side: int = 1280) -> Callable:
    """``landmarker(image_bgr) -> 478 x 2`` frame-pixel landmarks (None without a face):
    mediapipe on a copy scaled to at most ``max_side`` pixels, landmarks scaled back."""
    from warpcam.realtime.tracker import FaceTracker

    tr = FaceTracker(max_faces=1, static_images=True)

    def run(img):
        s = min(1.0, max_side / max(img.shape[:2]))
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img
        faces = tr.track(small)
        return None if not faces else faces[0].landmarks.astype(np.float64) / s
    return run


def columbia_pairs(root, landmarker: Optional[Callable] = None, max_pairs: Optional[int] = None,
                   seed: int = 0) -> StoredPairs:
    """Pairs from a Columbia Gaze folder (layout in the module docstring)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and parse_columbia_name(p.name))
    if not files:
        raise ValueError(f"{root}: no Columbia Gaze images (<subject>_<d>m_<P>P_<V>V_<H>H.jpg)")
    landmarker = landmarker or mediapipe_landmarker()
    groups = defaultdict(list)
    for p in files:
        info = parse_columbia_name(p.name)
        groups[(info["subject"], info["distance"], info["pose"])].append((p, info))
    rng = np.random.default_rng(seed)
    out = []
    for key, members in groups.items():
        imgs, lms = [], []
        for p, info in members:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            pts = landmarker(img) if img is not None else None
            imgs.append(img)
            lms.append(pts)
        for a in range(len(members)):
            for b in range(len(members)):
                if a == b or lms[a] is None or lms[b] is None:
                    continue
                ia, ib = members[a][1], members[b][1]
                if (ia["v"], ia["h"]) == (ib["v"], ib["h"]):
                    continue
                for side in ("right", "left"):
                    A, flip, crop_pts, eye_w, _ = eye_crop(lms[a], side)
                    S = similarity(eye_corners(lms[a], side), eye_corners(lms[b], side))
                    yaw = COLUMBIA_H_SIGN * (ib["h"] - ia["h"])
                    out.append(dict(src=_crop(imgs[a], A, flip), tgt=_crop(imgs[b], compose(S, A), flip),
                                    angle=np.array([ib["v"] - ia["v"], -yaw if flip else yaw], np.float32),
                                    landmarks=crop_pts, iris_d=_iris_d(lms[a], side) / (2 * eye_w / CROP_W)))
    if max_pairs is not None and len(out) > max_pairs:
        out = [out[i] for i in sorted(rng.choice(len(out), max_pairs, replace=False))]
    return _stored(out, "columbia", root)


def _iris_d(pts, side):
    from warpcam.realtime.tracker import iris_measures
    return float(iris_measures(pts)[0][0 if side == "right" else 1])


def _stored(items, source, root):
    if not items:
        raise ValueError(f"{root}: no pairs could be formed")
    data = {k: np.stack([np.asarray(it[k]) for it in items]) for k in
            ("src", "tgt", "angle", "landmarks", "iris_d")}
    return StoredPairs(data, source=source)


def _vec(s: str) -> np.ndarray:
    return np.array([float(v) for v in s.strip("()[] ").split(",")], np.float64)


def _chain(pts: np.ndarray, a: np.ndarray, b: np.ndarray, upper: bool, m: int = 9) -> np.ndarray:
    """``m`` points from corner ``a`` to corner ``b`` along the upper (or lower) side of a margin
    polygon, by linear interpolation over the position along the corner axis."""
    axis = (b - a) / np.linalg.norm(b - a)
    normal = np.array([-axis[1], axis[0]])  # image down
    t = (pts - a) @ axis / np.linalg.norm(b - a)
    side = (pts - a) @ normal
    sel = side <= 0 if upper else side >= 0
    tt, ss = t[sel], side[sel]
    order = np.argsort(tt)
    tt = np.concatenate([[0.0], tt[order], [1.0]])
    ss = np.concatenate([[0.0], ss[order], [0.0]])
    q = np.linspace(0, 1, m)
    s_q = np.interp(q, tt, ss)
    return a + np.outer(q, b - a) + np.outer(s_q, normal)


def unityeyes_record(json_path: Path, image_shape) -> dict:
    """Parse one UnityEyes JSON into image-pixel geometry and gaze angles."""
    d = json.loads(Path(json_path).read_text())
    h = image_shape[0]

    def pts(key):
        a = np.array([_vec(s)[:2] for s in d[key]])
        a[:, 1] = h - a[:, 1]  # UnityEyes y runs up from the image bottom
        return a
    margin, iris, car = pts("interior_margin_2d"), pts("iris_2d"), pts("caruncle_2d")
    look = _vec(d["eye_details"]["look_vec"])[:3]
    look = look / np.linalg.norm(look)
    pitch = math.degrees(math.asin(float(np.clip(look[1], -1, 1))))
    yaw = math.degrees(math.atan2(look[0], -look[2]))
    key = json.dumps([d.get("head_pose"), d["eye_details"].get("iris_texture"),
                      d["eye_details"].get("iris_size"), d.get("lighting_details")], sort_keys=True)
    return dict(margin=margin, iris=iris, caruncle=car, gaze=np.array([pitch, yaw]), key=key)


def unityeyes_crop(rec: dict) -> tuple:
    """``(A, flip, landmarks (19, 2) in network crop pixels, iris_d crop px, corners)``."""
    m = rec["margin"]
    a, b = m[np.argmin(m[:, 0])], m[np.argmax(m[:, 0])]
    inner_right = np.linalg.norm(rec["caruncle"].mean(0) - b) < np.linalg.norm(rec["caruncle"].mean(0) - a)
    flip = not inner_right
    eye_w = float(np.linalg.norm(b - a))
    angle = math.atan2(b[1] - a[1], b[0] - a[0])
    A = roi_affine_for(m.mean(0), angle, eye_w, CROP_W, CROP_H)
    outer, inner = (a, b) if inner_right else (b, a)
    up = _chain(m, outer, inner, upper=True) if inner_right else _chain(m, inner, outer, upper=True)[::-1]
    lo = _chain(m, outer, inner, upper=False) if inner_right else _chain(m, inner, outer, upper=False)[::-1]
    pts = to_crop(np.concatenate([up, lo, rec["iris"].mean(0, keepdims=True)]), A)
    if flip:
        pts[:, 0] = (CROP_W - 1) - pts[:, 0]
    iris_d = float(np.ptp(rec["iris"][:, 0])) / (2 * eye_w / CROP_W)
    return A, flip, pts.astype(np.float32), iris_d, (a, b)


def unityeyes_pairs(root, max_pairs: Optional[int] = None, seed: int = 0) -> StoredPairs:
    """Pairs from a UnityEyes folder (layout in the module docstring)."""
    root = Path(root)
    jsons = sorted(root.glob("*.json"), key=lambda p: (len(p.stem), p.stem))
    recs = []
    for j in jsons:
        img_path = next((j.with_suffix(s) for s in (".jpg", ".png") if j.with_suffix(s).exists()), None)
        if img_path is None:
            continue
        img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        rec = unityeyes_record(j, img.shape)
        rec["image"] = img
        recs.append(rec)
    if not recs:
        raise ValueError(f"{root}: no UnityEyes renders (N.jpg + N.json)")
    groups = defaultdict(list)
    for r in recs:
        groups[r["key"]].append(r)
    out = []
    for members in groups.values():
        crops = [unityeyes_crop(r) for r in members]
        for a in range(len(members)):
            for b in range(len(members)):
                if a == b:
                    continue
                A, flip, pts, iris_d, cor = crops[a]
                S = similarity(cor, crops[b][4])
                d = members[b]["gaze"] - members[a]["gaze"]
                out.append(dict(src=_crop(members[a]["image"], A, flip),
                                tgt=_crop(members[b]["image"], compose(S, A), flip),
                                angle=np.array([d[0], -d[1] if flip else d[1]], np.float32),
                                landmarks=pts, iris_d=iris_d))
    if max_pairs is not None and len(out) > max_pairs:
        rng = np.random.default_rng(seed)
        out = [out[i] for i in sorted(rng.choice(len(out), max_pairs, replace=False))]
    return _stored(out, "unityeyes", root)
