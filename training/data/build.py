"""Build a face data set: track faces in image folders and videos, write aligned faces (64, 128,
and 256 with ``--size-256``) and KeepSmiling mouth crops (64) as PNG files, and an index CSV
with their labels (never pickles), same-person pairs, splits and a manifest.

    python -m warpcam.training.data.build --out /tmp/faces \\
        --train-root ../shared/data/train --videos ../shared/data/real/videos \\
        --limit 300 --contact-sheet /tmp/faces/sheet.png

Inputs:

- ``--images DIR`` (repeatable): an image folder; its images are those under ``DIR/images/``
  when that exists, else every image under ``DIR``; the set is named after the folder
  (``--images NAME=DIR`` names it). Label CSVs directly in ``DIR`` with an ``image`` (or
  ``path``) column label the images (:mod:`.labels`).
- ``--train-root DIR``: every sub-folder of ``DIR`` that has an ``images/`` folder, as
  ``--images`` (``shared/data/train``: celeba, genki4k, lfw_expressions, smilesmiled).
- ``--videos FILE|DIR`` (repeatable): video files (every ``.mp4 .avi .mov .mkv .webm .m4v`` in a
  folder), decoded with PyAV (display rotation undone), tracked in video mode (smoothed
  landmarks, track ids); ``--every N`` writes every N-th frame (all frames are tracked).
- ``--openface CSV|DIR`` and ``--au-pickle PKL`` (repeatable): AU labels (:mod:`.labels`); the
  pickle is read with the restricted unpickler. Faces without AU labels get the AU estimator's
  (``warpcam.realtime.au``; per-track calibration in videos, the population neutral for
  photos), unless ``--no-estimator``; its values are also in the ``est_*`` columns of every
  found face. Without the estimator (not importable) the builder goes on, and says so.

Tracking: photos one by one (still-image mode); an image whose longer side is under 256 px is
upscaled to 256 and given a replicated border of a quarter of that on every edge
(:func:`.align.prepare_for_tracking`); where no face is found in such an image a second try uses
a border of 0.4 and a detector threshold of 0.3 (``retry = 1``). Crops are sampled from the
tracker's image (smoothed landmarks in video), landmark columns are in the input's pixels.

Layout of ``OUT``: ``index.csv``, ``pairs.csv``, ``manifest.json`` and ``SET/face_64/ID.png``,
``SET/face_128/``, ``SET/face_256/``, ``SET/mouth_64/``. Alignment and the mouth rule:
:mod:`.align`; the columns, splits and pairs: :mod:`.index`.

Data stay out of the repository: ``OUT`` must not be inside a git work tree unless
``--allow-in-repo`` is given.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import pickle
import platform
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np

from warpcam.core import landmarks as lm
from warpcam.training.data import align, index, labels as lab

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Terms of the known shared sets (for the manifest and any model trained on them).
TERMS = {
    "celeba": "CelebA (Liu et al., ICCV 2015): non-commercial research only",
    "genki4k": "MPLab GENKI-4K (http://mplab.ucsd.edu): non-commercial research only",
    "smilesmiled": "SMILEsmileD (Arigbabu et al.)",
    "lfw_expressions": "Labeled Faces in the Wild; emotion labels from the facial_expressions "
                       "project",
}
PNG = [cv2.IMWRITE_PNG_COMPRESSION, 3]
#: Second try for a small image without a face: this border and detector threshold (measured on
#: 200 SMILEsmileD crops: 95 % found at 0.5 and a quarter border, 99.5 % with this retry).
RETRY_BORDER, RETRY_CONFIDENCE = 0.4, 0.3


# ---------------------------------------------------------------------------- inputs
class ImageSet:
    """An image folder with its labels (module docstring)."""

    def __init__(self, folder, name: Optional[str] = None, limit: Optional[int] = None,
                 seed: int = 0):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder {self.folder} does not exist")
        self.name = name or self.folder.name
        self.root = self.folder / "images" if (self.folder / "images").is_dir() else self.folder
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        self.total = len(files)
        if limit is not None and len(files) > limit:
            # a seeded sample, not the first N (GENKI and SMILEsmileD are sorted by label)
            rng = np.random.default_rng([seed, zlib.crc32(self.name.encode())])
            files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
        self.files = files
        self.label_files = lab.find_label_csvs(self.folder)
        self.labels: Dict[str, dict] = {}
        for c in self.label_files:
            self.labels.update(lab.read_label_csv(c))

    def rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()

    def labels_for(self, p: Path) -> dict:
        for rel in (self.rel(p), p.relative_to(self.folder).as_posix()):
            v = lab.lookup(self.labels, rel)
            if v is not None:
                return v
        return {}


def video_files(paths: Iterable) -> List[Path]:
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in lab.VIDEO_EXTS)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"video {p} does not exist")
    return out


def decode_video(path: Path, max_frames: Optional[int] = None):
    """``(index, time seconds, BGR frame)`` of every frame (PyAV), upright
    (:func:`warpcam.core.video.decode_upright`)."""
    from warpcam.core.video import decode_upright

    yield from decode_upright(path, max_frames)


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


# ---------------------------------------------------------------------------- builder
class Builder:
    """Writes the crops and collects the index rows; :func:`build` drives it."""

    def __init__(self, out, sizes: Sequence[int] = align.FACE_SIZES, mouth: bool = True,
                 seed: int = 0, val: float = 0.1, test: float = 0.1, estimator: bool = True,
                 openface=(), au_pickles=(), max_faces: int = 1, progress: bool = True,
                 landmarks: bool = False):
        self.out = Path(out)
        self.sizes = tuple(sizes)
        self.mouth = mouth
        self.landmarks = landmarks
        self.seed, self.val, self.test = seed, val, test
        self.max_faces = max_faces
        self.progress = progress
        self.rows: List[dict] = []
        self.extra_columns: List[str] = []
        self.inputs: List[dict] = []
        self.openface = lab.OpenFaceLabels(openface)
        self.au_tables = [(Path(p), lab.load_au_pickle(p)) for p in au_pickles]
        self.use_estimator = estimator
        self.estimator_reason = "" if estimator else "disabled (--no-estimator)"
        self._static_est = None
        self._retry = None
        if estimator:
            self._static_est, self.estimator_reason = lab.make_estimator(calibrate=False)

    # -- labels
    def _pickle_aus(self, p: Path, rel: str) -> Optional[dict]:
        for base, table in self.au_tables:
            keys = []
            try:
                keys.append(p.resolve().relative_to(base.resolve().parent).as_posix())
            except ValueError:
                pass
            keys.append(rel)
            for k in keys:
                v = lab.lookup(table, k)
                if v is not None:
                    return v
        return None

    def _add_extra(self, labels: dict) -> dict:
        out = {}
        for k, v in labels.items():
            if k in ("person", "emotion", "smile"):
                out[k] = v
                continue
            col = k if k not in index.BASE_COLUMNS and k not in index.AU_COLUMNS else f"label_{k}"
            if col not in self.extra_columns:
                self.extra_columns.append(col)
            out[col] = v
        return out

    # -- one face
    def _face_row(self, base: dict, img: np.ndarray, face, bounds, scale: float, pad: int,
                  file_stem: str, est, t) -> dict:
        pts = face.landmarks.astype(np.float64)
        row = dict(base)
        row["found"] = 1
        for size in self.sizes:
            crop = align.aligned_face(img, pts, size)
            rel = f"{_safe(base['set'])}/face_{size}/{file_stem}.png"
            self._write(rel, crop)
            row[f"face_{size}"] = rel
        if self.mouth:
            crop, clamped = align.mouth_crop(img, pts, align.MOUTH_SIZE, bounds)
            rel = f"{_safe(base['set'])}/mouth_{align.MOUTH_SIZE}/{file_stem}.png"
            self._write(rel, crop)
            row[f"mouth_{align.MOUTH_SIZE}"] = rel
            row["mouth_clamped"] = int(clamped)
        fp = align.to_input(align.face_points(pts), scale, pad)
        nose = align.to_input(pts[lm.NOSE_TIP][None], scale, pad)[0]
        if self.landmarks:  # all 478 (x, y) in the input's pixels, float32 .npy (no pickle)
            rel = f"{_safe(base['set'])}/landmarks/{file_stem}.npy"
            p = self.out / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            np.save(p, align.to_input(pts[:, :2], scale, pad).astype(np.float32),
                    allow_pickle=False)
            row["landmarks"] = rel
            if "landmarks" not in self.extra_columns:
                self.extra_columns.append("landmarks")
        row.update(eye_r_x=fp[0, 0], eye_r_y=fp[0, 1], eye_l_x=fp[1, 0], eye_l_y=fp[1, 1],
                   mouth_x=fp[2, 0], mouth_y=fp[2, 1], nose_x=nose[0], nose_y=nose[1],
                   align_rms=align.align_residual(pts), yaw=face.yaw, pitch=face.pitch,
                   roll=face.roll)
        if est is not None:
            try:
                aus, smile = lab.estimate(est, face, t)
            except Exception as e:  # an estimator bug must not lose the data set
                self.estimator_reason = f"estimate() failed ({type(e).__name__}: {e})"
                aus, smile = {}, None
            for c, v in aus.items():
                row["est_" + c] = v
            row["est_smile"] = smile
            if not row.get("au_source") and aus:
                row.update(aus)
                row["au_source"] = "estimator"
        return row

    def _write(self, rel: str, crop: np.ndarray) -> None:
        p = self.out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(p), crop, PNG):
            raise OSError(f"could not write {p}")

    def _bar(self, it, total, desc):
        if not self.progress:
            return it
        from tqdm import tqdm
        return tqdm(it, total=total, desc=desc, unit="img" if "video" not in desc else "fr",
                    leave=False, file=sys.stderr)

    # -- image folders
    def add_images(self, iset: ImageSet, tracker) -> None:
        t0 = time.time()
        n_rows0 = len(self.rows)
        for p in self._bar(iset.files, len(iset.files), f"{iset.name}"):
            rel = iset.rel(p)
            stem = _safe(rel.rsplit(".", 1)[0].replace("/", "__"))
            labels = self._add_extra(iset.labels_for(p))
            person = str(labels.get("person") or "")
            item_id = f"{iset.name}/{stem}"
            group = f"person:{person}" if person else f"image:{item_id}"
            base = dict(labels)
            base.update(set=iset.name, kind="image", source=rel, frame="", timestamp="",
                        person=person, group=group, split=self._split(group), found=0,
                        n_faces=0, retry=0)
            aus = self._pickle_aus(p, rel)
            if aus:
                base.update(aus, au_source="pkl")
            else:
                aus = self.openface.for_image(rel)
                if aus:
                    base.update(aus, au_source="openface")
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                self.rows.append(dict(base, id=item_id, face_index="", error="unreadable"))
                continue
            h, w = img.shape[:2]
            grey = int(np.array_equal(img[..., 0], img[..., 1])
                       and np.array_equal(img[..., 1], img[..., 2]))
            base.update(width=w, height=h, grey=grey)
            prep, scale, pad = align.prepare_for_tracking(img)
            faces = tracker.track(prep)[: self.max_faces]
            if not faces and max(h, w) < align.TRACK_MIN_SIDE:
                # second try for tight crops: a wider border, a lower detector threshold
                prep, scale, pad = align.prepare_for_tracking(img, border=RETRY_BORDER)
                faces = self._retry_tracker().track(prep)[: self.max_faces]
                base["retry"] = int(bool(faces))
            base["n_faces"] = len(faces)
            if not faces:
                self.rows.append(dict(base, id=item_id, face_index=""))
                continue
            uh, uw = round(h * scale), round(w * scale)
            bounds = (pad - 0.5, pad - 0.5, pad + uw - 0.5, pad + uh - 0.5)
            for k, face in enumerate(faces):
                fid = item_id if k == 0 else f"{item_id}_{k}"
                fstem = stem if k == 0 else f"{stem}_{k}"
                self.rows.append(self._face_row(dict(base, id=fid, face_index=k), prep, face,
                                                bounds, scale, pad, fstem, self._static_est,
                                                None))
        self.inputs.append(dict(set=iset.name, kind="images", path=str(iset.folder.resolve()),
                                images_in_folder=iset.total, images_used=len(iset.files),
                                label_files=[_file_info(c) for c in iset.label_files],
                                terms=TERMS.get(iset.name, ""),
                                rows=len(self.rows) - n_rows0,
                                seconds=round(time.time() - t0, 1)))

    # -- videos
    def add_video(self, path: Path, set_name: str = "videos", every: int = 1,
                  max_frames: Optional[int] = None) -> None:
        from warpcam.realtime.tracker import FaceTracker

        t0 = time.time()
        n_rows0 = len(self.rows)
        est = None
        if self.use_estimator:
            est, reason = lab.make_estimator(calibrate=True)
            if est is None:
                self.estimator_reason = reason
        stem = _safe(path.stem)
        group = f"video:{stem}"
        split = self._split(group)
        n_frames = 0
        try:
            import av
            with av.open(str(path)) as c:
                n_frames = c.streams.video[0].frames or 0
        except Exception:
            pass
        with FaceTracker(max_faces=self.max_faces) as tracker:
            for i, t, img in self._bar(decode_video(path, max_frames), n_frames or None,
                                       f"video {path.name}"):
                faces = tracker.track(img, t)
                write = i % every == 0
                if not write:
                    if est is not None:  # the calibration sees every frame
                        for f in faces:
                            try:
                                lab.estimate(est, f, t)
                            except Exception:
                                pass
                    continue
                h, w = img.shape[:2]
                base = dict(set=set_name, kind="video", source=path.name, frame=i,
                            timestamp=round(t, 6), person="", group=group, split=split,
                            found=0, n_faces=len(faces), width=w, height=h, grey=0)
                if not faces:
                    self.rows.append(dict(base, id=f"{set_name}/{stem}_f{i:06d}", face_index=""))
                    continue
                for face in faces:
                    fstem = f"{stem}_f{i:06d}_t{face.track_id}"
                    b = dict(base, id=f"{set_name}/{fstem}", face_index=face.track_id)
                    aus = self.openface.for_frame(path.stem, i)
                    if aus:
                        b.update(aus, au_source="openface")
                    self.rows.append(self._face_row(b, img, face, None, 1.0, 0, fstem, est, t))
        self.inputs.append(dict(set=set_name, kind="video", path=str(path.resolve()),
                                frames=n_frames, every=every, max_frames=max_frames,
                                size=_file_size(path), rows=len(self.rows) - n_rows0,
                                seconds=round(time.time() - t0, 1)))

    def _retry_tracker(self):
        if self._retry is None:
            from warpcam.realtime.tracker import FaceTracker
            self._retry = FaceTracker(max_faces=self.max_faces, static_images=True,
                                      min_detection_confidence=RETRY_CONFIDENCE)
        return self._retry

    def close(self) -> None:
        if self._retry is not None:
            self._retry.close()
            self._retry = None

    def _split(self, group: str) -> str:
        return index.split_of(group, self.seed, self.val, self.test)

    def columns(self) -> List[str]:
        cols = list(index.BASE_COLUMNS) + list(index.AU_COLUMNS) + list(index.EST_COLUMNS)
        if any("error" in r for r in self.rows):
            cols.append("error")
        return cols + [c for c in self.extra_columns if c not in cols]


def _file_info(p: Path) -> dict:
    import hashlib
    data = Path(p).read_bytes()
    return dict(path=str(Path(p).resolve()), bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest())


def _file_size(p: Path) -> int:
    try:
        return Path(p).stat().st_size
    except OSError:
        return 0


def _git_root(p: Path) -> Optional[Path]:
    p = p.resolve()
    for q in (p, *p.parents):
        if (q / ".git").exists():
            return q
    return None


def _software() -> dict:
    out = dict(python=platform.python_version(), numpy=np.__version__, opencv=cv2.__version__)
    for mod in ("mediapipe", "av", "torch"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    try:
        here = Path(__file__).resolve().parent
        out["warpcam_commit"] = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=5).stdout.strip()
    except Exception:
        pass
    return out


def build(out, images: Sequence = (), videos: Sequence = (), *, sizes=align.FACE_SIZES,
          mouth: bool = True, limit: Optional[int] = None, seed: int = 0, val: float = 0.1,
          test: float = 0.1, openface=(), au_pickles=(), estimator: bool = True,
          max_faces: int = 1, every: int = 1, max_frames: Optional[int] = None,
          video_set: str = "videos", min_au_diff: float = 1.0, pairs_per_group: int = 50,
          contact_sheet=None, progress: bool = True, argv=None, landmarks: bool = False) -> dict:
    """Build the data set into ``out`` (module docstring); returns the manifest.

    Args:
        images: image folders, or ``(name, folder)`` pairs.
        videos: video files or folders of videos.
        limit: at most this many images per folder (a seeded sample).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    b = Builder(out, sizes=sizes, mouth=mouth, seed=seed, val=val, test=test,
                estimator=estimator, openface=openface, au_pickles=au_pickles,
                max_faces=max_faces, progress=progress, landmarks=landmarks)
    sets = []
    for item in images:
        name, folder = item if isinstance(item, tuple) else (None, item)
        sets.append(ImageSet(folder, name, limit, seed))
    vids = video_files(videos)
    if sets:
        from warpcam.realtime.tracker import FaceTracker
        with FaceTracker(max_faces=max_faces, static_images=True) as tracker:
            for s in sets:
                b.add_images(s, tracker)
    for v in vids:
        b.add_video(v, video_set, every, max_frames)
    b.close()
    rows = b.rows
    pairs = index.make_pairs(rows, seed, min_au_diff, pairs_per_group)
    index.write_csv(out / index.INDEX_FILE, rows, b.columns())
    index.write_csv(out / index.PAIRS_FILE, pairs, index.PAIR_COLUMNS)
    cnt = index.counts(rows)
    manifest = dict(
        format="warpcam face dataset 1",
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command=list(argv) if argv is not None else None,
        seed=seed, split=dict(val=val, test=test, unit="group (video, person, or image)"),
        sizes=list(sizes), mouth_size=align.MOUTH_SIZE if mouth else None,
        alignment=dict(template=align.TEMPLATE, points="eye contour centres (warpcam.core.eyes."
                       "eye_roi), lip centre (warpcam.core.mouth.mouth_roi)",
                       fit="least-squares similarity", border="replicate"),
        mouth_rule="KeepSmiling (seed 003): nose tip 1, corners 61/291, box f0 -+ (b + a_vec), "
                   "clamped, resized to 64x64",
        tracking=dict(min_side=align.TRACK_MIN_SIDE, border=align.TRACK_BORDER,
                      max_faces=max_faces, video_every=every, video_max_frames=max_frames),
        limit_per_folder=limit,
        inputs=b.inputs,
        labels=dict(openface=b.openface.files,
                    au_pickles=[_file_info(p) for p, _ in b.au_tables],
                    au_estimator=dict(used=b.estimator_reason == "" and estimator,
                                      note=b.estimator_reason)),
        pairs=dict(count=len(pairs), min_au_diff=min_au_diff, per_group=pairs_per_group),
        counts=cnt, rows=len(rows), seconds=round(time.time() - t0, 1),
        software=_software())
    tmp = out / (index.MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    tmp.replace(out / index.MANIFEST_FILE)
    if contact_sheet:
        from warpcam.training.data.sheet import contact_sheet as _sheet
        _sheet(out, Path(contact_sheet))
    return manifest


def summary_lines(manifest: dict) -> List[str]:
    lines = ["set                 items   found  share  faces  groups  train/val/test"]
    for s, c in manifest["counts"].items():
        sp = c["split"]
        lines.append(f"{s:<18} {c['items']:>6} {c['found']:>7} {100 * c['share_found']:>5.1f}% "
                     f"{c['faces']:>6} {c['groups']:>7}  {sp['train']}/{sp['val']}/{sp['test']}")
    lines.append(f"pairs: {manifest['pairs']['count']}; AU estimator: "
                 f"{'used' if manifest['labels']['au_estimator']['used'] else 'not used'}"
                 + (f" ({manifest['labels']['au_estimator']['note']})"
                    if manifest['labels']['au_estimator']['note'] else ""))
    return lines


def _sizes(s: str) -> tuple:
    return tuple(int(x) for x in s.split(",") if x.strip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m warpcam.training.data.build",
        description="Track faces in image folders and videos; write aligned faces (similarity "
                    "from the eye centres and the mouth centre to fixed positions), KeepSmiling "
                    "mouth crops, an index CSV with labels, same-person pairs, splits by person "
                    "or video, and a manifest.")
    ap.add_argument("--out", required=True, help="output folder (outside the repository)")
    ap.add_argument("--images", action="append", default=[], metavar="[NAME=]DIR",
                    help="image folder (images/ inside it if present; label CSVs beside)")
    ap.add_argument("--train-root", metavar="DIR",
                    help="every sub-folder with an images/ folder, as --images "
                         "(e.g. ../shared/data/train)")
    ap.add_argument("--videos", action="append", default=[], metavar="FILE|DIR")
    ap.add_argument("--video-set", default="videos", help="set name of the videos")
    ap.add_argument("--limit", type=int, help="at most N images per folder (seeded sample)")
    ap.add_argument("--every", type=int, default=1, help="write every N-th video frame")
    ap.add_argument("--max-frames", type=int, help="at most N frames of each video")
    ap.add_argument("--sizes", type=_sizes, default=align.FACE_SIZES,
                    help="aligned face sizes, comma-separated (default 64,128)")
    ap.add_argument("--size-256", action="store_true", help="also write 256 x 256 faces")
    ap.add_argument("--no-mouth", action="store_true", help="no mouth crops")
    ap.add_argument("--max-faces", type=int, default=1, help="faces per image or frame")
    ap.add_argument("--openface", action="append", default=[], metavar="CSV|DIR",
                    help="OpenFace-style AU CSVs")
    ap.add_argument("--au-pickle", action="append", default=[], metavar="PKL",
                    help="seed-format AU pickle (read with a restricted unpickler)")
    ap.add_argument("--no-estimator", action="store_true",
                    help="no AU estimator labels for unlabelled faces")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val", type=float, default=0.1, help="share of groups for validation")
    ap.add_argument("--test", type=float, default=0.1, help="share of groups for test")
    ap.add_argument("--min-au-diff", type=float, default=1.0,
                    help="pairs: largest AU difference at least this (0-5 scale)")
    ap.add_argument("--pairs-per-group", type=int, default=50)
    ap.add_argument("--contact-sheet", metavar="PNG", help="write a contact sheet of the crops")
    ap.add_argument("--allow-in-repo", action="store_true",
                    help="allow --out inside a git work tree")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--landmarks", action="store_true",
                    help="also write each face's 478 landmarks (input pixels) as "
                         "SET/landmarks/ID.npy (column 'landmarks')")
    a = ap.parse_args(argv)
    images = []
    for s in a.images:
        name, _, folder = s.rpartition("=") if "=" in s else ("", "", s)
        images.append((name or None, folder))
    if a.train_root:
        root = Path(a.train_root)
        if not root.is_dir():
            ap.error(f"--train-root {root} is not a folder")
        images += [(None, str(p)) for p in sorted(root.iterdir()) if (p / "images").is_dir()]
    if not images and not a.videos:
        ap.error("nothing to build: give --images, --train-root or --videos")
    if a.every < 1 or a.max_faces < 1:
        ap.error("--every and --max-faces must be at least 1")
    sizes = tuple(a.sizes) + ((align.LARGE_FACE_SIZE,) if a.size_256 and
                              align.LARGE_FACE_SIZE not in a.sizes else ())
    out = Path(a.out)
    repo = _git_root(out if out.exists() else out.parent if out.parent.exists() else Path("."))
    if repo is not None and not a.allow_in_repo and out.resolve().is_relative_to(repo):
        ap.error(f"--out {out} is inside the git work tree {repo}: data stay out of the "
                 "repository (give another folder, or --allow-in-repo)")
    try:
        m = build(out, images, a.videos, sizes=sizes, mouth=not a.no_mouth, limit=a.limit,
                  seed=a.seed, val=a.val, test=a.test, openface=a.openface,
                  au_pickles=a.au_pickle, estimator=not a.no_estimator, max_faces=a.max_faces,
                  every=a.every, max_frames=a.max_frames, video_set=a.video_set,
                  min_au_diff=a.min_au_diff, pairs_per_group=a.pairs_per_group,
                  contact_sheet=a.contact_sheet, progress=not a.quiet, landmarks=a.landmarks,
                  argv=sys.argv if argv is None else ["build", *argv])
    except (FileNotFoundError, ValueError, OSError, pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in summary_lines(m):
        print(line)
    print(f"wrote {out / index.INDEX_FILE} ({m['rows']} rows), {out / index.PAIRS_FILE}, "
          f"{out / index.MANIFEST_FILE} in {m['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
