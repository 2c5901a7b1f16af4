"""The gaze effect: eye contact and fixed gaze redirection. One part (:class:`GazePlanner`)
decides per eye what to request (the gaze change, the fades, eye contact); a fulfiller turns the
requests into warp jobs: :class:`LandmarkEyeWarp` (below, no trained weights) or the DeepWarp
network (:class:`~warpcam.realtime.effects.gaze_model.ModelEyeWarp`, ``--gaze-model``).

Landmark-driven gaze correction: moves the iris and pupil inside the eye opening by a gaze
change in degrees, with a backward-warp flow field; no trained weights.

Method (our construction, following the problem statement of DeepWarp, Ganin et al. ECCV 2016,
Sec. 3, with geometry instead of a learned flow):

1. **ROI** per eye: the one ROI rule of :mod:`warpcam.core.eyes` (DeepWarp's crop, Sec. 4).
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
import os
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from warpcam.core import jit as _jit
from warpcam.core import landmarks as lm
from warpcam.core.eyes import (EYEBALL_PER_IRIS, IRIS_DIAMETER_MM, eye_in_head_angles,  # noqa: F401
                               eye_roi, gaze_shift_px, roi_affine_for)
from warpcam.core.eyewarp import EyeWarp, iris_shift_flow  # noqa: F401
from warpcam.core.geometry import (CropCache, fade_between, pixel_grid, polygon_mask,  # noqa: F401
                                   smoothstep, to_crop)
from warpcam.core.types import Face, WarpJob
from warpcam.realtime.effects.base import (Effect, EffectError, EffectSpec, FrameCrops,
                                           LiveSettings, setting, validate)
from warpcam.realtime.smoothing import OneEuroFilter


_JIT_MODULE = "warpcam.core._jitloops"
#: Per side, the landmarks an eye job reads: the upper lid, the lower lid, the iris centre.
_JOB_POINTS = {side: np.array(lm.eye_indices(side)["upper"] + lm.eye_indices(side)["lower"]
                              + lm.eye_indices(side)["iris"][:1]) for side in ("right", "left")}

#: Widest eye box (pixels) that :func:`eye_visibility` measures at full resolution.
VISIBILITY_MAX_W = 48


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
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    x0 = max(int(math.floor(lo[0])) - 1, 0)
    y0 = max(int(math.floor(lo[1])) - 1, 0)
    x1 = int(math.ceil(hi[0])) + 2
    y1 = int(math.ceil(hi[1])) + 2
    crop = image[y0:y1, x0:x1]
    if crop.shape[0] < 3 or crop.shape[1] < 3:
        return 1.0
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    c = p[lm.eye_indices(side)["iris"][0]] - (x0, y0)
    r = 0.5 * float(face.iris_diameter_px[k])
    poly = poly - (x0, y0)
    if grey.shape[1] > VISIBILITY_MAX_W:
        # A large eye (close-up, 4K) is judged at most VISIBILITY_MAX_W px wide: the contrast of
        # two grey-level statistics does not need every pixel (area averaging keeps them), and
        # the cost stays flat (it was 0.44 ms for a 74 px eye, 0.1 ms at 48).
        f = VISIBILITY_MAX_W / grey.shape[1]
        size = (VISIBILITY_MAX_W, max(int(round(grey.shape[0] * f)), 3))
        fx, fy = size[0] / grey.shape[1], size[1] / grey.shape[0]
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        poly = (poly + 0.5) * (fx, fy) - 0.5
        c = (c + 0.5) * (fx, fy) - 0.5
        r = r * fx
    mask = np.zeros(grey.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    loops = _jit.load(_JIT_MODULE)
    if loops is not None:  # the compiled statistics (warpcam.core.jit), same values
        contrast = loops.visibility_contrast(grey, mask, float(c[0]), float(c[1]), float(r))
        if contrast != contrast:  # NaN: too few iris or sclera pixels
            return 1.0
        return float(smoothstep((contrast - 6.0) / 10.0))
    xs, ys = pixel_grid(*grey.shape)
    d = np.hypot(xs - c[0], ys - c[1])
    iris = grey[(mask > 0) & (d < 0.7 * r)]
    sclera = grey[(mask > 0) & (d > 1.2 * r)]
    if iris.size < 3 or sclera.size < 3:
        return 1.0
    contrast = float(np.percentile(sclera, 75)) - float(np.median(iris))
    return float(smoothstep((contrast - 6.0) / 10.0))


def sclera_colour(crops: FrameCrops, crop_to_frame: np.ndarray, size, mask: np.ndarray,
                  iris_centre, iris_radius: float) -> Optional[np.ndarray]:
    """Median BGR (0-255, float32) of the brighter half of the visible sclera (the opening minus
    1.3 iris radii around the iris centre), read through the crop service (bilinear, border
    replicated), or ``None`` when fewer than 6 sclera pixels are visible."""
    h, w = size
    rgb = crops.numpy(np.asarray(crop_to_frame)[None], (h, w))[0]  # (3, h, w) RGB in [0, 1]
    crop = np.rint(rgb[::-1].transpose(1, 2, 0) * 255.0).astype(np.uint8)
    ys, xs = pixel_grid(h, w)
    away = np.hypot(xs - iris_centre[0], ys - iris_centre[1]) > 1.3 * iris_radius
    px = crop[(mask > 0.9) & away]
    if len(px) < 6:
        return None
    lum = px.astype(np.int32).sum(axis=1)
    bright = px[lum >= np.median(lum)]
    return np.median(bright, axis=0).astype(np.float32)


@dataclass(frozen=True)
class GazeSettings:
    """What the gaze effect does (live settings; see :mod:`warpcam.realtime.effects.base`).

    Angles in degrees: pitch positive = up, yaw positive = toward the subject's left.
    """

    effect_name: ClassVar[str] = "gaze"

    pitch_deg: float = setting(0.0, flag="--gaze-pitch", lo=-30.0, hi=30.0, unit="deg", step=1.0,
                               help="fixed gaze redirection up (+) or down (-), degrees")
    yaw_deg: float = setting(0.0, flag="--gaze-yaw", lo=-30.0, hi=30.0, unit="deg", step=1.0,
                             help="fixed gaze redirection toward the subject's left (+), degrees")
    eye_contact: bool = setting(False, flag="--eye-contact", live_source_default=True,
                                help="redirect the gaze toward the camera (default: on for a "
                                     "webcam, off for files and images)")
    camera_offset_cm: float = setting(10.0, flag="--camera-offset-cm", lo=-30.0, hi=60.0,
                                      unit="cm", step=0.5,
                                      help="for --eye-contact: how far the camera lens sits above "
                                           "the middle of the screen you read, in cm (measure "
                                           "it; negative when the camera is below). Default 10, "
                                           "a laptop's camera above a 13-15 inch screen; a "
                                           "webcam on a monitor is 15-20")
    fov_deg: float = setting(60.0, lo=10.0, hi=170.0, unit="deg", cli=False,
                             help="the camera's horizontal field of view (viewing distance)")
    full_below_deg: float = setting(10.0, lo=0.0, hi=90.0, unit="deg", cli=False,
                                    help="head turn and gaze offset below which the full "
                                         "correction applies")
    none_beyond_deg: float = setting(35.0, lo=0.0, hi=90.0, unit="deg", cli=False,
                                     help="head turn and gaze offset beyond which nothing is "
                                          "corrected (head pitch fades 10 degrees later)")
    lid_follow: tuple = setting((1.0, 0.35), cli=False,
                                help="how much the upper and lower lids follow a vertical gaze "
                                     "change (lid-eye coordination)")
    enabled: bool = setting(True, cli=False, help="gaze correction on or off (preview key g)")

    def __post_init__(self):
        validate(self)

    @property
    def active(self) -> bool:
        return self.enabled and (self.eye_contact or abs(self.pitch_deg) > 1e-6
                                 or abs(self.yaw_deg) > 1e-6)


@dataclass
class EyeRequest:
    """What the planner asks of a fulfiller for one eye of one face (frame pixels, degrees).

    Attributes:
        face, side, k: the face, ``"right"``/``"left"`` (the subject's) and its index (0/1).
        delta_deg: requested gaze change ``(pitch, yaw)`` before the fade.
        fade: in ``(0.01, 1]``: the product of the head-turn, gaze-offset, blink, iris
            reliability and occluder fades; the fulfiller scales the change by it.
        centre, angle, eye_w: the eye ROI (:func:`warpcam.core.eyes.eye_roi`).
    """

    face: Face
    side: str
    k: int
    delta_deg: np.ndarray
    fade: float
    centre: np.ndarray
    angle: float
    eye_w: float

    @property
    def meta(self) -> dict:
        return dict(fade=self.fade, delta_deg=tuple(float(x) for x in self.delta_deg))


class _EyeContactState:
    """Per-track gaze estimate for eye contact: smoothed harder than the iris (DESIGN.md), and
    a slowly adapting bias that assumes the person mostly looks at the screen centre."""

    def __init__(self):
        self.filter = OneEuroFilter(min_cutoff=0.4, beta=0.01, d_cutoff=1.0)
        self.bias: Optional[np.ndarray] = None
        self.t: Optional[float] = None


def eye_fade(face: Face, k: int, fade_face: float) -> float:
    """Per-eye fade: the face's fade times the blink fade and the iris reliability."""
    return fade_face * fade_between(-float(face.eye_openness[k]), -0.20, -0.12) * min(
        max(float(face.iris_confidence[k]) * 2.0, 0.0), 1.0)


class GazePlanner:
    """Decides, per eye, the gaze change to request: the fixed redirection plus eye contact,
    faded by head turn (full below ``full_below_deg``, none beyond ``none_beyond_deg``; head
    pitch 10 degrees later), gaze offset, blink, iris reliability and occluders."""

    def __init__(self):
        self._contact: Dict[int, _EyeContactState] = {}

    def _eye_contact_delta(self, s: GazeSettings, face: Face, shape, t: float
                           ) -> Tuple[np.ndarray, float]:
        """Gaze change (pitch, yaw) toward the camera and the gaze-offset fade."""
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
        # Gaze estimate: head pose plus the eye's rotation in the head (core.eyes, the one
        # definition the gaze model's training labels use too).
        eye_rot = [eye_in_head_angles(pts, side, iris_d) for side in ("right", "left")]
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

    def plan(self, s: GazeSettings, image: np.ndarray, faces: Sequence[Face], t: float
             ) -> List[EyeRequest]:
        """The eye requests of one frame (none while ``s`` is inactive)."""
        out: List[EyeRequest] = []
        if not s.active:
            return out
        for face in faces:
            delta = np.array([s.pitch_deg, s.yaw_deg], np.float64)
            # Head pitch from the mesh has a per-person zero (how the head is held, the
            # forehead-chin line): frontal faces read -10..+10 deg, so pitch fades 10 deg later.
            fade_face = (fade_between(abs(face.yaw), s.full_below_deg, s.none_beyond_deg)
                         * fade_between(abs(face.pitch), s.full_below_deg + 10.0,
                                        s.none_beyond_deg + 10.0))
            if max(eye_fade(face, k, 1.0) for k in (0, 1)) <= 0.01:
                # both eyes shut (or no reliable iris): nothing to redirect, and the iris
                # position says nothing about the gaze, so the eye-contact estimate is not fed
                continue
            if s.eye_contact:
                d_contact, fade_off = self._eye_contact_delta(s, face, image.shape, t)
                delta = delta + d_contact
                fade_face *= fade_off
            for k, side in enumerate(("right", "left")):
                centre, angle, eye_w = eye_roi(face.landmarks, side)
                if eye_w < 4.0:
                    continue
                fade = eye_fade(face, k, fade_face)
                if fade > 0.01:  # an occluder (hand, dark lenses) must not be bent
                    fade *= eye_visibility(image, face, side, k)
                if fade <= 0.01 or float(face.iris_diameter_px[k]) <= 2.0:
                    continue
                out.append(EyeRequest(face, side, k, delta, fade, centre, angle, eye_w))
        return out


class LandmarkEyeWarp:
    """Fulfils eye requests with the landmark-driven iris warp (:mod:`warpcam.core.eyewarp`):
    crop 24-40 px wide, 0.8 as high; the LCM palette toward the sclera colour of that eye where
    sclera is revealed. Each job's ``meta`` holds ``iris_shift_px`` (the frame-pixel
    displacement achieved), ``fade`` and the requested ``delta_deg``."""

    def __init__(self, cache: bool = True):
        #: crop-space fields reused while an eye holds still (see CropCache); None disables.
        self.cache: Optional[CropCache] = CropCache(tol=0.2) if cache else None

    def tick(self) -> None:
        if self.cache is not None:
            self.cache.tick()

    def fulfil(self, requests: Sequence[EyeRequest], s: GazeSettings, image: np.ndarray,
               crops: FrameCrops) -> List[WarpJob]:
        return [self._eye_job(r, s, crops) for r in requests]

    def _eye_job(self, r: EyeRequest, s: GazeSettings, crops: FrameCrops) -> WarpJob:
        face, side, k = r.face, r.side, r.k
        pts = face.landmarks
        ix = lm.eye_indices(side)
        roi_w = 2.0 * r.eye_w
        crop_w = min(max(int(round(roi_w / 2.5)), 24), 40)
        crop_h = int(round(0.8 * crop_w))
        A = roi_affine_for(r.centre, r.angle, r.eye_w, crop_w, crop_h)
        scale = roi_w / crop_w
        iris_d = float(face.iris_diameter_px[k])
        d_frame_dir = gaze_shift_px(r.delta_deg[0], r.delta_deg[1], iris_d)
        # gaze_shift_px gives the shift in the eye frame (x along the eye axis); rotate to frame.
        c_, s_ = math.cos(r.angle), math.sin(r.angle)
        rot = np.array([[c_, -s_], [s_, c_]])
        shift_frame = rot @ d_frame_dir * r.fade
        shift_crop = rot.T @ shift_frame / scale
        crop_pts = to_crop(pts[_JOB_POINTS[side]], A)
        n_up = len(ix["upper"])
        upper, lower, iris_c = crop_pts[:n_up], crop_pts[n_up:-1], crop_pts[-1]
        rad = 0.5 * iris_d / scale
        key = (face.track_id, side)
        signature = fields = None
        if self.cache is not None:
            signature = np.concatenate([crop_pts.ravel(), [rad, crop_w, crop_h], shift_crop])
            fields = self.cache.get(key, signature)
        if fields is None:
            ew = iris_shift_flow(crop_h, crop_w, upper, lower, iris_c, rad, shift_crop,
                                 s.lid_follow)
            palette = None
            if ew.reveal.max() > 0.05:
                colour = sclera_colour(crops, A, (crop_h, crop_w), ew.mask, iris_c, rad)
                if colour is not None:
                    palette = (np.clip(ew.reveal * 0.9, 0, 1).astype(np.float32), colour * 0.95)
            loops = _jit.load(_JIT_MODULE)
            if loops is not None:
                alpha = loops.eye_alpha(ew.mask, ew.flow)
            else:
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
                       meta=dict(iris_shift_px=shift_frame, **r.meta))


class GazeEffect(Effect):
    """The gaze effect: :class:`GazePlanner` decides, ``fulfiller`` warps
    (:class:`LandmarkEyeWarp` by default, the DeepWarp network with ``--gaze-model``)."""

    name = "gaze"

    def __init__(self, settings, fulfiller=None, cache: bool = True):
        if not isinstance(settings, LiveSettings):
            settings = LiveSettings(settings)
        super().__init__(settings)
        self.planner = GazePlanner()
        self.fulfiller = fulfiller if fulfiller is not None else LandmarkEyeWarp(cache=cache)

    @property
    def cache(self) -> Optional[CropCache]:
        return getattr(self.fulfiller, "cache", None)

    def jobs(self, frame: np.ndarray, faces: Sequence[Face], t: float = 0.0,
             crops: Optional[FrameCrops] = None) -> List[WarpJob]:
        if crops is None:  # called outside a pipeline: the CPU crop service
            crops = FrameCrops(None, frame)
        s = self.settings.get()  # once per frame: a concurrent update applies next frame
        self.fulfiller.tick()
        requests = self.planner.plan(s, frame, faces, t)
        return self.fulfiller.fulfil(requests, s, frame, crops) if requests else []

    def hud(self) -> str:
        s = self.settings.get()
        mode = "model" if not isinstance(self.fulfiller, LandmarkEyeWarp) else "landmark"
        return f"gaze {'on' if s.enabled else 'off'} ({mode})"

    def close(self) -> None:
        close = getattr(self.fulfiller, "close", None)
        if close is not None:
            close()


def _build(settings, options) -> GazeEffect:
    """``options["model"]``: a loaded gaze model, or a ``.pt2`` path (``""``: the bundled one),
    loaded and checked here, before the first frame."""
    model = options.get("model")
    if model is None:
        return GazeEffect(settings)
    from warpcam.realtime.effects.gaze_model import ModelEyeWarp
    if isinstance(model, (str, os.PathLike)):
        from warpcam.realtime.gaze_model import GazeModelError, load_gaze_model
        try:
            model = load_gaze_model(model or None)
        except GazeModelError as exc:
            raise EffectError(str(exc)) from None
    return GazeEffect(settings, ModelEyeWarp(model))


SPEC = EffectSpec(
    name="gaze", settings_cls=GazeSettings, factory=_build, order=10,
    help="gaze correction: eye contact and fixed redirection (DeepWarp)",
    extra_args=(("--gaze-model", dict(
        nargs="?", const="", default=None, metavar="FILE",
        help="redirect the gaze with a trained DeepWarp network (.pt2) instead of the "
             "landmark-driven warp; without FILE: the bundled gaze_deepwarp.pt2 (default: the "
             "landmark-driven warp)")),),
    hud_keys=(("g", "enabled", None),))
