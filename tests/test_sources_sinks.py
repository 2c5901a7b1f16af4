"""Sources and sinks on real data: decode, round trip with audio, failure handling, webcams;
the "newest frame wins" slot; the preview's HUD and keys.

The real videos live beside the checkout in ``../shared/data/real/videos`` (never copied into the
repository); tests that need them skip when that folder is absent. Outputs go to ``tmp_path``.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

av = pytest.importorskip("av")

from warpcam.realtime.io import (  # noqa: E402
    ImageSink,
    ImageSource,
    LatestSlot,
    NullSink,
    PreviewSink,
    SinkError,
    SlotClosed,
    SourceError,
    TeeSink,
    VideoFileSink,
    VideoFileSource,
    VirtualCameraSink,
    WebcamSource,
    draw_hud,
    handle_key,
    hud_box,
    hud_lines,
    open_sink,
    open_source,
    temp_path_for,
    to_bgr8,
)
from warpcam.core.types import Frame  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"
VIDEOS = REAL / "videos"
LOOKS_DOWN = VIDEOS / "looks_down_blinks_512.mp4"   # 512x512, 30 fps, 354 frames, AAC, moov last
TWO_FACES = VIDEOS / "two_faces_1280x720.mp4"       # 1280x720, 282 frames, moov first (faststart)

needs_videos = pytest.mark.skipif(
    not VIDEOS.is_dir(),
    reason=f"real test videos not found at {VIDEOS} (../shared/data/real beside the checkout)")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def transcode(src_spec, out_path) -> int:
    """The pipeline's file loop without effects: source -> sink, the sink aborted on any error."""
    n = 0
    with open_source(src_spec) as src, open_sink(out_path, source=src) as sink:
        for frame in src:
            sink.write(frame, frame.image)
            n += 1
    return n


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def audio_packets(path):
    """(codec name, time_base, [(pts, bytes)]) of the first audio stream, without decoding."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        pkts = [(p.pts, bytes(p)) for p in c.demux(s) if p.size]
        return s.codec_context.name, Fraction(s.time_base), pkts


def astronaut_bgr() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))


# ------------------------------------------------------------------------------------------------
# VideoFileSource
# ------------------------------------------------------------------------------------------------

@needs_videos
def test_video_source_decodes_every_frame_in_bgr_with_timestamps():
    with VideoFileSource(LOOKS_DOWN) as src:
        assert (src.width, src.height, src.fps) == (512, 512, 30.0)
        assert src.frame_count == 354 and src.audio_stream_present and not src.is_live
        assert src.time_base == Fraction(1, 15360) and src.rotation == 0
        frames = iter(src)
        first = next(frames)
        pts = [first.pts]
        for f in frames:
            assert f.image.shape == (512, 512, 3) and f.image.dtype == np.uint8
            assert f.index == len(pts)
            assert f.pts_seconds == pytest.approx(f.pts * 1 / 15360)
            pts.append(f.pts)
    assert len(pts) == 354
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert first.image.flags.c_contiguous and first.captured_at is not None

    # Channel order: OpenCV's own decoder returns BGR; a swapped frame would differ a lot.
    cap = cv2.VideoCapture(str(LOOKS_DOWN))
    ok, ref = cap.read()
    cap.release()
    assert ok
    same = np.abs(first.image.astype(int) - ref).mean()
    swapped = np.abs(first.image[..., ::-1].astype(int) - ref).mean()
    assert same < 3.0 < 10.0 < swapped, (same, swapped)


@needs_videos
def test_video_source_can_be_iterated_twice():
    with VideoFileSource(VIDEOS / "mead_w009_neutral_256.mp4") as src:
        a = [f.pts for f in src]
        b = [f.pts for f in src]
    assert a == b and len(a) == 104


def test_video_source_honours_display_rotation(tmp_path):
    """A phone-style file: picture stored landscape + display matrix rotating it 90 deg CCW."""
    img = np.full((64, 96, 3), 60, np.uint8)
    img[:16, :16] = (0, 0, 255)  # red block in the stored top-left corner
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.set_display_rotation(90)
        for i in range(3):
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
    with VideoFileSource(path) as src:
        assert src.rotation == 90 and (src.width, src.height) == (64, 96)
        frame = next(iter(src))
    assert frame.image.shape == (96, 64, 3)
    ys, xs = np.nonzero(frame.image[..., 2] > 200)
    # rotating CCW by 90 deg moves the top-left corner to the bottom-left
    assert ys.mean() > 80 and xs.mean() < 16
    with VideoFileSource(path, autorotate=False) as src:
        assert (src.width, src.height, src.rotation) == (96, 64, 0)


# ------------------------------------------------------------------------------------------------
# VideoFileSink round trip
# ------------------------------------------------------------------------------------------------

@needs_videos
def test_round_trip_keeps_frames_timestamps_audio_and_pixels(tmp_path):
    out = tmp_path / "out.mp4"
    assert transcode(LOOKS_DOWN, out) == 354
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temp file left

    # Audio: same codec, same packets, byte for byte (stream copy, no decode).
    codec_in, tb_in, pk_in = audio_packets(LOOKS_DOWN)
    codec_out, tb_out, pk_out = audio_packets(out)
    assert codec_out == codec_in == "aac"
    assert len(pk_out) == len(pk_in) == 509
    assert [b for _, b in pk_out] == [b for _, b in pk_in]
    assert [p * tb_out for p, _ in pk_out] == [p * tb_in for p, _ in pk_in]

    # Video: same count, same timestamps (exactly, in seconds), same pictures.
    n = 0
    worst = 99.0
    with VideoFileSource(LOOKS_DOWN) as a, VideoFileSource(out) as b:
        assert b.frame_count == 354 and (b.width, b.height) == (512, 512)
        for fa, fb in zip(a, b):
            assert fb.pts * fb.time_base == fa.pts * fa.time_base
            worst = min(worst, psnr(fa.image, fb.image))
            n += 1
    assert n == 354
    assert worst > 35.0, worst


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_file_sink_keeps_colours(tmp_path, ext):
    """Flat patches of saturated and grey colours come back within a few levels through the
    encoder and any decoder that reads the stream's BT.601 limited-range tags (PyAV here): the
    BGR -> YUV 4:2:0 conversion must use the matrix and range the stream is tagged with (a
    BT.709 matrix or a full range would move these patches by 5-30 levels)."""
    from warpcam.realtime.io import VideoFileSink

    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (255, 255, 0), (255, 0, 255),
               (0, 255, 255), (255, 255, 255), (0, 0, 0), (128, 128, 128), (40, 90, 200),
               (180, 140, 110), (60, 60, 60)]
    img = np.zeros((96, 64 * 6, 3), np.uint8)
    for k, c in enumerate(colours):
        img[48 * (k // 6):48 * (k // 6 + 1), 64 * (k % 6):64 * (k % 6 + 1)] = c
    out = tmp_path / f"colours{ext}"
    sink = VideoFileSink(out, width=img.shape[1], height=img.shape[0], fps=25)
    for i in range(5):
        sink.write(Frame(image=img, index=i))
    sink.close()
    with VideoFileSource(out) as src:
        got = [f.image for f in src]
    assert len(got) == 5
    for k, c in enumerate(colours):
        y, x = 48 * (k // 6) + 24, 64 * (k % 6) + 32
        mean = got[-1][y - 10:y + 10, x - 16:x + 16].reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - np.array(c)).max() < 4.0, (c, mean.round(1))


@needs_videos
def test_file_sink_pads_odd_sizes_by_replicating_the_edge(tmp_path):
    out = tmp_path / "odd.mp4"
    with VideoFileSource(VIDEOS / "mead_w009_happy_256.mp4") as src, \
            VideoFileSink(out, width=255, height=253, fps=src.fps, time_base=src.time_base) as sink:
        crops = []
        for f in src:
            crop = np.ascontiguousarray(f.image[:253, :255])
            sink.write(f, crop)
            crops.append(crop)
            if len(crops) == 10:
                break
    with VideoFileSource(out) as res:
        assert (res.width, res.height) == (256, 254)
        frames = [f.image for f in res]
    assert len(frames) == 10
    assert psnr(frames[5][:253, :255], crops[5]) > 35
    # the added column / row repeat the last ones (up to coding noise)
    assert np.abs(frames[5][:, 255].astype(int) - frames[5][:, 254]).mean() < 4
    assert np.abs(frames[5][253].astype(int) - frames[5][252]).mean() < 4


def test_file_sink_without_time_base_uses_index_and_fps(tmp_path):
    out = tmp_path / "plain.mkv"
    img = astronaut_bgr()[:64, :96]
    with VideoFileSink(out, width=96, height=64, fps=25) as sink:
        for i in range(5):
            sink.write(Frame(image=img, index=i), img)
    with VideoFileSource(out) as src:
        secs = [f.pts_seconds for f in src]
    assert secs == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16], abs=1e-3)


# ------------------------------------------------------------------------------------------------
# Broken inputs: SourceError naming the file, and nothing left in the output folder
# ------------------------------------------------------------------------------------------------

def _make_bad_input(kind: str, folder: Path) -> Path:
    if kind == "truncated_moov_last":
        data = LOOKS_DOWN.read_bytes()
        path = folder / "truncated.mp4"
        path.write_bytes(data[: int(len(data) * 0.4)])
    elif kind == "truncated_faststart":
        data = TWO_FACES.read_bytes()
        path = folder / "truncated_faststart.mp4"
        path.write_bytes(data[: int(len(data) * 0.4)])
    elif kind == "text":
        path = folder / "notes.mp4"
        path.write_text("this is not a video\n" * 50)
    elif kind == "empty":
        path = folder / "empty.mp4"
        path.write_bytes(b"")
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize("kind", ["truncated_moov_last", "truncated_faststart", "text", "empty"])
def test_broken_input_raises_source_error_and_leaves_no_output(tmp_path, kind):
    if kind.startswith("truncated") and not VIDEOS.is_dir():
        pytest.skip(f"real test videos not found at {VIDEOS}")
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    bad = _make_bad_input(kind, in_dir)
    with pytest.raises(SourceError) as err:
        transcode(bad, out_dir / "result.mp4")
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg
    if kind == "truncated_faststart":
        assert "truncated: decoded" in msg and "of 282 frames" in msg
    assert list(out_dir.iterdir()) == []


@needs_videos
def test_truncated_file_yields_the_good_frames_before_failing(tmp_path):
    bad = _make_bad_input("truncated_faststart", tmp_path)
    n = 0
    with VideoFileSource(bad) as src:
        assert src.frame_count == 282
        with pytest.raises(SourceError, match="truncated"):
            for _ in src:
                n += 1
    assert 50 < n < 282


def test_missing_input_and_folder():
    with pytest.raises(SourceError, match="input not found: /no/such/file.mp4"):
        open_source("/no/such/file.mp4")
    with pytest.raises(SourceError, match="input not found"):
        VideoFileSource("/no/such/file.mp4")


# ------------------------------------------------------------------------------------------------
# Sink checks up front
# ------------------------------------------------------------------------------------------------

@needs_videos
def test_sink_refuses_missing_folder_and_overwriting_the_input(tmp_path):
    copy = tmp_path / "in.mp4"
    shutil.copyfile(LOOKS_DOWN, copy)
    link = tmp_path / "link.mp4"
    os.symlink(copy, link)
    before = sorted(p.name for p in tmp_path.iterdir())
    with VideoFileSource(copy) as src:
        with pytest.raises(SinkError, match="output folder does not exist: .*missing"):
            open_sink(tmp_path / "missing" / "out.mp4", source=src)
        for same in (copy, tmp_path / "sub" / ".." / "in.mp4", link):
            (tmp_path / "sub").mkdir(exist_ok=True)
            with pytest.raises(SinkError, match="is the input file"):
                open_sink(same, source=src)
            (tmp_path / "sub").rmdir()
        with pytest.raises(SinkError, match="unsupported"):
            VideoFileSink(tmp_path / "out.gif", width=512, height=512, fps=30)
        with pytest.raises(SinkError, match="unsupported output"):
            open_sink(tmp_path / "out.png", source=src)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_file_sink_validates_frames_and_abort_removes_the_temp_file(tmp_path):
    out = tmp_path / "x.mp4"
    sink = VideoFileSink(out, width=64, height=48, fps=30)
    assert sink.temp_path == temp_path_for(out) == tmp_path / ".x.warpcam-tmp.mp4"
    assert not sink.temp_path.exists()  # PyAV creates the file at the first packet
    with pytest.raises(ValueError, match=r"48x64x3 uint8 .*\(48, 65, 3\)"):
        sink.write(Frame(image=np.zeros((48, 65, 3), np.uint8), index=0))
    with pytest.raises(ValueError, match="float32"):
        sink.write(Frame(image=np.zeros((48, 64, 3), np.float32), index=0))
    for i in range(100):  # the encoder buffers a few frames before its first packet
        sink.write(Frame(image=np.zeros((48, 64, 3), np.uint8), index=i))
        if sink.temp_path.exists():
            break
    assert sink.temp_path.exists() and not out.exists()
    sink.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkError, match="after close"):
        sink.write(Frame(image=np.zeros((48, 64, 3), np.uint8), index=100))

    # an exception inside a with-block aborts; closing with no frame keeps nothing either
    with pytest.raises(RuntimeError, match="boom"):
        with VideoFileSink(out, width=64, height=48, fps=30) as s2:
            s2.write(Frame(image=np.zeros((48, 64, 3), np.uint8), index=0))
            raise RuntimeError("boom")
    with pytest.raises(SinkError, match="no frames"):
        with VideoFileSink(out, width=64, height=48, fps=30):
            pass
    assert list(tmp_path.iterdir()) == []


def test_virtual_camera_without_device_says_how_to_get_one():
    try:
        cam = VirtualCameraSink(64, 48, 30)
    except SinkError as exc:
        msg = str(exc)
    else:
        cam.close()
        pytest.skip(f"a virtual camera device exists here ({cam.device})")
    assert "\n" not in msg
    if sys.platform.startswith("linux"):
        assert "v4l2loopback" in msg and "sudo modprobe v4l2loopback" in msg
    elif sys.platform.startswith("win"):
        assert "OBS" in msg
    elif sys.platform == "darwin":
        assert "OBS" in msg


@pytest.mark.skipif(bool(os.environ.get("DISPLAY")) or not sys.platform.startswith("linux"),
                    reason="a display exists here")
def test_preview_without_display_fails_cleanly_and_aborts_the_main_sink(tmp_path):
    with pytest.raises(SinkError, match="no display for --preview"):
        PreviewSink()
    img = astronaut_bgr()
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img)
    with ImageSource(path) as src:
        with pytest.raises(SinkError, match="no display"):
            open_sink(tmp_path / "b.png", source=src, preview=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_null_and_tee_sinks():
    img = np.zeros((8, 10, 3), np.uint8)
    a, b = NullSink(), NullSink()
    with TeeSink([a, b]) as tee:
        for i in range(3):
            tee.write(Frame(image=img, index=i))
        tee.set_hud_lines(["fps 30"])
        assert tee.poll_key() is None and not tee.is_live
    assert a.frames_written == b.frames_written == tee.frames_written == 3
    assert a.closed and b.closed
    with pytest.raises(ValueError, match=r"HxWx3 uint8 .*\(8, 10\)"):
        NullSink().write(Frame(image=img[..., 0], index=0))


# ------------------------------------------------------------------------------------------------
# Webcam (no device here: fake captures fed from a real video)
# ------------------------------------------------------------------------------------------------

class FakeCapture:
    """cv2.VideoCapture stand-in: serves frames at ``fps``; fails after ``fail_after`` frames."""

    def __init__(self, frames, fps=200.0, fail_after=None, raise_after=None, opened=True):
        self.frames, self.period = frames, 1.0 / fps
        self.fail_after, self.raise_after = fail_after, raise_after
        self.opened, self.released, self.n = opened, False, 0
        self.props = {}
        self.read_thread = None

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def read(self):
        self.read_thread = threading.current_thread()
        time.sleep(self.period)
        if self.raise_after is not None and self.n >= self.raise_after:
            raise OSError("USB device disconnected")
        if self.fail_after is not None and self.n >= self.fail_after:
            return False, None
        img = self.frames[self.n % len(self.frames)]
        self.n += 1
        return True, img.copy()

    def release(self):
        self.released = True


@pytest.fixture(scope="module")
def real_frames():
    if VIDEOS.is_dir():
        with VideoFileSource(VIDEOS / "mead_w009_happy_256.mp4") as src:
            return [f.image for f, _ in zip(src, range(40))]
    base = astronaut_bgr()[::2, ::2]
    return [np.roll(base, 3 * i, axis=1) for i in range(40)]


def test_webcam_missing_device_names_the_index():
    with pytest.raises(SourceError, match=r"cannot open webcam 99"):
        WebcamSource(99)
    with pytest.raises(SourceError, match=r"cannot open webcam 7: .*busy"):
        WebcamSource(7, capture_factory=lambda i, api: FakeCapture([], opened=False))


def test_webcam_grabber_keeps_only_the_newest_frame(real_frames):
    fake = FakeCapture(real_frames, fps=200)
    with WebcamSource(3, 640, 480, 30, capture_factory=lambda i, api: fake,
                      frame_timeout=1.0) as cam:
        assert cam.is_live and (cam.width, cam.height) == real_frames[0].shape[1::-1]
        assert fake.props[cv2.CAP_PROP_BUFFERSIZE] == 1
        assert fake.props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
        assert (fake.props[cv2.CAP_PROP_FRAME_WIDTH], fake.props[cv2.CAP_PROP_FRAME_HEIGHT],
                fake.props[cv2.CAP_PROP_FPS]) == (640, 480, 30)
        got = []
        for frame in cam:
            got.append(frame)
            if len(got) == 6:
                break
            time.sleep(0.06)  # a slow consumer: ~12 camera frames arrive meanwhile
        assert cam.dropped > 0
    idx = [f.index for f in got]
    assert all(b - a > 1 for a, b in zip(idx[1:], idx[2:])), idx  # old frames were skipped
    assert all(b.captured_at > a.captured_at and b.pts_seconds > a.pts_seconds
               for a, b in zip(got, got[1:]))
    for f in got:  # pixels are the real frames, untouched (BGR, no copy artefacts)
        assert np.array_equal(f.image, real_frames[f.index % len(real_frames)])
    fake.read_thread.join(2.0)
    assert fake.released


def test_webcam_that_stops_delivering_raises_within_the_timeout(real_frames):
    fake = FakeCapture(real_frames, fps=200, fail_after=5)
    cam = WebcamSource(2, capture_factory=lambda i, api: fake, frame_timeout=0.3)
    n = 0
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="webcam 2 stopped delivering frames"):
        with cam:
            for _ in cam:
                n += 1
    assert 1 <= n <= 5 and time.monotonic() - t0 < 2.0

    fake = FakeCapture(real_frames, fps=200, raise_after=3)
    with pytest.raises(SourceError, match="webcam 4 stopped delivering frames.*disconnected"):
        with WebcamSource(4, capture_factory=lambda i, api: fake, frame_timeout=5.0) as cam:
            for _ in cam:
                pass

    fake = FakeCapture(real_frames, fps=200, fail_after=0)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="cannot open webcam 5: no frame within 0.2 s"):
        WebcamSource(5, capture_factory=lambda i, api: fake, first_frame_timeout=0.2)
    assert time.monotonic() - t0 < 2.0


# ------------------------------------------------------------------------------------------------
# Still images, ImageSink and the HUD
# ------------------------------------------------------------------------------------------------

def test_image_source_single_file_is_bgr(tmp_path):
    bgr = astronaut_bgr()
    path = tmp_path / "astronaut.png"
    assert cv2.imwrite(str(path), bgr)
    src = open_source(str(path))
    assert isinstance(src, ImageSource)
    with src:
        frames = list(src)
    assert len(frames) == 1 and frames[0].name == "astronaut.png"
    assert np.array_equal(frames[0].image, bgr)
    # the astronaut's suit patch is red-ish: in BGR the last channel dominates
    assert (src.width, src.height, src.fps, src.frame_count) == (512, 512, None, 1)


def test_image_folder_sorted_mixed_formats_and_errors(tmp_path):
    bgr = astronaut_bgr()[::4, ::4]  # 128x128
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "b_gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "a_color.jpg"), bgr)
    cv2.imwrite(str(folder / "c_rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "d_16bit.png"), bgr.astype(np.uint16) * 257)
    (folder / "notes.txt").write_text("not an image")
    cv2.imwrite(str(folder / ".hidden.png"), bgr)
    with open_source(folder) as src:
        assert isinstance(src, ImageSource) and src.frame_count == 4
        frames = list(src)
    assert [f.name for f in frames] == ["a_color.jpg", "b_gray.png", "c_rgba.png", "d_16bit.png"]
    for f in frames:
        assert f.image.shape == (128, 128, 3) and f.image.dtype == np.uint8
    assert np.array_equal(frames[2].image, bgr)
    assert np.abs(frames[3].image.astype(int) - bgr).max() <= 1
    g = frames[1].image
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])

    (folder / "e_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with ImageSource(folder) as src:
        with pytest.raises(SourceError, match="cannot read image .*e_broken.png"):
            list(src)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images in folder .*empty"):
        ImageSource(empty)
    assert to_bgr8(np.ones((2, 3), np.float32)).tolist() == [[[255] * 3] * 3] * 2


def test_image_sink_writes_names_into_a_folder_and_single_files(tmp_path):
    bgr = astronaut_bgr()[::4, ::4]
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    for name in ("x.png", "y.png"):
        cv2.imwrite(str(src_dir / name), bgr)
    out_dir = tmp_path / "out"
    assert transcode(src_dir, out_dir) == 2
    assert sorted(p.name for p in out_dir.iterdir()) == ["x.png", "y.png"]
    assert np.array_equal(cv2.imread(str(out_dir / "x.png")), bgr)
    with ImageSource(src_dir) as src:
        with pytest.raises(SinkError, match="is the input"):
            open_sink(src_dir, source=src)
        with pytest.raises(SinkError, match="give a folder"):
            open_sink(tmp_path / "one.png", source=src)

    single = tmp_path / "single.png"
    assert transcode(src_dir / "x.png", single) == 1
    assert np.array_equal(cv2.imread(str(single)), bgr)
    sink = ImageSink(tmp_path / "aborted.png")
    sink.write(Frame(image=bgr, index=0))
    assert temp_path_for(tmp_path / "aborted.png").exists()
    sink.abort()
    assert not any(p.name.startswith(".") or p.name == "aborted.png"
                   for p in tmp_path.iterdir())


def test_draw_hud_changes_only_its_box():
    img = astronaut_bgr()
    before = img.copy()
    lines = ["fps 29.8", "track 6.1 ms", "gaze +8.0 deg"]
    out = draw_hud(img, lines)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, before)  # pure
    x0, y0, x1, y1 = hud_box(img.shape, lines)
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], img[outside])
    box_in, box_out = img[y0:y1, x0:x1], out[y0:y1, x0:x1]
    assert (box_in != box_out).any(axis=2).mean() > 0.5  # darkened, with text
    assert np.array_equal(draw_hud(img, []), img)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        draw_hud(img[..., 0], lines)


# ------------------------------------------------------------------------------------------------
# LatestSlot: the one "newest frame wins" hand-over between threads
# ------------------------------------------------------------------------------------------------

def test_latest_slot_newest_wins_and_counts_drops():
    slot = LatestSlot()
    assert slot.take(timeout=0) is None and slot.seq == -1 and slot.taken_seq == -1
    assert slot.put("a") is False
    assert slot.put("b") is True                      # "a" was never taken: dropped
    assert slot.take(timeout=0, with_seq=True) == (1, "b")
    assert slot.dropped == 1 and slot.taken_seq == 1 and not slot.pending
    assert slot.take(timeout=0.01) is None             # nothing new since
    assert slot.put("c") is False                      # "b" was taken: not a drop
    assert slot.peek(timeout=0) == "c" and slot.pending  # peek leaves it untaken ...
    assert slot.put("d") is True and slot.dropped == 2   # ... so replacing it is a drop
    assert slot.take() == "d" and slot.seq == 3
    with pytest.raises(ValueError, match="None"):
        slot.put(None)


def test_latest_slot_close_delivers_the_last_item_then_ends():
    slot = LatestSlot()
    slot.put(1)
    slot.close()
    assert slot.put(2) is False and slot.closed        # after close: ignored
    assert slot.take() == 1                            # put before close: still delivered
    with pytest.raises(SlotClosed):
        slot.take()
    with pytest.raises(SlotClosed):
        slot.peek(timeout=0)
    failed = LatestSlot()
    failed.put("x")
    failed.close(RuntimeError("tracker failed"))
    failed.close()                                     # the first close wins
    assert failed.take() == "x"
    with pytest.raises(RuntimeError, match="tracker failed"):
        failed.take(timeout=1)


def test_latest_slot_waits_wake_on_put_and_close_and_time_out():
    slot = LatestSlot()
    threading.Timer(0.05, slot.put, args=("late",)).start()
    t0 = time.monotonic()
    assert slot.take(timeout=5) == "late" and time.monotonic() - t0 < 2
    threading.Timer(0.05, slot.close).start()
    t0 = time.monotonic()
    with pytest.raises(SlotClosed):
        slot.take()                                    # no timeout: the close wakes it
    assert time.monotonic() - t0 < 2
    t0 = time.monotonic()
    assert LatestSlot().take(timeout=0.05) is None and time.monotonic() - t0 >= 0.04


def test_latest_slot_between_threads_loses_nothing_but_counted_drops():
    slot = LatestSlot()
    n = 3000

    def produce():
        for i in range(n):
            slot.put(i)
            if i % 7 == 0:
                time.sleep(0)
        slot.close()

    th = threading.Thread(target=produce)
    th.start()
    got = []
    while True:
        try:
            seq, item = slot.take(timeout=5, with_seq=True)
        except SlotClosed:
            break
        assert seq == item                             # numbered in put order
        got.append(item)
    th.join()
    assert got == sorted(set(got)) and got[-1] == n - 1   # in order, newest last
    assert len(got) + slot.dropped == n                   # every item taken or counted


def test_latest_slot_shares_a_condition():
    cv = threading.Condition()
    slot = LatestSlot(cv)
    assert slot.cond is cv
    with cv:                                           # re-entrant: usable under the lock
        slot.put("a")
        assert slot.take(timeout=0) == "a" and slot.take(timeout=0) is None


# ------------------------------------------------------------------------------------------------
# Preview: HUD lines and keys (warpcam.realtime.io.preview), on fake pipelines
# ------------------------------------------------------------------------------------------------

from dataclasses import dataclass  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from warpcam.realtime.effects.base import Effect, EffectSpec, LiveSettings, setting  # noqa: E402
from warpcam.realtime.pipeline import StageTimer  # noqa: E402


@dataclass(frozen=True)
class ToySettings:
    on: bool = setting(True, help="toy switch")
    amount: float = setting(0.5, help="toy amount", lo=-1.0, hi=1.0, step=0.1)
    count: int = setting(2, help="toy count", lo=0, hi=3)


class ToyEffect(Effect):
    name = "toy"

    def jobs(self, frame, faces, t, crops):
        return []

    def hud(self) -> str:
        s = self.settings.get()
        return f"toy {'on' if s.on else 'off'} {s.amount:+.1f} x{s.count}"


TOY_SPEC = EffectSpec(name="toy", settings_cls=ToySettings,
                      factory=lambda live, options: ToyEffect(live),
                      hud_keys=(("t", "on", None), ("]", "amount", 0.1), ("[", "amount", -0.1),
                                ("+", "count", 1)))


def toy_pipeline(frames=1, **settings):
    effect = ToyEffect(LiveSettings(ToySettings(**settings)))
    effect.spec = TOY_SPEC
    return SimpleNamespace(effects=[effect], timer=StageTimer(), frames=frames), effect


def builtin_effects(pitch=10.0, smile=0.5):
    from warpcam.realtime.effects import build_effects
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects.smile import SmileSettings

    return build_effects(gaze=GazeSettings(pitch_deg=pitch), smile=SmileSettings(smile))


def fake_pipeline(effects, frames=1):
    return SimpleNamespace(effects=effects, timer=StageTimer(), frames=frames)


def keyed_preview(monkeypatch, keys=()):
    """A PreviewSink that needs no display; its ``poll_key`` returns ``keys`` in order."""
    import warpcam.realtime.io.preview as preview

    monkeypatch.setattr(preview, "_display_problem", lambda: None)
    sink = PreviewSink()
    queue = list(keys)
    sink.poll_key = lambda: queue.pop(0) if queue else None
    hud = []
    sink.set_hud_lines = lambda lines: hud.append(list(lines))
    return sink, hud


def test_handle_key_toggles_steps_clips_and_quits():
    p, toy = toy_pipeline(amount=0.95, count=2)
    assert handle_key("t", p) is True and toy.settings.get().on is False
    assert handle_key("t", p) is True and toy.settings.get().on is True
    assert handle_key("]", p) is True and toy.settings.get().amount == 1.0   # clipped at hi
    assert handle_key("+", p) is True and toy.settings.get().count == 3
    assert handle_key("+", p) is True and toy.settings.get().count == 3      # int, clipped
    assert isinstance(toy.settings.get().count, int)
    version = toy.settings.version
    assert handle_key("x", p) is True and handle_key(None, p) is True        # nothing changes
    assert toy.settings.version == version
    assert handle_key("q", p) is False
    effect_without_keys = ToyEffect(LiveSettings(ToySettings()))
    effect_without_keys.spec = EffectSpec(name="toy", settings_cls=ToySettings,
                                          factory=TOY_SPEC.factory)
    assert handle_key("t", fake_pipeline([effect_without_keys])) is True
    assert effect_without_keys.settings.get().on is True


def test_hotkeys_toggle_gaze_change_smile_and_quit(static_tracker, astronaut, monkeypatch):
    """The old ``Pipeline._handle_keys`` cases, now through ``PreviewSink.frame_done``."""
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.pipeline import Pipeline

    p = Pipeline(static_tracker, CpuCompositor(), builtin_effects(pitch=10.0, smile=0.5))
    gaze, smile = p.settings["gaze"], p.settings["smile"]
    sink, _ = keyed_preview(monkeypatch, keys=["g", "]", "]", "[", "x", None, "q"])
    done = lambda: sink.frame_done(p)  # noqa: E731
    assert done() is True and gaze.get().enabled is False
    assert done() is True and smile.get().strength == pytest.approx(0.6)
    assert done() is True and smile.get().strength == pytest.approx(0.7)
    assert done() is True and smile.get().strength == pytest.approx(0.6)
    assert done() is True                               # unknown key: nothing changes
    assert smile.get().strength == pytest.approx(0.6) and not gaze.get().enabled
    assert done() is True                               # no key
    assert done() is False                              # q quits
    # The changed settings reach the effects on the next frame: no eye jobs, a mouth job at 0.6.
    out, faces, jobs = p.process(Frame(astronaut.copy(), 0))
    assert [j.kind for j in jobs] == ["mouth"]
    assert jobs[0].meta["strength"] == pytest.approx(0.6, abs=0.05)
    assert handle_key("g", p) is True and gaze.get().enabled is True


def test_hotkeys_clamp_the_smile_to_plus_minus_one():
    p = fake_pipeline(builtin_effects(smile=0.95))
    smile = next(e for e in p.effects if e.name == "smile").settings
    handle_key("]", p)
    assert smile.get().strength == 1.0
    handle_key("]", p)
    assert smile.get().strength == 1.0
    smile.update(strength=-0.95)
    for _ in range(3):
        handle_key("[", p)
    assert smile.get().strength == -1.0
    # Twenty steps up from -1 land exactly on +1 (no float drift like 0.9999999).
    for _ in range(20):
        handle_key("]", p)
    assert smile.get().strength == 1.0
    for _ in range(10):
        handle_key("[", p)
    assert smile.get().strength == 0.0


def test_hud_lines_show_fps_stage_medians_and_every_effect():
    p = fake_pipeline(builtin_effects(smile=0.5))
    every = "gaze on (landmark)  smile +0.5  keep smiling off  au off"
    assert hud_lines(p) == ["fps   0.0", every]
    for ms in range(1, 41):  # only the last 30 count: 11..40 ms
        p.timer.add("total", 0.040)
        p.timer.add("tracking", ms / 1000.0)
    lines = hud_lines(p)
    assert lines[0] == "fps  25.0"
    assert lines[1] == "tracking   25.5 ms"
    assert len(lines) == 3 and lines[2] == every
    toy_p, _ = toy_pipeline(on=False, amount=-0.5)
    assert hud_lines(toy_p)[-1] == "toy off -0.5 x2"


def test_preview_frame_done_sends_the_hud_every_15_frames_and_applies_keys(monkeypatch):
    sink, hud = keyed_preview(monkeypatch, keys=[None, "]", None, "q"])
    p, toy = toy_pipeline(frames=1)
    assert sink.frame_done(p) is True and len(hud) == 1       # frame 1: HUD sent
    assert hud[0][-1] == "toy on +0.5 x2" and hud[0][0].startswith("fps")
    p.frames = 2
    assert sink.frame_done(p) is True and len(hud) == 1       # not every frame
    assert toy.settings.get().amount == 0.6
    p.frames = 16
    assert sink.frame_done(p) is True and len(hud) == 2       # frame 16: again
    assert hud[1][-1] == "toy on +0.6 x2"
    p.frames = 17
    assert sink.frame_done(p) is False                        # q quits
    sink.close()


def test_preview_without_a_shown_window_polls_no_key(monkeypatch):
    import warpcam.realtime.io.preview as preview

    monkeypatch.setattr(preview, "_display_problem", lambda: None)
    sink = PreviewSink()
    p, toy = toy_pipeline()
    assert sink.poll_key() is None and sink.frame_done(p) is True  # no cv2 call before a write
    sink.close()


def test_tee_frame_done_reaches_every_member_and_stops_on_any(monkeypatch):
    preview, hud = keyed_preview(monkeypatch, keys=["t", "q"])
    calls = []

    class Counting(NullSink):
        def frame_done(self, pipeline):
            calls.append(pipeline.frames)
            return True

    p, toy = toy_pipeline(frames=1)
    tee = TeeSink([NullSink(), preview, Counting()])
    assert tee.frame_done(p) is True and toy.settings.get().on is False and len(hud) == 1
    assert tee.frame_done(p) is False and calls == [1, 1]   # the member after the preview too
    assert NullSink().frame_done(p) is True                 # the base: go on
    tee.close()
