"""CPU compositor backend: applies every :class:`~warpcam.core.types.WarpJob` of a frame with
OpenCV ``remap`` and NumPy.

For each job, over the frame box its crop covers::

    (u, v)      = A^-1 (x, y)                   # frame pixel -> crop pixel (A = crop_to_frame)
    f           = bilinear(flow, (u, v))        # flow upsampled to frame resolution
    warped      = bilinear(input, A (u + f_x, v + f_y))   # backward warp, border replicated
    warped     *= lightness(u, v)               # DeepWarp lightness correction
    warped      = (1 - w) warped + w colour     # LCM palette mix, w = weights(u, v)
    warped      = a warped + (1 - a) color      # GANimation blend, a = attention(u, v)
    out(x, y)   = alpha(u, v) warped + (1 - alpha(u, v)) out(x, y)

Outside the crop, ``alpha`` and the palette weights read 0 while the flow, lightness, colour and
attention clamp to the crop's edge values (so effects should feather ``alpha`` to 0 at the
crop edge). All jobs sample the
*input* frame; they are blended onto the output in list order. Frame pixels outside every
job's box, and inside it where ``alpha`` is 0, keep their exact input bytes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from warpcam.core import jit as _jit
from warpcam.core.geometry import invert_affine
from warpcam.core.types import WarpJob
from warpcam.kernels import crop as _crop
from warpcam.kernels.base import Compositor, job_box


_JIT_MODULE = "warpcam.kernels._cpu_jit"
_NO_FIELD = np.zeros((1, 1), np.float32)
_NO_COLOUR = np.zeros(3, np.float32)


def _crop_coords(job: WarpJob, box) -> tuple:
    """Crop coordinates ``(u, v)`` (float32, box-shaped) of every frame pixel in ``box``."""
    x0, y0, x1, y1 = box
    inv = invert_affine(job.crop_to_frame)
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    # u = i00 x + i01 y + i02 ; separable sums keep this cheap.
    u = (inv[0, 0] * xs)[None, :] + (inv[0, 1] * ys + inv[0, 2])[:, None]
    v = (inv[1, 0] * xs)[None, :] + (inv[1, 1] * ys + inv[1, 2])[:, None]
    return u.astype(np.float32), v.astype(np.float32)


def _sample(field: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear sample of a crop-space field at (u, v); 0 outside the crop (constant border)."""
    return cv2.remap(np.ascontiguousarray(field, dtype=np.float32), u, v, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _sample_clamped(field: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear sample with the crop border replicated (used for fields that must not fade
    toward 0 at the crop edge, e.g. the flow)."""
    return cv2.remap(np.ascontiguousarray(field, dtype=np.float32), u, v, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


class CpuCompositor(Compositor):
    """OpenCV/NumPy compositor and ROI cropper (the default backend without a GPU).

    ``composite(frame, jobs)`` returns a new ``H x W x 3`` ``uint8`` BGR image and leaves the
    input untouched; with ``inplace=True`` it writes into ``frame`` instead (no full-frame
    copy: the pipeline owns its frames). With no jobs the input array itself is returned.

    All jobs are warped from the unmodified input first and blended afterwards, in list order,
    so writing in place never lets one job sample another's output.

    ``crop_rois``/``crop_groups`` are :func:`warpcam.kernels.crop.crop_rois` /
    :func:`~warpcam.kernels.crop.crop_groups` (OpenCV ``warpAffine``) and return numpy arrays.
    """

    name = "cpu"

    def __init__(self, fast: bool = True, jit: Optional[bool] = None):
        #: ``True``: :meth:`_warp_fast` (one 4-channel remap of the crop fields per job);
        #: ``False``: :meth:`_warp` (the reference, one remap per field). They agree within
        #: float rounding (``tests/test_speed_paths.py``).
        self.fast = bool(fast)
        #: with ``fast``: the compiled loops of :mod:`warpcam.kernels._cpu_jit` (one pass per
        #: job, warp and blend fused) when numba is there, :mod:`warpcam.core.jit` is on and
        #: they are compiled (``None``, the default: until then the OpenCV path runs), never
        #: (``False``), or always (``True``: waits for the compile; numba required).
        self.jit = jit

    # ------------------------------------------------------------------ crop
    def crop_rois(self, frame: np.ndarray, affines, size, mean=0.0, std=1.0, dtype=np.float32,
                  flip=None, border: str = "replicate") -> np.ndarray:
        """:func:`warpcam.kernels.crop.crop_rois`: ``(N, 3, h, w)`` numpy of ``dtype``."""
        return _crop.crop_rois(frame, affines, size, mean, std, dtype, flip, border)

    def crop_groups(self, frame: np.ndarray, specs: Sequence[_crop.CropSpec],
                    dtype=np.float32) -> list:
        """:func:`warpcam.kernels.crop.crop_groups`: one numpy array per spec."""
        return _crop.crop_groups(frame, specs, dtype)

    # ------------------------------------------------------------------ composite

    def composite(self, frame: np.ndarray, jobs: Sequence[WarpJob], inplace: bool = False
                  ) -> np.ndarray:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be H x W x 3 uint8, got {frame.shape} {frame.dtype}")
        if not jobs:
            return frame
        loops = self._loops()
        if loops is not None and frame.flags.c_contiguous:
            return self._composite_jit(loops, frame, jobs, inplace)
        warp = self._warp_fast if self.fast else self._warp
        warped = [w for w in (warp(frame, job) for job in jobs) if w is not None]
        out = frame if inplace else frame.copy()
        for (x0, y0, x1, y1), result, alpha in warped:
            region = out[y0:y1, x0:x1]
            if result.dtype == np.uint8:
                # dst = (alpha * result + (1 - alpha) * region) / 1, rounded; alpha == 0 keeps
                # the region's exact bytes.
                region[...] = cv2.blendLinear(result, region, alpha, 1.0 - alpha)
            else:
                a3 = alpha[..., None]
                blended = a3 * result + (1.0 - a3) * region.astype(np.float32)
                region[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out

    def _loops(self):
        if not self.fast or self.jit is False:
            return None
        loops = _jit.load(_JIT_MODULE, wait=bool(self.jit))
        if loops is None and self.jit:
            raise RuntimeError(f"CpuCompositor(jit=True): {_jit.why_not(_JIT_MODULE)}")
        return loops

    def _composite_jit(self, loops, frame: np.ndarray, jobs: Sequence[WarpJob], inplace: bool):
        """:meth:`composite` through the compiled loops, in list order, every job sampling the
        input. A job without palette or lightness/colour fields gets its source maps and
        blend weights from one vectorised compiled pass over its box
        (:func:`~warpcam.kernels._cpu_jit.job_maps`), then OpenCV's SIMD ``remap`` and
        ``blendLinear``: the bytes of the fused loop at about 60 % of its cost per pixel. A job
        with a palette is warped and blended in one pass
        (:func:`~warpcam.kernels._cpu_jit.warp_blend`). Every result is taken from the input
        before the first write: in place, the part of the input a fused job can sample (its
        box grown by its largest displacement) is copied first."""
        H, W = frame.shape[:2]
        items = []
        for job in jobs:
            if job.lightness is not None or job.color is not None:
                w = self._warp(frame, job)  # rare fields: the reference path, from the input
                if w is not None:
                    items.append(("result", w))
                continue
            box = job_box(job, frame.shape)
            if box is None:
                continue
            a = np.asarray(job.crop_to_frame, np.float64)
            flow = np.ascontiguousarray(job.flow, np.float32)
            alpha = np.ascontiguousarray(job.alpha, np.float32)
            if job.palette_mix is None:
                x0, y0, x1, y1 = box
                mx, my, al, be = loops.job_maps(x0, y0, x1, y1, invert_affine(a), a, flow,
                                                alpha)
                warped = cv2.remap(frame, mx, my, cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
                items.append(("maps", (box, warped, al, be)))
                continue
            reach = (float(np.abs(flow).max()) * float(np.abs(a[:, :2]).sum(axis=1).max())
                     if flow.size else 0.0)
            m = int(np.ceil(reach)) + 2
            if not inplace:
                patch = (frame, 0, 0)
            else:
                px0, py0 = max(box[0] - m, 0), max(box[1] - m, 0)
                px1, py1 = min(box[2] + m, W), min(box[3] + m, H)
                patch = (frame[py0:py1, px0:px1].copy(), px0, py0)
            items.append(("fused", (box, a, flow, alpha, patch, job.palette_mix)))
        out = frame if inplace else frame.copy()
        for kind, item in items:
            if kind == "maps":
                (x0, y0, x1, y1), warped, al, be = item
                region = out[y0:y1, x0:x1]
                region[...] = cv2.blendLinear(warped, region, al, be)
            elif kind == "result":
                (x0, y0, _, _), result, alpha = item
                loops.blend(out, x0, y0, np.asarray(result, np.float32),
                            np.ascontiguousarray(alpha, np.float32), result.dtype == np.uint8)
            else:
                box, a, flow, alpha, patch, pal = item
                has_pal = pal is not None
                weights = np.ascontiguousarray(pal[0], np.float32) if has_pal else _NO_FIELD
                colour = np.asarray(pal[1], np.float32).reshape(3) if has_pal else _NO_COLOUR
                loops.warp_blend(patch[0], patch[1], patch[2], out, box[0], box[1], box[2],
                                 box[3], invert_affine(a), a, flow, alpha, weights, has_pal,
                                 colour)
        return out

    @staticmethod
    def _warp_fast(src: np.ndarray, job: WarpJob):
        """:meth:`_warp` with the crop-space fields sampled in one remap.

        The crop fields are packed, with a one-pixel pad, into one ``(h + 2) x (w + 2) x 4``
        float32 image: the flow already mapped to frame pixels (``A_lin f``, padded by
        replication), ``alpha`` and the palette weights (padded with 0). One bilinear remap with
        the border replicated then gives exactly what the reference's per-field remaps give
        (constant-0 border for alpha and the weights, replicated for the flow): bilinear
        sampling is linear, so ``A_lin`` commutes with it, and the pad reproduces both borders.
        """
        if job.lightness is not None or job.color is not None:
            return CpuCompositor._warp(src, job)  # rare fields: the reference path
        box = job_box(job, src.shape)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        a = job.crop_to_frame
        h, w = job.alpha.shape
        flow = job.flow
        fields = np.zeros((h + 2, w + 2, 4), np.float32)
        inner = fields[1:-1, 1:-1]
        fx, fy = flow[..., 0], flow[..., 1]
        np.add(fx * np.float32(a[0, 0]), fy * np.float32(a[0, 1]), out=inner[..., 0])
        np.add(fx * np.float32(a[1, 0]), fy * np.float32(a[1, 1]), out=inner[..., 1])
        fields[0, 1:-1, :2] = inner[0, :, :2]
        fields[-1, 1:-1, :2] = inner[-1, :, :2]
        fields[:, 0, :2] = fields[:, 1, :2]
        fields[:, -1, :2] = fields[:, -2, :2]
        inner[..., 2] = job.alpha
        if job.palette_mix is not None:
            inner[..., 3] = job.palette_mix[0]
        # crop coordinates of the box's pixels, shifted by the pad
        inv = invert_affine(a)
        xs = np.arange(x0, x1, dtype=np.float64)
        ys = np.arange(y0, y1, dtype=np.float64)
        u = ((inv[0, 0] * xs)[None, :] + (inv[0, 1] * ys + (inv[0, 2] + 1.0))[:, None]
             ).astype(np.float32)
        v = ((inv[1, 0] * xs)[None, :] + (inv[1, 1] * ys + (inv[1, 2] + 1.0))[:, None]
             ).astype(np.float32)
        sampled = cv2.remap(fields, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = np.clip(sampled[..., 2], 0.0, 1.0)
        if not alpha.any():
            return None
        mx = np.add(sampled[..., 0], xs.astype(np.float32)[None, :])
        my = np.add(sampled[..., 1], ys.astype(np.float32)[:, None])
        warped = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if job.palette_mix is None:
            return box, warped, alpha
        colour = np.asarray(job.palette_mix[1], np.float32)
        wts = sampled[..., 3:4]
        return box, warped.astype(np.float32) * (1.0 - wts) + wts * colour, alpha

    @staticmethod
    def _warp(src: np.ndarray, job: WarpJob):
        """``(box, warped, alpha)`` for one job over its frame box, or ``None`` when it touches
        no pixel. ``warped`` is uint8 when no colour correction applies, else float32."""
        box = job_box(job, src.shape)  # frame_bbox, shrunk to where alpha can be > 0
        if box is None:
            return None
        x0, y0, x1, y1 = box
        u, v = _crop_coords(job, box)
        alpha = np.clip(_sample(job.alpha, u, v), 0.0, 1.0)
        if not alpha.any():
            return None
        flow = _sample_clamped(job.flow, u, v)
        a = job.crop_to_frame
        # A (u + f) = (x, y) + A_lin f: source position = frame pixel + flow mapped to frame.
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        mx = xs + (a[0, 0] * flow[..., 0] + a[0, 1] * flow[..., 1]).astype(np.float32)
        my = ys + (a[1, 0] * flow[..., 0] + a[1, 1] * flow[..., 1]).astype(np.float32)
        warped = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if job.lightness is None and job.palette_mix is None and job.color is None:
            return box, warped, alpha
        warped = warped.astype(np.float32)
        if job.lightness is not None:
            warped *= _sample_clamped(job.lightness, u, v)[..., None]
        if job.palette_mix is not None:
            wts, colour = job.palette_mix
            w = _sample(wts, u, v)[..., None]
            warped = warped * (1.0 - w) + w * np.asarray(colour, np.float32)
        if job.color is not None:
            att = _sample_clamped(job.attention, u, v)[..., None]
            col = _sample_clamped(job.color, u, v)
            warped = att * warped + (1.0 - att) * col
        return box, warped, alpha
