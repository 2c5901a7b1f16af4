"""One Euro filter (Casiez, Roussel and Vogel, "1€ Filter: A Simple Speed-based Low-pass Filter
for Noisy Input in Interactive Systems", CHI 2012), vectorised over arrays.

A first-order low-pass filter whose cutoff rises with the signal's speed: a still signal is
smoothed hard (no jitter), a fast one barely (no lag).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def _alpha(cutoff, dt: float):
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filter an array signal sampled at irregular times.

    Args:
        min_cutoff: cutoff frequency in Hz when the signal is still (lower = smoother).
        beta: how fast the cutoff rises with speed, in Hz per (signal unit / second).
        d_cutoff: cutoff in Hz for the speed estimate.

    ``__call__(x, t)`` takes an array of any fixed shape and a time in seconds, returns the
    filtered array (float64, same shape). Each element is filtered independently.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if not (math.isfinite(min_cutoff) and min_cutoff > 0 and math.isfinite(d_cutoff)
                and d_cutoff > 0 and math.isfinite(beta) and beta >= 0):
            raise ValueError("min_cutoff and d_cutoff must be finite and > 0, beta finite and "
                             f">= 0; got {min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        self._t: Optional[float] = None

    def __call__(self, x, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:
            dt = 1.0 / 30.0
        self._t = t
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = a * x + (1.0 - a) * self._x
        return self._x.copy()
