"""The landmark-driven iris warp: a backward-warp flow field that moves the iris and pupil
inside the eye opening, computed from the eyelid and iris landmarks alone (no trained weights).

Used by the landmark gaze effect (:mod:`warpcam.realtime.effects.gaze`) and as the baseline
of the gaze model's evaluation (:mod:`warpcam.training.gaze.evaluate`). Method (our
construction, following the problem statement of DeepWarp, Ganin et al. ECCV 2016, Sec. 3,
with geometry instead of a learned flow): ``flow(p) = -d * W(p)`` with ``d`` the wanted iris
displacement; ``W`` is 1 on the displaced iris disc and falls smoothly to 0 on the eyelid
margins (sharply on the lid the iris moves toward, over more than ``3 |d|`` on the other side),
so the map stays one-to-one; the lids follow vertical gaze; the revealed sclera is marked for
DeepWarp's LCM palette (Sec. 3.2).

Convention: crop pixels of an ``h x w`` crop whose x axis runs along the eye, y down, pixel
centres at integers; ``out(p) = in(p + flow(p))``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from warpcam.core import jit as _jit
from warpcam.core.geometry import central_diff, flow_jacobian_det, pixel_grid, polygon_mask, smoothstep


_JIT_MODULE = "warpcam.core._jitloops"


def _chain_y(chain: np.ndarray, u: np.ndarray) -> np.ndarray:
    """y of a lid chain (``N x 2``, any x order) at crop columns ``u`` (linear, clamped)."""
    order = np.argsort(chain[:, 0])
    return np.interp(u, chain[order, 0], chain[order, 1])


def iris_shift_flow(h: int, w: int, upper: np.ndarray, lower: np.ndarray, iris_centre,
                    iris_radius: float, shift, lid_follow=(0.0, 0.0), min_det: float = 0.1,
                    ) -> "EyeWarp":
    """Backward-warp flow that moves the iris by ``shift`` inside an eye opening.

    Convention block: all inputs and outputs are in crop pixels of an ``h x w`` crop whose x
    axis runs along the eye (corner to corner), y down, pixel centres at integers;
    ``out(p) = in(p + flow(p))``.

    Args:
        h, w: crop size.
        upper, lower: ``N x 2`` upper and lower lid margins, each from one eye corner to the
            other (the eye opening lies between them).
        iris_centre: ``(x, y)`` iris centre in the input.
        iris_radius: iris radius (> 0).
        shift: ``(dx, dy)`` wanted displacement of the iris.
        lid_follow: ``(upper, lower)`` fractions of the vertical shift by which the lids follow
            the iris (lids rise when the eye looks up: the upper lid almost fully, the lower
            lid a little); the skin beyond each lid moves with it, fading out toward the brow
            or cheek, and the eye corners stay fixed.

        min_det: the warp is one-to-one with margin: where the lid and iris falloffs of a
            narrow eye would make the Jacobian determinant of ``p -> p + flow(p)`` drop to
            ``min_det`` or below, the shift is scaled down (by 0.75 at a time) until it holds.

    Returns:
        :class:`EyeWarp` with ``flow`` (h x w x 2 float32), ``reveal`` (h x w float32 in
        [0, 1]: output pixels outside the moved iris that would show iris stretched out of the
        input, i.e. revealed sclera for the LCM palette), ``mask`` (the output's eye opening)
        and ``shift`` (the shift achieved). The flow is 0 outside the opening and the lid skin
        bands beside it.

    Raises:
        ValueError: ``iris_radius <= 0`` or a non-finite input.
    """
    shift = np.asarray(shift, np.float64)
    c = np.asarray(iris_centre, np.float64)
    upper = np.asarray(upper, np.float64)
    lower = np.asarray(lower, np.float64)
    # one finiteness test for all inputs: a NaN or an infinity anywhere makes the sum
    # non-finite (the inputs are pixel coordinates: a finite sum cannot overflow)
    if not (iris_radius > 0 and math.isfinite(float(upper.sum()) + float(lower.sum())
                                              + float(shift[0]) + float(shift[1])
                                              + float(c[0]) + float(c[1]))):
        raise ValueError(f"bad iris geometry: radius={iris_radius}, centre={c}, shift={shift}")
    loops = _jit.load(_JIT_MODULE)
    for _ in range(8):
        if loops is not None:  # the compiled loops (warpcam.core.jit), same values
            flow, reveal, mask, det_min = _iris_shift_flow_jit(
                loops, h, w, upper, lower, c, iris_radius, shift, lid_follow)
        else:
            flow, reveal, mask = _iris_shift_flow(h, w, upper, lower, c, iris_radius, shift,
                                                  lid_follow)
            det_min = flow_jacobian_det(flow).min()
        if det_min > min_det:
            return EyeWarp(flow, reveal, mask, shift)
        shift = shift * 0.75
    zero = np.zeros((h, w, 2), np.float32)
    return EyeWarp(zero, np.zeros((h, w), np.float32), mask, np.zeros(2))


@dataclass
class EyeWarp:
    """Result of :func:`iris_shift_flow` (crop pixels)."""

    flow: np.ndarray
    reveal: np.ndarray
    mask: np.ndarray
    shift: np.ndarray


def _lids_out(upper, lower, shift, lid_follow):
    """The lid chains moved with a vertical gaze change, and their lift profile's span."""
    u_lo, u_hi = min(upper[0, 0], upper[-1, 0]), max(upper[0, 0], upper[-1, 0])
    span = max(u_hi - u_lo, 1e-6)
    lift_up = float(lid_follow[0]) * shift[1]
    lift_lo = float(lid_follow[1]) * shift[1]
    upper_out = upper.copy()
    upper_out[:, 1] += lift_up * np.sin(np.pi * np.clip((upper[:, 0] - u_lo) / span, 0.0, 1.0))
    lower_out = lower.copy()
    lower_out[:, 1] += lift_lo * np.sin(np.pi * np.clip((lower[:, 0] - u_lo) / span, 0.0, 1.0))
    return upper_out, lower_out, u_lo, span, lift_up, lift_lo


def _iris_shift_flow_jit(loops, h, w, upper, lower, c, iris_radius, shift, lid_follow):
    """:func:`_iris_shift_flow` through the compiled loops (:mod:`warpcam.core._jitloops`),
    plus the minimum Jacobian determinant: ``(flow, reveal, mask, det_min)``."""
    upper_out, lower_out, u_lo, span, lift_up, lift_lo = _lids_out(upper, lower, shift,
                                                                   lid_follow)
    mask = polygon_mask(np.concatenate([upper_out, lower_out[-2:0:-1]], axis=0), h, w)
    L = float(np.hypot(*shift))
    if L < 1e-3 or mask.max() <= 0:
        return (np.zeros((h, w, 2), np.float32), np.zeros((h, w), np.float32), mask, 1.0)
    dhat = shift / L
    dist = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 3) - 0.5
    trailing = cv2.GaussianBlur(loops.iris_trailing(dist, float(dhat[0]), float(dhat[1])),
                                (0, 0), 1.5)
    flow, reveal, det_min = loops.iris_fields(
        dist, trailing, mask, float(c[0]), float(c[1]), float(iris_radius), float(shift[0]),
        float(shift[1]), float(lift_up), float(lift_lo), float(u_lo), float(span),
        upper_out, lower_out)
    return flow, reveal, mask, det_min


def _iris_shift_flow(h, w, upper, lower, c, iris_radius, shift, lid_follow):
    L = float(np.hypot(*shift))
    # Upper lid lift, largest mid-lid, none at the corners.
    u_lo, u_hi = min(upper[0, 0], upper[-1, 0]), max(upper[0, 0], upper[-1, 0])
    span = max(u_hi - u_lo, 1e-6)

    def lid_profile(u):
        return np.sin(np.pi * np.clip((u - u_lo) / span, 0.0, 1.0))

    lift_up = float(lid_follow[0]) * shift[1]
    lift_lo = float(lid_follow[1]) * shift[1]
    upper_out = upper.copy()
    upper_out[:, 1] += lift_up * lid_profile(upper[:, 0])
    lower_out = lower.copy()
    lower_out[:, 1] += lift_lo * lid_profile(lower[:, 0])
    opening = np.concatenate([upper_out, lower_out[-2:0:-1]], axis=0)
    mask = polygon_mask(opening, h, w)
    zero = np.zeros((h, w, 2), np.float32)
    if L < 1e-3 or mask.max() <= 0:
        return zero, np.zeros((h, w), np.float32), mask
    dhat = shift / L
    inside = (mask > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3) - 0.5
    gx, gy = central_diff(dist)
    gn = np.hypot(gx, gy) + 1e-6
    # n . d_hat > 0 where the nearest lid lies behind the iris's motion (trailing side). There
    # the lid weight ramps up linearly over 1.15 |d|: just wider than the gap the moved iris
    # leaves, so the whole moved iris keeps W = 1 while d . grad W stays below 0.87 (det > 0.13).
    # On the leading side it ramps over one pixel: the iris slides under that lid.
    trailing = np.clip((gx * dhat[0] + gy * dhat[1]) / gn, 0.0, 1.0)
    # The nearest-lid direction flips across the opening's medial axis; blur it so the band
    # width (and with it the slope of the lid weight) varies slowly.
    trailing = cv2.GaussianBlur(trailing, (0, 0), 1.5)
    band = 1.0 + max(1.15 * L - 0.5, 0.0) * trailing
    m_lid = np.clip(np.maximum(dist, 0.0) / band, 0.0, 1.0) * (inside > 0)

    xs, ys = pixel_grid(h, w)
    c_new = c + shift
    rho = np.hypot(xs - c_new[0], ys - c_new[1])
    r_in = 1.15 * iris_radius
    band_i = max(4.0 * L, 0.8 * iris_radius)
    w_iris = 1.0 - smoothstep((rho - r_in) / band_i)
    # min, not product: the slope of W along d is then the larger of the two slopes, not their
    # sum, so the two falloffs cannot add up to a fold where they meet.
    W = np.minimum(w_iris, m_lid)
    fx = shift[0] * W
    fy = shift[1] * W
    if abs(lift_up) > 1e-3 or abs(lift_lo) > 1e-3:
        u = xs[0]
        y_up = _chain_y(upper_out, u)[None, :]
        y_lo = _chain_y(lower_out, u)[None, :]
        prof = lid_profile(u)[None, :]
        # Inside the opening the eyeball surface moves with the lids (the upper lid's lift at
        # the upper lid, the lower lid's at the lower one). Beyond each lid its skin moves,
        # fading out over a band toward the brow or the cheek.
        u_in = np.clip((y_lo - ys) / np.maximum(y_lo - y_up, 1e-3), 0.0, 1.0)
        band_up = max(3.0 * abs(lift_up), 0.35 * span)
        band_lo = max(3.0 * abs(lift_lo), 0.3 * span)
        above = lift_up * (1.0 - smoothstep((y_up - ys) / band_up))
        below = lift_lo * (1.0 - smoothstep((ys - y_lo) / band_lo))
        within = (lift_lo + (lift_up - lift_lo) * u_in) * (inside > 0)
        lid_field = np.where(ys < y_up, above, np.where(ys > y_lo, below, within)) * prof
        fy = fy + lid_field * (1.0 - W)
    flow = np.empty((h, w, 2), np.float32)
    flow[..., 0] = -fx
    flow[..., 1] = -fy
    qx = xs + flow[..., 0]
    qy = ys + flow[..., 1]
    in_iris = smoothstep((0.95 * iris_radius - np.hypot(qx - c[0], qy - c[1])) / 1.0)
    out_new = smoothstep((rho - 1.0 * iris_radius) / 1.0)
    reveal = (in_iris * out_new * mask).astype(np.float32)
    return flow, reveal, mask


def sclera_colour(image: np.ndarray, crop_to_frame: np.ndarray, size, mask: np.ndarray,
                  iris_centre, iris_radius: float) -> Optional[np.ndarray]:
    """Median BGR of the brighter half of the visible sclera (opening minus the iris disc), or
    ``None`` when fewer than 6 sclera pixels are visible. Reads the frame, never writes it."""
    h, w = size
    crop = cv2.warpAffine(image, crop_to_frame, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    ys, xs = np.mgrid[0:h, 0:w]
    away = np.hypot(xs - iris_centre[0], ys - iris_centre[1]) > 1.3 * iris_radius
    sel = (mask > 0.9) & away
    px = crop[sel]
    if len(px) < 6:
        return None
    lum = px.astype(np.int32).sum(axis=1)
    bright = px[lum >= np.median(lum)]
    return np.median(bright, axis=0).astype(np.float32)
