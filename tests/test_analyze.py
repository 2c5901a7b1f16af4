"""``warpcam analyze`` on the shared videos and images: OpenFace's columns, one row per frame
for a single face, the input's timestamps, a row with success = 0 where no face is found, file
names for folders, usage errors as one line with exit status 2."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import realdata

ALL_VIDEOS = ["glance_smile_blink_512.mp4", "looks_down_blinks_512.mp4",
              "eyes_left_right_wink_512.mp4", "phone_selfie_720x1280.mp4",
              "two_faces_1280x720.mp4", "news_talking_head_512.mp4", "mead_w009_happy_256.mp4",
              "mead_w009_neutral_256.mp4", "hard_scene_cuts_many_people_640x360.mp4",
              "hard_crowd_tiny_faces_1080p.mp4", "glasses_talking_524.mp4"]
N = 24  # frames per video (the full runs are in the report: docs/au.md)


def _run(argv):
    from warpcam.realtime.analyze import main

    return main(argv)


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _pts(path, limit):
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(float(f.time))
            if len(out) >= limit:
                break
    return out


def test_columns_are_openface_names():
    from warpcam.realtime.analyze import COLUMNS

    assert COLUMNS[:10] == ["frame", "face_id", "timestamp", "confidence", "success",
                            "gaze_angle_x", "gaze_angle_y", "pose_Rx", "pose_Ry", "pose_Rz"]
    assert COLUMNS[10:27] == [f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17,
                                                        20, 23, 25, 26, 45)]
    assert COLUMNS[27:] == ["input", "smile"]


@pytest.mark.parametrize("name", ALL_VIDEOS)
def test_every_shared_video_one_row_per_frame_with_its_timestamps(name, tmp_path):
    path = realdata.video(name)
    out = tmp_path / "au.csv"
    assert _run(["--input", str(path), "--output", str(out), "--max-frames", str(N),
                 "--quiet"]) == 0
    rows = _read(out)
    assert [int(r["frame"]) for r in rows] == list(range(1, N + 1))
    ts = np.array([float(r["timestamp"]) for r in rows])
    assert np.allclose(ts, _pts(path, N), atol=1e-6)
    ok = np.array([int(r["success"]) for r in rows])
    if name == "hard_crowd_tiny_faces_1080p.mp4":
        assert ok.sum() == 0  # too small for the tracker: rows with success 0, zeros
        assert all(float(r["AU12_r"]) == 0.0 for r in rows)
    elif name != "hard_scene_cuts_many_people_640x360.mp4":
        assert ok.all(), f"{name}: face missing in {np.where(ok == 0)[0].tolist()}"
    for r in rows:
        assert r["input"] == name
        assert 0.0 <= float(r["smile"]) <= 1.0
        assert all(0.0 <= float(r[f"{a}_r"]) <= 5.0 for a in ("AU01", "AU12", "AU45"))
    assert not list(tmp_path.glob(".*warpcam-tmp*"))


def test_glance_smile_blink_video_shows_the_smile_and_the_blink(tmp_path):
    """The man smiles with teeth at 1-2 s and blinks at 2.6 s: AU12 and AU25 peak in the smile,
    AU45 at the blink; and the plot is drawn."""
    path = realdata.video("glance_smile_blink_512.mp4")
    out, png = tmp_path / "au.csv", tmp_path / "au.png"
    assert _run(["--input", str(path), "--output", str(out), "--plot", str(png),
                 "--quiet"]) == 0
    rows = _read(out)
    t = np.array([float(r["timestamp"]) for r in rows])
    au12 = np.array([float(r["AU12_r"]) for r in rows])
    au45 = np.array([float(r["AU45_r"]) for r in rows])
    smile = (t >= 1.0) & (t <= 2.0)
    assert np.median(au12[smile]) > np.median(au12[t < 0.6]) + 1.0
    blink = np.abs(t - 2.6) < 0.25
    assert au45[blink].max() > 1.5 and au45[blink].max() > np.median(au45) + 1.0
    assert png.stat().st_size > 10_000


def test_folder_of_images_names_each_row(tmp_path):
    """A folder: the GANimation crops (tight 128 px crops, found by the small-image rule) and
    a blank image (a success = 0 row)."""
    src = realdata.REAL / "images" / "ganimation" / "imgs"
    if not src.exists():
        pytest.skip(f"{src} not present")
    import cv2

    d = tmp_path / "in"
    d.mkdir()
    for p in sorted(src.glob("*.jpg")):
        shutil.copy(p, d / p.name)
    cv2.imwrite(str(d / "zz_blank.png"), np.full((64, 64, 3), 128, np.uint8))
    out = tmp_path / "au.csv"
    assert _run(["--input", str(d), "--output", str(out), "--quiet"]) == 0
    rows = _read(out)
    assert [r["input"] for r in rows] == sorted(p.name for p in src.glob("*.jpg")) + ["zz_blank.png"]
    assert [r["success"] for r in rows] == ["1"] * 4 + ["0"]
    assert all(float(r["timestamp"]) == 0.0 for r in rows)
    au12 = {r["input"]: float(r["AU12_r"]) for r in rows}
    assert au12["N_0000000356_00190.jpg"] > au12["N_0000000437_00540.jpg"]


def test_usage_errors_exit_2_with_one_line(tmp_path):
    cases = [["--input", str(tmp_path / "missing.mp4"), "--output", str(tmp_path / "a.csv")],
             ["--input", str(tmp_path), "--output", str(tmp_path / "a.txt")],
             ["--input", str(tmp_path), "--output", str(tmp_path / "nope" / "a.csv")],
             ["--output", str(tmp_path / "a.csv")]]
    for argv in cases:
        p = subprocess.run([sys.executable, "-m", "warpcam.realtime.analyze", *argv],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, (argv, p.stderr)
        lines = [ln for ln in p.stderr.splitlines() if ln.startswith("warpcam: error:")]
        assert len(lines) == 1, p.stderr
        assert not (tmp_path / "a.csv").exists()
