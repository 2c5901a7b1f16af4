"""Data that flows between the stages of the frame path (see ``../shared/DESIGN.md``).

Conventions used everywhere in warpcam:

- Images are ``H x W x 3`` ``uint8`` **BGR** (OpenCV order) in the pipeline.
- Pixel coordinates: ``x`` to the right, ``y`` down, pixel centres at integers.
- Angles are in degrees. Gaze / head **pitch positive = up**, **yaw positive = toward the
  subject's left** (image +x for a camera facing the subject), roll positive = clockwise in
  the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Frame:
    """One video frame.

    Attributes:
        image: ``H x W x 3`` ``uint8`` BGR, C-contiguous.
        index: 0-based position in the stream (decode order for files, capture order for webcams).
        pts_seconds: presentation time in seconds (file timestamp, or monotonic capture time for
            webcams); ``None`` when unknown (still images).
        pts: raw presentation timestamp in ``time_base`` units (video files only), used by the file
            sink to reproduce the input's timestamps exactly.
        time_base: the stream's time base as a ``fractions.Fraction`` (video files only).
        captured_at: ``time.perf_counter()`` when the frame became available to the pipeline; the
            latency benchmark measures from here.
    """

    image: np.ndarray
    index: int
    pts_seconds: Optional[float] = None
    pts: Optional[int] = None
    time_base: Optional[object] = None
    captured_at: Optional[float] = None
    name: Optional[str] = None  # file name for still images


@dataclass
class Face:
    """One tracked face in one frame.

    Attributes:
        track_id: integer that stays with the same person across frames.
        landmarks: ``478 x 2`` ``float32`` pixel coordinates (smoothed). Indices 468-472 are the
            subject's right iris (centre first), 473-477 the left iris (mediapipe FaceMesh order).
        landmarks_raw: the same before temporal smoothing.
        z: ``478`` ``float32`` relative depth in pixels (mediapipe's z scaled by the frame width;
            smaller = closer to the camera).
        yaw, pitch, roll: head pose in degrees (conventions in the module docstring).
        eye_openness: ``(right, left)`` lid distance / eye width; about 0.25-0.35 open, < 0.12
            closed (the smaller of the smoothed and raw values, so blinks are seen without lag).
        iris_diameter_px: ``(right, left)`` iris diameters in pixels.
        iris_confidence: ``(right, left)`` in [0, 1]: how consistent the iris ring looked.
    """

    track_id: int
    landmarks: np.ndarray
    landmarks_raw: np.ndarray
    z: np.ndarray
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    eye_openness: tuple = (0.3, 0.3)
    iris_diameter_px: tuple = (0.0, 0.0)
    iris_confidence: tuple = (1.0, 1.0)


@dataclass
class WarpJob:
    """One region of interest (ROI) of one face, described in a crop of size ``h x w``.

    Convention block (the contract between effects and every compositor backend):

    - ``crop_to_frame`` is a ``2 x 3`` float affine ``A`` that maps a crop pixel ``(u, v)`` to a
      frame pixel ``(x, y) = A @ (u, v, 1)``. Pixel centres are at integers in both spaces.
    - ``flow`` is a **backward** warp in crop pixels:
      ``warped(u, v) = frame(A @ (u + flow_x(u, v), v + flow_y(u, v), 1))``, so a flow of
      ``(+2, 0)`` shows, at ``(u, v)``, the content that sits 2 crop pixels to the right.
      Frame samples are bilinear with the frame border replicated.
    - ``lightness`` (optional, ``h x w``) multiplies the warped value (DeepWarp, Sec. 3.2).
    - ``palette_mix`` (optional) is ``(weights h x w, colour (3,) BGR 0-255)``:
      ``out = (1 - w) * warped + w * colour`` (DeepWarp's lightness correction module, LCM).
    - ``color`` / ``attention`` (optional, ``h x w x 3`` BGR 0-255 and ``h x w`` in [0, 1]):
      ``out = attention * warped + (1 - attention) * color`` (GANimation, Pumarola et al. 2018).
    - ``alpha`` (``h x w`` in [0, 1]) says how much of the result replaces the frame; it is 0
      outside the crop. Frame pixels outside every job's crop are left byte-identical.
    - Order of operations per pixel: flow sample → lightness → palette mix → colour/attention
      → alpha blend. Jobs of one frame all sample the *input* frame and are blended onto the
      output in list order (a later job is drawn over an earlier one where they overlap).

    Crop-space fields are sampled at frame resolution with bilinear interpolation (the flow is
    upsampled, not the warped image), so a coarse flow still gives a sharp result.
    """

    crop_to_frame: np.ndarray
    flow: np.ndarray
    alpha: np.ndarray
    lightness: Optional[np.ndarray] = None
    palette_mix: Optional[tuple] = None
    color: Optional[np.ndarray] = None
    attention: Optional[np.ndarray] = None
    kind: str = "roi"  # "eye_right", "eye_left", "mouth", ... (for logs and HUD)
    face_id: int = -1
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.crop_to_frame = np.asarray(self.crop_to_frame, dtype=np.float64)
        if self.crop_to_frame.shape != (2, 3):
            raise ValueError(f"crop_to_frame must be 2x3, got {self.crop_to_frame.shape}")
        self.flow = np.asarray(self.flow, dtype=np.float32)
        if self.flow.ndim != 3 or self.flow.shape[2] != 2:
            raise ValueError(f"flow must be h x w x 2, got {self.flow.shape}")
        h, w = self.flow.shape[:2]
        self.alpha = np.asarray(self.alpha, dtype=np.float32)
        if self.alpha.shape != (h, w):
            raise ValueError(f"alpha must be {(h, w)} like the flow, got {self.alpha.shape}")
        if self.lightness is not None and np.shape(self.lightness) != (h, w):
            raise ValueError(f"lightness must be {(h, w)}, got {np.shape(self.lightness)}")
        if self.palette_mix is not None:
            wts, col = self.palette_mix
            if np.shape(wts) != (h, w) or np.shape(col) != (3,):
                raise ValueError(
                    f"palette_mix must be (weights {(h, w)}, colour (3,)), got "
                    f"({np.shape(wts)}, {np.shape(col)})")
        if (self.color is None) != (self.attention is None):
            raise ValueError("color and attention must be given together")
        if self.color is not None:
            if np.shape(self.color) != (h, w, 3) or np.shape(self.attention) != (h, w):
                raise ValueError(
                    f"color must be {(h, w, 3)} and attention {(h, w)}, got "
                    f"{np.shape(self.color)} and {np.shape(self.attention)}")

    @property
    def size(self) -> tuple:
        """``(h, w)`` of the crop."""
        return self.flow.shape[:2]

    def frame_bbox(self, frame_shape) -> Optional[tuple]:
        """Integer frame box ``(x0, y0, x1, y1)`` (exclusive end) covered by the crop, clipped to
        the frame; ``None`` when the crop lies wholly outside."""
        h, w = self.size
        return affine_box(self.crop_to_frame, -0.5, -0.5, w - 0.5, h - 0.5, frame_shape)


def affine_box(a: np.ndarray, u0: float, v0: float, u1: float, v1: float, frame_shape,
               clip=None) -> Optional[tuple]:
    """Integer frame box ``(x0, y0, x1, y1)`` (exclusive end) around the image of the crop
    rectangle ``[u0, u1] x [v0, v1]`` under the 2 x 3 affine ``a``, clipped to the frame (and to
    the box ``clip`` when given); ``None`` when empty.

    Plain Python on 4 corners: numpy calls on such tiny arrays cost more than the arithmetic.
    """
    a00, a01, a02 = float(a[0, 0]), float(a[0, 1]), float(a[0, 2])
    a10, a11, a12 = float(a[1, 0]), float(a[1, 1]), float(a[1, 2])
    xs = [a00 * u + a01 * v + a02 for u, v in ((u0, v0), (u1, v0), (u0, v1), (u1, v1))]
    ys = [a10 * u + a11 * v + a12 for u, v in ((u0, v0), (u1, v0), (u0, v1), (u1, v1))]
    H, W = frame_shape[:2]
    cx0, cy0, cx1, cy1 = clip if clip is not None else (0, 0, W, H)
    x0 = max(math.floor(min(xs)), 0, cx0)
    y0 = max(math.floor(min(ys)), 0, cy0)
    x1 = min(math.ceil(max(xs)) + 1, W, cx1)
    y1 = min(math.ceil(max(ys)) + 1, H, cy1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1
