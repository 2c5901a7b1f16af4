"""Landmark-driven gaze correction: moves the iris and pupil inside the eye opening by a gaze
change in degrees, with a backward-warp flow field; no trained weights.

Method (our construction, following the problem statement of DeepWarp, Ganin et al. ECCV 2016,
Sec. 3, with geometry instead of a learned flow):

1. **ROI** per eye, DeepWarp's crop (Sec. 4, and BlueWinters/DeepWarp ``process_one_eye``):
   centred on the eye contour, twice the corner-to-corner width, height 0.8 of the width,
   rotated with the eye axis so the crop's x axis runs along the corners.
2. **Degrees to pixels** with an eyeball model scaled by the iris: the human iris is about
   11.7 mm across and the eyeball radius about 12 mm, so a rotation by ``delta`` moves the iris
   centre by ``R sin(delta)`` with ``R = 12 / 11.7 * iris_diameter_px``.
3. **Flow**: with ``d`` the wanted iris displacement and ``c`` the iris centre (crop pixels),
   ``flow(p) = -d * W(p)`` (backward warp: ``out(p) = in(p - d W(p))``). ``W`` is 1 on the
   displaced iris disc and falls smoothly to 0 on the eyelid margins: sharply on the lid the
   iris moves toward (it slides under the lid) and over more than ``3 |d|`` on the other side,
   so the sclera ahead of the iris is compressed and behind it stretched, and the map stays
   one-to-one (Jacobian determinant ``1 - d . grad W > 0``). Eyelids and skin have ``W = 0``.
4. **Revealed sclera**: where the output would show iris stretched out of an iris that touched
   the trailing lid, the LCM palette mix (DeepWarp Sec. 3.2) blends toward the sclera colour
   measured on that eye.
5. **Fades** scale ``d`` (never the alpha, which would paint a ghost iris): by eye openness (a
   blink stays a blink), head turn and gaze offset (full below 10 deg, none beyond 35 deg, as
   NVIDIA Maxine Eye Contact's defaults), and iris reliability.

Angles: pitch positive = up, yaw positive = toward the subject's left (image +x).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from warpcam.core import landmarks as lm
from warpcam.core.geometry import (CropCache, pixel_grid,
                               roi_affine, smoothstep, to_crop)
from warpcam.realtime.smoothing import OneEuroFilter
from warpcam.core.types import Face, WarpJob

from warpcam.core.eyes import EYEBALL_PER_IRIS, IRIS_DIAMETER_MM, gaze_shift_px  # noqa: F401
from warpcam.core.eyewarp import EyeWarp, iris_shift_flow, sclera_colour  # noqa: F401


def fade_between(value: float, full_below: float, none_beyond: float) -> float:
    """1 below ``full_below``, 0 beyond ``none_beyond``, smooth in between."""
    if none_beyond <= full_below:
        return 1.0 if value <= full_below else 0.0
    return float(1.0 - smoothstep((value - full_below) / (none_beyond - full_below)))


def eye_visibility(image: np.ndarray, face: Face, side: str, k: int) -> float:
    """How clearly an eye shows an iris against its sclera, as a fade in [0, 1].

    mediapipe reports an open eye with a confident iris even under a flat hand or dark
    sunglasses; warping there would bend the occluder. Measured on the frame (read only): the
    75th-percentile grey level of the visible sclera (the opening beyond 1.2 iris radii) minus
    the median grey level of the iris (within 0.7 radii). Open eyes in the shared real videos
    measure 12-130 grey levels (5th percentile 12 in a dim video); flat occluders about 0. A
    lens with a bright reflection across it can still pass (a known gap).
    Returns 0 below 6 grey levels of contrast, 1 above 16 (smooth in between), and 1 when too
    little of the eye is visible to judge.
    """
    p = face.landmarks
    poly = lm.eye_contour(p, side)
    x0 = max(int(math.floor(poly[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(poly[:, 1].min())) - 1, 0)
    x1 = int(math.ceil(poly[:, 0].max())) + 2
    y1 = int(math.ceil(poly[:, 1].max())) + 2
    crop = image[y0:y1, x0:x1]
    if crop.shape[0] < 3 or crop.shape[1] < 3:
        return 1.0
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    mask = np.zeros(grey.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(poly - (x0, y0)).astype(np.int32)], 1)
    c = p[lm.eye_indices(side)["iris"][0]]
    r = 0.5 * float(face.iris_diameter_px[k])
    xs, ys = pixel_grid(*grey.shape)
    d = np.hypot(xs - (c[0] - x0), ys - (c[1] - y0))
    iris = grey[(mask > 0) & (d < 0.7 * r)]
    sclera = grey[(mask > 0) & (d > 1.2 * r)]
    if iris.size < 3 or sclera.size < 3:
        return 1.0
    contrast = float(np.percentile(sclera, 75)) - float(np.median(iris))
    return float(smoothstep((contrast - 6.0) / 10.0))


@dataclass
class GazeSettings:
    """What the gaze effect does.

    Attributes:
        pitch_deg, yaw_deg: fixed redirection (pitch up positive, yaw toward the subject's left).
        eye_contact: redirect toward the camera instead (adds to any fixed redirection).
        camera_offset_cm: camera height above the screen centre, for eye contact.
        fov_deg: the camera's horizontal field of view, for the viewing distance.
        full_below_deg, none_beyond_deg: head-turn (yaw) and gaze-offset fade; head pitch
            fades 10 degrees later, since its zero varies between people.
        lid_follow: ``(upper, lower)``: how much each lid follows a vertical gaze change
            (0 = lids fixed). The upper lid follows the eye almost one to one in vertical gaze
            (lid-eye coordination); the lower lid much less.
        enabled: master switch (the preview's ``g`` key).
    """

    pitch_deg: float = 0.0
    yaw_deg: float = 0.0
    eye_contact: bool = False
    camera_offset_cm: float = 3.0
    fov_deg: float = 60.0
    full_below_deg: float = 10.0
    none_beyond_deg: float = 35.0
    lid_follow: tuple = (1.0, 0.35)
    enabled: bool = True

    @property
    def active(self) -> bool:
        return self.enabled and (self.eye_contact or abs(self.pitch_deg) > 1e-6
                                 or abs(self.yaw_deg) > 1e-6)


class _EyeContactState:
    """Per-track gaze estimate for eye contact: smoothed harder than the iris (DESIGN.md), and
    a slowly adapting bias that assumes the person mostly looks at the screen centre."""

    def __init__(self):
        self.filter = OneEuroFilter(min_cutoff=0.4, beta=0.01, d_cutoff=1.0)
        self.bias: Optional[np.ndarray] = None
        self.t: Optional[float] = None


class GazeCorrector:
    """Turns tracked faces into eye :class:`~warpcam.core.types.WarpJob` s.

    ``jobs(image, faces, t)``: ``image`` is the ``H x W x 3`` uint8 BGR frame (read only, for the
    sclera colour), ``faces`` from :class:`~warpcam.realtime.tracker.FaceTracker`, ``t`` in seconds.
    Each job's ``meta`` holds ``iris_shift_px`` (the frame-pixel displacement asked for, after
    fades), ``fade`` and the requested ``delta_deg``.
    """

    def __init__(self, settings: GazeSettings, cache: bool = True):
        self.settings = settings
        self._contact: Dict[int, _EyeContactState] = {}
        #: crop-space fields reused while an eye holds still (see CropCache); None disables.
        self.cache: Optional[CropCache] = CropCache(tol=0.2) if cache else None

    # -- eye contact -------------------------------------------------------------------------
    def _eye_contact_delta(self, face: Face, shape, t: float) -> Tuple[np.ndarray, float]:
        """Gaze change (pitch, yaw) toward the camera and the gaze-offset fade."""
        s = self.settings
        H, W = shape[:2]
        f_px = 0.5 * W / math.tan(math.radians(s.fov_deg) / 2.0)
        pts = face.landmarks
        iris_d = float(np.mean(face.iris_diameter_px))
        if iris_d <= 1:
            return np.zeros(2), 0.0
        z_mm = f_px * IRIS_DIAMETER_MM / iris_d
        eye_mid = 0.5 * (pts[lm.RIGHT_IRIS[0]] + pts[lm.LEFT_IRIS[0]])
        ex = (eye_mid[0] - (W - 1) / 2.0) * z_mm / f_px
        ey = (eye_mid[1] - (H - 1) / 2.0) * z_mm / f_px
        cam = np.degrees([math.atan2(ey, z_mm), math.atan2(-ex, z_mm)])
        screen = np.degrees([math.atan2(ey - 10.0 * s.camera_offset_cm, z_mm),
                             math.atan2(-ex, z_mm)])
        # Gaze estimate: head pose plus the eye's rotation in the head from the iris offset.
        eye_rot = []
        for side in ("right", "left"):
            ix = lm.eye_indices(side)
            a, b = pts[ix["outer"]], pts[ix["inner"]]
            if side == "left":
                a, b = b, a
            axis = (b - a) / (np.linalg.norm(b - a) + 1e-6)
            normal = np.array([-axis[1], axis[0]])
            centre = lm.eye_contour(pts, side).mean(axis=0)
            off = pts[ix["iris"][0]] - centre
            r = EYEBALL_PER_IRIS * iris_d
            yaw_e = math.degrees(math.asin(np.clip(off @ axis / r, -1, 1)))
            pitch_e = -math.degrees(math.asin(np.clip(off @ normal / r, -1, 1)))
            eye_rot.append((pitch_e, yaw_e))
        est = np.array([face.pitch, face.yaw]) + np.mean(eye_rot, axis=0)
        st = self._contact.setdefault(face.track_id, _EyeContactState())
        est = st.filter(est, t)
        if st.bias is None:
            st.bias = est - screen
        else:
            dt = max(t - st.t, 1e-3) if st.t is not None else 1 / 30
            k = 1.0 - math.exp(-dt / 10.0)  # 10 s time constant
            st.bias = st.bias + k * ((est - screen) - st.bias)
        st.t = t
        # forget tracks gone 1.5 s: the tracker drops a track unseen for 1 s and never reuses
        # its id, so their state is dead (and would otherwise grow for ever)
        if len(self._contact) > 1:
            self._contact = {tid: c for tid, c in self._contact.items()
                             if c.t is None or t - c.t <= 1.5 or tid == face.track_id}
        looking = est - st.bias
        delta = cam - looking
        off = float(np.hypot(*delta))
        return delta, fade_between(off, s.full_below_deg, s.none_beyond_deg)

    # -- jobs --------------------------------------------------------------------------------
    def jobs(self, image: np.ndarray, faces: List[Face], t: float = 0.0) -> List[WarpJob]:
        s = self.settings
        out: List[WarpJob] = []
        if self.cache is not None:
            self.cache.tick()
        if not s.active:
            return out
        for face in faces:
            delta = np.array([s.pitch_deg, s.yaw_deg], np.float64)
            # Head pitch from the mesh has a per-person zero (how the head is held, the
            # forehead-chin line): frontal faces read -10..+10 deg, so pitch fades 10 deg later.
            fade_face = (fade_between(abs(face.yaw), s.full_below_deg, s.none_beyond_deg)
                         * fade_between(abs(face.pitch), s.full_below_deg + 10.0,
                                        s.none_beyond_deg + 10.0))
            if s.eye_contact:
                d_contact, fade_off = self._eye_contact_delta(face, image.shape, t)
                delta = delta + d_contact
                fade_face *= fade_off
            for k, side in enumerate(("right", "left")):
                job = self._eye_job(image, face, side, k, delta, fade_face)
                if job is not None:
                    out.append(job)
        return out

    @staticmethod
    def eye_roi(pts: np.ndarray, side: str) -> Tuple[np.ndarray, float, float]:
        """DeepWarp's eye ROI (module docstring, step 1): ``(centre, axis angle in radians,
        corner-to-corner width)`` in frame pixels; the ROI is ``2 x`` the width wide and
        ``1.6 x`` high. Also used by the model-driven effect (``warpcam.realtime.gaze_model``)."""
        ix = lm.eye_indices(side)
        a, b = pts[ix["outer"]].astype(np.float64), pts[ix["inner"]].astype(np.float64)
        if side == "left":  # keep the crop's x axis along image x
            a, b = b, a
        centre = lm.eye_contour(pts, side).astype(np.float64).mean(axis=0)
        return centre, math.atan2(b[1] - a[1], b[0] - a[0]), float(np.linalg.norm(b - a))

    @staticmethod
    def eye_fade(face: Face, k: int, fade_face: float) -> float:
        """Per-eye fade: the face's fade times the blink fade and the iris reliability."""
        return fade_face * fade_between(-float(face.eye_openness[k]), -0.20, -0.12) * float(
            np.clip(face.iris_confidence[k] * 2.0, 0.0, 1.0))

    def _eye_job(self, image, face: Face, side: str, k: int, delta, fade_face: float):
        pts = face.landmarks
        ix = lm.eye_indices(side)
        centre, angle, eye_w = self.eye_roi(pts, side)
        if eye_w < 4.0:
            return None
        roi_w, roi_h = 2.0 * eye_w, 1.6 * eye_w
        crop_w = int(np.clip(round(roi_w / 2.5), 24, 40))
        crop_h = int(round(0.8 * crop_w))
        A = roi_affine(centre, angle, roi_w, roi_h, crop_w, crop_h)
        scale = roi_w / crop_w
        iris_d = float(face.iris_diameter_px[k])
        fade = self.eye_fade(face, k, fade_face)
        if fade > 0.01:  # an occluder (hand, dark lenses) must not be bent
            fade *= eye_visibility(image, face, side, k)
        if fade <= 0.01 or iris_d <= 2.0:
            return None
        d_frame_dir = gaze_shift_px(delta[0], delta[1], iris_d)
        # gaze_shift_px gives the shift in the eye frame (x along the eye axis); rotate to frame.
        c_, s_ = math.cos(angle), math.sin(angle)
        rot = np.array([[c_, -s_], [s_, c_]])
        shift_frame = rot @ d_frame_dir * fade
        shift_crop = rot.T @ shift_frame / scale
        crop_pts = to_crop(pts[ix["upper"] + ix["lower"] + ix["iris"][:1]], A)
        n_up = len(ix["upper"])
        upper, lower, iris_c = crop_pts[:n_up], crop_pts[n_up:-1], crop_pts[-1]
        r = 0.5 * iris_d / scale
        key = (face.track_id, side)
        signature = np.concatenate([crop_pts.ravel(), [r, crop_w, crop_h], shift_crop])
        fields = self.cache.get(key, signature) if self.cache is not None else None
        if fields is None:
            ew = iris_shift_flow(crop_h, crop_w, upper, lower, iris_c, r, shift_crop,
                                 self.settings.lid_follow)
            palette = None
            if ew.reveal.max() > 0.05:
                colour = sclera_colour(image, A, (crop_h, crop_w), ew.mask, iris_c, r)
                if colour is not None:
                    palette = (np.clip(ew.reveal * 0.9, 0, 1).astype(np.float32), colour * 0.95)
            alpha = cv2.dilate(ew.mask, np.ones((3, 3), np.uint8))
            alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
            alpha[ew.flow.any(axis=2)] = 1.0
            fields = (ew.flow, alpha, palette, ew.shift)
            if self.cache is not None:
                self.cache.put(key, signature, fields)
        flow, alpha, palette, shift_used = fields
        shift_frame = rot @ (shift_used * scale)
        return WarpJob(crop_to_frame=A, flow=flow, alpha=alpha, palette_mix=palette,
                       kind=f"eye_{side}", face_id=face.track_id,
                       meta=dict(iris_shift_px=shift_frame, fade=fade,
                                 delta_deg=tuple(float(x) for x in delta)))
