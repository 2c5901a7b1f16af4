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
- **Network**: ``(x, strength) -> (edit, recon)``, ``edit = De(E(x) + strength t)``,
  ``recon = De(E(x))``, both ``(N, 3, 64, 64)`` RGB [0, 1].
- **Paste-back at the face's real size**: one :class:`~warpcam.core.types.WarpJob` per face
  (``kind="mouth"``) on a pixel-aligned crop covering the box (``crop_to_frame`` an integer
  shift, so the crop *is* the frame's pixels, no resampling; ``flow`` zero). ``color`` is the
  decoded ``edit`` resampled bicubically from the 64 px box to the frame pixels and
  colour-matched to the face: the per-channel map that takes ``recon``'s mean and spread in the
  mask to the face's (spread ratio clipped to [0.5, 2]). ``attention`` (GANimation's blend,
  1 = keep the frame) is ``1 - smoothstep(|edit - recon| / CHANGE_SCALE)`` (max over channels,
  blurred by 1 px at 64 px): the face keeps its own detail wherever the translation changes
  nothing. ``alpha`` is a feathered ellipse on the mouth (centre ``f0``, radii 0.9 ``|a|``
  along the mouth and 0.8 ``|b|`` across it, raised-cosine edge over its outer 45 %, times a
  6 % border window): 0 on the crop border, so every pixel outside the mouth ellipses keeps its
  exact bytes.
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
from warpcam.core.geometry import border_window, fade_between, smoothstep
from warpcam.core.mouth import mouth_box_points, mouth_corners
from warpcam.core.types import Face, WarpJob
from warpcam.realtime.effects.base import (Effect, EffectError, EffectSpec, FrameCrops,
                                           LiveSettings, setting, validate)
from warpcam.realtime.runtime import ModelError, load_model

MODEL_KIND = "warpcam.keepsmiling.split"
CROP = 64
#: Mask radii (fractions of the box half-sides) and the feather share of the radius.
MASK_RX, MASK_RY, MASK_FEATHER, MASK_BORDER = 0.9, 0.8, 0.45, 0.06
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
                              help="KeepSmiling latent translation strength: 1 adds the mean "
                                   "smile, 0 changes nothing, < 0 removes smiles instead")
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


class _Track:
    __slots__ = ("strength", "smiling", "key", "job", "crop")

    def __init__(self):
        self.strength, self.smiling, self.key, self.job, self.crop = 0.0, None, None, None, None


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
            grid = pixel_grid_of(box, frame.shape)
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
            smile = float(self.au.estimate(face).smile)
            edit = self._wants_edit(tr, smile, s)
            fade = fade_between(abs(float(face.yaw)), self.yaw_full, self.yaw_none)
            want = s.strength * fade if edit else 0.0
            if fresh:
                tr.strength = want
            else:
                d = tr.strength + self.follow * (want - tr.strength)
                tr.strength = want if abs(want - d) < 0.01 else d
            same_pixels = tr.crop is not None and np.array_equal(x[i], tr.crop)
            tr.crop = x[i].copy()
            self.last.append(dict(track=face.track_id, smile=smile,
                                  edited=abs(tr.strength) > 1e-3, strength=tr.strength))
            if abs(tr.strength) <= 1e-3:
                tr.key, tr.job = None, None
                continue
            fkey = (round(tr.strength, 4), np.round(box, 2).tobytes())
            if tr.job is not None and tr.key == fkey and same_pixels:
                out.append(tr.job)  # a still face: the same job again, no network call
                continue
            todo.append((i, tr, face, box, f0, a_vec, b, grid, fkey))
        if todo:
            edit, recon = self.model(x[[d[0] for d in todo]],
                                     np.array([d[1].strength for d in todo], np.float32))
            self.calls += 1
            for j, (_, tr, face, box, f0, a_vec, b, grid, fkey) in enumerate(todo):
                tr.job = self._job(crops, face, box, f0, a_vec, b, grid, edit[j], recon[j])
                tr.key = fkey
            out = [tr.job for tr in (self.tracks[g[0].track_id] for g in geo)
                   if tr.job is not None and abs(tr.strength) > 1e-3]
        return out

    def _job(self, crops, face, box, f0, a_vec, b, grid, edit, recon) -> WarpJob:
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
        mask = mouth_mask(h, w, centre, MASK_RX * np.asarray(a_vec),
                          MASK_RY * np.linalg.norm(b) * np.array([0.0, 1.0]))
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
        return WarpJob(crop_to_frame=A, flow=np.zeros((h, w, 2), np.float32), alpha=mask,
                       color=np.ascontiguousarray(colour, np.float32),
                       attention=np.ascontiguousarray(att, np.float32), kind="mouth",
                       face_id=face.track_id,
                       meta=dict(box=tuple(float(v) for v in box), gain=gain.tolist()))


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
