"""ROI extraction: crop every region of interest of a frame into one normalised NCHW batch.

This module is the CPU reference (OpenCV ``warpAffine``) and holds the argument handling that the
torch (:mod:`warpcam.kernels.torch_backend`) and CUDA (:mod:`warpcam.kernels.cuda_backend`)
versions share, so all three read the same ROI the same way.

Convention block:

- ``frame``: ``H x W x 3`` ``uint8`` **BGR**, pixel centres at integers, x right, y down.
- ``affines``: ``(N, 2, 3)``, each maps a **crop** pixel ``(u, v)`` to a **frame** pixel
  ``(x, y) = A (u, v, 1)`` (the ``WarpJob.crop_to_frame`` direction; ``cv2.warpAffine`` with
  ``WARP_INVERSE_MAP``).
- ``flip``: a ROI with ``flip`` set is mirrored left-right, ``out(u, v) = crop(w - 1 - u, v)``
  (one eye network for both eyes); it is folded into the affine, ``A' = A F``.
- Sampling is bilinear; ``border="replicate"`` clamps to the frame edge, ``"constant"`` reads
  black (0) outside the frame.
- Output: ``(N, 3, h, w)`` **RGB**, ``out = (pixel / 255 - mean) / std`` per channel, with
  ``mean`` and ``std`` in RGB order on the 0-1 scale: ``mean=0.5, std=0.5`` gives [-1, 1],
  ``mean=0, std=1`` gives [0, 1]. dtype float32 or float16.

So ``out[n, c, v, u] = (frame_bgr(A'_n (u, v, 1))[2 - c] / 255 - mean[c]) / std[c]``.

Precision: OpenCV computes ``warpAffine`` on ``uint8`` in fixed point (coordinates rounded to
1/32 pixel, result rounded to ``uint8``); the torch and CUDA versions sample in float32. They
agree within one grey level, ``1 / (255 std)`` in output units, on all but the sharpest edges.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import cv2
import numpy as np

BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}

FlipArg = Union[None, bool, Sequence[bool], np.ndarray]


@dataclass
class CropSpec:
    """One batch of ROIs for one network (all the same crop size).

    Attributes:
        affines: ``(N, 2, 3)`` crop -> frame affines.
        size: crop ``(h, w)``.
        mean, std: normalisation, scalars or 3 values in RGB order, 0-1 scale.
        flip: ``None``/``bool`` for all ROIs, or ``N`` booleans (mirror left-right).
        border: ``"replicate"`` or ``"constant"`` (black) outside the frame.
    """

    affines: np.ndarray
    size: tuple
    mean: object = 0.0
    std: object = 1.0
    flip: FlipArg = None
    border: str = "replicate"


def check_frame(frame) -> None:
    """Raise ``ValueError`` unless ``frame`` (numpy, torch or CuPy) is ``H x W x 3`` ``uint8``."""
    if frame.ndim != 3 or frame.shape[2] != 3 or str(frame.dtype).replace("torch.", "") != "uint8":
        raise ValueError(f"frame must be H x W x 3 uint8, got {tuple(frame.shape)} {frame.dtype}")


def check_size(size) -> tuple:
    """``(h, w)`` as positive ints, else ``ValueError``."""
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (h, w), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (h, w), got {size!r}")
    return h, w


def check_affines(affines) -> np.ndarray:
    """``(N, 2, 3)`` float64 copy of ``affines`` (a single ``2 x 3`` is promoted), else
    ``ValueError``."""
    a = np.asarray(affines, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (2, 3):
        raise ValueError(f"affines must be (N, 2, 3), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("affines must be finite")
    return a.copy()


def fold_flip(affines: np.ndarray, size: tuple, flip: FlipArg) -> np.ndarray:
    """Affines with the left-right mirror ``u -> w - 1 - u`` folded in where ``flip`` is set.

    Args:
        affines: ``(N, 2, 3)`` crop -> frame.
        size: crop ``(h, w)``.
        flip: ``None``/``False`` (none), ``True`` (all) or ``N`` booleans.

    Returns:
        ``(N, 2, 3)`` float64.
    """
    a = check_affines(affines)
    if flip is None or flip is False:
        return a
    flags = np.broadcast_to(np.asarray(flip, dtype=bool), (a.shape[0],)) if np.ndim(flip) == 0 \
        else np.asarray(flip, dtype=bool)
    if flags.shape != (a.shape[0],):
        raise ValueError(f"flip must be a bool or {a.shape[0]} bools, got shape {flags.shape}")
    w = size[1]
    mirror = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    a[flags] = a[flags] @ mirror
    return a


def normalisation(mean, std) -> tuple:
    """``(scale, bias)``, each ``(3,)`` float32 in RGB order, with
    ``(p / 255 - mean) / std == p * scale + bias`` for a pixel value ``p`` in 0-255.

    Raises:
        ValueError: ``mean``/``std`` not a scalar or 3 values, or ``std`` not positive.
    """
    m = np.broadcast_to(np.asarray(mean, np.float64), (3,)) if np.ndim(mean) == 0 \
        else np.asarray(mean, np.float64)
    s = np.broadcast_to(np.asarray(std, np.float64), (3,)) if np.ndim(std) == 0 \
        else np.asarray(std, np.float64)
    if m.shape != (3,) or s.shape != (3,):
        raise ValueError(
            f"mean and std must be scalars or 3 values (RGB), got {m.shape}, {s.shape}")
    if np.any(s <= 0):
        raise ValueError(f"std must be positive, got {s}")
    return (1.0 / (255.0 * s)).astype(np.float32), (-m / s).astype(np.float32)


def resolve_dtype(dtype) -> np.dtype:
    """``np.float32`` or ``np.float16`` from a numpy or torch dtype (or its name), else
    ``ValueError``."""
    torch_names = {"torch.float32": np.float32, "torch.float": np.float32,
                   "torch.float16": np.float16, "torch.half": np.float16}
    try:
        d = np.dtype(torch_names.get(str(dtype), dtype))
    except TypeError:
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}") from None
    if d not in (np.float32, np.float16):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    return d


def check_border(border: str) -> str:
    if border not in BORDERS:
        raise ValueError(f"border must be 'replicate' or 'constant', got {border!r}")
    return border


def crop_rois(frame: np.ndarray, affines, size, mean=0.0, std=1.0, dtype=np.float32,
              flip: FlipArg = None, border: str = "replicate") -> np.ndarray:
    """Crop, normalise and batch ROIs of a frame (CPU reference, OpenCV).

    ``out[n, c, v, u] = (frame(A'_n (u, v, 1))[2 - c] / 255 - mean[c]) / std[c]`` with ``A'_n``
    the n-th affine (flip folded in), bilinear, the frame border per ``border``. Equivalent to
    ``cv2.warpAffine(frame, A, (w, h), flags=INTER_LINEAR | WARP_INVERSE_MAP)`` per ROI, then BGR
    -> RGB, normalise, HWC -> CHW and stack.

    Args:
        frame: ``H x W x 3`` uint8 BGR.
        affines: ``(N, 2, 3)`` (or one ``2 x 3``) crop -> frame.
        size: crop ``(h, w)``.
        mean, std: scalars or RGB triples on the 0-1 scale.
        dtype: float32 or float16 output.
        flip: mirror ROIs left-right (see :func:`fold_flip`).
        border: ``"replicate"`` or ``"constant"`` (black).

    Returns:
        ``(N, 3, h, w)`` C-contiguous array of ``dtype``, RGB.

    Raises:
        ValueError: a bad shape, size, dtype, border or normalisation.

    Example:
        >>> import numpy as np
        >>> frame = np.zeros((48, 64, 3), np.uint8)
        >>> crop_rois(frame, [[[1, 0, 10], [0, 1, 5]]], (16, 24), 0.5, 0.5).shape
        (1, 3, 16, 24)
    """
    check_frame(frame)
    h, w = check_size(size)
    a = fold_flip(affines, (h, w), flip)
    scale, bias = normalisation(mean, std)
    out_dtype = resolve_dtype(dtype)
    mode = BORDERS[check_border(border)]
    crops = np.empty((a.shape[0], h, w, 3), np.uint8)
    for i, m in enumerate(a):
        cv2.warpAffine(frame, m, (w, h), dst=crops[i],
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=mode,
                       borderValue=(0, 0, 0))
    rgb = crops[..., ::-1].astype(np.float32) * scale + bias
    return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=out_dtype)


def crop_groups(frame: np.ndarray, specs: Sequence[CropSpec], dtype=np.float32) -> list:
    """:func:`crop_rois` for several ROI batches of one frame (one per network).

    Returns:
        One ``(N_k, 3, h_k, w_k)`` array per spec, in order.
    """
    return [crop_rois(frame, s.affines, s.size, s.mean, s.std, dtype, s.flip, s.border)
            for s in specs]

