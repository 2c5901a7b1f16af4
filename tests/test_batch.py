"""``warpcam batch`` on a local process pool: same outputs as one ``warpcam`` run per file, the
manifest (rerun skips, a touched input is redone), a broken file fails alone, Ctrl-C keeps what
was finished and leaves no partial file. Real clips (MEAD, 256 px), trimmed to a few frames."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from tests.helpers import signal_when, with_stop_signals  # noqa: E402
from tests.realdata import trim_video as trim  # noqa: E402

VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "videos"
CLIPS = {"a.mp4": "mead_w009_neutral_256.mp4", "sub/b.mp4": "mead_w009_happy_256.mp4"}
FLAGS = ["--gaze-pitch", "12", "--smile", "0.6", "--backend", "cpu"]


def decode(path: Path) -> list:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def make_tree(root: Path, frames: int = 12, broken: bool = False) -> Path:
    if not VIDEOS.is_dir():
        pytest.skip("shared videos missing")
    for rel, name in CLIPS.items():
        trim(VIDEOS / name, root / rel, frames)
    if broken:
        (root / "sub" / "broken.mp4").write_bytes(b"not a video, just bytes\n" * 40)
    (root / "notes.txt").write_text("not matched by the default pattern\n")
    return root


def run_batch(*argv) -> int:
    from warpcam.realtime import batch

    return batch.main([str(a) for a in argv] + ["--quiet"])


def report(out: Path) -> dict:
    r = json.loads((out / "warpcam-batch-report.json").read_text())
    return {f["input"]: f for f in r["files"]} | {"_totals": r["totals"]}


def leftovers(out: Path) -> list:
    return sorted(p.name for p in out.rglob(".*") if "warpcam" in p.name and p.is_file()
                  and not p.name.endswith("-lock"))


def test_two_workers_give_the_outputs_of_single_runs_and_a_broken_file_fails_alone(tmp_path):
    from warpcam.realtime import cli

    src = make_tree(tmp_path / "in", broken=True)
    out = tmp_path / "out"
    t0 = time.monotonic()
    code = run_batch(src, out, *FLAGS, "--workers", "2")
    wall = time.monotonic() - t0
    assert code == 1  # one file failed
    rep = report(out)
    assert rep["sub/broken.mp4"]["status"] == "failed"
    assert "cannot open video" in rep["sub/broken.mp4"]["error"]
    assert "\n" not in rep["sub/broken.mp4"]["error"]
    assert not (out / "sub" / "broken.mp4").exists()
    assert "notes.txt" not in rep
    assert rep["_totals"]["done"] == 2 and rep["_totals"]["failed"] == 1
    assert rep["_totals"]["cpu_seconds"] == pytest.approx(
        sum(rep[r]["cpu_seconds"] for r in rep if r != "_totals"), abs=0.01)
    for rel in CLIPS:
        row = rep[rel]
        assert row["status"] == "done" and row["frames"] == 12 and row["error"] is None
        assert row["fps"] > 0 and 0 < row["seconds"] < wall and 0 < row["cpu_seconds"]
        single = tmp_path / "single" / rel
        single.parent.mkdir(parents=True, exist_ok=True)
        assert cli.main(["--input", str(src / rel), "--output", str(single), "--quiet",
                         *FLAGS]) == 0
        got, want, orig = decode(out / rel), decode(single), decode(src / rel)
        assert len(got) == len(want) == 12
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        # the effects did edit the face (else the comparison above proves nothing)
        assert max(np.abs(g.astype(int) - o).max() for g, o in zip(got, orig)) > 30
    man = json.loads((out / "warpcam-batch-manifest.json").read_text())["files"]
    assert set(man) == set(CLIPS)  # the failed file is not recorded as complete
    e = man["a.mp4"]
    assert e["size"] == (src / "a.mp4").stat().st_size and len(e["sha256"]) == 64
    assert e["settings"]["flags"]["effect__gaze__pitch_deg"] == 12.0 and e["version"]
    assert leftovers(out) == []


def test_rerun_skips_all_and_a_touched_input_is_redone_alone(tmp_path):
    src = make_tree(tmp_path / "in", frames=8)
    out = tmp_path / "out"
    assert run_batch(src, out, *FLAGS, "--workers", "2") == 0
    stamp = {rel: (out / rel).stat().st_mtime_ns for rel in CLIPS}
    assert run_batch(src, out, *FLAGS, "--workers", "2") == 0
    rep = report(out)
    assert [rep[r]["status"] for r in CLIPS] == ["skipped", "skipped"]
    assert {rel: (out / rel).stat().st_mtime_ns for rel in CLIPS} == stamp
    st = (src / "sub/b.mp4").stat()
    os.utime(src / "sub/b.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert run_batch(src, out, *FLAGS, "--workers", "2") == 0
    rep = report(out)
    assert rep["a.mp4"]["status"] == "skipped" and rep["sub/b.mp4"]["status"] == "done"
    assert (out / "a.mp4").stat().st_mtime_ns == stamp["a.mp4"]
    assert (out / "sub/b.mp4").stat().st_mtime_ns != stamp["sub/b.mp4"]
    # other settings: every file is redone
    assert run_batch(src, out, "--gaze-pitch", "5", "--workers", "2") == 0
    assert [report(out)[r]["status"] for r in CLIPS] == ["done", "done"]


def test_usage_errors_are_one_line_before_any_work(tmp_path, capsys):
    src = make_tree(tmp_path / "in", frames=2)
    assert run_batch(src, src) == 2
    assert run_batch(tmp_path / "missing", tmp_path / "o") == 2
    assert run_batch(src, tmp_path / "o", "--output", "x.mp4") == 2
    with pytest.raises(SystemExit) as exc:
        run_batch(src, tmp_path / "o", "--gaze-pitch", "nope")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "OUT_DIR is IN_DIR" in err and "is not a folder" in err and "not a batch flag" in err
    assert not (tmp_path / "o").exists()


def test_ctrl_c_keeps_finished_files_leaves_no_partial_one_and_rerun_finishes(tmp_path):
    src = tmp_path / "in"
    for k in range(3):
        trim(VIDEOS / "mead_w009_neutral_256.mp4", src / f"clip{k}.mp4", 40)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "warpcam.realtime.cli", "batch", str(src), str(out), *FLAGS,
           "--workers", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(with_stop_signals(cmd), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    manifest = out / "warpcam-batch-manifest.json"

    def second_file_started():  # the first file is finished, the second one being written
        done = json.loads(manifest.read_text())["files"] if manifest.exists() else {}
        return bool(done) and bool(list(out.glob(".clip1.warpcam-tmp.mp4")))

    _, err = signal_when(proc, second_file_started, signal.SIGINT, wait_s=60, poll_s=0.05)
    assert proc.returncode == 130, err.decode()[-500:]
    assert b"interrupted" in err
    rep = report(out)
    assert rep["clip0.mp4"]["status"] == "done"
    assert rep["clip1.mp4"]["status"] == "interrupted", rep["clip1.mp4"]
    assert rep["clip2.mp4"]["status"] == "not started"
    assert (out / "clip0.mp4").exists()
    assert not (out / "clip1.mp4").exists() and not (out / "clip2.mp4").exists()
    assert leftovers(out) == []
    assert len(decode(out / "clip0.mp4")) == 40
    assert run_batch(src, out, *FLAGS, "--workers", "2") == 0
    rep = report(out)
    assert [rep[f"clip{k}.mp4"]["status"] for k in range(3)] == ["skipped", "done", "done"]
    assert all(len(decode(out / f"clip{k}.mp4")) == 40 for k in range(3))


def test_analyze_with_a_pattern_writes_the_csv_of_warpcam_analyze_and_a_dead_link_fails_alone(
        tmp_path):
    from warpcam.realtime import analyze

    src = make_tree(tmp_path / "in", frames=6)
    (src / "sub" / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")  # matched, unreadable
    out = tmp_path / "out"
    assert run_batch(src, out, "--analyze", "--pattern", "sub/*.mp4", "--max-faces", "1",
                     "--workers", "2") == 1
    rep = report(out)
    assert set(rep) == {"sub/b.mp4", "sub/gone.mp4", "_totals"}  # a.mp4 is not under sub/
    assert rep["sub/b.mp4"]["status"] == "done" and rep["sub/b.mp4"]["frames"] == 6
    assert rep["sub/b.mp4"]["output"] == "sub/b.csv"
    assert rep["sub/gone.mp4"]["status"] == "failed"
    assert "cannot read the input" in rep["sub/gone.mp4"]["error"]
    single = tmp_path / "single.csv"
    assert analyze.main(["--input", str(src / "sub" / "b.mp4"), "--output", str(single),
                         "--max-faces", "1", "--quiet"]) == 0
    got, want = (out / "sub" / "b.csv").read_text(), single.read_text()
    assert got == want and len(got.splitlines()) == 7  # header + one face in each frame
    assert "AU12_r" in got.splitlines()[0]
    man = json.loads((out / "warpcam-batch-manifest.json").read_text())["files"]
    assert set(man) == {"sub/b.mp4"}
    assert man["sub/b.mp4"]["settings"] == {"analyze": True, "flags": man["sub/b.mp4"][
        "settings"]["flags"]} and man["sub/b.mp4"]["settings"]["flags"]["max_faces"] == 1
    # the same settings: skipped; other analyze settings: redone
    assert run_batch(src, out, "--analyze", "--pattern", "sub/*.mp4", "--max-faces", "1") == 1
    assert report(out)["sub/b.mp4"]["status"] == "skipped"
    assert run_batch(src, out, "--analyze", "--pattern", "sub/*.mp4", "--no-calibrate") == 1
    assert report(out)["sub/b.mp4"]["status"] == "done"
    assert leftovers(out) == []


def test_two_inputs_for_one_output_and_bad_analyze_flags_are_refused_before_work(tmp_path,
                                                                                capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.mp4").write_bytes(b"a")
    (src / "x.mov").write_bytes(b"b")
    out = tmp_path / "o"
    assert run_batch(src, out, "--analyze") == 2
    assert run_batch(src, out, "--analyze", "--plot", "p.png") == 2
    with pytest.raises(SystemExit) as exc:
        run_batch(src, out, "--analyze", "--pattern", "*.mp4", "--gaze-pitch", "3")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "x.mov and x.mp4 would both write x.csv" in err
    assert "--plot is not a batch flag" in err
    assert "unrecognized arguments: --gaze-pitch" in err
    assert not out.exists()


def test_a_killed_worker_fails_its_file_only_and_a_fresh_one_takes_the_rest(tmp_path):
    from warpcam.realtime import batch

    src = tmp_path / "in"
    for k in range(3):
        trim(VIDEOS / "mead_w009_neutral_256.mp4", src / f"clip{k}.mp4", 30 if k else 60)
    out = tmp_path / "out"
    out.mkdir()
    jobs = [{"input": str(src / f"clip{k}.mp4"), "output": str(out / f"clip{k}.mp4"),
             "argv": FLAGS, "analyze": False} for k in range(3)]
    engine = batch.LocalEngine(1)
    results, killed = {}, []

    def on_progress(name, frames):
        if name == jobs[0]["input"] and frames > 0 and not killed:  # clip0 half-way: kill it
            (w,) = engine._procs.values()
            killed.append(w["proc"].pid)
            os.kill(w["proc"].pid, signal.SIGKILL)

    engine.run(jobs, on_progress, lambda job, res: results.setdefault(job["input"], res))
    r = [results[j["input"]] for j in jobs]
    assert killed and r[0]["status"] == "failed"
    assert "the job's process died (killed by SIGKILL)" in r[0]["error"]
    assert not (out / "clip0.mp4").exists() and leftovers(out) == []
    assert [x["status"] for x in r[1:]] == ["done", "done"]
    assert [len(decode(out / f"clip{k}.mp4")) for k in (1, 2)] == [30, 30]
