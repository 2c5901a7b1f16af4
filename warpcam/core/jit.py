"""The switch of the compiled per-pixel loops, and their lazy loader.

The effects' per-ROI fields (iris warp, eye visibility, smile spline) and the CPU composite
have two implementations each: the reference NumPy/OpenCV code and loops compiled with numba
(:mod:`warpcam.core._jitloops`, :mod:`warpcam.kernels._cpu_jit`) that compute the same values
in one pass over the ROI instead of tens of array calls (the per-call overhead dominated on ROIs
of a few hundred pixels). They agree within float rounding (``tests/test_speed_paths.py``).

The compiled loops are used when numba imports and the switch is on: ``WARPCAM_JIT=0`` in the
environment, or :func:`set_enabled` ``(False)``, selects the reference paths. Nothing here
imports numba: :func:`load` imports a loop module the first time a frame needs it (numba's
import takes about 0.3 s; each loop compiles on its first call, or loads from numba's on-disk
cache, ``cache=True``, in tens of milliseconds).
"""
from __future__ import annotations

import importlib
import os
from typing import Dict, Optional

_enabled = os.environ.get("WARPCAM_JIT", "1").strip() not in ("0", "false", "off", "no")
_modules: Dict[str, object] = {}
_failed: Dict[str, str] = {}


def enabled() -> bool:
    """Whether the compiled loops are asked for (they also need numba to import)."""
    return _enabled


def set_enabled(on: bool) -> None:
    """Select the compiled loops (``True``, the default) or the reference paths (``False``)
    for every call from now on, in this process."""
    global _enabled
    _enabled = bool(on)


def load(module: str):
    """The compiled loop module ``module`` (imported on first use), or ``None`` when the
    switch is off or numba cannot be imported (the caller then runs its reference path).
    Never raises for a missing numba; the reason is in :func:`why_not`."""
    if not _enabled:
        return None
    mod = _modules.get(module)
    if mod is None and module not in _failed:
        try:
            mod = _modules[module] = importlib.import_module(module)
        except ImportError as exc:
            _failed[module] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return mod


def why_not(module: str) -> Optional[str]:
    """Why :func:`load` returned ``None`` for ``module`` (``None`` if it did not)."""
    if not _enabled:
        return "compiled loops switched off (WARPCAM_JIT=0 or set_enabled(False))"
    return _failed.get(module)
