"""Compositor backends: crop the ROIs of a frame and apply every WarpJob of it in one pass.

Every backend derives from :class:`~warpcam.kernels.base.Compositor` (``composite``,
``crop_rois``, ``crop_groups``, ``available``, ``why_unavailable``) and is listed once in
:data:`BACKENDS`, which both :func:`get_compositor` and the CLI's ``--backend`` choices
(:func:`backend_names`) read. Backend modules are imported only when asked for (the CUDA one
needs CuPy).
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Tuple


class BackendError(RuntimeError):
    """The requested backend cannot run here (message is one line, shown to the user)."""


class _Loader:
    """Lazy class loader of one backend: ``loader()`` imports its module and returns the class.

    Raises:
        BackendError: the module cannot be imported here (``missing`` formatted with the
            ImportError, one line).
    """

    def __init__(self, module: str, cls: str, missing: str):
        self.module, self.cls, self.missing = module, cls, missing

    def __call__(self) -> type:
        try:
            mod = importlib.import_module(self.module)
        except ImportError as exc:
            raise BackendError(self.missing.format(exc=str(exc).splitlines()[0] if str(exc)
                                                   else type(exc).__name__)) from exc
        return getattr(mod, self.cls)

    def __repr__(self) -> str:
        return f"<backend loader {self.module}.{self.cls}>"


#: The backends, in the order the CLI lists them: name -> lazy class loader.
BACKENDS: Dict[str, Callable[[], type]] = {
    "cpu": _Loader("warpcam.kernels.cpu", "CpuCompositor",
                   "--backend cpu needs OpenCV: {exc}"),
    "torch": _Loader("warpcam.kernels.torch_backend", "TorchCompositor",
                     "--backend torch needs PyTorch: {exc}"),
    "cuda": _Loader("warpcam.kernels.cuda_backend", "CudaCompositor",
                    "--backend cuda needs CuPy and a CUDA GPU: install warpcam[cuda] ({exc})"),
}
#: What ``"auto"`` tries, first available wins (the last one must always be available).
AUTO_ORDER: Tuple[str, ...] = ("cuda", "cpu")


def backend_names() -> tuple:
    """The ``--backend`` choices: ``"auto"`` then every registered backend, in order."""
    return ("auto",) + tuple(BACKENDS)


def backend_class(name: str) -> type:
    """The class of a registered backend (imports its module).

    Raises:
        BackendError: its module cannot be imported here.
        ValueError: unknown name.
    """
    try:
        loader = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}: choose "
                         f"{', '.join(backend_names()[:-1])} or {backend_names()[-1]}") from None
    return loader()


def get_compositor(name: str = "auto"):
    """Return a compositor (a :class:`~warpcam.kernels.base.Compositor`).

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"torch"`` or ``"cuda"``
            (:func:`backend_names`).

    Raises:
        BackendError: an explicitly requested backend is unavailable (one line).
        ValueError: unknown name.
    """
    if name == "auto":
        for cand in AUTO_ORDER[:-1]:
            try:
                cls = backend_class(cand)
            except BackendError:
                continue
            if cls.available():
                return cls()
        name = AUTO_ORDER[-1]
    cls = backend_class(name)
    if not cls.available():
        raise BackendError(cls.why_unavailable())
    return cls()


def __getattr__(name: str):
    # The base class on demand: importing the registry (the CLI's --help) stays light.
    if name == "Compositor":
        from warpcam.kernels.base import Compositor
        return Compositor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
