"""FaceTracker (realtime/tracker.py) on real faces: landmarks, irises, eye openness, head pose and
its sign conventions, RGB input to mediapipe, track ids across frames and scene cuts, smoothing,
and degenerate frames.

Conventions under test (realtime/types.py): "right"/"left" are the subject's sides (the subject's
right eye is on the image's left); yaw positive = toward the subject's left (image +x); pitch
positive = up; roll positive = clockwise in the image.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from warpcam.core import landmarks as lm
from warpcam.realtime.tracker import FaceTracker
from tests import realdata

pytest.importorskip("mediapipe")


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def astro_face(static_tracker, astronaut):
    faces = static_tracker.track(astronaut)
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="module")
def looks_down_track():
    """Video-mode tracking (with smoothing) of every frame of looks_down_blinks_512.mp4."""
    frames = realdata.read_frames("looks_down_blinks_512.mp4")
    out = []
    with FaceTracker() as tr:
        for i, img in enumerate(frames):
            out.append(tr.track(img, i / 30.0))
    return out


@pytest.fixture(scope="module")
def scene_cuts_track():
    frames = realdata.read_frames("hard_scene_cuts_many_people_640x360.mp4")
    out = []
    with FaceTracker(max_faces=2) as tr:
        for i, img in enumerate(frames):
            out.append(tr.track(img, i / 29.97))
    return frames, out


TWO_FACES_FROM = 215  # the second (background) person is in view from about frame 225 on


@pytest.fixture(scope="module")
def two_faces_track():
    frames = realdata.read_frames("two_faces_1280x720.mp4")
    out = []
    with FaceTracker(max_faces=2) as tr:
        for i in range(TWO_FACES_FROM, len(frames)):
            out.append(tr.track(frames[i], i / 30.0))
    return frames, out


def face_width(face) -> float:
    return float(np.ptp(face.landmarks[:, 0]))


def nose_offset(face) -> float:
    """Nose tip x minus the midpoint of the outer eye corners, in face widths (> 0: the nose
    points to image +x)."""
    p = face.landmarks
    mid = 0.5 * (p[lm.RIGHT_EYE_OUTER, 0] + p[lm.LEFT_EYE_OUTER, 0])
    return float((p[lm.NOSE_TIP, 0] - mid) / face_width(face))


# ------------------------------------------------------------------------------------------------
# the astronaut (a real coloured face)
# ------------------------------------------------------------------------------------------------

def test_astronaut_one_face_with_478_landmarks_inside_the_image(astro_face, astronaut):
    f = astro_face
    H, W = astronaut.shape[:2]
    assert f.track_id == 0
    assert f.landmarks.shape == (478, 2) and f.landmarks.dtype == np.float32
    assert f.landmarks_raw.shape == (478, 2) and f.z.shape == (478,)
    assert np.isfinite(f.landmarks).all() and np.isfinite(f.z).all()
    assert (f.landmarks >= 0).all() and (f.landmarks[:, 0] < W).all() \
        and (f.landmarks[:, 1] < H).all()
    # The face (Eileen Collins) sits in the upper middle of the photo, 60-150 px wide.
    assert 60 < face_width(f) < 150
    cx, cy = f.landmarks.mean(axis=0)
    assert 150 < cx < 300 and 60 < cy < 200
    # Subject's right eye is on the image's left, and eyes are above the nose, above the mouth.
    p = f.landmarks
    assert p[lm.RIGHT_IRIS[0], 0] < p[lm.NOSE_TIP, 0] < p[lm.LEFT_IRIS[0], 0]
    assert max(p[lm.RIGHT_IRIS[0], 1], p[lm.LEFT_IRIS[0], 1]) < p[lm.NOSE_TIP, 1] \
        < p[lm.UPPER_LIP_CENTRE, 1] < p[lm.CHIN, 1]


def test_astronaut_irises_plausible_and_inside_the_eyes(astro_face):
    f = astro_face
    # A 11.7 mm iris on a ~140 mm wide face: about 0.08 face widths. Here ~7.5 px on a 92 px face
    # (an absolute 8-30 px range would wrongly reject this correct measurement).
    for d in f.iris_diameter_px:
        assert 5.0 < d < 15.0
        assert 0.05 < d / face_width(f) < 0.13
    assert abs(f.iris_diameter_px[0] - f.iris_diameter_px[1]) < 0.2 * max(f.iris_diameter_px)
    for c in f.iris_confidence:
        assert 0.0 <= c <= 1.0
    assert max(f.iris_confidence) > 0.0
    for side, iris in (("right", lm.RIGHT_IRIS), ("left", lm.LEFT_IRIS)):
        poly = lm.eye_contour(f.landmarks, side).astype(np.float32)
        c = tuple(float(v) for v in f.landmarks[iris[0]])
        assert cv2.pointPolygonTest(poly, c, False) > 0, f"{side} iris centre outside its eye"


def test_astronaut_eyes_open_and_head_near_frontal(astro_face):
    f = astro_face
    assert min(f.eye_openness) > 0.15
    assert max(f.eye_openness) < 0.6
    assert abs(f.yaw) < 20 and abs(f.pitch) < 20 and abs(f.roll) < 20


def test_tracker_feeds_mediapipe_rgb(static_tracker, astronaut, monkeypatch):
    seen = []
    real = static_tracker._mesh.process

    def spy(image):
        seen.append(np.array(image, copy=True))
        return real(image)

    monkeypatch.setattr(static_tracker._mesh, "process", spy)
    faces = static_tracker.track(astronaut)
    assert len(faces) == 1
    assert len(seen) == 1
    expected = cv2.cvtColor(astronaut, cv2.COLOR_BGR2RGB)
    assert seen[0].shape == expected.shape and seen[0].dtype == np.uint8
    assert np.array_equal(seen[0], expected)
    assert not np.array_equal(seen[0], astronaut)  # a coloured face: BGR != RGB


def test_tracker_does_not_modify_the_frame(static_tracker, astronaut):
    img = astronaut.copy()
    static_tracker.track(img)
    assert np.array_equal(img, astronaut)


# ------------------------------------------------------------------------------------------------
# pose sign conventions
# ------------------------------------------------------------------------------------------------

def test_horizontal_flip_flips_yaw_and_roll(static_tracker, astronaut, astro_face):
    flipped = static_tracker.track(np.ascontiguousarray(astronaut[:, ::-1]))
    assert len(flipped) == 1
    g = flipped[0]
    f = astro_face
    assert abs(f.roll) > 1.5  # the astronaut's head is tilted by ~3 degrees
    assert np.sign(g.roll) == -np.sign(f.roll) and abs(g.roll + f.roll) < 2.0
    if abs(f.yaw) > 0.5:
        assert np.sign(g.yaw) == -np.sign(f.yaw)
    assert abs(g.yaw + f.yaw) < 3.0
    assert abs(g.pitch - f.pitch) < 3.0  # pitch does not change under a mirror


def test_flip_of_a_clearly_turned_head_flips_yaw(static_tracker):
    frames = realdata.read_frames("two_faces_1280x720.mp4")
    f = static_tracker.track(frames[0])[0]
    g = static_tracker.track(np.ascontiguousarray(frames[0][:, ::-1]))[0]
    assert f.yaw > 10  # she is turned toward her left (image +x): the nose points to image +x
    assert nose_offset(f) > 0.1
    assert g.yaw < -10 and abs(f.yaw + g.yaw) < 4.0


@pytest.mark.parametrize("angle_cw", [15.0, -15.0])
def test_roll_is_positive_clockwise(static_tracker, astronaut, astro_face, angle_cw):
    centre = tuple(float(v) for v in astro_face.landmarks.mean(axis=0))
    # cv2.getRotationMatrix2D rotates counter-clockwise on screen for a positive angle.
    M = cv2.getRotationMatrix2D(centre, -angle_cw, 1.0)
    rotated = cv2.warpAffine(astronaut, M, astronaut.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    g = static_tracker.track(rotated)
    assert len(g) == 1
    assert abs((g[0].roll - astro_face.roll) - angle_cw) < 3.0


def test_yaw_sign_agrees_with_the_nose_direction_on_real_footage(scene_cuts_track,
                                                                 two_faces_track):
    checked = 0
    for _, tracks in (scene_cuts_track, two_faces_track):
        for faces in tracks:
            for f in faces:
                if abs(f.yaw) > 8 and abs(f.roll) < 15:
                    assert np.sign(nose_offset(f)) == np.sign(f.yaw), (f.yaw, nose_offset(f))
                    checked += 1
    assert checked > 50


def test_pitch_is_negative_when_the_head_tilts_down(looks_down_track):
    # Frames 120-150: she looks down at the desk with her head tilted forward.
    level = np.mean([looks_down_track[i][0].pitch for i in range(0, 6)])
    down = np.mean([looks_down_track[i][0].pitch for i in range(120, 151)])
    assert down < level - 5.0
    assert down < 0


# ------------------------------------------------------------------------------------------------
# eye openness on blinks and a wink
# ------------------------------------------------------------------------------------------------

def test_looks_down_every_frame_has_one_face(looks_down_track):
    assert len(looks_down_track) == 354
    assert all(len(f) == 1 for f in looks_down_track)
    assert {f[0].track_id for f in looks_down_track} == {0}


def test_blink_closes_both_eyes(looks_down_track):
    op = np.array([f[0].eye_openness for f in looks_down_track])
    # A blink at frames 58-61 (both lids down).
    assert (op[58:62] < 0.12).all()
    # Wide open at the start and at the end of the clip.
    assert (op[0:4] > 0.25).all()
    assert (op[290:354] > 0.18).mean() > 0.95
    # Open (> 0.18) on at least half of the clip; the rest is the blink, a wink and long looks
    # down where the upper lids come down with the gaze (openness ~0.05-0.1 there).
    assert (op > 0.18).all(axis=1).mean() > 0.45


def test_wink_is_per_eye_and_sides_are_the_subjects(looks_down_track):
    # Frames 36-46: she winks with her right eye (on the image's left).
    op = np.array([f[0].eye_openness for f in looks_down_track])
    right, left = op[36:47, 0], op[36:47, 1]
    assert (right < 0.12).all()
    assert (left > 0.25).all()


def test_smoothing_does_not_swallow_the_blink(looks_down_track):
    """The smoothed landmarks still close within two frames of the raw ones."""
    from warpcam.realtime.tracker import eye_openness

    raw = np.array([eye_openness(f[0].landmarks_raw) for f in looks_down_track[50:70]])
    sm = np.array([f[0].eye_openness for f in looks_down_track[50:70]])
    raw_closed = np.nonzero((raw < 0.12).all(axis=1))[0]
    sm_closed = np.nonzero((sm < 0.12).all(axis=1))[0]
    assert raw_closed.size and sm_closed.size
    assert sm_closed[0] - raw_closed[0] <= 2


# ------------------------------------------------------------------------------------------------
# smoothing
# ------------------------------------------------------------------------------------------------

def test_smoothing_reduces_landmark_jitter_on_a_still_head():
    frames = realdata.read_frames("eyes_left_right_wink_512.mp4", limit=25)
    sm, raw = [], []
    with FaceTracker() as tr:
        for i, img in enumerate(frames):
            f = tr.track(img, i / 30.0)[0]
            sm.append(f.landmarks)
            raw.append(f.landmarks_raw)
    sm, raw = np.array(sm, np.float64), np.array(raw, np.float64)
    mesh = np.arange(468)

    def accel(a):
        return np.sqrt((np.diff(a[:, mesh], n=2, axis=0) ** 2).mean())

    assert accel(sm) < 0.6 * accel(raw)
    assert np.abs(sm[0] - raw[0]).max() < 1e-3  # the first frame starts the filter
    # Smoothing never drifts off the face: on average within a pixel or two of the raw points.
    assert np.sqrt(((sm - raw) ** 2).sum(-1).mean()) < 2.5
    assert np.abs(sm - raw).max() < 15.0


def test_smooth_false_and_static_images_give_raw_landmarks(static_tracker, astronaut):
    with FaceTracker(smooth=False) as tr:
        for i in range(3):
            f = tr.track(astronaut, i / 30.0)[0]
            assert np.array_equal(f.landmarks, f.landmarks_raw)
    f = static_tracker.track(astronaut)[0]
    assert np.array_equal(f.landmarks, f.landmarks_raw)
    assert static_tracker.smooth is False


# ------------------------------------------------------------------------------------------------
# track ids
# ------------------------------------------------------------------------------------------------

def test_two_faces_ids_stay_constant(two_faces_track):
    frames, tracks = two_faces_track
    two = [i for i, faces in enumerate(tracks) if len(faces) == 2]
    assert len(two) > 40, "both people should be tracked for most of the last 60 frames"
    ids = {tuple(f.track_id for f in tracks[i]) for i in two}
    assert len(ids) == 1, f"ids changed: {ids}"
    (pair,) = ids
    assert pair[0] != pair[1] and list(pair) == sorted(pair)
    # Consecutive frames: the same id stays on the same person (the faces barely move).
    for i in two:
        if i + 1 in two:
            for a in tracks[i]:
                b = next(f for f in tracks[i + 1] if f.track_id == a.track_id)
                move = np.linalg.norm(a.landmarks.mean(0) - b.landmarks.mean(0))
                assert move < 0.2 * face_width(a)
    # The foreground woman (id 0, tracked since frame TWO_FACES_FROM) is the larger face.
    first = tracks[two[0]]
    assert min(pair) == tracks[0][0].track_id
    sizes = {f.track_id: face_width(f) for f in first}
    assert sizes[min(pair)] > sizes[max(pair)]


def test_scene_cuts_never_crash_and_ids_change_at_cuts(scene_cuts_track):
    frames, tracks = scene_cuts_track
    assert len(tracks) == len(frames) == 275
    for faces in tracks:
        assert len(faces) <= 2
        for f in faces:
            assert f.landmarks.shape == (478, 2) and np.isfinite(f.landmarks).all()
            assert np.isfinite([f.yaw, f.pitch, f.roll]).all()
    # Shot 82-210: one singer, one id throughout.
    shot = tracks[82:211]
    assert np.mean([len(f) == 1 for f in shot]) > 0.95
    shot_ids = {f.track_id for faces in shot for f in faces}
    assert len(shot_ids) == 1
    # Cut at 211 to the audience; a face is found again at ~233, while the singer's track is
    # still remembered (less than 30 frames unseen): it must get a new id, not the singer's.
    later = [f for faces in tracks[211:] for f in faces]
    assert later, "a face should be found in the audience shot"
    seen_before = {f.track_id for faces in tracks[:211] for f in faces}
    assert all(f.track_id not in seen_before for f in later)
    # Ids are never reused: a new id is always larger than every earlier one.
    order = []
    for faces in tracks:
        for f in faces:
            if f.track_id not in order:
                order.append(f.track_id)
    assert order == sorted(order)


# ------------------------------------------------------------------------------------------------
# degenerate input
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(512, 512, 3), (1, 1, 3), (3, 5, 3), (2, 700, 3)])
def test_blank_and_tiny_frames_give_no_face(shape):
    with FaceTracker() as tr:
        for i in range(2):
            assert tr.track(np.zeros(shape, np.uint8), i / 30.0) == []
            assert tr.track(np.full(shape, 255, np.uint8), (i + 2) / 30.0) == []


@pytest.mark.parametrize("bad", [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 4), np.uint8),
                                 np.zeros((64, 64, 3), np.float32), np.zeros(12, np.uint8)])
def test_invalid_layouts_raise_value_error(static_tracker, bad):
    with pytest.raises(ValueError):
        static_tracker.track(bad)


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 10, 3), (10, 0, 3)])
def test_empty_frame_raises_value_error(static_tracker, shape):
    with pytest.raises(ValueError):
        static_tracker.track(np.zeros(shape, np.uint8))


def test_invalid_max_faces():
    with pytest.raises(ValueError):
        FaceTracker(max_faces=0)
