"""Small assertions helpers shared by the test modules."""
import sys
import time

import numpy as np

# Run in a fresh interpreter: set the stop signals, then exec the real command. A disposition of
# SIG_DFL or SIG_IGN survives exec; doing it this way needs no preexec_fn, which is unsafe in a
# process with threads (the test process has torch's and mediapipe's).
_SET_SIGNALS_AND_EXEC = (
    "import os, signal, sys\n"
    "ignore = set(sys.argv[1].split(',')) - {''}\n"
    "for n in sys.argv[2].split(','):\n"
    "    signal.signal(getattr(signal, n), signal.SIG_IGN if n in ignore else signal.SIG_DFL)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n")


def with_stop_signals(cmd, ignore=()) -> list:
    """``cmd`` (an argv list) wrapped so that the child starts with the stop signals at their
    defaults, as a terminal's shell starts a job, except those named in ``ignore`` (e.g.
    ``("SIGHUP",)`` as under ``nohup``), which start ignored. The CLI keeps a stop signal that
    its parent ignores (``nohup``, or a background job of a non-interactive shell, which
    ignores SIGINT), so without this a suite started that way would see its signals ignored."""
    from warpcam.realtime.cli import STOP_SIGNALS  # Ctrl-C, and those the CLI turns into one

    names = ("SIGINT",) + tuple(s.name for s in STOP_SIGNALS)
    return [sys.executable, "-c", _SET_SIGNALS_AND_EXEC, ",".join(ignore), ",".join(names),
            *[str(c) for c in cmd]]


def signal_when(proc, ready, sig, wait_s: float = 120.0, settle_s: float = 0.0,
                timeout: float = 60.0, poll_s: float = 0.02):
    """Send ``sig`` to the running child ``proc`` once ``ready()`` holds, then collect its
    output: ``(stdout, stderr)``. Polls every ``poll_s`` seconds for at most ``wait_s``, waits
    ``settle_s`` more, and asserts that the child is still running when signalled; a child
    still alive ``timeout`` seconds after the signal (or after a failed assertion) is killed."""
    try:
        deadline = time.monotonic() + wait_s
        while proc.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(poll_s)
        assert ready(), "the child never became ready for the signal"
        time.sleep(settle_s)
        assert proc.poll() is None, "the child ended before the signal"
        proc.send_signal(sig)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def job_mask(jobs, shape) -> np.ndarray:
    """``H x W`` bool mask of the union of the jobs' frame boxes (``WarpJob.frame_bbox``)."""
    m = np.zeros(shape[:2], bool)
    for j in jobs:
        box = j.frame_bbox(shape)
        if box is not None:
            x0, y0, x1, y1 = box
            m[y0:y1, x0:x1] = True
    return m
