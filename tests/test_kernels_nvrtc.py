"""Every CUDA kernel compiles with NVRTC, without a GPU, for every supported architecture, with
no warning: the source CuPy compiles (header pasted in), the options it adds, and ptxas told to
warn about register spills and local-memory use (so a kernel that starts spilling fails here).

Needs cuda-python (``cuda.bindings.nvrtc``) and the NVRTC library from PyPI
(``nvidia-cuda-nvrtc-cu12``): both are in the ``cuda`` and ``test`` extras.
"""
from __future__ import annotations

import re

import pytest

from warpcam.kernels import cuda as kcuda

PTXAS_STRICT = ("-Xptxas", "-warn-spills", "-Xptxas", "-warn-lmem-usage", "-Xptxas", "-v")


def _nvrtc():
    try:
        from cuda.bindings import nvrtc  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import nvrtc  # older cuda-python
        except ImportError:
            pytest.skip("cuda-python is not installed (pip install cuda-python "
                        "nvidia-cuda-nvrtc-cu12): cannot compile the CUDA kernels")
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:  # the bindings are there but libnvrtc is not
        pytest.skip(f"NVRTC library not loadable (pip install nvidia-cuda-nvrtc-cu12): {exc}")
    return nvrtc


def _check(nvrtc, result, what):
    err = result[0] if isinstance(result, tuple) else result
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"{what}: {err}"
    return result[1:] if isinstance(result, tuple) and len(result) > 1 else None


def compile_kernels(arch: str) -> tuple:
    """Compile ``warp_kernels.cu`` for ``arch``; returns (result, log, cubin)."""
    nvrtc = _nvrtc()
    src = kcuda.kernel_source().encode()
    res = nvrtc.nvrtcCreateProgram(src, b"warp_kernels.cu", 0, [], [])
    (prog,) = _check(nvrtc, res, "nvrtcCreateProgram")
    opts = [o.encode() for o in
            kcuda.compile_options(arch) + kcuda.CUPY_IMPLIED_OPTIONS + PTXAS_STRICT]
    try:
        result = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)[0]
        (size,) = _check(nvrtc, nvrtc.nvrtcGetProgramLogSize(prog), "log size")
        log = b" " * size
        _check(nvrtc, nvrtc.nvrtcGetProgramLog(prog, log), "log")
        cubin = b""
        if result == nvrtc.nvrtcResult.NVRTC_SUCCESS:
            (n,) = _check(nvrtc, nvrtc.nvrtcGetCUBINSize(prog), "cubin size")
            cubin = b" " * n
            _check(nvrtc, nvrtc.nvrtcGetCUBIN(prog, cubin), "cubin")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return result, log.rstrip(b"\0 ").decode(errors="replace"), cubin


@pytest.mark.parametrize("arch", kcuda.SUPPORTED_ARCHS)
def test_kernels_compile_without_warnings(arch):
    nvrtc = _nvrtc()
    result, log, cubin = compile_kernels(arch)
    assert result == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"{arch}: compile failed:\n{log}"
    bad = [ln for ln in log.splitlines() if re.search(r"warning|error", ln, re.I)]
    assert not bad, f"{arch}: compiler diagnostics:\n{log}"
    for name in kcuda.KERNEL_NAMES:
        assert name.encode() in cubin, f"{arch}: entry point {name} missing from the CUBIN"
    # ptxas -v: every kernel without stack frame, spills or local memory.
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                        r"loads", log)
    assert len(frames) == len(kcuda.KERNEL_NAMES), log
    assert all(f == ("0", "0", "0") for f in frames), f"{arch}: stack/spills:\n{log}"


def test_a_broken_kernel_is_reported():
    # The check above would catch a warning: prove the log path works on a known-bad source.
    nvrtc = _nvrtc()
    res = nvrtc.nvrtcCreateProgram(b'extern "C" __global__ void k(float* x) { int unused; '
                                   b'x[0] = 1.0f; }', b"bad.cu", 0, [], [])
    (prog,) = _check(nvrtc, res, "create")
    opts = [o.encode() for o in kcuda.compile_options("sm_80")]
    nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    (size,) = _check(nvrtc, nvrtc.nvrtcGetProgramLogSize(prog), "log size")
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    nvrtc.nvrtcDestroyProgram(prog)
    assert b"warning" in log and b"unused" in log


def test_python_constants_match_the_header():
    text = kcuda.HEADER.read_text()
    assert int(re.search(r"#define WC_TILE (\d+)", text).group(1)) == kcuda.TILE
    assert int(re.search(r"#define WC_CROP_THREADS (\d+)", text).group(1)) == kcuda.CROP_THREADS
    assert int(re.search(r"#define WC_BORDER_ZERO (\d+)", text).group(1)) == kcuda.BORDER_ZERO
    assert int(re.search(r"#define WC_BORDER_REPLICATE (\d+)", text).group(1)) == \
        kcuda.BORDER_REPLICATE
    src = kcuda.kernel_source()
    assert '#include "warp_math.cuh"' not in src and "wc_apply_job" in src
    for name in kcuda.KERNEL_NAMES:
        assert 'extern "C" __global__' in src and name in src
