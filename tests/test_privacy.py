"""Privacy: a whole file job (real clip, tracker, gaze and smile, file sink) with the network
disabled never tries to open a network connection, and writes frames nowhere but the output the
user named.

The job runs in a child process with three layers, each used when the machine allows it:

1. always: a Python audit hook that records every ``socket.*`` event (creating, connecting,
   binding, resolving a name) and refuses it, and every ``open()`` for writing;
2. when running as root with ``unshare``: a network namespace with no interface up, so even
   native code cannot reach anything;
3. when ``strace`` works: every ``socket``/``connect``/``bind``/``sendto`` system call and every
   file opened for writing, renamed or created, from Python and native code alike.

Files written outside the output folder are allowed only when they are not pictures or video
(libraries' caches such as matplotlib's font list, which mediapipe's import triggers) or are gone
when the job ends (``ctypes.util.find_library`` compiler probes in ``TMPDIR``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests import realdata

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys
events, writes = [], []

def hook(event, args):
    if event.startswith("socket."):
        events.append([event, repr(args)[:200]])
        raise PermissionError(f"network disabled by the privacy test ({event})")
    if event == "open" and len(args) >= 2 and isinstance(args[1], str) \
            and any(c in args[1] for c in "wax+"):
        writes.append(str(args[0]))

sys.addaudithook(hook)
sys.path.insert(0, @REPO@)
from warpcam.realtime import cli
code = cli.main(@ARGV@)
print("PRIVACY-REPORT " + json.dumps({"code": code, "socket_events": events, "writes": writes}))
'''

# Magic numbers of picture and video files (the start of the file).
MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"\x1aE\xdf\xa3", b"II*\x00",
         b"MM\x00*", b"\x00\x00\x00\x18ftyp", b"\x00\x00\x00\x1cftyp", b"\x00\x00\x00\x20ftyp")


def _is_media(path: Path) -> bool:
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif",
                               ".mp4", ".mov", ".mkv", ".avi", ".yuv", ".raw", ".y4m", ".npy"):
        return True
    try:
        head = path.read_bytes()[:16]
    except OSError:
        return False
    return any(head.startswith(m) for m in MAGIC) or head[4:8] == b"ftyp"


def _strace_works() -> bool:
    if not shutil.which("strace"):
        return False
    r = subprocess.run(["strace", "-qq", "-e", "trace=none", "true"], capture_output=True)
    return r.returncode == 0


def _unshare_works() -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


_WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT")
_FD = r"(?:(?:AT_FDCWD|\d+), )?"
_OPEN = re.compile(r'^\d+\s+(?:openat\(' + _FD + r'|open\(|creat\()"([^"]+)", ([^)]*)\) = (-?\d+)')
_RENAME = re.compile(r'^\d+\s+rename(?:at2?)?\(' + _FD + r'"([^"]+)", ' + _FD + r'"([^"]+)"')
_UNLINK = re.compile(r'^\d+\s+unlink(?:at)?\(' + _FD + r'"([^"]+)"')
_NET = re.compile(r'^\d+\s+(socket|connect|bind|sendto|sendmsg)\((.*)\) = (-?\d+)')


def test_file_job_opens_no_connection_and_writes_frames_only_to_the_output(tmp_path):
    src = realdata.video("mead_w009_neutral_256.mp4")
    dirs = {k: tmp_path / k for k in ("home", "tmp", "cwd", "out")}
    for d in dirs.values():
        d.mkdir()
    out = dirs["out"] / "result.mp4"
    argv = ["--input", str(src), "--output", str(out), "--smile", "0.5", "--gaze-pitch", "5",
            "--quiet"]
    script = tmp_path / "child.py"
    script.write_text(CHILD.replace("@REPO@", repr(str(REPO))).replace("@ARGV@", repr(argv)))
    env = dict(os.environ, HOME=str(dirs["home"]), TMPDIR=str(dirs["tmp"]),
               XDG_CACHE_HOME=str(dirs["home"] / ".cache"),
               XDG_CONFIG_HOME=str(dirs["home"] / ".config"))
    env.pop("MPLCONFIGDIR", None)
    cmd = [sys.executable, str(script)]
    log = tmp_path / "strace.log"
    traced = _strace_works()
    if traced:
        cmd = ["strace", "-f", "-qq", "-s", "256", "-e", "signal=none", "-e",
               "trace=socket,connect,bind,sendto,sendmsg,open,openat,creat,rename,renameat,"
               "renameat2,unlink,unlinkat", "-o", str(log)] + cmd
    isolated = _unshare_works()
    if isolated:
        cmd = ["unshare", "-n"] + cmd
    r = subprocess.run(cmd, cwd=dirs["cwd"], env=env, capture_output=True, text=True,
                       timeout=300)
    lines = [ln.split("PRIVACY-REPORT ", 1)[1] for ln in r.stdout.splitlines()
             if "PRIVACY-REPORT " in ln]
    assert r.returncode == 0 and lines, (r.stdout[-2000:], r.stderr[-2000:])
    report = json.loads(lines[-1])
    assert report["code"] == 0, r.stderr[-2000:]

    # 1. nothing in Python even tried the network
    assert report["socket_events"] == [], report["socket_events"]

    # the output is there, complete, and alone; the input folder and cwd are untouched
    assert sorted(p.name for p in dirs["out"].iterdir()) == ["result.mp4"]
    assert list(dirs["cwd"].iterdir()) == []

    def allowed(path_text: str, removed: set) -> bool:
        p = Path(path_text if os.path.isabs(path_text) else dirs["cwd"] / path_text)
        if p.parent == dirs["out"] and p.name in ("result.mp4", ".result.warpcam-tmp.mp4"):
            return True
        if str(p).startswith(("/dev/", "/proc/", "/sys/")):
            return True
        if str(p) in removed or not p.exists():
            return True  # a temporary file that is gone again
        if p == dirs["tmp"]:
            return True  # O_TMPFILE: an unnamed file in TMPDIR, gone when closed
        inside = any(str(p).startswith(str(dirs[k]) + os.sep) for k in ("home", "tmp"))
        return inside and not _is_media(p)

    for w in report["writes"]:
        assert allowed(w, set()), f"Python wrote {w}"

    # 3. system calls of the whole process tree
    if traced:
        text = log.read_text(errors="replace").splitlines()
        net = [ln for ln in text if _NET.match(ln)]
        assert net == [], "network system calls:\n" + "\n".join(net[:20])
        removed = {m.group(1) for ln in text if (m := _UNLINK.match(ln))}
        written = []
        for ln in text:
            m = _OPEN.match(ln)
            if m and _WRITE_FLAGS.search(m.group(2)) and int(m.group(3)) >= 0:
                written.append(m.group(1))
            m = _RENAME.match(ln)
            if m:
                written.append(m.group(2))
        assert any(w.endswith(".result.warpcam-tmp.mp4") for w in written), \
            "strace saw no write of the output: the trace is not working"
        bad = sorted({w for w in written if not allowed(w, removed)})
        assert bad == [], f"files written outside the output: {bad}"
    # The layers that ran, for the log of a CI run.
    print(f"privacy layers: audit hook, unshare={'yes' if isolated else 'no'}, "
          f"strace={'yes' if traced else 'no'}")
