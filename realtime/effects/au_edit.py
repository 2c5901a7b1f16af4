"""Fine-grained expression editing by action units (seed 002, Ling et al., ECCV 2020, with
GANimation's attention, Pumarola et al., ECCV 2018): ``--au AU12=+0.8,AU4=-0.5``,
``--expression-from IMAGE``, ``--au-model [FILE]``.

The network is the generator of ``training/au`` exported as a ``torch.export`` artifact
(kind ``warpcam.au.edit``) and run by the model runtime; this module never imports
``training/``.

Convention block:

- Condition: relative AUs, ``desired - current``, on OpenFace's 0-5 intensity scale **divided by
  5** (the seed's scale; the artifact's ``extra.au_scale``): ``AU12=+1`` asks for 5 intensity
  points more, the whole scale (the seed's figures use -1 ... 1.25). AUs not named stay 0.
  ``--expression-from IMAGE``: the AU estimator's intensities of the largest face of IMAGE
  (population neutral) minus the user's own, measured every frame with the per-track
  calibrated neutral (:class:`~warpcam.realtime.au.AUEstimator`), so a neutral user takes the
  reference's whole expression and one who already smiles gets only the rest; AU45 (blink) is
  not transferred. Panel sliders (one field per AU, ``au01`` ... ``au45``, in the same units,
  each in [-1.5, 1.5], not on the command line) **add** to the ``--au`` text: ``--au AU12=0.5``
  with the AU12 slider at 0.3 asks for 0.8; the sum of each AU is clipped to [-2, 2] (the text's
  own limit). ``strength`` scales the whole vector; ``enabled`` (the panel's switch, preview key
  ``a``) turns the edit off and on while keeping every value, and the edit ramps out (and in)
  at ``follow`` per frame. **Negative requests** act on what the face shows (``negative``,
  default ``"gate"``): a request to lower an AU is scaled by ``min(1, current / GATE_FULL)``,
  ``current`` the face's own intensity (AU estimator, per track), so ``AU15=-1`` on a face
  without AU15 asks for nothing. Training draws desired AUs in [0, 1]: the model never saw
  such a request.
- Face crop: the aligned face of the face datasets (eye centres and mouth centre onto the
  template, :func:`~warpcam.realtime.effects.smile_model.aligned_affine`) at the model's size
  (96 or 128 px), read through the compositor's crop service as RGB in [0, 1].
- Network: ``(img (N, 3, S, S), rel (N, 17)) -> (attention (N, 1, S, S), residual (N, 3, S,
  S))``; ``attention`` 1 keeps the input, ``residual`` = colour - input (RGB, [0, 1] units).
  A flow model (``config.flow``, the bundled one) adds ``flow (N, 2, S, S)``: a backward
  warp of the input in crop pixels (x, y), and its edit is ``attention * warp(input, flow) +
  (1 - attention) * (input + residual)``.
- Composite (DESIGN.md, "Generators at low resolution"): one
  :class:`~warpcam.core.types.WarpJob` per face on an **axis-aligned integer box of frame
  pixels** around the model crop's footprint (the face's real size, at most ``max_side`` px a
  side; unit scale, so the compositor samples it exactly at pixel centres), zero flow; the
  network's fields are resampled into the box (they are smooth), ``color`` is the frame's own
  pixels (exact) plus the resampled residual, and the network's attention
  mask (upsampled) is folded into ``alpha = window * (1 - attention) * fade`` (the job's own
  ``attention`` field is 0), so the result is ``frame + alpha * residual``: the frame keeps its
  detail, only the low-frequency edit comes from the network, and where the mask keeps the
  input the job leaves the frame (and the jobs of earlier effects: gaze, smile) untouched.
  ``window`` is a raised-cosine falloff over the outer ``edge_margin`` of the crop. For a flow
  model the job carries the flow (crop pixels mapped to frame pixels through the crop's
  linear part, texels under :data:`FLOW_DEADZONE` set to 0), the mask as its ``attention``
  and ``alpha = window * fade``: the frame's own HD pixels are moved, not a 96 px face pasted.
  The network's outputs are averaged over frames per face in its aligned crop (``temporal``).
  **Regions**: the flow and ``alpha`` are multiplied by the FACS region of the AUs asked for
  (:func:`au_region_mask`, from the face's landmarks in the crop), so an edit of the brows
  leaves the mouth's bytes alone and the box shrinks to the region.
- Time: per track the three alignment points are smoothed with a One Euro filter before the
  crop is fitted, the condition moves toward its target by ``follow`` per frame (snapping within
  0.005), and the network's output is reused while the crop-space landmarks (the expression and
  the crop's fit) and the condition stay within ``tol`` (:class:`~warpcam.core.geometry.CropCache`),
  so a still face gets the same edit on consecutive frames.
- Head turn: the edit fades out between ``yaw_full`` and ``yaw_none`` degrees of yaw (and the
  same pitch range): the training faces are near frontal.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from warpcam.core.geometry import (CropCache, border_window, fade_between, invert_affine,
                                   similarity_fit, smoothstep)
from warpcam.core.types import Face, WarpJob, affine_box
from warpcam.realtime.au import AU_DEFINITIONS, AU_NAMES, AUEstimator
from warpcam.realtime.effects.base import (Effect, EffectError, EffectSpec, FrameCrops,
                                           LiveSettings, SettingsError, setting, validate)
from warpcam.realtime.effects.smile_model import TEMPLATE, face_points
from warpcam.realtime.runtime import ModelError, load_model
from warpcam.realtime.smoothing import OneEuroFilter

MODEL_KIND = "warpcam.au.edit"
#: AUs ``--expression-from`` does not transfer (a blink in the photo).
NOT_TRANSFERRED = ("AU45",)
#: Crop-space landmarks whose movement means a new expression (lips, lids, brows, corners).
_EXPR_POINTS = (61, 291, 0, 17, 13, 14, 159, 145, 386, 374, 105, 334, 107, 336, 70, 300, 50,
                280, 2, 152)


def _default_model() -> Path:
    from importlib import resources
    return Path(str(resources.files("warpcam.models") / "au_edit.pt2"))


#: The bundled model, used when ``--au-model`` names no file.
DEFAULT_MODEL = _default_model()


class AUModelError(ModelError):
    """An AU-editing model file that cannot be used (one-line message)."""


def canonical_au(name: str) -> str:
    """``"AU4"``, ``"au04"``, ``"4"`` -> ``"AU04"``. Raises ``ValueError`` for an AU the
    estimator does not know."""
    s = name.strip().upper()
    s = s[2:] if s.startswith("AU") else s
    if not s.isdigit():
        raise ValueError(f"{name!r} is not an AU name (AU1 ... AU45)")
    out = f"AU{int(s):02d}"
    if out not in AU_NAMES:
        raise ValueError(f"{out} is not one of the estimated AUs ({', '.join(AU_NAMES)})")
    return out


def parse_au_spec(text: str, limit: float = 2.0) -> Dict[str, float]:
    """``"AU12=+0.8,AU4=-0.5"`` -> ``{"AU12": 0.8, "AU04": -0.5}`` (values in the model's units,
    OpenFace 0-5 / 5; module docstring); ``""`` -> ``{}``.

    Raises:
        ValueError: a malformed item, an unknown AU, a value beyond ``+-limit`` or given twice.
    """
    out: Dict[str, float] = {}
    for item in filter(None, (p.strip() for p in (text or "").replace(";", ",").split(","))):
        if "=" not in item:
            raise ValueError(f"{item!r} is not AU=VALUE (e.g. AU12=+0.8)")
        k, v = item.split("=", 1)
        au = canonical_au(k)
        try:
            x = float(v)
        except ValueError:
            raise ValueError(f"{item!r}: {v.strip()!r} is not a number") from None
        if not np.isfinite(x) or abs(x) > limit:
            raise ValueError(f"{item!r}: the value must be within [-{limit:g}, {limit:g}]")
        if au in out:
            raise ValueError(f"{au} is given twice")
        out[au] = x
    return out


#: Range of a panel AU slider (model units, OpenFace 0-5 / 5) and of an AU's summed request.
SLIDER_RANGE, SUM_LIMIT = 1.5, 2.0


def _au_slider(au: str):
    return setting(0.0, cli=False, lo=-SLIDER_RANGE, hi=SLIDER_RANGE, step=0.05,
                   help=f"{au} {AU_DEFINITIONS[au][0]}: relative change added to --au "
                        "(OpenFace 0-5 / 5; below 0 it lowers only what the face shows)")


@dataclass(frozen=True)
class AUEditSettings:
    """Settings of the AU-editing effect (module docstring): the ``--au`` text, the
    ``--expression-from`` image, ``strength``, the ``enabled`` switch and one panel slider per
    AU the model is conditioned on (``au01`` ... ``au45``, added to the text)."""

    effect_name = "au"
    edit: str = setting("", flag="--au", help="relative AU changes, e.g. AU12=+0.8,AU4=-0.5 "
                        "(OpenFace 0-5 intensity / 5, so +1 is the whole scale; seed 002); a "
                        "negative value lowers only an AU the face shows")
    expression_from: str = setting("", flag="--expression-from",
                                   help="take the expression of the face in this image (its "
                                        "AUs minus yours, from the AU estimator)")
    strength: float = setting(1.0, lo=0.0, hi=2.0, step=0.1,
                              help="scale of the whole AU change")
    enabled: bool = setting(True, cli=False, help="AU edit on or off (preview key a); off keeps "
                                                  "the edit for when it is back")
    au01: float = _au_slider("AU01")
    au02: float = _au_slider("AU02")
    au04: float = _au_slider("AU04")
    au05: float = _au_slider("AU05")
    au06: float = _au_slider("AU06")
    au07: float = _au_slider("AU07")
    au09: float = _au_slider("AU09")
    au10: float = _au_slider("AU10")
    au12: float = _au_slider("AU12")
    au14: float = _au_slider("AU14")
    au15: float = _au_slider("AU15")
    au17: float = _au_slider("AU17")
    au20: float = _au_slider("AU20")
    au23: float = _au_slider("AU23")
    au25: float = _au_slider("AU25")
    au26: float = _au_slider("AU26")
    au45: float = _au_slider("AU45")

    def __post_init__(self):
        try:
            parse_au_spec(self.edit)
        except ValueError as exc:
            raise SettingsError(f"--au {exc}", field="edit", detail=str(exc)) from None
        validate(self)

    def au_changes(self) -> Dict[str, float]:
        """The asked relative AUs (model units): the ``--au`` text plus the sliders, each sum
        clipped to [-2, 2]; AUs at 0 left out."""
        out = parse_au_spec(self.edit)
        for a in AU_NAMES:
            v = float(getattr(self, a.lower()))
            if v:
                out[a] = out.get(a, 0.0) + v
        return {a: float(np.clip(v, -SUM_LIMIT, SUM_LIMIT)) for a, v in out.items() if v}

    @property
    def active(self) -> bool:
        return (self.enabled and self.strength > 0
                and bool(self.au_changes() or self.expression_from.strip()))


class AUEditModel:
    """A loaded AU-editing generator: ``model(crops (N, 3, S, S) RGB [0, 1], rel (N, C))
    -> (attention (N, S, S), residual (N, S, S, 3) RGB)`` as numpy float32, and for a flow
    model (``flow`` True) a third array ``flow (N, S, S, 2)``, the backward warp in crop
    pixels (x, y). Use :func:`load_au_model`."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.meta = runtime.meta.to_dict()
        self.path, self.backend = runtime.path, runtime.backend
        self.size = int(runtime.meta.crop_h)
        extra = dict(getattr(runtime.meta, "extra", None) or {})
        self.au_names = tuple(extra.get("au_names") or runtime.meta.conditioning.order)
        self.au_scale = float(extra.get("au_scale", 5.0))
        self.flow = bool(runtime.config.get("flow", False))

    def __call__(self, crops, rel):
        outs = self.runtime(crops, np.asarray(rel, np.float32))
        att, res = np.asarray(outs[0])[:, 0], np.asarray(outs[1]).transpose(0, 2, 3, 1)
        if not self.flow:
            return att, res
        return att, res, np.asarray(outs[2]).transpose(0, 2, 3, 1)


#: A flow model's displacements below this (crop pixels, ``|dx| + |dy|``) are set to 0: the
#: residual jitter that training leaves over the whole crop (Adam moves every basis entry by
#: about its learning rate) moves no visible pixel (0.05 crop px is about 0.15 frame px on a
#: 300 px face), but without it every texel would count as changing and the job's box could not
#: shrink to the region the edit really moves (:meth:`AUEditEffect._support`).
FLOW_DEADZONE = 0.05


def flow_deadzone(flow: np.ndarray, eps: float = FLOW_DEADZONE) -> np.ndarray:
    """``flow`` ``(..., 2)`` float32 crop pixels with the texels whose ``|dx| + |dy| < eps`` set
    to 0 (a copy)."""
    small = np.abs(flow).sum(axis=-1, keepdims=True) < eps
    return np.where(small, np.float32(0.0), flow).astype(np.float32)


def load_au_model(path=None, device: str = "auto", threads: Optional[int] = 1) -> AUEditModel:
    """Load and check an AU-editing model before the first frame (kind ``warpcam.au.edit``, a
    square face crop, the estimator's AU names, outputs of the right shapes on a test input).

    Raises:
        AUModelError: missing, empty, truncated, refused or foreign file, wrong crop, AUs or
            outputs.
    """
    path = Path(path) if path else DEFAULT_MODEL
    try:
        rt = load_model(path, kind=MODEL_KIND, device=device, threads=threads,
                        label="AU model")
    except ModelError as exc:
        raise AUModelError(str(exc)) from None
    if rt.meta.crop_h != rt.meta.crop_w or rt.meta.roi != "face":
        raise AUModelError(f"{path}: a {rt.meta.roi} crop of {rt.meta.crop_h}x"
                           f"{rt.meta.crop_w}; the AU effect needs a square face crop")
    model = AUEditModel(rt)
    unknown = [a for a in model.au_names if a not in AU_NAMES]
    if unknown or not model.au_names:
        raise AUModelError(f"{path}: conditioned on AUs the estimator does not give "
                           f"({', '.join(unknown) or 'none named'})")
    s = model.size
    try:
        outs = model(np.full((1, 3, s, s), 0.5, np.float32),
                     np.zeros((1, len(model.au_names)), np.float32))
    except Exception as exc:
        raise AUModelError(f"{path}: the program fails on a test input "
                           f"({type(exc).__name__}: {str(exc)[:120]})") from None
    shapes = [(1, s, s), (1, s, s, 3)] + ([(1, s, s, 2)] if model.flow else [])
    if [getattr(o, "shape", None) for o in outs] != shapes:
        raise AUModelError(f"{path}: outputs of the wrong shape")
    return model


def reference_aus(path) -> Dict[str, float]:
    """The AU estimator's intensities (0-5, population neutral) of the largest face in the
    image ``path``.

    Raises:
        EffectError: unreadable image or no face found.
    """
    from warpcam.realtime.au import estimate_image
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise EffectError(f"--expression-from {path}: cannot read the image")
    res = estimate_image(img, max_faces=4)
    if not res:
        raise EffectError(f"--expression-from {path}: no face found")
    return dict(res[0].intensities)


def aligned_affine(landmarks_or_points: np.ndarray, size: int) -> np.ndarray:
    """``crop_to_frame`` (2 x 3) of the aligned ``size x size`` face, from 478 landmarks or
    from the 3 alignment points (right eye, left eye, mouth centre) in frame pixels."""
    p = np.asarray(landmarks_or_points, np.float64)
    pts = p[:, :2] if p.shape[0] == 3 else face_points(p)
    return invert_affine(similarity_fit(pts, np.array(TEMPLATE) * size - 0.5))


#: The rules for negative requests (:class:`AUEditEffect` ``negative``).
NEGATIVE_RULES = ("gate", "floor", "pass")
#: ``"gate"``: a negative request acts fully from this intensity of the face's own AU on (0-5
#: scale; 1 is about FACS's trace level A), in proportion below it.
GATE_FULL = 1.0

#: FACS regions (Ekman & Friesen's FACS manual, 1978/2002: where each AU's muscle moves the
#: skin) as groups of FaceMesh landmarks; a region is the union of the convex hulls of its
#: groups, grown by a margin and feathered (:func:`au_region_mask`). Subject's right, then left.
_BROWS = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282,
          283, 276, 9, 8, 168, 151, 108, 337, 69, 299, 104, 333, 159, 386, 158, 385, 160, 387)
_EYE_R = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
_EYE_L = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
_CHEEK_R = (33, 7, 163, 144, 145, 153, 154, 155, 133, 50, 101, 118, 117, 205, 123)
_CHEEK_L = (263, 249, 390, 373, 374, 380, 381, 382, 362, 280, 330, 347, 346, 425, 352)
_NOSE = (9, 8, 168, 6, 197, 195, 5, 4, 1, 98, 327, 64, 294, 2, 0, 107, 336, 129, 358)
_MOUTH = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40,
          185, 2, 98, 327, 205, 425, 152, 148, 377, 176, 400)
#: region of each AU: (landmark groups, margin, feather), both in units of the outer eye
#: corners' distance in the crop.
AU_REGIONS: Dict[str, tuple] = {}
for _a in ("AU01", "AU02", "AU04"):
    AU_REGIONS[_a] = ((_BROWS,), 0.15, 0.15)
for _a in ("AU05", "AU07", "AU45"):
    AU_REGIONS[_a] = ((_EYE_R, _EYE_L), 0.15, 0.15)
AU_REGIONS["AU06"] = ((_CHEEK_R, _CHEEK_L), 0.15, 0.15)
AU_REGIONS["AU09"] = ((_NOSE,), 0.15, 0.15)
for _a in ("AU10", "AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26"):
    AU_REGIONS[_a] = ((_MOUTH,), 0.2, 0.2)
#: an AU's region opens fully once its condition reaches this (model units); below, in
#: proportion, so a region fades in and out with the AU's ramp instead of switching.
REGION_FULL = 0.1


def au_region_mask(points: np.ndarray, cond: Dict[str, float], h: int, w: int) -> np.ndarray:
    """Where an edit of the AUs in ``cond`` may move the face: ``h x w`` float32 in [0, 1].

    The maximum over the AUs of ``min(1, |cond[a]| / REGION_FULL)`` times the AU's region of
    :data:`AU_REGIONS` (1 within ``margin`` of the convex hulls of its landmark groups,
    smoothstep to 0 over a further ``feather``; both scale with the face). An AU without a
    region (none today) opens the whole crop.

    Args:
        points: ``478 x 2`` landmarks in the crop's pixel coordinates (x right, y down).
        cond: AU name -> relative change (model units); zeros are ignored.
        h, w: the crop's size, px.
    """
    p = np.asarray(points, np.float64)[:, :2]
    d_eyes = float(np.hypot(*(p[263] - p[33]))) or 1.0
    out = np.zeros((h, w), np.float32)
    done: Dict[tuple, np.ndarray] = {}
    for a, v in cond.items():
        k = min(1.0, abs(float(v)) / REGION_FULL)
        if k <= 0.0:
            continue
        if a not in AU_REGIONS:
            return np.ones((h, w), np.float32)
        groups, margin, feather = AU_REGIONS[a]
        key = (groups, margin, feather)
        m = done.get(key)
        if m is None:
            inside = np.full((h, w), 255, np.uint8)
            for g in groups:
                hull = cv2.convexHull(np.round(p[list(g)]).astype(np.int32))
                cv2.fillConvexPoly(inside, hull, 0)
            dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
            t = (margin + feather) * d_eyes - dist
            m = done[key] = smoothstep(t / max(feather * d_eyes, 1e-6)).astype(np.float32)
        np.maximum(out, np.float32(k) * m, out=out)
    return out


class _Track:
    __slots__ = ("points", "cond", "est", "fields")

    def __init__(self):
        self.points = OneEuroFilter(min_cutoff=1.5, beta=0.02)
        self.cond = None
        self.est = None
        self.fields = None


class AUEditEffect(Effect):
    """The AU edit (module docstring).

    Args:
        settings: :class:`AUEditSettings` (or a :class:`LiveSettings` of them).
        model: an :class:`AUEditModel` (or a callable with its signature and ``size``,
            ``au_names``), or ``None`` to load ``model_path`` when the edit is first asked for.
        model_path: the ``.pt2`` to load lazily (``None``: the bundled one).
        max_side: largest composite crop side, px.
        cache: keep each face's model output while its aligned landmarks and condition hold
            still (``False``: run the model every frame, as benchmarks and equivalence
            tests want).
        temporal: share of a new network output taken per frame (an exponential moving
            average of each face's mask, residual and flow in its aligned crop, where a face
            that holds still has still outputs); 1 takes each frame's output as it is.
        regions: keep the edit within the FACS regions of the AUs asked for
            (:func:`au_region_mask`: brows for AU1/2/4, eyes for AU5/7/45, cheeks for AU6, nose
            for AU9, mouth and chin for AU10-AU26), so ``AU04=-1`` leaves the mouth alone;
            ``False`` applies the network's output wherever it reaches.
        negative: what a negative request does on a face that does not show the AU (the
            model was trained on desired AUs in [0, 1], so it never saw ``AU15=-1`` on a face
            without AU15, and answers it with an unrelated move; :meth:`target`):
            ``"gate"`` scales it by ``min(1, current / GATE_FULL)`` (nothing where the AU is
            absent, the request as given from a trace of it on), ``"floor"`` asks for at most
            minus the current intensity, ``"pass"`` passes it as given.
    """

    name = "au"

    def __init__(self, settings, model=None, model_path=None, edge_margin: float = 0.12,
                 follow: float = 0.35, tol: float = 0.4, yaw_full: float = 20.0,
                 yaw_none: float = 35.0, max_side: int = 1024, cache: bool = True,
                 temporal: float = 0.5, regions: bool = True, negative: str = "gate"):
        if not isinstance(settings, LiveSettings):
            settings = LiveSettings(settings)
        super().__init__(settings)
        self.model, self.model_path = model, model_path
        self.edge_margin, self.follow = edge_margin, follow
        if not 0.0 < temporal <= 1.0:
            raise ValueError(f"temporal {temporal}: must be in (0, 1]")
        self.temporal = float(temporal)
        if negative not in NEGATIVE_RULES:
            raise ValueError(f"negative {negative!r}: one of {', '.join(NEGATIVE_RULES)}")
        self.regions, self.negative = bool(regions), negative
        self.yaw_full, self.yaw_none, self.max_side = yaw_full, yaw_none, max_side
        self.cache: Optional[CropCache] = CropCache(tol=tol, max_age=10 ** 9) if cache else None
        self.tracks: Dict[int, _Track] = {}
        self._ref_path, self._ref = None, None
        self._windows: dict = {}
        self.calls = 0

    def hud(self) -> str:
        s = self.settings.get()
        if not s.active:
            return "au off"
        what = ",".join(f"{a}={v:+.2f}" for a, v in s.au_changes().items())
        if s.expression_from.strip():
            what = " ".join(filter(None, (f"from {Path(s.expression_from).name}", what)))
        return f"au {what} x{s.strength:.1f}"

    def _ensure_model(self):
        if self.model is None:
            try:
                self.model = load_au_model(self.model_path)
            except AUModelError as exc:
                raise EffectError(str(exc)) from None
        return self.model

    def _reference(self, path: str):
        if path != self._ref_path:
            self._ref, self._ref_path = reference_aus(path), path
        return self._ref

    def _box(self, A: np.ndarray, size: int, shape, support=None) -> Optional[tuple]:
        """``(x0, y0, w, h)``: the integer frame box that holds the model crop's footprint
        (clipped to the frame, at most ``max_side`` px a side), or None when it is empty.
        ``support`` ``(u0, v0, u1, v1)`` (model-crop pixels, from :meth:`_support`) narrows it
        to that rectangle's footprint; ``()`` means no pixel changes (None returned)."""
        if support is not None and not support:
            return None
        c = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [-0.5, size - 0.5, 1],
                      [size - 0.5, size - 0.5, 1]]) @ np.asarray(A, np.float64).T
        x0, y0 = np.floor(c.min(0)).astype(int)
        x1, y1 = np.ceil(c.max(0)).astype(int) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, shape[1], x0 + self.max_side), min(y1, shape[0], y0 + self.max_side)
        if support:
            b = affine_box(A, *support, shape, clip=(int(x0), int(y0), int(x1), int(y1)))
            if b is None:
                return None
            x0, y0, x1, y1 = b
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        return int(x0), int(y0), int(x1 - x0), int(y1 - y0)

    def _support(self, att: np.ndarray, res: np.ndarray, size: int, fade: float,
                 flow: Optional[np.ndarray] = None, scale: float = 1.0,
                 win: Optional[np.ndarray] = None) -> tuple:
        """The model-crop rectangle ``(u0, v0, u1, v1)`` outside of which the edit provably
        changes no byte of the frame, or ``()`` when it changes none at all.

        The composite writes ``frame + alpha (colour - frame)`` with ``alpha = window (1 -
        attention) fade`` and ``|colour - frame| <= 255 |residual|``, each field sampled
        bilinearly from the crop; a bilinear sample is at most the largest of its 2 x 2
        texels, so where the product of the 3 x 3 neighbourhood maxima of the window, of
        ``1 - attention`` and of ``255 |residual|``, times ``fade``, stays below 0.49 grey
        levels, the result rounds back to the frame's own byte. The rectangle holds every
        texel above that bound, grown by one texel (a sample reads its neighbours). The
        edited face box shrinks to the footprint of this rectangle: for a single AU the
        mask opens on a few percent of the crop, and the full-resolution work with it.

        With a ``flow`` (crop pixels; a flow model's composite is ``alpha (attention
        warp(frame) + (1 - attention) colour - frame)``, ``alpha = window fade``), a bilinear
        sample displaced by ``d`` frame pixels differs from the frame's own by at most ``255
        |d|_1`` grey levels, and a displacement of ``(dx, dy)`` crop pixels is at most
        ``sqrt(2) scale (|dx| + |dy|)`` frame pixels in that norm (``scale``: frame pixels
        per crop pixel); the two bounds add. ``win``: the crop's window (default: the border
        window; the effect passes it times the AU region mask)."""
        kernel = np.ones((3, 3), np.uint8)
        open_ = cv2.dilate(1.0 - np.clip(att, 0.0, 1.0), kernel)
        amp = cv2.dilate(np.abs(res).max(axis=2) * np.float32(255.0), kernel)
        win = cv2.dilate(self._window(size) if win is None else win, kernel)
        bound = open_ * amp * win * np.float32(fade)
        if flow is not None:
            shift = cv2.dilate(np.abs(flow).sum(axis=2), kernel)
            bound = bound + shift * win * np.float32(np.sqrt(2.0) * scale * 255.0 * fade)
        hot = bound >= 0.49
        rows = np.flatnonzero(hot.any(axis=1))
        if rows.size == 0:
            return ()
        cols = np.flatnonzero(hot.any(axis=0))
        return (float(cols[0]) - 1.0, float(rows[0]) - 1.0, float(cols[-1]) + 1.0,
                float(rows[-1]) + 1.0)

    def _region(self, face: Face, A: np.ndarray, cond: np.ndarray, size: int) -> np.ndarray:
        """The AU region mask (:func:`au_region_mask`) of this face's condition, in the model
        crop (``size x size`` float32)."""
        inv = invert_affine(A)
        pts = np.asarray(face.landmarks, np.float64)[:, :2] @ inv[:, :2].T + inv[:, 2]
        return au_region_mask(pts, dict(zip(self.model.au_names, np.asarray(cond).tolist())),
                              size, size)

    def _window(self, side: int) -> np.ndarray:
        w = self._windows.get(side)
        if w is None:
            w = self._windows[side] = border_window(side, side, self.edge_margin)
        return w

    def target(self, settings: AUEditSettings, face: Face, t: float, tr: _Track) -> np.ndarray:
        """The relative condition asked for this face, in the model's units and AU order:
        ``--expression-from`` (reference minus the face's own AUs) plus the ``--au`` text and
        sliders, times ``strength``; then the ``negative`` rule on the entries below 0, with
        the face's own intensities from the AU estimator (``"gate"``: times ``min(1, current /
        GATE_FULL)``; ``"floor"``: at least ``-current / au_scale``)."""
        names = self.model.au_names
        scale = float(getattr(self.model, "au_scale", 5.0))
        v = np.zeros(len(names), np.float64)
        cur = None
        if settings.expression_from.strip():
            ref = self._reference(settings.expression_from.strip())
            cur = self._current(face, t, tr)
            for i, a in enumerate(names):
                if a not in NOT_TRANSFERRED:
                    v[i] = (ref.get(a, 0.0) - cur.get(a, 0.0)) / scale
        for a, x in settings.au_changes().items():
            if a in names:
                v[names.index(a)] += x
        v *= settings.strength
        if self.negative != "pass" and np.any(v < 0):
            cur = cur if cur is not None else self._current(face, t, tr)
            own = np.array([cur.get(a, 0.0) for a in names])
            if self.negative == "floor":
                v = np.maximum(v, -own / scale)
            else:  # gate
                v = np.where(v < 0, v * np.minimum(1.0, own / GATE_FULL), v)
            v = v + 0.0  # no -0
        return v

    @staticmethod
    def _current(face: Face, t: float, tr: _Track) -> Dict[str, float]:
        """The face's AU intensities now (0-5; per-track calibrated neutral)."""
        if tr.est is None:
            tr.est = AUEstimator(calibrate=True)
        return tr.est.estimate(face, t).intensities

    def jobs(self, frame: np.ndarray, faces: Sequence[Face], t: float = 0.0,
             crops: Optional[FrameCrops] = None) -> List[WarpJob]:
        settings = self.settings.get()
        if self.cache is not None:
            self.cache.tick()
        # switched off (or nothing asked): the faces' conditions ramp out, then no job at all
        ramp_out = not settings.active and any(
            tr.cond is not None and float(np.abs(tr.cond).max()) >= 1e-3
            for tr in self.tracks.values())
        if not settings.active and not ramp_out:
            self.tracks.clear()
            return []
        model = self._ensure_model()
        size = model.size
        seen, todo, out, have = set(), [], [], {}
        for face in faces:
            key = face.track_id
            seen.add(key)
            tr = self.tracks.get(key)
            if tr is None:
                if ramp_out:
                    continue
                tr = self.tracks[key] = _Track()
            try:
                pts = tr.points(face_points(face.landmarks), float(t))
                A = aligned_affine(pts, size)
            except (ValueError, np.linalg.LinAlgError):
                continue
            fade = min(fade_between(abs(float(face.yaw)), self.yaw_full, self.yaw_none),
                       fade_between(abs(float(face.pitch)), self.yaw_full, self.yaw_none))
            want = (self.target(settings, face, t, tr) * fade if not ramp_out
                    else np.zeros(len(model.au_names)))
            if tr.cond is None:  # a new face ramps in from no edit
                tr.cond = np.zeros_like(want)
            c = tr.cond + self.follow * (want - tr.cond)
            tr.cond = np.where(np.abs(want - c) < 0.005, want, c)
            if fade <= 0.0 or float(np.abs(tr.cond).max()) < 1e-3:
                tr.fields = None  # no stale outputs when the edit comes back
                continue
            inv = invert_affine(A)
            lmk = np.asarray(face.landmarks, np.float64)[list(_EXPR_POINTS), :2]
            sig = np.concatenate([(lmk @ inv[:, :2].T + inv[:, 2]).ravel(),
                                  tr.cond * (size / 4.0)])
            fields = self.cache.get(key, sig) if self.cache is not None else None
            if fields is None:
                todo.append((key, A, tr.cond.astype(np.float32), sig))
            else:
                have[key] = fields
            out.append((key, A, fade, face))
        for k in [k for k in self.tracks if k not in seen]:
            del self.tracks[k]
        if crops is None:
            crops = FrameCrops(None, frame)
        if todo:
            batch = crops.tensor(np.stack([a for _, a, _, _ in todo]), (size, size), 0.0, 1.0)
            outs = model(batch, np.stack([c for _, _, c, _ in todo]))
            self.calls += 1
            for j, (key, _, _, sig) in enumerate(todo):
                have[key] = tuple(np.ascontiguousarray(o[j], np.float32) for o in outs)
                if self.cache is not None:
                    self.cache.put(key, sig, have[key])
        jobs = []
        for key, A, fade, face in out:
            fields, tr = have[key], self.tracks[key]
            if (self.temporal < 1.0 and tr.fields is not None
                    and len(tr.fields) == len(fields)):
                k = np.float32(self.temporal)
                fields = tuple(p + k * (c - p) for p, c in zip(tr.fields, fields))
            tr.fields = fields
            att, res = fields[:2]
            flow = flow_deadzone(fields[2]) if len(fields) > 2 else None
            window = self._window(size)  # crop space (the region's too)
            if self.regions:
                region = self._region(face, A, tr.cond, size)
                window = window * region
                if flow is not None:
                    flow = flow * region[..., None]
            scale = float(np.sqrt(abs(np.linalg.det(np.asarray(A, np.float64)[:, :2]))))
            box = self._box(A, size, frame.shape,
                            self._support(att, res, size, fade, flow, scale, window))
            if box is None:
                continue
            x0, y0, w, h = box
            T = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])
            # box pixel -> model-crop pixel (the fields are smooth: resampling them is harmless)
            M = invert_affine(A) @ np.vstack([T, [0.0, 0.0, 1.0]])
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            # mask, window and flow in one resampling (2 or 4 channels; outside the crop the
            # mask keeps the frame and the rest is 0)
            stack = np.dstack([att, window] + ([flow] if flow is not None else []))
            fb = cv2.warpAffine(stack, M, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(1.0, 0.0, 0.0, 0.0))
            keep, win = fb[..., 0], fb[..., 1]
            res_b = cv2.warpAffine(res, M, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
            # the frame's own pixels (the box is an integer translation of the frame: exact)
            own = frame[y0:y0 + h, x0:x0 + w].astype(np.float32)
            color = np.clip(own + res_b[..., ::-1] * np.float32(255.0), 0.0, 255.0)
            if flow is None:
                alpha = win * (1.0 - np.clip(keep, 0.0, 1.0)) * np.float32(fade)
                job_flow, job_att = np.zeros((h, w, 2), np.float32), np.zeros((h, w), np.float32)
            else:
                # a crop-pixel displacement is a frame displacement through A's linear part
                job_flow = (fb[..., 2:] @ np.asarray(A, np.float32)[:, :2].T).astype(np.float32)
                job_att = np.clip(keep, 0.0, 1.0).astype(np.float32)
                alpha = win * np.float32(fade)
            jobs.append(WarpJob(crop_to_frame=T, flow=np.ascontiguousarray(job_flow),
                                alpha=alpha.astype(np.float32), color=color,
                                attention=job_att,
                                kind="face", face_id=key,
                                meta=dict(fade=fade, box=box, model=True,
                                          cond=self.tracks[key].cond.copy())))
        return jobs


def _build(live, options) -> Effect:
    """``options["model"]``: a loaded model, a ``.pt2`` path, or ``""`` / absent for the bundled
    ``au_edit.pt2``. The model is loaded and checked now when the edit is on at start or a file
    is named (so a bad file stops before the first frame), else when it is first asked for; an
    ``--expression-from`` image is read now too."""
    model = (options or {}).get("model")
    path = model if isinstance(model, (str, Path)) else None
    eff = AUEditEffect(live, model=None if path is not None else model,
                       model_path=path or None)
    s = live.get()
    if s.active or path:  # a file named with --au-model is checked at start in any case
        eff._ensure_model()
        if s.expression_from.strip():
            eff._reference(s.expression_from.strip())
    return eff


SPEC = EffectSpec(
    name="au", settings_cls=AUEditSettings, factory=_build, order=40,
    help="fine-grained expression editing by action units (seed 002, GANimation attention)",
    extra_args=(("--au-model", dict(
        nargs="?", const="", default=None, metavar="FILE",
        help="the AU-editing generator (.pt2 from training/au); without FILE or when not "
             "given: the bundled au_edit.pt2")),),
    hud_keys=(("}", "strength", 0.1), ("{", "strength", -0.1), ("a", "enabled", None)))
