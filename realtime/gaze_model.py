"""Model-driven gaze redirection: the DeepWarp network of ``training/gaze`` (exported as a
``torch.export`` ``.pt2`` program) turned into per-eye :class:`~warpcam.core.types.WarpJob` s.

This module never imports ``training/``: the artifact carries everything (graph, weights and a
JSON metadata extra file ``warpcam_meta.json``).

Convention block:

- Eye ROI: the landmark-driven effect's (:meth:`warpcam.realtime.gaze.GazeCorrector.eye_roi`, DeepWarp's
  crop: centred on the eye contour, 2x the corner-to-corner width, 0.8 as high, rotated with the
  eye axis), sampled at ``41 x 51`` (H x W). The subject's **left** eye is mirrored left-right
  before the network (its yaw negated) so one network serves both eyes; its flow is mirrored
  back and its x component negated.
- Network input: ``(N, 3, 41, 51)`` float32 RGB in [0, 1]; ``(N, 2)`` gaze change
  ``(pitch, yaw)`` degrees (pitch up, yaw toward crop +x); optionally ``(N, 7, 2)`` anchors.
- Network output: backward flow in crop pixels ``(N, 2, 41, 51)`` (the ``WarpJob.flow``
  convention), the LCM palette weight ``(N, 1, 41, 51)`` and the palette colour (RGB, [0, 1]).
  The compositor samples the *frame* at full resolution through the flow (no 41 x 51 paste).
- Fades, eye contact and the per-eye strength are :class:`~warpcam.realtime.gaze.GazeCorrector`'s
  (head turn, gaze offset, blink, iris reliability, occluders via
  :func:`~warpcam.realtime.gaze.eye_visibility`): the angle given to the network is the requested change
  times the fade.

Loading (:func:`load_gaze_model`) checks the file before the first frame: a missing, empty,
truncated or foreign file raises :class:`GazeModelError` with the reason. On a GPU the program
is compiled with torch-tensorrt (fp16; the engine is cached on disk keyed by the model hash, the
GPU and the library versions) when installed, else it runs with torch on the GPU after a
one-line notice.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np

from warpcam.core import landmarks as lm
from warpcam.core.geometry import roi_affine, to_crop

log = logging.getLogger("warpcam")

CROP_H, CROP_W = 41, 51
META_NAME = "warpcam_meta.json"
MODEL_KIND = "warpcam.gaze.deepwarp"
#: The committed model, used by ``--gaze-model`` without a file name.
DEFAULT_MODEL = Path(str(resources.files("warpcam.models") / "gaze_deepwarp.pt2"))
#: Indices of the 7 anchors in the 19 crop landmarks (upper lid 9, lower lid 9, iris centre).
ANCHOR_INDEX = [0, 3, 5, 8, 14, 12, 18]


class GazeModelError(Exception):
    """A gaze model file that cannot be used (missing, truncated, wrong kind, bad outputs)."""


def eye_crop(pts: np.ndarray, side: str):
    """The network's view of one eye.

    Args:
        pts: ``478 x 2`` frame-pixel landmarks.
        side: ``"right"`` or ``"left"`` (the subject's).

    Returns:
        ``(A, flip, crop_landmarks, eye_w, axis_angle)``: ``A`` the 2 x 3 crop -> frame affine of
        the unflipped 41 x 51 crop; ``flip`` (True for the left eye); ``crop_landmarks``
        ``(19, 2)`` in the network's (flipped) crop pixels: upper lid 9 and lower lid 9 from the
        outer to the inner corner, then the iris centre; the corner-to-corner width (frame px)
        and the eye-axis angle (radians).
    """
    from warpcam.core.eyes import eye_roi
    centre, angle, eye_w = eye_roi(pts, side)
    A = roi_affine(centre, angle, 2.0 * eye_w, 1.6 * eye_w, CROP_W, CROP_H)
    ix = lm.eye_indices(side)
    crop_pts = to_crop(pts[ix["upper"] + ix["lower"] + ix["iris"][:1]], A)
    flip = side == "left"
    if flip:
        crop_pts[:, 0] = (CROP_W - 1) - crop_pts[:, 0]
    return A, flip, crop_pts.astype(np.float32), eye_w, angle


def _read_meta(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("extra/" + META_NAME)
                     or n.endswith("/" + META_NAME) or n == META_NAME]
            if not names:
                raise GazeModelError(f"{path}: a .pt2 archive without {META_NAME}: not a warpcam "
                                     "gaze model (export it with `python -m warpcam.training.gaze.export`)")
            return json.loads(z.read(names[0]).decode("utf-8"))
    except zipfile.BadZipFile as exc:
        raise GazeModelError(f"{path}: not a .pt2 archive (truncated or wrong kind): {exc}") \
            from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise GazeModelError(f"{path}: unreadable metadata {META_NAME}: {exc}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class GazeModel:
    """A loaded gaze network: ``model(crops, angles, anchors=None) -> (flow, lcm_w, palette)``
    with numpy in and out (``flow`` ``(N, h, w, 2)`` crop pixels, ``lcm_w`` ``(N, h, w)``,
    ``palette`` ``(3,)`` RGB in [0, 1]). Use :func:`load_gaze_model`."""

    def __init__(self, path: Path, module, meta: dict, device: str, backend: str):
        self.path, self.module, self.meta = path, module, meta
        self.device, self.backend = device, backend
        self.anchors = bool(meta.get("config", {}).get("anchors", False))

    def __call__(self, crops: np.ndarray, angles: np.ndarray, anchors: Optional[np.ndarray] = None):
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(crops, np.float32)).to(self.device)
            a = torch.from_numpy(np.ascontiguousarray(angles, np.float32)).to(self.device)
            args = [x, a]
            if self.anchors:
                if anchors is None:
                    raise ValueError("this gaze model needs anchors (N, 7, 2)")
                args.append(torch.from_numpy(np.ascontiguousarray(anchors, np.float32)).to(self.device))
            flow, wts, palette = self.module(*args)
            flow = flow.float().permute(0, 2, 3, 1).cpu().numpy()
            wts = wts.float()[:, 0].cpu().numpy()
            palette = palette.float().cpu().numpy()
        return flow, wts, palette


def load_gaze_model(path=None, device: str = "auto", threads: Optional[int] = 1,
                    trt_cache: Optional[str] = None) -> GazeModel:
    """Load and check a gaze model before the first frame.

    Args:
        path: ``.pt2`` file (default: the committed :data:`DEFAULT_MODEL`).
        device: ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"`` or ``"cuda"``. On CUDA the
            program goes through torch-tensorrt (fp16) when it is installed.
        threads: torch CPU threads (1 by default: the tracker runs in another thread and the
            network is too small to gain from two); ``None`` leaves torch's setting.
        trt_cache: folder for TensorRT engines (default ``~/.cache/warpcam/trt``).

    Raises:
        GazeModelError: missing, empty, truncated or foreign file, wrong metadata, or outputs of
            the wrong shape.
    """
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise GazeModelError(f"gaze model {path} not found")
    if path.stat().st_size == 0:
        raise GazeModelError(f"gaze model {path} is empty")
    meta = _read_meta(path)
    if meta.get("kind") != MODEL_KIND:
        raise GazeModelError(f"{path}: a {meta.get('kind')!r} model, not a {MODEL_KIND!r} one")
    crop = meta.get("crop", {})
    if [crop.get("h"), crop.get("w")] != [CROP_H, CROP_W] or meta.get("angle_units") != "degrees":
        raise GazeModelError(f"{path}: crop {crop} / angle units {meta.get('angle_units')!r}; "
                             f"this warpcam needs a {CROP_H}x{CROP_W} eye crop and degrees")
    import torch

    try:
        ep = torch.export.load(str(path))
    except Exception as exc:  # truncated archives fail in many ways inside torch
        raise GazeModelError(f"{path}: cannot load the exported program "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    want_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if want_cuda and not torch.cuda.is_available():
        log.warning("no CUDA device: the gaze model runs with torch on the CPU")
        want_cuda = False
    module, backend, dev = None, "torch-cpu", "cpu"
    if want_cuda:
        dev = "cuda"
        module = _tensorrt_module(ep, path, meta, trt_cache)
        if module is not None:
            backend = "tensorrt-fp16"
        else:
            backend = "torch-cuda"
            module = ep.module().to(dev)
    else:
        if threads:
            torch.set_num_threads(threads)
        module = _CpuRunner(ep.module())
    model = GazeModel(path, module, meta, dev, backend)
    # One call on a blank crop: checks the outputs and warms the kernels up.
    n = 2
    try:
        flow, wts, pal = model(np.full((n, 3, CROP_H, CROP_W), 0.5, np.float32),
                               np.zeros((n, 2), np.float32),
                               np.zeros((n, 7, 2), np.float32) if model.anchors else None)
    except Exception as exc:
        raise GazeModelError(f"{path}: the model fails on a test input "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if flow.shape != (n, CROP_H, CROP_W, 2) or wts.shape != (n, CROP_H, CROP_W) or pal.shape != (3,):
        raise GazeModelError(f"{path}: outputs {flow.shape}, {wts.shape}, {pal.shape}; expected "
                             f"flow (N, 2, {CROP_H}, {CROP_W}), weights (N, 1, ...), palette (3,)")
    return model


class _CpuRunner:
    """Runs the exported program on the CPU through a frozen TorchScript trace per batch size
    (made in memory from the loaded program, never from a file): the same operators without
    the graph module's per-node Python dispatch, a third less time for this small network.
    Falls back to the graph module itself if tracing fails."""

    def __init__(self, gm):
        self.gm = gm
        self._traced: dict = {}

    def __call__(self, *args):
        import torch

        key = tuple(a.shape[0] for a in args)
        fn = self._traced.get(key)
        if fn is None:
            try:
                import warnings
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    fn = torch.jit.freeze(torch.jit.trace(self.gm, args, check_trace=False).eval())
                    ref = self.gm(*args)
                    if not all(torch.allclose(p, q, atol=1e-5) for p, q in zip(fn(*args), ref)):
                        raise RuntimeError("trace differs")
            except Exception as exc:  # keep working with the graph module
                log.debug("gaze model: no TorchScript trace (%s); using the graph module", exc)
                fn = self.gm
            self._traced[key] = fn
        return fn(*args)


def _tensorrt_module(ep, path: Path, meta: dict, cache_dir: Optional[str]):
    """torch-tensorrt fp16 module for ``ep``, from the on-disk engine cache when present; ``None``
    (after a one-line notice) when torch-tensorrt is missing or fails."""
    try:
        import torch_tensorrt  # noqa: F401  (optional, GPU only)
    except ImportError:
        log.warning("torch-tensorrt is not installed: the gaze model runs with torch on the GPU "
                    "(pip install torch-tensorrt for the fp16 engine)")
        return None
    import torch

    try:
        cache = Path(cache_dir or os.path.expanduser("~/.cache/warpcam/trt"))
        gpu = torch.cuda.get_device_name(0).replace(" ", "_")
        key = "_".join([_sha256(path)[:16], gpu, f"sm{''.join(map(str, torch.cuda.get_device_capability(0)))}",
                        f"torch{torch.__version__}", f"trt{torch_tensorrt.__version__}"])
        engine = cache / f"{key}.ep"
        n = 2
        inputs = [torch.zeros(n, 3, CROP_H, CROP_W, device="cuda"), torch.zeros(n, 2, device="cuda")]
        if meta.get("config", {}).get("anchors"):
            inputs.append(torch.zeros(n, 7, 2, device="cuda"))
        if engine.exists():
            return torch_tensorrt.load(str(engine)).module()
        gm = torch_tensorrt.dynamo.compile(ep, inputs=inputs, enabled_precisions={torch.float16})
        cache.mkdir(parents=True, exist_ok=True)
        torch_tensorrt.save(gm, str(engine), inputs=inputs)
        log.info("gaze model: TensorRT engine cached at %s", engine)
        return gm
    except Exception as exc:  # a failed compile must not stop the call
        log.warning("torch-tensorrt failed (%s): the gaze model runs with torch on the GPU",
                    str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
        return None
