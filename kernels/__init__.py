"""Compositor backends: apply every WarpJob of a frame in one pass.

``get_compositor(name)`` returns an object with ``composite(frame, jobs) -> frame``.
"""
from __future__ import annotations


class BackendError(RuntimeError):
    """The requested backend cannot run here (message is one line, shown to the user)."""


def get_compositor(name: str = "auto"):
    """Return a compositor.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"torch"`` or ``"cuda"``.

    Raises:
        BackendError: an explicitly requested backend is unavailable.
        ValueError: unknown name.
    """
    if name in ("auto", "cpu"):
        if name == "auto":
            try:
                from warpcam.kernels.cuda_backend import cuda_available, CudaCompositor  # noqa: F401
                if cuda_available():
                    return CudaCompositor()
            except ImportError:
                pass
        from warpcam.kernels.cpu import CpuCompositor
        return CpuCompositor()
    if name == "torch":
        try:
            from warpcam.kernels.torch_backend import TorchCompositor
        except ImportError as exc:  # pragma: no cover - torch is a base dependency
            raise BackendError(f"--backend torch needs PyTorch: {exc}") from exc
        return TorchCompositor()
    if name == "cuda":
        try:
            from warpcam.kernels.cuda_backend import cuda_available, CudaCompositor
        except ImportError as exc:
            raise BackendError(
                "--backend cuda needs CuPy and a CUDA GPU: install warpcam[cuda] "
                f"({exc})") from exc
        if not cuda_available():
            raise BackendError("--backend cuda: CuPy sees no CUDA GPU on this machine")
        return CudaCompositor()
    raise ValueError(f"unknown backend {name!r}: choose auto, cpu, torch or cuda")
