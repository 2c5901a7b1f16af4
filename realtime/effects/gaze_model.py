"""Model-driven eye warp: fulfils the gaze planner's eye requests with the DeepWarp network of
``training/gaze`` (a ``torch.export`` artifact loaded by the model runtime).

Convention block:

- Eye ROI: the one ROI rule (:func:`warpcam.core.eyes.eye_crop`), sampled at ``41 x 51``
  (H x W) through the compositor's crop service. The subject's **left** eye is mirrored
  left-right before the network (its yaw negated) so one network serves both eyes; its flow is
  mirrored back and its x component negated.
- Network input: ``(N, 3, 41, 51)`` float32 RGB in [0, 1]; ``(N, 2)`` gaze change
  ``(pitch, yaw)`` degrees (pitch up, yaw toward crop +x): the requested change times the
  planner's fade; optionally ``(N, 7, 2)`` anchors (crop pixels).
- Network output: backward flow in crop pixels (the ``WarpJob.flow`` convention), the LCM
  palette weight and the palette colour (RGB, [0, 1]). The compositor samples the *frame* at
  full resolution through the flow (no 41 x 51 paste).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from warpcam.core.eyes import ANCHOR_INDEX, EYE_CROP_H, EYE_CROP_W, eye_crop, gaze_shift_px
from warpcam.core.geometry import CropCache, border_window
from warpcam.core.types import WarpJob
from warpcam.realtime.effects.base import FrameCrops
from warpcam.realtime.effects.gaze import EyeRequest


@dataclass
class _PendingEye:
    """An eye waiting for the batched network call (internal)."""

    A: np.ndarray
    request: EyeRequest
    flip: bool
    angle_in: np.ndarray  # network angle input (pitch, yaw), flipped frame
    anchors: np.ndarray
    key: tuple
    signature: np.ndarray
    meta: dict


class ModelEyeWarp:
    """Fulfils eye requests with a loaded gaze network, both eyes of every face in one batched
    call. While an eye holds still (its crop-space landmarks within 0.2 crop pixels) the
    network's fields are reused (:class:`~warpcam.core.geometry.CropCache`).
    ``meta["iris_shift_px"]`` reports the displacement the eyeball model asks for (frame
    pixels), as the landmark warp does; ``meta["model"]`` is True.

    Args:
        model: a loaded gaze model (``warpcam.realtime.gaze_model.load_gaze_model``):
            ``model(crops, angles, anchors) -> (flow (N, h, w, 2), weights (N, h, w),
            palette (3,))``.
        cache: reuse fields while an eye holds still.
        edge_margin: the alpha window's raised-cosine margin (fraction of each side).
    """

    def __init__(self, model, cache: bool = True, edge_margin: float = 0.15):
        self.model = model
        self.cache: Optional[CropCache] = CropCache(tol=0.2) if cache else None
        self.alpha = border_window(EYE_CROP_H, EYE_CROP_W, edge_margin)
        self.calls = 0  # network calls (for tests and benchmarks)

    def tick(self) -> None:
        if self.cache is not None:
            self.cache.tick()

    def _pending(self, r: EyeRequest) -> Optional[_PendingEye]:
        A, flip, crop_pts, eye_w, axis = eye_crop(r.face.landmarks, r.side)
        d = np.asarray(r.delta_deg, np.float64) * r.fade
        if abs(d[0]) < 0.05 and abs(d[1]) < 0.05:
            return None
        angle_in = np.array([d[0], -d[1] if flip else d[1]], np.float32)
        c_, s_ = math.cos(axis), math.sin(axis)
        iris_d = float(r.face.iris_diameter_px[r.k])
        shift_frame = np.array([[c_, -s_], [s_, c_]]) @ gaze_shift_px(d[0], d[1], iris_d)
        signature = np.concatenate([crop_pts.ravel(), angle_in.astype(np.float64) * 0.1])
        return _PendingEye(A=A, request=r, flip=flip, angle_in=angle_in,
                           anchors=crop_pts[list(ANCHOR_INDEX)], key=(r.face.track_id, r.side),
                           signature=signature,
                           meta=dict(iris_shift_px=shift_frame, model=True, **r.meta))

    def fulfil(self, requests: Sequence[EyeRequest], s, image: np.ndarray,
               crops: FrameCrops) -> List[WarpJob]:
        pending = [p for p in (self._pending(r) for r in requests) if p is not None]
        fields: list = [None] * len(pending)
        todo = []
        for i, p in enumerate(pending):
            if self.cache is not None:
                fields[i] = self.cache.get(p.key, p.signature)
            if fields[i] is None:
                todo.append(i)
        if todo:
            sel = [pending[i] for i in todo]
            batch = crops.tensor(np.stack([p.A for p in sel]), (EYE_CROP_H, EYE_CROP_W), 0.0, 1.0,
                          flip=[p.flip for p in sel])
            flow, wts, palette = self.model(batch, np.stack([p.angle_in for p in sel]),
                                            np.stack([p.anchors for p in sel]))
            self.calls += 1
            colour = (palette[::-1] * 255.0).astype(np.float32)  # RGB [0, 1] -> BGR 0-255
            for j, i in enumerate(todo):
                f, w = flow[j], wts[j]
                if pending[i].flip:  # back to the frame's orientation
                    f = f[:, ::-1].copy()
                    f[..., 0] *= -1.0
                    w = w[:, ::-1]
                fields[i] = (np.ascontiguousarray(f, np.float32),
                             np.ascontiguousarray(w, np.float32), colour)
                if self.cache is not None:
                    self.cache.put(pending[i].key, pending[i].signature, fields[i])
        out = []
        for p, (f, w, colour) in zip(pending, fields):
            palette_mix = (w, colour) if float(w.max()) > 1e-3 else None
            out.append(WarpJob(crop_to_frame=p.A, flow=f, alpha=self.alpha,
                               palette_mix=palette_mix, kind=f"eye_{p.request.side}",
                               face_id=p.request.face.track_id, meta=p.meta))
        return out
