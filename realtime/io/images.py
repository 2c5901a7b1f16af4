"""Still images: :class:`ImageSource` reads one image or a folder of them, :class:`ImageSink`
writes one image or one file per frame into a folder (each through a temporary name renamed
into place).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator, List, Optional, Union

import cv2
import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, PathLike, Sink,
                                      SinkError, Source, SourceError, _check_output_folder,
                                      _is_image_path, _remove_quietly, _same_file, temp_path_for,
                                      to_bgr8)

__all__ = ["ImageSource", "ImageSink"]


def _read_image(path: Path) -> np.ndarray:
    """Read an image as ``H x W x 3`` ``uint8`` BGR, or raise SourceError naming it."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile: non-ASCII paths on Windows
    except OSError as exc:
        raise SourceError(f"cannot read image {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None:
        raise SourceError(f"cannot read image {path}: not an image or corrupt"
                          + (" (empty file)" if buf.size == 0 else ""))
    return to_bgr8(image)


class ImageSource(Source):
    """One still image, or every image of a folder in sorted file-name order.

    Images are read with ``cv2.imdecode(..., cv2.IMREAD_COLOR)``, which applies the EXIF
    orientation and turns grey, BGRA and 16-bit images into 8-bit BGR. Each
    :class:`~warpcam.core.types.Frame` has ``name`` = the file name, ``index`` = position in the
    sorted list, ``pts_seconds = None``. Images of a folder may differ in size; ``width`` and
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
        self._first = _read_image(files[0])
        self._height, self._width = self._first.shape[:2]

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
                image, self._first = self._first, None
            else:
                image = _read_image(f)
            yield Frame(image=image, index=i, name=f.name, captured_at=time.perf_counter())

    def __repr__(self) -> str:
        return f"ImageSource({str(self._path)!r})"


class ImageSink(Sink):
    """Write still images: one file, or one file per frame into a folder.

    - ``path`` with an image extension: a single image. The frame is encoded to a temporary
      file at :meth:`write` and renamed onto ``path`` at :meth:`close`; a second frame raises
      :class:`SinkError` (give a folder for several).
    - any other ``path``: a folder (created at the first write if missing; its parent must
      exist). Each frame is written as ``Frame.name`` (``NNNNNN.png`` when it has none) through
      a temporary file renamed at once, so every file in the folder is complete; :meth:`abort`
      only removes a file still being written.

    The format follows the extension (``.png .jpg .jpeg .bmp .webp .tif .tiff``); JPEG quality 95.

    Args:
        path: output image file or folder.
        input_path: the input image or folder, to refuse overwriting it.

    Raises:
        SinkError: parent folder missing or not writable, unsupported extension, output equal
            to the input, a second frame for a single-image output, encoding failure.
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

    @property
    def path(self) -> Path:
        return self._path

    def _target(self, frame: Frame) -> Path:
        if self._single:
            return self._path
        name = frame.name or f"{frame.index:06d}.png"
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            name = f"{Path(name).stem}.png"
        return self._path / Path(name).name

    def _encode_to(self, target: Path, image: np.ndarray) -> Path:
        tmp = temp_path_for(target)
        ext = target.suffix.lower()
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
        try:
            ok, buf = cv2.imencode(ext, image, params)
        except cv2.error as exc:
            raise SinkError(f"cannot encode image {target}: {' '.join(str(exc).split())}") \
                from None
        if not ok:
            raise SinkError(f"cannot encode image {target}")
        try:
            buf.tofile(str(tmp))
        except OSError as exc:
            _remove_quietly(tmp)
            raise SinkError(f"cannot write image {target}: {exc.strerror or exc}") from None
        return tmp

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        if self._single:
            if self._pending is not None:
                raise SinkError(f"single-image output {self._path} got a second frame: give a "
                                "folder to write several images")
            self._pending = self._encode_to(self._path, image)
            return
        if not self._path.exists():
            try:
                self._path.mkdir()
            except OSError as exc:
                raise SinkError(f"cannot create output folder {self._path}: "
                                f"{exc.strerror or exc}") from None
        target = self._target(frame)
        tmp = self._encode_to(target, image)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            _remove_quietly(tmp)
            raise SinkError(f"cannot write image {target}: {exc.strerror or exc}") from None

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

    def _abort(self) -> None:
        if self._pending is not None:
            _remove_quietly(self._pending)
            self._pending = None

    def __repr__(self) -> str:
        return f"ImageSink({str(self._path)!r})"
