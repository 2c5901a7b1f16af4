"""Indices into mediapipe FaceMesh's 478-point topology (``refine_landmarks=True``).

"Right" and "left" are the **subject's** sides: the subject's right eye appears on the image's
left for a camera facing them.
"""
import numpy as np

# Eye contours, upper lid and lower lid, each from the outer corner to the inner corner.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 33, 133
LEFT_EYE_OUTER, LEFT_EYE_INNER = 263, 362
RIGHT_EYE_UPPER = [33, 246, 161, 160, 159, 158, 157, 173, 133]
RIGHT_EYE_LOWER = [33, 7, 163, 144, 145, 153, 154, 155, 133]
LEFT_EYE_UPPER = [263, 466, 388, 387, 386, 385, 384, 398, 362]
LEFT_EYE_LOWER = [263, 249, 390, 373, 374, 380, 381, 382, 362]
# Eyebrows (outer to inner), used to keep brow skin out of the eye warp.
RIGHT_BROW = [70, 63, 105, 66, 107]
LEFT_BROW = [300, 293, 334, 296, 336]
# Iris: centre then four points on the iris boundary.
RIGHT_IRIS = [468, 469, 470, 471, 472]
LEFT_IRIS = [473, 474, 475, 476, 477]

# Mouth.
MOUTH_RIGHT_CORNER, MOUTH_LEFT_CORNER = 61, 291
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
UPPER_LIP_CENTRE, LOWER_LIP_CENTRE = 0, 17
NOSE_TIP, CHIN, FOREHEAD = 1, 152, 10
# Cheek / nasolabial points that follow a smile (right side, left side).
CHEEK_RIGHT = [206, 216, 207, 205, 36, 203, 212, 202, 204, 57, 186, 92, 165]
CHEEK_LEFT = [426, 436, 427, 425, 266, 423, 432, 422, 424, 287, 410, 322, 391]


_EYES = {
    "right": dict(outer=RIGHT_EYE_OUTER, inner=RIGHT_EYE_INNER, upper=RIGHT_EYE_UPPER,
                  lower=RIGHT_EYE_LOWER, iris=RIGHT_IRIS, brow=RIGHT_BROW),
    "left": dict(outer=LEFT_EYE_OUTER, inner=LEFT_EYE_INNER, upper=LEFT_EYE_UPPER,
                 lower=LEFT_EYE_LOWER, iris=LEFT_IRIS, brow=LEFT_BROW),
}
#: Per side, the eye-opening polygon's landmark indices (:func:`eye_contour`), read only.
EYE_CONTOUR = {side: np.array(ix["upper"] + ix["lower"][-2:0:-1]) for side, ix in _EYES.items()}
for _a in EYE_CONTOUR.values():
    _a.setflags(write=False)
del _a


def eye_indices(side: str) -> dict:
    """Landmark indices of one eye; ``side`` is ``"right"`` or ``"left"`` (the subject's).
    The same dict (of the module's lists) every call, several times per eye and frame: read
    it, never modify it."""
    ix = _EYES.get(side)
    if ix is None:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return ix


def eye_contour(landmarks: np.ndarray, side: str) -> np.ndarray:
    """Closed eye-opening polygon (``N x 2`` pixels): upper lid outer→inner, lower lid back."""
    if side not in EYE_CONTOUR:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return landmarks[EYE_CONTOUR[side]]
