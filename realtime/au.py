"""Facial action units (AUs) from the 478 FaceMesh landmarks, on OpenFace's 0-5 intensity scale.

Runtime floor: imports :mod:`warpcam.core` and :mod:`warpcam.realtime.tracker` only.

How a face is measured (``docs/au.md`` has the full table):

1. **Head frame.** The 3-D landmarks (``x, y`` pixels, ``z`` pixels, :class:`~warpcam.core.types.Face`)
   are rotated into a frame fixed to the skull and scaled to one unit = the distance between
   the two outer eye corners. The frame uses only points that no facial muscle moves much
   (:data:`RIGID_PAIRS` for the left-right axis, :data:`RIGID_MIDLINE` forehead-to-nose for the
   up-down axis, both orthogonalised), so head yaw, pitch, roll and face size drop out.
2. **Measures.** Each AU reads one signed distance in that frame (:data:`AU_DEFINITIONS`),
   oriented so that the action makes it larger (for example AU12: how far the mouth corners sit
   above the lip centre, plus how much wider the mouth is).
3. **Neutral.** The measure of the same face at rest is subtracted. For a still image (or
   ``t=None``) that is the population neutral (:data:`POPULATION_NEUTRAL`, the median over the
   neutral faces of LFW). In video each track keeps a history and uses an *adaptive lower
   percentile* (:class:`AUEstimator`): the 10th percentile of its last 30 s of frames, blended
   with the population neutral while there are few frames, and kept within a bounded distance
   of the population neutral so that a person who smiles for a whole clip is not taken to be
   neutral.
4. **Scale.** ``intensity = clip(gain * (measure - neutral), 0, 5)``; the gains map a typical
   full action (the median of a dataset class that shows it, ``docs/au.md``) to about 3, the
   middle of OpenFace's scale.

The ``smile`` score is a logistic of AU12 + AU6 / 4, in ``[0, 1]`` (0.5 at the smile / no-smile
boundary fitted on GENKI-4K).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Tuple

import numpy as np

from warpcam.core import eyes as _eyes
from warpcam.core.types import Face

__all__ = ["AU_NAMES", "AU_DEFINITIONS", "AUResult", "AUEstimator", "measure", "head_frame",
           "prepare_image", "estimate_image", "POPULATION_NEUTRAL", "GAINS"]

#: The AUs estimated, in OpenFace 2.0's column order (``AU01_r`` ... ``AU45_r``).
AU_NAMES: Tuple[str, ...] = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10",
                             "AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26",
                             "AU45")

# ---------------------------------------------------------------------------------------------
# Landmarks (mediapipe FaceMesh indices; "right"/"left" are the subject's sides).
# ---------------------------------------------------------------------------------------------
#: symmetric pairs (subject's right, left) that no muscle moves much: eye corners, temples,
#: cheekbone contour. Their mean difference gives the head's left-right axis.
RIGID_PAIRS = ((33, 263), (133, 362), (127, 356), (234, 454), (93, 323))
#: forehead, glabella and nose bridge to the nose tip (the head's midline, top to bottom).
RIGID_MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4)
EYE_OUTER = (33, 263)
EYE_INNER = (133, 362)
BROW_INNER = ((107, 55), (336, 285))           # upper and lower contour, innermost points
BROW_MID = ((105, 66, 52, 65), (334, 296, 282, 295))
BROW_OUTER = ((70, 63, 46, 53), (300, 293, 276, 283))
LID_UPPER = (159, 386)                           # upper lid centre (right, left)
LID_LOWER = (145, 374)                           # lower lid centre
CHEEK = ((50, 101, 118, 117), (280, 330, 347, 346))  # infra-orbital cheek, under each eye
ALAE = (98, 327, 64, 294)                        # nostril wings
SUBNASALE = 2
MOUTH_CORNERS = (61, 291)
UPPER_LIP_TOP = (0, 37, 267)                     # outer upper lip (philtrum peak, cupid's bow)
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14
LOWER_LIP_BOTTOM = 17
CHIN = 152


def head_frame(points3d: np.ndarray) -> np.ndarray:
    """The landmarks in the head frame: ``478 x 3``, origin at the rigid points' centroid, x
    toward the subject's left (image +x for a frontal face), y down (forehead to chin), z away
    from the camera; one unit = the 3-D distance between the outer eye corners.

    Args:
        points3d: ``478 x 3`` (x, y, z pixels, as :class:`~warpcam.core.types.Face` carries them).
    """
    p = np.asarray(points3d, dtype=np.float64)
    right = p[[a for a, _ in RIGID_PAIRS]]
    left = p[[b for _, b in RIGID_PAIRS]]
    x = (left - right).sum(axis=0)
    x /= np.linalg.norm(x) + 1e-12
    mid = p[list(RIGID_MIDLINE)]
    # the midline's direction (top to bottom) by PCA, oriented forehead -> nose
    c = mid - mid.mean(axis=0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    y = vt[0] * (1.0 if np.dot(vt[0], mid[-1] - mid[0]) > 0 else -1.0)
    y -= x * np.dot(y, x)
    y /= np.linalg.norm(y) + 1e-12
    z = np.cross(x, y)  # x right, y down -> z away from the camera (right-handed)
    rot = np.stack([x, y, z])
    origin = np.concatenate([right, left, mid]).mean(axis=0)
    scale = np.linalg.norm(p[EYE_OUTER[1]] - p[EYE_OUTER[0]]) + 1e-9
    return (p - origin) @ rot.T / scale


def image_frame(points3d: np.ndarray) -> np.ndarray:
    """The landmarks in the face's image plane: ``478 x 2``, rotated so the outer eye corners
    are level (roll removed), origin at their midpoint, one unit = their distance once corrected
    for yaw; vertical distances are corrected for pitch (``cos yaw / cos pitch`` of the head
    frame's angles). Brow, lid and jaw measures read this frame: on LFW they separate
    expressions better than the full 3-D rotation, whose mesh depth is the least certain
    coordinate FaceMesh gives (docs/au.md)."""
    p = np.asarray(points3d, dtype=np.float64)
    a = p[EYE_OUTER[1], :2] - p[EYE_OUTER[0], :2]
    d = math.hypot(a[0], a[1]) + 1e-9
    c, s = a / d
    rot = np.array([[c, s], [-s, c]])
    q = (p[:, :2] - 0.5 * (p[EYE_OUTER[0], :2] + p[EYE_OUTER[1], :2])) @ rot.T / d
    yaw, pitch = _frame_angles(p)
    q[:, 1] *= math.cos(yaw) / max(math.cos(pitch), 0.5)
    return q


def _frame_angles(p: np.ndarray) -> Tuple[float, float]:
    """Yaw and pitch (radians) of the rigid head frame (:func:`head_frame`)."""
    right = p[[a for a, _ in RIGID_PAIRS]]
    left = p[[b for _, b in RIGID_PAIRS]]
    x = (left - right).sum(axis=0)
    x /= np.linalg.norm(x) + 1e-12
    yaw = math.asin(float(np.clip(x[2], -0.9, 0.9)))
    mid = p[list(RIGID_MIDLINE)]
    _, _, vt = np.linalg.svd(mid - mid.mean(axis=0), full_matrices=False)
    y = vt[0] * (1.0 if np.dot(vt[0], mid[-1] - mid[0]) > 0 else -1.0)
    pitch = math.asin(float(np.clip(y[2], -0.9, 0.9)))
    return yaw, pitch


def _my(q: np.ndarray, idx) -> float:
    return float(q[list(idx), 1].mean())


def measure(points3d: np.ndarray) -> Dict[str, float]:
    """The raw signed measure of every AU (units of the outer-eye-corner distance, oriented so
    that the action makes it larger); see :data:`AU_DEFINITIONS`. Brows, lids, cheeks, nose,
    chin and jaw are read in :func:`image_frame`, the mouth corners and lips in
    :func:`head_frame`."""
    p = np.asarray(points3d, dtype=np.float64)
    q = image_frame(p)      # 2-D, pose-corrected
    h = head_frame(p)       # 3-D
    m: Dict[str, float] = {}
    eye_y = _my(q, EYE_OUTER + EYE_INNER)
    # brows: height above the eye-corner line (y is down)
    m["AU01"] = eye_y - _my(q, BROW_INNER[0] + BROW_INNER[1])
    m["AU02"] = eye_y - _my(q, BROW_OUTER[0] + BROW_OUTER[1])
    brow_h = eye_y - _my(q, BROW_INNER[0] + BROW_INNER[1] + BROW_MID[0] + BROW_MID[1])
    brow_gap = float(abs(q[BROW_INNER[1][1], 0] - q[BROW_INNER[0][1], 0]))
    m["AU04"] = -brow_h - 0.5 * brow_gap
    # eyes: lids against the corner midpoint of the same eye
    up, lo, gap = [], [], []
    for s, (o, i) in enumerate(zip(EYE_OUTER, EYE_INNER)):
        cy = 0.5 * (q[o, 1] + q[i, 1])
        up.append(cy - q[LID_UPPER[s], 1])
        lo.append(cy - q[LID_LOWER[s], 1])
        gap.append(q[LID_LOWER[s], 1] - q[LID_UPPER[s], 1])
    m["AU05"] = float(np.mean(up))
    m["AU07"] = float(np.mean(lo))
    m["AU45"] = -float(np.mean(gap))
    m["AU06"] = eye_y - _my(q, CHEEK[0] + CHEEK[1])
    # nose
    m["AU09"] = -(_my(q, ALAE) - float(q[list(RIGID_MIDLINE[4:6]), 1].mean()))
    # mouth (3-D head frame)
    m["AU10"] = -(_my(h, UPPER_LIP_TOP) - float(h[SUBNASALE, 1]))
    centre_y = 0.5 * (h[UPPER_LIP_INNER, 1] + h[LOWER_LIP_INNER, 1])
    lift = float(centre_y - h[list(MOUTH_CORNERS), 1].mean())
    width = float(h[MOUTH_CORNERS[1], 0] - h[MOUTH_CORNERS[0], 0])
    # corner height under the eyes: AU12 pulls the corners obliquely up toward the cheekbone
    corner_eye = float(h[list(EYE_OUTER), 1].mean() - h[list(MOUTH_CORNERS), 1].mean())
    m["AU12"] = lift + 0.5 * width + 0.5 * corner_eye
    m["AU15"] = -lift
    depth = float(h[list(MOUTH_CORNERS), 2].mean()
                  - 0.5 * (h[UPPER_LIP_TOP[0], 2] + h[LOWER_LIP_BOTTOM, 2]))
    m["AU14"] = depth + 0.25 * width
    m["AU20"] = width - 2.0 * max(lift, 0.0)
    m["AU23"] = -float((h[UPPER_LIP_INNER, 1] - h[UPPER_LIP_TOP[0], 1])
                       + (h[LOWER_LIP_BOTTOM, 1] - h[LOWER_LIP_INNER, 1]))
    # chin, lips apart, jaw (2-D)
    m["AU17"] = -float(q[CHIN, 1] - q[LOWER_LIP_BOTTOM, 1])
    m["AU25"] = float(q[LOWER_LIP_INNER, 1] - q[UPPER_LIP_INNER, 1])
    m["AU26"] = float(q[LOWER_LIP_INNER, 1] - q[SUBNASALE, 1])
    return {k: m[k] for k in AU_NAMES}


# ---------------------------------------------------------------------------------------------
# Population neutral and gains (fitted by ``python -m benchmarks.au_eval --fit``; docs/au.md)
# ---------------------------------------------------------------------------------------------
#: median measure over the 2,178 neutral faces of LFW (``lfw_expressions``, emotion
#: ``neutral``); AU25 (lips part) uses a lips-closed gap of 0.02 instead, since many "neutral"
#: news photos are taken mid-word
POPULATION_NEUTRAL: Dict[str, float] = {
    "AU01": 0.1854, "AU02": 0.1804, "AU04": -0.3563, "AU05": 0.0581, "AU06": -0.2772,
    "AU07": -0.0338, "AU09": -0.4994, "AU10": -0.1799, "AU12": -0.0835, "AU14": 0.3007,
    "AU15": -0.0431, "AU17": -0.3325, "AU20": 0.4607, "AU23": -0.1244, "AU25": 0.0200,
    "AU26": 0.3175, "AU45": -0.0915}
#: intensity units per measure unit: 1.25 / (P90 - P50) of the same neutral faces, so a neutral
#: face at the population's 90th percentile reads 1.25; AU25: 20 (a gap of 0.145 eye widths,
#: a clearly open mouth, reads 2.5)
GAINS: Dict[str, float] = {
    "AU01": 18.4, "AU02": 28.6, "AU04": 21.8, "AU05": 80.2, "AU06": 46.0, "AU07": 98.7,
    "AU09": 29.3, "AU10": 29.0, "AU12": 18.7, "AU14": 40.3, "AU15": 51.5, "AU17": 12.3,
    "AU20": 22.6, "AU23": 38.6, "AU25": 20.0, "AU26": 10.8, "AU45": 42.4}

#: one line per AU: (FACS name, what is measured); the long form is in docs/au.md
AU_DEFINITIONS: Dict[str, Tuple[str, str]] = {
    "AU01": ("inner brow raiser", "height of the inner brow ends (107/55, 336/285)"),
    "AU02": ("outer brow raiser", "height of the outer brow thirds (70/63/46/53, 300/293/276/283)"),
    "AU04": ("brow lowerer", "lowering of inner+middle brow plus half the narrowing of the "
                             "inner-brow gap (55-285)"),
    "AU05": ("upper lid raiser", "upper lid centre (159, 386) above its eye's corner midpoint"),
    "AU06": ("cheek raiser", "height of the infra-orbital cheek (50/101/118/117, 280/330/347/346)"),
    "AU07": ("lid tightener", "lower lid centre (145, 374) rising toward the corner midpoint"),
    "AU09": ("nose wrinkler", "nostril wings (98/327/64/294) rising toward the nose bridge "
                              "(168, 6)"),
    "AU10": ("upper lip raiser", "upper lip top (0/37/267) rising toward the subnasale (2)"),
    "AU12": ("lip corner puller", "mouth corners (61, 291) above the lip centre (13/14), plus "
                                  "half the mouth width, plus half the corners' height "
                                  "relative to the outer eye corners (33, 263)"),
    "AU14": ("dimpler", "mouth corners set back in depth from the lip centres (0, 17) plus a "
                        "quarter of the width"),
    "AU15": ("lip corner depressor", "mouth corners below the lip centre (minus AU12's lift)"),
    "AU17": ("chin raiser", "lower lip (17) to chin (152) distance shrinking"),
    "AU20": ("lip stretcher", "mouth width minus twice the corner lift (stretch without "
                              "raising)"),
    "AU23": ("lip tightener", "red-lip thinning: (13 - 0) + (17 - 14) shrinking"),
    "AU25": ("lips part", "inner lip gap (13-14)"),
    "AU26": ("jaw drop", "subnasale (2) to lower inner lip (14) distance"),
    "AU45": ("blink", "lid gap (159-145, 386-374) closing"),
}

#: per-track calibration: percentile, window (s), prior weight (frames), how far (intensity
#: units) a person's neutral may sit from the population's, poses that enter the history
CAL_PERCENTILE = 10.0
CAL_WINDOW_S = 30.0
CAL_PRIOR_FRAMES = 30
CAL_BOUND = 1.0
CAL_MAX_YAW, CAL_MAX_PITCH = 30.0, 25.0
#: smile = sigmoid(SMILE_SLOPE * (AU12 + 0.25 AU6 - SMILE_CENTRE)), centre fitted on GENKI-4K
SMILE_CENTRE, SMILE_SLOPE = 1.95, 2.0


@dataclass
class AUResult:
    """What the estimator reads from one face.

    Attributes:
        intensities: ``{"AU01": ..., ..., "AU45": ...}`` on OpenFace's 0-5 scale.
        smile: smile score in ``[0, 1]`` (0.5 = the fitted smile / no-smile boundary).
        gaze: ``(pitch, yaw)`` degrees of the gaze in the camera frame (head pose plus the
            eye-in-head angle of :func:`warpcam.core.eyes.eye_in_head_angles`, both eyes
            averaged); warpcam's convention: pitch positive = up, yaw positive = toward the
            subject's left.
        pose: ``(Rx, Ry, Rz)`` radians, OpenFace's ``pose_R*``: right-handed rotations about the
            camera axes x right, y down, z forward (Rx > 0 = head pitched down, Ry > 0 = turned
            toward the subject's right, Rz > 0 = rolled clockwise in the image).
        raw: the raw measures (:func:`measure`) and ``neutral`` the neutral they were compared
            with (for debugging and plots).
        track_id: the face's track id.
        confidence: ``[0, 1]``: 1 for a face with at least 40 px between the outer eye
            corners and within 45 degrees of frontal, less for smaller or more turned faces
            (FaceMesh reports no score of its own).
    """

    intensities: Dict[str, float]
    smile: float
    gaze: Tuple[float, float]
    pose: Tuple[float, float, float]
    raw: Dict[str, float] = field(default_factory=dict)
    neutral: Dict[str, float] = field(default_factory=dict)
    track_id: int = -1
    confidence: float = 1.0

    @property
    def gaze_angle(self) -> Tuple[float, float]:
        """OpenFace's ``(gaze_angle_x, gaze_angle_y)`` radians: x positive = looking toward
        image +x (the subject's left), y positive = looking down."""
        return (math.radians(self.gaze[1]), -math.radians(self.gaze[0]))


def _points3d(face: Face) -> np.ndarray:
    return np.concatenate([np.asarray(face.landmarks, np.float64),
                           np.asarray(face.z, np.float64)[:, None]], axis=1)


def _gaze(face: Face) -> Tuple[float, float]:
    pts = np.asarray(face.landmarks, np.float64)
    angles, weights = [], []
    for s, side in enumerate(("right", "left")):
        d = face.iris_diameter_px[s] if face.iris_diameter_px[s] > 0 else 0.0
        if d <= 0:
            continue
        angles.append(_eyes.eye_in_head_angles(pts, side, d))
        weights.append(max(float(face.iris_confidence[s]), 1e-3))
    eye = (np.average(angles, axis=0, weights=weights) if angles else np.zeros(2))
    return float(face.pitch + eye[0]), float(face.yaw + eye[1])


def _pose(face: Face) -> Tuple[float, float, float]:
    return (-math.radians(face.pitch), -math.radians(face.yaw), math.radians(face.roll))


def _confidence(face: Face) -> float:
    p = np.asarray(face.landmarks, np.float64)
    iod = float(np.linalg.norm(p[EYE_OUTER[1]] - p[EYE_OUTER[0]]))
    turned = max(abs(face.yaw), abs(face.pitch))
    return float(np.clip(iod / 40.0, 0.0, 1.0) * np.clip((75.0 - turned) / 30.0, 0.0, 1.0))


def intensities(raw: Dict[str, float], neutral: Dict[str, float]) -> Dict[str, float]:
    """``clip(gain * (raw - neutral), 0, 5)`` per AU."""
    return {k: float(min(max(GAINS[k] * (raw[k] - neutral[k]), 0.0), 5.0)) for k in AU_NAMES}


def smile_score(ints: Dict[str, float]) -> float:
    s = ints["AU12"] + 0.25 * ints["AU06"]
    return float(1.0 / (1.0 + math.exp(-SMILE_SLOPE * (s - SMILE_CENTRE))))


class _TrackNeutral:
    """One track's history of raw measures and its adaptive neutral."""

    def __init__(self):
        self.times: Deque[float] = deque()
        self.rows: Deque[np.ndarray] = deque()
        self._cache: Optional[np.ndarray] = None
        self._since = 0

    def add(self, t: float, row: np.ndarray) -> None:
        self.times.append(t)
        self.rows.append(row)
        while self.times and self.times[0] < t - CAL_WINDOW_S:
            self.times.popleft()
            self.rows.popleft()
        self._since += 1

    def neutral(self, pop: np.ndarray, bound: np.ndarray) -> np.ndarray:
        n = len(self.rows)
        if n == 0:
            return pop
        if self._cache is None or self._since >= 5 or n < 50:  # percentiles every 5th frame
            low = np.percentile(np.stack(self.rows), CAL_PERCENTILE, axis=0)
            w = n / (n + CAL_PRIOR_FRAMES)
            self._cache = pop + w * np.clip(low - pop, -bound, bound)
            self._since = 0
        return self._cache


class AUEstimator:
    """Action-unit intensities of tracked faces, with per-track neutral calibration.

    Args:
        calibrate: keep a per-track neutral (video); ``False`` always uses the population
            neutral (still images).
        percentile, window_s, prior_frames, bound: the calibration's settings (module
            constants ``CAL_*``; docs/au.md).

    ``estimate(face, t)``: with ``t=None`` (a still image) the population neutral is used and
    nothing is recorded. With a time, the face's measures join its track's history (``face.
    track_id``) when the head is within 30 degrees yaw / 25 degrees pitch of frontal, and the
    track's neutral is ``pop + w * clip(P10(history) - pop, -bound/gain, +bound/gain)`` with
    ``w = n / (n + prior_frames)``: the 10th percentile of the last 30 s, pulled toward the
    population neutral while the history is short, and never more than ``bound`` intensity
    units from the population's (so a smile held for a whole clip still reads as a smile).
    """

    def __init__(self, calibrate: bool = True, *, percentile: float = CAL_PERCENTILE,
                 window_s: float = CAL_WINDOW_S, prior_frames: int = CAL_PRIOR_FRAMES,
                 bound: float = CAL_BOUND):
        self.calibrate = calibrate
        self.percentile, self.window_s = percentile, window_s
        self.prior_frames, self.bound = prior_frames, bound
        self._pop = np.array([POPULATION_NEUTRAL[k] for k in AU_NAMES])
        self._bound = np.array([bound / GAINS[k] for k in AU_NAMES])
        self._tracks: Dict[int, _TrackNeutral] = {}

    def reset(self) -> None:
        """Forget every track's history."""
        self._tracks.clear()

    def estimate(self, face: Face, t: Optional[float] = None) -> AUResult:
        raw = measure(_points3d(face))
        row = np.array([raw[k] for k in AU_NAMES])
        neutral_v = self._pop
        if self.calibrate and t is not None:
            tr = self._tracks.get(face.track_id)
            if tr is None:
                tr = self._tracks[face.track_id] = _TrackNeutral()
            if abs(face.yaw) <= CAL_MAX_YAW and abs(face.pitch) <= CAL_MAX_PITCH:
                tr.add(float(t), row)
            neutral_v = tr.neutral(self._pop, self._bound)
        neutral = dict(zip(AU_NAMES, map(float, neutral_v)))
        ints = intensities(raw, neutral)
        return AUResult(intensities=ints, smile=smile_score(ints), gaze=_gaze(face),
                        pose=_pose(face), raw=raw, neutral=neutral, track_id=face.track_id,
                        confidence=_confidence(face))


# ---------------------------------------------------------------------------------------------
# Still images
# ---------------------------------------------------------------------------------------------
#: small images are upscaled (bicubic) until the short side is this many pixels ...
SMALL_MIN_SIDE = 256
#: ... and given a replicated border of this fraction of the (upscaled) long side on each side
SMALL_PAD = 0.25


def prepare_image(image_bgr: np.ndarray, min_side: int = SMALL_MIN_SIDE,
                  pad: float = SMALL_PAD) -> Tuple[np.ndarray, float, int]:
    """The small-image rule: a tight crop (a 64 x 64 GENKI face) is too small and too tight
    for the face detector. An image whose short side is under ``min_side`` is upscaled
    bicubically to ``min_side``, and then ``pad * long side`` pixels of replicated border are
    added on every side (64 x 64 -> 256 x 256 -> 384 x 384). Larger images are returned as
    they are.

    Returns:
        ``(image, scale, pad_px)``: a point ``(x, y)`` of the result is ``((x - pad_px) /
        scale, (y - pad_px) / scale)`` in the input.
    """
    import cv2

    h, w = image_bgr.shape[:2]
    if min(h, w) >= min_side:
        return image_bgr, 1.0, 0
    s = min_side / min(h, w)
    img = cv2.resize(image_bgr, (int(round(w * s)), int(round(h * s))),
                     interpolation=cv2.INTER_CUBIC)
    p = int(round(pad * max(img.shape[:2])))
    return cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE), s, p


def unprepare_face(face: Face, scale: float, pad_px: int) -> Face:
    """A face found in :func:`prepare_image`'s result, in the input's pixels."""
    import dataclasses

    def back(a):
        return ((np.asarray(a, np.float64) - pad_px) / scale).astype(np.float32)

    return dataclasses.replace(face, landmarks=back(face.landmarks),
                               landmarks_raw=back(face.landmarks_raw),
                               z=(np.asarray(face.z, np.float64) / scale).astype(np.float32),
                               iris_diameter_px=tuple(d / scale for d in face.iris_diameter_px))


_STATIC_TRACKER = None


def estimate_image(image_bgr: np.ndarray, max_faces: int = 4, tracker=None) -> List[AUResult]:
    """AUs of every face in one still image (population neutral), in track-id order; ``[]``
    when none is found. Uses a static-mode :class:`~warpcam.realtime.tracker.FaceTracker`
    (one is created and kept for later calls unless ``tracker`` is given) and the small-image
    rule of :func:`prepare_image`."""
    global _STATIC_TRACKER
    if tracker is None:
        if _STATIC_TRACKER is None or _STATIC_TRACKER.max_faces != max_faces:
            from warpcam.realtime.tracker import FaceTracker

            _STATIC_TRACKER = FaceTracker(max_faces=max_faces, static_images=True)
        tracker = _STATIC_TRACKER
    img, s, p = prepare_image(image_bgr)
    est = AUEstimator(calibrate=False)
    return [est.estimate(unprepare_face(f, s, p)) for f in tracker.track(img)]
