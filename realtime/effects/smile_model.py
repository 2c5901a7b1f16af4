"""Model-driven smile: the DeepWarp smile transformer of ``training/smile`` (seed 000, a
``torch.export`` artifact loaded by the model runtime) as the smile effect's fulfiller
(``--smile S --smile-model [FILE]``).

This module never imports ``training/``: the artifact carries graph, weights (with the training
mean image) and metadata.

Convention block:

- Face crop: the aligned face of the face datasets (``training/data/align.py``, repeated here
  from :mod:`warpcam.core` so the app does not import training code): the least-squares
  similarity that maps the right eye centre, the left eye centre and the mouth centre onto the
  template (0.35, 0.38), (0.65, 0.38), (0.50, 0.71) of the crop side, sampled at 64 x 64
  through the compositor's crop service (:meth:`FrameCrops.tensor`, RGB in [0, 1]).
- Network: ``(N, 3, 64, 64)``, ``delta (N, 1)`` -> flow ``(N, 2, 64, 64)`` backward warp in crop
  pixels (x, y), LCM weight ``(N, 1, 64, 64)``, palette RGB ``(3,)``. The network was trained on
  ``delta = +-1`` only; a continuous ``delta`` in [-1, 1] runs the network at ``sign(delta)``
  and scales the flow and the LCM weight by ``|delta|`` (0 is exactly the identity).
- Output: one :class:`~warpcam.core.types.WarpJob` per face (``kind="face"``) at the crop's
  affine; the compositor samples the **frame** through the flow at full resolution (no 64 x 64
  paste-back). Flow, LCM weight and alpha are feathered by a raised-cosine window over the
  outer ``edge_margin`` of the crop, so the edit fades into the untouched frame.
- Time: per track, the crop affine is smoothed (a dead band of ``still_px`` crop pixels on the
  crop's corners: a still face keeps exactly the same affine; beyond it an exponential filter
  with factor ``follow``), the conditioning (``delta`` times the yaw fade) moves toward its
  target by ``follow`` per frame and snaps within 0.01, and the network's fields are reused
  while both are unchanged, so consecutive frames of a still face give the same output.
- Head turn: the effect fades out between ``yaw_full`` and ``yaw_none`` degrees of yaw (the
  training faces, CelebA and GENKI-4K, are near frontal).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from warpcam.core import landmarks as lm
from warpcam.core.eyes import eye_roi
from warpcam.core.geometry import border_window, fade_between, invert_affine, similarity_fit
from warpcam.core.mouth import mouth_roi
from warpcam.core.types import Face, WarpJob
from warpcam.realtime.effects.base import Effect, FrameCrops, LiveSettings
from warpcam.realtime.runtime import ModelError, load_model

MODEL_KIND = "warpcam.smile.deepwarp"
CROP = 64
#: Aligned-face template (fractions of the crop side), as ``training/data/align.py``.
TEMPLATE = ((0.35, 0.38), (0.65, 0.38), (0.50, 0.71))


def _default_model() -> Path:
    from importlib import resources
    return Path(str(resources.files("warpcam.models") / "smile_deepwarp.pt2"))


#: The bundled model, used by ``--smile-model`` without a file name.
DEFAULT_MODEL = _default_model()


class SmileModelError(ModelError):
    """A smile model file that cannot be used (one-line message)."""


def face_points(pts: np.ndarray) -> np.ndarray:
    p = np.asarray(pts, np.float64)[:, :2]
    return np.stack([eye_roi(p, "right")[0], eye_roi(p, "left")[0], mouth_roi(p)[0]])


def aligned_affine(landmarks: np.ndarray, size: int = CROP) -> np.ndarray:
    """``crop_to_frame`` (2 x 3) of the aligned ``size x size`` face."""
    tmpl = np.array(TEMPLATE) * size - 0.5
    return invert_affine(similarity_fit(face_points(landmarks), tmpl))


def landmark_hint(landmarks: np.ndarray, A: np.ndarray, strength: float) -> np.ndarray:
    """The landmark smile's flow (:class:`~warpcam.realtime.effects.smile.SmileEffect` at
    ``strength``, yaw fade off) resampled into the aligned crop ``A`` (``crop_to_frame``):
    ``(64, 64, 2)`` float32 backward warp in crop pixels (x, y), 0 outside its mouth ROI. The
    DeepWarp smile's hint channel (``config.hint``) and its combination with the landmark
    smile."""
    import cv2
    from warpcam.realtime.effects.smile import SmileEffect, SmileSettings
    lms = np.asarray(landmarks, np.float32)[:, :2]
    face = Face(track_id=-1, landmarks=lms, landmarks_raw=lms, z=np.zeros(len(lms), np.float32))
    jobs = SmileEffect(SmileSettings(strength=float(np.clip(strength, -1, 1))),
                       cache=False).jobs(None, [face])
    out = np.zeros((CROP, CROP, 2), np.float32)
    if not jobs:
        return out
    job = jobs[0]
    Am = np.asarray(job.crop_to_frame, np.float64)
    g = np.mgrid[0:CROP, 0:CROP].astype(np.float64)  # (y, x)
    q = np.stack([g[1].ravel(), g[0].ravel(), np.ones(CROP * CROP)], 1)
    P = q @ np.asarray(A, np.float64).T  # frame points of the crop pixels
    inv = invert_affine(Am)
    m = (P @ inv[:, :2].T + inv[:, 2]).astype(np.float32).reshape(CROP, CROP, 2)
    fm = cv2.remap(np.ascontiguousarray(job.flow, np.float32), m[..., 0], m[..., 1],
                   cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    M = invert_affine(np.asarray(A, np.float64))[:, :2] @ Am[:, :2]
    return (fm.reshape(-1, 2) @ M.T).reshape(CROP, CROP, 2).astype(np.float32)


def crop_anchors(landmarks: np.ndarray, A: np.ndarray) -> np.ndarray:
    """The 4 anchors (eye centres, mouth centre, nose tip) in crop pixels of ``A``."""
    p = np.vstack([face_points(landmarks), np.asarray(landmarks, np.float64)[lm.NOSE_TIP, :2]])
    inv = invert_affine(A)
    return (p @ inv[:, :2].T + inv[:, 2]).astype(np.float32)


class SmileModel:
    """A loaded smile network: ``model(crops, delta, anchors=None) -> (flow (N, 64, 64, 2),
    lcm_w (N, 64, 64), palette (3,) RGB)`` as numpy float32. Use :func:`load_smile_model`."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.meta = runtime.meta.to_dict()
        self.path, self.backend = runtime.path, runtime.backend
        self.anchors = int(runtime.config.get("anchors", 0) or 0)
        self.hint = bool(runtime.config.get("hint", False))

    def __call__(self, crops, delta, anchors=None, hint=None):
        """``hint``: ``(N, 64, 64, 2)`` (:func:`landmark_hint`), for a model with
        ``config.hint``."""
        args = [crops, np.asarray(delta, np.float32).reshape(-1, 1)]
        if self.anchors:
            if anchors is None:
                raise ValueError(f"this smile model needs anchors (N, {self.anchors}, 2)")
            args.append(anchors)
        if self.hint:
            if hint is None:
                raise ValueError("this smile model needs the landmark hint (N, 64, 64, 2)")
            args.append(np.ascontiguousarray(np.asarray(hint, np.float32).transpose(0, 3, 1, 2)))
        flow, wts, palette = self.runtime(*args)[:3]
        return flow.transpose(0, 2, 3, 1), wts[:, 0], palette


def load_smile_model(path=None, device: str = "auto", threads: Optional[int] = 1) -> SmileModel:
    """Load and check a smile model before the first frame (kind ``warpcam.smile.deepwarp``,
    a 64 x 64 face crop, outputs of the right shapes on a test input).

    Raises:
        SmileModelError: missing, empty, truncated, refused or foreign file, wrong crop or
            outputs.
    """
    path = Path(path) if path else DEFAULT_MODEL
    try:
        rt = load_model(path, kind=MODEL_KIND, device=device, threads=threads,
                        label="smile model")
    except ModelError as exc:
        raise SmileModelError(str(exc)) from None
    if (rt.meta.crop_h, rt.meta.crop_w) != (CROP, CROP) or rt.meta.roi != "face":
        raise SmileModelError(f"{path}: a {rt.meta.roi} crop of {rt.meta.crop_h}x"
                              f"{rt.meta.crop_w}; the smile effect needs a 64x64 face crop")
    model = SmileModel(rt)
    try:
        flow, wts, pal = model(np.full((2, 3, CROP, CROP), 0.5, np.float32), np.ones(2),
                               np.full((2, model.anchors, 2), 32.0, np.float32)
                               if model.anchors else None,
                               np.zeros((2, CROP, CROP, 2), np.float32) if model.hint else None)
    except Exception as exc:
        raise SmileModelError(f"{path}: the program fails on a test input "
                              f"({type(exc).__name__}: {str(exc)[:120]})") from None
    if flow.shape != (2, CROP, CROP, 2) or wts.shape != (2, CROP, CROP) or pal.shape != (3,):
        raise SmileModelError(f"{path}: outputs of the wrong shape")
    return model


class _Track:
    __slots__ = ("A", "delta", "fields", "key", "age")

    def __init__(self, A):
        self.A, self.delta, self.fields, self.key, self.age = A, 0.0, None, None, 0


class ModelSmileEffect(Effect):
    """The smile effect fulfilled by the DeepWarp transformer (module docstring).

    Args:
        settings: the smile effect's settings (``strength`` = delta).
        model: a :class:`SmileModel` (or any callable with its signature).
        edge_margin: feather width, fraction of each crop side.
        still_px: dead band of the crop affine, crop pixels at the crop's corners.
        follow: per-frame smoothing factor of the affine (beyond the dead band) and the delta.
        landmark_mix: add this share of the landmark smile's flow (:func:`landmark_hint`) to
            the network's (0: the network alone; measured in ``benchmarks/smile_select.py``);
            ``None``: the model's metadata ``landmark_mix`` (0 when absent).
        network_gain: scale of the network's flow and LCM weight at ``|delta| = 1`` (``None``:
            the metadata's ``network_gain``, 1 when absent): the combination is
            ``|delta| * (network_gain * network + landmark_mix * landmark)``.
    """

    name = "smile"

    def __init__(self, settings, model, edge_margin: float = 0.14, still_px: float = 0.35,
                 follow: float = 0.5, yaw_full: float = 20.0, yaw_none: float = 35.0,
                 landmark_mix: Optional[float] = None, network_gain: Optional[float] = None):
        if not isinstance(settings, LiveSettings):
            settings = LiveSettings(settings)
        super().__init__(settings)
        self.model = model
        self.window = border_window(CROP, CROP, edge_margin)
        self.still_px, self.follow = still_px, follow
        self.yaw_full, self.yaw_none = yaw_full, yaw_none
        self.tracks: dict = {}
        self.calls = 0
        if landmark_mix is None:
            landmark_mix = (getattr(model, "meta", None) or {}).get("landmark_mix", 0.0)
        self.landmark_mix = float(landmark_mix)
        if network_gain is None:
            network_gain = (getattr(model, "meta", None) or {}).get("network_gain", 1.0)
        self.network_gain = float(network_gain)
        c = np.array([[0, 0, 1], [CROP - 1, 0, 1], [0, CROP - 1, 1], [CROP - 1, CROP - 1, 1]],
                     np.float64)
        self._corners = c

    def hud(self) -> str:
        s = self.settings.get()
        return f"smile {s.strength:+.1f} (model)" if s.enabled else "smile off (model)"

    def _smooth_affine(self, tr: _Track, A: np.ndarray) -> np.ndarray:
        # distance in crop pixels between the corners of the two crops
        inv = invert_affine(tr.A)
        cf = self._corners @ A.T  # frame positions of the new crop's corners
        d = np.abs(cf @ inv[:, :2].T + inv[:, 2] - self._corners[:, :2]).max()
        if d <= self.still_px:
            return tr.A
        if d > 8.0:  # a jump (new track, cut): follow at once
            return A
        return tr.A + self.follow * (A - tr.A)

    def jobs(self, frame: np.ndarray, faces: Sequence[Face], t: float = 0.0,
             crops: Optional[FrameCrops] = None) -> List[WarpJob]:
        settings = self.settings.get()
        target = float(settings.strength) if settings.enabled else 0.0  # off: ramps out
        seen = set()
        todo, out_faces = [], []
        for face in faces:
            key = face.track_id
            seen.add(key)
            try:
                A_raw = aligned_affine(face.landmarks)
            except ValueError:
                continue
            tr = self.tracks.get(key)
            if tr is None:
                tr = self.tracks[key] = _Track(A_raw)
            else:
                tr.A = self._smooth_affine(tr, A_raw)
            fade = fade_between(abs(float(face.yaw)), self.yaw_full, self.yaw_none)
            want = target * fade
            d = tr.delta + self.follow * (want - tr.delta)
            tr.delta = want if abs(want - d) < 0.01 else d
            if abs(tr.delta) < 1e-3:
                tr.fields = None
                continue
            sign = 1.0 if tr.delta > 0 else -1.0
            fkey = (sign, tr.A.tobytes())
            if tr.fields is None or tr.key != fkey:
                todo.append((tr, face, sign, fkey))
            out_faces.append((tr, face, fade))
        for k in [k for k in self.tracks if k not in seen]:
            del self.tracks[k]
        if todo:
            if crops is None:
                crops = FrameCrops(None, frame)
            affs = np.stack([tr.A for tr, _, _, _ in todo])
            batch = crops.tensor(affs, (CROP, CROP), 0.0, 1.0)
            anchors = (np.stack([crop_anchors(f.landmarks, tr.A) for tr, f, _, _ in todo])
                       if getattr(self.model, "anchors", 0) else None)
            want_hint = getattr(self.model, "hint", False) or self.landmark_mix
            hints = (np.stack([landmark_hint(f.landmarks, tr.A, s) for tr, f, s, _ in todo])
                     if want_hint else None)
            signs = np.array([s for _, _, s, _ in todo], np.float32)
            if getattr(self.model, "hint", False):
                flow, wts, pal = self.model(batch, signs, anchors, hints)
            else:
                flow, wts, pal = self.model(batch, signs, anchors)
            if self.network_gain != 1.0:
                flow, wts = flow * self.network_gain, wts * self.network_gain
            if self.landmark_mix:
                flow = flow + self.landmark_mix * hints
            self.calls += 1
            colour = (np.asarray(pal)[::-1] * 255.0).astype(np.float32)  # RGB [0,1] -> BGR
            for j, (tr, _, _, fkey) in enumerate(todo):
                tr.fields = (np.ascontiguousarray(flow[j], np.float32),
                             np.ascontiguousarray(wts[j], np.float32), colour)
                tr.key = fkey
        jobs = []
        for tr, face, fade in out_faces:
            f, w, colour = tr.fields
            m = abs(tr.delta)
            win = self.window
            flow = f * (win * m)[..., None]
            wmix = w * win * m
            jobs.append(WarpJob(crop_to_frame=tr.A, flow=flow.astype(np.float32), alpha=win,
                                palette_mix=(wmix.astype(np.float32), colour)
                                if float(wmix.max()) > 1e-3 else None,
                                kind="face", face_id=face.track_id,
                                meta=dict(strength=tr.delta, fade=fade, model=True)))
        return jobs
