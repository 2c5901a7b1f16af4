"""Compiled (numba) loops of the CPU compositor; loaded through :func:`warpcam.core.jit.load`
only (this module imports numba).

:func:`warp_job` is :meth:`warpcam.kernels.cpu.CpuCompositor._warp_fast` fused into one pass
over the job's frame box (crop coordinates, the padded crop fields sampled bilinearly, the
backward warp of the input, the LCM palette mix), and :func:`blend` is its feathered blend
(``cv2.blendLinear`` for uint8 results, the float blend otherwise). Both resample as OpenCV's
``remap`` does (positions rounded to 1/32 pixel, integer weights for uint8, border replicated),
so the output matches the reference compositors' to float rounding.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def _fields(flow, alpha, pal, has_pal, a00, a01, a10, a11):
    """The ``(h + 2) x (w + 2) x 4`` padded crop fields of ``_warp_fast``: the flow mapped to
    frame pixels (padded by replication), alpha and the palette weights (padded with 0)."""
    h, w = alpha.shape
    f = np.zeros((h + 2, w + 2, 4), np.float32)
    for i in range(h):
        for j in range(w):
            fx, fy = flow[i, j, 0], flow[i, j, 1]
            f[i + 1, j + 1, 0] = fx * a00 + fy * a01
            f[i + 1, j + 1, 1] = fx * a10 + fy * a11
            f[i + 1, j + 1, 2] = alpha[i, j]
            if has_pal:
                f[i + 1, j + 1, 3] = pal[i, j]
    for j in range(1, w + 1):
        for c in range(2):
            f[0, j, c] = f[1, j, c]
            f[h + 1, j, c] = f[h, j, c]
    for i in range(h + 2):
        for c in range(2):
            f[i, 0, c] = f[i, 1, c]
            f[i, w + 1, c] = f[i, w, c]
    return f


@njit(**_JIT)
def _cells(f):
    """Per cell of the padded fields (the 2 x 2 texels a bilinear sample reads): 1 where alpha
    is 0 at all four (the sample's alpha is exactly 0), 2 where the frame-pixel flow is below
    0.015 px and the palette weight 0 at all four (the warped pixel is exactly the input
    pixel: the position rounds to it at 1/32 px), else 0."""
    fh, fw = f.shape[0], f.shape[1]
    out = np.zeros((fh - 1, fw - 1), np.uint8)
    for i in range(fh - 1):
        for j in range(fw - 1):
            zero_alpha = True
            still = True
            for di in range(2):
                for dj in range(2):
                    t = f[i + di, j + dj]
                    if t[2] != 0.0:
                        zero_alpha = False
                    if abs(t[0]) >= 0.015 or abs(t[1]) >= 0.015 or t[3] != 0.0:
                        still = False
            out[i, j] = 1 if zero_alpha else (2 if still else 0)
    return out


@njit(**_JIT)
def warp_blend(src, ox, oy, out, x0, y0, x1, y1, inv, a, flow, alpha, pal, has_pal, colour):
    """One job over its frame box ``[x0, x1) x [y0, y1)``, warped from ``src`` and blended
    into ``out`` (``H x W x 3`` uint8, written). ``src`` (uint8, read only, never ``out``) is
    the input frame, or the part of it with top-left frame pixel ``(ox, oy)`` that holds every
    pixel the job samples and, where that part reaches the frame's edge, the edge (the border
    is replicated at ``src``'s edges). ``inv`` is the
    frame -> crop affine (2 x 3), ``a`` the crop -> frame one. Without a palette the warped
    pixel is OpenCV's uint8 remap and the blend ``cv2.blendLinear``; with one, the palette mix
    in float32 and ``rint(alpha warped + (1 - alpha) out)``. Returns the pixels written."""
    H, W = src.shape[0], src.shape[1]
    f = _fields(flow, alpha, pal, has_pal, np.float32(a[0, 0]), np.float32(a[0, 1]),
                np.float32(a[1, 0]), np.float32(a[1, 1]))
    fh, fw = f.shape[0], f.shape[1]
    cells = _cells(f)
    c02, c12 = inv[0, 2] + 1.0, inv[1, 2] + 1.0
    one = np.float32(1.0)
    eps = np.float32(1e-5)
    n = 0
    for y in range(y0, y1):
        bu = inv[0, 1] * y + c02
        bv = inv[1, 1] * y + c12
        for x in range(x0, x1):
            u = np.float32(inv[0, 0] * x + bu)
            v = np.float32(inv[1, 0] * x + bv)
            X = int(np.rint(u * np.float32(32.0)))
            Y = int(np.rint(v * np.float32(32.0)))
            ax, ay = X & 31, Y & 31
            sx, sy = X >> 5, Y >> 5
            if 0 <= sx < fw - 1 and 0 <= sy < fh - 1:
                kind = cells[sy, sx]
                if kind == 1:
                    continue  # alpha exactly 0
                if kind == 2 and ox <= x < ox + W and oy <= y < oy + H:
                    q = src[y - oy, x - ox]
                    o = out[y, x]
                    if q[0] == o[0] and q[1] == o[1] and q[2] == o[2]:
                        continue  # warped = input pixel = what is there: blend keeps it
            xa, xb = min(max(sx, 0), fw - 1), min(max(sx + 1, 0), fw - 1)
            ya, yb = min(max(sy, 0), fh - 1), min(max(sy + 1, 0), fh - 1)
            wx1 = np.float32(ax) * np.float32(0.03125)
            wy1 = np.float32(ay) * np.float32(0.03125)
            wx0, wy0 = one - wx1, one - wy1
            w0, w1, w2, w3 = wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1
            al = f[ya, xa, 2] * w0 + f[ya, xb, 2] * w1 + f[yb, xa, 2] * w2 + f[yb, xb, 2] * w3
            if al <= 0.0:
                continue
            if al > 1.0:
                al = one
            s0 = f[ya, xa, 0] * w0 + f[ya, xb, 0] * w1 + f[yb, xa, 0] * w2 + f[yb, xb, 0] * w3
            s1 = f[ya, xa, 1] * w0 + f[ya, xb, 1] * w1 + f[yb, xa, 1] * w2 + f[yb, xb, 1] * w3
            s3 = np.float32(0.0)
            if has_pal:
                s3 = f[ya, xa, 3] * w0 + f[ya, xb, 3] * w1 + f[yb, xa, 3] * w2 + f[yb, xb, 3] * w3
            mx = s0 + np.float32(x)
            my = s1 + np.float32(y)
            # uint8 bilinear remap in OpenCV's fixed point: weights (32 - a)(32 - b) / 1024
            X = int(np.rint(mx * np.float32(32.0)))
            Y = int(np.rint(my * np.float32(32.0)))
            ax, ay = X & 31, Y & 31
            sx, sy = (X >> 5) - ox, (Y >> 5) - oy
            xa, xb = min(max(sx, 0), W - 1), min(max(sx + 1, 0), W - 1)
            ya, yb = min(max(sy, 0), H - 1), min(max(sy + 1, 0), H - 1)
            i0, i1 = (32 - ay) * (32 - ax), (32 - ay) * ax
            i2, i3 = ay * (32 - ax), ay * ax
            b = one - al
            den = al + b + eps
            n += 1
            for k in range(3):
                acc = (np.int32(src[ya, xa, k]) * i0 + np.int32(src[ya, xb, k]) * i1
                       + np.int32(src[yb, xa, k]) * i2 + np.int32(src[yb, xb, k]) * i3
                       + 512) >> 10
                p = np.float32(min(max(acc, 0), 255))
                reg = np.float32(out[y, x, k])
                if has_pal:
                    p = p * (one - s3) + s3 * colour[k]
                    val = al * p + b * reg
                else:
                    val = (p * al + reg * b) / den
                out[y, x, k] = np.uint8(min(max(np.rint(val), 0.0), 255.0))
    return n


@njit(error_model="numpy", **_JIT)
def job_maps(x0, y0, x1, y1, inv, a, flow, alpha):
    """The per-pixel half of :func:`warp_blend` for a job without a palette: the source maps
    and blend weights over the job's frame box ``[x0, x1) x [y0, y1)``, for
    ``cv2.remap(src, mx, my, INTER_LINEAR, BORDER_REPLICATE)`` and
    ``cv2.blendLinear(warped, region, alpha, beta)``, which give :func:`warp_blend`'s bytes
    (same float32 arithmetic: crop position rounded to 1/32 pixel, OpenCV's bilinear weights;
    ``remap`` rounds the maps to 1/32 pixel as :func:`warp_blend` does).

    Returns ``(mx, my, alpha, beta)``, each ``(bh, bw)`` float32: the source position (frame
    pixels) of each box pixel, ``alpha`` clipped to [0, 1] and ``beta = 1 - alpha``. The row
    loop has no branches, so LLVM vectorises it (gathers of the padded crop fields): about
    1.5x the speed of :func:`warp_blend`'s scalar loop for the same positions."""
    bh, bw = y1 - y0, x1 - x0
    f = _fields(flow, alpha, alpha, False, np.float32(a[0, 0]), np.float32(a[0, 1]),
                np.float32(a[1, 0]), np.float32(a[1, 1]))
    fh, fw = f.shape[0], f.shape[1]
    f0 = np.ascontiguousarray(f[:, :, 0]).ravel()
    f1 = np.ascontiguousarray(f[:, :, 1]).ravel()
    fa = np.ascontiguousarray(f[:, :, 2]).ravel()
    mx = np.empty((bh, bw), np.float32)
    my = np.empty((bh, bw), np.float32)
    al_out = np.empty((bh, bw), np.float32)
    be_out = np.empty((bh, bw), np.float32)
    c02, c12 = inv[0, 2] + 1.0, inv[1, 2] + 1.0
    i00, i10 = inv[0, 0], inv[1, 0]
    one, zero = np.float32(1.0), np.float32(0.0)
    fwm, fhm = fw - 1, fh - 1
    for r in range(bh):
        y = y0 + r
        bu = inv[0, 1] * y + c02
        bv = inv[1, 1] * y + c12
        yf = np.float32(y)
        mxr, myr, alr, ber = mx[r], my[r], al_out[r], be_out[r]
        for c in range(bw):
            x = x0 + c
            X = np.int32(np.rint(np.float32(i00 * x + bu) * np.float32(32.0)))
            Y = np.int32(np.rint(np.float32(i10 * x + bv) * np.float32(32.0)))
            sx, sy = X >> 5, Y >> 5
            wx1 = np.float32(X & 31) * np.float32(0.03125)
            wy1 = np.float32(Y & 31) * np.float32(0.03125)
            wx0, wy0 = one - wx1, one - wy1
            xa, xb = min(max(sx, 0), fwm), min(max(sx + 1, 0), fwm)
            ya, yb = min(max(sy, 0), fhm) * fw, min(max(sy + 1, 0), fhm) * fw
            w0, w1, w2, w3 = wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1
            al = fa[ya + xa] * w0 + fa[ya + xb] * w1 + fa[yb + xa] * w2 + fa[yb + xb] * w3
            s0 = f0[ya + xa] * w0 + f0[ya + xb] * w1 + f0[yb + xa] * w2 + f0[yb + xb] * w3
            s1 = f1[ya + xa] * w0 + f1[ya + xb] * w1 + f1[yb + xa] * w2 + f1[yb + xb] * w3
            al = min(max(al, zero), one)
            mxr[c] = s0 + np.float32(x)
            myr[c] = s1 + yf
            alr[c] = al
            ber[c] = one - al
    return mx, my, al_out, be_out


@njit(**_JIT)
def blend(out, x0, y0, res, al, is_u8):
    """Blend a job's result into ``out`` (``H x W x 3`` uint8, in place) over its box:
    ``cv2.blendLinear(result, region, alpha, 1 - alpha)`` when ``is_u8`` (uint8 result), else
    ``rint(alpha result + (1 - alpha) region)`` clipped to 0-255. Pixels with alpha 0 keep
    their bytes."""
    bh, bw = al.shape
    one = np.float32(1.0)
    eps = np.float32(1e-5)
    for r in range(bh):
        for c in range(bw):
            a = al[r, c]
            if a <= 0.0:
                continue
            b = one - a
            for k in range(3):
                reg = np.float32(out[y0 + r, x0 + c, k])
                if is_u8:
                    val = (res[r, c, k] * a + reg * b) / (a + b + eps)
                else:
                    val = a * res[r, c, k] + b * reg
                out[y0 + r, x0 + c, k] = np.uint8(min(max(np.rint(val), 0.0), 255.0))


def warm_up() -> None:
    """Compile both loops with the argument types :class:`~warpcam.kernels.cpu.CpuCompositor`
    passes (or load them from numba's cache), on tiny inputs: :func:`warpcam.core.jit.load`
    runs this in the background."""
    frame = np.zeros((12, 16, 3), np.uint8)
    a = np.array([[1.0, 0.0, 4.0], [0.0, 1.0, 3.0]])
    inv = np.array([[1.0, 0.0, -4.0], [0.0, 1.0, -3.0]])
    flow = np.zeros((4, 5, 2), np.float32)
    alpha = np.ones((4, 5), np.float32)
    for has_pal in (False, True):
        warp_blend(frame, 0, 0, frame.copy(), 4, 3, 9, 7, inv, a, flow, alpha, alpha.copy(),
                   has_pal, np.zeros(3, np.float32))
    for is_u8 in (False, True):
        blend(frame, 0, 0, np.zeros((4, 5, 3), np.float32), alpha, is_u8)
    job_maps(4, 3, 9, 7, inv, a, flow, alpha)
