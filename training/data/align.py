"""Face alignment and the mouth crop of the face datasets, defined once.

Convention block:

- Landmarks are mediapipe FaceMesh's 478 points in image pixels (x right, y down, pixel centres
  at integers); "right"/"left" are the **subject's** sides (the right eye is on the image left).
- An affine ``crop_to_frame`` (2 x 3) maps crop pixel ``(u, v)`` to image pixel ``(x, y)``, as in
  :mod:`warpcam.core.geometry`.
- **Template** positions are fractions of the crop side, ``(0, 0)`` the crop's top-left
  *corner* and ``(1, 1)`` its bottom-right corner, so that every crop size shows the same
  picture: crop pixel ``u = fx * size - 0.5``.

**Aligned face** (:func:`align_affine`): the similarity (rotation, uniform scale, shift; no
reflection) that maps the three points

- right eye centre (mean of the eye contour, :func:`warpcam.core.eyes.eye_roi`),
- left eye centre,
- mouth centre (mean of the lip landmarks without the corners, :func:`warpcam.core.mouth.mouth_roi`)

onto :data:`TEMPLATE` in the least-squares sense (closed form, complex numbers). The template
was set from the median mediapipe face of 100 frontal LFW and CelebA photos: the mouth centre
lies 1.10 eye distances below the eye midpoint (chin 1.80, forehead landmark 10 at -0.83), so an
eye distance of 0.30 of the crop puts the forehead near 0.13 and the chin near 0.92 of the crop
height. A mouth that opens moves the mouth centre down and so shrinks the face by a few percent
(the residual is recorded as ``align_rms``). Sizes 64 and 128 by default, 256 on request.
Outside the image the border is replicated. Downscaling is anti-aliased (warp at an integer
multiple of the size, then area-resize).

**Mouth crop** (:func:`mouth_box`, KeepSmiling's ``our_image_cropper``, seed 003, on the MTFL
five points): ``f0`` = midpoint of the mouth corners, ``b = f0 - nose tip``, ``e = corner - f0``
(the corner toward image +x), ``a = sqrt(|e|^2 + |b|^2)``, ``a_vec = a e / |e|``; the
axis-aligned box spanned by ``f0 - b - a_vec`` and ``f0 + b + a_vec``, clamped to the image,
resized to 64 x 64 without keeping the aspect ratio. For a frontal face that is ``2 a`` wide and
``2 |b|`` tall, from the nose tip's height down as far below the mouth. Nose tip = FaceMesh 1,
corners = 61 and 291.
"""
from __future__ import annotations

import math
from typing import Tuple

import cv2
import numpy as np

from warpcam.core import landmarks as lm
from warpcam.core.eyes import eye_roi
from warpcam.core.geometry import apply_affine, invert_affine, similarity_fit  # noqa: F401
from warpcam.core.mouth import mouth_box_points, mouth_corners, mouth_roi  # noqa: F401

#: Template positions (fractions of the crop side; module docstring).
TEMPLATE = {"right_eye": (0.35, 0.38), "left_eye": (0.65, 0.38), "mouth": (0.50, 0.71)}
TEMPLATE_ORDER = ("right_eye", "left_eye", "mouth")
#: Aligned face sizes written by default, and the one added by ``--size-256``.
FACE_SIZES = (64, 128)
LARGE_FACE_SIZE = 256
#: KeepSmiling's mouth crop size.
MOUTH_SIZE = 64
#: Small images are upscaled to at least this side and given a replicated border of this share
#: of the (upscaled) side on every edge before tracking (shared/data/train/README.md).
TRACK_MIN_SIDE = 256
TRACK_BORDER = 0.25


def face_points(landmarks: np.ndarray) -> np.ndarray:
    """``3 x 2`` float64: right eye centre, left eye centre, mouth centre (image pixels)."""
    p = np.asarray(landmarks, np.float64)[:, :2]
    return np.stack([eye_roi(p, "right")[0], eye_roi(p, "left")[0], mouth_roi(p)[0]])


def template_points(size: int) -> np.ndarray:
    """``3 x 2`` template positions in crop pixels of a ``size x size`` crop."""
    return np.array([TEMPLATE[k] for k in TEMPLATE_ORDER], np.float64) * size - 0.5


def align_affine(landmarks: np.ndarray, size: int) -> np.ndarray:
    """``crop_to_frame`` (2 x 3) of the aligned ``size x size`` face (module docstring)."""
    frame_to_crop = similarity_fit(face_points(landmarks), template_points(size))
    return invert_affine(frame_to_crop)


def align_residual(landmarks: np.ndarray) -> float:
    """RMS distance of the three points from the template after alignment, in eye distances
    of the template (0 = a perfect fit)."""
    size = 100
    m = similarity_fit(face_points(landmarks), template_points(size))
    t = template_points(size)
    d = apply_affine(m, face_points(landmarks)) - t
    eye = np.linalg.norm(t[1] - t[0])
    return float(np.sqrt((d ** 2).sum(axis=1).mean()) / eye)


def warp(image: np.ndarray, crop_to_frame: np.ndarray, w: int, h: int) -> np.ndarray:
    """Sample a ``h x w`` crop of ``image`` under ``crop_to_frame`` (bilinear, border
    replicated); a crop that shrinks the image by more than 1.5x is warped at an integer
    multiple of its size and area-resized (no aliasing)."""
    a = np.asarray(crop_to_frame, np.float64)
    scale = math.sqrt(abs(a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]))  # image px per crop px
    k = int(min(max(math.floor(scale), 1), 4)) if scale > 1.5 else 1
    if k > 1:
        # crop pixel u of the large crop sits at (u + 0.5) / k - 0.5 of the small one
        s = np.array([[1.0 / k, 0.0, 0.5 / k - 0.5], [0.0, 1.0 / k, 0.5 / k - 0.5]])
        big = np.hstack([a[:, :2] @ s[:, :2], (a[:, :2] @ s[:, 2] + a[:, 2])[:, None]])
        out = cv2.warpAffine(image, big, (w * k, h * k), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        return cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.warpAffine(image, a, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def aligned_face(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The aligned ``size x size`` face crop."""
    return warp(image, align_affine(landmarks, size), size, size)


def mouth_box(landmarks: np.ndarray, image_shape=None,
              bounds: Tuple[float, float, float, float] = None) -> Tuple[np.ndarray, bool]:
    """KeepSmiling's mouth box ``(x0, y0, x1, y1)`` (image pixels, box edges) and whether
    clamping changed it. It is clamped to ``bounds`` (``x0, y0, x1, y1`` edges) or else to the
    ``image_shape`` (``-0.5 .. W - 0.5``); neither given: not clamped."""
    p = np.asarray(landmarks, np.float64)[:, :2]
    c_r, c_l = mouth_corners(p)
    return mouth_box_points(p[lm.NOSE_TIP], c_r, c_l, image_shape, bounds)


def box_affine(box, w: int, h: int) -> np.ndarray:
    """``crop_to_frame`` mapping a ``h x w`` crop onto the box ``(x0, y0, x1, y1)`` (edges)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = max(x1 - x0, 1e-3) / w, max(y1 - y0, 1e-3) / h
    return np.array([[sx, 0.0, x0 + 0.5 * sx], [0.0, sy, y0 + 0.5 * sy]])


def mouth_crop(image: np.ndarray, landmarks: np.ndarray, size: int = MOUTH_SIZE,
               bounds=None) -> Tuple[np.ndarray, bool]:
    """``(size x size crop, clamped)`` by KeepSmiling's rule (module docstring)."""
    box, clamped = mouth_box(landmarks, image.shape, bounds)
    return warp(image, box_affine(box, size, size), size, size), clamped


def prepare_for_tracking(image: np.ndarray, min_side: int = TRACK_MIN_SIDE,
                         border: float = TRACK_BORDER) -> Tuple[np.ndarray, float, int]:
    """``(image for the tracker, scale, pad)``: an image whose longer side is under
    ``min_side`` is upscaled (bicubic) to it and gets a replicated border of ``border`` times
    that side on every edge (a tight crop needs context for the face detector). A point ``p``
    of the input is ``q = (p + 0.5) * scale - 0.5 + pad`` in the result (:func:`to_input`
    undoes it). Greyscale becomes 3 channels."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    side = max(h, w)
    if side >= min_side:
        return image, 1.0, 0
    scale = min_side / side
    up = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    pad = int(round(border * max(up.shape[:2])))
    return cv2.copyMakeBorder(up, pad, pad, pad, pad, cv2.BORDER_REPLICATE), scale, pad


def to_input(points: np.ndarray, scale: float, pad: int) -> np.ndarray:
    """Points of a :func:`prepare_for_tracking` image back in the input image's pixels."""
    return (np.asarray(points, np.float64) - pad + 0.5) / scale - 0.5
