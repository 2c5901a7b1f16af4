"""Host build of the CUDA kernels' per-pixel math, for tests on machines without a GPU.

``kernels/cuda/host_loops.cpp`` includes the same ``warp_math.cuh`` the CUDA kernels include and
walks the same launch grid sequentially, calling the same thread bodies. This module compiles it
with the system C++ compiler (``g++`` or ``$CXX``) into a shared library in a cache directory
outside the repository (``$WARPCAM_CACHE_DIR`` or ``<tmp>/warpcam-hostbuild-<uid>``, keyed by a
hash of the sources and flags) and calls it through :mod:`ctypes`, with the tables packed by
:mod:`warpcam.kernels.cuda` exactly as the CUDA backend packs them. What the tests verify here is
therefore the arithmetic the GPU runs, up to the GPU's fused multiply-adds (last-bit float
differences).

Not used by the pipeline. ``load()`` raises :class:`HostBuildError` when no compiler is found.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from warpcam.kernels import crop as _crop
from warpcam.kernels import cuda as _src

CXXFLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror",
            "-ffp-contract=off")


class HostBuildError(RuntimeError):
    """The host library cannot be built here (no compiler, or a compile error)."""


def find_compiler() -> Optional[str]:
    """Path of ``$CXX`` or ``g++``, or ``None``."""
    return shutil.which(os.environ.get("CXX", "g++"))


def cache_dir() -> Path:
    env = os.environ.get("WARPCAM_CACHE_DIR")
    base = Path(env) if env else Path(tempfile.gettempdir()) / f"warpcam-hostbuild-{os.getuid()}"
    return base


def build(out_dir: Optional[Path] = None) -> Path:
    """Compile ``host_loops.cpp`` (if not cached) and return the shared library's path.

    Raises:
        HostBuildError: no compiler, or the compiler failed (its output is in the message).
    """
    cxx = find_compiler()
    if cxx is None:
        raise HostBuildError("no C++ compiler (g++ or $CXX) on PATH")
    key = hashlib.sha256()
    for p in (_src.HEADER, _src.HOST_CPP):
        key.update(p.read_bytes())
    key.update(" ".join((cxx,) + CXXFLAGS).encode())
    out_dir = Path(out_dir) if out_dir is not None else cache_dir()
    lib = out_dir / f"libwarpcam_host_{key.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    # Build under a unique name, then rename: concurrent test processes never load a half file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    cmd = [cxx, *CXXFLAGS, f"-I{_src.SOURCE_DIR}", str(_src.HOST_CPP), "-o", tmp]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or res.stderr.strip():
        os.unlink(tmp)
        raise HostBuildError(f"host build failed: {' '.join(cmd)}\n{res.stdout}{res.stderr}")
    os.replace(tmp, lib)
    return lib


_u8p = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")
_f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_i32p = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
_u16p = np.ctypeslib.ndpointer(np.uint16, flags="C_CONTIGUOUS")


class HostKernels:
    """The host build, with the backends' calling conventions.

    ``composite`` and ``crop_rois`` take and return what
    :class:`warpcam.kernels.cpu.CpuCompositor` and :func:`warpcam.kernels.crop.crop_rois` do
    (numpy, BGR ``uint8`` frames).
    """

    name = "host"

    def __init__(self, lib_path: Optional[Path] = None):
        lib = ctypes.CDLL(str(lib_path or build()))
        lib.wc_job_size.restype = ctypes.c_int
        lib.wc_roi_size.restype = ctypes.c_int
        lib.wc_tile.restype = ctypes.c_int
        lib.wc_host_composite.restype = None
        lib.wc_host_composite.argtypes = [_u8p, _u8p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                          ctypes.c_int, _f32p, _i32p, ctypes.c_int]
        lib.wc_host_crop_rois.restype = None
        lib.wc_host_crop_rois.argtypes = [_u8p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                          ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        lib.wc_host_float_to_half.restype = None
        lib.wc_host_float_to_half.argtypes = [_f32p, _u16p, ctypes.c_longlong]
        self._lib = lib

    @property
    def job_size(self) -> int:
        """``sizeof(WcJob)`` as compiled."""
        return self._lib.wc_job_size()

    @property
    def roi_size(self) -> int:
        """``sizeof(WcRoi)`` as compiled."""
        return self._lib.wc_roi_size()

    @property
    def tile(self) -> int:
        """``WC_TILE`` as compiled."""
        return self._lib.wc_tile()

    def composite(self, frame: np.ndarray, jobs: Sequence, inplace: bool = False) -> np.ndarray:
        """Run ``wc_composite``'s grid on the host. Same contract as ``CpuCompositor``."""
        _crop.check_frame(frame)
        if not jobs:
            return frame
        src = np.ascontiguousarray(frame)
        dst = src.copy()
        packed = _src.pack_jobs(jobs, src.shape)
        if packed.njobs:
            table = np.ascontiguousarray(packed.table)
            self._lib.wc_host_composite(src, dst, src.shape[0], src.shape[1],
                                        table.ctypes.data, packed.njobs, packed.fields,
                                        packed.tiles, packed.tiles.shape[0])
        if inplace:
            np.copyto(frame, dst)
            return frame
        return dst

    def crop_groups(self, frame: np.ndarray, specs: Sequence[_crop.CropSpec],
                    dtype=np.float32) -> list:
        """Run ``wc_crop_rois_*``'s grid once over every ROI of every spec; returns one
        ``(N_k, 3, h_k, w_k)`` array per spec (views into one buffer, like the CUDA backend)."""
        _crop.check_frame(frame)
        src = np.ascontiguousarray(frame)
        out_dtype = _crop.resolve_dtype(dtype)
        table, total, shapes = _src.pack_crop(specs)
        out = np.zeros(total, np.float32 if out_dtype == np.float32 else np.uint16)
        if len(table):
            self._lib.wc_host_crop_rois(src, src.shape[0], src.shape[1], table.ctypes.data,
                                        len(table), out.ctypes.data,
                                        int(out_dtype == np.float16))
        if out_dtype == np.float16:
            out = out.view(np.float16)
        return _src.split_output(out, shapes)

    def crop_rois(self, frame: np.ndarray, affines, size, mean=0.0, std=1.0, dtype=np.float32,
                  flip=None, border: str = "replicate") -> np.ndarray:
        """Host run of the crop kernel; same contract as :func:`warpcam.kernels.crop.crop_rois`."""
        spec = _crop.CropSpec(affines, size, mean, std, flip, border)
        return self.crop_groups(frame, [spec], dtype)[0]

    def float_to_half(self, x: np.ndarray) -> np.ndarray:
        """``wc_float_to_half_bits`` (host branch) over ``x``; returns ``float16``."""
        x = np.ascontiguousarray(x, np.float32).reshape(-1)
        out = np.empty(x.shape, np.uint16)
        self._lib.wc_host_float_to_half(x, out, x.size)
        return out.view(np.float16)


_loaded: Optional[HostKernels] = None


def load() -> HostKernels:
    """The host build, compiled on first use and cached for the process."""
    global _loaded
    if _loaded is None:
        _loaded = HostKernels()
    return _loaded
