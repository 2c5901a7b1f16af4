"""KeepSmiling (seed 003): make every non-smiling face of a photo or video smile with the
SplitGAN latent translation of ``training/keepsmiling`` (``--keep-smiling [--strength S]
[--keep-smiling-model FILE]``).

This module never imports ``training/``: the artifact (kind ``warpcam.keepsmiling.split``)
carries encoder, decoder, the translation ``t`` and the metadata.

Convention block:

- **Crop** (the seed's rule, :func:`warpcam.core.mouth.mouth_box_points`): nose tip (FaceMesh
  1) and mouth corners (61, 291) give the axis-aligned box ``f0 -+ (b + a_vec)``, clamped to the
  frame; it is sampled at 64 x 64 (aspect not kept) through the compositor's crop service at
  ``k x 64`` and area-averaged (as the builder's crops), RGB in [0, 1].
- **Network**: ``(x, s) -> (edit, recon)``, ``edit = De(E(x) + s t)``, ``recon = De(E(x))``,
  both ``(N, 3, 64, 64)`` RGB [0, 1]; the effect passes ``s = TRANSLATION_GAIN * strength``
  (the bundled CPU SplitGAN draws a smile at about 4 t, next to nothing at 1 t).
- **Geometry** (the corners): the decoded 64 px mouth does not move the mouth corners where
  the tracker and the AU estimator see them, so the job's ``flow`` lifts and widens them with
  the landmark smile's AU12 displacement (:mod:`warpcam.realtime.effects.smile`) at a per-face
  factor ``lift`` chosen with the AU estimator (:func:`lift_needed`: the least factor for which
  the face's own landmarks, corners moved by ``LIFT_FOLLOW`` of the displacement, read at least
  ``threshold + LIFT_MARGIN``), times ``|strength|``; the warp is faded out with the mask and
  shrunk until fold-free, and the decoded mouth (colour and attention) is moved with it.
- **Paste-back at the face's real size**: one :class:`~warpcam.core.types.WarpJob` per face
  (``kind="mouth"``) on a pixel-aligned crop covering the box (``crop_to_frame`` an integer
  shift, so the crop *is* the frame's pixels, no resampling; ``flow`` the lift). ``color`` is the
  decoded ``edit`` resampled bicubically from the 64 px box to the frame pixels and
  colour-matched to the face: the per-channel map that takes ``recon``'s mean and spread in the
  mask to the face's (spread ratio clipped to [0.5, 2]). ``attention`` (GANimation's blend,
  1 = keep the frame) is ``1 - smoothstep(|edit - recon| / CHANGE_SCALE)`` (max over channels,
  blurred by 1 px at 64 px): the face keeps its own detail wherever the translation changes
  nothing, and only within ``LIP_MARGIN`` mouth widths of the outer lip contour. ``alpha`` is a
  feathered ellipse on the mouth (centre ``f0``, radii 1.4 ``|a|`` along the mouth and 0.9
  ``|b|`` across it, smoothstep edge over its outer 35 %, times a 6 % border window; the job's
  crop is the network's box grown to hold it, :func:`paste_box`. Before, 0.9 / 0.8 / 45 % inside
  the box faded the corners themselves): 0 on the crop border, so every pixel outside the mouth
  ellipses keeps its exact bytes.
- **Who is edited**: the AU estimator's smile score (:class:`warpcam.realtime.au.AUEstimator`,
  population neutral; 0.5 = GENKI-4K's smile boundary). With ``strength > 0`` faces scoring at
  least ``threshold`` are left alone (they smile already), so a second run over an output
  changes nothing more once the first made the faces smile; with ``strength < 0`` (remove a
  smile) only faces at or above it are edited. In video the decision has a hysteresis of 0.05
  per track, and the applied strength moves toward its target by ``follow`` per frame (the
  translation is smoothed per track). Faces beyond ``yaw_full``..``yaw_none`` degrees of yaw
  fade out (the training crops are frontal, ``|yaw| <= 20``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, List, Optional, Sequence

import cv2
import numpy as np

from warpcam.core import landmarks as lm
from warpcam.core.geometry import (border_window, fade_between, flow_jacobian_det, pixel_grid,
                                   smoothstep)
from warpcam.core.mouth import LIPS_INDEX, mouth_box_points, mouth_corners, mouth_roi
from warpcam.core.types import Face, WarpJob
from warpcam.realtime.effects.base import (Effect, EffectError, EffectSpec, FrameCrops,
                                           LiveSettings, setting, validate)
from warpcam.realtime.runtime import ModelError, load_model

MODEL_KIND = "warpcam.keepsmiling.split"
CROP = 64
#: Mask radii (fractions of ``|a|`` along the mouth and ``|b|`` across it) and the feather share
#: of the radius: the mouth corners (at about half the radius along the mouth) and where the
#: lift moves them lie in the mask's full-strength core. Chosen on the validation split.
MASK_RX, MASK_RY, MASK_FEATHER, MASK_BORDER = 1.4, 0.9, 0.35, 0.06
#: latent translation applied per unit of ``--strength``: ``De(E(x) + GAIN * strength * t)``.
#: The bundled CPU SplitGAN's decoded mouth barely changes at 1 x t (faint lighter teeth, no
#: smile); at about 4 x t it draws a smiling mouth (teeth, raised corner lines). Chosen on the
#: face data set's *validation* split (benchmarks.keepsmiling --split val).
TRANSLATION_GAIN = 4.0
#: Geometry: the mouth corners are lifted and widened by the landmark smile's AU12 displacement
#: (:mod:`warpcam.realtime.effects.smile`) times a per-face factor ``k`` in [0, ``LIFT_MAX``],
#: the least on a grid of ``LIFT_STEP`` for which the AU estimator, on the face's landmarks with
#: the corners moved by ``LIFT_FOLLOW`` of that displacement (the tracker follows a third to a
#: half of a warp's corner motion, measured on the validation split), reads at least ``threshold +
#: LIFT_MARGIN``; times ``|strength|``. The 64 px decoded mouth alone does not move the
#: corners where the tracker, hence the estimator, sees them.
LIFT_MAX, LIFT_STEP, LIFT_FOLLOW, LIFT_MARGIN = 4.0, 0.125, 0.35, 0.2
#: the lift is shrunk (x 0.7) until the warp is fold-free: Jacobian determinant above this
LIFT_MIN_DET = 0.25
#: the decoded mouth replaces the frame only within this many mouth widths of the outer lip
#: contour (then fades over as many): beyond it the 64 px output paints pale smears on the
#: skin at the translation strength that draws a smile (None: no limit)
LIP_MARGIN = 0.12
GAIN_RANGE = (0.5, 2.0)
#: a change of the decoded mouth (RGB [0, 1], max over channels) from which the network's
#: output replaces the frame fully (attention 0)
CHANGE_SCALE = 0.12
#: mean absolute difference (RGB [0, 1]) of a track's mouth crop from its last one beyond which
#: it is taken to be another face (next photo of a folder, a scene cut): no smoothing then.
NEW_FACE_DIFF = 0.12


def _default_model() -> Path:
    from importlib import resources
    return Path(str(resources.files("warpcam.models") / "keepsmiling_split.pt2"))


#: The bundled SplitGAN, used unless ``--keep-smiling-model FILE`` names another.
DEFAULT_MODEL = _default_model()


@dataclass(frozen=True)
class KeepSmilingSettings:
    """KeepSmiling: on/off, translation strength, smile threshold."""

    effect_name: ClassVar[str] = "keep_smiling"

    enabled: bool = setting(False, flag="--keep-smiling",
                            help="make every non-smiling face smile (KeepSmiling SplitGAN, "
                                 "seed 003); faces that smile already are left alone")
    strength: float = setting(1.0, flag="--strength", lo=-2.0, hi=2.0, step=0.1,
                              help="KeepSmiling strength: 1 decodes the latent translation at "
                                   f"{TRANSLATION_GAIN:g} t and lifts the mouth corners as far as "
                                   "the AU estimator needs to read a smile; 0 changes nothing, "
                                   "< 0 removes smiles instead")
    threshold: float = setting(0.5, flag="--keep-smiling-threshold", lo=0.0, hi=1.0,
                               help="AU estimator smile score from which a face counts as "
                                    "smiling (0.5: GENKI-4K's boundary)")

    def __post_init__(self):
        validate(self)

    @property
    def active(self) -> bool:
        return self.enabled and abs(self.strength) > 1e-3


class KeepSmilingModelError(ModelError):
    """A KeepSmiling model file that cannot be used (one-line message)."""


class KeepSmilingModel:
    """A loaded SplitGAN: ``model(crops (N, 3, 64, 64) RGB [0, 1], strength (N,)) ->
    (edit, recon)`` numpy float32 ``(N, 3, 64, 64)`` RGB [0, 1]. Use
    :func:`load_keepsmiling_model`."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.meta = runtime.meta.to_dict()
        self.path, self.backend = runtime.path, runtime.backend

    def __call__(self, crops, strength):
        s = np.asarray(strength, np.float32).reshape(-1, 1)
        edit, recon = self.runtime(np.ascontiguousarray(crops, np.float32), s)[:2]
        return np.asarray(edit, np.float32), np.asarray(recon, np.float32)


def load_keepsmiling_model(path=None, device: str = "auto", threads: Optional[int] = 1
                           ) -> KeepSmilingModel:
    """Load and check a KeepSmiling SplitGAN before the first frame (kind
    ``warpcam.keepsmiling.split``, a 64 x 64 mouth crop, outputs of the right shapes).

    Raises:
        KeepSmilingModelError: missing, empty, refused or foreign file, wrong crop or outputs.
    """
    path = Path(path) if path else DEFAULT_MODEL
    try:
        rt = load_model(path, kind=MODEL_KIND, device=device, threads=threads,
                        label="KeepSmiling model")
    except ModelError as exc:
        raise KeepSmilingModelError(str(exc)) from None
    if (rt.meta.crop_h, rt.meta.crop_w) != (CROP, CROP) or rt.meta.roi != "mouth":
        raise KeepSmilingModelError(f"{path}: a {rt.meta.roi} crop of {rt.meta.crop_h}x"
                                    f"{rt.meta.crop_w}; KeepSmiling needs a 64x64 mouth crop")
    model = KeepSmilingModel(rt)
    try:
        edit, recon = model(np.full((2, 3, CROP, CROP), 0.5, np.float32), np.ones(2))
    except Exception as exc:
        raise KeepSmilingModelError(f"{path}: the program fails on a test input "
                                    f"({type(exc).__name__}: {str(exc)[:120]})") from None
    if edit.shape != (2, 3, CROP, CROP) or recon.shape != edit.shape:
        raise KeepSmilingModelError(f"{path}: outputs of the wrong shape")
    return model


def face_mouth_box(landmarks: np.ndarray, frame_shape) -> tuple:
    """``(box (x0, y0, x1, y1) float edges, f0 (2,), a_vec (2,), b (2,))`` of the seed's rule
    on FaceMesh points, clamped to the frame."""
    p = np.asarray(landmarks, np.float64)[:, :2]
    c_r, c_l = mouth_corners(p)
    nose = p[lm.NOSE_TIP]
    box, _ = mouth_box_points(nose, c_r, c_l, frame_shape)
    f0 = 0.5 * (c_r + c_l)
    b = f0 - nose
    e = (c_l if c_l[0] >= c_r[0] else c_r) - f0
    a = math.sqrt(float(e @ e + b @ b))
    return box, f0, e / (np.linalg.norm(e) + 1e-9) * a, b


def box_to_crop_affine(box, size: int = CROP) -> np.ndarray:
    """``crop_to_frame`` of a ``size x size`` crop spanning the box edges."""
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = max(x1 - x0, 1e-3) / size, max(y1 - y0, 1e-3) / size
    return np.array([[sx, 0.0, x0 + 0.5 * sx], [0.0, sy, y0 + 0.5 * sy]])


def pixel_grid_of(box, frame_shape) -> tuple:
    """``(ox, oy, w, h)``: the integer frame pixels whose centres lie in the box."""
    H, W = frame_shape[:2]
    ox = max(int(math.ceil(box[0] - 0.5 + 1e-9)), 0)
    oy = max(int(math.ceil(box[1] - 0.5 + 1e-9)), 0)
    ex, ey = min(int(math.floor(box[2] - 0.5)), W - 1), min(int(math.floor(box[3] - 0.5)), H - 1)
    return ox, oy, max(ex - ox + 1, 0), max(ey - oy + 1, 0)


def mouth_mask(h: int, w: int, centre, axis, across) -> np.ndarray:
    """``h x w`` float32 feathered ellipse (module docstring): ``centre`` crop pixels, ``axis``
    and ``across`` the half-axes as vectors (crop pixels)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    du, dv = u - float(centre[0]), v - float(centre[1])
    ra, rb = max(float(np.linalg.norm(axis)), 1e-3), max(float(np.linalg.norm(across)), 1e-3)
    ea = np.asarray(axis, np.float64) / ra
    eb = np.array([-ea[1], ea[0]])
    r = np.sqrt(((du * ea[0] + dv * ea[1]) / ra) ** 2 + ((du * eb[0] + dv * eb[1]) / rb) ** 2)
    m = smoothstep((1.0 - r) / MASK_FEATHER).astype(np.float32)
    return (m * border_window(h, w, MASK_BORDER)).astype(np.float32)


def lips_mask(landmarks, grid) -> np.ndarray:
    """``h x w`` float32 in [0, 1] on the job's crop ``grid``: 1 inside the outer lip contour
    grown by ``LIP_MARGIN`` mouth widths, falling to 0 over another ``LIP_MARGIN`` (where the
    decoded mouth may replace the frame; the network's 64 px output elsewhere is a blurred
    guess at skin)."""
    ox, oy, w, h = grid
    p = np.asarray(landmarks, np.float64)[:, :2]
    mw = float(np.linalg.norm(p[lm.MOUTH_LEFT_CORNER] - p[lm.MOUTH_RIGHT_CORNER]))
    ring = lm.LIPS_OUTER_UPPER + lm.LIPS_OUTER_LOWER[::-1]
    poly = np.round((p[ring] - [ox, oy]) * 4).astype(np.int32)
    inside = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inside, [poly], 1, shift=2)
    dist = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
    m = max(LIP_MARGIN * mw, 1.0)
    return (1.0 - smoothstep((dist - m) / m)).astype(np.float32)


def mask_axes(a_vec, b) -> tuple:
    """``(axis, across)`` half-axis vectors (frame pixels) of the mouth mask ellipse."""
    return (MASK_RX * np.asarray(a_vec, np.float64),
            MASK_RY * float(np.linalg.norm(b)) * np.array([0.0, 1.0]))


def paste_box(box, f0, a_vec, b, frame_shape) -> tuple:
    """The frame box of a face's job: the network's mouth box grown to hold the mask ellipse
    (which reaches past the box along the mouth), clamped to the frame."""
    axis, across = mask_axes(a_vec, b)
    ra, rb = float(np.linalg.norm(axis)), float(np.linalg.norm(across))
    ea = axis / max(ra, 1e-9)
    hx = math.hypot(ra * ea[0], rb * ea[1])
    hy = math.hypot(ra * ea[1], rb * ea[0])
    H, W = frame_shape[:2]
    return (max(min(box[0], f0[0] - hx), 0.0), max(min(box[1], f0[1] - hy), 0.0),
            min(max(box[2], f0[0] + hx), float(W)), min(max(box[3], f0[1] + hy), float(H)))


def network_crops(crops: FrameCrops, boxes: Sequence, frame_shape) -> np.ndarray:
    """``(N, 3, 64, 64)`` float32 RGB [0, 1] crops of the boxes, area-averaged from ``k x 64``
    (``k`` = the box's pixels per crop pixel, 1..4) like the training crops."""
    out = np.empty((len(boxes), 3, CROP, CROP), np.float32)
    for i, box in enumerate(boxes):
        scale = max(box[2] - box[0], box[3] - box[1]) / CROP
        k = int(min(max(math.floor(scale), 1), 4)) if scale > 1.5 else 1
        big = crops.numpy(box_to_crop_affine(box, CROP * k)[None], (CROP * k, CROP * k))[0]
        out[i] = big.reshape(3, CROP, k, CROP, k).mean(axis=(2, 4)) if k > 1 else big
    return out


def _mouth_frame(p: np.ndarray) -> tuple:
    """``(centre (2,), R (2, 2), mouth width px)``: ``(q = (p - centre) @ R)`` puts frame pixels
    in the mouth's frame (x along the corners, toward the subject's left; y down)."""
    c, ang, mw = mouth_roi(p)
    ca, sa = math.cos(ang), math.sin(ang)
    return c, np.array([[ca, -sa], [sa, ca]]), mw


_MOVED = [lm.MOUTH_RIGHT_CORNER, lm.MOUTH_LEFT_CORNER] + list(LIPS_INDEX)
_NONE = np.zeros((0, 2))


def _moved_measures(face: Face, lift: float) -> dict:
    """The AU estimator's raw measures of ``face`` once the mouth corners and lips have moved by
    ``LIFT_FOLLOW`` times the landmark smile's displacement at strength ``lift``."""
    from warpcam.realtime import au
    from warpcam.realtime.effects.smile import mouth_displacements
    p = np.asarray(face.landmarks, np.float64)[:, :2].copy()
    c, R, mw = _mouth_frame(p)
    q = (p[_MOVED] - c) @ R
    _, d = mouth_displacements(dict(corners=q[:2], lips=q[2:], cheeks=_NONE, anchors=_NONE),
                               lift, mw)
    p[_MOVED] += LIFT_FOLLOW * (d[:len(_MOVED)] @ R.T)
    return au.measure(np.concatenate([p, np.asarray(face.z, np.float64)[:, None]], axis=1))


def predicted_smile(face: Face, neutral: dict, lift: float) -> float:
    """The AU estimator's smile score of ``face`` with its corners and lips moved as
    :func:`_moved_measures` (``neutral``: the estimator's neutral for this face)."""
    from warpcam.realtime import au
    return au.smile_score(au.intensities(_moved_measures(face, lift), neutral))


def lift_needed(face: Face, neutral: dict, threshold: float, sign: float) -> float:
    """The least lift ``k`` in ``(0, LIFT_MAX]`` (a multiple of ``LIFT_STEP``) for which
    :func:`predicted_smile` is at least ``threshold + LIFT_MARGIN`` (``sign > 0``) or below
    ``threshold - LIFT_MARGIN`` (``sign < 0``, lowering the corners); ``LIFT_MAX`` when none
    is. The moved points enter the AU12 measure linearly (the head frame rests on points that do
    not move, and the displacement is linear in ``k`` for one sign), so two measures give it for
    every ``k``; the score is monotonic in it (bisection on the grid)."""
    from warpcam.realtime import au
    raw0 = _moved_measures(face, 0.0)
    slope = _moved_measures(face, math.copysign(1.0, sign))["AU12"] - raw0["AU12"]

    def ok(k):
        raw = dict(raw0)
        raw["AU12"] = raw0["AU12"] + slope * k
        v = au.smile_score(au.intensities(raw, neutral))
        return v >= threshold + LIFT_MARGIN if sign > 0 else v < threshold - LIFT_MARGIN
    lo, hi = 0, int(round(LIFT_MAX / LIFT_STEP))
    if not ok(hi * LIFT_STEP):
        return LIFT_MAX
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid * LIFT_STEP):
            hi = mid
        else:
            lo = mid
    return hi * LIFT_STEP


def lift_flow(landmarks: np.ndarray, grid, lift: float, mask: np.ndarray) -> tuple:
    """``(flow h x w x 2, corner displacement (2, 2) px)``: the landmark smile's thin-plate warp
    (:func:`warpcam.realtime.effects.smile.smile_flow`) at strength ``lift`` on the job's
    pixel-aligned crop ``grid``: corners, lips and cheeks displaced in the mouth's frame, nose,
    chin and the crop border pinned, faded out with the ``mask`` (so no pixel moves where the
    mask does not replace the frame) and shrunk until fold-free (Jacobian determinant > 0.25)."""
    from warpcam.realtime.effects.smile import _border_points, mouth_displacements, smile_flow
    ox, oy, w, h = grid
    p = np.asarray(landmarks, np.float64)[:, :2]
    c, R, mw = _mouth_frame(p)
    cheeks = lm.CHEEK_RIGHT + lm.CHEEK_LEFT
    anchors = [lm.NOSE_TIP, 2, 98, 327, lm.CHIN, 199]
    off = np.array([ox, oy], np.float64)
    border = (np.asarray(_border_points(h, w), np.float64) + off - c) @ R

    def m(idx):
        return (p[idx] - c) @ R
    src_m, d_m = mouth_displacements(
        dict(corners=m(_MOVED[:2]), lips=m(_MOVED[2:]), cheeks=m(cheeks),
             anchors=np.concatenate([m(anchors), border])), lift, mw)
    src = src_m @ R.T + c - off
    keep = np.all((src > -2) & (src < [w + 1, h + 1]), axis=1)
    src, d = src[keep], (d_m @ R.T)[keep]
    step = max(3, int(math.ceil(max(h, w) / 48)))
    flow, shrink = np.zeros((h, w, 2), np.float32), 1.0
    for _ in range(6):
        flow = smile_flow(h, w, src, d * shrink, grid_step=step) * mask[..., None]
        if flow_jacobian_det(flow).min() > LIFT_MIN_DET:
            break
        shrink *= 0.7
    return flow.astype(np.float32), (d_m @ R.T)[:2] * shrink


class _Track:
    __slots__ = ("strength", "lift", "smiling", "key", "job", "crop")

    def __init__(self):
        self.strength, self.lift, self.smiling = 0.0, 0.0, None
        self.key, self.job, self.crop = None, None, None


class KeepSmilingEffect(Effect):
    """The KeepSmiling effect (module docstring).

    Args:
        settings: :class:`KeepSmilingSettings` (or its :class:`LiveSettings`).
        model: a :class:`KeepSmilingModel` (or a callable with its signature).
        follow: per-frame factor by which a track's strength moves toward its target (video).
        hysteresis: half-width of the smile-score band in which a track keeps its decision.
        au: an :class:`~warpcam.realtime.au.AUEstimator` (default: population neutral).
    """

    name = "keep_smiling"

    def __init__(self, settings, model, follow: float = 0.35, hysteresis: float = 0.05,
                 yaw_full: float = 20.0, yaw_none: float = 35.0, au=None):
        if not isinstance(settings, LiveSettings):
            settings = LiveSettings(settings)
        super().__init__(settings)
        from warpcam.realtime.au import AUEstimator
        self.model = model
        self.au = au if au is not None else AUEstimator(calibrate=False)
        self.follow, self.hysteresis = follow, hysteresis
        self.yaw_full, self.yaw_none = yaw_full, yaw_none
        self.tracks: dict = {}
        self.calls = 0
        self.last: list = []  # per face of the last frame: dict(track, smile, edited, strength)

    def hud(self) -> str:
        s = self.settings.get()
        return f"keep smiling {s.strength:+.1f}" if s.enabled else "keep smiling off"

    def _wants_edit(self, tr: _Track, smile: float, s) -> bool:
        th = s.threshold
        if tr.smiling is None:
            tr.smiling = smile >= th
        elif tr.smiling and smile < th - self.hysteresis:
            tr.smiling = False
        elif not tr.smiling and smile >= th + self.hysteresis:
            tr.smiling = True
        return (not tr.smiling) if s.strength > 0 else tr.smiling

    def jobs(self, frame: np.ndarray, faces: Sequence[Face], t: float = 0.0,
             crops: Optional[FrameCrops] = None) -> List[WarpJob]:
        s = self.settings.get()
        self.last = []
        if not s.enabled:
            self.tracks.clear()
            return []
        geo = []
        for face in faces:
            box, f0, a_vec, b = face_mouth_box(face.landmarks, frame.shape)
            grid = pixel_grid_of(paste_box(box, f0, a_vec, b, frame.shape), frame.shape)
            if grid[2] >= 8 and grid[3] >= 8:
                geo.append((face, box, f0, a_vec, b, grid))
        self.tracks = {k: v for k, v in self.tracks.items()
                       if k in {g[0].track_id for g in geo}}
        if not geo:
            return []
        if crops is None:
            crops = FrameCrops(None, frame)
        x = network_crops(crops, [g[1] for g in geo], frame.shape)
        todo, out = [], []
        for i, (face, box, f0, a_vec, b, grid) in enumerate(geo):
            tr = self.tracks.get(face.track_id)
            # a track whose mouth crop changed beyond recognition is another face (the next
            # photo of a folder, a cut): it starts afresh, unsmoothed
            fresh = tr is None or float(np.abs(x[i] - tr.crop).mean()) > NEW_FACE_DIFF
            if fresh:
                tr = self.tracks[face.track_id] = _Track()
            res = self.au.estimate(face)
            smile = float(res.smile)
            edit = self._wants_edit(tr, smile, s)
            fade = fade_between(abs(float(face.yaw)), self.yaw_full, self.yaw_none)
            want = s.strength * fade if edit else 0.0
            want_lift = (want * lift_needed(face, res.neutral, s.threshold, s.strength)
                         if edit and fade > 0 else 0.0)
            if fresh:
                tr.strength, tr.lift = want, want_lift
            else:
                d = tr.strength + self.follow * (want - tr.strength)
                tr.strength = want if abs(want - d) < 0.01 else d
                d = tr.lift + self.follow * (want_lift - tr.lift)
                tr.lift = want_lift if abs(want_lift - d) < 0.01 else d
            same_pixels = tr.crop is not None and np.array_equal(x[i], tr.crop)
            tr.crop = x[i].copy()
            self.last.append(dict(track=face.track_id, smile=smile,
                                  edited=abs(tr.strength) > 1e-3, strength=tr.strength,
                                  lift=tr.lift))
            if abs(tr.strength) <= 1e-3:
                tr.key, tr.job = None, None
                continue
            fkey = (round(tr.strength, 4), round(tr.lift, 4), np.round(box, 2).tobytes())
            if tr.job is not None and tr.key == fkey and same_pixels:
                out.append(tr.job)  # a still face: the same job again, no network call
                continue
            todo.append((i, tr, face, box, f0, a_vec, b, grid, fkey))
        if todo:
            edit, recon = self.model(x[[d[0] for d in todo]],
                                     np.array([TRANSLATION_GAIN * d[1].strength for d in todo],
                                              np.float32))
            self.calls += 1
            for j, (_, tr, face, box, f0, a_vec, b, grid, fkey) in enumerate(todo):
                tr.job = self._job(crops, face, box, f0, a_vec, b, grid, edit[j], recon[j],
                                   tr.lift)
                tr.key = fkey
            out = [tr.job for tr in (self.tracks[g[0].track_id] for g in geo)
                   if tr.job is not None and abs(tr.strength) > 1e-3]
        return out

    def _job(self, crops, face, box, f0, a_vec, b, grid, edit, recon, lift=0.0) -> WarpJob:
        ox, oy, w, h = grid
        A = np.array([[1.0, 0.0, ox], [0.0, 1.0, oy]])
        region = crops.numpy(A[None], (h, w))[0].transpose(1, 2, 0)  # exact pixels, RGB [0, 1]
        # net pixel u of the 64-px box sits at frame x = x0 + (u + 0.5) sx
        sx, sy = (box[2] - box[0]) / CROP, (box[3] - box[1]) / CROP
        to_net = np.array([[1.0 / sx, 0.0, (ox - box[0]) / sx - 0.5],
                           [0.0, 1.0 / sy, (oy - box[1]) / sy - 0.5]])

        def up(img):
            return cv2.warpAffine(np.ascontiguousarray(img.transpose(1, 2, 0)), to_net, (w, h),
                                  flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)

        centre = np.asarray(f0) - [ox, oy]
        mask = mouth_mask(h, w, centre, *mask_axes(a_vec, b))
        rec_up, edit_up = up(recon), up(edit)
        wm = mask > 0.05
        if wm.sum() >= 16:  # colour match: the map that takes recon's colours to the face's
            mu_f, sd_f = region[wm].mean(0), region[wm].std(0)
            mu_r, sd_r = rec_up[wm].mean(0), rec_up[wm].std(0)
            gain = np.clip(sd_f / np.maximum(sd_r, 1e-3), *GAIN_RANGE)
        else:
            mu_f = mu_r = np.zeros(3, np.float32)
            gain = np.ones(3, np.float32)
        colour = np.clip((edit_up - mu_r) * gain + mu_f, 0.0, 1.0)[..., ::-1] * 255.0
        # attention: the frame's own pixels where the network changes nothing, its output
        # where the translation changes the mouth
        change = cv2.GaussianBlur(np.abs(edit - recon).max(axis=0), (0, 0), 1.0)
        att = 1.0 - smoothstep(up(change[None]) / CHANGE_SCALE)
        if LIP_MARGIN is not None:  # the decoded mouth only on and around the lips
            att = np.maximum(att, 1.0 - lips_mask(face.landmarks, (ox, oy, w, h)))
        flow, corner_shift = np.zeros((h, w, 2), np.float32), np.zeros((2, 2))
        if abs(lift) > 1e-3:
            # the corners move (the frame through the flow, the decoded mouth with it)
            flow, corner_shift = lift_flow(face.landmarks, grid, lift, mask)
            xs, ys = pixel_grid(h, w)
            mx, my = xs + flow[..., 0], ys + flow[..., 1]
            colour = cv2.remap(np.ascontiguousarray(colour, np.float32), mx, my,
                               cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            att = cv2.remap(np.ascontiguousarray(att, np.float32), mx, my, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        return WarpJob(crop_to_frame=A, flow=flow, alpha=mask,
                       color=np.ascontiguousarray(colour, np.float32),
                       attention=np.ascontiguousarray(att, np.float32), kind="mouth",
                       face_id=face.track_id,
                       meta=dict(box=tuple(float(v) for v in box), gain=gain.tolist(),
                                 lift=float(lift), corner_shift_px=corner_shift.tolist()))


def _build(live, options) -> Effect:
    """``options["keep_smiling_model"]``: a loaded model or a ``.pt2`` path (default the bundled
    ``keepsmiling_split.pt2``); loaded and checked before the first frame, and only when the
    effect is on."""
    model = (options or {}).get("keep_smiling_model")
    if model is None and not live.get().enabled:
        return _LazyKeepSmiling(live)
    import os
    if model is None or isinstance(model, (str, os.PathLike)):
        try:
            model = load_keepsmiling_model(model or None)
        except KeepSmilingModelError as exc:
            raise EffectError(str(exc)) from None
    return KeepSmilingEffect(live, model)


class _LazyKeepSmiling(Effect):
    """KeepSmiling while it is off: loads the bundled model the first time it is switched on
    (the control panel or a live settings change)."""

    name = "keep_smiling"

    def __init__(self, live):
        super().__init__(live)
        self._inner = None

    def hud(self) -> str:
        return self._inner.hud() if self._inner is not None else "keep smiling off"

    def jobs(self, frame, faces, t=0.0, crops=None):
        if not self.settings.get().enabled:
            return [] if self._inner is None else self._inner.jobs(frame, faces, t, crops)
        if self._inner is None:
            self._inner = KeepSmilingEffect(self.settings, load_keepsmiling_model())
        return self._inner.jobs(frame, faces, t, crops)


SPEC = EffectSpec(
    name="keep_smiling", settings_cls=KeepSmilingSettings, factory=_build, order=30,
    help="KeepSmiling (seed 003): every non-smiling face smiles (SplitGAN latent translation)",
    extra_args=(("--keep-smiling-model", dict(
        default=None, metavar="FILE",
        help="KeepSmiling SplitGAN (.pt2, kind warpcam.keepsmiling.split); default: the "
             "bundled keepsmiling_split.pt2")),),
    hud_keys=(("k", "enabled", None),))
