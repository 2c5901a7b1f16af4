"""Mouth geometry, defined once: the mouth frame and the mouth ROI rule.

Convention: mediapipe FaceMesh landmarks in frame pixels (x right, y down). The mouth frame runs
from the subject's right mouth corner (61) to the left one (291), which is image +x for a camera
facing the subject. The ROI is centred on the mean of the lip landmarks (corners excluded),
aligned with the corners, ``MOUTH_ROI_WIDTH x MOUTH_ROI_HEIGHT`` mouth widths: lips, cheeks and
nasolabial folds (used by the landmark smile; DeepWarp's smile model, seed 000, crops the face).
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from warpcam.core import landmarks as lm

MOUTH_ROI_WIDTH = 2.2
MOUTH_ROI_HEIGHT = 1.7

#: Lip landmarks that define the mouth centre (outer lips, the middle of the inner lips; the
#: corners are left out), sorted.
LIPS_INDEX: List[int] = sorted(
    set(lm.LIPS_OUTER_UPPER + lm.LIPS_OUTER_LOWER + lm.LIPS_INNER_UPPER[2:-2]
        + lm.LIPS_INNER_LOWER[2:-2]) - {lm.MOUTH_RIGHT_CORNER, lm.MOUTH_LEFT_CORNER})


def mouth_corners(pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(right corner, left corner)`` float64 frame pixels (subject's sides)."""
    p = np.asarray(pts, np.float64)
    return p[lm.MOUTH_RIGHT_CORNER], p[lm.MOUTH_LEFT_CORNER]


def mouth_roi(pts: np.ndarray) -> Tuple[np.ndarray, float, float]:
    """The mouth ROI rule: ``(centre (2,) px, axis angle radians, corner-to-corner width px)``;
    the ROI spans ``MOUTH_ROI_WIDTH x MOUTH_ROI_HEIGHT`` times the width."""
    p = np.asarray(pts, np.float64)
    a, b = mouth_corners(p)
    centre = p[LIPS_INDEX].mean(axis=0)
    return centre, math.atan2(b[1] - a[1], b[0] - a[0]), float(np.linalg.norm(b - a))


def mouth_box_points(nose, corner_a, corner_b, image_shape=None,
                     bounds: Tuple[float, float, float, float] = None) -> Tuple[np.ndarray, bool]:
    """KeepSmiling's mouth box (seed 003, ``our_image_cropper``) from the nose tip and the two
    mouth corners (image pixels, corners in either order; e.g. MTFL's five points, or FaceMesh
    1, 61, 291 through :func:`warpcam.training.data.align.mouth_box`): ``f0`` = midpoint of the
    corners, ``b = f0 - nose``, ``e = corner - f0`` (the corner toward image +x),
    ``a = sqrt(|e|^2 + |b|^2)``, ``a_vec = a e / |e|``; the axis-aligned box spanned by
    ``f0 - b - a_vec`` and ``f0 + b + a_vec``.

    Returns ``(box (x0, y0, x1, y1) float64 edges, clamped)``: clamped to ``bounds`` (edges) or
    else to ``image_shape`` (``-0.5 .. W - 0.5``); neither given: not clamped (False)."""
    nose = np.asarray(nose, np.float64)
    c_r, c_l = np.asarray(corner_a, np.float64), np.asarray(corner_b, np.float64)
    f0 = 0.5 * (c_r + c_l)
    b = f0 - nose
    corner = c_l if c_l[0] >= c_r[0] else c_r
    e = corner - f0
    a = math.sqrt(float(e @ e + b @ b))
    a_vec = e / (np.linalg.norm(e) + 1e-9) * a
    p1, p2 = f0 - b - a_vec, f0 + b + a_vec
    box = np.array([min(p1[0], p2[0]), min(p1[1], p2[1]), max(p1[0], p2[0]), max(p1[1], p2[1])])
    if bounds is None and image_shape is not None:
        bounds = (-0.5, -0.5, image_shape[1] - 0.5, image_shape[0] - 0.5)
    if bounds is not None:
        clamped = np.array([max(box[0], bounds[0]), max(box[1], bounds[1]),
                            min(box[2], bounds[2]), min(box[3], bounds[3])])
        changed = bool(np.any(np.abs(clamped - box) > 1e-6))
        box = clamped
    else:
        changed = False
    return box, changed
