"""Reliability, round two (issue 9): the command line as a process (signals, standard streams
that cannot be written, native log lines), values and names it must refuse in one line, image
inputs and outputs (full disk, a bad image in a folder, 16-bit RGBA, float TIFF, OpenCV's pixel
limit) and a webcam that comes back under another ``/dev/videoN`` (a fake sysfs tree).

Inputs are generated here (PyAV, OpenCV) in ``tmp_path``. ``cli.main`` runs in-process where
the behaviour is about the CLI's logic; subprocesses only where it is about the process
(signals, file descriptors 2, stderr's bytes).
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from warpcam.realtime import cli
from warpcam.realtime.io import ImageSource, ReconnectingSource, Source, SourceError
from warpcam.realtime.io import images as images_mod
from warpcam.realtime.io.webcam import (CameraIdentity, camera_identity, find_camera,
                                        follow_camera)
from warpcam.core.types import Frame
from tests import realdata
from tests.helpers import signal_when, with_stop_signals

av = pytest.importorskip("av")

REPO = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX signals and fds")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def write_clip(path: Path, frames: int, size: int = 96, fps: int = 30) -> Path:
    """A small H.264 clip of grey ramps (no face: every frame passes through)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(frames):
            img = np.full((size, size, 3), (i * 3) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {"short": write_clip(d / "short.mp4", 120), "long": write_clip(d / "long.mp4", 900)}


def call(argv, capsys):
    """``cli.main`` in-process: ``(exit status, stderr)`` (argparse's exit as its status)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def assert_error(code, err, *needles, status=2):
    assert code == status, err
    line = one_line(err)
    assert line.startswith(("warpcam: error:", "warpcam calibrate: error:")), line
    for n in needles:
        assert n.lower() in line.lower(), (n, line)
    return line


def run_cli(args, **kw):
    return subprocess.run([sys.executable, "run.py", *map(str, args)], cwd=REPO, check=False,
                          capture_output=True, timeout=180, **kw)


# ------------------------------------------------------------------------------------------------
# 1. SIGTERM, SIGHUP, SIGQUIT during a file job: like Ctrl-C
# ------------------------------------------------------------------------------------------------

@POSIX
def test_a_job_started_under_nohup_keeps_running_through_sighup(tmp_path, clips):
    """A stop signal that the parent ignores stays ignored (``nohup warpcam ...`` outlives its
    terminal): SIGHUP mid-job changes nothing, the output is complete."""
    out = tmp_path / "o.mp4"
    cmd = [sys.executable, "run.py", "--input", clips["short"], "--output", out, "--quiet"]
    proc = subprocess.Popen(with_stop_signals(cmd, ignore=("SIGHUP",)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = signal_when(proc, lambda: any(tmp_path.iterdir()), signal.SIGHUP, timeout=120)
    assert proc.returncode == 0, err
    assert frame_count(out) == 120


@POSIX
def test_stop_signals_during_a_file_job_remove_the_output_and_exit_128_plus_n(tmp_path, clips):
    sigs = [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT]
    procs = {}
    for sig in sigs:  # the three jobs at once: one start-up's time for all
        out = tmp_path / sig.name
        out.mkdir()
        procs[sig] = (out, subprocess.Popen(
            with_stop_signals([sys.executable, "run.py", "--input", clips["long"], "--output",
                               out / "o.mp4", "--quiet"]), cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    try:
        for sig, (out, proc) in procs.items():
            deadline = time.monotonic() + 120
            while not any(out.iterdir()) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.02)
            assert any(out.iterdir()), "the job never started writing"
        time.sleep(0.2)  # well inside the 900-frame jobs
        for sig, (out, proc) in procs.items():
            proc.send_signal(sig)
        for sig, (out, proc) in procs.items():
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 128 + sig, (sig.name, proc.returncode, err)
            assert err.strip().splitlines() == [f"warpcam: interrupted by {sig.name}"], err
            assert list(out.iterdir()) == [], f"{sig.name} left {list(out.iterdir())}"
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()


def test_stop_signal_in_process_aborts_the_sink(tmp_path, clips, capsys, monkeypatch):
    """The handler's exception (what SIGTERM raises in the main thread) mid-write."""
    from warpcam.realtime.io import VideoFileSink

    real = VideoFileSink._write

    def write(self, frame, image):
        if frame.index == 30:
            raise cli.Interrupted(signal.SIGTERM)
        return real(self, frame, image)

    monkeypatch.setattr(VideoFileSink, "_write", write)
    code, err = call(["--input", clips["short"], "--output", tmp_path / "o.mp4", "--quiet"],
                     capsys)
    assert code == 143 and one_line(err) == "warpcam: interrupted by SIGTERM"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


_SIGINT_IN_A_COMPILED_LOOP = r"""
import os, signal, sys, threading
import numpy as np
from warpcam.kernels import _cpu_jit as J
from warpcam.realtime import cli
from warpcam.realtime.io import VideoFileSink
inv, a = np.eye(2, 3), np.eye(2, 3)
flow, alpha = np.zeros((40, 50, 2), np.float32), np.ones((40, 50), np.float32)
J.job_maps(4, 3, 9, 7, inv, a, flow, alpha)
real = VideoFileSink._write
def write(self, frame, image):
    if frame.index == 10:  # a real Ctrl-C while the composite's compiled loop runs
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        while True:
            J.job_maps(4, 3, 9, 7, inv, a, flow, alpha)
    return real(self, frame, image)
VideoFileSink._write = write
sys.exit(cli.main(sys.argv[1:]))
"""


@POSIX
def test_ctrl_c_inside_a_compiled_loop_is_an_interruption_not_a_bug(tmp_path, clips):
    """numba's dispatcher calls back into Python on every call, so Ctrl-C lands there and comes
    out as a SystemError ("returned a result with an exception set") with the KeyboardInterrupt
    at the end of its chain: still exit 130, "interrupted", the temporary file removed."""
    pytest.importorskip("numba")
    out = tmp_path / "o.mp4"
    proc = subprocess.run(with_stop_signals([sys.executable, "-c", _SIGINT_IN_A_COMPILED_LOOP,
                                             "--input", clips["short"], "--output", out,
                                             "--quiet"]),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == cli.EXIT_INTERRUPTED, proc.stderr
    assert one_line(proc.stderr) == "warpcam: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_wrapped_by_native_code_is_found_in_the_chain():
    try:
        try:
            raise cli.Interrupted(signal.SIGTERM)
        except KeyboardInterrupt as ki:
            raise SystemError("f returned a result with an exception set") from ki
    except SystemError as exc:
        assert cli.interrupt_status(cli.interrupt_behind(exc)) == (
            143, "warpcam: interrupted by SIGTERM")
    assert cli.interrupt_behind(ValueError("x")) is None
    assert cli.interrupt_behind(None) is None
    try:  # an error raised "from None" while handling one says it is not about the interrupt
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("replaced") from None
    except ValueError as exc:
        assert cli.interrupt_behind(exc) is None


# ------------------------------------------------------------------------------------------------
# 2. progress and log output that cannot be written never stop the work
# ------------------------------------------------------------------------------------------------

@POSIX
@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_unwritable_stderr_never_stops_the_job(tmp_path, clips):
    py = f"{sys.executable} run.py --input {clips['short']}"
    cases = {
        "closed": f"exec {py} --output {tmp_path / 'closed.mp4'} 2>&-",
        "broken_pipe": f"{py} --output {tmp_path / 'pipe.mp4'} 2>&1 | head -c100 >/dev/null; "
                       "exit ${PIPESTATUS[0]}",
    }
    if os.path.exists("/dev/full"):
        cases["dev_full"] = f"exec {py} --output {tmp_path / 'full.mp4'} 2>/dev/full"
    procs = {k: subprocess.Popen(["bash", "-c", cmd], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE) for k, cmd in cases.items()}
    for k, p in procs.items():
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, (k, p.returncode, err)
    for name in ("closed", "pipe") + (("full",) if "dev_full" in cases else ()):
        assert frame_count(tmp_path / f"{name}.mp4") == 120, name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.mp4" for n in ("closed", "pipe") + (("full",) if "dev_full" in cases else ()))


class _Broken:
    """A stderr whose every write fails (a pipe whose reader is gone)."""

    encoding = "utf-8"

    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_progress_bar_on_a_broken_stderr_in_process(tmp_path, clips, monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Broken())
    code = cli.main(["--input", str(clips["short"]), "--output", str(tmp_path / "o.mp4")])
    assert code == 0
    assert frame_count(tmp_path / "o.mp4") == 120


def test_pipeline_progress_bar_that_fails_is_turned_off(tmp_path, clips, monkeypatch):
    """The library path (no CLI guard): tqdm writing to a broken stream."""
    from warpcam.kernels import get_compositor
    from warpcam.realtime.io import NullSink, open_source
    from warpcam.realtime.pipeline import Pipeline

    class Tracker:
        def track(self, image, t=None):
            return []

    monkeypatch.setattr(sys, "stderr", _Broken())
    with open_source(clips["short"]) as src:
        stats = Pipeline(Tracker(), get_compositor("cpu"), []).run(src, NullSink(),
                                                                    progress=True)
    assert stats["frames"] == 120


# ------------------------------------------------------------------------------------------------
# 3. one line, never a traceback
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["2147483648", "99999999999999999999", "17", "0", "-1",
                                   "1e3"])
def test_max_faces_out_of_range_is_one_line(capsys, tmp_path, value):
    code, err = call(["--max-faces", value, "--output", tmp_path / "o.mp4"], capsys)
    assert_error(code, err, "--max-faces", "16" if value != "1e3" else "whole number")
    assert list(tmp_path.iterdir()) == []


def test_max_faces_16_is_accepted():
    a = cli.build_parser().parse_args(["--max-faces", "16"])
    assert a.max_faces == cli.MAX_FACES == 16


@pytest.mark.parametrize("argv", [["--width", "99999999999999999999"], ["--height", "0"],
                                  ["--fps", "1e300"], ["--fps", "inf"], ["--fps", "-1e1"]])
def test_capture_settings_out_of_range_are_one_line(capsys, argv):
    code, err = call(argv + ["--output", "null"], capsys)
    assert_error(code, err, argv[0])


def test_output_name_longer_than_the_file_system_allows(capsys, tmp_path, clips):
    out = tmp_path / ("x" * 300 + ".mp4")
    code, err = call(["--input", clips["short"], "--output", out, "--quiet"], capsys)
    assert_error(code, err, "too long", "304 bytes", "at most 255")
    assert list(tmp_path.iterdir()) == []


def test_output_name_of_245_characters(capsys, tmp_path, clips):
    """An image output of 245 characters is written (its temporary name is shortened); a
    video output is written or refused in one line (the video sink's temporary name)."""
    img = tmp_path / "in.png"
    cv2.imwrite(str(img), np.full((32, 32, 3), 90, np.uint8))
    out = tmp_path / ("p" * 241 + ".png")
    code, err = call(["--input", img, "--output", out, "--quiet"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.png", out.name])
    vid = tmp_path / ("v" * 241 + ".mp4")
    code, err = call(["--input", clips["short"], "--output", vid, "--quiet"], capsys)
    if code == 0:
        assert frame_count(vid) == 120
    else:
        assert_error(code, err)
        assert not vid.exists()
    assert all(not p.name.startswith(".") for p in tmp_path.iterdir())


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header says ``w x h`` (one row of data: a few hundred bytes on disk)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" + b"\x80" * (3 * w))) + chunk(b"IEND", b""))


def test_image_over_opencvs_pixel_limit_is_one_line(capsys, tmp_path):
    big = tmp_path / "huge.png"
    big.write_bytes(_png_header_only(40000, 30000))
    code, err = call(["--input", big, "--output", tmp_path / "out.png", "--quiet"], capsys)
    assert_error(code, err, "huge.png", "40000x30000", "OPENCV_IO_MAX_IMAGE_PIXELS")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.png"]


def test_unexpected_exception_is_one_line_with_a_hint(capsys, tmp_path, clips, monkeypatch):
    from warpcam.realtime.pipeline import Pipeline

    def boom(self, *a, **k):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(Pipeline, "run", boom)
    argv = ["--input", clips["short"], "--output", tmp_path / "o.mp4", "--quiet"]
    code, err = call(argv, capsys)
    line = assert_error(code, err, "ZeroDivisionError", "division by zero second line",
                        "WARPCAM_DEBUG=1", status=cli.EXIT_INTERNAL)
    assert line.startswith("warpcam: error: unexpected")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("WARPCAM_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main([str(a) for a in argv])


def test_os_error_outside_the_job_is_one_line(capsys, tmp_path, clips, monkeypatch):
    import warpcam.realtime.io as io_mod

    def open_sink(*a, **k):
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "/x/" + "n" * 50)

    monkeypatch.setattr(io_mod, "open_sink", open_sink)
    code, err = call(["--input", clips["short"], "--output", tmp_path / "o.mp4", "--quiet"],
                     capsys)
    assert_error(code, err, "File name too long", "nnnn")


def test_gaze_model_with_json_list_metadata_is_one_line_through_the_cli(capsys, tmp_path):
    from tests.test_model_safety import _meta_list, _meta_types

    img = tmp_path / "in.png"
    cv2.imwrite(str(img), np.full((32, 32, 3), 90, np.uint8))
    for make, why in ((_meta_list, "JSON object, not a JSON list"), (_meta_types, "")):
        model = make(tmp_path / f"{make.__name__}.pt2", tmp_path / "marker")
        code, err = call(["--input", img, "--output", tmp_path / "o.png", "--gaze-model", model],
                         capsys)
        assert_error(code, err, why)
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "marker").exists()


# ------------------------------------------------------------------------------------------------
# 4. values
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,text,value", [
    ("--gaze-pitch", "-1e1", -10.0), ("--gaze-yaw", "-1.5E1", -15.0), ("--smile", "-.5", -0.5),
    ("--smile", "-5e-1", -0.5), ("--camera-offset-cm", "-1e1", -10.0)])
def test_negative_numbers_in_exponent_form_are_values(flag, text, value):
    p = cli.build_parser()
    a = p.parse_args([flag, text])
    dest = next(act.dest for act in p._actions if flag in act.option_strings)
    assert getattr(a, dest) == value


@pytest.mark.parametrize("argv,needles", [
    (["--smile", "-inf"], ["--smile", "finite"]),
    (["--gaze-pitch", "-nan"], ["--gaze-pitch", "finite"]),
    (["--gaze-pitch", "-1e1", "--gaze-yaw", "-1e3"], ["--gaze-yaw", "[-30, 30]"]),
    (["--camera-offset-cm", "-50"], ["--camera-offset-cm", "within"]),
    (["--camera-offset-cm", "1e300"], ["--camera-offset-cm", "within"]),
])
def test_bad_numbers_are_refused_with_the_range(capsys, tmp_path, argv, needles):
    code, err = call(argv + ["--output", tmp_path / "o.mp4"], capsys)
    assert_error(code, err, *needles)


def test_negative_exponent_value_reaches_the_job(capsys, tmp_path):
    """``--gaze-pitch -1e1`` parses and the job goes on (to the missing input)."""
    code, err = call(["--gaze-pitch", "-1e1", "--smile", "-1e-1", "--input",
                      tmp_path / "missing.mp4", "--output", tmp_path / "o.mp4"], capsys)
    assert_error(code, err, "input not found")


@pytest.mark.parametrize("flag", ["--input", "--output"])
@pytest.mark.parametrize("blank", ["", "  "])
def test_empty_input_or_output_is_refused(capsys, tmp_path, flag, blank):
    code, err = call([flag, blank] + (["--output", "null"] if flag == "--input" else []),
                     capsys)
    assert_error(code, err, flag, "empty")


def test_gaze_model_that_is_a_directory(capsys, tmp_path):
    (tmp_path / "models").mkdir()
    code, err = call(["--gaze-model", tmp_path / "models", "--output", tmp_path / "o.mp4"],
                     capsys)
    assert_error(code, err, "--gaze-model", "is a directory, not a .pt2 file")


def test_calibrate_refuses_flags_it_does_not_know(capsys, tmp_path, monkeypatch):
    code, err = call(["calibrate", "--bogus", "1"], capsys)
    assert_error(code, err, "unrecognized arguments: --bogus 1")
    code, err = call(["calibrate", "--smile", "0.5"], capsys)  # not a calibrate flag
    assert_error(code, err, "--smile")
    code, err = call(["--calibrate", "--smile", "0.5", "--bogus"], capsys)
    assert_error(code, err, "unrecognized arguments: --bogus")
    code, err = call(["calibrate", "--seconds", "-1e1"], capsys)
    assert_error(code, err, "--seconds")
    # run.py --calibrate with warpcam's own flags still works (they are ignored)
    import warpcam.training.gaze.calibrate as training
    monkeypatch.setattr(training, "load_base", lambda base=None: None)
    code, err = call(["--calibrate", "--smile", "0.5", "--gaze-pitch", "-1e1", "--input",
                      tmp_path / "missing.mp4", "--quiet"], capsys)
    assert_error(code, err, "input not found")


# ------------------------------------------------------------------------------------------------
# 5. image outputs: full disk, a bad image in the middle of a folder
# ------------------------------------------------------------------------------------------------

def _noise_folder(folder: Path, names, size=128) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in names:
        cv2.imwrite(str(folder / n), rng.integers(0, 256, (size, size, 3), np.uint8))
    return folder


def _small_tmpfs(path: Path, size: str):
    if os.geteuid() != 0 or not sys.platform.startswith("linux") or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=False, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    return path


@pytest.mark.parametrize("where", ["tmpfs", "injected"])
def test_image_folder_output_on_a_full_disk(capsys, tmp_path, monkeypatch, where):
    src = _noise_folder(tmp_path / "in", ["a.png", "b.png", "c.png", "d.png"])  # ~49 KB each
    if where == "tmpfs":
        disk = _small_tmpfs(tmp_path / "disk", "80k")
    else:
        disk = tmp_path / "disk"
        disk.mkdir()
        real_open, n = open, [0]

        def full_open(path, mode="r", *a, **k):
            f = real_open(path, mode, *a, **k)
            if "w" in mode:
                n[0] += 1
                if n[0] >= 2:
                    f.close()
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return f

        monkeypatch.setattr(images_mod, "open", full_open, raising=False)
    try:
        code, err = call(["--input", src, "--output", disk / "out", "--quiet"], capsys)
        assert_error(code, err, "No space left on device", "disk full", "out")
        assert list(disk.iterdir()) == [], "the job left its output folder behind"
    finally:
        if where == "tmpfs":
            subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def test_single_image_output_on_a_full_disk(capsys, tmp_path, monkeypatch):
    src = _noise_folder(tmp_path / "in", ["a.png"])

    def full_open(path, mode="r", *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(images_mod, "open", full_open, raising=False)
    code, err = call(["--input", src / "a.png", "--output", tmp_path / "o.png", "--quiet"],
                     capsys)
    assert_error(code, err, "No space left on device", "o.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.parametrize("existing", [False, True])
def test_bad_image_in_the_middle_of_a_folder_writes_nothing(capsys, tmp_path, existing):
    src = _noise_folder(tmp_path / "in", ["a.png", "b.png", "c.png"], size=48)
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    code, err = call(["--input", src, "--output", out, "--quiet"], capsys)
    assert_error(code, err, "b.png", "no image written")
    if existing:
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"] + (["out"] if existing else [])
    # without the bad one: every image, in an output folder with the usual permissions
    (src / "b.png").unlink()
    code, err = call(["--input", src, "--output", out, "--quiet"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"] + (
        ["keep.txt"] if existing else [])
    if not existing:
        umask = os.umask(0)
        os.umask(umask)
        assert out.stat().st_mode & 0o777 == 0o777 & ~umask


# ------------------------------------------------------------------------------------------------
# 6. no mediapipe / TensorFlow Lite / absl lines on stderr
# ------------------------------------------------------------------------------------------------

def test_quiet_run_on_a_photo_prints_nothing(tmp_path):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), realdata.astronaut_bgr())
    r = run_cli(["--input", photo, "--output", tmp_path / "out.png", "--quiet", "--smile", "0.5",
                 "--eye-contact"])
    assert r.returncode == 0, r.stderr
    assert r.stderr == b"", r.stderr.decode(errors="replace")
    assert (tmp_path / "out.png").exists()


def test_loud_run_prints_only_warpcams_lines(tmp_path, clips):
    r = run_cli(["--input", clips["short"], "--output", tmp_path / "o.mp4"])
    assert r.returncode == 0, r.stderr
    parts = [p for p in r.stderr.decode().replace("\r", "\n").splitlines() if p.strip()]
    assert parts and all(p.startswith("warpcam") for p in parts), parts


# ------------------------------------------------------------------------------------------------
# 7. 16-bit RGBA and float32 TIFF: converted, same visible result
# ------------------------------------------------------------------------------------------------

def test_16bit_rgba_and_float_tiff_keep_their_brightness_and_alpha(capsys, tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    src.mkdir()
    rgba = rng.integers(0, 65536, (40, 56, 4)).astype(np.uint16)
    rgba[..., 3] = np.linspace(0, 65535, 56).astype(np.uint16)[None, :]
    assert cv2.imwrite(str(src / "rgba16.png"), rgba)
    flt = (rng.random((40, 56, 3)) * 0.84).astype(np.float32)  # mean about 107 grey levels
    assert cv2.imwrite(str(src / "float.tiff"), flt, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    out = tmp_path / "out"
    code, err = call(["--input", src, "--output", out, "--quiet"], capsys)
    assert code == 0, err

    got = cv2.imread(str(out / "rgba16.png"), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint8 and got.shape == (40, 56, 4)  # 8-bit, alpha kept
    assert abs(got[..., :3].mean() - rgba[..., :3].mean() / 257) <= 1.0
    assert np.abs(got[..., 3].astype(int) - np.round(rgba[..., 3] / 257)).max() <= 1
    assert np.abs(got[..., :3].astype(int) - np.round(rgba[..., :3] / 257)).max() <= 1

    got = cv2.imread(str(out / "float.tiff"), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint8 and got.shape == (40, 56, 3)
    assert abs(got.mean() - flt.mean() * 255) <= 1.0, (got.mean(), flt.mean() * 255)
    assert 100 < got.mean() < 115  # not the 157 of OpenCV's own float conversion

    # a JPEG output cannot hold alpha: composited onto white
    code, err = call(["--input", src / "rgba16.png", "--output", tmp_path / "flat.jpg",
                      "--quiet"], capsys)
    assert code == 0, err
    flat = cv2.imread(str(tmp_path / "flat.jpg")).astype(float)
    a = np.round(rgba[..., 3:] / 257) / 255
    want = np.round(rgba[..., :3] / 257) * a + 255 * (1 - a)
    assert abs(flat.mean() - want.mean()) <= 1.0


def test_image_source_frames_carry_alpha(tmp_path):
    bgra = np.zeros((8, 10, 4), np.uint8)
    bgra[..., 1] = 200
    bgra[..., 3] = 128
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    cv2.imwrite(str(tmp_path / "b.png"), bgra[..., :3])
    with ImageSource(tmp_path) as src:
        a, b = list(src)
    assert a.image.shape == (8, 10, 3) and (a.alpha == 128).all()
    assert b.alpha is None


# ------------------------------------------------------------------------------------------------
# 8. a webcam that comes back under another /dev/videoN (fake sysfs tree)
# ------------------------------------------------------------------------------------------------

class FakeSysfs:
    """``root/class/video4linux/videoN/{name,index,device->root/devices/...}``."""

    def __init__(self, root: Path):
        self.root = root
        self.v4l = root / "class" / "video4linux"
        self.v4l.mkdir(parents=True)

    def plug(self, n: int, name: str, port: str, node: int = 0):
        dev = self.root / "devices" / "pci0000:00" / "0000:00:14.0" / "usb1" / port / \
            f"{port}:1.0"
        dev.mkdir(parents=True, exist_ok=True)
        d = self.v4l / f"video{n}"
        d.mkdir()
        (d / "name").write_text(name + "\n")
        (d / "index").write_text(f"{node}\n")
        os.symlink(dev, d / "device")

    def unplug(self, n: int):
        shutil.rmtree(self.v4l / f"video{n}")


@pytest.fixture
def sysfs(tmp_path):
    fs = FakeSysfs(tmp_path / "sys")
    fs.plug(0, "HD Webcam C920", "1-2", node=0)
    fs.plug(1, "HD Webcam C920", "1-2", node=1)  # its metadata node
    return fs


def test_camera_identity_reads_name_port_and_node(sysfs):
    ident = camera_identity(0, sysfs_root=sysfs.v4l)
    assert ident == CameraIdentity(0, "HD Webcam C920",
                                   "devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0", 0)
    assert "1-2:1.0" in str(ident)
    assert camera_identity(7, sysfs_root=sysfs.v4l) is None


def test_find_camera_after_it_comes_back_as_another_node(sysfs):
    ident = camera_identity(0, sysfs_root=sysfs.v4l)
    assert find_camera(ident, sysfs_root=sysfs.v4l) == 0
    sysfs.unplug(0)
    sysfs.unplug(1)
    assert find_camera(ident, sysfs_root=sysfs.v4l) is None
    sysfs.plug(0, "Integrated Camera", "1-5")          # another camera took /dev/video0
    sysfs.plug(2, "HD Webcam C920", "1-2", node=0)     # ours, back as video2 (+ metadata)
    sysfs.plug(3, "HD Webcam C920", "1-2", node=1)
    assert find_camera(ident, sysfs_root=sysfs.v4l) == 2
    sysfs.unplug(2)
    sysfs.unplug(3)
    sysfs.plug(4, "HD Webcam C920", "1-3", node=0)     # the same camera in another socket
    assert find_camera(ident, sysfs_root=sysfs.v4l) == 4


class _Cam(Source):
    """A fake camera session: ``frames`` frames, then it fails like an unplugged one."""

    def __init__(self, spec: str, frames: int):
        super().__init__()
        self.spec, self._n = spec, frames
        self._width = self._height = 16

    @property
    def is_live(self):
        return True

    @property
    def fps(self):
        return 100.0

    def __iter__(self):
        for i in range(self._n):
            time.sleep(0.01)
            yield Frame(image=np.full((16, 16, 3), 7, np.uint8), index=i,
                        captured_at=time.perf_counter())
        raise SourceError(f"webcam {self.spec} stopped delivering frames")


def test_reconnecting_source_follows_the_camera_to_its_new_node(sysfs, caplog):
    opened = []

    def open_index(spec):
        if not (sysfs.v4l / f"video{spec}").exists():
            raise SourceError(f"cannot open webcam {spec}: /dev/video{spec} does not exist")
        opened.append(spec)
        if len(opened) == 1:  # the first session: unplugged after 5 frames, back as video2
            def replug():
                sysfs.unplug(0)
                sysfs.unplug(1)
                sysfs.plug(0, "Integrated Camera", "1-5")
                sysfs.plug(2, "HD Webcam C920", "1-2", node=0)
            return _Unplugged(spec, 5, replug)
        return _Cam(spec, 1000)

    first = open_index("0")
    src = ReconnectingSource(follow_camera(0, open_index, sysfs_root=sysfs.v4l), first=first,
                             retry_every=0.05, hold_after=0.05)
    statuses = []
    with src:
        deadline = time.monotonic() + 20
        for frame in src:
            statuses.append(getattr(frame, "status", None) or "ok")
            if len(opened) >= 2 and statuses[-1] == "ok" and "lost" in statuses:
                break
            assert time.monotonic() < deadline, (opened, statuses[-20:])
    assert opened == ["0", "2"]  # never the other camera that took /dev/video0
    assert src.reconnects == 1
    assert any("back as /dev/video2" in r.getMessage() for r in caplog.records)


class _Unplugged(_Cam):
    def __init__(self, spec, frames, on_unplug):
        super().__init__(spec, frames)
        self._on_unplug = on_unplug

    def __iter__(self):
        try:
            yield from super().__iter__()
        finally:
            self._on_unplug()


def test_follow_camera_without_sysfs_opens_the_same_index(tmp_path):
    calls = []
    reopen = follow_camera(3, lambda spec: calls.append(spec) or spec,
                           sysfs_root=tmp_path / "none")
    assert reopen.identity is None and reopen() == "3" and calls == ["3"]
