"""Small geometric helpers shared by the effects: ROI affines, masks, fold checks.

Conventions: pixel coordinates x right, y down, pixel centres at integers. An ROI affine
``crop_to_frame`` (2 x 3) maps crop pixel (u, v) to frame pixel (x, y).
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def roi_affine(centre, axis_angle_rad: float, roi_w_px: float, roi_h_px: float,
               crop_w: int, crop_h: int) -> np.ndarray:
    """Affine (2 x 3) from a ``crop_h x crop_w`` crop to a rotated frame rectangle.

    The crop's centre ``((crop_w - 1) / 2, (crop_h - 1) / 2)`` lands on ``centre`` (frame
    pixels); the crop's x axis points along ``axis_angle_rad`` (0 = image x); the crop spans
    ``roi_w_px x roi_h_px`` frame pixels.
    """
    sx = roi_w_px / crop_w
    sy = roi_h_px / crop_h
    c, s = math.cos(axis_angle_rad), math.sin(axis_angle_rad)
    lin = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    off = np.asarray(centre, np.float64) - lin @ np.array([(crop_w - 1) / 2.0, (crop_h - 1) / 2.0])
    return np.hstack([lin, off[:, None]])


def roi_affines(centres, angles, roi_w_px, roi_h_px, crop_w: int, crop_h: int) -> np.ndarray:
    """Batched :func:`roi_affine`: ``centres (n, 2)``, ``angles``/``roi_w_px``/``roi_h_px``
    ``(n,)`` (radians, frame pixels) -> ``(n, 2, 3)`` float64; the same maths row by row."""
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    ang = np.broadcast_to(np.asarray(angles, np.float64), centres.shape[:1])
    sx = np.broadcast_to(np.asarray(roi_w_px, np.float64), ang.shape) / crop_w
    sy = np.broadcast_to(np.asarray(roi_h_px, np.float64), ang.shape) / crop_h
    c, s = np.cos(ang), np.sin(ang)
    lin = np.stack([np.stack([c * sx, -s * sy], -1), np.stack([s * sx, c * sy], -1)], -2)
    off = centres - np.einsum("nij,j->ni", lin, np.array([(crop_w - 1) / 2.0, (crop_h - 1) / 2.0]))
    return np.concatenate([lin, off[..., None]], -1)


def similarity_fit(src, dst) -> np.ndarray:
    """2 x 3 similarity ``M`` (rotation, uniform scale, translation; no reflection) minimising
    ``sum |M src_i - dst_i|^2`` over ``N x 2`` point sets, in closed form (complex least squares).

    Raises:
        ValueError: the source points coincide (no similarity is defined).
    """
    z = np.asarray(src, np.float64) @ np.array([1.0, 1j])
    w = np.asarray(dst, np.float64) @ np.array([1.0, 1j])
    zc, wc = z - z.mean(), w - w.mean()
    den = float(np.sum(np.abs(zc) ** 2))
    if den < 1e-12:
        raise ValueError("degenerate points for a similarity fit")
    a = np.sum(wc * np.conj(zc)) / den
    b = w.mean() - a * z.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def invert_affine(a: np.ndarray) -> np.ndarray:
    """Inverse of a 2 x 3 affine, in closed form.

    Closed form rather than ``np.linalg.inv``: a LAPACK call on a 2 x 2 matrix costs tens of
    microseconds right after the tracker ran, and this runs several times per ROI per frame.

    Raises:
        ValueError: the linear part is singular.
    """
    a00, a01, a02 = float(a[0, 0]), float(a[0, 1]), float(a[0, 2])
    a10, a11, a12 = float(a[1, 0]), float(a[1, 1]), float(a[1, 2])
    det = a00 * a11 - a01 * a10
    if abs(det) < 1e-12:
        raise ValueError(f"singular affine: {np.asarray(a).tolist()}")
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    return np.array([[i00, i01, -(i00 * a02 + i01 * a12)],
                     [i10, i11, -(i10 * a02 + i11 * a12)]])


def apply_affine(a: np.ndarray, points) -> np.ndarray:
    """``N x 2`` points mapped by a 2 x 3 affine (elementwise, no BLAS call)."""
    p = np.asarray(points, np.float64)
    x, y = p[..., 0], p[..., 1]
    return np.stack([a[0, 0] * x + a[0, 1] * y + a[0, 2],
                     a[1, 0] * x + a[1, 1] * y + a[1, 2]], axis=-1)


def to_crop(points: np.ndarray, crop_to_frame: np.ndarray) -> np.ndarray:
    """Frame pixel points (``N x 2``) to crop coordinates under ``crop_to_frame``."""
    return apply_affine(invert_affine(crop_to_frame), points)


def polygon_mask(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """Anti-aliased float32 mask (``h x w``, 1 inside) of a polygon given in crop pixels."""
    shift = 4
    pts = np.round(np.asarray(poly) * (1 << shift)).astype(np.int32)
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [pts], 255, lineType=cv2.LINE_AA, shift=shift)
    return m.astype(np.float32) / 255.0


def smoothstep(x):
    """Cubic smoothstep clamped to [0, 1]: 0 for x <= 0, 1 for x >= 1; slope at most 1.5.
    A Python or NumPy scalar gives a float (without ``np.clip``'s few microseconds per call:
    the effects call this several times per face and frame), an array an array."""
    if isinstance(x, (float, int, np.floating, np.integer)):
        x = min(max(float(x), 0.0), 1.0)
        return x * x * (3.0 - 2.0 * x)
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def fade_between(value: float, full_below: float, none_beyond: float) -> float:
    """1 below ``full_below``, 0 beyond ``none_beyond``, smoothstep in between (the fades of the
    effects: head turn, gaze offset, blink)."""
    if none_beyond <= full_below:
        return 1.0 if value <= full_below else 0.0
    return float(1.0 - smoothstep((value - full_below) / (none_beyond - full_below)))


def border_window(h: int, w: int, margin: float) -> np.ndarray:
    """``h x w`` float32 window: 1 in the interior, raised-cosine falloff to 0 over the outer
    ``margin`` fraction of each side (0 on the outermost pixels)."""
    def ramp(n):
        t = np.arange(n, dtype=np.float32)
        d = np.minimum(t, n - 1 - t) / max(margin * n, 1e-6)
        return smoothstep(d)
    return np.outer(ramp(h), ramp(w)).astype(np.float32)


def flow_jacobian_det(flow: np.ndarray) -> np.ndarray:
    """Determinant of the Jacobian of the backward map ``p -> p + flow(p)`` (``h x w``), by
    central differences in crop pixels. Positive everywhere means the warp is one-to-one
    locally (no fold)."""
    fx = np.ascontiguousarray(flow[..., 0], np.float32)
    fy = np.ascontiguousarray(flow[..., 1], np.float32)
    dfx_dx, dfx_dy = central_diff(fx)
    dfy_dx, dfy_dy = central_diff(fy)
    return (1.0 + dfx_dx) * (1.0 + dfy_dy) - dfx_dy * dfy_dx


def central_diff(a: np.ndarray):
    """``(d/dx, d/dy)`` of a float32 image by central differences (one-sided at the border,
    like ``np.gradient``), with OpenCV for speed."""
    kx = np.array([[-0.5, 0.0, 0.5]], np.float32)
    dx = cv2.filter2D(a, -1, kx, borderType=cv2.BORDER_REPLICATE)
    dy = cv2.filter2D(a, -1, kx.T, borderType=cv2.BORDER_REPLICATE)
    # Replicated borders halve the one-sided difference; restore np.gradient's edge values.
    if a.shape[1] > 1:
        dx[:, 0] = a[:, 1] - a[:, 0]
        dx[:, -1] = a[:, -1] - a[:, -2]
    if a.shape[0] > 1:
        dy[0] = a[1] - a[0]
        dy[-1] = a[-1] - a[-2]
    return dx, dy


_GRIDS: dict = {}


def pixel_grid(h: int, w: int):
    """Cached float32 ``(xs, ys)`` pixel-centre grids of an ``h x w`` crop (read only)."""
    g = _GRIDS.get((h, w))
    if g is None:
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        xs.flags.writeable = False
        ys.flags.writeable = False
        g = _GRIDS[(h, w)] = (xs, ys)
    return g


class CropCache:
    """Reuse an effect's crop-space fields across frames while the ROI's geometry holds still.

    The crop follows the face every frame (its ``crop_to_frame`` affine is recomputed), so the
    landmarks measured *in crop pixels* change only when the eye or mouth itself moves. While
    every number of a job's signature (landmarks in crop pixels, shift, crop size) stays within
    ``tol`` of the signature the fields were computed for, the fields are reused with the new
    affine; a warp computed for geometry ``tol`` crop pixels away is off by at most that much.
    Entries older than ``max_age`` uses are recomputed anyway (the sclera colour, for one, is
    re-measured), and keys unused for ``forget_after`` calls of :meth:`tick` are dropped.

    Attributes:
        hits, misses: counters, for the benchmarks.
    """

    def __init__(self, tol: float = 0.2, max_age: int = 30, forget_after: int = 30):
        self.tol, self.max_age, self.forget_after = tol, max_age, forget_after
        self._d: dict = {}
        self._tick = 0
        self.hits = self.misses = 0

    def get(self, key, signature: np.ndarray):
        """The payload stored for ``key`` if its signature is within ``tol``, else ``None``."""
        e = self._d.get(key)
        if e is not None:
            sig, payload, age, _ = e
            if (age < self.max_age and sig.shape == signature.shape
                    and float(np.abs(sig - signature).max()) < self.tol):
                self._d[key] = (sig, payload, age + 1, self._tick)
                self.hits += 1
                return payload
        self.misses += 1
        return None

    def put(self, key, signature: np.ndarray, payload) -> None:
        self._d[key] = (np.array(signature, np.float64), payload, 0, self._tick)

    def tick(self) -> None:
        """Call once per frame: forgets keys (tracks) not used for a while."""
        self._tick += 1
        if self._tick % 15 == 0:
            self._d = {k: e for k, e in self._d.items()
                       if self._tick - e[3] <= self.forget_after}
