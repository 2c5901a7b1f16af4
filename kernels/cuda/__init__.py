"""CUDA sources of the fused warp kernels and the binary layout they share with Python.

The per-pixel math is in ``warp_math.cuh`` (``__host__ __device__``); ``warp_kernels.cu`` holds
the ``extern "C"`` entry points that CuPy loads (:mod:`warpcam.kernels.cuda_backend`), and
``host_loops.cpp`` runs the same thread bodies on the host for the tests
(:mod:`warpcam.kernels.hostbuild`). This module packs :class:`~warpcam.core.types.WarpJob`
lists and crop ROIs into the flat tables those functions read, so the CUDA backend and the host
build feed the math identical bytes.

Packed layouts (all fields 4 bytes, little endian, no padding):

- ``JOB_DTYPE`` mirrors ``struct WcJob``: affine ``a`` (crop -> frame) and its inverse ``inv``
  as float32 ``2 x 3`` row-major, crop ``h, w``, frame box ``x0, y0, x1, y1`` (exclusive end,
  :func:`~warpcam.kernels.base.job_box`: ``WarpJob.frame_bbox`` shrunk to where alpha can be
  > 0), the float offsets of each crop-space field in the shared ``fields`` buffer (``-1`` =
  absent) and the palette colour (BGR, 0-255).
- ``ROI_DTYPE`` mirrors ``struct WcRoi``: affine (crop -> frame, flip folded in), per-channel
  ``scale``/``bias`` in output (RGB) order, crop ``h, w``, the element offset of the ROI's
  ``3 x h x w`` planes in the output, and the frame border mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from warpcam.core.geometry import invert_affine
from warpcam.kernels import crop as _crop
from warpcam.kernels.base import job_box  # noqa: F401  (re-exported: the box the table holds)

SOURCE_DIR = Path(__file__).resolve().parent
HEADER = SOURCE_DIR / "warp_math.cuh"
KERNELS_CU = SOURCE_DIR / "warp_kernels.cu"
HOST_CPP = SOURCE_DIR / "host_loops.cpp"

#: Entry points of ``warp_kernels.cu``.
KERNEL_NAMES = ("wc_composite", "wc_crop_rois_f32", "wc_crop_rois_f16")
#: Architectures the kernels are compiled and tested for (Turing to Hopper).
SUPPORTED_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")
#: Must match ``WC_TILE`` and ``WC_CROP_THREADS`` in ``warp_math.cuh`` (checked by the tests).
TILE = 16
CROP_THREADS = 256
BORDER_ZERO = 0
BORDER_REPLICATE = 1

JOB_DTYPE = np.dtype([
    ("a", "<f4", (6,)), ("inv", "<f4", (6,)), ("h", "<i4"), ("w", "<i4"),
    ("x0", "<i4"), ("y0", "<i4"), ("x1", "<i4"), ("y1", "<i4"),
    ("flow", "<i4"), ("alpha", "<i4"), ("light", "<i4"), ("palw", "<i4"), ("color", "<i4"),
    ("att", "<i4"), ("pal", "<f4", (3,)), ("pad_", "<i4"),
])
ROI_DTYPE = np.dtype([
    ("a", "<f4", (6,)), ("scale", "<f4", (3,)), ("bias", "<f4", (3,)), ("h", "<i4"),
    ("w", "<i4"), ("out_offset", "<i4"), ("border", "<i4"),
])
assert JOB_DTYPE.itemsize == 112 and ROI_DTYPE.itemsize == 64


def kernel_source() -> str:
    """Source of ``warp_kernels.cu`` with ``warp_math.cuh`` pasted in place of its ``#include``.

    One self-contained string, because CuPy's kernel cache is keyed on the source text only: a
    header pulled in through an include path could change without invalidating the cache.
    """
    include = '#include "warp_math.cuh"'
    text = KERNELS_CU.read_text()
    if include not in text:  # pragma: no cover - guards an edit of the .cu file
        raise RuntimeError(f"{KERNELS_CU.name} must contain {include}")
    # #line directives keep compiler messages pointing at the real file and line.
    line = text[:text.index(include)].count("\n") + 1
    pasted = (f'#line 1 "{HEADER.name}"\n{HEADER.read_text()}\n'
              f'#line {line + 1} "{KERNELS_CU.name}"')
    return text.replace(include, pasted, 1)


#: Options CuPy's RawModule adds itself on NVRTC (CuPy 13/14): flush denormals, and device as
#: the default execution space. The compile test passes them too, so it builds what CuPy builds.
CUPY_IMPLIED_OPTIONS = ("-ftz=true", "--device-as-default-execution-space")


def compile_options(arch: str | None = None) -> tuple:
    """NVRTC options of the kernels: C++17, plus ``--gpu-architecture=arch`` when given (CuPy
    adds the running device's architecture itself)."""
    opts = ["-std=c++17"]
    if arch is not None:
        opts.append(f"--gpu-architecture={arch}")
    return tuple(opts)


@dataclass
class PackedJobs:
    """Flat form of one frame's jobs, ready for ``wc_composite``.

    Attributes:
        table: ``(njobs,)`` array of ``JOB_DTYPE`` (jobs wholly outside the frame dropped; list
            order kept).
        fields: ``(n,)`` float32, every crop-space field of every job, C order, concatenated.
        tiles: ``(ntiles, 2)`` int32 ``(tile_x, tile_y)`` of every ``TILE x TILE`` frame tile that
            meets some job box (:func:`job_box`), row-major order; the launch grid.
    """

    table: np.ndarray
    fields: np.ndarray
    tiles: np.ndarray

    @property
    def njobs(self) -> int:
        return int(self.table.shape[0])


def pack_jobs(jobs: Sequence, frame_shape: tuple) -> PackedJobs:
    """Pack :class:`~warpcam.core.types.WarpJob` s for a frame of shape ``(H, W, ...)``. Jobs that
    cannot write any pixel (box empty, or alpha 0 everywhere) are left out.

    Raises:
        ValueError: the flattened fields exceed 2**31 floats (int32 offsets).
    """
    H, W = int(frame_shape[0]), int(frame_shape[1])
    rows, parts, boxes = [], [], []
    offset = 0

    def add(arr):
        nonlocal offset
        a = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
        parts.append(a)
        at = offset
        offset += a.size
        return at

    for job in jobs:
        box = job_box(job, (H, W))
        if box is None:
            continue
        h, w = job.size
        a = np.asarray(job.crop_to_frame, np.float64)
        inv = invert_affine(a)
        row = np.zeros(1, JOB_DTYPE)[0]
        row["a"] = a.reshape(-1)
        row["inv"] = inv.reshape(-1)
        row["h"], row["w"] = h, w
        row["x0"], row["y0"], row["x1"], row["y1"] = box
        row["flow"] = add(job.flow)
        row["alpha"] = add(job.alpha)
        row["light"] = add(job.lightness) if job.lightness is not None else -1
        if job.palette_mix is not None:
            wts, colour = job.palette_mix
            row["palw"] = add(wts)
            row["pal"] = np.asarray(colour, np.float32)
        else:
            row["palw"] = -1
        if job.color is not None:
            row["color"] = add(job.color)
            row["att"] = add(job.attention)
        else:
            row["color"] = row["att"] = -1
        rows.append(row)
        boxes.append(box)
    if offset >= 2 ** 31:
        raise ValueError(f"job fields too large for int32 offsets: {offset} floats")
    table = np.zeros(len(rows), JOB_DTYPE)
    for i, row in enumerate(rows):
        table[i] = row
    fields = np.concatenate(parts) if parts else np.zeros(1, np.float32)
    return PackedJobs(table, fields, job_tiles(boxes, H, W))


def job_tiles(boxes: Sequence[tuple], H: int, W: int) -> np.ndarray:
    """``(ntiles, 2)`` int32 ``(tile_x, tile_y)`` of the ``TILE``-pixel tiles meeting any box
    ``(x0, y0, x1, y1)`` (exclusive end), each tile once, row-major."""
    ty, tx = -(-H // TILE), -(-W // TILE)
    hit = np.zeros((ty, tx), bool)
    for x0, y0, x1, y1 in boxes:
        hit[y0 // TILE:(y1 - 1) // TILE + 1, x0 // TILE:(x1 - 1) // TILE + 1] = True
    ys, xs = np.nonzero(hit)
    return np.ascontiguousarray(np.stack([xs, ys], axis=1), dtype=np.int32)


def pack_crop(specs: Sequence) -> tuple:
    """Pack :class:`~warpcam.kernels.crop.CropSpec` s into one ``ROI_DTYPE`` table: one launch crops
    every ROI of every spec (eyes, mouth and face networks alike).

    Returns:
        ``(table, total, shapes)``: ``(N,)`` ``ROI_DTYPE`` table with the ROIs' ``3 x h x w``
        planes back to back in the output, the number of output elements, and each spec's
        output shape ``(N_k, 3, h_k, w_k)`` (see :func:`split_output`).

    Raises:
        ValueError: a bad spec (see :func:`warpcam.kernels.crop.crop_rois`), or more than 2**31
            output elements.
    """
    rows, shapes, offset = [], [], 0
    for s in specs:
        h, w = _crop.check_size(s.size)
        a = _crop.fold_flip(s.affines, (h, w), s.flip)
        scale, bias = _crop.normalisation(s.mean, s.std)
        border = BORDER_REPLICATE if _crop.check_border(s.border) == "replicate" else BORDER_ZERO
        for m in a:
            row = np.zeros(1, ROI_DTYPE)[0]
            row["a"] = m.reshape(-1)
            row["scale"], row["bias"] = scale, bias
            row["h"], row["w"] = h, w
            row["out_offset"] = offset
            row["border"] = border
            rows.append(row)
            offset += 3 * h * w
        shapes.append((len(a), 3, h, w))
    if offset >= 2 ** 31:
        raise ValueError(f"crop output too large for int32 offsets: {offset} elements")
    table = np.zeros(len(rows), ROI_DTYPE)
    for i, row in enumerate(rows):
        table[i] = row
    return table, offset, shapes


def split_output(flat, shapes: Sequence[tuple]) -> list:
    """Views of a flat crop output, one ``(N, 3, h, w)`` per spec (numpy, CuPy or torch)."""
    out, at = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[at:at + n].reshape(shape))
        at += n
    return out
