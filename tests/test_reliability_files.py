"""File outputs that must not lose or corrupt data (issue 9, "Data loss and corrupt output").

Every input is generated here with PyAV (tiny 64x48 frames, 1-3 s): two jobs on one output, an
input named like the output's temporary file, timestamps that jump back (MPEG-TS files joined
byte-wise), AVI with AAC, audio the output container cannot hold, and every other stream kept.
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from warpcam.core.types import Frame
from warpcam.realtime.io import (SinkError, VideoFileSink, VideoFileSource, lock_path_for,
                                 open_sink, open_source, temp_path_for)

REPO = Path(__file__).resolve().parents[1]
W, H = 64, 48


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------

def make_video(path, *, fmt=None, frames=25, fps=25, audio=(), rate=48000, layout="mono",
               subtitles=(), attachment=None):
    """A tiny test video: mpeg4 frames of changing grey, a sine per audio track (codec names in
    ``audio``), subtitle packets ``[(start_ms, text), ...]`` in an SRT stream."""
    out = av.open(str(path), "w", format=fmt)
    v = out.add_stream("mpeg4", rate=fps)
    v.width, v.height, v.pix_fmt = W, H, "yuv420p"
    tracks = []
    for codec in audio:
        a = out.add_stream(codec, rate=rate)
        a.layout = layout
        if codec.startswith("pcm_"):
            a.format = "s16"
        tracks.append(a)
    sub = None
    if subtitles:
        sub = out.add_mux_stream("subrip")
        sub.time_base = Fraction(1, 1000)
    if attachment:
        out.add_attachment(*attachment)
    for i in range(frames):
        f = av.VideoFrame.from_ndarray(np.full((H, W, 3), (i * 9) % 256, np.uint8),
                                       format="rgb24")
        f.pts, f.time_base = i, Fraction(1, fps)
        for p in v.encode(f):
            out.mux(p)
    for p in v.encode(None):
        out.mux(p)
    nch = len(av.AudioLayout(layout).channels)
    for k, a in enumerate(tracks):
        total, size, t = int(frames / fps * rate), a.codec_context.frame_size or 1024, 0
        while t < total:
            n = min(size, total - t)
            x = 0.3 * np.sin(np.arange(t, t + n) * 2 * np.pi * 330 * (k + 1) / rate)
            arr = np.tile(x, (nch, 1)) if a.format.is_planar else np.repeat(x, nch)[None]
            arr = (arr * 32767).astype(np.int16) if a.format.name.startswith("s16") \
                else arr.astype(np.float32)
            af = av.AudioFrame.from_ndarray(arr, format=a.format.name, layout=layout)
            af.sample_rate, af.pts, af.time_base = rate, t, Fraction(1, rate)
            for p in a.encode(af):
                out.mux(p)
            t += n
        for p in a.encode(None):
            out.mux(p)
    for start, text in subtitles:
        p = av.Packet(text.encode())
        p.stream, p.pts, p.dts, p.duration = sub, start, start, 300
        p.time_base = Fraction(1, 1000)
        out.mux(p)
    out.close()
    return Path(path)


def transcode(src, dst):
    """What the CLI does for a file job, without the tracker: every frame through the sink."""
    with open_source(src) as source:
        with open_sink(dst, source=source) as sink:
            for frame in source:
                sink.write(frame)
    return Path(dst)


def frame_times(path):
    with VideoFileSource(path) as src:
        return [f.pts_seconds for f in src]


def packets(path, kind):
    """``[(pts, dts, duration, time_base, bytes)]`` per stream of ``kind``, in stream order."""
    out = {}
    with av.open(str(path)) as c:
        for p in c.demux():
            if p.stream.type == kind and p.size:
                out.setdefault(p.stream.index, []).append(
                    (p.pts, p.dts, p.duration, p.time_base, bytes(p)))
    return [out[k] for k in sorted(out)]


def audio_span(path):
    """(start, end) seconds of each audio stream, from its packets' timestamps."""
    spans = []
    for pk in packets(path, "audio"):
        start = min(float(p[0] * p[3]) for p in pk)
        end = max(float((p[0] + (p[2] or 0)) * p[3]) for p in pk)
        spans.append((start, end))
    return spans


def codecs(path, kind):
    with av.open(str(path)) as c:
        return [s.codec_context.name for s in c.streams if s.type == kind]


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def blank(i, fps=25):
    return Frame(image=np.full((H, W, 3), i % 256, np.uint8), index=i, pts=i,
                 time_base=Fraction(1, fps), pts_seconds=i / fps)


def warnings_from(caplog, needle):
    return [r.getMessage() for r in caplog.records
            if r.name == "warpcam" and r.levelno >= logging.WARNING and needle in r.getMessage()]


# ------------------------------------------------------------------------------------------------
# 1. two jobs on the same output
# ------------------------------------------------------------------------------------------------

def test_second_job_on_the_same_output_fails_at_once_and_the_first_finishes(tmp_path):
    out = tmp_path / "same.mp4"
    first = VideoFileSink(out, width=W, height=H, fps=25)
    for i in range(30):
        first.write(blank(i))
    assert first.temp_path.exists() and first.lock_path == lock_path_for(out)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SinkError) as err:
        VideoFileSink(out, width=W, height=H, fps=25)
    msg = str(err.value)
    assert "\n" not in msg and f"pid {os.getpid()}" in msg and "another warpcam job" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created or deleted
    for i in range(30, 40):
        first.write(blank(i))
    first.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.mp4"]
    assert len(frame_times(out)) == 40


def test_second_job_names_the_process_that_holds_the_output(tmp_path):
    out = tmp_path / "shared.mp4"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from fractions import Fraction
        import numpy as np
        from warpcam.core.types import Frame
        from warpcam.realtime.io import VideoFileSink
        sink = VideoFileSink({str(out)!r}, width={W}, height={H}, fps=25)
        frame = lambda i: Frame(image=np.zeros(({H}, {W}, 3), np.uint8), index=i)
        for i in range(20):
            sink.write(frame(i))
        print("READY", flush=True)
        sys.stdin.readline()
        for i in range(20, 30):
            sink.write(frame(i))
        sink.close()
        """)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert child.stdout.readline().strip() == "READY", child.stderr.read()
        with pytest.raises(SinkError, match=rf"being written by another warpcam job \(pid "
                                            rf"{child.pid}\)"):
            VideoFileSink(out, width=W, height=H, fps=25)
        _, err = child.communicate("go\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.mp4"]
    assert len(frame_times(out)) == 30


def test_a_crashed_jobs_leftovers_are_reported_not_deleted(tmp_path, caplog):
    out = tmp_path / "out.mp4"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path_for(out).write_text(f"warpcam pid {dead.pid}\n")
    leftover = temp_path_for(out)
    leftover.write_bytes(b"half a video")
    caplog.set_level(logging.WARNING, logger="warpcam")
    sink = VideoFileSink(out, width=W, height=H, fps=25)
    assert sink.temp_path != leftover  # a name of its own
    for i in range(10):
        sink.write(blank(i))
    sink.close()
    lines = warnings_from(caplog, "stopped without finishing")
    assert len(lines) == 1 and f"pid {dead.pid}" in lines[0] and leftover.name in lines[0]
    assert leftover.read_bytes() == b"half a video"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, leftover.name])


def test_a_file_with_the_lock_name_that_is_not_a_lock_is_left_alone(tmp_path):
    out = tmp_path / "out.mp4"
    lock_path_for(out).write_text("my notes\n")
    with pytest.raises(SinkError, match="not a warpcam lock file"):
        VideoFileSink(out, width=W, height=H, fps=25)
    assert lock_path_for(out).read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock_path_for(out).name]


def test_an_output_name_of_the_longest_length_gets_short_temporary_names(tmp_path):
    out = tmp_path / ("n" * 251 + ".mp4")  # 255 bytes, the most a file system allows
    sink = VideoFileSink(out, width=W, height=H, fps=25)
    for i in range(10):
        sink.write(blank(i))
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 2 and all(len(n.encode()) <= 255 for n in names), names
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


# ------------------------------------------------------------------------------------------------
# 2. an input named like the output's temporary file
# ------------------------------------------------------------------------------------------------

def test_an_input_named_like_the_temporary_file_is_never_touched(tmp_path):
    out = tmp_path / "precious.mp4"
    src = make_video(temp_path_for(out), frames=15, audio=["aac"])
    digest = sha(src)
    transcode(src, out)
    assert sha(src) == digest and len(frame_times(out)) == 15
    with open_source(src) as source:  # a job that fails half-way does not touch it either
        sink = open_sink(tmp_path / "precious.mp4", source=source)
        for frame in source:
            sink.write(frame)
            if frame.index == 5:
                break
        sink.abort()
    assert sha(src) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name])


# ------------------------------------------------------------------------------------------------
# 3. timestamps that jump back: MPEG-TS files joined byte-wise
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_audio", [False, True], ids=["video-only", "with-audio"])
def test_joined_mpeg_ts_continues_the_timeline_like_a_player(tmp_path, caplog, with_audio):
    part = make_video(tmp_path / "part.ts", fmt="mpegts", frames=25,
                      audio=["aac"] if with_audio else ())
    joined = tmp_path / "joined.ts"
    joined.write_bytes(part.read_bytes() * 2)
    caplog.set_level(logging.WARNING, logger="warpcam")
    out = transcode(joined, tmp_path / "out.mp4")
    times = frame_times(out)
    assert len(times) == 50
    steps = np.diff(times)
    assert np.allclose(steps, 0.04, atol=1e-4), steps  # monotonic, at the input's spacing
    assert times[-1] - times[0] == pytest.approx(49 * 0.04, abs=1e-4)
    assert len(warnings_from(caplog, "jump back")) == 1
    if with_audio:
        src_audio, out_audio = packets(joined, "audio"), packets(out, "audio")
        assert [len(p) for p in out_audio] == [len(p) for p in src_audio]
        # every packet, in order (MP4 stores AAC without the ADTS header MPEG-TS has)
        assert all(a[4].endswith(b[4]) and len(a[4]) - len(b[4]) in (0, 7, 9)
                   for a, b in zip(src_audio[0], out_audio[0]))
        pts = [p[0] for p in out_audio[0]]
        assert all(b > a for a, b in zip(pts, pts[1:]))
        (start, end), = audio_span(out)
        assert end - start == pytest.approx(2 * audio_span(part)[0][1] - 2 * audio_span(part)[0][0],
                                            abs=0.03)


def test_joined_mpeg_ts_through_the_cli_exits_0(tmp_path, capsys):
    from warpcam.realtime import cli

    part = make_video(tmp_path / "part.ts", fmt="mpegts", frames=25, audio=["aac"])
    joined = tmp_path / "joined.ts"
    joined.write_bytes(part.read_bytes() * 2)
    out = tmp_path / "out.mp4"
    code = cli.main(["--input", str(joined), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert len(frame_times(out)) == 50 and len(packets(out, "audio")[0]) == \
        len(packets(joined, "audio")[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joined.ts", "out.mp4", "part.ts"]


# ------------------------------------------------------------------------------------------------
# 4. AVI output with AAC audio
# ------------------------------------------------------------------------------------------------

def test_avi_with_aac_keeps_every_video_timestamp(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=48, audio=["aac"])
    out = transcode(src, tmp_path / "out.avi")
    assert frame_times(out) == pytest.approx(frame_times(src), abs=1e-6)
    assert frame_times(out)[-1] == pytest.approx(47 / 25)
    assert [len(p) for p in packets(out, "audio")] == [len(p) for p in packets(src, "audio")]


# ------------------------------------------------------------------------------------------------
# 5. audio the output container cannot hold
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext,codec,layout,target", [
    (".mkv", "pcm_s16le", "stereo", ".mp4"),
    (".avi", "pcm_s16le", "mono", ".mp4"),
    (".mkv", "libopus", "stereo", ".mov"),
], ids=["pcm-mkv-to-mp4", "pcm-avi-to-mp4", "opus-mkv-to-mov"])
def test_audio_the_container_cannot_hold_is_converted_before_the_first_frame(
        tmp_path, caplog, ext, codec, layout, target):
    src = make_video(tmp_path / f"in{ext}", frames=50, audio=[codec], layout=layout)
    caplog.set_level(logging.WARNING, logger="warpcam")
    out = tmp_path / f"out{target}"
    with open_source(src) as source:
        with open_sink(out, source=source) as sink:
            lines = warnings_from(caplog, "converting audio to AAC")  # decided up front
            assert len(lines) == 1 and "\n" not in lines[0] and target in lines[0], lines
            for frame in source:
                sink.write(frame)
    assert codecs(out, "audio") == ["aac"]
    assert len(frame_times(out)) == 50
    (s0, e0), = audio_span(src)
    (s1, e1), = audio_span(out)
    one_frame = 1024 / 48000
    assert abs((e1 - max(s1, 0.0)) - (e0 - s0)) <= one_frame + 1e-3, ((s0, e0), (s1, e1))


# ------------------------------------------------------------------------------------------------
# 6. every stream the container can carry is kept; the others are named
# ------------------------------------------------------------------------------------------------

def test_two_audio_tracks_and_subtitles_survive_mkv_to_mkv(tmp_path):
    subs = [(0, "hello"), (500, "world")]
    src = make_video(tmp_path / "in.mkv", frames=25, audio=["aac", "aac"], subtitles=subs,
                     attachment=("notes.txt", "text/plain", b"attached"))
    out = transcode(src, tmp_path / "out.mkv")
    a_in, a_out = packets(src, "audio"), packets(out, "audio")
    assert len(a_out) == 2 and [[p[4] for p in t] for t in a_out] == \
        [[p[4] for p in t] for t in a_in]
    (sub_out,) = packets(out, "subtitle")
    assert [(float(p[0] * p[3]), p[4].decode()) for p in sub_out] == \
        [(0.0, "hello"), (0.5, "world")]
    with av.open(str(out)) as c:
        (att,) = c.streams.attachments
        assert att.name == "notes.txt" and bytes(att.data) == b"attached"


def test_streams_the_container_cannot_carry_are_named_in_one_line(tmp_path, caplog):
    src = make_video(tmp_path / "in.mkv", frames=25, audio=["aac", "aac"],
                     subtitles=[(0, "hello")])
    caplog.set_level(logging.WARNING, logger="warpcam")
    out = transcode(src, tmp_path / "out.mp4")
    lines = warnings_from(caplog, "not kept")
    assert len(lines) == 1 and "#3 subtitle" in lines[0] and "\n" not in lines[0], lines
    assert len(packets(out, "audio")) == 2  # both audio tracks still there


# ------------------------------------------------------------------------------------------------
# the exit-status rule: a stream that is not complete fails the job and leaves nothing
# ------------------------------------------------------------------------------------------------

def test_a_packet_missing_at_the_end_fails_and_leaves_nothing_behind(tmp_path):
    src = make_video(tmp_path / "in.mkv", frames=25, audio=["aac"])
    out = tmp_path / "out.mkv"
    with open_source(src) as source:
        sink = open_sink(out, source=source)
        for frame in source:
            sink.write(frame)
        next(iter(sink._kept.values())).packets_in += 1  # as if one packet had not been written
        with pytest.raises(SinkError, match=r"#1 audio .* packets but"):
            sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]
