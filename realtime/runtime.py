"""One model runtime for every artifact (``torch.export`` ``.pt2`` with warpcam metadata).

:func:`load_model` checks the file (:func:`warpcam.core.artifact.check_archive`: nothing in it
is unpickled or evaluated, a crafted file is refused before any of its content is
deserialised), reads the metadata (:class:`~warpcam.core.artifact.ArtifactMeta`), loads the
program and picks a backend, saying in one log line (logger ``"warpcam"``) which:

- ``"torch-cpu"``: torch on the CPU through a frozen TorchScript trace per batch size (made in
  memory from the loaded program, never from a file);
- ``"tensorrt-fp16"``: torch-tensorrt with fp16 kernels on a GPU, the engine cached on disk
  (``$XDG_CACHE_HOME/warpcam/trt`` or ``~/.cache/warpcam/trt``, keyed by the file's sha256, the
  GPU, its compute capability and the torch and torch-tensorrt versions);
- ``"torch-compile-cuda"``: ``torch.compile`` on the GPU when torch-tensorrt is missing or fails;
- ``"torch-cuda"``: the plain graph module on the GPU when compiling fails too.

Torch's own warnings and log records during loading are not shown; every failure is a
:class:`ModelError` with a one-line message.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from warpcam.core.artifact import ArtifactError, ArtifactMeta, read_meta

log = logging.getLogger("warpcam")

BACKENDS = ("torch-cpu", "tensorrt-fp16", "torch-compile-cuda", "torch-cuda")


class ModelError(Exception):
    """A model file that cannot be used: missing, empty, not an archive, refused (an entry
    that would be unpickled or evaluated), malformed metadata, the wrong kind, or a program
    that fails to load or run. The message is one line."""


def _line(exc: BaseException) -> str:
    s = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {s[:200]}" if s else type(exc).__name__


class _DropTorch(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "torch" or record.name.startswith("torch."))


@contextlib.contextmanager
def quiet_torch():
    """Hide torch's Python warnings and its log records (torch's own stderr handler and any
    root handler) inside the block."""
    flt = _DropTorch()
    handlers = list(logging.getLogger("torch").handlers) + list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(flt)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for h in handlers:
            h.removeFilter(flt)


def sha256(path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/warpcam/trt`` (``~/.cache/warpcam/trt`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "warpcam" / "trt"


class _CpuRunner:
    """Runs the exported program on the CPU through a frozen TorchScript trace per batch size
    (made in memory from the loaded program, never from a file): the same operators without
    the graph module's per-node Python dispatch, a third less time for a small network.
    Falls back to the graph module itself if tracing fails or the trace disagrees."""

    def __init__(self, gm):
        self.gm = gm
        self._traced: dict = {}

    def __call__(self, *args):
        import torch

        key = tuple(a.shape[0] if a.dim() else -1 for a in args)
        fn = self._traced.get(key)
        if fn is None:
            try:
                with quiet_torch(), torch.no_grad():
                    fn = torch.jit.freeze(torch.jit.trace(self.gm, args, check_trace=False).eval())
                    ref = self.gm(*args)
                    got = fn(*args)
                    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
                    got = got if isinstance(got, (tuple, list)) else (got,)
                    if len(ref) != len(got) or not all(
                            torch.allclose(p, q, atol=1e-5) for p, q in zip(got, ref)):
                        raise RuntimeError("trace differs")
            except Exception as exc:  # keep working with the graph module
                log.debug("model: no TorchScript trace (%s); using the graph module", exc)
                fn = self.gm
            self._traced[key] = fn
        return fn(*args)


def _tensorrt_module(ep, path: Path, inputs: Sequence, cache_dir=None, label: str = "model"):
    """torch-tensorrt fp16 module for ``ep`` (compiled for ``inputs``: CUDA example tensors),
    from the on-disk engine cache when present; ``None`` after a one-line warning (which names
    the fallback, ``torch.compile``) when torch-tensorrt is missing or fails."""
    try:
        import torch_tensorrt  # noqa: F401  (optional, GPU only)
    except ImportError:
        log.warning("torch-tensorrt is not installed: the %s runs with torch.compile on the GPU "
                    "(pip install torch-tensorrt for the fp16 engine)", label)
        return None
    import torch

    try:
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        gpu = torch.cuda.get_device_name(0).replace(" ", "_").replace("/", "_")
        cap = "".join(map(str, torch.cuda.get_device_capability(0)))
        shapes = "-".join("x".join(map(str, t.shape[1:])) for t in inputs)
        key = "_".join([sha256(path)[:16], gpu, f"sm{cap}", f"torch{torch.__version__}",
                        f"trt{torch_tensorrt.__version__}", shapes]).replace("+", "-")
        engine = cache / f"{key}.ep"
        with quiet_torch():
            if engine.exists():
                # our own cache file, written below (not the user's model file)
                return torch_tensorrt.load(str(engine)).module()
            gm = torch_tensorrt.dynamo.compile(ep, inputs=list(inputs),
                                               enabled_precisions={torch.float16})
            try:
                cache.mkdir(parents=True, exist_ok=True)
                torch_tensorrt.save(gm, str(engine), inputs=list(inputs))
                log.debug("%s: TensorRT engine cached at %s", label, engine)
            except Exception as exc:  # an uncached engine still runs
                log.debug("%s: TensorRT engine not cached (%s)", label, _line(exc))
        return gm
    except Exception as exc:  # a failed compile must not stop the call
        log.warning("torch-tensorrt failed (%s): the %s runs with torch.compile on the GPU",
                    _line(exc)[:120], label)
        return None


def _input_specs(ep) -> List[Tuple[Tuple[Optional[int], ...], str]]:
    """``[(shape with None for dynamic dims, dtype name)]`` of the program's user inputs."""
    names = set(ep.graph_signature.user_inputs)
    out = []
    for n in ep.graph.nodes:
        if n.op == "placeholder" and n.name in names:
            v = n.meta.get("val")
            shape = tuple(int(d) if isinstance(d, int) else None for d in getattr(v, "shape", ()))
            out.append((shape, str(getattr(v, "dtype", "torch.float32")).replace("torch.", "")))
    return out


class LoadedModel:
    """A loaded, checked artifact: ``model(*inputs) -> tuple of numpy float32 arrays``.

    Attributes:
        path: the ``.pt2`` file. meta: its :class:`~warpcam.core.artifact.ArtifactMeta`.
        kind, roi, crop_h, crop_w, input, conditioning, outputs, output_names, config: from
            ``meta``.
        inputs: ``[(shape, dtype)]`` of the program's inputs, ``None`` for dynamic dims (the
            batch).
        device: ``"cpu"`` or ``"cuda"``. backend: one of :data:`BACKENDS`.
        program: the loaded ``torch.export.ExportedProgram`` (its ``state_dict``: to fine-tune from).
    """

    def __init__(self, path: Path, meta: ArtifactMeta, module, device: str, backend: str,
                 inputs, program=None):
        self.path, self.meta, self.module = Path(path), meta, module
        self.program = program
        self.device, self.backend, self.inputs = device, backend, inputs
        self.kind, self.roi = meta.kind, meta.roi
        self.crop_h, self.crop_w = meta.crop_h, meta.crop_w
        self.input, self.conditioning, self.outputs = meta.input, meta.conditioning, meta.outputs
        self.output_names, self.config = meta.output_names, meta.config

    def example_inputs(self, n: int = 2) -> List[np.ndarray]:
        """Zero inputs of batch ``n`` matching :attr:`inputs` (the image input, the first one
        with 4 dims, filled with the middle of the input range)."""
        out, image_done = [], False
        for shape, dtype in self.inputs:
            s = tuple(n if d is None else d for d in shape)
            a = np.zeros(s, np.dtype(dtype) if dtype in ("float32", "float64", "int64", "int32",
                                                         "bool") else np.float32)
            if len(s) == 4 and not image_done:
                a[...] = 0.5 * (self.input.range[0] + self.input.range[1])
                image_done = True
            out.append(a)
        return out

    def __call__(self, *inputs) -> Tuple[np.ndarray, ...]:
        """Run the program.

        Args:
            *inputs: numpy arrays or torch tensors (any device), in the program's input order
                (:attr:`inputs`); converted to float32 on :attr:`device`.

        Returns:
            One numpy float32 array per program output, in :attr:`output_names` order.
        """
        import torch

        with torch.inference_mode():
            args = []
            for x in inputs:
                t = x if isinstance(x, torch.Tensor) else torch.from_numpy(
                    np.ascontiguousarray(x, np.float32))
                args.append(t.to(device=self.device, dtype=torch.float32))
            out = self.module(*args)
            if isinstance(out, torch.Tensor):
                out = (out,)
            return tuple(np.ascontiguousarray(o.detach().float().cpu().numpy(), np.float32)
                         for o in out)

    def __repr__(self) -> str:
        return f"LoadedModel({self.kind!r}, {self.path.name}, backend={self.backend!r})"


def load_model(path, kind: Optional[str] = None, device: str = "auto", threads: Optional[int] = 1,
               cache_dir=None, label: str = "model") -> LoadedModel:
    """Load and check a model artifact before the first frame.

    Args:
        path: the ``.pt2`` file (untrusted: checked before anything is deserialised).
        kind: the required ``meta.kind`` (``None``: any).
        device: ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"`` or ``"cuda"``.
        threads: torch CPU threads on the CPU backend (``None`` leaves torch's setting).
        cache_dir: folder for TensorRT engines (default :func:`default_cache_dir`).
        label: what the file is, for messages (``"gaze model"``).

    Returns:
        A :class:`LoadedModel` (not yet called: callers run their own check on a test input).

    Raises:
        ModelError: missing or empty file, refused or malformed archive or metadata
            (:class:`~warpcam.core.artifact.ArtifactError`), another kind, or a program torch
            cannot load.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{label} {path} not found")
    if path.stat().st_size == 0:
        raise ModelError(f"{label} {path} is empty")
    try:
        meta = read_meta(path, what=label)
    except ArtifactError as exc:
        raise ModelError(str(exc)) from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the {label} ({_line(exc)})") from None
    if kind is not None and meta.kind != kind:
        raise ModelError(f"{path}: a {meta.kind!r} model, not a {kind!r} one")
    import torch

    try:
        with quiet_torch():
            ep = torch.export.load(str(path))
            inputs = _input_specs(ep)
    except Exception as exc:  # truncated or inconsistent archives fail in many ways in torch
        raise ModelError(f"{path}: cannot load the exported program ({_line(exc)})") from None
    want_cuda = torch.cuda.is_available() if device == "auto" else str(device).startswith("cuda")
    if want_cuda and not torch.cuda.is_available():
        log.warning("no CUDA device: the %s runs with torch on the CPU", label)
        want_cuda = False
        announced = True
    else:
        announced = False
    try:
        if not want_cuda:
            if threads:
                torch.set_num_threads(threads)
            with quiet_torch():
                module = _CpuRunner(ep.module())
            model = LoadedModel(path, meta, module, "cpu", "torch-cpu", inputs, ep)
            if not announced:
                n = torch.get_num_threads()
                log.info("%s %s: torch on the CPU (%d thread%s)", label, path.name, n,
                         "" if n == 1 else "s")
            return model
        model = LoadedModel(path, meta, None, "cuda", "torch-cuda", inputs, ep)
        example = [torch.from_numpy(a).float().cuda() for a in model.example_inputs(2)]
        trt = _tensorrt_module(ep, path, example, cache_dir, label)
        if trt is not None:
            model.module, model.backend = trt, "tensorrt-fp16"
            log.info("%s %s: TensorRT fp16 on %s", label, path.name, torch.cuda.get_device_name(0))
            return model
        with quiet_torch():
            gm = ep.module().to("cuda")
        try:
            with quiet_torch():
                compiled = torch.compile(gm)
                with torch.inference_mode():
                    compiled(*example)  # compiles now, not on the first frame
            model.module, model.backend = compiled, "torch-compile-cuda"
        except Exception as exc:
            log.warning("torch.compile failed (%s): the %s runs with torch on the GPU",
                        _line(exc)[:120], label)
            model.module = gm
        return model
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: cannot prepare the program ({_line(exc)})") from None
