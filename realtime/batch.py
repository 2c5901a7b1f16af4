"""``warpcam batch``: every video of a folder tree, on the cores of one machine or on a Ray cluster.

    warpcam batch IN_DIR OUT_DIR [effect flags as for warpcam] [--workers N] [--pattern GLOB]
                  [--ray ADDRESS] [--analyze] [--report FILE] [--quiet]

Every file under ``IN_DIR`` (recursively) whose name or relative path matches ``--pattern``
(default: the video extensions ``.mp4 .mov .mkv .avi``) is one job, run by the same function as
``warpcam --input FILE --output FILE`` (:func:`warpcam.realtime.cli.run_job`), or, with
``--analyze``, by ``warpcam analyze`` (an OpenFace-style AU CSV per video). The tree is mirrored
under ``OUT_DIR`` (same relative path; the extension is kept when the video sink can write it,
else ``.mp4``; ``.csv`` with ``--analyze``). Outputs are atomic as for single jobs: written to
a temporary name beside the output and renamed when complete.

Engines (neither is a scheduler of our own):

- local (default): ``--workers`` child processes (``python -m warpcam.realtime.batch
  --worker``), each running one file at a time, one after another (a job per file: the
  imports and models of a process are paid once per worker, not per file). Default workers =
  usable cores // :data:`THREADS_PER_JOB` (2: a job's pipeline runs capture + tracking in one
  thread and effects + composite + encode in the other, ``Pipeline.run``), at least 1. A file
  that crashes its process, or a process the system kills (out of memory), fails that file
  only; a fresh process takes the files left.
- ``--ray ADDRESS``: the same jobs as Ray tasks (``auto``: a running cluster, or an address
  ``ray://HOST:10001`` / ``HOST:6379``; ``local``: an in-process Ray instance on 127.0.0.1 with
  ``--workers`` x :data:`THREADS_PER_JOB` CPUs, or the instance this process already started).
  Each task declares ``num_cpus = THREADS_PER_JOB`` and ``num_gpus = 1`` when ``--backend cuda``
  is asked for. Every node reads the input and writes the output at the same paths: ``IN_DIR``
  and ``OUT_DIR`` must be on a file system all nodes mount at the same place (NFS, CephFS, a
  cloud file store), and warpcam must be installed on every node.

Resumable: the manifest ``OUT_DIR/warpcam-batch-manifest.json`` records, per finished file, the
input's size, modification time (ns) and SHA-256, the job's settings (the effect flags, parsed),
the warpcam version and the output's size. A rerun skips a file whose manifest entry, input
(size, mtime, hash), settings, version and output (present, same size) all match, and redoes
every other file. The manifest is rewritten atomically after each finished file, so a Ctrl-C or
a crash of the batch itself keeps what was finished.

Progress (stderr, tqdm): one bar for the batch (frames done of frames total) and one per running
file. Ctrl-C (or SIGTERM/SIGHUP/SIGQUIT) stops every running job (each removes its partial
output), keeps the finished ones, writes the report and exits with 128 + N (130 for Ctrl-C).

Report: ``OUT_DIR/warpcam-batch-report.json`` (or ``--report FILE``): per file ``input``,
``output``, ``status`` (``done``, ``skipped``, ``failed``, ``interrupted``, ``not started``),
``frames``, ``seconds`` (wall time of the job), ``cpu_seconds`` (CPU time of its process, all
threads), ``fps``, ``error`` (one line or null); ``totals`` (counts per status, frames of the
files done, wall seconds of the batch, frames/s, CPU seconds of the jobs). Exit status: 0 only when every file is done or skipped; 1 when
any file failed; 2 for a usage error (nothing processed); 128 + N when interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Threads one job keeps busy (the pipeline's tracking thread + its main thread).
THREADS_PER_JOB = 2
MANIFEST_NAME = "warpcam-batch-manifest.json"
REPORT_NAME = "warpcam-batch-report.json"
#: Extensions the video sink writes (an input of another kind gets ``.mp4``).
SINK_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi")
#: Progress messages from a job at most this often (seconds): a Ray queue put is an actor call.
PROGRESS_EVERY_S = 0.25
#: Seconds a stopped job gets to remove its partial output before it is killed.
STOP_GRACE_S = 20.0
#: Flags of ``warpcam`` (and of ``warpcam analyze``) that make no sense per file of a batch.
_NOT_FOR_BATCH = ("--input", "--output", "--preview", "--panel", "--calibrate", "--plot")


# ------------------------------------------------------------------------------------------------
# files, settings, manifest
# ------------------------------------------------------------------------------------------------

@dataclass
class Item:
    """One file of the batch: paths, what the manifest knows about it, what happened to it."""

    rel: str  # input path relative to IN_DIR (POSIX separators)
    src: Path
    dst: Path
    out_rel: str
    size: int = 0
    mtime_ns: int = 0
    sha256: str = ""
    frames_total: Optional[int] = None
    status: str = "not started"
    frames: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        fps = self.frames / self.seconds if self.seconds > 0 and self.frames else None
        return {"input": self.rel, "output": self.out_rel, "status": self.status,
                "frames": self.frames, "seconds": round(self.seconds, 3),
                "cpu_seconds": round(self.cpu_seconds, 3),
                "fps": round(fps, 2) if fps else None, "error": self.error}


def output_name(rel: str, analyze: bool) -> str:
    """The output's path relative to OUT_DIR for the input ``rel`` (relative to IN_DIR)."""
    p = Path(rel)
    if analyze:
        return p.with_suffix(".csv").as_posix()
    return (p if p.suffix.lower() in SINK_EXTENSIONS else p.with_suffix(".mp4")).as_posix()


def find_inputs(in_dir: Path, out_dir: Path, pattern: Optional[str]) -> List[str]:
    """Relative POSIX paths of the files under ``in_dir`` to process, sorted; ``OUT_DIR`` (when
    inside ``IN_DIR``) and hidden files (our temporary files) are left out."""
    out_res = out_dir.resolve()
    found = []
    for root, dirs, files in os.walk(in_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (Path(root) / d).resolve() != out_res)
        for name in files:
            if name.startswith("."):
                continue
            rel = (Path(root) / name).relative_to(in_dir).as_posix()
            if pattern is None:
                ok = Path(name).suffix.lower() in SINK_EXTENSIONS
            else:
                ok = fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(name, pattern)
            if ok:
                found.append(rel)
    return sorted(found)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of the file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def job_settings(job_argv: List[str], analyze: bool) -> dict:
    """What decides a file's output besides its input: ``{"analyze": bool, "flags": {...}}``,
    the parsed flags of its ``warpcam`` job, or of its ``warpcam analyze`` job with
    ``analyze`` (``--input``, ``--output``, ``--quiet`` left out). Raises ``SystemExit(2)``
    with one line on stderr for a usage error (as ``warpcam`` would)."""
    skip = {"input", "output", "quiet", "plot"}
    if analyze:
        from warpcam.realtime.analyze import build_parser as analyze_parser

        args = analyze_parser().parse_args(list(job_argv) + ["--input", "x.mp4", "--output",
                                                             "y.csv"])
    else:
        from warpcam.realtime.cli import parse_job_args

        args = parse_job_args(list(job_argv) + ["--input", "x.mp4", "--output", "y.mp4"])
    return {"analyze": analyze,
            "flags": {k: _jsonable(v) for k, v in sorted(vars(args).items()) if k not in skip}}


def load_manifest(out_dir: Path) -> dict:
    """``{input rel: entry}`` of the manifest in ``out_dir`` (empty when missing or unreadable)."""
    try:
        data = json.loads((out_dir / MANIFEST_NAME).read_text())
        files = data.get("files", {})
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to a temporary name beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.warpcam-{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _version() -> str:
    from warpcam import __version__

    return __version__


def is_complete(entry: Optional[dict], item: Item, settings: dict, version: str) -> bool:
    """Whether the manifest ``entry`` says ``item``'s output is complete and up to date."""
    if not isinstance(entry, dict) or entry.get("status") != "done":
        return False
    if (entry.get("size"), entry.get("mtime_ns")) != (item.size, item.mtime_ns):
        return False
    if entry.get("settings") != settings or entry.get("version") != version:
        return False
    if entry.get("output") != item.out_rel:
        return False
    try:
        if item.dst.stat().st_size != entry.get("output_size"):
            return False
    except OSError:
        return False
    return entry.get("sha256") == item.sha256


# ------------------------------------------------------------------------------------------------
# one job (runs in a child process or a Ray task)
# ------------------------------------------------------------------------------------------------

def run_one(job: dict, progress: Optional[Callable[[int], None]] = None) -> dict:
    """Run one file's job: ``{"input", "output", "argv", "analyze"}`` (paths as strings).

    Calls ``progress(frames_done)`` at most every :data:`PROGRESS_EVERY_S`. Returns
    ``{"status": "done" | "failed" | "interrupted", "frames", "seconds", "cpu_seconds",
    "error"}`` (``cpu_seconds``: CPU time of the job's process, all threads, model loading
    included); never raises
    for a failure of the file (Ctrl-C / a stop signal while it runs gives ``"interrupted"``
    after the job removed its partial output).
    """
    from warpcam.realtime import cli

    errors: List[str] = []
    frames = 0
    last = [0.0]

    def on_frame(*_):
        nonlocal frames
        frames += 1
        now = time.monotonic()
        if progress is not None and now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            progress(frames)

    t0, c0 = time.perf_counter(), time.process_time()
    status = "failed"
    try:
        if job.get("analyze"):
            from warpcam.realtime import analyze

            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = analyze.main(list(job.get("argv", [])) + [
                    "--input", job["input"], "--output", job["output"], "--quiet"],
                    on_frame=lambda n: on_frame())
            lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
            errors += lines[-1:]
            if code == EXIT_INTERRUPTED:
                raise KeyboardInterrupt
        else:
            args = cli.parse_job_args(list(job.get("argv", [])) + [
                "--input", job["input"], "--output", job["output"], "--quiet"])
            code = cli.run_job(args, on_frame=on_frame, say=errors.append)
        status = "done" if code == EXIT_OK else "failed"
        if code != EXIT_OK and not errors:
            errors.append(f"warpcam: error: exit status {code}")
    except SystemExit as exc:  # a usage error of the job's flags
        errors.append(f"warpcam: error: usage (exit status {exc.code})")
    except (KeyboardInterrupt, Exception) as exc:
        stop = cli.interrupt_behind(exc)  # Ctrl-C or a stop signal, itself or wrapped
        if stop is not None:
            status = "interrupted"
            errors.append(cli.interrupt_status(stop)[1])
        else:  # a bug: one line, the batch goes on
            errors.append(f"warpcam: error: unexpected {type(exc).__name__}: "
                          f"{cli._one_line(exc)}")
    if progress is not None:
        progress(frames)
    error = " ".join(errors[-1].split()) if errors and status != "done" else None
    return {"status": status, "frames": frames, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0, "error": error}


def _worker_main() -> int:
    """``python -m warpcam.realtime.batch --worker``: jobs as JSON lines on stdin, run one after
    the other until stdin ends (the imports and the process start are paid once per worker, not
    per file); per job, progress lines ``P N`` and the result line ``R {json}`` on stdout (a
    private copy of it: whatever native code prints goes to ``/dev/null``). A stopped
    (interrupted) job ends the worker."""
    from warpcam.realtime import cli

    out = os.fdopen(os.dup(1), "w", buffering=1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)

    def send(line: str) -> None:
        try:
            out.write(line + "\n")
        except (OSError, ValueError):
            pass

    debug = os.environ.get(cli.DEBUG_ENV, "").strip() not in ("", "0")
    with cli._guarded_process(debug):
        for line in sys.stdin:
            if not line.strip():
                continue
            result = run_one(json.loads(line), progress=lambda n: send(f"P {n}"))
            send("R " + json.dumps(result))
            if result["status"] == "interrupted":
                break
    return EXIT_OK


def _ray_task(job: dict, queue) -> dict:
    """The body of a Ray task: :func:`run_one` with progress into a ``ray.util.queue.Queue``.
    The result also carries ``resources``: what Ray assigned to the task (``{"CPU": 2.0, ...}``)
    and ``node``: the IP address of the node that ran it."""
    import ray

    from warpcam.realtime import cli

    os.environ.setdefault("OMP_NUM_THREADS", "1")

    def progress(n: int) -> None:
        with contextlib.suppress(Exception):
            queue.put_nowait((job["input"], n))

    debug = os.environ.get(cli.DEBUG_ENV, "").strip() not in ("", "0")
    with cli._guarded_process(debug):
        result = run_one(job, progress=progress)
    with contextlib.suppress(Exception):
        ctx = ray.get_runtime_context()
        result["resources"] = dict(ctx.get_assigned_resources())
        result["node"] = ray.util.get_node_ip_address()
    return result


def task_options(gpu: bool) -> dict:
    """The resources one Ray task declares: :data:`THREADS_PER_JOB` CPUs, and one GPU when the
    job asks for the cuda backend (``--backend cuda``); ``max_retries=0`` (a failed file is
    reported, not rerun behind the user's back)."""
    return {"num_cpus": THREADS_PER_JOB, "num_gpus": 1 if gpu else 0, "max_retries": 0}


#: Environment that keeps an in-process Ray instance on the loopback interface (Ray otherwise
#: binds its servers to the machine's address) and stops its usage-statistics report.
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@contextlib.contextmanager
def _keep_signal_handlers():
    """``ray.init`` installs its own SIGTERM handler in the driver; ours (a stop signal ends the
    batch cleanly) and the caller's stay in force."""
    sigs = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    saved = {s: signal.getsignal(s) for s in sigs}
    try:
        yield
    finally:
        for s, h in saved.items():
            if h is not None:
                with contextlib.suppress(ValueError, OSError):  # not the main thread
                    signal.signal(s, h)


def start_local_ray(num_cpus: int, num_gpus: Optional[int] = None):
    """Start an in-process Ray instance reachable on 127.0.0.1 only (``--ray local``): a head
    node with ``num_cpus`` CPUs (and ``num_gpus`` GPUs when given; Ray detects them otherwise),
    no dashboard, no usage report, the driver's logs not forwarded. Returns the ``ray`` module.
    Raises ``SystemExit`` with one line when Ray is not installed."""
    os.environ.update(LOOPBACK_RAY_ENV)  # read by Ray at import and by the processes it starts
    try:
        import ray
        from ray._private import ray_constants
    except ImportError:
        raise SystemExit("warpcam: error: --ray needs Ray: pip install 'warpcam[ray]'") from None
    ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before the line above
    kw = {} if num_gpus is None else {"num_gpus": num_gpus}
    with _keep_signal_handlers():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False,
                 **kw)
    return ray


# ------------------------------------------------------------------------------------------------
# engines: a callback per progress message and per result
# ------------------------------------------------------------------------------------------------

def _leftovers(dst: Path, pid: Optional[int]) -> None:
    """Remove the temporary files a killed job left beside ``dst`` (its preferred temporary
    name, and the unique ones carrying its pid)."""
    from warpcam.realtime.io.base import temp_path_for

    names = [temp_path_for(dst)]
    if pid is not None:
        names += list(dst.parent.glob(f".{dst.stem}.warpcam-{pid}-*"))
    for p in names:
        with contextlib.suppress(OSError):
            p.unlink()


class LocalEngine:
    """At most ``workers`` child processes at a time, each running one file after another
    (``python -m warpcam.realtime.batch --worker``). A process that dies (a crash, the system's
    out-of-memory killer) fails the file it was running only; a fresh process takes its place
    for the files left."""

    name = "local"

    def __init__(self, workers: int):
        self.workers = workers
        self._procs: Dict[int, dict] = {}  # stdout fd -> {"proc", "job", "buf", "result"}
        self._stopping = False

    def run(self, jobs: List[dict], on_progress, on_result) -> None:
        pending = list(jobs)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            while pending or self._procs:
                while pending and len(self._procs) < self.workers:
                    p = subprocess.Popen(
                        [sys.executable, "-m", "warpcam.realtime.batch", "--worker"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                        env=env)
                    w = {"proc": p, "job": None, "buf": b"", "result": None}
                    self._procs[p.stdout.fileno()] = w
                    self._give(w, pending, on_progress)
                ready, _, _ = select.select(list(self._procs), [], [], 0.2)
                for fd in ready:
                    self._read(fd, on_progress, on_result, pending)
        except BaseException:
            self.stop(on_result)
            raise

    @staticmethod
    def _give(w: dict, pending: List[dict], on_progress) -> None:
        """The next pending job to worker ``w``, or the end of its input when none is left."""
        p = w["proc"]
        if not pending:
            w["job"] = None
            with contextlib.suppress(OSError):
                p.stdin.close()
            return
        job = pending.pop(0)
        w["job"], w["result"] = job, None
        try:
            p.stdin.write(json.dumps(job).encode() + b"\n")
            p.stdin.flush()
        except OSError:  # it died meanwhile: its end of output reports the job as failed
            pass
        on_progress(job["input"], 0)

    def _read(self, fd: int, on_progress, on_result, pending: List[dict]) -> None:
        w = self._procs[fd]
        p = w["proc"]
        chunk = os.read(fd, 65536)
        w["buf"] += chunk
        *lines, w["buf"] = w["buf"].split(b"\n")
        for line in lines:
            if w["job"] is None:
                continue
            if line.startswith(b"P "):
                on_progress(w["job"]["input"], int(line[2:]))
            elif line.startswith(b"R "):
                job, result = w["job"], json.loads(line[2:])
                w["job"] = None
                if self._stopping and result.get("status") == "failed":
                    # ended while we stopped it (a stop signal that reached it inside native
                    # code can surface as an I/O error): the stop, not the file, ended it
                    _leftovers(Path(job["output"]), p.pid)
                    result = dict(result, status="interrupted", error="warpcam: interrupted "
                                  f"({result.get('error') or 'stopped'})")
                on_result(job, result)
                if not self._stopping and result.get("status") != "interrupted":
                    self._give(w, pending, on_progress)
        if chunk:
            return
        code = p.wait()  # end of its stdout: the process is done or dead
        p.stdout.close()
        with contextlib.suppress(OSError):
            p.stdin.close()
        del self._procs[fd]
        job = w["job"]
        if job is not None:  # crashed or killed before it could say how the job ended
            how = (f"killed by {signal.Signals(-code).name}" if code < 0
                   else f"exit status {code}")
            _leftovers(Path(job["output"]), p.pid)
            on_result(job, {
                "status": "interrupted" if self._stopping else "failed", "frames": 0,
                "seconds": 0.0, "error": "warpcam: interrupted" if self._stopping
                else f"warpcam: error: the job's process died ({how})"})

    def stop(self, on_result) -> None:
        """Stop every running job (SIGTERM: each removes its partial output), wait for them."""
        self._stopping = True
        for w in list(self._procs.values()):
            with contextlib.suppress(OSError):
                w["proc"].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while self._procs and time.monotonic() < deadline:
            ready, _, _ = select.select(list(self._procs), [], [], 0.2)
            for fd in ready:
                try:
                    self._read(fd, lambda *a: None, on_result, [])
                except (OSError, ValueError):
                    pass
        for fd, w in list(self._procs.items()):
            p, job = w["proc"], w["job"]
            p.kill()
            p.wait()
            del self._procs[fd]
            if job is not None:
                _leftovers(Path(job["output"]), p.pid)
                on_result(job, {"status": "interrupted", "frames": 0, "seconds": 0.0,
                                "error": "warpcam: interrupted"})


class RayEngine:
    """The same jobs as Ray tasks (``num_cpus`` per task, ``num_gpus`` with ``--backend cuda``)."""

    name = "ray"

    def __init__(self, address: str, workers: int, gpu: bool):
        self.address, self.workers, self.gpu = address, workers, gpu
        self._started = False

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise SystemExit("warpcam: error: --ray needs Ray: pip install 'warpcam[ray]'") \
                from None
        if not ray.is_initialized():
            if self.address == "local":
                start_local_ray(self.workers * THREADS_PER_JOB)
            else:
                with _keep_signal_handlers():
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
            self._started = True
        return ray

    def run(self, jobs: List[dict], on_progress, on_result) -> None:
        ray = self._connect()
        from ray.util.queue import Queue

        queue = Queue()
        task = ray.remote(**task_options(self.gpu))(_ray_task)
        refs = {task.remote(job, queue): job for job in jobs}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=0.2)
                self._drain(queue, on_progress)
                for ref in done:
                    on_result(refs.pop(ref), self._result(ray, ref))
            self._drain(queue, on_progress)
        except BaseException:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)  # KeyboardInterrupt inside the task: it aborts its sink
            deadline = time.monotonic() + STOP_GRACE_S
            while refs and time.monotonic() < deadline:
                done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5)
                for ref in done:
                    res = self._result(ray, ref)
                    if res["status"] == "failed" and "cancel" in (res["error"] or "").lower():
                        res["status"] = "interrupted"
                    on_result(refs.pop(ref), res)
            for ref, job in list(refs.items()):
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
                _leftovers(Path(job["output"]), None)
                on_result(job, {"status": "interrupted", "frames": 0, "seconds": 0.0,
                                "error": "warpcam: interrupted"})
            raise
        finally:
            with contextlib.suppress(Exception):
                ray.kill(queue.actor)
            if self._started:
                ray.shutdown()

    @staticmethod
    def _drain(queue, on_progress) -> None:
        with contextlib.suppress(Exception):
            n = queue.qsize()
            if n:
                for name, frames in queue.get_nowait_batch(n):
                    on_progress(name, frames)

    @staticmethod
    def _result(ray, ref) -> dict:
        try:
            return ray.get(ref)
        except Exception as exc:  # the task's worker died, or the task was cancelled
            line = " ".join(str(exc).split())[:300] or type(exc).__name__
            return {"status": "failed", "frames": 0, "seconds": 0.0,
                    "error": f"warpcam: error: {type(exc).__name__}: {line}"}


# ------------------------------------------------------------------------------------------------
# the batch
# ------------------------------------------------------------------------------------------------

class _Bars:
    """The batch bar (frames done of total) and one bar per running file (tqdm, never fatal)."""

    def __init__(self, total: int, enabled: bool):
        from warpcam.realtime.pipeline import _SafeBar

        self._make = _SafeBar
        self.enabled = enabled
        self.batch = _SafeBar(total=total or None, unit="frame", desc="batch", position=0,
                              dynamic_ncols=True) if enabled else None
        self.files: Dict[str, tuple] = {}  # input -> (bar, frames shown, slot)

    def progress(self, name: str, frames: int, total: Optional[int]) -> None:
        if not self.enabled:
            return
        if name not in self.files:
            used = {slot for _, _, slot in self.files.values()}
            slot = next(i for i in range(1, len(used) + 2) if i not in used)
            label = Path(name).name
            label = label if len(label) <= 28 else label[:25] + "..."
            self.files[name] = (self._make(total=total, unit="frame", desc=label,
                                           position=slot, leave=False, dynamic_ncols=True),
                                0, slot)
        bar, shown, slot = self.files[name]
        if frames > shown:
            bar.update(frames - shown)
            self.batch.update(frames - shown)
            self.files[name] = (bar, frames, slot)

    def finish(self, name: str) -> None:
        if name in self.files:
            self.files.pop(name)[0].close()

    def close(self) -> None:
        for name in list(self.files):
            self.finish(name)
        if self.batch is not None:
            self.batch.close()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(EXIT_USAGE, f"warpcam batch: error: {message} (see warpcam batch --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="warpcam batch", description=(
        "Process every video under IN_DIR (recursively) into the same tree under OUT_DIR, with "
        "the effect flags of warpcam, on a local process pool or a Ray cluster. Resumable "
        f"({MANIFEST_NAME}), with a JSON report ({REPORT_NAME}). Other flags are passed to each "
        "file's warpcam job (e.g. --gaze-pitch 10 --smile 0.5 --backend cpu)."))
    p.add_argument("in_dir", metavar="IN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help=f"jobs at a time (default: usable cores // {THREADS_PER_JOB}, the "
                        "threads one job keeps busy; at least 1)")
    p.add_argument("--pattern", default=None, metavar="GLOB",
                   help="files to take, matched against the name or the path relative to "
                        "IN_DIR (default: *.mp4, *.mov, *.mkv, *.avi)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the jobs as Ray tasks: 'auto' (a running cluster), an address, or "
                        "'local' (an in-process instance); IN_DIR and OUT_DIR must be on a file "
                        "system every node sees at the same path")
    p.add_argument("--analyze", action="store_true",
                   help="write the AU CSV of `warpcam analyze` per video instead of a video")
    p.add_argument("--report", default=None, metavar="FILE",
                   help=f"where to write the JSON report (default OUT_DIR/{REPORT_NAME})")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    from warpcam.realtime.cli import allow_negative_numbers
    return allow_negative_numbers(p)


def default_workers() -> int:
    """Usable cores // :data:`THREADS_PER_JOB`, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // THREADS_PER_JOB)


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(line, file=sys.stderr, flush=True)


def _frame_count(path: Path) -> Optional[int]:
    try:
        from warpcam.realtime.io import open_source

        with open_source(str(path)) as src:
            n = src.frame_count
        return int(n) if n else None
    except Exception:  # a broken file: its job says why
        return None


def main(argv: Optional[List[str]] = None) -> int:
    """``warpcam batch ...``; returns the exit status (module docstring)."""
    args, job_argv = build_parser().parse_known_args(argv)
    refused = [a for a in job_argv if a.split("=")[0] in _NOT_FOR_BATCH]
    if refused:
        _say(f"warpcam batch: error: {refused[0].split('=')[0]} is not a batch flag: IN_DIR and "
             "OUT_DIR give every file's input and output")
        return EXIT_USAGE
    # absolute (symbolic links kept): a Ray task runs in another working folder, or node
    in_dir = Path(os.path.abspath(Path(args.in_dir).expanduser()))
    out_dir = Path(os.path.abspath(Path(args.out_dir).expanduser()))
    if not in_dir.is_dir():
        _say(f"warpcam batch: error: IN_DIR {in_dir} is not a folder")
        return EXIT_USAGE
    if out_dir.exists() and not out_dir.is_dir():
        _say(f"warpcam batch: error: OUT_DIR {out_dir} is not a folder")
        return EXIT_USAGE
    if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
        _say("warpcam batch: error: OUT_DIR is IN_DIR: give another folder (the outputs would "
             "replace the inputs)")
        return EXIT_USAGE
    if args.workers is not None and args.workers < 1:
        _say(f"warpcam batch: error: --workers must be at least 1, got {args.workers}")
        return EXIT_USAGE
    workers = args.workers or default_workers()
    settings = job_settings(job_argv, args.analyze)  # usage errors exit 2 here, before any work
    version = _version()

    items = []
    for rel in find_inputs(in_dir, out_dir, args.pattern):
        out_rel = output_name(rel, args.analyze)
        items.append(Item(rel=rel, src=in_dir / rel, dst=out_dir / out_rel, out_rel=out_rel))
    if not items:
        _say(f"warpcam batch: error: no file under {in_dir} matches "
             f"{args.pattern or ', '.join('*' + e for e in SINK_EXTENSIONS)}")
        return EXIT_USAGE
    first_of: Dict[str, str] = {}
    for it in items:  # two inputs, one output (a.mp4 and a.mov with --analyze: a.csv)
        other = first_of.setdefault(it.out_rel, it.rel)
        if other != it.rel:
            _say(f"warpcam batch: error: {other} and {it.rel} would both write {it.out_rel} "
                 "(rename one, or narrow --pattern)")
            return EXIT_USAGE
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out_dir)
    todo = []
    for it in items:
        try:
            st = it.src.stat()
            it.size, it.mtime_ns = st.st_size, st.st_mtime_ns
            it.sha256 = file_sha256(it.src)
        except OSError as exc:  # unreadable, or a link to nothing: this file fails alone
            it.status = "failed"
            it.error = f"warpcam: error: cannot read the input: {exc.strerror or exc}"
            manifest.pop(it.rel, None)
            if not args.quiet:
                _say(f"warpcam batch: {it.rel}: {it.error}")
            continue
        if is_complete(manifest.get(it.rel), it, settings, version):
            it.status = "skipped"
            old = manifest[it.rel]
            it.frames, it.seconds = int(old.get("frames", 0)), 0.0
        else:
            manifest.pop(it.rel, None)
            it.frames_total = _frame_count(it.src)
            todo.append(it)

    def save_manifest() -> None:
        write_json_atomic(out_dir / MANIFEST_NAME, {"warpcam": version, "files": manifest})

    save_manifest()  # entries of changed files are gone before their outputs are redone
    by_input = {str(it.src): it for it in todo}
    bars = _Bars(sum(it.frames_total or 0 for it in todo), enabled=not args.quiet)

    def on_progress(name: str, frames: int) -> None:
        it = by_input[name]
        bars.progress(name, frames, it.frames_total)

    def on_result(job: dict, res: dict) -> None:
        it = by_input[job["input"]]
        bars.progress(job["input"], res["frames"], it.frames_total)
        bars.finish(job["input"])
        it.status, it.frames = res["status"], int(res["frames"])
        it.seconds, it.error = float(res["seconds"]), res.get("error")
        it.cpu_seconds = float(res.get("cpu_seconds") or 0.0)
        if it.status == "done":
            try:
                out_size = it.dst.stat().st_size
            except OSError:  # cannot happen for a finished job (its output is renamed last)
                it.status, it.error = "failed", "warpcam: error: the job wrote no output"
        if it.status == "done":
            manifest[it.rel] = {
                "output": it.out_rel, "size": it.size, "mtime_ns": it.mtime_ns,
                "sha256": it.sha256, "settings": settings, "version": version,
                "output_size": out_size, "frames": it.frames,
                "seconds": round(it.seconds, 3), "status": "done"}
            save_manifest()
        elif it.status == "failed" and not args.quiet:
            _say(f"warpcam batch: {it.rel}: {it.error}")

    jobs = []
    for it in todo:
        it.dst.parent.mkdir(parents=True, exist_ok=True)
        jobs.append({"input": str(it.src), "output": str(it.dst), "argv": list(job_argv),
                     "analyze": bool(args.analyze)})
    if args.ray:
        gpu = (settings.get("flags") or {}).get("backend") == "cuda"
        engine = RayEngine(args.ray, workers, gpu)
    else:
        engine = LocalEngine(workers)
    t0 = time.perf_counter()
    code, stop_line = None, None
    from warpcam.realtime import cli
    try:
        with cli._stop_signals_raise():
            engine.run(jobs, on_progress, on_result)
    except KeyboardInterrupt as exc:
        code, stop_line = cli.interrupt_status(exc)
    finally:
        bars.close()
    wall = time.perf_counter() - t0
    report = _report(items, engine.name, workers, in_dir, out_dir, wall, version)
    report_path = Path(args.report).expanduser() if args.report else out_dir / REPORT_NAME
    write_json_atomic(report_path, report)
    tot = report["totals"]
    if stop_line:
        _say(stop_line)
    if not args.quiet:
        _say(f"warpcam batch: {tot['done']} done, {tot['skipped']} skipped, {tot['failed']} "
             f"failed, {tot['interrupted'] + tot['not started']} left; {tot['frames']} frames "
             f"in {wall:.1f} s ({tot['fps'] or 0:.1f} frames/s) -> {report_path}")
    if code is not None:
        return code
    return EXIT_OK if tot["failed"] == 0 else EXIT_FAILED


def _report(items: List[Item], engine: str, workers: int, in_dir: Path, out_dir: Path,
            wall: float, version: str) -> dict:
    rows = [it.row() for it in items]
    totals = {s: sum(r["status"] == s for r in rows)
              for s in ("done", "skipped", "failed", "interrupted", "not started")}
    frames = sum(r["frames"] for r in rows if r["status"] == "done")
    totals.update(files=len(rows), frames=frames, seconds=round(wall, 3),
                  fps=round(frames / wall, 2) if wall > 0 and frames else None,
                  cpu_seconds=round(sum(r["cpu_seconds"] for r in rows), 3))
    return {"warpcam": version, "engine": engine, "workers": workers, "in_dir": str(in_dir),
            "out_dir": str(out_dir), "files": rows, "totals": totals}


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(_worker_main())
    sys.exit(main())
