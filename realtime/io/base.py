"""What every source and sink shares: the base classes, the errors, the image check.

- :class:`Source`: a context manager and an iterable of :class:`~warpcam.core.types.Frame`, each
  carrying an ``H x W x 3`` ``uint8`` **BGR** image. Failures a user can cause raise
  :class:`SourceError` with a one-line message that names the file or device and says why.
- :class:`Sink`: a context manager with ``write(frame, image)``, ``close()`` (success: finish and
  keep the output), ``abort()`` (failure: discard the output) and ``frame_done(pipeline)``, the
  per-frame hook the pipeline calls after each frame it wrote (the preview updates its HUD and
  applies its keys there; ``False`` stops the run). Failures raise :class:`SinkError`.
- :func:`to_bgr8`, the extension lists, and the temporary-name helpers every file sink uses
  (:func:`temp_path_for`: write beside the output, rename at the end).
- :class:`OutputLock` (one job per output file: an advisory ``flock`` on a lock file beside it,
  holding the owner's pid) and :func:`create_temp_file` (a temporary file this job created
  exclusively, removed by :func:`remove_own_file` only while it is still that file).
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from warpcam.core.types import Frame

__all__ = [
    "SourceError",
    "SinkError",
    "Source",
    "Sink",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "PathLike",
    "to_bgr8",
    "temp_path_for",
    "lock_path_for",
    "OutputLock",
    "create_temp_file",
    "remove_own_file",
]

log = logging.getLogger("warpcam")

#: File extensions (lower case, with the dot) read as still images.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: File extensions the video sink writes (any container FFmpeg can read is accepted as input).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi")


class SourceError(RuntimeError):
    """A source could not be opened or stopped delivering frames.

    The message is one line that names the device or file and says why, e.g.
    ``cannot open webcam 0: /dev/video0 does not exist``.
    """


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Convert any common OpenCV image layout to ``H x W x 3`` ``uint8`` BGR, C-contiguous.

    Accepts ``H x W`` or ``H x W x 1`` grey, ``H x W x 3`` BGR, ``H x W x 4`` BGRA (alpha is
    dropped), in ``uint8``, ``uint16`` (scaled by 1/257, i.e. 65535 -> 255) or float in [0, 1].

    Args:
        image: the array to convert.

    Returns:
        ``H x W x 3`` ``uint8`` BGR; the input itself when it already is one (no copy).

    Raises:
        ValueError: for any other shape or dtype.
    """
    img = np.asarray(image)
    if img.size == 0:
        raise ValueError(f"image is empty (shape {img.shape})")
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 + 32767) // 65535
        img = img.astype(np.uint8)
    elif img.dtype.kind == "f":
        img = np.clip(np.nan_to_num(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8, uint16 or float, got {img.dtype}")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        img = cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ValueError(f"image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {img.shape}")
    return np.ascontiguousarray(img)


class Source:
    """Base class of every frame source.

    A source is a context manager (``__exit__`` calls :meth:`close`) and an iterable of
    :class:`~warpcam.core.types.Frame`. ``close`` may be called more than once.

    Properties shared by every source:

    - ``width``, ``height``: frame size in pixels (of the first frame for an image folder).
    - ``fps``: nominal frames per second as a float, ``None`` when unknown (still images).
    - ``is_live``: ``True`` for a camera (the pipeline drops stale frames instead of queueing).
    - ``frame_count``: number of frames when known in advance, else ``None``.
    """

    def __init__(self) -> None:
        self._closed = False
        self._width = 0
        self._height = 0

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> "Source":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the file or device. Safe to call twice."""
        self._closed = True

    # -- properties ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self._width

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self._height

    @property
    def fps(self) -> Optional[float]:
        """Nominal frame rate, ``None`` when unknown."""
        return None

    @property
    def is_live(self) -> bool:
        """``True`` for live sources (cameras)."""
        return False

    @property
    def frame_count(self) -> Optional[int]:
        """Number of frames when known in advance, else ``None``."""
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise SourceError(f"{self!r} is closed")


PathLike = Union[str, os.PathLike]


class SinkError(RuntimeError):
    """A sink could not be opened or could not finish its output.

    The message is one line that says what and why, and how to fix it where there is a fix,
    e.g. ``output folder does not exist: /data/out``.
    """


def _name_max(folder: Path) -> int:
    """Longest file name (bytes) the file system of ``folder`` accepts (255 when unknown)."""
    try:
        return max(16, int(os.pathconf(str(folder) or ".", "PC_NAME_MAX")))
    except (OSError, ValueError, AttributeError):
        return 255


def _fit_name(p: Path, name: str, tag: str, ext: str) -> Path:
    """``name`` beside ``p``, or a short hashed ``.warpcam-HASH{tag}{ext}`` when it is too long.

    An output name may use the whole 255 bytes a file system allows; the temporary and lock
    names add a prefix and a tag, so for long outputs they fall back to a name made of a hash of
    the output name (same folder, same extension, so the muxer is still chosen from it).
    """
    folder = p.parent
    if len(os.fsencode(name)) <= _name_max(folder):
        return p.with_name(name)
    digest = hashlib.sha1(os.fsencode(p.name)).hexdigest()[:16]
    ext_b = os.fsencode(ext)
    if len(ext_b) > 32:  # a silly extension: keep it out of the short name
        ext = ""
    return p.with_name(f".warpcam-{digest}{tag}{ext}")


def temp_path_for(path: PathLike) -> Path:
    """Temporary name used while writing ``path``: ``.NAME.warpcam-tmp.EXT`` in the same folder.

    Same folder, so the final ``os.replace`` is an atomic rename on the same file system; same
    extension, so the muxer / image encoder is chosen from it as for the final name. When that
    name would be longer than the file system allows (outputs of about 240 bytes and more), it is
    ``.warpcam-HASH.warpcam-tmp.EXT`` (a hash of the output name).

    This is the *preferred* name; :func:`create_temp_file` takes another one when it exists.
    """
    p = Path(path)
    return _fit_name(p, f".{p.stem}.warpcam-tmp{p.suffix}", ".warpcam-tmp", p.suffix)


def _unique_temp_path(path: PathLike) -> Path:
    """``.NAME.warpcam-PID-RANDOM.tmp.EXT`` beside ``path`` (hashed when too long)."""
    p = Path(path)
    tag = f".warpcam-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    return _fit_name(p, f".{p.stem}{tag}{p.suffix}", tag, p.suffix)


FileId = Tuple[int, int]


def create_temp_file(path: PathLike, *, preferred: Optional[PathLike] = None
                     ) -> Tuple[Path, FileId]:
    """Create, exclusively (``O_CREAT | O_EXCL``), an empty temporary file for writing ``path``.

    The first choice is ``preferred`` (default :func:`temp_path_for`); when a file of that name
    exists (an input that happens to have that name, a file left by a job that crashed) it is
    left alone and a unique ``.NAME.warpcam-PID-RANDOM.tmp.EXT`` is created instead. Nothing is
    ever opened that this call did not create.

    Returns:
        ``(temp_path, file_id)``: the file and its ``(st_dev, st_ino)``, for
        :func:`remove_own_file`.

    Raises:
        OSError: the folder refused the file (permissions, full disk, ...).
    """
    first = Path(preferred) if preferred is not None else temp_path_for(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOFOLLOW", 0)
    candidates = [first] + [None] * 8
    for cand in candidates:
        tmp = cand if cand is not None else _unique_temp_path(path)
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return tmp, (st.st_dev, st.st_ino)
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(first))


def remove_own_file(path: Optional[PathLike], file_id: Optional[FileId]) -> None:
    """Remove ``path`` only if it is still the file ``file_id`` names (the one this job created).

    A file someone put there meanwhile, or ``file_id is None`` (nothing was created), is left
    alone. Never raises.
    """
    if path is None or file_id is None:
        return
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == tuple(file_id):
            os.unlink(path)
    except OSError:
        pass


def lock_path_for(path: PathLike) -> Path:
    """The lock file of output ``path``: ``.NAME.EXT.warpcam-lock`` beside it (hashed if long)."""
    p = Path(path)
    return _fit_name(p, f".{p.name}.warpcam-lock", ".warpcam-lock", "")


_LOCK_MAGIC = b"warpcam pid "


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    except OSError:
        return True
    return True


def _read_lock(fd: int) -> Tuple[bytes, Optional[int]]:
    try:
        data = os.pread(fd, 256, 0)
    except OSError:
        return b"", None
    pid = None
    if data.startswith(_LOCK_MAGIC):
        try:
            pid = int(data[len(_LOCK_MAGIC):].split()[0])
        except (ValueError, IndexError):
            pid = None
    return data, pid


class OutputLock:
    """One writer per output file: an advisory lock held while a job writes ``target``.

    The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on :func:`lock_path_for` (``.NAME.EXT.warpcam-
    lock`` beside the output), which holds ``warpcam pid N``. A second job (another process, or
    another sink in this one) fails at once with :class:`SinkError` naming that pid. The kernel
    drops the lock when its process dies, so a crashed job never blocks the next one: the lock
    file it left (its pid no longer running) is reported through :attr:`stale_pid` and taken
    over. :meth:`release` removes the lock file while still holding it (a job that opened the old
    file meanwhile notices and retries on the new one).

    Raises:
        SinkError: another job holds the lock; a file of the lock's name exists that is not a
            warpcam lock (it is left alone); the lock file cannot be created.
    """

    def __init__(self, target: PathLike) -> None:
        self.target = Path(target)
        self.path = lock_path_for(self.target)
        self.stale_pid: Optional[int] = None
        self._fd: Optional[int] = None
        self._id: Optional[FileId] = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        for _ in range(50):
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                raise SinkError(f"cannot create the lock file {self.path}: "
                                f"{exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _, pid = _read_lock(fd)
                os.close(fd)
                who = f"pid {pid}" if pid is not None else "another process"
                raise SinkError(f"output {self.target} is being written by another warpcam job "
                                f"({who}): wait for it to finish or choose another output") \
                    from None
            except OSError:  # a file system without flock: go on unlocked
                os.close(fd)
                return
            st = os.fstat(fd)
            try:
                now = os.lstat(self.path)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)  # its owner removed it between our open and flock: take the new one
                continue
            break
        else:  # pragma: no cover - a lock file replaced 50 times in a row
            raise SinkError(f"cannot lock output {self.target}: its lock file keeps changing")
        data, pid = _read_lock(fd)
        if data and pid is None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise SinkError(f"{self.path} exists and is not a warpcam lock file: move it away "
                            "or choose another output")
        if pid is not None and pid != os.getpid() and not _pid_alive(pid):
            self.stale_pid = pid
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _LOCK_MAGIC + f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            self._fd, self._id = fd, (st.st_dev, st.st_ino)
            self.release()
            raise SinkError(f"cannot write the lock file {self.path}: "
                            f"{exc.strerror or exc}") from None
        self._fd, self._id = fd, (st.st_dev, st.st_ino)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def leftovers(self) -> list:
        """Temporary files a crashed job (:attr:`stale_pid`) left beside the output.

        They are reported, never deleted: this job cannot know they are not someone's data.
        """
        if self.stale_pid is None:
            return []
        p = self.target
        found = []
        for cand in (temp_path_for(p),):
            if cand.exists():
                found.append(cand)
        prefix = f".{p.stem}.warpcam-{self.stale_pid}-"
        try:
            for entry in os.scandir(p.parent if str(p.parent) else "."):
                if entry.name.startswith(prefix) and entry.name.endswith(f".tmp{p.suffix}"):
                    found.append(p.with_name(entry.name))
        except OSError:
            pass
        return found

    def release(self) -> None:
        """Remove the lock file (while still holding it) and drop the lock. Never raises."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        remove_own_file(self.path, self._id)
        try:
            os.close(fd)
        except OSError:
            pass

    def __del__(self) -> None:  # a sink dropped without close/abort
        try:
            self.release()
        except Exception:
            pass


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file (existing: samefile; else resolved paths)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.expanduser().resolve() == pb.expanduser().resolve()


def _check_output_folder(path: Path, what: str = "output") -> Path:
    """Raise SinkError unless the folder that will hold ``path`` exists and is writable."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise SinkError(f"{what} folder does not exist: {folder}")
    if not folder.is_dir():
        raise SinkError(f"{what} folder is not a folder: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SinkError(f"{what} folder is not writable: {folder}")
    return folder


class Sink:
    """Base class of every frame sink.

    A sink is a context manager: leaving the ``with`` block normally calls :meth:`close`,
    leaving it with an exception calls :meth:`abort`. Both are safe to call more than once, and
    the first one wins.

    Subclasses implement ``_write``, ``_close`` and ``_abort``; the base validates images, counts
    frames and refuses writes after the end.

    Args:
        width, height: the frame size the sink accepts, or ``None`` for any size.
    """

    def __init__(self, width: Optional[int] = None, height: Optional[int] = None) -> None:
        self._expected_size = (None if width is None or height is None
                               else (int(height), int(width)))
        self._frames_written = 0
        self._finished = False

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- public API ------------------------------------------------------------------------------
    def write(self, frame: Frame, image: Optional[np.ndarray] = None) -> None:
        """Write the processed image of ``frame``.

        Args:
            frame: the source frame (its ``index``, ``pts``, ``time_base``, ``name`` are used).
            image: the processed picture for that frame, ``H x W x 3`` ``uint8`` BGR; default:
                ``frame.image``.

        Raises:
            ValueError: the image is not ``H x W x 3`` ``uint8`` or not the sink's size.
            SinkError: the sink was already closed or aborted, or the device/file failed.
        """
        if self._finished:
            raise SinkError(f"{self!r}: write after close/abort")
        image = frame.image if image is None else image
        self._validate(image)
        self._write(frame, image)
        self._frames_written += 1

    def close(self) -> None:
        """Finish the output successfully (flush, rename, release). Safe to call twice."""
        if self._finished:
            return
        self._finished = True
        self._close()

    def abort(self) -> None:
        """Discard the output (remove temporary files, release devices). Never raises."""
        if self._finished:
            return
        self._finished = True
        try:
            self._abort()
        except Exception:
            pass

    def frame_done(self, pipeline) -> bool:
        """Called by the pipeline after each frame it wrote (status frames included).

        The preview (:class:`~warpcam.realtime.io.preview.PreviewSink`) updates its HUD from
        ``pipeline`` and applies the key pressed to the effects' live settings here.

        Args:
            pipeline: the running :class:`~warpcam.realtime.pipeline.Pipeline` (or anything
                with its ``effects``, ``timer`` and ``frames``).

        Returns:
            ``False`` to stop the run (the preview's ``q``); ``True`` (the default) to go on.
        """
        return True

    def set_hud_lines(self, lines: Sequence[str]) -> None:
        """Text lines for a HUD (statistics); ignored by sinks without one."""

    def poll_key(self) -> Optional[str]:
        """The key pressed in a preview window since the last call, or ``None``."""
        return None

    @property
    def is_live(self) -> bool:
        """``True`` when frames go to a live consumer (camera, window), not to storage."""
        return False

    @property
    def frames_written(self) -> int:
        """Number of frames accepted by :meth:`write`."""
        return self._frames_written

    @property
    def closed(self) -> bool:
        return self._finished

    # -- for subclasses --------------------------------------------------------------------------
    def _validate(self, image: np.ndarray) -> None:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", None)
        if self._expected_size is not None:
            want = self._expected_size + (3,)
            if shape != want or dtype != np.uint8:
                raise ValueError(f"image must be {want[0]}x{want[1]}x3 uint8 BGR, got shape "
                                 f"{shape} dtype {dtype}")
        elif (shape is None or len(shape) != 3 or shape[2] != 3 or dtype != np.uint8
              or shape[0] == 0 or shape[1] == 0):
            raise ValueError(f"image must be HxWx3 uint8 BGR, got shape {shape} dtype {dtype}")

    def _write(self, frame: Frame, image: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _abort(self) -> None:
        self._close()


def _is_image_path(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS
