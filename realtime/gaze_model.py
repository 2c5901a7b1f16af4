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

Loading (:func:`load_gaze_model`) goes through the one model runtime
(:func:`warpcam.realtime.runtime.load_model`): the file is checked before the first frame and
before anything in it is deserialised (nothing is ever unpickled); a missing, empty, truncated,
crafted or foreign file raises :class:`GazeModelError` with a one-line reason. The runtime picks
the backend (CPU torch with a frozen trace per batch size; on a GPU torch-tensorrt fp16 with the
engine cached on disk, or torch.compile) and says which in one log line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from warpcam.core import eyes as _eyes
from warpcam.core.artifact import META_NAME, ArtifactMeta  # noqa: F401  (META_NAME re-exported)
from warpcam.realtime.runtime import LoadedModel, ModelError, load_model

#: The gaze network's crop (H x W), anchor indices and eye crop: aliases of
#: :mod:`warpcam.core.eyes` (the one definition), kept here for older callers.
CROP_H, CROP_W = _eyes.EYE_CROP_H, _eyes.EYE_CROP_W
ANCHOR_INDEX = list(_eyes.ANCHOR_INDEX)
eye_crop = _eyes.eye_crop
#: The artifact kind a gaze model's metadata must name.
MODEL_KIND = "warpcam.gaze.deepwarp"


def _default_model() -> Path:
    from importlib import resources
    return Path(str(resources.files("warpcam.models") / "gaze_deepwarp.pt2"))


#: The bundled model, used by ``--gaze-model`` without a file name.
DEFAULT_MODEL = _default_model()


class GazeModelError(ModelError):
    """A gaze model file that cannot be used (missing, empty, truncated, refused because an
    entry would be unpickled or evaluated, malformed metadata, wrong kind, crop or units, or
    outputs of the wrong shape). One-line message."""


class GazeModel:
    """A loaded gaze network: ``model(crops, angles, anchors=None) -> (flow, lcm_w, palette)``.

    Call arguments: ``crops`` ``(N, 3, 41, 51)`` float32 RGB in [0, 1] (numpy, or torch on any
    device); ``angles`` ``(N, 2)`` gaze change (pitch, yaw) degrees; ``anchors`` ``(N, 7, 2)``
    crop pixels, required when :attr:`anchors` is True (``ValueError`` otherwise). Returns numpy
    float32 ``flow`` ``(N, 41, 51, 2)`` backward flow in crop pixels, ``lcm_w`` ``(N, 41, 51)``
    palette weight and ``palette`` ``(3,)`` RGB in [0, 1].

    Attributes: ``runtime`` (:class:`~warpcam.realtime.runtime.LoadedModel`), ``artifact``
    (:class:`~warpcam.core.artifact.ArtifactMeta`), ``meta`` (its JSON dict), ``path``,
    ``device``, ``backend``, ``anchors``. Use :func:`load_gaze_model`.
    """

    def __init__(self, runtime: LoadedModel):
        self.runtime = runtime
        self.artifact: ArtifactMeta = runtime.meta
        self.meta: dict = runtime.meta.to_dict()
        self.path, self.device, self.backend = runtime.path, runtime.device, runtime.backend
        self.anchors = bool(runtime.config.get("anchors", False))

    @property
    def module(self):
        """The callable the runtime runs (trace runner, TensorRT or compiled module)."""
        return self.runtime.module

    def __call__(self, crops, angles, anchors=None):
        args = [crops, angles]
        if self.anchors:
            if anchors is None:
                raise ValueError("this gaze model needs anchors (N, 7, 2)")
            args.append(anchors)
        flow, wts, palette = self.runtime(*args)[:3]
        return flow.transpose(0, 2, 3, 1), wts[:, 0], palette


def load_gaze_model(path=None, device: str = "auto", threads: Optional[int] = 1,
                    trt_cache: Optional[str] = None) -> GazeModel:
    """Load and check a gaze model before the first frame
    (:func:`warpcam.realtime.runtime.load_model` with kind ``"warpcam.gaze.deepwarp"``).

    Args:
        path: ``.pt2`` file (default: the bundled :data:`DEFAULT_MODEL`).
        device: ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"`` or ``"cuda"``. On CUDA the
            program goes through torch-tensorrt (fp16) when it is installed, else
            torch.compile.
        threads: torch CPU threads (1 by default: the tracker runs in another thread and the
            network is too small to gain from two); ``None`` leaves torch's setting.
        trt_cache: folder for TensorRT engines (default ``~/.cache/warpcam/trt``).

    Raises:
        GazeModelError: missing, empty, truncated or foreign file, an archive refused because
            an entry would be unpickled or evaluated, malformed or wrong metadata (kind, an eye
            crop of 41 x 51, angle units degrees), or outputs of the wrong shape on a test input.
    """
    path = Path(path) if path is not None else DEFAULT_MODEL
    try:
        rt = load_model(path, kind=MODEL_KIND, device=device, threads=threads,
                        cache_dir=trt_cache, label="gaze model")
    except ModelError as exc:
        raise GazeModelError(str(exc)) from None
    m = rt.meta
    units = m.conditioning.units if m.conditioning is not None else None
    if (m.crop_h, m.crop_w) != (CROP_H, CROP_W) or units != "degrees" or m.roi != "eye":
        raise GazeModelError(f"{path}: {m.roi} crop {m.crop_h}x{m.crop_w} / angle units "
                             f"{units!r}; this warpcam needs a {CROP_H}x{CROP_W} eye crop and "
                             "degrees")
    model = GazeModel(rt)
    # One call on a blank crop: checks the outputs and warms the kernels up.
    n = 2
    try:
        flow, wts, pal = model(np.full((n, 3, CROP_H, CROP_W), 0.5, np.float32),
                               np.zeros((n, 2), np.float32),
                               np.zeros((n, 7, 2), np.float32) if model.anchors else None)
    except Exception as exc:
        msg = " ".join(str(exc).split())[:200]
        raise GazeModelError(f"{path}: the model fails on a test input "
                             f"({type(exc).__name__}: {msg})") from None
    if flow.shape != (n, CROP_H, CROP_W, 2) or wts.shape != (n, CROP_H, CROP_W) or pal.shape != (3,):
        raise GazeModelError(f"{path}: outputs {flow.shape}, {wts.shape}, {pal.shape}; expected "
                             f"flow (N, 2, {CROP_H}, {CROP_W}), weights (N, 1, ...), palette (3,)")
    return model
