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
from warpcam.kernels import BACKENDS, BackendError, backend_names, get_compositor
from warpcam.kernels import crop as kcrop
from warpcam.kernels import cuda as kcuda
from warpcam.kernels.base import Compositor
from warpcam.kernels.cpu import CpuCompositor
from warpcam.kernels.torch_backend import TorchCompositor

from tests import realdata


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


# --------------------------------------------------------------------------- registry
def _check_backend_class(name, cls):
    assert issubclass(cls, Compositor), name
    assert cls.name == name
    ok = cls.available()
    assert isinstance(ok, bool)
    why = cls.why_unavailable()
    assert isinstance(why, str) and "\n" not in why
    assert (why == "") == ok, (name, why)


def test_every_registered_backend_subclasses_compositor():
    assert list(BACKENDS) == ["cpu", "torch", "cuda"]
    for name, load in BACKENDS.items():
        try:
            cls = load()
        except BackendError as exc:  # cuda without CuPy: a one-line reason
            assert name == "cuda" and "\n" not in str(exc)
            continue
        _check_backend_class(name, cls)
    for comp in (get_compositor("cpu"), get_compositor("torch"), get_compositor("auto")):
        assert isinstance(comp, Compositor) and comp.name in BACKENDS


def test_registry_and_backend_names_agree():
    assert backend_names() == ("auto",) + tuple(BACKENDS) == ("auto", "cpu", "torch", "cuda")
    # The CLI's --backend choices are read from the registry.
    from warpcam.realtime.cli import build_parser

    action = next(a for a in build_parser()._actions if "--backend" in a.option_strings)
    assert tuple(action.choices) == backend_names()


def test_explicit_unavailable_backend_reports_why(monkeypatch):
    cls = BACKENDS["torch"]()
    monkeypatch.setattr(cls, "available", classmethod(lambda c: False))
    monkeypatch.setattr(cls, "why_unavailable", classmethod(lambda c: "--backend torch: none"))
    with pytest.raises(BackendError, match="^--backend torch: none$"):
        get_compositor("torch")


# --------------------------------------------------------------------------- crop service
REAL_PHOTO = realdata.REAL / "images" / "mediapipe" / "business-person.png"


@pytest.fixture(scope="module")
def real_face(static_tracker):
    """A real face photo (BGR) and the network crops of its eyes (core.eyes.eye_crop) plus a
    face box, as the effects request them."""
    import cv2

    from warpcam.core.eyes import eye_crop
    from warpcam.core.geometry import roi_affine

    if not REAL_PHOTO.exists():
        pytest.skip(f"real face photo {REAL_PHOTO} not present (../shared/data/real is "
                    "evaluation material beside the checkout)")
    img = np.ascontiguousarray(cv2.imread(str(REAL_PHOTO)))
    faces = static_tracker.track(img)
    assert faces, "no face tracked in the real photo"
    pts = faces[0].landmarks
    eyes = [eye_crop(pts, side) for side in ("right", "left")]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    face = roi_affine((lo + hi) / 2, np.deg2rad(faces[0].roll), 1.2 * (hi - lo).max(),
                      1.2 * (hi - lo).max(), 128, 128)
    specs = [kcrop.CropSpec(np.array([e[0] for e in eyes]), (41, 51), 0.5, 0.5,
                            flip=[e[1] for e in eyes]),
             kcrop.CropSpec(face[None], (128, 128), (0.5, 0.45, 0.4), (0.5, 0.25, 0.2),
                            border="constant")]
    return img, specs


def test_cpu_crop_service_is_the_crop_module(real_face):
    img, specs = real_face
    comp = get_compositor("cpu")
    for dtype in (np.float32, np.float16):
        for s in specs:
            got = comp.crop_rois(img, s.affines, s.size, s.mean, s.std, dtype, s.flip, s.border)
            want = kcrop.crop_rois(img, s.affines, s.size, s.mean, s.std, dtype, s.flip, s.border)
            assert type(got) is np.ndarray and got.dtype == dtype
            np.testing.assert_array_equal(got, want)
        for g, w in zip(comp.crop_groups(img, specs, dtype), kcrop.crop_groups(img, specs, dtype)):
            np.testing.assert_array_equal(g, w)
    assert comp.crops_to_numpy(got) is got


def test_cpu_and_torch_crops_agree_within_one_grey_level(real_face):
    import torch

    img, specs = real_face
    cpu, tch = get_compositor("cpu"), get_compositor("torch")
    got_cpu = cpu.crop_groups(img, specs)
    got_torch = tch.crop_groups(img, specs)
    assert all(isinstance(t, torch.Tensor) for t in got_torch)
    for s, a, b in zip(specs, got_cpu, tch.crops_to_numpy(got_torch)):
        assert a.shape == b.shape == (len(s.affines), 3) + tuple(s.size)
        std = np.broadcast_to(np.asarray(s.std, np.float64), (3,))[None, :, None, None]
        levels = np.abs(a.astype(np.float64) - b) * 255.0 * std
        # The bar of test_kernels_crop: OpenCV rounds its sample positions to 1/32 pixel and
        # its samples to uint8, which only the sharpest edges feel beyond one level.
        assert (levels <= 1.0).mean() >= 0.99, (levels <= 1.0).mean()
        assert levels.mean() < 0.35 and levels.max() < 6, (levels.mean(), levels.max())
    # the single-batch entry point is the same service
    one = tch.crop_rois(img, specs[0].affines, (41, 51), 0.5, 0.5, flip=specs[0].flip)
    assert torch.equal(one, got_torch[0])
    assert cpu.crops_to_torch(got_cpu)[0].dtype == torch.float32


# --------------------------------------------------------------------------- fake CuPy
class FakeCuPy:
    """Just enough of ``cupy``/``cupyx`` for kernels/cuda_backend.py, on numpy + the host build."""

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


def test_fake_cuda_is_a_registered_compositor(fake_cuda):
    fake, mod = fake_cuda
    cls = BACKENDS["cuda"]()
    assert cls is mod.CudaCompositor
    _check_backend_class("cuda", cls)
    fake.devices = 0
    assert not cls.available() and cls.why_unavailable() == mod.NO_GPU


def test_fake_cuda_crop_and_composite_share_one_upload(fake_cuda):
    import torch

    from tests.test_kernels_agreement import astronaut, scenario

    fake, mod = fake_cuda
    comp = mod.CudaCompositor()
    frame = astronaut()
    jobs = scenario("mixed", frame, seed=3)
    rng = np.random.default_rng(1)
    a = np.array([[[1.2, 0.1, x], [-0.1, 1.2, y]] for x, y in rng.uniform(0, 400, (3, 2))])
    specs = [kcrop.CropSpec(a, (41, 51), 0.5, 0.5)]

    def h2d():
        return sum(k == "h2d" for k, _ in fake.copies)

    # Without a scope each call uploads the frame (plus one table each).
    fake.copies.clear()
    comp.crop_groups(frame, specs)
    comp.composite(frame, jobs)
    assert h2d() == 4
    # In a scope the frame goes up once.
    fake.copies.clear()
    with comp.frame(frame):
        crops = comp.crop_groups(frame, specs)
        crops2 = comp.crop_groups(frame, specs)
        out = comp.composite(frame, jobs)
    assert h2d() == 1 + 3, fake.copies  # frame once, three tables
    np.testing.assert_array_equal(out, fake.host.composite(frame, jobs))
    want = fake.host.crop_groups(frame, specs)
    for c in (crops, crops2):
        np.testing.assert_array_equal(comp.crops_to_numpy(c)[0], want[0])
    t = comp.crops_to_torch(crops)[0]
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), want[0])
    # Another frame uploaded inside the scope overwrites the staging buffer: the scope's frame
    # goes up again, and the results stay right.
    other = np.ascontiguousarray(frame[::-1])
    fake.copies.clear()
    with comp.frame(frame):
        comp.crop_groups(frame, specs)
        comp.crop_groups(other, specs)
        out = comp.composite(frame, jobs)
    assert h2d() == 3 + 3
    np.testing.assert_array_equal(out, fake.host.composite(frame, jobs))
    # An in-place composite ends the sharing: later crops read the new pixels.
    work = frame.copy()
    with comp.frame(work):
        comp.crop_groups(work, specs)
        comp.composite(work, jobs, inplace=True)
        after = comp.crops_to_numpy(comp.crop_groups(work, specs))
    edited = fake.host.composite(frame, jobs)
    np.testing.assert_array_equal(work, edited)
    np.testing.assert_array_equal(after[0], fake.host.crop_groups(edited, specs)[0])
    # After the scope, every call uploads again.
    fake.copies.clear()
    comp.crop_groups(frame, specs)
    assert h2d() == 2


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
