"""The one contract every compositor backend implements (:class:`Compositor`), and the job box
all backends skip to (:func:`job_box`).

A compositor does two things with a frame (DESIGN.md, "The frame path", item 4):

- **crop** the regions of interest the networks read (:meth:`Compositor.crop_rois`,
  :meth:`Compositor.crop_groups`), with the conventions of :mod:`warpcam.kernels.crop`: frame
  ``H x W x 3`` ``uint8`` BGR, affines crop -> frame, optional left-right flip, bilinear,
  ``border="replicate"`` or ``"constant"``; out ``(N, 3, h, w)`` RGB,
  ``(pixel / 255 - mean) / std``, float32 or float16;
- **composite** every :class:`~warpcam.core.types.WarpJob` of the frame in one pass
  (:meth:`Compositor.composite`), pixels outside every job's box byte-identical.

What the crops are, per backend (the model runtime accepts numpy arrays and torch tensors;
:meth:`Compositor.crops_to_numpy` / :meth:`Compositor.crops_to_torch` convert any of them):

======== ==================================================================================
``cpu``  numpy arrays (C-contiguous), computed with OpenCV (:func:`warpcam.kernels.crop.crop_rois`)
``torch`` torch tensors on the backend's device (``TorchCompositor(device)``)
``cuda`` CuPy arrays on the GPU for a numpy or CuPy frame (torch CUDA tensors when the frame is
         a torch tensor), views into one buffer written by one launch on the compositor's
         ``stream``, which may still be running: convert with :meth:`crops_to_torch` (shares the
         memory, ordered after the launch) or :meth:`crops_to_numpy` (waits, copies)
======== ==================================================================================

Sharing one upload (:meth:`Compositor.frame`): ``with compositor.frame(img): ...`` around the
crops and the composite of one frame lets a backend that copies frames to a device copy ``img``
once for all of them. Inside the block ``img`` must not be written except by that
``composite``; a composite with ``inplace=True`` ends the sharing. Backends that need no upload
ignore it.
"""
from __future__ import annotations

import abc
import contextlib
from typing import ClassVar, Iterator, Optional, Sequence

import numpy as np

from warpcam.core.types import WarpJob, affine_box


def job_box(job: WarpJob, frame_shape: tuple) -> Optional[tuple]:
    """The frame box a job can write: :meth:`WarpJob.frame_bbox` shrunk to the frame image of
    the crop pixels where ``alpha > 0`` grown by one crop pixel (beyond that, bilinear alpha is
    exactly 0, so the result is unchanged). ``(x0, y0, x1, y1)`` exclusive end, or ``None``.

    The one definition every backend (and the packed CUDA job table) uses, so all backends skip
    the same pixels.
    """
    box = job.frame_bbox(frame_shape)
    if box is None:
        return None
    support = job.alpha > 0
    nz_rows = np.flatnonzero(support.any(axis=1))
    if nz_rows.size == 0:
        return None
    nz_cols = np.flatnonzero(support.any(axis=0))
    # Not clamped to the crop: with alpha > 0 on the crop's edge row, bilinear sampling with the
    # zero border gives alpha > 0 up to one crop pixel beyond it, and frame_bbox keeps half of
    # that; the intersection with frame_bbox keeps exactly the frame_bbox contract.
    return affine_box(job.crop_to_frame, int(nz_cols[0]) - 1, int(nz_rows[0]) - 1,
                      int(nz_cols[-1]) + 1, int(nz_rows[-1]) + 1, frame_shape, clip=box)


def _is_torch(obj) -> bool:
    return type(obj).__module__.startswith("torch")


def _convert(crops, one):
    if isinstance(crops, (list, tuple)):
        return [one(c) for c in crops]
    return one(crops)


class Compositor(abc.ABC):
    """Base class of the compositor backends (``cpu``, ``torch``, ``cuda``).

    Subclasses set :attr:`name` and implement :meth:`composite` and :meth:`crop_groups`; they
    override :meth:`available` / :meth:`why_unavailable` when they need hardware or libraries
    that may be missing. See the module docstring for what each backend's crops are.
    """

    #: registry name (``warpcam.kernels.BACKENDS``) and what the HUD and logs show.
    name: ClassVar[str] = "base"

    # ------------------------------------------------------------------ availability
    @classmethod
    def available(cls) -> bool:
        """True when this backend can run on this machine (never raises)."""
        return True

    @classmethod
    def why_unavailable(cls) -> str:
        """One line saying why :meth:`available` is false (``""`` when it is true)."""
        return ""

    # ------------------------------------------------------------------ composite
    @abc.abstractmethod
    def composite(self, frame: np.ndarray, jobs: Sequence[WarpJob], inplace: bool = False
                  ) -> np.ndarray:
        """Apply every job of a frame, in list order (each samples the *input* frame).

        Args:
            frame: ``H x W x 3`` ``uint8`` BGR numpy array.
            jobs: the frame's :class:`~warpcam.core.types.WarpJob` s, in drawing order.
            inplace: write the result into ``frame`` and return it (no full-frame copy).

        Returns:
            ``H x W x 3`` ``uint8`` BGR numpy: a new array with ``frame`` untouched, ``frame``
            itself with ``inplace=True``, and ``frame`` itself when there are no jobs.

        Raises:
            ValueError: ``frame`` is not ``H x W x 3`` ``uint8``.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ crop service
    @abc.abstractmethod
    def crop_groups(self, frame, specs: Sequence, dtype=np.float32) -> list:
        """Crop several ROI batches of one frame (one :class:`~warpcam.kernels.crop.CropSpec`
        per network); one ``(N_k, 3, h_k, w_k)`` array per spec, in order, of the backend's
        array type (module docstring).

        Raises:
            ValueError: a bad frame, spec or dtype (see :func:`warpcam.kernels.crop.crop_rois`).
        """
        raise NotImplementedError

    def crop_rois(self, frame, affines, size, mean=0.0, std=1.0, dtype=np.float32, flip=None,
                  border: str = "replicate"):
        """Crop, normalise and batch ROIs of a frame: ``(N, 3, h, w)`` RGB, ``out[n, c, v, u] =
        (frame(A'_n (u, v, 1))[2 - c] / 255 - mean[c]) / std[c]`` (arguments and conventions
        as :func:`warpcam.kernels.crop.crop_rois`), of the backend's array type."""
        from warpcam.kernels.crop import CropSpec

        return self.crop_groups(frame, [CropSpec(affines, size, mean, std, flip, border)],
                                dtype)[0]

    @contextlib.contextmanager
    def frame(self, frame) -> Iterator:
        """Scope in which the crops and the composite of ``frame`` may share one upload of it
        (module docstring). The base class needs none: it yields ``frame`` unchanged."""
        yield frame

    # ------------------------------------------------------------------ conversions
    def crops_to_numpy(self, crops):
        """Crops of this backend (one array, or a list from :meth:`crop_groups`) as numpy
        arrays on the host, dtype kept (waits for the device where there is one)."""
        return _convert(crops, self._numpy_one)

    def crops_to_torch(self, crops):
        """Crops of this backend as torch tensors (numpy shared, not copied; device arrays
        stay on their device, shared through DLPack)."""
        return _convert(crops, self._torch_one)

    @staticmethod
    def _numpy_one(c) -> np.ndarray:
        if isinstance(c, np.ndarray):
            return c
        if _is_torch(c):
            return c.detach().cpu().numpy()
        if hasattr(c, "get"):  # CuPy
            return c.get()
        return np.asarray(c)

    @staticmethod
    def _torch_one(c):
        import torch

        if _is_torch(c):
            return c
        if isinstance(c, np.ndarray):
            return torch.from_numpy(c)
        return torch.from_dlpack(c)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
