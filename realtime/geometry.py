"""Small geometric helpers shared by the effects: ROI affines, masks, fold checks.

Conventions: pixel coordinates x right, y down, pixel centres at integers. An ROI affine
``crop_to_frame`` (2 x 3) maps crop pixel (u, v) to frame pixel (x, y).
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def roi_affine(centre, axis_angle_rad: float, roi_w_px: float, roi_h_px: float,
               crop_w: int, crop_h: int) -> np.ndarray:
    """Affine (2 x 3) from a ``crop_h x crop_w`` crop to a rotated frame rectangle.

    The crop's centre ``((crop_w - 1) / 2, (crop_h - 1) / 2)`` lands on ``centre`` (frame
    pixels); the crop's x axis points along ``axis_angle_rad`` (0 = image x); the crop spans
    ``roi_w_px x roi_h_px`` frame pixels.
    """
    sx = roi_w_px / crop_w
    sy = roi_h_px / crop_h
    c, s = math.cos(axis_angle_rad), math.sin(axis_angle_rad)
    lin = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    off = np.asarray(centre, np.float64) - lin @ np.array([(crop_w - 1) / 2.0, (crop_h - 1) / 2.0])
    return np.hstack([lin, off[:, None]])


def to_crop(points: np.ndarray, crop_to_frame: np.ndarray) -> np.ndarray:
    """Frame pixel points (``N x 2``) to crop coordinates under ``crop_to_frame``."""
    lin, off = crop_to_frame[:, :2], crop_to_frame[:, 2]
    return (np.asarray(points, np.float64) - off) @ np.linalg.inv(lin).T


def polygon_mask(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """Anti-aliased float32 mask (``h x w``, 1 inside) of a polygon given in crop pixels."""
    shift = 4
    pts = np.round(np.asarray(poly) * (1 << shift)).astype(np.int32)
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [pts], 255, lineType=cv2.LINE_AA, shift=shift)
    return m.astype(np.float32) / 255.0


def smoothstep(x):
    """Cubic smoothstep clamped to [0, 1]: 0 for x <= 0, 1 for x >= 1; slope at most 1.5."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def border_window(h: int, w: int, margin: float) -> np.ndarray:
    """``h x w`` float32 window: 1 in the interior, raised-cosine falloff to 0 over the outer
    ``margin`` fraction of each side (0 on the outermost pixels)."""
    def ramp(n):
        t = np.arange(n, dtype=np.float32)
        d = np.minimum(t, n - 1 - t) / max(margin * n, 1e-6)
        return smoothstep(d)
    return np.outer(ramp(h), ramp(w)).astype(np.float32)


def flow_jacobian_det(flow: np.ndarray) -> np.ndarray:
    """Determinant of the Jacobian of the backward map ``p -> p + flow(p)`` (``h x w``), by
    central differences in crop pixels. Positive everywhere means the warp is one-to-one
    locally (no fold)."""
    fx = np.ascontiguousarray(flow[..., 0], np.float32)
    fy = np.ascontiguousarray(flow[..., 1], np.float32)
    dfx_dx, dfx_dy = central_diff(fx)
    dfy_dx, dfy_dy = central_diff(fy)
    return (1.0 + dfx_dx) * (1.0 + dfy_dy) - dfx_dy * dfy_dx


def central_diff(a: np.ndarray):
    """``(d/dx, d/dy)`` of a float32 image by central differences (one-sided at the border,
    like ``np.gradient``), with OpenCV for speed."""
    kx = np.array([[-0.5, 0.0, 0.5]], np.float32)
    dx = cv2.filter2D(a, -1, kx, borderType=cv2.BORDER_REPLICATE)
    dy = cv2.filter2D(a, -1, kx.T, borderType=cv2.BORDER_REPLICATE)
    # Replicated borders halve the one-sided difference; restore np.gradient's edge values.
    if a.shape[1] > 1:
        dx[:, 0] = a[:, 1] - a[:, 0]
        dx[:, -1] = a[:, -1] - a[:, -2]
    if a.shape[0] > 1:
        dy[0] = a[1] - a[0]
        dy[-1] = a[-1] - a[-2]
    return dx, dy


_GRIDS: dict = {}


def pixel_grid(h: int, w: int):
    """Cached float32 ``(xs, ys)`` pixel-centre grids of an ``h x w`` crop (read only)."""
    g = _GRIDS.get((h, w))
    if g is None:
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        xs.flags.writeable = False
        ys.flags.writeable = False
        g = _GRIDS[(h, w)] = (xs, ys)
    return g
