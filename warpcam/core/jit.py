"""The switch of the compiled per-pixel loops, and their lazy loader.

The effects' per-ROI fields (iris warp, eye visibility, smile spline) and the CPU composite
have two implementations each: the reference NumPy/OpenCV code and loops compiled with numba
(:mod:`warpcam.core._jitloops`, :mod:`warpcam.kernels._cpu_jit`) that compute the same values
in one pass over the ROI instead of tens of array calls (the per-call overhead dominated on ROIs
of a few hundred pixels). They agree within float rounding (``tests/test_speed_paths.py``).

The compiled loops are used when numba imports and the switch is on: ``WARPCAM_JIT=0`` in the
environment, or :func:`set_enabled` ``(False)``, selects the reference paths. Nothing here
imports numba, and no frame waits for it: the first :func:`load` of a loop module starts a
background thread that imports it and compiles its loops (its ``warm_up()``), and returns
``None`` until that is done, so the first frames run the reference paths (the same output to
float rounding). Compiling takes 10-50 s on this 2-core machine the first time; numba's on-disk
cache (``cache=True``) brings later starts to about a second. The cache lives in the user's
cache folder (``$XDG_CACHE_HOME/warpcam/numba``, ``~/.cache/warpcam/numba``, or
``%LOCALAPPDATA%\\warpcam\\numba`` on Windows; ``NUMBA_CACHE_DIR`` set by the user wins), never
beside the installed package: a job writes nothing outside its output and the user's folders.
:func:`prepare` ``(wait=True)`` compiles up front (tests and benchmarks).
"""
from __future__ import annotations

import importlib
import os
import threading
import time
from typing import Dict, Iterable, Optional

_enabled = os.environ.get("WARPCAM_JIT", "1").strip() not in ("0", "false", "off", "no")
_modules: Dict[str, object] = {}
_failed: Dict[str, str] = {}
_threads: Dict[str, threading.Thread] = {}
_lock = threading.Lock()

#: Every compiled loop module (what :func:`prepare` compiles by default).
MODULES = ("warpcam.core._jitloops", "warpcam.kernels._cpu_jit")
#: Seconds the last :func:`prepare` ``(wait=True)`` (or background build) took, per module.
build_seconds: Dict[str, float] = {}


def enabled() -> bool:
    """Whether the compiled loops are asked for (they also need numba to import)."""
    return _enabled


def set_enabled(on: bool) -> None:
    """Select the compiled loops (``True``, the default) or the reference paths (``False``)
    for every call from now on, in this process."""
    global _enabled
    _enabled = bool(on)


def cache_dir() -> str:
    """numba's on-disk cache folder for warpcam's loops (module docstring)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        base = os.environ["LOCALAPPDATA"]
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "warpcam", "numba")


def _build(module: str) -> None:
    t0 = time.perf_counter()
    try:
        from numba.core import config as numba_config  # not os.environ: children inherit it

        if not os.environ.get("NUMBA_CACHE_DIR"):
            numba_config.CACHE_DIR = cache_dir()
        mod = importlib.import_module(module)
        warm = getattr(mod, "warm_up", None)
        if warm is not None:
            warm()  # compile (or load from the cache) every loop with the callers' types
    except ImportError as exc:
        _failed[module] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except Exception as exc:  # a compile error must not stop the frames: reference paths
        _failed[module] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    else:
        _modules[module] = mod
    build_seconds[module] = time.perf_counter() - t0


def _start(module: str) -> threading.Thread:
    with _lock:
        th = _threads.get(module)
        if th is None:
            th = _threads[module] = threading.Thread(target=_build, args=(module,),
                                                     name=f"jit-{module}", daemon=True)
            th.start()
    return th


def load(module: str, wait: bool = False, timeout: Optional[float] = None):
    """The compiled loop module ``module``, or ``None`` when the switch is off, numba cannot be
    imported, or (``wait=False``, or not done within ``timeout`` seconds) its loops are still
    being compiled in the background (started by the first call); the caller then runs its
    reference path. Never raises for a missing numba or a failed compile; the reason is in
    :func:`why_not`."""
    if not _enabled:
        return None
    mod = _modules.get(module)
    if mod is not None or module in _failed:
        return mod
    th = _start(module)
    if wait:
        th.join(timeout)
    return _modules.get(module)


def prepare(modules: Iterable[str] = MODULES, wait: bool = True,
            timeout: Optional[float] = None) -> bool:
    """Compile the loop modules now (in the background with ``wait=False``); True when all
    of them are ready. ``timeout`` (seconds, all modules together) bounds the wait: the
    builds go on in the background after it.

    Live sources call this with a few seconds' ``timeout`` before their first frame: from
    numba's on-disk cache the loops load in about a second, so they are ready before the first
    frame; loading them while frames flow held the interpreter lock long enough to stall one
    frame by about 100 ms (4 of 900 frames lost at 60 fps in ``benchmarks.latency --live``).
    A first-ever compile (10-50 s) does not fit and goes on in the background as before."""
    mods = list(modules)
    for m in mods:  # every build started before any wait
        load(m, wait=False)
    deadline = None if timeout is None else time.perf_counter() + max(float(timeout), 0.0)
    for m in mods:
        left = None if deadline is None else max(deadline - time.perf_counter(), 0.0)
        load(m, wait=wait, timeout=left)
    return all(m in _modules for m in mods)


def compiling(modules: Iterable[str] = MODULES) -> bool:
    """Whether a background build of any of ``modules`` is still running (started, and
    neither ready nor failed)."""
    wanted = set(modules)
    return any(th.is_alive() and m not in _modules and m not in _failed
               for m, th in list(_threads.items()) if m in wanted)


def why_not(module: str) -> Optional[str]:
    """Why :func:`load` returned ``None`` for ``module`` (``None`` if it did not)."""
    if not _enabled:
        return "compiled loops switched off (WARPCAM_JIT=0 or set_enabled(False))"
    if module not in _modules and module not in _failed and module in _threads:
        return "still compiling in the background"
    return _failed.get(module)
