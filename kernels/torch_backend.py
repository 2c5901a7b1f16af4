"""Torch compositor backend: the readable reference of the fused kernels, on any torch device.

Both operations are written with ``torch.nn.functional.grid_sample`` and tensor ops, one job (or
one crop batch) at a time, in the order the contract states; the CUDA kernels
(``kernels/cuda/warp_math.cuh``) compute the same thing per pixel.

Convention block (see :class:`warpcam.core.types.WarpJob` and :mod:`warpcam.kernels.crop`):

- Frames: ``H x W x 3`` ``uint8`` BGR (numpy, or a torch tensor on the backend's device).
- Coordinates: pixel centres at integers; ``grid_sample`` is always called with
  ``align_corners=True``, where normalised -1 and +1 are the centres of the first and last
  pixels, i.e. ``g = 2 x / (W - 1) - 1``.
- Per job, over the frame box ``WarpJob.frame_bbox`` (exclusive end; skipping the part where
  alpha is certainly 0, :func:`warpcam.kernels.base.job_box`), with ``(u, v) = A^-1 (x, y)``:

  .. code-block:: text

      alpha, w_pal    = bilinear(field, (u, v)), zero outside the crop   (padding_mode="zeros")
      flow, light,
      attention, color = bilinear(field, (u, v)), edge replicated       (padding_mode="border")
      warped  = bilinear(input, A (u + flow_x, v + flow_y)), frame edge replicated
                (computed as (x, y) + A_lin flow, which is exact in x, y)
      warped *= light; warped = (1 - w_pal) warped + w_pal palette
      warped  = attention warped + (1 - attention) color
      out     = rint(clip(alpha) warped + (1 - clip(alpha)) out)   where alpha > 0

  Jobs run in list order; each samples the *input* frame and blends onto the output, so a later
  job is drawn over an earlier one. Pixels where every job's alpha is 0 keep their input bytes.
- Crops: ``out[n, c, v, u] = (frame(A'_n (u, v))[2 - c] / 255 - mean[c]) / std[c]`` (RGB, NCHW).

Everything is float32; results agree with the host build of the CUDA math to float rounding
(at most one grey level, on a rounding tie) and with the OpenCV backend within one grey level on
>= 99.9 % of pixels (OpenCV rounds its sample coordinates to 1/32 pixel and its frame samples to
``uint8``; see ``tests/test_kernels_agreement.py``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from warpcam.core.geometry import invert_affine
from warpcam.core.types import WarpJob
from warpcam.kernels import crop as _crop
from warpcam.kernels.base import Compositor, job_box


def _sample(field: torch.Tensor, x: torch.Tensor, y: torch.Tensor, padding: str) -> torch.Tensor:
    """Bilinear sample of ``field`` ``(N, C, h, w)`` at pixel coordinates ``x, y`` ``(N, bh, bw)``.

    Returns ``(N, C, bh, bw)``. ``padding`` is ``"zeros"`` (neighbours outside read 0, like
    ``cv2.BORDER_CONSTANT``) or ``"border"`` (clamped, like ``cv2.BORDER_REPLICATE``).
    """
    h, w = field.shape[-2:]
    if h < 2 or w < 2:
        # align_corners=True cannot express a 1-pixel axis (every point maps to its centre): pad
        # one pixel with what the border mode reads there, which changes no sample.
        field = F.pad(field, (1, 1, 1, 1), mode="constant" if padding == "zeros" else "replicate")
        x, y, h, w = x + 1, y + 1, h + 2, w + 2
    grid = torch.stack([x * (2.0 / (w - 1)) - 1.0, y * (2.0 / (h - 1)) - 1.0], dim=-1)
    return F.grid_sample(field, grid, mode="bilinear", padding_mode=padding, align_corners=True)


class TorchCompositor(Compositor):
    """``grid_sample`` compositor and ROI cropper on a torch device (the reference backend).

    Args:
        device: any torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...).

    ``composite(frame, jobs, inplace=False)`` takes and returns numpy (``H x W x 3`` ``uint8``
    BGR: a new array and the input untouched, or the input itself written over with
    ``inplace=True``; no jobs returns the input). ``composite_tensor`` is the same on a tensor
    that is already on the device. ``crop_rois``/``crop_groups`` return tensors on the device.
    """

    name = "torch"

    def __init__(self, device="cpu"):
        self.device = torch.device(device)

    # ------------------------------------------------------------------ composite
    def composite(self, frame: np.ndarray, jobs: Sequence[WarpJob], inplace: bool = False
                  ) -> np.ndarray:
        """Apply ``jobs`` to a numpy frame; see the module docstring for the maths.

        Args:
            frame: ``H x W x 3`` ``uint8`` BGR.
            jobs: the frame's WarpJobs, in drawing order.
            inplace: write the result into ``frame`` and return it, instead of a new array.

        Raises:
            ValueError: ``frame`` is not ``H x W x 3`` ``uint8``.
        """
        _crop.check_frame(frame)
        if not jobs:
            return frame
        out = self.composite_tensor(torch.from_numpy(np.ascontiguousarray(frame)).to(self.device),
                                    jobs).cpu().numpy()
        if inplace:
            np.copyto(frame, out)
            return frame
        return out

    @torch.no_grad()
    def composite_tensor(self, frame: torch.Tensor, jobs: Sequence[WarpJob]) -> torch.Tensor:
        """Apply ``jobs`` to an ``H x W x 3`` ``uint8`` BGR tensor; returns a new tensor on the
        same device (the input itself when there are no jobs)."""
        _crop.check_frame(frame)
        if not jobs:
            return frame
        out = frame.clone()
        src = frame.permute(2, 0, 1)[None].float()  # (1, 3, H, W), sampled by every job
        for job in jobs:
            self._apply(src, out, job)
        return out

    def _field(self, arr) -> torch.Tensor:
        t = torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float32), device=self.device)
        return t[..., None] if t.ndim == 2 else t  # h x w x C

    def _apply(self, src: torch.Tensor, out: torch.Tensor, job: WarpJob) -> None:
        box = job_box(job, out.shape)  # frame_bbox, shrunk to where alpha can be > 0
        if box is None:
            return
        x0, y0, x1, y1 = box
        dev = self.device
        inv = invert_affine(job.crop_to_frame)
        a = job.crop_to_frame
        xs = torch.arange(x0, x1, dtype=torch.float32, device=dev)[None, :]
        ys = torch.arange(y0, y1, dtype=torch.float32, device=dev)[:, None]
        u = (float(inv[0, 0]) * xs + (float(inv[0, 1]) * ys + float(inv[0, 2])))[None]
        v = (float(inv[1, 0]) * xs + (float(inv[1, 1]) * ys + float(inv[1, 2])))[None]

        # Fields that read 0 outside the crop, then fields clamped to its edge: one
        # grid_sample each, channels stacked.
        zero = [self._field(job.alpha)]
        if job.palette_mix is not None:
            zero.append(self._field(job.palette_mix[0]))
        edge = [self._field(job.flow)]
        if job.lightness is not None:
            edge.append(self._field(job.lightness))
        if job.color is not None:
            edge += [self._field(job.attention), self._field(job.color)]
        zs = _sample(torch.cat(zero, -1).permute(2, 0, 1)[None], u, v, "zeros")[0]
        es = _sample(torch.cat(edge, -1).permute(2, 0, 1)[None], u, v, "border")[0]

        alpha = zs[0]
        # A (u + f) = (x, y) + A_lin f, exact in (x, y) (as the CUDA math and kernels.cpu do).
        mx = (xs + (float(a[0, 0]) * es[0] + float(a[0, 1]) * es[1]))[None]
        my = (ys + (float(a[1, 0]) * es[0] + float(a[1, 1]) * es[1]))[None]
        warped = _sample(src, mx, my, "border")[0]  # (3, bh, bw) BGR
        k = 2
        if job.lightness is not None:
            warped = warped * es[k]
            k += 1
        if job.palette_mix is not None:
            w = zs[1]
            colour = torch.as_tensor(np.asarray(job.palette_mix[1], np.float32), device=dev)
            warped = warped * (1.0 - w) + w * colour[:, None, None]
        if job.color is not None:
            att, color = es[k], es[k + 1:k + 4]
            warped = att * warped + (1.0 - att) * color

        region = out[y0:y1, x0:x1]
        blend_a = alpha.clamp(0.0, 1.0)
        blended = blend_a * warped + (1.0 - blend_a) * region.permute(2, 0, 1).float()
        new = blended.round().clamp(0.0, 255.0).to(torch.uint8).permute(1, 2, 0)
        # torch.round rounds half to even, like rintf and np.rint.
        region.copy_(torch.where((alpha > 0)[..., None], new, region))

    # ------------------------------------------------------------------ crop
    def _frame_tensor(self, frame) -> torch.Tensor:
        if isinstance(frame, np.ndarray):
            _crop.check_frame(frame)
            return torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)
        _crop.check_frame(frame)
        return frame.to(self.device)

    @torch.no_grad()
    def crop_groups(self, frame, specs: Sequence[_crop.CropSpec], dtype=torch.float32) -> list:
        """Crop every spec's ROIs; one ``(N_k, 3, h_k, w_k)`` tensor of ``dtype`` per spec.

        Args:
            frame: ``H x W x 3`` ``uint8`` BGR, numpy or tensor.
            specs: :class:`warpcam.kernels.crop.CropSpec` s.
            dtype: float32 or float16 (numpy or torch dtype).
        """
        rgb = self._frame_tensor(frame).permute(2, 0, 1)[None].flip(1).float()  # (1,3,H,W) RGB
        out_dtype = getattr(torch, _crop.resolve_dtype(dtype).name)
        outs = []
        for s in specs:
            h, w = _crop.check_size(s.size)
            a = torch.as_tensor(_crop.fold_flip(s.affines, (h, w), s.flip), dtype=torch.float32,
                                device=self.device)
            scale, bias = (torch.as_tensor(t, device=self.device)[None, :, None, None]
                           for t in _crop.normalisation(s.mean, s.std))
            padding = "border" if _crop.check_border(s.border) == "replicate" else "zeros"
            n = a.shape[0]
            if n == 0:
                outs.append(torch.zeros((0, 3, h, w), dtype=out_dtype, device=self.device))
                continue
            us = torch.arange(w, dtype=torch.float32, device=self.device)[None, None, :]
            vs = torch.arange(h, dtype=torch.float32, device=self.device)[None, :, None]
            ab = a[:, :, :, None, None]
            x = ab[:, 0, 0] * us + ab[:, 0, 1] * vs + ab[:, 0, 2]  # (N, h, w)
            y = ab[:, 1, 0] * us + ab[:, 1, 1] * vs + ab[:, 1, 2]
            crops = _sample(rgb.expand(n, -1, -1, -1), x, y, padding)
            outs.append((crops * scale + bias).to(out_dtype).contiguous())
        return outs
