"""Expression transfer with Glow latent arithmetic (seed 004, aandvalenzuela/normalizing-flows,
CVPRW 2021; the attribute arithmetic of Kingma & Dhariwal 2018, sec. 5.3)::

    y(alpha) = decode( mean_z(target) + alpha * (z(source) - mean_z(source)) )

``mean_z(P)`` is the mean latent of the aligned photos of person ``P`` (decoding it gives P's
"mean face": neutral, frontal); ``z(source) - mean_z(source)`` is the source photo's expression
as a latent offset. Latents are the model's standardised ones of every level
(:mod:`warpcam.training.glow.model`), averaged over all levels.

    python -m warpcam.training.glow.transfer --target-dir DIR --source-dir DIR \\
        --source-image IMG --alpha 0.3:0.5:0.02 --out SHEET.png [--model FILE]

``--alpha`` is one value (default 0.4) or ``start:stop:step`` (stop included, the seed's
sweep 0.30..0.50 by 0.02 is 11 values). The source image need not be in ``--source-dir`` (the
seed's source mean is its own identity folder; with only expression photos, give their folder).

**Face alignment** (instead of the seed's dlib + imutils ``FaceAligner``): every photo goes
through our tracker (:class:`warpcam.realtime.tracker.FaceTracker`, mediapipe FaceMesh, still
image mode) and the data set builder's transform (:func:`warpcam.training.data.align.
aligned_face`: the similarity that puts the right eye, left eye and mouth centres on the
template, border replicated) at the model's size, so the faces look like the training crops.
Photos smaller than 256 px are upscaled with a border first (:func:`~warpcam.training.data.
align.prepare_for_tracking`); where no face is found a second try adds a wider replicated
border and lowers the detector threshold (the builder's retry). The largest face is used.

Writes ``SHEET.png`` (columns: target mean face, source photo, source mean face, then one
output per alpha; 2x upscaled, labelled) and, in ``SHEET_images/``, every output
(``alpha_0.30.png``, at the model's size), the mean faces and the aligned source. The model is
loaded only through :func:`warpcam.realtime.runtime.load_model` (checked archive). Bad folders,
unreadable images or no face: one-line error (``SystemExit``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from warpcam.training.data import align

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
KIND = "warpcam.glow.faces"
DEFAULT_MODEL = "glow_faces.pt2"
RETRY_BORDER, RETRY_CONFIDENCE = 0.4, 0.3  # as warpcam.training.data.build's retry


class TransferError(ValueError):
    """Bad input for the transfer (one-line message)."""


def parse_alphas(text: str) -> List[float]:
    """``"0.4"`` -> ``[0.4]``; ``"0.3:0.5:0.02"`` -> ``[0.30, 0.32, ..., 0.50]`` (stop
    included). Raises :class:`TransferError` on a malformed value."""
    try:
        parts = [float(p) for p in str(text).split(":")]
    except ValueError:
        raise TransferError(f"--alpha {text!r}: give a number or start:stop:step") from None
    if len(parts) == 1:
        return parts
    if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
        raise TransferError(f"--alpha {text!r}: give start:stop:step with step > 0, stop >= start")
    n = int(np.floor((parts[1] - parts[0]) / parts[2] + 1e-6)) + 1
    return [round(parts[0] + i * parts[2], 6) for i in range(n)]


def image_files(folder) -> List[Path]:
    """Image files of ``folder`` (sorted). Raises :class:`TransferError` if there are none."""
    d = Path(folder)
    if not d.is_dir():
        raise TransferError(f"{folder}: not a folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise TransferError(f"{folder}: no images ({', '.join(IMAGE_EXTS)})")
    return files


class Aligner:
    """Photos -> aligned ``size x size`` BGR uint8 faces (module docstring); a context manager
    (closes the trackers)."""

    def __init__(self, size: int):
        from warpcam.realtime.tracker import FaceTracker

        self.size = size
        self.tracker = FaceTracker(max_faces=1, static_images=True)
        self._retry = None
        self._cls = FaceTracker

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for t in (self.tracker, self._retry):
            if t is not None:
                t.close()
        self.tracker = self._retry = None

    def align(self, image_bgr: np.ndarray) -> Optional[np.ndarray]:
        """The aligned face of the largest face in the image, or None without a face."""
        prep, _, _ = align.prepare_for_tracking(image_bgr)
        faces = self.tracker.track(prep)
        if not faces:
            pad = int(round(RETRY_BORDER * max(prep.shape[:2])))
            prep = cv2.copyMakeBorder(prep, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            if self._retry is None:
                self._retry = self._cls(max_faces=1, static_images=True,
                                        min_detection_confidence=RETRY_CONFIDENCE)
            faces = self._retry.track(prep)
        if not faces:
            return None
        return align.aligned_face(prep, faces[0].landmarks.astype(np.float64), self.size)

    def align_file(self, path) -> Optional[np.ndarray]:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise TransferError(f"{path}: cannot read the image")
        return self.align(img)

    def align_folder(self, folder) -> Tuple[np.ndarray, List[Path], List[Path]]:
        """``(faces (N, S, S, 3) uint8, files used, files without a face)``; raises
        :class:`TransferError` when no photo of the folder has a face."""
        faces, used, missed = [], [], []
        for p in image_files(folder):
            f = self.align_file(p)
            (missed if f is None else used).append(p)
            if f is not None:
                faces.append(f)
        if not faces:
            raise TransferError(f"{folder}: no face found in any of its {len(missed)} images")
        return np.stack(faces), used, missed


def to_chw01(faces_bgr: np.ndarray) -> np.ndarray:
    """``(N, S, S, 3)`` BGR uint8 -> ``(N, 3, S, S)`` RGB float32 in [0, 1]."""
    return np.ascontiguousarray(faces_bgr[..., ::-1].transpose(0, 3, 1, 2), np.float32) / 255.0


def to_bgr_u8(images01: np.ndarray) -> np.ndarray:
    """``(N, 3, S, S)`` RGB in [0, 1] -> ``(N, S, S, 3)`` BGR uint8."""
    a = np.clip(np.asarray(images01), 0, 1).transpose(0, 2, 3, 1)[..., ::-1]
    return np.ascontiguousarray((a * 255.0).round().astype(np.uint8))


class GlowCodec:
    """The exported Glow (:mod:`warpcam.training.glow.export`) through the model runtime:
    ``encode((N, 3, S, S) [0, 1]) -> (N, D)``, ``decode((N, D)) -> (N, 3, S, S) [0, 1]``,
    run in padded batches of :attr:`BATCH`.

    Raises:
        warpcam.realtime.runtime.ModelError: a missing, refused or other-kind file.
    """

    def __init__(self, path=None, threads: int = 1):
        from warpcam import models
        from warpcam.realtime.runtime import load_model

        path = Path(path) if path else models.path(DEFAULT_MODEL)
        self.model = load_model(path, kind=KIND, device="cpu", threads=threads,
                                label="Glow model")
        self.size = self.model.crop_h
        self.dims = 3 * self.size * self.size

    BATCH = 16  # one batch size: the runtime traces the program once per batch size

    def _run(self, x: np.ndarray, z: np.ndarray):
        n, b, outs = len(x), self.BATCH, []
        for s in range(0, n, b):
            xs, zs = x[s:s + b], z[s:s + b]
            k = len(xs)
            if k < b:  # pad the last batch (repeats of its first row)
                xs = np.concatenate([xs, np.repeat(xs[:1], b - k, 0)])
                zs = np.concatenate([zs, np.repeat(zs[:1], b - k, 0)])
            outs.append([o[:k] for o in self.model(xs, zs)])
        return [np.concatenate([o[i] for o in outs]) for i in range(3)]

    def encode(self, x01: np.ndarray) -> np.ndarray:
        x = np.asarray(x01, np.float32)
        return self._run(x, np.zeros((len(x), self.dims), np.float32))[0]

    def decode(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, np.float32)
        x = np.full((len(z), 3, self.size, self.size), 0.5, np.float32)
        return self._run(x, z)[1]

    def bpd(self, x01: np.ndarray) -> np.ndarray:
        x = np.asarray(x01, np.float32)
        return self._run(x, np.zeros((len(x), self.dims), np.float32))[2]


def transfer_latents(z_target_mean: np.ndarray, z_source: np.ndarray,
                     z_source_mean: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """``(len(alphas), D)``: ``z_target_mean + alpha (z_source - z_source_mean)`` (seed 004)."""
    a = np.asarray(alphas, np.float32)[:, None]
    return (z_target_mean[None] + a * (z_source - z_source_mean)[None]).astype(np.float32)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((18, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([tile, bar])


def sheet(tiles: Sequence[np.ndarray], labels: Sequence[str], scale: int = 2,
          per_row: int = 7) -> np.ndarray:
    """BGR uint8 sheet of labelled tiles, ``per_row`` per row, upscaled ``scale`` times."""
    big = [_label(cv2.resize(t, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC), s)
           for t, s in zip(tiles, labels)]
    blank = np.full_like(big[0], 255)
    rows = []
    for r in range(0, len(big), per_row):
        row = big[r:r + per_row]
        row += [blank] * (per_row - len(row))
        rows.append(np.hstack(row))
    return np.vstack(rows)


def run_transfer(codec: GlowCodec, aligner: Aligner, target_dir, source_dir, source_image,
                 alphas: Sequence[float]) -> dict:
    """Everything of one transfer: ``dict(outputs (A, S, S, 3) BGR uint8, target_mean,
    source_mean, source (S, S, 3), z_target_mean, z_source_mean, z_source, target_files,
    source_files, missed)``."""
    tgt, t_used, t_missed = aligner.align_folder(target_dir)
    src_set, s_used, s_missed = aligner.align_folder(source_dir)
    src = aligner.align_file(source_image)
    if src is None:
        raise TransferError(f"{source_image}: no face found")
    zt = codec.encode(to_chw01(tgt)).mean(0)
    zs_mean = codec.encode(to_chw01(src_set)).mean(0)
    zs = codec.encode(to_chw01(src[None]))[0]
    out = codec.decode(transfer_latents(zt, zs, zs_mean, alphas))
    means = codec.decode(np.stack([zt, zs_mean]))
    return dict(outputs=to_bgr_u8(out), target_mean=to_bgr_u8(means[:1])[0],
                source_mean=to_bgr_u8(means[1:])[0], source=src, z_target_mean=zt,
                z_source_mean=zs_mean, z_source=zs, target_files=t_used, source_files=s_used,
                missed=t_missed + s_missed, alphas=list(alphas))


def write_outputs(res: dict, out_sheet, images_dir=None) -> Tuple[Path, Path]:
    """Write the sheet and the images (module docstring); returns ``(sheet, images dir)``."""
    out_sheet = Path(out_sheet)
    images_dir = Path(images_dir) if images_dir else out_sheet.with_name(out_sheet.stem
                                                                         + "_images")
    images_dir.mkdir(parents=True, exist_ok=True)
    out_sheet.parent.mkdir(parents=True, exist_ok=True)
    for a, img in zip(res["alphas"], res["outputs"]):
        cv2.imwrite(str(images_dir / f"alpha_{a:.2f}.png"), img)
    for name in ("target_mean", "source_mean", "source"):
        cv2.imwrite(str(images_dir / f"{name}.png"), res[name])
    tiles = [res["target_mean"], res["source"], res["source_mean"], *res["outputs"]]
    labels = ["target mean", "source", "source mean", *[f"a={a:.2f}" for a in res["alphas"]]]
    if not cv2.imwrite(str(out_sheet), sheet(tiles, labels)):
        raise TransferError(f"{out_sheet}: cannot write the sheet")
    return out_sheet, images_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Glow expression transfer (seed 004): "
                                 "decode(mean_z(target) + alpha (z(source) - mean_z(source))).")
    ap.add_argument("--target-dir", required=True, help="photos of the target person")
    ap.add_argument("--source-dir", required=True, help="photos of the source person")
    ap.add_argument("--source-image", required=True, help="the photo with the expression")
    ap.add_argument("--alpha", default="0.4", help="a value or start:stop:step")
    ap.add_argument("--out", required=True, help="the sheet (PNG)")
    ap.add_argument("--images-dir", default=None, help="default: SHEET_images/ beside it")
    ap.add_argument("--model", default=None, help="a Glow .pt2 (default: the bundled model)")
    a = ap.parse_args(argv)
    from warpcam.realtime.runtime import ModelError

    try:
        alphas = parse_alphas(a.alpha)
        if not Path(a.source_image).is_file():
            raise TransferError(f"{a.source_image}: no such image")
        image_files(a.target_dir), image_files(a.source_dir)  # bad folders before loading
        codec = GlowCodec(a.model)
        with Aligner(codec.size) as aligner:
            res = run_transfer(codec, aligner, a.target_dir, a.source_dir, a.source_image,
                               alphas)
        sheet_path, images = write_outputs(res, a.out, a.images_dir)
    except (TransferError, ModelError, FileNotFoundError) as exc:
        raise SystemExit(f"glow transfer: {exc}") from None
    for p in res["missed"]:
        print(f"glow transfer: no face in {p} (left out)", file=sys.stderr)
    print(f"wrote {sheet_path} and {len(alphas)} images in {images}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
