"""Compiled (numba) per-pixel loops of the effects' ROI fields; loaded through
:func:`warpcam.core.jit.load` only (this module imports numba).

Each function computes what a reference NumPy/OpenCV path computes, in one or two passes over a
crop of a few hundred pixels (conventions of the callers: crop pixels, pixel centres at
integers, y down, float32 fields):

- :func:`iris_trailing`, :func:`iris_fields`: the body of
  :func:`warpcam.core.eyewarp._iris_shift_flow` around its OpenCV distance transform and blur,
  with the fold check (:func:`warpcam.core.geometry.flow_jacobian_det`);
- :func:`eye_alpha`: the gaze job's feathered alpha (3 x 3 dilation, 3 x 3 Gaussian, 1 where
  the flow moves);
- :func:`visibility_contrast`: the grey-level statistics of
  :func:`warpcam.realtime.effects.gaze.eye_visibility`;
- :func:`smile_fields`: :func:`warpcam.realtime.effects.smile.smile_flow` (thin-plate spline,
  Bookstein 1989, solved by LU with partial pivoting) with the smile job's fold-check retries and
  alpha.

Bilinear resampling reproduces OpenCV's ``remap`` (positions rounded to 1/32 pixel, border
replicated), so the results match the reference paths to float rounding.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def _smooth(x):
    """Cubic smoothstep clamped to [0, 1] (:func:`warpcam.core.geometry.smoothstep`)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return x * x * (3.0 - 2.0 * x)


@njit(**_JIT)
def _clip01(x):
    return min(max(x, 0.0), 1.0)


@njit(**_JIT)
def jacobian_det_min(flow):
    """Minimum over the crop of the Jacobian determinant of ``p -> p + flow(p)`` (central
    differences, one-sided at the border: :func:`warpcam.core.geometry.flow_jacobian_det`)."""
    h, w = flow.shape[0], flow.shape[1]
    best = np.inf
    for i in range(h):
        i0, i1 = max(i - 1, 0), min(i + 1, h - 1)
        sy = 0.5 if (i1 - i0) == 2 else 1.0
        for j in range(w):
            j0, j1 = max(j - 1, 0), min(j + 1, w - 1)
            sx = 0.5 if (j1 - j0) == 2 else 1.0
            if j1 == j0:
                dfx_dx = 0.0
                dfy_dx = 0.0
            else:
                dfx_dx = (flow[i, j1, 0] - flow[i, j0, 0]) * sx
                dfy_dx = (flow[i, j1, 1] - flow[i, j0, 1]) * sx
            if i1 == i0:
                dfx_dy = 0.0
                dfy_dy = 0.0
            else:
                dfx_dy = (flow[i1, j, 0] - flow[i0, j, 0]) * sy
                dfy_dy = (flow[i1, j, 1] - flow[i0, j, 1]) * sy
            d = (1.0 + dfx_dx) * (1.0 + dfy_dy) - dfx_dy * dfy_dx
            if d < best:
                best = d
    return best


# ------------------------------------------------------------------------------ iris warp
@njit(error_model="numpy", **_JIT)
def iris_trailing(dist, dhx, dhy):
    """``clip(n . d_hat, 0, 1)`` with ``n`` the normalised central-difference gradient of the
    distance map (``h x w`` float32): the un-blurred trailing-lid weight."""
    h, w = dist.shape
    out = np.empty((h, w), np.float32)
    for i in range(h):
        i0, i1 = max(i - 1, 0), min(i + 1, h - 1)
        sy = np.float32(0.5) if (i1 - i0) == 2 else np.float32(1.0)
        for j in range(w):
            j0, j1 = max(j - 1, 0), min(j + 1, w - 1)
            sx = np.float32(0.5) if (j1 - j0) == 2 else np.float32(1.0)
            gx = (dist[i, j1] - dist[i, j0]) * sx if j1 > j0 else np.float32(0.0)
            gy = (dist[i1, j] - dist[i0, j]) * sy if i1 > i0 else np.float32(0.0)
            gn = math.sqrt(gx * gx + gy * gy) + 1e-6
            out[i, j] = _clip01((gx * dhx + gy * dhy) / gn)
    return out


@njit(**_JIT)
def _interp_sorted(x, xp, fp):
    n = len(xp)
    if x <= xp[0]:
        return fp[0]
    if x >= xp[n - 1]:
        return fp[n - 1]
    k = np.searchsorted(xp, x, side="right") - 1
    t = (x - xp[k]) / (xp[k + 1] - xp[k]) if xp[k + 1] > xp[k] else 0.0
    return fp[k] + t * (fp[k + 1] - fp[k])


@njit(error_model="numpy", **_JIT)
def iris_fields(dist, trailing, mask, cx, cy, radius, sx, sy, lift_up, lift_lo, u_lo, span,
                upper_out, lower_out):
    """Flow (``h x w x 2`` float32), reveal (``h x w`` float32) and the minimum Jacobian
    determinant of the iris warp, from the distance map and the blurred trailing weight (the
    per-pixel part of :func:`warpcam.core.eyewarp._iris_shift_flow`). Per-pixel distances by
    ``sqrt`` rather than ``math.hypot`` (a libm call, most of this loop's time before)."""
    h, w = dist.shape
    L = math.hypot(sx, sy)
    bandk = max(1.15 * L - 0.5, 0.0)
    cnx, cny = cx + sx, cy + sy
    r_in = 1.15 * radius
    band_i = max(4.0 * L, 0.8 * radius)
    lids = abs(lift_up) > 1e-3 or abs(lift_lo) > 1e-3
    y_up = np.zeros(w)
    y_lo = np.zeros(w)
    prof = np.zeros(w)
    if lids:
        ou = np.argsort(upper_out[:, 0])
        ol = np.argsort(lower_out[:, 0])
        ux, uy = upper_out[ou, 0].copy(), upper_out[ou, 1].copy()
        lx, ly = lower_out[ol, 0].copy(), lower_out[ol, 1].copy()
        for j in range(w):
            y_up[j] = _interp_sorted(float(j), ux, uy)
            y_lo[j] = _interp_sorted(float(j), lx, ly)
            prof[j] = math.sin(math.pi * _clip01((j - u_lo) / span))
    band_up = max(3.0 * abs(lift_up), 0.35 * span)
    band_lo = max(3.0 * abs(lift_lo), 0.3 * span)
    flow = np.empty((h, w, 2), np.float32)
    reveal = np.empty((h, w), np.float32)
    for i in range(h):
        for j in range(w):
            inside = mask[i, j] > 0.5
            m_lid = 0.0
            if inside:
                band = 1.0 + bandk * trailing[i, j]
                m_lid = _clip01(max(dist[i, j], 0.0) / band)
            rho = math.sqrt((j - cnx) * (j - cnx) + (i - cny) * (i - cny))
            W = min(1.0 - _smooth((rho - r_in) / band_i), m_lid)
            fx = sx * W
            fy = sy * W
            if lids:
                if i < y_up[j]:
                    lf = lift_up * (1.0 - _smooth((y_up[j] - i) / band_up))
                elif i > y_lo[j]:
                    lf = lift_lo * (1.0 - _smooth((i - y_lo[j]) / band_lo))
                elif inside:
                    u_in = _clip01((y_lo[j] - i) / max(y_lo[j] - y_up[j], 1e-3))
                    lf = lift_lo + (lift_up - lift_lo) * u_in
                else:
                    lf = 0.0
                fy = fy + lf * prof[j] * (1.0 - W)
            f0 = np.float32(-fx)
            f1 = np.float32(-fy)
            flow[i, j, 0] = f0
            flow[i, j, 1] = f1
            qx, qy = j + f0, i + f1
            dq = math.sqrt((qx - cx) * (qx - cx) + (qy - cy) * (qy - cy))
            in_iris = _smooth(0.95 * radius - dq)
            out_new = _smooth(rho - radius)
            reveal[i, j] = in_iris * out_new * mask[i, j]
    return flow, reveal, jacobian_det_min(flow)


@njit(**_JIT)
def eye_alpha(mask, flow):
    """The gaze job's alpha: ``GaussianBlur(dilate(mask, 3 x 3), 3 x 3)`` (kernel 1/4, 1/2,
    1/4, border reflected without the edge pixel, as OpenCV), set to 1 where the flow moves."""
    h, w = mask.shape
    # 3 x 3 maximum, rows then columns (clamped neighbours repeat a pixel: the same maximum)
    rmax = np.empty((h, w), np.float32)
    for i in range(h):
        for j in range(w):
            jl, jr = max(j - 1, 0), min(j + 1, w - 1)
            rmax[i, j] = max(mask[i, jl], max(mask[i, j], mask[i, jr]))
    dil = np.empty((h, w), np.float32)
    for i in range(h):
        il, ir = max(i - 1, 0), min(i + 1, h - 1)
        for j in range(w):
            dil[i, j] = max(rmax[il, j], max(rmax[i, j], rmax[ir, j]))
    q, hf = np.float32(0.25), np.float32(0.5)
    row = np.empty((h, w), np.float32)
    for i in range(h):
        for j in range(w):
            jl = j - 1 if j > 0 else (1 if w > 1 else 0)
            jr = j + 1 if j < w - 1 else (w - 2 if w > 1 else 0)
            row[i, j] = dil[i, jl] * q + dil[i, j] * hf + dil[i, jr] * q
    out = np.empty((h, w), np.float32)
    for i in range(h):
        il = i - 1 if i > 0 else (1 if h > 1 else 0)
        ir = i + 1 if i < h - 1 else (h - 2 if h > 1 else 0)
        for j in range(w):
            if flow[i, j, 0] != 0.0 or flow[i, j, 1] != 0.0:
                out[i, j] = 1.0
            else:
                out[i, j] = row[il, j] * q + row[i, j] * hf + row[ir, j] * q
    return out


# ------------------------------------------------------------------------------ eye visibility
@njit(**_JIT)
def _percentile_sorted(v, q):
    """NumPy's default (linear) percentile of a sorted 1-D array."""
    pos = q / 100.0 * (len(v) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


@njit(**_JIT)
def visibility_contrast(grey, mask, cx, cy, radius):
    """75th-percentile grey level of the masked pixels beyond 1.2 ``radius`` of ``(cx, cy)``
    minus the median of those within 0.7 ``radius`` (``grey`` ``h x w`` uint8, ``mask`` uint8,
    nonzero inside); NaN when either set has fewer than 3 pixels."""
    h, w = grey.shape
    iris = np.empty(h * w, np.float64)
    sclera = np.empty(h * w, np.float64)
    ni = ns = 0
    r_i, r_s = np.float32(0.7 * radius), np.float32(1.2 * radius)
    fcx, fcy = np.float32(cx), np.float32(cy)
    for i in range(h):
        for j in range(w):
            if mask[i, j] == 0:
                continue
            d = math.hypot(np.float32(j) - fcx, np.float32(i) - fcy)
            if d < r_i:
                iris[ni] = grey[i, j]
                ni += 1
            elif d > r_s:
                sclera[ns] = grey[i, j]
                ns += 1
    if ni < 3 or ns < 3:
        return np.nan
    return (_percentile_sorted(np.sort(sclera[:ns]), 75.0)
            - _percentile_sorted(np.sort(iris[:ni]), 50.0))


# ------------------------------------------------------------------------------ smile spline
@njit(**_JIT)
def _lu_solve(a, b):
    """Solve ``a x = b`` (``a`` n x n, ``b`` n x k, both float64; may be overwritten):
    ``(ok, x)``, ``ok`` False for a singular ``a``. LAPACK's ``gesv`` (LU with partial
    pivoting, blocked: about a third of the time of a plain elimination loop at n = 90)."""
    try:
        return True, np.linalg.solve(a, b)
    except Exception:  # singular (numba raises LinAlgError)
        return False, b


@njit(error_model="numpy", **_JIT)
def _tps_row(x, y, tx, ty, r2, mant, ex, out):
    """``out[k] = r2 log(r) = 0.5 r2 log(r2)`` (0 at ``r2 = 0``), the thin-plate kernel, with
    ``r2 = |(x, y) - (tx[k], ty[k])|^2``, for every ``k`` (``r2``, ``mant``
    (int64), ``ex`` scratch of the same length). The natural log is taken apart by hand,
    ``log(m 2^e) = e log 2 + log m`` with ``m`` in [sqrt(2)/2, sqrt(2)) and ``log m`` from the
    series of ``atanh((m - 1) / (m + 1))`` to the 15th power (relative error below 1e-13), in
    loops without calls, which LLVM vectorises: about 3x faster than ``math.log`` per element,
    the spline's largest cost (grid points x control points kernel values)."""
    n = tx.shape[0]
    for k in range(n):
        dx = x - tx[k]
        dy = y - ty[k]
        r2[k] = max(dx * dx + dy * dy, 1e-300)
    bits = r2.view(np.int64)
    for k in range(n):
        b = bits[k]
        mb = (b & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000
        big = mb > 0x3FF6A09E667F3BCD  # mantissa >= sqrt(2): one octave down
        mant[k] = mb - (0x0010000000000000 if big else 0)
        ex[k] = ((b >> 52) & 0x7FF) - 1023 + (1 if big else 0)
    m = mant.view(np.float64)
    for k in range(n):
        t = (m[k] - 1.0) / (m[k] + 1.0)
        t2 = t * t
        p = t * (2.0 + t2 * (2.0 / 3.0 + t2 * (2.0 / 5.0 + t2 * (2.0 / 7.0 + t2 * (
            2.0 / 9.0 + t2 * (2.0 / 11.0 + t2 * (2.0 / 13.0 + t2 * (2.0 / 15.0))))))))
        v = 0.5 * r2[k] * (ex[k] * 0.6931471805599453 + p)
        out[k] = v if r2[k] > 1e-300 else 0.0


@njit(**_JIT)
def _remap_taps(i, step, n):
    """OpenCV ``remap``'s bilinear taps at map value ``i / step`` (float32, rounded to 1/32
    pixel), border replicated over ``n`` samples: ``(lo, hi, w_lo, w_hi)``."""
    q = int(np.rint(np.float32(i) / np.float32(step) * 32.0))
    lo = q >> 5
    w1 = np.float32((q & 31) / 32.0)
    return (min(max(lo, 0), n - 1), min(max(lo + 1, 0), n - 1), np.float32(1.0) - w1, w1)


@njit(**_JIT)
def tps_flow(h, w, sources, displacements, grid_step, smoothing, window):
    """:func:`warpcam.realtime.effects.smile.smile_flow`: the thin-plate spline through
    ``-displacements`` at ``sources + displacements`` (kernel ``r^2 log r``, degree-1
    polynomial on coordinates scaled to [-1, 1], ``smoothing`` on the diagonal), evaluated every
    ``grid_step`` pixels, upsampled bilinearly as OpenCV's ``remap`` does (border replicated) and
    multiplied by ``window``. ``(ok, h x w x 2 float32)``; ``ok`` is False for a singular
    system."""
    n = sources.shape[0]
    t = sources + displacements
    lo0, lo1 = t[:, 0].min(), t[:, 1].min()
    hi0, hi1 = t[:, 0].max(), t[:, 1].max()
    sh0, sh1 = 0.5 * (hi0 + lo0), 0.5 * (hi1 + lo1)
    sc0, sc1 = 0.5 * (hi0 - lo0), 0.5 * (hi1 - lo1)
    if sc0 == 0.0:
        sc0 = 1.0
    if sc1 == 0.0:
        sc1 = 1.0
    m = n + 3
    a = np.zeros((m, m))
    b = np.zeros((m, 2))
    tx = np.ascontiguousarray(t[:, 0])
    ty = np.ascontiguousarray(t[:, 1])
    r2, mant, ex, kv = np.empty(n), np.empty(n, np.int64), np.empty(n), np.empty(n)
    for i in range(n):
        _tps_row(t[i, 0], t[i, 1], tx, ty, r2, mant, ex, kv)
        for j in range(n):
            a[i, j] = kv[j]
        a[i, i] = smoothing
        p1 = (t[i, 0] - sh0) / sc0
        p2 = (t[i, 1] - sh1) / sc1
        a[i, n] = 1.0
        a[i, n + 1] = p1
        a[i, n + 2] = p2
        a[n, i] = 1.0
        a[n + 1, i] = p1
        a[n + 2, i] = p2
        b[i, 0] = -displacements[i, 0]
        b[i, 1] = -displacements[i, 1]
    ok, coef = _lu_solve(a, b)
    flow = np.zeros((h, w, 2), np.float32)
    if not ok:
        return False, flow
    gh = (h + grid_step - 1) // grid_step + 1
    gw = (w + grid_step - 1) // grid_step + 1
    coarse = np.empty((gh, gw, 2), np.float32)
    c0 = np.ascontiguousarray(coef[:n, 0])
    c1 = np.ascontiguousarray(coef[:n, 1])
    for gi in range(gh):
        y = float(gi * grid_step)
        for gj in range(gw):
            x = float(gj * grid_step)
            px, py = (x - sh0) / sc0, (y - sh1) / sc1
            v0 = coef[n, 0] + coef[n + 1, 0] * px + coef[n + 2, 0] * py
            v1 = coef[n, 1] + coef[n + 1, 1] * px + coef[n + 2, 1] * py
            _tps_row(x, y, tx, ty, r2, mant, ex, kv)
            for k in range(n):
                v0 += kv[k] * c0[k]
                v1 += kv[k] * c1[k]
            coarse[gi, gj, 0] = v0
            coarse[gi, gj, 1] = v1
    for i in range(h):
        y0c, y1c, wy0, wy1 = _remap_taps(i, grid_step, gh)
        for j in range(w):
            x0c, x1c, wx0, wx1 = _remap_taps(j, grid_step, gw)
            win = window[i, j]
            for c in range(2):
                v = (coarse[y0c, x0c, c] * (wy0 * wx0) + coarse[y0c, x1c, c] * (wy0 * wx1)
                     + coarse[y1c, x0c, c] * (wy1 * wx0) + coarse[y1c, x1c, c] * (wy1 * wx1))
                flow[i, j, c] = v * win
    return True, flow


@njit(**_JIT)
def moving_alpha(flow, tol):
    """``dilate(max(|flow_x|, |flow_y|) > tol, 3 x 3)`` as float32 0/1 (the smile job's
    alpha: composite only where the warp moves something)."""
    h, w = flow.shape[0], flow.shape[1]
    mov = np.zeros((h, w), np.bool_)
    for i in range(h):
        for j in range(w):
            mov[i, j] = abs(flow[i, j, 0]) > tol or abs(flow[i, j, 1]) > tol
    out = np.zeros((h, w), np.float32)
    for i in range(h):
        for j in range(w):
            hit = False
            for di in range(max(i - 1, 0), min(i + 2, h)):
                for dj in range(max(j - 1, 0), min(j + 2, w)):
                    if mov[di, dj]:
                        hit = True
            if hit:
                out[i, j] = 1.0
    return out


@njit(**_JIT)
def smile_fields(h, w, sources, displacements, grid_step, smoothing, window, min_det, tries,
                 shrink):
    """The smile job's fields: :func:`tps_flow`, with the displacements shrunk by ``shrink``
    (up to ``tries`` solves) until the minimum Jacobian determinant exceeds ``min_det``, and
    :func:`moving_alpha` ``(flow, 0.01)``. ``(flow, alpha, displacements used)``."""
    disp = displacements.copy()
    flow = np.zeros((h, w, 2), np.float32)
    for k in range(tries):
        ok, flow = tps_flow(h, w, sources, disp, grid_step, smoothing, window)
        if ok and jacobian_det_min(flow) > min_det:
            break
        disp = disp * shrink  # as the reference: shrunk after every failed try
    return flow, moving_alpha(flow, 0.01), disp


def warm_up() -> None:
    """Compile every loop with the argument types its callers pass (or load it from numba's
    cache), on tiny inputs: :func:`warpcam.core.jit.load` runs this in the background."""
    h, w = 8, 10
    f32 = np.zeros((h, w), np.float32)
    mask = f32.copy()
    mask[2:6, 2:8] = 1.0
    flow = np.zeros((h, w, 2), np.float32)
    chain = np.array([[1.0, 4.0], [5.0, 2.0], [9.0, 4.0]])
    trailing = iris_trailing(mask - np.float32(0.5), 1.0, 0.0)
    iris_fields(mask - np.float32(0.5), trailing, mask, 5.0, 4.0, 2.0, 1.0, -1.0, -1.0, -0.35,
                1.0, 8.0, chain, chain.copy())
    eye_alpha(mask, flow)
    visibility_contrast(np.zeros((h, w), np.uint8), np.ones((h, w), np.uint8), 5.0, 4.0, 2.0)
    src = np.array([[0.0, 0.0], [9.0, 0.0], [0.0, 7.0], [9.0, 7.0], [4.0, 3.0]])
    disp = np.zeros_like(src)
    disp[4] = (0.5, -0.5)
    smile_fields(h, w, src, disp, 3, 1e-3, np.ones((h, w), np.float32), 0.25, 5, 0.7)
