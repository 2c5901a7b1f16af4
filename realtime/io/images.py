"""Still images: :class:`ImageSource` reads one image or a folder of them, :class:`ImageSink`
writes one image (through a temporary name renamed into place) or one file per frame into a
folder (all of them at once at the end: nothing when the job fails).

What is converted: every image is edited as 8-bit BGR. 16-bit images are rounded to 8 bits
(x / 257), float images (TIFF) read as 0 = black, 1 = white; grey becomes three equal channels.
Transparency is kept: the alpha channel (8-bit) goes back into a PNG, TIFF or WebP output, and a
JPEG or BMP output gets the picture composited onto white. Outputs are 8-bit.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Union

import cv2
import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, PathLike, Sink,
                                      SinkError, Source, SourceError, _check_output_folder,
                                      _is_image_path, _remove_quietly, _same_file, temp_path_for,
                                      to_bgr8)

__all__ = ["ImageSource", "ImageSink", "ImageFrame", "ALPHA_EXTENSIONS"]

log = logging.getLogger("warpcam")


#: Outputs that keep an input's alpha channel; the others get the image composited onto white.
ALPHA_EXTENSIONS = (".png", ".tif", ".tiff", ".webp")


@dataclass
class ImageFrame(Frame):
    """A still image's frame: :attr:`image` is its colour (8-bit BGR, what the pipeline edits),
    :attr:`alpha` its transparency, if it has one (``H x W`` ``uint8``, 255 = opaque), which
    :class:`ImageSink` writes back (or composites onto white for a format without alpha)."""

    alpha: Optional[np.ndarray] = None


def _plane_to_u8(plane: np.ndarray) -> np.ndarray:
    """One channel to ``uint8`` the way :func:`to_bgr8` converts colour (16-bit: rounded
    x / 257; float: [0, 1] x 255, clipped)."""
    if plane.dtype == np.uint16:
        return ((plane.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if plane.dtype.kind == "f":
        return np.clip(np.nan_to_num(plane) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return plane.astype(np.uint8, copy=False)


def _png_may_have_alpha(data: bytes) -> bool:
    """From a PNG's header: colour type with alpha (4, 6) or a ``tRNS`` chunk."""
    if len(data) < 26 or not data.startswith(b"\x89PNG"):
        return True  # not sure: look
    if data[25] in (4, 6):
        return True
    idat = data.find(b"IDAT")
    return b"tRNS" in data[: idat if idat > 0 else 65536]


def _png_size(data: bytes) -> Optional[tuple]:
    if len(data) >= 24 and data.startswith(b"\x89PNG") and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _pixel_limit() -> int:
    try:
        return int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS") or (1 << 30))
    except ValueError:
        return 1 << 30


def _decode(buf: np.ndarray, flags: int, path: Path) -> Optional[np.ndarray]:
    try:
        return cv2.imdecode(buf, flags)
    except cv2.error as exc:
        text = " ".join(str(exc).split())
        if "CV_IO_MAX_IMAGE_PIXELS" in text:
            size = _png_size(buf[:24].tobytes())
            dims = f"{size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f} megapixels, " \
                if size else ""
            raise SourceError(f"cannot read image {path}: {dims}more than OpenCV's limit of "
                              f"{_pixel_limit() / 1e6:.0f} megapixels (environment variable "
                              "OPENCV_IO_MAX_IMAGE_PIXELS; about 3 bytes of memory per pixel "
                              "per copy)") from None
        raise SourceError(f"cannot read image {path}: {text.split('error: ')[-1]}") from None


def _align_alpha(colour: np.ndarray, raw: np.ndarray) -> Optional[np.ndarray]:
    """``raw``'s alpha turned the way OpenCV turned ``colour`` (EXIF orientation), found by
    matching the colour planes; ``None`` when no turn matches."""
    rgb, alpha = raw[..., :3], raw[..., 3]
    for k in range(4):
        for flip in (False, True):
            c = np.rot90(rgb[:, ::-1] if flip else rgb, k)
            if c.shape == colour.shape and np.array_equal(c, colour):
                return np.ascontiguousarray(np.rot90(alpha[:, ::-1] if flip else alpha, k))
    return None


def _read_image(path: Path) -> tuple:
    """Read an image: ``(H x W x 3 uint8 BGR, alpha H x W uint8 or None)``, or raise
    SourceError naming it.

    Colour is decoded at its own depth with the EXIF orientation applied
    (``IMREAD_COLOR | IMREAD_ANYDEPTH``) and converted by :func:`to_bgr8`: 16-bit to 8-bit
    rounded (x / 257), float in [0, 1] x 255 (values outside are clipped, with a warning).
    ``IMREAD_COLOR`` alone would convert a float TIFF by OpenCV's own rule and brighten it.
    """
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile: non-ASCII paths on Windows
    except OSError as exc:
        raise SourceError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if buf.size == 0:
        raise SourceError(f"cannot read image {path}: not an image or corrupt (empty file)")
    image = _decode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH, path)
    if image is None:
        raise SourceError(f"cannot read image {path}: not an image or corrupt")
    if image.dtype.kind == "f":
        lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
        if lo < -0.02 or hi > 1.02:  # beyond a few grey levels of rounding
            log.warning(f"{path.name}: floating-point image with values from {lo:g} to {hi:g}; "
                        "read as 0 = black, 1 = white (the rest clipped)")
    alpha = None
    ext = path.suffix.lower()
    if ext in ALPHA_EXTENSIONS and (ext != ".png" or _png_may_have_alpha(buf[:65536].tobytes())):
        raw = _decode(buf, cv2.IMREAD_UNCHANGED, path)
        if raw is not None and raw.ndim == 3 and raw.shape[2] == 4:
            alpha = _align_alpha(image, raw)
            if alpha is None:
                log.warning(f"{path.name}: cannot line up its alpha channel with the oriented "
                            "picture: written without transparency")
            else:
                alpha = _plane_to_u8(alpha)
                if alpha.min() == 255:
                    alpha = None  # opaque everywhere: nothing to keep
    return to_bgr8(image), alpha


def _why(exc: OSError) -> str:
    why = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        why += " (disk full)"
    return why


class ImageSource(Source):
    """One still image, or every image of a folder in sorted file-name order.

    Images are read with ``cv2.imdecode(..., IMREAD_COLOR | IMREAD_ANYDEPTH)``, which applies
    the EXIF orientation, then converted to 8-bit BGR by :func:`to_bgr8` (16-bit rounded,
    float [0, 1] scaled by 255, grey to three channels). Each frame is an :class:`ImageFrame`
    with ``name`` = the file name, ``index`` = position in the sorted list,
    ``pts_seconds = None`` and ``alpha`` = the image's transparency, if any. Images of a folder may differ in size; ``width`` and
    ``height`` are those of the first image.

    Args:
        path: an image file (``.png .jpg .jpeg .bmp .webp .tif .tiff``) or a folder of them
            (hidden files and other extensions are skipped; not recursive).

    Raises:
        SourceError: the path does not exist, a folder holds no image, or an image cannot be
            read (at construction for the first image, during iteration for later ones).
    """

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        super().__init__()
        self._path = Path(path)
        if not self._path.exists():
            raise SourceError(f"input not found: {self._path}")
        if self._path.is_dir():
            files = sorted(p for p in self._path.iterdir()
                           if p.is_file() and not p.name.startswith(".") and _is_image_path(p))
            if not files:
                raise SourceError(f"no images in folder {self._path} (looked for "
                                  f"{' '.join(IMAGE_EXTENSIONS)})")
        else:
            files = [self._path]
        self._files: List[Path] = files
        self._first: Optional[tuple] = _read_image(files[0])
        self._height, self._width = self._first[0].shape[:2]

    @property
    def path(self) -> Path:
        """The image file or folder given."""
        return self._path

    @property
    def is_folder(self) -> bool:
        return self._path.is_dir()

    @property
    def files(self) -> List[Path]:
        """The image files, in iteration order."""
        return list(self._files)

    @property
    def frame_count(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[Frame]:
        self._check_open()
        for i, f in enumerate(self._files):
            if i == 0 and self._first is not None:
                # handed over once: an in-place pipeline edits it, a second pass re-reads
                (image, alpha), self._first = self._first, None
            else:
                image, alpha = _read_image(f)
            yield ImageFrame(image=image, index=i, name=f.name, captured_at=time.perf_counter(),
                             alpha=alpha)

    def __repr__(self) -> str:
        return f"ImageSource({str(self._path)!r})"


class ImageSink(Sink):
    """Write still images: one file, or one file per frame into a folder.

    - ``path`` with an image extension: a single image. The frame is encoded to a temporary
      file at :meth:`write` and renamed onto ``path`` at :meth:`close`; a second frame raises
      :class:`SinkError` (give a folder for several).
    - any other ``path``: a folder (its parent must exist). Each frame is written as
      ``Frame.name`` (``NNNNNN.png`` when it has none) into a private hidden folder created
      for this job (beside ``path`` when ``path`` does not exist yet, inside it when it does);
      :meth:`close` renames that folder to ``path`` (or moves its files into the existing
      ``path``), :meth:`abort` removes it. A job that fails part-way (a bad input image, a full
      disk, Ctrl-C) therefore leaves nothing: no partial set of outputs, no empty folder.

    The format follows the extension (``.png .jpg .jpeg .bmp .webp .tif .tiff``); JPEG quality 95.
    A frame's ``alpha`` (:class:`ImageFrame`) is written back into PNG, TIFF and WebP; JPEG and
    BMP get the picture composited onto white.

    Args:
        path: output image file or folder.
        input_path: the input image or folder, to refuse overwriting it.

    Raises:
        SinkError: parent folder missing or not writable, unsupported extension, output equal
            to the input, a second frame for a single-image output, encoding failure, a write
            that fails (``... No space left on device (disk full)``).
    """

    def __init__(self, path: PathLike, *, input_path: Optional[PathLike] = None) -> None:
        super().__init__()
        self._path = Path(path)
        self._single = self._path.suffix.lower() in IMAGE_EXTENSIONS and not self._path.is_dir()
        if self._single:
            _check_output_folder(self._path)
        else:
            if self._path.suffix and self._path.suffix.lower() in VIDEO_EXTENSIONS:
                raise SinkError(f"image output {self._path} has a video extension")
            if self._path.exists() and not self._path.is_dir():
                raise SinkError(f"image output folder {self._path} is a file (for one image "
                                f"use an extension: {' '.join(IMAGE_EXTENSIONS)})")
            if self._path.exists():
                if not os.access(self._path, os.W_OK | os.X_OK):
                    raise SinkError(f"output folder is not writable: {self._path}")
            else:
                _check_output_folder(self._path)
        if input_path is not None and _same_file(self._path, input_path):
            raise SinkError(f"output {self._path} is the input: choose another name "
                            "(the input images would be overwritten)")
        self._input_dir = None
        if input_path is not None and Path(input_path).is_dir():
            self._input_dir = Path(input_path)
        self._pending: Optional[Path] = None  # single mode: temp file to rename at close
        self._stage: Optional[Path] = None    # folder mode: this job's private folder
        self._stage_is_output = False         # ... renamed to the output folder at close
        self._staged: List[str] = []

    @property
    def path(self) -> Path:
        return self._path

    @property
    def staging_folder(self) -> Optional[Path]:
        """Folder mode: the hidden folder this job writes into until :meth:`close`."""
        return self._stage

    def _target(self, frame: Frame) -> Path:
        if self._single:
            return self._path
        name = frame.name or f"{frame.index:06d}.png"
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            name = f"{Path(name).stem}.png"
        return self._path / Path(name).name

    @staticmethod
    def _with_alpha(frame: Frame, image: np.ndarray, ext: str) -> np.ndarray:
        alpha = getattr(frame, "alpha", None)
        if alpha is None or alpha.shape != image.shape[:2]:
            return image
        if ext in ALPHA_EXTENSIONS:
            return np.dstack([image, alpha])
        a = alpha.astype(np.uint16)[..., None]  # over white, rounded: (c a + 255 (255 - a)) / 255
        return ((image.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)

    def _encode(self, target: Path, image: np.ndarray) -> np.ndarray:
        ext = target.suffix.lower()
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
        try:
            ok, buf = cv2.imencode(ext, image, params)
        except cv2.error as exc:
            raise SinkError(f"cannot encode image {target}: {' '.join(str(exc).split())}") \
                from None
        if not ok:
            raise SinkError(f"cannot encode image {target}")
        return buf

    @staticmethod
    def _write_bytes(path: Path, buf: np.ndarray, target: Path, fd: Optional[int] = None) -> None:
        try:
            with (open(fd, "wb") if fd is not None else open(path, "wb")) as f:
                f.write(memoryview(buf).cast("B"))
        except OSError as exc:
            _remove_quietly(path)
            raise SinkError(f"cannot write image {target}: {_why(exc)}") from None

    @staticmethod
    def _own_temp(target: Path) -> tuple:
        """``(path, fd)`` of a temporary file this job created exclusively beside ``target``:
        :func:`temp_path_for`'s name, or a unique short one when that exists (an input of that
        name is never touched) or is too long."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        first = temp_path_for(target)
        try:
            return first, os.open(first, flags, 0o666)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENAMETOOLONG):
                raise SinkError(f"cannot write image {target}: {_why(exc)}") from None
        for _ in range(8):
            tmp = target.with_name(f".{target.stem[:40]}.warpcam-{os.getpid()}-"
                                   f"{secrets.token_hex(4)}.tmp{target.suffix}")
            try:
                return tmp, os.open(tmp, flags, 0o666)
            except FileExistsError:
                continue
            except OSError as exc:
                raise SinkError(f"cannot write image {target}: {_why(exc)}") from None
        raise SinkError(f"cannot write image {target}: no free temporary name beside it")

    def _stage_folder(self) -> Path:
        if self._stage is None:
            exists = self._path.is_dir()
            where = self._path if exists else (self._path.parent if str(self._path.parent)
                                               else Path("."))
            prefix = ".warpcam-tmp-" if exists else f".{self._path.name[:40]}.warpcam-tmp-"
            for _ in range(8):  # created exclusively, with the usual permissions (umask)
                stage = where / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
                try:
                    os.mkdir(stage, 0o777)
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise SinkError(f"cannot create output folder {self._path}: "
                                    f"{_why(exc)}") from None
                self._stage = stage
                break
            else:
                raise SinkError(f"cannot create output folder {self._path}: no free name")
            self._stage_is_output = not exists
        return self._stage

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        target = self._target(frame)
        image = self._with_alpha(frame, image, target.suffix.lower())
        if self._single:
            if self._pending is not None:
                raise SinkError(f"single-image output {self._path} got a second frame: give a "
                                "folder to write several images")
            buf = self._encode(target, image)
            tmp, fd = self._own_temp(target)
            self._write_bytes(tmp, buf, target, fd)
            self._pending = tmp
            return
        buf = self._encode(target, image)
        stage = self._stage_folder()
        self._write_bytes(stage / target.name, buf, target)
        if target.name not in self._staged:
            self._staged.append(target.name)

    def _close(self) -> None:
        if self._pending is not None:
            try:
                os.replace(self._pending, self._path)
            except OSError as exc:
                _remove_quietly(self._pending)
                raise SinkError(f"cannot write image {self._path}: {exc.strerror or exc}") \
                    from None
            finally:
                self._pending = None
        if self._stage is None:
            return
        stage, self._stage = self._stage, None
        try:
            if self._stage_is_output:
                try:
                    os.rename(stage, self._path)  # the whole folder at once
                    return
                except OSError:
                    self._path.mkdir(exist_ok=True)  # appeared meanwhile: move the files
            for name in self._staged:
                os.replace(stage / name, self._path / name)
            os.rmdir(stage)
        except OSError as exc:
            shutil.rmtree(stage, ignore_errors=True)
            raise SinkError(f"cannot write the images into {self._path}: "
                            f"{exc.strerror or exc}") from None

    def _abort(self) -> None:
        if self._pending is not None:
            _remove_quietly(self._pending)
            self._pending = None
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)  # only this job's own folder
            self._stage = None

    def __repr__(self) -> str:
        return f"ImageSink({str(self._path)!r})"
