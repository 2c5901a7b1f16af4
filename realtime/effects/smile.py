"""Landmark-driven smile control (AU12 lip corner puller / AU15 lip corner depressor).

A smile strength ``S`` in [-1, 1] sets sparse displacements of the mouth landmarks: for
``S > 0`` the lip corners rise and widen (AU12), for ``S < 0`` they fall and narrow slightly
(AU15). The lips follow with a weight that grows toward the corners, and the cheeks and
nasolabial area follow with a smaller weight. A thin-plate spline (scipy's
``RBFInterpolator``) turns the sparse displacements into a dense backward-warp flow over a
mouth ROI, with zero displacement pinned on the ROI border and on the nose and chin so the
warp is feathered into the face. A Jacobian check shrinks the displacements until the warp is
fold-free (determinant > 0.25 everywhere).

Action-unit names follow FACS (Ekman and Friesen); the warp itself is our construction in the
spirit of DeepWarp's smile model (seed 000), with geometry in place of a learned flow.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, List, Optional, Sequence

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

from warpcam.core import jit as _jit
from warpcam.core import landmarks as lm
from warpcam.core.geometry import (CropCache, border_window, fade_between,  # noqa: F401
                                   flow_jacobian_det, pixel_grid, roi_affine, to_crop)
from warpcam.core.mouth import LIPS_INDEX, MOUTH_ROI_HEIGHT, MOUTH_ROI_WIDTH, mouth_roi
from warpcam.core.types import Face, WarpJob
from warpcam.realtime.effects.base import (Effect, EffectSpec, FrameCrops, LiveSettings,
                                           setting, validate)

# Displacements at S = +1 / -1, in units of the corner-to-corner mouth width, in the mouth
# frame (x along the corners, outward positive; y down).
AU12_LIFT, AU12_WIDEN = 0.11, 0.07
AU15_DROP, AU15_NARROW = 0.09, 0.02


@dataclass(frozen=True)
class SmileSettings:
    """Smile strength in [-1, 1]: positive = AU12 (smile), negative = AU15 (frown)."""

    effect_name: ClassVar[str] = "smile"

    strength: float = setting(0.0, flag="--smile", lo=-1.0, hi=1.0, step=0.1,
                              help="smile strength in [-1, 1]: + lifts the mouth corners (AU12), "
                                   "- lowers them (AU15)")
    enabled: bool = setting(True, cli=False, help="smile control on or off (preview key m); "
                                                  "off keeps the strength for when it is back")

    def __post_init__(self):
        validate(self)

    @property
    def active(self) -> bool:
        return self.enabled and abs(self.strength) > 1e-3


def mouth_displacements(points_crop: dict, strength: float, mouth_w: float) -> tuple:
    """Sparse forward displacements in crop pixels for a smile of ``strength``.

    Args:
        points_crop: landmark groups in crop coordinates (the crop's x axis runs from the
            subject's right mouth corner to the left one): keys ``corners`` (2 x 2),
            ``lips`` (N x 2), ``cheeks`` (M x 2), ``anchors`` (K x 2, pinned).
        strength: S in [-1, 1].
        mouth_w: corner-to-corner width in crop pixels.

    Returns:
        ``(sources P x 2, displacements P x 2)``.
    """
    c_r, c_l = points_crop["corners"]
    mid = 0.5 * (c_r + c_l)
    half = 0.5 * mouth_w
    if strength >= 0:
        corner = np.array([AU12_WIDEN, -AU12_LIFT]) * strength * mouth_w
    else:
        corner = np.array([-AU15_NARROW, AU15_DROP]) * (-strength) * mouth_w

    def disp_at(p, weight):
        side = np.sign(p[:, 0] - mid[0])[:, None]  # -1 toward the right corner (image left)
        d = np.repeat(corner[None, :], len(p), axis=0)
        d[:, 0:1] *= side
        return d * weight[:, None]

    srcs, disps = [points_crop["corners"]], [disp_at(points_crop["corners"], np.ones(2))]
    lips = points_crop["lips"]
    t = np.clip(np.abs(lips[:, 0] - mid[0]) / half, 0.0, 1.0)
    srcs.append(lips)
    disps.append(disp_at(lips, t ** 2))
    cheeks = points_crop["cheeks"]
    dist = np.minimum(np.linalg.norm(cheeks - c_r, axis=1), np.linalg.norm(cheeks - c_l, axis=1))
    srcs.append(cheeks)
    disps.append(disp_at(cheeks, 0.55 * np.exp(-dist / (0.35 * mouth_w))))
    anchors = points_crop["anchors"]
    srcs.append(anchors)
    disps.append(np.zeros_like(anchors))
    return np.concatenate(srcs), np.concatenate(disps)


def smile_flow_reference(h: int, w: int, sources: np.ndarray, displacements: np.ndarray,
                         grid_step: int = 3) -> np.ndarray:
    """The reference of :func:`smile_flow` (scipy's ``RBFInterpolator``): dense backward-warp
    flow (``h x w x 2`` float32, crop pixels) from sparse forward displacements, by a
    thin-plate spline fitted at the *displaced* positions (so that ``out(p + d) = in(p)`` holds
    at every control point), evaluated on a grid every ``grid_step`` pixels and interpolated
    bilinearly, then multiplied by a border window so it is exactly 0 on the crop border."""
    targets = sources + displacements
    rbf = RBFInterpolator(targets, -displacements, kernel="thin_plate_spline", smoothing=1e-3)
    gh, gw = (h + grid_step - 1) // grid_step + 1, (w + grid_step - 1) // grid_step + 1
    gx, gy = np.meshgrid(np.arange(gw) * grid_step, np.arange(gh) * grid_step)
    coarse = rbf(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gh, gw, 2).astype(np.float32)
    xs, ys = pixel_grid(h, w)
    flow = cv2.remap(coarse, xs / grid_step, ys / grid_step, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    return flow * border_window(h, w, 0.12)[..., None]


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """Thin-plate kernel ``r^2 log r`` from squared distances (0 at r = 0)."""
    tiny = np.finfo(r2.dtype).tiny
    return r2 * np.log(np.maximum(r2, tiny)) * r2.dtype.type(0.5)  # 0 * log(tiny) = 0 at r = 0


def _sq_dist(ax, ay, bx, by) -> np.ndarray:
    """``(len(a), len(b))`` squared distances, one coordinate at a time (a broadcast over a
    trailing axis of 2 costs several times more)."""
    dx = np.subtract.outer(ax, bx)
    dy = np.subtract.outer(ay, by)
    dx *= dx
    dy *= dy
    dx += dy
    return dx


@lru_cache(maxsize=64)
def _flow_grid(h: int, w: int, grid_step: int) -> tuple:
    """Coarse evaluation points ``(G, 2)``, their grid shape, the remap coordinates that
    upsample the coarse grid to ``h x w``, and the border window (cached per crop size)."""
    gh, gw = (h + grid_step - 1) // grid_step + 1, (w + grid_step - 1) // grid_step + 1
    gx, gy = np.meshgrid(np.arange(gw) * grid_step, np.arange(gh) * grid_step)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64)
    xs, ys = pixel_grid(h, w)
    mx, my = xs / grid_step, ys / grid_step
    win = border_window(h, w, 0.12)[..., None]
    for a in (pts, mx, my, win):
        a.setflags(write=False)
    return pts, (gh, gw), mx, my, win


def smile_flow(h: int, w: int, sources: np.ndarray, displacements: np.ndarray,
               grid_step: int = 3, smoothing: float = 1e-3) -> np.ndarray:
    """Dense backward-warp flow (``h x w x 2`` float32, crop pixels) from sparse forward
    displacements: :func:`smile_flow_reference`'s thin-plate spline (kernel ``r^2 log r``, a
    degree-1 polynomial, ``smoothing`` on the diagonal, fitted at the displaced positions),
    solved directly as one small linear system and evaluated on the coarse grid in one matrix
    product, instead of through ``RBFInterpolator`` (whose set-up costs more than the maths at
    this size). The same interpolant up to float rounding (``tests/test_speed_paths.py``); the
    polynomial is evaluated on coordinates shifted and scaled to [-1, 1] as scipy does, so the
    system is as well conditioned."""
    targets = np.asarray(sources, np.float64) + displacements
    values = -np.asarray(displacements, np.float64)
    n = len(targets)
    pts, (gh, gw), mx, my, win = _flow_grid(h, w, grid_step)
    gx, gy = pts[:, 0].astype(np.float32), pts[:, 1].astype(np.float32)
    lo, hi = targets.min(axis=0), targets.max(axis=0)
    shift = 0.5 * (hi + lo)
    scale = 0.5 * (hi - lo)
    scale[scale == 0.0] = 1.0
    tx, ty = np.ascontiguousarray(targets[:, 0]), np.ascontiguousarray(targets[:, 1])
    lhs = np.zeros((n + 3, n + 3))
    lhs[:n, :n] = _tps_kernel(_sq_dist(tx, ty, tx, ty))
    lhs[np.arange(n), np.arange(n)] += smoothing
    poly = np.empty((n, 3))
    poly[:, 0] = 1.0
    poly[:, 1:] = (targets - shift) / scale
    lhs[:n, n:] = poly
    lhs[n:, :n] = poly.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = values
    # OpenCV's LU: single-threaded, no BLAS thread pool to wake (tens of microseconds to
    # milliseconds on a loaded 2-core machine) for a ~60 x 60 system.
    ok, coef = cv2.solve(lhs, rhs, flags=cv2.DECOMP_LU)
    if not ok:
        coef = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    gpoly = np.empty((len(pts), 3))
    gpoly[:, 0] = 1.0
    gpoly[:, 1:] = (pts - shift) / scale
    # the evaluation matrix in float32 (half the cost of the log; the flow changes by < 1e-5 px)
    kern = _tps_kernel(_sq_dist(gx, gy, tx.astype(np.float32), ty.astype(np.float32)))
    coarse = cv2.gemm(kern, coef[:n].astype(np.float32), 1.0,
                      cv2.gemm(gpoly, coef[n:], 1.0, None, 0.0).astype(np.float32), 1.0)
    coarse = coarse.reshape(gh, gw, 2).astype(np.float32)
    flow = cv2.remap(coarse, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return flow * win


#: the module's own smile_flow: the compiled loops replace it only while nobody has swapped
#: it (the benchmarks' --reference-paths and the tests put smile_flow_reference in its place)
_SMILE_FLOW = smile_flow
_JIT_MODULE = "warpcam.core._jitloops"


@lru_cache(maxsize=64)
def _border_points(h: int, w: int, per_side: int = 5) -> np.ndarray:
    """Points on the crop border (pinned to zero displacement; cached, read only)."""
    us = np.linspace(0, w - 1, per_side)
    vs = np.linspace(0, h - 1, per_side)[1:-1]
    out = np.concatenate([np.stack([us, np.zeros_like(us)], 1),
                          np.stack([us, np.full_like(us, h - 1)], 1),
                          np.stack([np.zeros_like(vs), vs], 1),
                          np.stack([np.full_like(vs, w - 1), vs], 1)])
    out.setflags(write=False)
    return out


class SmileEffect(Effect):
    """The landmark smile: one mouth :class:`~warpcam.core.types.WarpJob` per face.

    The mouth ROI is :func:`warpcam.core.mouth.mouth_roi` (centred on the lips, aligned with the
    mouth corners, 2.2 mouth widths wide and 1.7 high: lips, cheeks and nasolabial folds).
    Frontal-ish faces only: the effect fades out between 25 and 45 degrees of head yaw.
    """

    name = "smile"

    def __init__(self, settings, cache: bool = True):
        if not isinstance(settings, LiveSettings):
            settings = LiveSettings(settings)
        super().__init__(settings)
        #: crop-space fields reused while the mouth holds still (see CropCache); None disables.
        self.cache: Optional[CropCache] = CropCache(tol=0.2) if cache else None

    def jobs(self, frame: np.ndarray, faces: Sequence[Face], t: float = 0.0,
             crops: Optional[FrameCrops] = None) -> List[WarpJob]:
        settings = self.settings.get()  # once per frame
        s = settings.strength
        if self.cache is not None:
            self.cache.tick()
        if not settings.active:
            return []
        out = []
        for face in faces:
            job = self._mouth_job(face, s)
            if job is not None:
                out.append(job)
        return out

    def hud(self) -> str:
        s = self.settings.get()
        return f"smile {s.strength:+.1f}" if s.enabled else "smile off"

    def _mouth_job(self, face: Face, s: float):
        pts = face.landmarks.astype(np.float64)
        centre, angle, mouth_w = mouth_roi(pts)
        if mouth_w < 6.0:
            return None
        fade = fade_between(abs(face.yaw), 25.0, 45.0)
        if fade <= 0.01:
            return None
        s = s * fade
        lips_idx = LIPS_INDEX
        roi_w, roi_h = MOUTH_ROI_WIDTH * mouth_w, MOUTH_ROI_HEIGHT * mouth_w
        crop_w = int(np.clip(round(roi_w / 3.5), 20, 40))
        crop_h = int(round(crop_w * roi_h / roi_w))
        A = roi_affine(centre, angle, roi_w, roi_h, crop_w, crop_h)
        scale = roi_w / crop_w
        idx = ([lm.MOUTH_RIGHT_CORNER, lm.MOUTH_LEFT_CORNER] + lips_idx
               + lm.CHEEK_RIGHT + lm.CHEEK_LEFT + [lm.NOSE_TIP, 2, 98, 327, lm.CHIN, 199])
        crop_pts = to_crop(pts[idx], A)
        key = face.track_id
        signature = np.concatenate([crop_pts.ravel(), [crop_w, crop_h, 10.0 * s]])
        fields = self.cache.get(key, signature) if self.cache is not None else None
        if fields is None:
            n_l, n_c = len(lips_idx), len(lm.CHEEK_RIGHT) + len(lm.CHEEK_LEFT)
            groups = dict(corners=crop_pts[:2], lips=crop_pts[2:2 + n_l],
                          cheeks=crop_pts[2 + n_l:2 + n_l + n_c],
                          anchors=np.concatenate([crop_pts[2 + n_l + n_c:],
                                                  _border_points(crop_h, crop_w)]))
            src, disp = mouth_displacements(groups, s, mouth_w / scale)
            keep = np.all((src > -2) & (src < [crop_w + 1, crop_h + 1]), axis=1)
            src, disp = src[keep], disp[keep]
            loops = _jit.load(_JIT_MODULE) if smile_flow is _SMILE_FLOW else None
            if loops is not None:  # the compiled loops (warpcam.core.jit), same values
                _, _, _, _, win = _flow_grid(crop_h, crop_w, 3)
                flow, alpha, disp = loops.smile_fields(
                    crop_h, crop_w, np.ascontiguousarray(src, np.float64),
                    np.ascontiguousarray(disp, np.float64), 3, 1e-3,
                    np.ascontiguousarray(win[..., 0]), 0.25, 5, 0.7)
            else:
                flow = None
                for _ in range(5):
                    flow = smile_flow(crop_h, crop_w, src, disp)
                    if flow_jacobian_det(flow).min() > 0.25:
                        break
                    disp = disp * 0.7
                # Composite only where the warp moves something (saves work on the flat
                # margin).
                moving = (np.abs(flow).max(axis=2) > 0.01).astype(np.uint8)
                alpha = cv2.dilate(moving, np.ones((3, 3), np.uint8)).astype(np.float32)
            fields = (flow, alpha, disp[:2].copy())
            if self.cache is not None:
                self.cache.put(key, signature, fields)
        flow, alpha, corner_disp = fields
        corners_shift = A[:, :2] @ corner_disp.T
        return WarpJob(crop_to_frame=A, flow=flow, alpha=alpha, kind="mouth",
                       face_id=face.track_id,
                       meta=dict(strength=s, fade=fade, corner_shift_px=corners_shift.T))


def _build(live, options) -> Effect:
    """``options["model"]``: ``None`` for the landmark smile; a loaded smile model, or a
    ``.pt2`` path (``""``: the bundled ``smile_deepwarp.pt2``) for the DeepWarp smile
    (:mod:`warpcam.realtime.effects.smile_model`), loaded and checked before the first frame."""
    model = (options or {}).get("model")
    if model is None:
        return SmileEffect(live)
    import os

    from warpcam.realtime.effects.base import EffectError
    from warpcam.realtime.effects.smile_model import (ModelSmileEffect, SmileModelError,
                                                      load_smile_model)
    if isinstance(model, (str, os.PathLike)):
        try:
            model = load_smile_model(model or None)
        except SmileModelError as exc:
            raise EffectError(str(exc)) from None
    return ModelSmileEffect(live, model)


SPEC = EffectSpec(
    name="smile", settings_cls=SmileSettings, factory=_build,
    order=20, help="smile control: AU12 lip corner puller / AU15 lip corner depressor",
    extra_args=(("--smile-model", dict(
        nargs="?", const="", default=None, metavar="FILE",
        help="edit the smile with the trained DeepWarp smile transformer (.pt2, seed 000) "
             "instead of the landmark warp; without FILE: the bundled smile_deepwarp.pt2")),),
    hud_keys=(("]", "strength", 0.1), ("[", "strength", -0.1), ("m", "enabled", None)))
