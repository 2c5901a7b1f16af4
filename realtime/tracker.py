"""Face tracking: mediapipe FaceMesh (468 mesh points + 10 iris points), track ids, One Euro
smoothing, head pose and eye openness.

Convention block:

- Input frames are ``H x W x 3`` ``uint8`` **BGR**; they are converted to RGB for mediapipe
  (mediapipe wants RGB: a peer project shipped with the channels swapped).
- Landmarks are pixel coordinates ``(x, y)``, x right, y down, pixel centres at integers.
- Head pose angles in degrees: yaw positive = the subject turns toward their left (image +x),
  pitch positive = up, roll positive = clockwise in the image.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import List, Optional

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from warpcam.core import landmarks as lm
from warpcam.realtime.smoothing import OneEuroFilter
from warpcam.core.types import Face

# Before mediapipe is imported: glog and TensorFlow's C++ logging to errors only.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _quiet_absl() -> None:
    """absl's Python logging (mediapipe's) to errors only."""
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
        absl_logging.set_stderrthreshold("error")
    except Exception:  # absl missing or another version: nothing to quiet
        pass


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence the native (C++) stderr, file descriptor 2, while mediapipe builds and starts its
    graph: it prints TFLite and absl start-up notices there (``INFO: Created TensorFlow Lite
    XNNPACK delegate``, ``inference_feedback_manager.cc``, ``landmark_projection_calculator.cc``)
    that no user can act on. Python-level errors still raise. (The CLI points descriptor 2 at
    /dev/null for its whole run, which also covers notices printed later.)"""
    try:
        os.fstat(2)
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to silence
        yield
        return
    try:
        for s in (sys.stderr, sys.__stderr__):
            try:
                s.flush()
            except Exception:
                pass
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        for s in (sys.stderr, sys.__stderr__):
            try:
                s.flush()
            except Exception:
                pass
        os.dup2(saved, 2)
        os.close(saved)


def _warm_up(mesh) -> None:
    """One blank frame through a new graph, so that its start-up (the TFLite delegates, the
    first inference) happens now, inside the silenced window, not later on a graph thread."""
    blank = np.zeros((64, 64, 3), np.uint8)
    blank.flags.writeable = False
    mesh.process(blank)

_IRIS_POINTS = lm.RIGHT_IRIS + lm.LEFT_IRIS
_EYE_CENTRE_SETS = (lm.RIGHT_EYE_UPPER + lm.RIGHT_EYE_LOWER, lm.LEFT_EYE_UPPER + lm.LEFT_EYE_LOWER)


def head_pose(points3d: np.ndarray) -> tuple:
    """Head yaw, pitch, roll in degrees from FaceMesh's 3-D landmarks.

    Args:
        points3d: ``478 x 3`` (x, y pixels; z in pixels, larger = farther from the camera).

    The face frame is built from the outer eye corners (x axis) and the forehead-chin line
    (y axis, made orthogonal to x); its normal toward the camera gives yaw and pitch.
    """
    p = np.asarray(points3d, dtype=np.float64)
    x_axis = p[lm.LEFT_EYE_OUTER] - p[lm.RIGHT_EYE_OUTER]
    x_axis /= np.linalg.norm(x_axis) + 1e-9
    y_axis = p[lm.CHIN] - p[lm.FOREHEAD]
    y_axis -= x_axis * np.dot(y_axis, x_axis)
    y_axis /= np.linalg.norm(y_axis) + 1e-9
    normal = -np.cross(x_axis, y_axis)  # toward the camera for a frontal face: (0, 0, -1)
    yaw = math.degrees(math.atan2(normal[0], -normal[2]))
    pitch = math.degrees(math.atan2(-normal[1], -normal[2]))
    roll = math.degrees(math.atan2(x_axis[1], x_axis[0]))
    return yaw, pitch, roll


def eye_openness(points: np.ndarray) -> tuple:
    """``(right, left)`` eye openness: mean lid gap over corner-to-corner width (unitless;
    about 0.25-0.35 for an open eye, below about 0.12 when closed)."""
    out = []
    for up, lo, a, b in ((lm.RIGHT_EYE_UPPER, lm.RIGHT_EYE_LOWER, lm.RIGHT_EYE_OUTER,
                          lm.RIGHT_EYE_INNER),
                         (lm.LEFT_EYE_UPPER, lm.LEFT_EYE_LOWER, lm.LEFT_EYE_OUTER,
                          lm.LEFT_EYE_INNER)):
        width = np.linalg.norm(points[a] - points[b]) + 1e-6
        gap = np.linalg.norm(points[up[3:6]] - points[lo[3:6]], axis=1).mean()
        out.append(float(gap / width))
    return tuple(out)


def iris_measures(points: np.ndarray) -> tuple:
    """``(diameters, confidences)`` per eye (right, left): iris diameter in pixels from the four
    boundary points, and a [0, 1] confidence that the iris ring is round (horizontal vs vertical
    diameter) and centred inside the eye's corner-to-corner span."""
    diams, confs = [], []
    for iris, a, b in ((lm.RIGHT_IRIS, lm.RIGHT_EYE_OUTER, lm.RIGHT_EYE_INNER),
                       (lm.LEFT_IRIS, lm.LEFT_EYE_OUTER, lm.LEFT_EYE_INNER)):
        c, p1, p2, p3, p4 = (points[i] for i in iris)
        dh = np.linalg.norm(p1 - p3)
        dv = np.linalg.norm(p2 - p4)
        d = 0.5 * (dh + dv)
        # mediapipe draws a circle even under the lids; a ring much taller than wide (or the
        # reverse) means it lost the iris. Up to 25 % is normal (small irises are quantised).
        roundness = 1.0 - min(max(abs(dh - dv) / (d + 1e-6) - 0.25, 0.0) / 0.35, 1.0)
        width = np.linalg.norm(points[a] - points[b]) + 1e-6
        axis = (points[b] - points[a]) / width
        t = np.dot(c - points[a], axis) / width  # 0 at the outer corner, 1 at the inner
        inside = 1.0 if 0.1 < t < 0.9 else 0.0
        size_ok = 1.0 if 0.2 < d / width < 0.75 else 0.0
        diams.append(float(d))
        confs.append(float(roundness * inside * size_ok))
    return tuple(diams), tuple(confs)


def _lid_openness(smoothed: np.ndarray, raw: np.ndarray) -> tuple:
    """Per-eye openness, the smaller of the smoothed and raw estimates: a closing lid is seen
    at once (the filters lag a fast blink by a frame or two), an opening one once it settles."""
    return tuple(min(a, b) for a, b in zip(eye_openness(smoothed), eye_openness(raw)))


class _Track:
    def __init__(self, track_id: int, smooth: bool):
        self.id = track_id
        self.missed = 0
        self.smooth = smooth
        # Mesh: responsive. Iris offsets (relative to the eye contour centre): smoother, since the
        # iris centre jitters by tenths of a pixel while the contour is steadier (DESIGN.md).
        self.f_mesh = OneEuroFilter(min_cutoff=1.5, beta=0.08, d_cutoff=1.0)
        self.f_iris = OneEuroFilter(min_cutoff=0.8, beta=0.04, d_cutoff=1.0)
        self.f_z = OneEuroFilter(min_cutoff=1.0, beta=0.02)
        self.centre = None
        self.size = None

    def reset(self):
        for f in (self.f_mesh, self.f_iris, self.f_z):
            f.reset()

    def filter(self, pts: np.ndarray, z: np.ndarray, t: float):
        if not self.smooth:
            return pts.copy(), z.copy()
        mesh = self.f_mesh(pts, t)
        centres = np.stack([pts[s].mean(axis=0) for s in _EYE_CENTRE_SETS])
        fcentres = np.stack([mesh[s].mean(axis=0) for s in _EYE_CENTRE_SETS])
        off = pts[_IRIS_POINTS].reshape(2, 5, 2) - centres[:, None, :]
        off = self.f_iris(off, t)
        mesh[_IRIS_POINTS] = (off + fcentres[:, None, :]).reshape(10, 2)
        return mesh, self.f_z(z, t)


class FaceTracker:
    """mediapipe FaceMesh with track ids and temporal smoothing.

    Args:
        max_faces: most faces tracked per frame.
        static_images: treat every frame as unrelated (still photos): no smoothing, no tracking.
        smooth: apply the One Euro filters (landmarks responsive, irises smoother).
        min_detection_confidence: mediapipe face detector threshold.

    ``track(image_bgr, t)`` returns a list of :class:`~warpcam.core.types.Face`, sorted by track id.
    A frame with no face returns ``[]``.
    """

    def __init__(self, max_faces: int = 1, static_images: bool = False, smooth: bool = True,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        import mediapipe as mp  # heavy import, deferred

        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        self.max_faces = max_faces
        self.static_images = static_images
        self.smooth = smooth and not static_images
        _quiet_absl()
        with _native_stderr_silenced():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static_images, max_num_faces=max_faces, refine_landmarks=True,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence)
            try:
                _warm_up(self._mesh)
            except BaseException:
                self._mesh.close()
                raise
        self._warm = False
        self._tracks: List[_Track] = []
        self._next_id = 0
        self._frame_no = 0

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def detect(self, image_bgr: np.ndarray) -> list:
        """Raw FaceMesh output: list of ``478 x 3`` float arrays (x, y, z in pixels)."""
        if (image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8
                or image_bgr.size == 0):
            raise ValueError(f"image must be a non-empty H x W x 3 uint8 BGR array, got "
                             f"{image_bgr.shape} {image_bgr.dtype}")
        h, w = image_bgr.shape[:2]
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        rgb.flags.writeable = False
        if not self._warm:  # until the first face: its landmark model prints notices too
            with _native_stderr_silenced():
                res = self._mesh.process(rgb)
            self._warm = bool(res.multi_face_landmarks)
        else:
            res = self._mesh.process(rgb)
        out = []
        for f in res.multi_face_landmarks or []:
            a = np.array([(p.x * w, p.y * h, p.z * w) for p in f.landmark], dtype=np.float64)
            if a.shape[0] == 478 and np.isfinite(a).all():
                out.append(a)
        return out

    def track(self, image_bgr: np.ndarray, t: Optional[float] = None) -> List[Face]:
        """Track faces in one frame.

        Args:
            image_bgr: ``H x W x 3`` ``uint8`` BGR frame.
            t: frame time in seconds (for the filters); defaults to ``frame_number / 30``.
        """
        if t is None:
            t = self._frame_no / 30.0
        self._frame_no += 1
        raw = self.detect(image_bgr)
        assignment = self._assign(raw)
        faces = []
        for pts3, track in zip(raw, assignment):
            xy, z = track.filter(pts3[:, :2], pts3[:, 2], t)
            p3 = np.concatenate([xy, z[:, None]], axis=1)
            yaw, pitch, roll = head_pose(p3)
            diam, conf = iris_measures(xy)
            faces.append(Face(track_id=track.id, landmarks=xy.astype(np.float32),
                              landmarks_raw=pts3[:, :2].astype(np.float32),
                              z=z.astype(np.float32), yaw=yaw, pitch=pitch, roll=roll,
                              eye_openness=_lid_openness(xy, pts3[:, :2]),
                              iris_diameter_px=diam,
                              iris_confidence=conf))
        faces.sort(key=lambda f: f.track_id)
        return faces

    def _assign(self, raw: list) -> List[_Track]:
        """Match detections to tracks by face-centre distance relative to face size (Hungarian);
        a detection far from every track (scene cut, new person) starts a new track."""
        if self.static_images:
            return [_Track(i, False) for i in range(len(raw))]
        centres = [p[:, :2].mean(axis=0) for p in raw]
        sizes = [np.ptp(p[:, 0]) + 1e-6 for p in raw]
        tracks = self._tracks
        result: List[Optional[_Track]] = [None] * len(raw)
        if tracks and raw:
            cost = np.zeros((len(raw), len(tracks)))
            for i, (c, s) in enumerate(zip(centres, sizes)):
                for j, tr in enumerate(tracks):
                    cost[i, j] = np.linalg.norm(c - tr.centre) / max(s, tr.size)
                    cost[i, j] += abs(math.log(s / tr.size))
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols):
                if cost[i, j] < 0.6:
                    result[i] = tracks[j]
                    # A large jump (a cut to another shot) restarts the filters.
                    if cost[i, j] > 0.25:
                        tracks[j].reset()
        for i in range(len(raw)):
            if result[i] is None:
                result[i] = _Track(self._next_id, self.smooth)
                self._next_id += 1
                self._tracks.append(result[i])
        for tr in self._tracks:
            tr.missed += 1
        for i, tr in enumerate(result):
            tr.missed = 0
            tr.centre, tr.size = centres[i], sizes[i]
        # Forget tracks unseen for a second; their filters hold stale state.
        self._tracks = [tr for tr in self._tracks if tr.missed <= 30]
        return result
