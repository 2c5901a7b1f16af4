"""Eye geometry, defined once: the eye frame, the eye ROI rule, the eye-in-head angle and the
eyeball model. Used alike by the gaze effects (landmark and model-driven), the eye renderer,
the pair miner and the dataset loaders of ``training/gaze``.

Convention block:

- Landmarks are mediapipe FaceMesh's 478 points in frame pixels (x right, y down, pixel
  centres at integers); ``side`` is the **subject's** ``"right"`` or ``"left"`` eye.
- **Eye frame**: the two eye corners (canthi) ordered so that ``b - a`` points along image +x
  for both eyes; ``axis`` is the unit vector ``a -> b``, ``normal`` is ``axis`` turned 90
  degrees toward image +y (down).
- **Eye ROI** (DeepWarp, Ganin et al. ECCV 2016, Sec. 4; BlueWinters/DeepWarp
  ``process_one_eye``): centred on the mean of the eye contour (the opening's centroid), twice
  the corner-to-corner width wide and 1.6 times as high (height 0.8 of the ROI width), rotated
  so that the crop's x axis runs along the eye axis.
- **Eye-in-head angle**: the iris centre's offset from the **corner midpoint**, over the
  eyeball radius: ``yaw = asin(off . axis / R)``, ``pitch = -asin(off . normal / R)`` (degrees;
  pitch up positive, yaw toward image +x, the subject's left, positive). The corners are fixed
  to the skull; the contour centroid moves with the lids (it drops when the upper lid follows
  a downward gaze), so it would read part of every vertical gaze change as no change.
- **Eyeball model**: the visible iris is 11.7 mm across and the eyeball radius 12 mm, so
  ``R = 12 / 11.7 * iris diameter`` and a rotation by ``delta`` moves the iris centre by
  ``R (sin(theta + delta) - sin(theta))``.
- **Network eye crop**: the ROI sampled at ``EYE_CROP_H x EYE_CROP_W`` (41 x 51); the subject's
  left eye is mirrored left-right so one network serves both eyes.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from warpcam.core import landmarks as lm
from warpcam.core.geometry import roi_affine, roi_affines, to_crop

IRIS_DIAMETER_MM = 11.7
EYEBALL_RADIUS_MM = 12.0
#: Eyeball radius in units of the visible iris diameter.
EYEBALL_PER_IRIS = EYEBALL_RADIUS_MM / IRIS_DIAMETER_MM

#: ROI size in units of the corner-to-corner eye width.
ROI_WIDTH_PER_EYE = 2.0
ROI_HEIGHT_PER_EYE = 1.6

#: The gaze network's crop (H x W).
EYE_CROP_H, EYE_CROP_W = 41, 51
#: Index of each of the 7 anchors (DeepWarp Sec. 3.1) in the 19 crop landmarks of
#: :func:`eye_crop` (upper lid 9, lower lid 9, iris centre): the two corners, two points on
#: each lid and the iris centre.
ANCHOR_INDEX = (0, 3, 5, 8, 14, 12, 18)


def eye_corners(pts: np.ndarray, side: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` float64 corner points with ``b - a`` along image +x for both eyes."""
    ix = lm.eye_indices(side)
    a, b = pts[ix["outer"]].astype(np.float64), pts[ix["inner"]].astype(np.float64)
    return (b, a) if side == "left" else (a, b)


def eye_roi(pts: np.ndarray, side: str) -> Tuple[np.ndarray, float, float]:
    """The eye ROI rule: ``(centre (2,) px, axis angle radians, corner-to-corner width px)``;
    the ROI spans ``ROI_WIDTH_PER_EYE x ROI_HEIGHT_PER_EYE`` times the width."""
    a, b = eye_corners(pts, side)
    centre = lm.eye_contour(pts, side).mean(axis=0, dtype=np.float64)
    dx, dy = float(b[0] - a[0]), float(b[1] - a[1])
    return centre, math.atan2(dy, dx), math.hypot(dx, dy)


def roi_affine_for(centre, angle: float, eye_w: float, crop_w: int, crop_h: int) -> np.ndarray:
    """Crop -> frame affine (2 x 3) of the eye ROI ``(centre, angle, eye_w)`` sampled at
    ``crop_h x crop_w``."""
    return roi_affine(centre, angle, ROI_WIDTH_PER_EYE * eye_w, ROI_HEIGHT_PER_EYE * eye_w,
                      crop_w, crop_h)


def roi_affines_for(centres: np.ndarray, angles: np.ndarray, eye_w: np.ndarray, crop_w: int,
                    crop_h: int) -> np.ndarray:
    """Batched :func:`roi_affine_for`: ``(n, 2)``, ``(n,)``, ``(n,)`` -> ``(n, 2, 3)``."""
    eye_w = np.asarray(eye_w, np.float64)
    return roi_affines(centres, angles, ROI_WIDTH_PER_EYE * eye_w, ROI_HEIGHT_PER_EYE * eye_w,
                       crop_w, crop_h)


def eye_in_head_angles(pts: np.ndarray, side: str, iris_d: float) -> np.ndarray:
    """Eye-in-head ``(pitch, yaw)`` degrees of one eye (module docstring): the iris centre
    against the corner midpoint, by the eyeball model; ``iris_d`` in frame pixels."""
    a, b = eye_corners(pts, side)
    d = b - a
    axis = d / (math.hypot(*d) + 1e-9)
    normal = np.array([-axis[1], axis[0]])  # image down
    off = pts[lm.eye_indices(side)["iris"][0]] - 0.5 * (a + b)
    r = EYEBALL_PER_IRIS * max(float(iris_d), 1e-3)
    yaw = math.degrees(math.asin(float(np.clip(off @ axis / r, -1, 1))))
    pitch = -math.degrees(math.asin(float(np.clip(off @ normal / r, -1, 1))))
    return np.array([pitch, yaw])


def gaze_shift_px(delta_pitch_deg: float, delta_yaw_deg: float, iris_diameter_px: float,
                  pitch0_deg: float = 0.0, yaw0_deg: float = 0.0) -> np.ndarray:
    """Iris-centre displacement ``(dx, dy)`` for a gaze change, by the eyeball model, in the eye
    frame (x along the eye axis, y along its normal, pixels of ``iris_diameter_px``).

    Args:
        delta_pitch_deg, delta_yaw_deg: gaze change (pitch up positive, yaw toward the
            subject's left = eye-axis +x positive).
        iris_diameter_px: visible iris diameter.
        pitch0_deg, yaw0_deg: the eye's current rotation in the head (0 = straight ahead).

    Returns:
        ``(dx, dy)`` float64; ``dy < 0`` for an upward change (y points down).
    """
    r = EYEBALL_PER_IRIS * iris_diameter_px
    dx = r * (math.sin(math.radians(yaw0_deg + delta_yaw_deg)) - math.sin(math.radians(yaw0_deg)))
    dy = -r * (math.sin(math.radians(pitch0_deg + delta_pitch_deg))
               - math.sin(math.radians(pitch0_deg)))
    return np.array([dx, dy])


def eye_crop(pts: np.ndarray, side: str):
    """The gaze network's view of one eye.

    Args:
        pts: ``478 x 2`` frame-pixel landmarks.
        side: ``"right"`` or ``"left"`` (the subject's).

    Returns:
        ``(A, flip, crop_landmarks, eye_w, axis_angle)``: ``A`` the 2 x 3 crop -> frame affine
        of the unflipped ``EYE_CROP_H x EYE_CROP_W`` crop; ``flip`` (True for the left eye);
        ``crop_landmarks`` ``(19, 2)`` float32 in the network's (flipped) crop pixels: upper lid
        9 and lower lid 9 from the outer to the inner corner, then the iris centre; the
        corner-to-corner width (frame px) and the eye-axis angle (radians).
    """
    centre, angle, eye_w = eye_roi(pts, side)
    A = roi_affine_for(centre, angle, eye_w, EYE_CROP_W, EYE_CROP_H)
    ix = lm.eye_indices(side)
    crop_pts = to_crop(pts[ix["upper"] + ix["lower"] + ix["iris"][:1]], A)
    flip = side == "left"
    if flip:
        crop_pts[:, 0] = (EYE_CROP_W - 1) - crop_pts[:, 0]
    return A, flip, crop_pts.astype(np.float32), eye_w, angle
