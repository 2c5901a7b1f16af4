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
from typing import ClassVar, List, Optional, Sequence

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

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

    def __post_init__(self):
        validate(self)

    @property
    def active(self) -> bool:
        return abs(self.strength) > 1e-3


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


def smile_flow(h: int, w: int, sources: np.ndarray, displacements: np.ndarray,
               grid_step: int = 3) -> np.ndarray:
    """Dense backward-warp flow (``h x w x 2`` float32, crop pixels) from sparse forward
    displacements, by a thin-plate spline fitted at the *displaced* positions (so that
    ``out(p + d) = in(p)`` holds at every control point), evaluated on a grid every
    ``grid_step`` pixels and interpolated bilinearly, then multiplied by a border window so
    it is exactly 0 on the crop border."""
    targets = sources + displacements
    rbf = RBFInterpolator(targets, -displacements, kernel="thin_plate_spline", smoothing=1e-3)
    gh, gw = (h + grid_step - 1) // grid_step + 1, (w + grid_step - 1) // grid_step + 1
    gx, gy = np.meshgrid(np.arange(gw) * grid_step, np.arange(gh) * grid_step)
    coarse = rbf(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gh, gw, 2).astype(np.float32)
    xs, ys = pixel_grid(h, w)
    flow = cv2.remap(coarse, xs / grid_step, ys / grid_step, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    return flow * border_window(h, w, 0.12)[..., None]


def _border_points(h: int, w: int, per_side: int = 5) -> np.ndarray:
    """Points on the crop border (pinned to zero displacement)."""
    us = np.linspace(0, w - 1, per_side)
    vs = np.linspace(0, h - 1, per_side)[1:-1]
    return np.concatenate([np.stack([us, np.zeros_like(us)], 1),
                           np.stack([us, np.full_like(us, h - 1)], 1),
                           np.stack([np.zeros_like(vs), vs], 1),
                           np.stack([np.full_like(vs, w - 1), vs], 1)])


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
        s = self.settings.get().strength  # once per frame
        if self.cache is not None:
            self.cache.tick()
        if abs(s) < 1e-3:
            return []
        out = []
        for face in faces:
            job = self._mouth_job(face, s)
            if job is not None:
                out.append(job)
        return out

    def hud(self) -> str:
        return f"smile {self.settings.get().strength:+.1f}"

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
            flow = None
            for _ in range(5):
                flow = smile_flow(crop_h, crop_w, src, disp)
                if flow_jacobian_det(flow).min() > 0.25:
                    break
                disp = disp * 0.7
            # Composite only where the warp moves something (saves work on the flat margin).
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


SPEC = EffectSpec(
    name="smile", settings_cls=SmileSettings, factory=lambda live, options: SmileEffect(live),
    order=20, help="smile control: AU12 lip corner puller / AU15 lip corner depressor",
    hud_keys=(("]", "strength", 0.1), ("[", "strength", -0.1)))
