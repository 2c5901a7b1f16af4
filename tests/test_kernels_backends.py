"""Backend selection, and the CUDA backend's host side run against a CuPy stand-in.

No GPU here, so the CUDA backend (kernels/cuda_backend.py) is exercised with a minimal fake of the
CuPy API it uses, whose "kernels" are the host build of the very same thread bodies. That checks
what a GPU run would otherwise be the first to check: argument order and types of every launch
(np.int32 scalars, table/field/tile buffers), launch geometry, pinned staging buffers, the stream
used for every copy and launch, and the DLPack path.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import sys
import types

import numpy as np
import pytest

from warpcam import kernels
from warpcam.kernels import BackendError, get_compositor
from warpcam.kernels import cuda as kcuda
from warpcam.kernels.cpu import CpuCompositor
from warpcam.kernels.torch_backend import TorchCompositor


def _real_cupy_gpu() -> bool:
    try:
        from warpcam.kernels.cuda_backend import cuda_available
    except ImportError:
        return False
    return cuda_available()


# --------------------------------------------------------------------------- selection
def test_cpu_and_torch_are_always_available():
    assert isinstance(get_compositor("cpu"), CpuCompositor)
    comp = get_compositor("torch")
    assert isinstance(comp, TorchCompositor) and comp.name == "torch"


@pytest.mark.skipif(_real_cupy_gpu(), reason="this machine has a CUDA GPU")
def test_auto_falls_back_to_cpu_without_a_gpu():
    assert get_compositor("auto").name == "cpu"


@pytest.mark.skipif(_real_cupy_gpu(), reason="this machine has a CUDA GPU")
def test_explicit_cuda_without_gpu_is_a_one_line_error():
    with pytest.raises(BackendError) as info:
        get_compositor("cuda")
    msg = str(info.value)
    assert "\n" not in msg and "cuda" in msg.lower()


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        get_compositor("opengl")


# --------------------------------------------------------------------------- fake CuPy
class FakeCuPy:
    """Just enough of ``cupy``/``cupyx`` for warpcam.kernels.cuda_backend, on numpy + the host build."""

    def __init__(self, host, devices=1):
        self.host = host
        self.devices = devices
        self.pinned = []  # (start, end) address ranges from empty_pinned
        self.current_stream = [None]
        self.launches = []
        self.copies = []  # ("h2d" | "d2h" | "d2d", stream)
        fake = self

        class MemPtr:
            def __init__(self, arr):
                self.arr = arr

            def copy_from_device_async(self, src, size, stream=None):
                fake.copies.append(("d2d", stream))
                dst_b = self.arr.reshape(-1).view(np.uint8)
                dst_b[:size] = src.arr.reshape(-1).view(np.uint8)[:size]

        class Array(np.ndarray):
            @property
            def data(self):
                return MemPtr(self)

            def set(self, arr, stream=None):
                assert fake.is_pinned(arr), "upload from non-pinned memory"
                fake.copies.append(("h2d", stream))
                np.copyto(np.asarray(self), arr)

            def get(self, stream=None, out=None, blocking=True):
                assert out is not None and fake.is_pinned(out), "download to non-pinned memory"
                fake.copies.append(("d2h", stream))
                np.copyto(out, np.asarray(self))
                return out

        self.ndarray = Array

        class Event:
            def synchronize(self):
                pass

        class Stream:
            def __init__(self, non_blocking=False):
                self.non_blocking = non_blocking

            def __enter__(self):
                fake.current_stream.append(self)
                return self

            def __exit__(self, *exc):
                fake.current_stream.pop()

            def record(self):
                return Event()

            def synchronize(self):
                pass

        class Device:
            def __init__(self, i=0):
                self.id = i

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        class Kernel:
            def __init__(self, name):
                self.name = name

            def __call__(self, grid, block, args, shared_mem=0):
                fake.launch(self.name, grid, block, args)

        class RawModule:
            def __init__(self, code, options=(), backend="nvrtc"):
                fake.module_code, fake.module_options = code, options

            def get_function(self, name):
                assert name in kcuda.KERNEL_NAMES
                return Kernel(name)

        runtime = types.SimpleNamespace(getDeviceCount=lambda: fake.devices)
        self.cuda = types.SimpleNamespace(runtime=runtime, Device=Device, Stream=Stream)
        self.RawModule = RawModule
        self.uint8, self.float32, self.int32, self.float16 = (np.uint8, np.float32, np.int32,
                                                              np.float16)

    # cupy functions
    def empty(self, shape, dtype):
        return np.zeros(shape, dtype).view(self.ndarray)

    def empty_like(self, a):
        return self.empty(a.shape, a.dtype)

    def ascontiguousarray(self, a):
        return np.ascontiguousarray(a).view(self.ndarray)

    def from_dlpack(self, obj):
        return np.from_dlpack(obj).view(self.ndarray)

    def asnumpy(self, a):
        return np.asarray(a).copy()

    # cupyx
    def empty_pinned(self, shape, dtype):
        a = np.zeros(shape, dtype)
        self.pinned.append((a.ctypes.data, a.ctypes.data + a.nbytes))
        return a

    def is_pinned(self, arr):
        p = arr.ctypes.data
        return any(lo <= p and p + arr.nbytes <= hi for lo, hi in self.pinned)

    def launch(self, name, grid, block, args):
        stream = self.current_stream[-1]
        assert stream is not None and stream.non_blocking, f"{name} launched off the stream"
        self.launches.append((name, grid, block))
        if name == "wc_composite":
            src, dst, H, W, table, njobs, fields, tiles, ntiles = args
            for s in (H, W, njobs, ntiles):
                assert type(s) is np.int32, f"{name}: scalar {s!r} must be np.int32"
            assert isinstance(src, self.ndarray) and src.dtype == np.uint8 and \
                src.shape == (H, W, 3) and dst.shape == src.shape
            assert fields.dtype == np.float32 and tiles.dtype == np.int32
            assert table.nbytes == njobs * kcuda.JOB_DTYPE.itemsize
            assert tiles.size == 2 * ntiles
            assert grid == (int(ntiles),) and block == (kcuda.TILE, kcuda.TILE)
            self.host._lib.wc_host_composite(np.asarray(src), np.asarray(dst), H, W,
                                             table.ctypes.data, njobs, np.asarray(fields),
                                             np.asarray(tiles), ntiles)
        else:
            src, H, W, table, nrois, out = args
            for s in (H, W, nrois):
                assert type(s) is np.int32, f"{name}: scalar {s!r} must be np.int32"
            assert table.nbytes == nrois * kcuda.ROI_DTYPE.itemsize
            rois = np.frombuffer(np.asarray(table).tobytes(), kcuda.ROI_DTYPE)
            most = int((rois["h"] * rois["w"]).max())
            assert grid == (-(-most // kcuda.CROP_THREADS), int(nrois))
            assert block == (kcuda.CROP_THREADS,)
            fp16 = name.endswith("f16")
            assert out.dtype == (np.float16 if fp16 else np.float32)
            self.host._lib.wc_host_crop_rois(np.asarray(src), H, W, table.ctypes.data, nrois,
                                             out.ctypes.data, int(fp16))


@pytest.fixture
def fake_cuda(monkeypatch):
    from warpcam.kernels import hostbuild

    if hostbuild.find_compiler() is None:
        pytest.skip("no C++ compiler: the fake CuPy runs the host build")
    fake = FakeCuPy(hostbuild.load())
    cupyx = types.SimpleNamespace(empty_pinned=fake.empty_pinned)
    saved = sys.modules.pop("warpcam.kernels.cuda_backend", None)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    try:
        mod = importlib.import_module("warpcam.kernels.cuda_backend")
        mod._modules.clear()
        yield fake, mod
    finally:
        sys.modules.pop("warpcam.kernels.cuda_backend", None)
        with contextlib.suppress(AttributeError):
            delattr(kernels, "cuda_backend")
        if saved is not None:
            sys.modules["warpcam.kernels.cuda_backend"] = saved


def test_fake_cuda_composite_matches_host_build(fake_cuda):
    from tests.test_kernels_agreement import astronaut, scenario

    fake, mod = fake_cuda
    comp = mod.CudaCompositor()
    frame = astronaut()
    for scene in ("mixed", "overlap", "outside"):
        jobs = scenario(scene, frame, seed=1)
        before = frame.copy()
        fake.copies.clear()
        got = comp.composite(frame, jobs)
        assert np.array_equal(frame, before)
        assert type(got) is np.ndarray and got.shape == frame.shape
        np.testing.assert_array_equal(got, fake.host.composite(frame, jobs))
        # The frame crosses the bus once each way (plus one small table upload), all on the
        # compositor's stream.
        kinds = [k for k, _ in fake.copies]
        assert kinds.count("d2h") == 1 and kinds.count("h2d") == 2, kinds
        assert all(s is comp.stream for _, s in fake.copies)
    small = np.ascontiguousarray(frame[:300, :400])  # a new frame size: new staging buffers
    np.testing.assert_array_equal(comp.composite(small, jobs), fake.host.composite(small, jobs))
    work = frame.copy()
    assert comp.composite(work, jobs, inplace=True) is work
    np.testing.assert_array_equal(work, fake.host.composite(frame, jobs))
    assert fake.module_code == kcuda.kernel_source()
    assert "-std=c++17" in fake.module_options
    assert comp.composite(frame, []) is frame


def test_fake_cuda_device_path_and_dlpack(fake_cuda):
    import torch

    from tests.test_kernels_agreement import astronaut, scenario

    fake, mod = fake_cuda
    comp = mod.CudaCompositor()
    frame = astronaut()
    jobs = scenario("mixed", frame, seed=2)
    want = fake.host.composite(frame, jobs)
    dev = fake.ascontiguousarray(frame)
    out = comp.composite_device(dev, jobs)
    assert isinstance(out, fake.ndarray)
    np.testing.assert_array_equal(np.asarray(out), want)
    t = torch.from_numpy(frame.copy())  # stands in for a CUDA tensor: shared through DLPack
    out_t = comp.composite_device(t, jobs)
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_array_equal(out_t.numpy(), want)
    assert torch.equal(t, torch.from_numpy(frame))


def test_fake_cuda_crop_one_launch(fake_cuda):
    from warpcam.kernels.crop import CropSpec

    from tests.test_kernels_agreement import astronaut

    fake, mod = fake_cuda
    comp = mod.CudaCompositor()
    frame = astronaut()
    rng = np.random.default_rng(0)
    a = np.array([[[1.5, 0.1, x], [-0.1, 1.5, y]] for x, y in rng.uniform(0, 400, (5, 2))])
    specs = [CropSpec(a[:3], (41, 51), 0.5, 0.5, flip=[False, True, False]),
             CropSpec(a[3:], (64, 64), 0.0, 1.0, border="constant")]
    for dtype in (np.float32, np.float16):
        fake.launches.clear()
        got = comp.crop_groups(frame, specs, dtype)
        assert len(fake.launches) == 1
        want = fake.host.crop_groups(frame, specs, dtype)
        for g, w in zip(got, want):
            assert g.dtype == dtype and g.shape == w.shape
            np.testing.assert_array_equal(np.asarray(g), w)
    one = comp.crop_rois(frame, a[:2], (41, 51), 0.5, 0.5)
    np.testing.assert_array_equal(np.asarray(one), fake.host.crop_rois(frame, a[:2], (41, 51),
                                                                       0.5, 0.5))


def test_fake_cuda_selection(fake_cuda, monkeypatch):
    fake, mod = fake_cuda
    assert get_compositor("auto").name == "cuda"
    assert get_compositor("cuda").name == "cuda"
    fake.devices = 0
    assert not mod.cuda_available()
    assert get_compositor("auto").name == "cpu"
    with pytest.raises(BackendError, match="no CUDA GPU"):
        get_compositor("cuda")
    fake.devices = 1
    with pytest.raises(BackendError, match="no CUDA device 3"):
        mod.CudaCompositor(3)


# --------------------------------------------------------------------------- benchmark
def test_benchmark_runs_and_writes_json(tmp_path, capsys):
    from benchmarks import kernels as bench

    out = tmp_path / "k.json"
    status = bench.main(["--sizes", "160x120", "--faces", "1,2", "--repeats", "2",
                         "--warmup", "0", "--backends", "cpu,torch", "--out", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    rows = report["results"]
    assert {(r["backend"], r["op"], r["faces"]) for r in rows} == {
        (b, op, n) for b in ("cpu", "torch") for op in ("crop", "composite") for n in (1, 2)}
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in rows)
    assert set(report["ratios"]) == {"torch_over_cpu_crop", "torch_over_cpu_composite"}
    text = capsys.readouterr().out
    assert "p50 ms" in text and "torch takes" in text


@pytest.mark.skipif(_real_cupy_gpu(), reason="this machine has a CUDA GPU")
def test_benchmark_cuda_without_gpu_exits_2(tmp_path):
    from benchmarks import kernels as bench

    assert bench.main(["--backends", "cuda", "--out", str(tmp_path / "x.json")]) == 2
