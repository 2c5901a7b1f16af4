"""Command line (realtime/cli.py, run.py): usage and device errors exit 2 with a one-line reason,
files come out with the input's frames, timestamps and audio, edits stay local, failures leave
nothing behind.

``main(argv)`` is called in-process (argparse errors surface as ``SystemExit(2)``, the others as a
return value); ``python run.py`` is run once as a subprocess to check the entry point.
"""
from __future__ import annotations

import contextlib
import glob
import io
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from warpcam.realtime import cli
from warpcam.core import landmarks as lm
from tests import realdata

av = pytest.importorskip("av")

REPO = Path(__file__).resolve().parents[1]
LOOKS_DOWN = "looks_down_blinks_512.mp4"
CROWD = "hard_crowd_tiny_faces_1080p.mp4"
TWO_FACES = "two_faces_1280x720.mp4"
SMALL = "mead_w009_neutral_256.mp4"  # 104 frames, 256x256, no audio: cheap


def call(argv, capsys):
    """Run ``cli.main(argv)`` in-process: ``(exit status, stderr text)``."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def error_lines(err: str):
    return [ln for ln in err.splitlines() if ln.startswith("warpcam: error:")]


def assert_one_line_error(code, err, *needles, usage_allowed=False):
    assert code == cli.EXIT_USAGE == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errs = error_lines(err)
    assert len(errs) == 1, f"expected one 'warpcam: error:' line, got:\n{err}"
    assert lines[-1] == errs[0], "the error line must be the last line"
    if usage_allowed:  # argparse prints its usage block above the error line
        assert all(ln.startswith(("usage:", " ")) for ln in lines[:-1]), err
    else:
        assert len(lines) == 1, f"expected only the error line, got:\n{err}"
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in errs[0].lower(), (n, errs[0])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def video_timestamps(path):
    """Presentation times (s) of every video frame (no pixel conversion)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        ts = [float(f.pts * f.time_base) for f in c.decode(s)]
        return ts


def audio_packets(path):
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        return s.codec_context.name, [(p.pts, bytes(p)) for p in c.demux(s) if p.size]


def lockstep(a, b):
    """Decode two videos side by side: yields ``(index, frame_a_bgr, frame_b_bgr)``; fails when
    one has more frames than the other."""
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        pairs = itertools.zip_longest(ca.decode(video=0), cb.decode(video=0))
        for i, (fa, fb) in enumerate(pairs):
            assert fa is not None and fb is not None, f"frame counts differ at frame {i}"
            yield i, fa.to_ndarray(format="bgr24"), fb.to_ndarray(format="bgr24")


def listing(folder: Path):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------

def test_run_py_help_and_exit_status_via_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "run.py", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: warpcam")
    for opt in ("--input", "--output", "--gaze-pitch", "--smile", "--backend", "--preview"):
        assert opt in r.stdout
    r = subprocess.run([sys.executable, "run.py", "--input", str(tmp_path / "missing.mp4"),
                        "--output", str(tmp_path / "o.mp4")], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"warpcam: error: input not found: "
                                             f"{tmp_path / 'missing.mp4'}"]


# ------------------------------------------------------------------------------------------------
# usage and device errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["--smile", "2"], "--smile"),
    (["--smile", "-1.5"], "--smile"),
    (["--smile", "nan"], "--smile"),
    (["--gaze-pitch", "90"], "--gaze-pitch"),
    (["--gaze-yaw", "-31"], "--gaze-yaw"),
    (["--max-faces", "0"], "--max-faces"),
    (["--backend", "metal"], "--backend"),
])
def test_bad_arguments_exit_2_with_one_error_line(capsys, tmp_path, argv, needle):
    code, err = call(argv + ["--output", tmp_path / "o.mp4"], capsys)
    assert_one_line_error(code, err, needle, usage_allowed=True)
    assert listing(tmp_path) == []


def test_missing_input(capsys, tmp_path):
    code, err = call(["--input", tmp_path / "nope.mp4", "--output", tmp_path / "o.mp4"], capsys)
    assert_one_line_error(code, err, "input not found", "nope.mp4")
    assert listing(tmp_path) == []


def test_output_folder_does_not_exist(capsys, tmp_path):
    src = realdata.video(SMALL)
    code, err = call(["--input", src, "--output", tmp_path / "no" / "such" / "o.mp4"], capsys)
    assert_one_line_error(code, err, "folder does not exist")
    assert listing(tmp_path) == []


def test_output_equal_to_input(capsys, tmp_path):
    src = tmp_path / "in.mp4"
    shutil.copyfile(realdata.video(SMALL), src)
    before = src.read_bytes()
    code, err = call(["--input", src, "--output", src], capsys)
    assert_one_line_error(code, err, "is the input")
    assert src.read_bytes() == before
    assert listing(tmp_path) == ["in.mp4"]
    # The same file named differently is still the input.
    code, err = call(["--input", src, "--output", tmp_path / "." / "in.mp4"], capsys)
    assert_one_line_error(code, err, "is the input")


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="a video device exists here")
def test_no_virtual_camera(capsys):
    code, err = call(["--input", realdata.video(SMALL)], capsys)
    assert_one_line_error(code, err, "virtual camera", "v4l2loopback")


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="a video device exists here")
def test_no_webcam(capsys):
    code, err = call(["--output", "null"], capsys)
    assert_one_line_error(code, err, "webcam 0")


@pytest.mark.skipif(bool(os.environ.get("DISPLAY")), reason="a display is set here")
def test_preview_without_display(capsys):
    code, err = call(["--input", realdata.video(SMALL), "--output", "null", "--preview"], capsys)
    assert_one_line_error(code, err, "no display", "--preview")


def test_input_that_is_not_a_video(capsys, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n")
    code, err = call(["--input", bad, "--output", tmp_path / "o.mp4"], capsys)
    assert_one_line_error(code, err, "notes.mp4")
    assert listing(tmp_path) == ["notes.mp4"]


@pytest.mark.parametrize("name", ["o.xyz", "o.png"])
def test_unsupported_output_for_a_video(capsys, tmp_path, name):
    code, err = call(["--input", realdata.video(SMALL), "--output", tmp_path / name], capsys)
    assert_one_line_error(code, err, "unsupported output")
    assert listing(tmp_path) == []


def _cuda_usable() -> bool:
    try:
        from warpcam.kernels.cuda_backend import cuda_available
        return bool(cuda_available())
    except Exception:
        return False


@pytest.mark.skipif(_cuda_usable(), reason="a CUDA GPU is usable here")
def test_backend_cuda_without_gpu(capsys, tmp_path):
    code, err = call(["--backend", "cuda", "--input", realdata.video(SMALL),
                      "--output", tmp_path / "o.mp4"], capsys)
    assert_one_line_error(code, err, "cuda")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("argv", [["--width", "0"], ["--height", "-720"], ["--fps", "0"]])
def test_bad_capture_settings_exit_2(capsys, argv):
    code, err = call(argv + ["--output", "null"], capsys)
    assert_one_line_error(code, err, usage_allowed=True)


# ------------------------------------------------------------------------------------------------
# a real video through the CLI: looks_down_blinks_512.mp4 with --gaze-pitch 10
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def looks_down_run(tmp_path_factory):
    src = realdata.video(LOOKS_DOWN)
    out_dir = tmp_path_factory.mktemp("looks_down")
    out = out_dir / "out.mp4"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["--input", str(src), "--gaze-pitch", "10", "--output", str(out),
                         "--quiet"])
    return code, err.getvalue(), src, out


def test_cli_video_exit_0_quiet_and_no_litter(looks_down_run):
    code, err, src, out = looks_down_run
    assert code == 0, err
    assert err == "", "--quiet must print nothing"
    assert listing(out.parent) == ["out.mp4"]


def test_cli_video_keeps_frame_count_and_timestamps(looks_down_run):
    code, err, src, out = looks_down_run
    ts_in, ts_out = video_timestamps(src), video_timestamps(out)
    assert len(ts_in) == 354
    assert len(ts_out) == 354
    assert ts_out == ts_in


def test_cli_video_copies_the_audio_packets(looks_down_run):
    code, err, src, out = looks_down_run
    a_in, a_out = audio_packets(src), audio_packets(out)
    assert a_in is not None and a_out is not None
    assert a_out[0] == a_in[0] == "aac"
    assert len(a_out[1]) == len(a_in[1]) > 100
    assert [b for _, b in a_out[1]] == [b for _, b in a_in[1]]
    assert [p for p, _ in a_out[1]] == [p for p, _ in a_in[1]]


OPEN_EYE_FRAMES = (0, 2, 190, 300, 320, 350)


def test_cli_video_edits_the_eyes_and_nothing_away_from_the_face(looks_down_run):
    code, err, src, out = looks_down_run
    from warpcam.realtime.tracker import FaceTracker

    checked = 0
    with FaceTracker(static_images=True) as tr:
        for i, a, b in lockstep(src, out):
            assert a.shape == b.shape == (512, 512, 3)
            # Every frame: the edit is local, the whole picture stays close to the input.
            assert psnr(a, b) > 33.0, f"frame {i}"
            if i not in OPEN_EYE_FRAMES:
                continue
            faces = tr.track(a)
            assert len(faces) == 1
            p = faces[0].landmarks
            assert min(faces[0].eye_openness) > 0.25
            x0, y0 = np.floor(p.min(0)).astype(int) - 20
            x1, y1 = np.ceil(p.max(0)).astype(int) + 20
            away = np.ones(a.shape[:2], bool)
            away[max(y0, 0):y1, max(x0, 0):x1] = False
            assert away.mean() > 0.3
            assert psnr(a[away], b[away]) > 35.0, f"frame {i}: changed away from the face"
            for eye in ([lm.RIGHT_EYE_OUTER, lm.RIGHT_EYE_INNER] + lm.RIGHT_IRIS,
                        [lm.LEFT_EYE_OUTER, lm.LEFT_EYE_INNER] + lm.LEFT_IRIS):
                ex0, ey0 = np.floor(p[eye].min(0)).astype(int) - 3
                ex1, ey1 = np.ceil(p[eye].max(0)).astype(int) + 4
                e_in, e_out = a[ey0:ey1, ex0:ex1], b[ey0:ey1, ex0:ex1]
                # Far more than the encoder's loss (~39 dB): the irises moved.
                assert psnr(e_in, e_out) < 32.0, f"frame {i}: eye at x={ex0} not edited"
            checked += 1
    assert checked == len(OPEN_EYE_FRAMES)


def _spy_effects(monkeypatch):
    """Wrap FaceTracker.track and GazeEffect.jobs (behaviour unchanged) to record, per frame,
    the number of faces found, and per gaze call whether eye contact was on and the job kinds."""
    from warpcam.realtime.effects.gaze import GazeEffect
    from warpcam.realtime.tracker import FaceTracker

    real_track, real_jobs = FaceTracker.track, GazeEffect.jobs
    faces_log, gaze_log = [], []

    def track(self, image, t=None):
        faces = real_track(self, image, t)
        faces_log.append(len(faces))
        return faces

    def jobs(self, image, faces, t=0.0, crops=None):
        out = real_jobs(self, image, faces, t, crops)
        gaze_log.append((bool(self.settings.get().eye_contact), [j.kind for j in out]))
        return out

    monkeypatch.setattr(FaceTracker, "track", track)
    monkeypatch.setattr(GazeEffect, "jobs", jobs)
    return faces_log, gaze_log


def test_eye_contact_is_off_by_default_for_files_and_can_be_turned_on(capsys, monkeypatch):
    src = realdata.video(SMALL)
    faces_log, gaze_log = _spy_effects(monkeypatch)
    code, err = call(["--input", src, "--output", "null", "--quiet"], capsys)
    assert code == 0, err
    assert len(faces_log) == 104
    assert sum(faces_log) > 90, "the MEAD actor should be tracked"
    assert all(not ec and kinds == [] for ec, kinds in gaze_log), "no effect was asked for"
    faces_log.clear()
    gaze_log.clear()
    code, err = call(["--input", src, "--output", "null", "--quiet", "--eye-contact"], capsys)
    assert code == 0, err
    assert len(faces_log) == 104
    assert len(gaze_log) == sum(1 for n in faces_log if n) > 90
    assert all(ec for ec, _ in gaze_log)
    assert all(set(kinds) <= {"eye_right", "eye_left"} for _, kinds in gaze_log)


# ------------------------------------------------------------------------------------------------
# faces too small for the tracker pass through
# ------------------------------------------------------------------------------------------------

def test_cli_crowd_of_tiny_faces_passes_through(tmp_path, capsys, monkeypatch):
    src = realdata.video(CROWD)
    out = tmp_path / "crowd.mp4"
    faces_log, _ = _spy_effects(monkeypatch)
    code, err = call(["--input", src, "--gaze-pitch", "10", "--smile", "0.5", "--output", out,
                      "--quiet"], capsys)
    assert code == 0, err
    assert faces_log == [0] * 105, "a face was found (and edited) in the crowd"
    assert listing(tmp_path) == ["crowd.mp4"]
    n = 0
    for i, a, b in lockstep(src, out):
        assert a.shape == b.shape == (1080, 1920, 3)
        db = cv2.PSNR(a, b)
        assert db > 35.0, f"frame {i}: {db:.1f} dB"
        n = i + 1
    assert n == 105


# ------------------------------------------------------------------------------------------------
# still image
# ------------------------------------------------------------------------------------------------

def test_cli_png_smile_changes_only_the_mouth(tmp_path, capsys):
    img = realdata.astronaut_bgr()
    src = tmp_path / "astronaut.png"
    out = tmp_path / "smile.png"
    assert cv2.imwrite(str(src), img)
    code, err = call(["--input", src, "--output", out, "--smile", "0.8"], capsys)
    assert code == 0, err
    assert "warpcam: 1 frames" in err  # the summary line (not --quiet)
    assert listing(tmp_path) == ["astronaut.png", "smile.png"]
    res = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert res.shape == img.shape and res.dtype == np.uint8
    changed = np.any(res != img, axis=2)
    assert changed.sum() > 200, "the smile changed (almost) nothing"

    from warpcam.realtime.tracker import FaceTracker

    with FaceTracker(static_images=True) as tr:
        p = tr.track(img)[0].landmarks.astype(np.float64)
    a, b = p[lm.MOUTH_RIGHT_CORNER], p[lm.MOUTH_LEFT_CORNER]
    mw = float(np.linalg.norm(b - a))
    lips = p[lm.LIPS_OUTER_UPPER + lm.LIPS_OUTER_LOWER]
    centre = lips.mean(axis=0)
    ys, xs = np.nonzero(changed)
    # The mouth ROI is 2.2 x 1.7 mouth widths around the lips (realtime/smile.py).
    assert np.abs(xs - centre[0]).max() <= 1.2 * mw + 2
    assert np.abs(ys - centre[1]).max() <= 0.95 * mw + 2
    # The eyes are byte-identical; the largest changes sit at the mouth corners' height.
    eyes_bottom = p[lm.RIGHT_EYE_LOWER + lm.LEFT_EYE_LOWER, 1].max()
    assert not changed[: int(eyes_bottom) + 3].any()
    d = np.abs(res.astype(int) - img).max(axis=2)
    yy, xx = np.unravel_index(np.argmax(d), d.shape)
    assert abs(yy - centre[1]) < 0.6 * mw and abs(xx - centre[0]) < 0.9 * mw


# ------------------------------------------------------------------------------------------------
# failures leave nothing behind
# ------------------------------------------------------------------------------------------------

def test_truncated_input_exits_2_and_leaves_no_output(tmp_path, capsys):
    data = realdata.video(TWO_FACES).read_bytes()
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    src = in_dir / "cut.mp4"
    src.write_bytes(data[: int(len(data) * 0.4)])
    code, err = call(["--input", src, "--output", out_dir / "o.mp4", "--quiet"], capsys)
    assert_one_line_error(code, err, "truncated", "cut.mp4")
    assert listing(out_dir) == []


def test_interrupt_exits_130_and_leaves_no_output(tmp_path, capsys, monkeypatch):
    """Ctrl-C arrives in the main thread while frames are being written."""
    from warpcam.realtime.io import VideoFileSink

    real = VideoFileSink._write
    seen = []

    def write(self, frame, image):
        seen.append(frame.index)
        if frame.index == 60:
            assert self.temp_path.exists()  # a partial file is there to be cleaned up
            raise KeyboardInterrupt
        return real(self, frame, image)

    monkeypatch.setattr(VideoFileSink, "_write", write)
    code, err = call(["--input", realdata.video(SMALL), "--output", tmp_path / "o.mp4",
                      "--quiet", "--smile", "0.3"], capsys)
    assert code == cli.EXIT_INTERRUPTED == 130
    assert err.strip().splitlines() == ["warpcam: interrupted"]
    assert seen == list(range(61))
    assert listing(tmp_path) == []
