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
