"""CUDA compositor backend: the fused kernels of ``kernels/cuda/`` loaded with ``cupy.RawModule``.

Two launches per frame on the GPU:

- ``wc_crop_rois_*``: every ROI of the frame (all faces; eyes, mouth and face crops, several
  sizes) cropped with its affine, bilinear, BGR ``uint8`` -> normalised RGB float32/float16,
  written as NCHW batches into one buffer (:meth:`CudaCompositor.crop_groups`).
- ``wc_composite``: every :class:`~warpcam.core.types.WarpJob` applied in place on the output frame
  (flow upsampling, backward warp, lightness, palette mix, colour/attention, feathered alpha,
  ``uint8`` store), one thread per pixel of the tiles the jobs cover, jobs in list order per
  pixel (:meth:`CudaCompositor.composite_device`).

The maths, conventions and border rules are those of :mod:`warpcam.kernels.torch_backend` (the
reference) and :mod:`warpcam.kernels.cpu`; the per-pixel code is in ``kernels/cuda/warp_math.cuh``.

Host <-> device: numpy frames go through page-locked (pinned) staging buffers and one CUDA stream,
so a frame crosses the bus once up and once down (:meth:`CudaCompositor.composite`). Device frames
(CuPy arrays, or torch CUDA tensors and anything else speaking DLPack) are used in place, without a
copy (:meth:`composite_device`, :func:`to_torch`).

Importing this module raises ``ImportError`` when CuPy is not installed or not usable;
:func:`warpcam.kernels.get_compositor` turns that into a one-line :class:`~kernels.BackendError`.
Install with ``pip install warpcam[cuda]``.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Sequence

import numpy as np

try:
    import cupy
    import cupyx
except Exception as exc:  # ImportError, or a CuPy whose CUDA libraries fail to load
    raise ImportError(f"CuPy is not usable: {exc}".splitlines()[0]) from exc

from warpcam.core.types import WarpJob
from warpcam.kernels import BackendError
from warpcam.kernels import crop as _crop
from warpcam.kernels import cuda as _src
from warpcam.kernels.base import Compositor, _convert


def cuda_available() -> bool:
    """True when CuPy sees at least one CUDA device (never raises)."""
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


_modules: dict = {}
_modules_lock = threading.Lock()


def _preload_nvrtc() -> None:
    """Make a pip-installed NVRTC (``nvidia-cuda-nvrtc-cu12``) visible to CuPy.

    CuPy opens ``libnvrtc.so.12`` by name, which finds a system CUDA toolkit on the library path
    but not the pip wheel under site-packages; loading the wheel's copy once by its path (with
    ``cuda-pathfinder``, which cuda-python brings) satisfies that later lookup.
    """
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except ImportError:
        return
    try:
        load_nvidia_dynamic_lib("nvrtc")
    except Exception:  # not installed from pip: CuPy's own lookup may still find it
        pass


def _module(device_id: int):
    """The compiled RawModule for a device (compiled on first use, then from CuPy's cache)."""
    with _modules_lock:
        mod = _modules.get(device_id)
        if mod is None:
            _preload_nvrtc()
            mod = cupy.RawModule(code=_src.kernel_source(), options=_src.compile_options(),
                                 backend="nvrtc")
            _modules[device_id] = mod
        return mod


def to_torch(array):
    """A CuPy array as a torch tensor on the same GPU, sharing memory (DLPack, no copy)."""
    import torch

    return torch.from_dlpack(array)


def from_dlpack(array) -> "cupy.ndarray":
    """A CuPy view of any DLPack-capable GPU array (e.g. a torch CUDA tensor), no copy."""
    if isinstance(array, cupy.ndarray):
        return array
    return cupy.from_dlpack(array)


class _Staging:
    """Pinned host buffers and device buffers for one frame shape, reused frame after frame."""

    def __init__(self, shape: tuple):
        self.shape = shape
        self.pin_in = cupyx.empty_pinned(shape, np.uint8)
        self.pin_out = cupyx.empty_pinned(shape, np.uint8)
        self.src = cupy.empty(shape, cupy.uint8)
        self.dst = cupy.empty(shape, cupy.uint8)
        self.uploaded = None  # event: the last upload from pin_in has finished reading it


NO_GPU = "--backend cuda: CuPy sees no CUDA GPU on this machine"


class CudaCompositor(Compositor):
    """Fused CUDA compositor and ROI cropper (CuPy).

    Args:
        device: CUDA device index.

    Raises:
        BackendError: CuPy sees no CUDA device (or not that one).

    ``composite(frame, jobs, inplace=False)`` takes and returns numpy ``H x W x 3`` ``uint8`` BGR
    (a new array and the input untouched, or with ``inplace=True`` the input written over; no jobs
    returns the input). ``composite_device`` and ``crop_groups``/``crop_rois`` work on GPU arrays
    and return CuPy arrays (torch tensors when given torch tensors); a numpy frame given to
    ``crop_groups``/``crop_rois`` is uploaded and its crops are CuPy arrays.
    :meth:`crops_to_torch` / :meth:`crops_to_numpy` hand them on, ordered after the launch.
    Inside ``with comp.frame(img):`` the crops and the composite of the numpy frame ``img``
    share one upload of it. Not thread-safe: use one instance per thread.
    """

    name = "cuda"

    @classmethod
    def available(cls) -> bool:
        return cuda_available()

    @classmethod
    def why_unavailable(cls) -> str:
        return "" if cuda_available() else NO_GPU

    def __init__(self, device: int = 0):
        if not cuda_available():
            raise BackendError(NO_GPU)
        n = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= device < n:
            raise BackendError(f"--backend cuda: no CUDA device {device} (found {n})")
        self.device = cupy.cuda.Device(device)
        with self.device:
            self.stream = cupy.cuda.Stream(non_blocking=True)
            self._staged = None  # _Staging for the last frame shape
            self._table_pin = cupyx.empty_pinned((1 << 16,), np.uint8)
            self._table_dev = cupy.empty((1 << 16,), cupy.uint8)
            self._table_done = None  # event: last upload of _table_pin finished
        self._kernels = None
        self._shared = None  # the host frame of the open frame() scope
        self._shared_dev = None  # its device copy (the staging src), once uploaded

    # ---------------------------------------------------------------- internals
    def _kernel(self, name: str):
        if self._kernels is None:
            with self.device:
                mod = _module(self.device.id)
                self._kernels = {k: mod.get_function(k) for k in _src.KERNEL_NAMES}
        return self._kernels[name]

    def _staging(self, shape: tuple) -> _Staging:
        if self._staged is None or self._staged.shape != shape:
            # Buffers of the old shape may still be in use by queued work: let it finish before
            # they go back to the memory pool (resolution changes are rare).
            self.stream.synchronize()
            with self.device:
                self._staged = _Staging(shape)
        return self._staged

    def _upload_tables(self, arrays: Sequence[np.ndarray]) -> list:
        """Copy small host arrays to the device in one pinned, asynchronous transfer on the
        stream; returns device views of them (each 256-byte aligned)."""
        offsets, at = [], 0
        for a in arrays:
            offsets.append(at)
            at += -(-a.nbytes // 256) * 256
        if self._table_done is not None:
            self._table_done.synchronize()  # the previous upload may still read the pinned buffer
        if at > self._table_pin.nbytes:
            self.stream.synchronize()  # as in _staging: the old buffers may still be read
            size = 1 << max(16, (at - 1).bit_length())
            self._table_pin = cupyx.empty_pinned((size,), np.uint8)
            self._table_dev = cupy.empty((size,), cupy.uint8)
        for a, off in zip(arrays, offsets):
            self._table_pin[off:off + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        self._table_dev[:at].set(self._table_pin[:at], stream=self.stream)
        self._table_done = self.stream.record()
        views = []
        for a, off in zip(arrays, offsets):
            raw = self._table_dev[off:off + a.nbytes]
            views.append(raw.view(cupy.float32 if a.dtype == np.float32 else cupy.int32
                                  if a.dtype == np.int32 else cupy.uint8))
        return views

    def _launch_composite(self, src, dst, jobs: Sequence[WarpJob]) -> None:
        H, W = src.shape[:2]
        packed = _src.pack_jobs(jobs, (H, W))
        if packed.njobs == 0:
            return
        table = np.ascontiguousarray(packed.table).view(np.uint8)
        d_table, d_fields, d_tiles = self._upload_tables([table, packed.fields, packed.tiles])
        ntiles = packed.tiles.shape[0]
        with self.stream:
            self._kernel("wc_composite")(
                (ntiles,), (_src.TILE, _src.TILE),
                (src, dst, np.int32(H), np.int32(W), d_table, np.int32(packed.njobs), d_fields,
                 d_tiles, np.int32(ntiles)))

    def _upload_frame(self, frame: np.ndarray):
        """Numpy frame -> the staging device buffer, through pinned memory, on the stream.

        Inside a :meth:`frame` scope, the scope's frame is uploaded once: while no other frame
        was uploaded since (it would overwrite the staging buffer), its device copy is reused.
        """
        if frame is self._shared and self._shared_dev is not None \
                and self._staged is not None and self._shared_dev is self._staged.src:
            return self._shared_dev
        st = self._staging(frame.shape)
        if st.uploaded is not None:
            st.uploaded.synchronize()  # the previous upload may still be reading pin_in
        np.copyto(st.pin_in, frame)
        st.src.set(st.pin_in, stream=self.stream)
        st.uploaded = self.stream.record()
        self._shared_dev = st.src if frame is self._shared else None
        return st.src

    @contextlib.contextmanager
    def frame(self, frame) -> Iterator:
        """Share one upload of the numpy ``frame`` among the crops and the composite made
        inside the block (the first of them uploads it). ``frame`` must not be written inside
        the block except by ``composite(..., inplace=True)``, which ends the sharing (later
        calls upload the new content). Device frames need no upload: a no-op for them."""
        if not isinstance(frame, np.ndarray):
            yield frame
            return
        saved = self._shared
        self._shared, self._shared_dev = frame, None
        try:
            yield frame
        finally:
            self._shared, self._shared_dev = saved, None

    def _as_device_frame(self, frame):
        # Called with self.stream current: a DLPack producer (torch) then orders its pending
        # work before this stream, not before the legacy default stream.
        arr = from_dlpack(frame)
        _crop.check_frame(arr)
        if not arr.flags.c_contiguous:
            arr = cupy.ascontiguousarray(arr)
        return arr

    # ---------------------------------------------------------------- composite
    def composite(self, frame: np.ndarray, jobs: Sequence[WarpJob], inplace: bool = False
                  ) -> np.ndarray:
        """Apply ``jobs`` to a numpy frame (one upload, one launch, one download).

        Args:
            frame: ``H x W x 3`` ``uint8`` BGR.
            jobs: the frame's WarpJobs, in drawing order.
            inplace: write the result into ``frame`` and return it, instead of a new array.

        Raises:
            ValueError: ``frame`` is not ``H x W x 3`` ``uint8``.
        """
        _crop.check_frame(frame)
        if not jobs:
            return frame
        with self.device:
            src = self._upload_frame(frame)
            st = self._staged
            st.dst.data.copy_from_device_async(src.data, src.nbytes, stream=self.stream)
            self._launch_composite(src, st.dst, jobs)
            st.dst.get(stream=self.stream, out=st.pin_out, blocking=False)
            self.stream.synchronize()
            if inplace:
                if frame is self._shared:
                    self._shared_dev = None  # the host frame changes: its device copy is stale
                np.copyto(frame, st.pin_out)
                return frame
            return st.pin_out.copy()

    def composite_device(self, frame, jobs: Sequence[WarpJob]):
        """Apply ``jobs`` to a frame already on the GPU.

        Args:
            frame: ``H x W x 3`` ``uint8`` BGR CuPy array, or a torch CUDA tensor (any DLPack
                GPU array; shared, not copied).
            jobs: the frame's WarpJobs.

        Returns:
            A new device frame (a CuPy array, or a torch tensor if ``frame`` was one), ready once
            :attr:`stream` reaches this point; the input itself when there are no jobs.
        """
        if not jobs:
            return frame
        with self.device, self.stream:
            src = self._as_device_frame(frame)
            dst = cupy.empty_like(src)
            dst.data.copy_from_device_async(src.data, src.nbytes, stream=self.stream)
            self._launch_composite(src, dst, jobs)
            # Exported with the stream current, so a torch consumer waits for the kernel.
            return to_torch(dst) if _is_torch(frame) else dst

    # ---------------------------------------------------------------- crop
    def upload(self, frame: np.ndarray):
        """Copy a numpy frame to the GPU through the pinned staging buffer; returns the device
        frame (owned by this compositor; valid until the next upload or ``composite``)."""
        _crop.check_frame(frame)
        with self.device:
            return self._upload_frame(frame)

    def crop_groups(self, frame, specs: Sequence[_crop.CropSpec], dtype=np.float32) -> list:
        """Crop every ROI of every spec in one launch.

        Args:
            frame: ``H x W x 3`` ``uint8`` BGR: numpy (uploaded), CuPy or torch CUDA.
            specs: :class:`warpcam.kernels.crop.CropSpec` s (one per network).
            dtype: float32 or float16.

        Returns:
            One ``(N_k, 3, h_k, w_k)`` CuPy array per spec (torch tensors if ``frame`` was one),
            views into one buffer, computed on :attr:`stream` (synchronise it, or hand the
            result to consumers on that stream).
        """
        out_dtype = _crop.resolve_dtype(dtype)
        table, total, shapes = _src.pack_crop(specs)
        with self.device, self.stream:
            src = self._upload_frame(frame) if isinstance(frame, np.ndarray) else \
                self._as_device_frame(frame)
            out = cupy.empty((max(total, 1),), out_dtype)
            if len(table):
                most = int((table["h"] * table["w"]).max())
                d_table, = self._upload_tables([table.view(np.uint8)])
                name = "wc_crop_rois_f16" if out_dtype == np.float16 else "wc_crop_rois_f32"
                H, W = src.shape[:2]
                self._kernel(name)(
                    (-(-most // _src.CROP_THREADS), len(table)), (_src.CROP_THREADS,),
                    (src, np.int32(H), np.int32(W), d_table, np.int32(len(table)), out))
            outs = _src.split_output(out[:total], shapes)
            return [to_torch(o) for o in outs] if _is_torch(frame) else outs

    # ---------------------------------------------------------------- conversions
    def crops_to_numpy(self, crops):
        """Crops as host numpy arrays (waits for :attr:`stream`, then copies)."""
        self.stream.synchronize()
        return _convert(crops, lambda c: cupy.asnumpy(c) if isinstance(c, cupy.ndarray)
                        else self._numpy_one(c))

    def crops_to_torch(self, crops):
        """Crops as torch CUDA tensors sharing their memory (DLPack), exported with
        :attr:`stream` current so torch's stream waits for the crop launch."""
        with self.device, self.stream:
            return _convert(crops, lambda c: to_torch(c) if isinstance(c, cupy.ndarray)
                            else self._torch_one(c))


def _is_torch(obj) -> bool:
    return type(obj).__module__.startswith("torch")
