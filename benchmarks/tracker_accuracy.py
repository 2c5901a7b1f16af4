"""Tracker accuracy: landmark error against reference landmarks, jitter on a still face and lag on
fast motion, with and without the One Euro filter. Changes to smoothing and tracking are judged
with these numbers.

    python -m benchmarks.tracker_accuracy

Measurements (all in ``benchmarks/results/tracker_accuracy.json``, a markdown table on stdout):

1. **68-point error** on ``../shared/data/real/images/dlib_68pt/`` (PASCAL VOC photos; the XML
   files hold 68 points in the iBUG 300-W order, produced by dlib's 68-point shape predictor, so
   this is agreement with dlib rather than with human annotation). Our 478-point mesh is mapped to
   the 68 iBUG points with :data:`IBUG68` (see :func:`mesh_to_ibug68` for how each group is
   chosen). Normalised mean error (NME) = mean point distance / inter-ocular distance (outer eye
   corners 36-45 of the reference), per face; reported for all 68 points and for the 51 inner
   points (without the jaw, whose iBUG definition follows the silhouette while mesh points are
   fixed on the skin). Faces of the XML that the tracker does not find are counted as misses.
   As a check of the mapping, a nearest-vertex mapping is fitted on ``training_*.xml`` and
   evaluated on ``testing_*.xml``.
2. **478-point error** on ``images/mediapipe/business-person.png`` against the expected landmarks
   of mediapipe's own FaceLandmarker test (``FaceLandmarkerTests.swift``, normalised
   coordinates, FaceLandmarker task model): NME over the 468 mesh points and the 10 iris points.
3. **Jitter on a still face**, with and without the One Euro filter: (a) the astronaut photo held
   still for 90 frames with fresh sensor noise (Gaussian, sigma 3 grey levels) on every frame: the
   true motion is zero, so every landmark movement is jitter; (b) a real still head, the first 25
   frames of ``eyes_left_right_wink_512.mp4``: rigid face points, per-frame translation removed.
   Jitter = RMS over points of the per-point standard deviation over frames, in pixels and in
   percent of the inter-ocular distance; mesh and irises separately.
4. **Lag on fast motion**: the astronaut's head (face ~138 px wide) slides across a 768x384
   canvas at 4, 12 and 24 px per frame (30 fps) and jumps 60 px once; lag = how far the tracked
   face centre trails the true one (px and ms), and frames until a jump is followed to within
   1 px.
"""
from __future__ import annotations

import argparse
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from benchmarks import write_json

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"

# -- the 478 -> 68 mapping ----------------------------------------------------------------------
# iBUG 300-W order, image left = the subject's right. Groups (indices into the FaceMesh topology;
# see realtime/landmarks.py for the named sets):
#   0-16  jaw: the mesh's face oval from 127 (beside the subject's right eye) down over the chin
#         (152) to 356, resampled to 17 points equally spaced along its length (iBUG spaces its jaw
#         points evenly along the outline);
#   17-26 brows: RIGHT_BROW outer->inner (70 63 105 66 107), LEFT_BROW inner->outer
#         (336 296 334 293 300);
#   27-30 nose bridge: the mesh's midline 168-6-197-195-5-4-1 resampled to 4 points, 1 = tip;
#   31-35 nose base: 98 97 2 326 327 (alar base, beside the subnasale, subnasale 2, ...);
#   36-47 eyes: corners 33 133 / 362 263 and the lid points at 3/8 and 5/8 of the lid chains of
#         realtime/landmarks.py: upper 160 158, lower 153 144 (right); upper 385 387, lower 373 380;
#   48-59 outer lips: 61 40 37 0 267 270 291 | 321 314 17 84 91;
#   60-67 inner lips: 78 81 13 311 308 | 402 14 178.
JAW_OVAL = [127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365,
            397, 288, 361, 323, 454, 356]
NOSE_BRIDGE = [168, 6, 197, 195, 5, 4, 1]
IBUG68 = {
    "brows": [70, 63, 105, 66, 107, 336, 296, 334, 293, 300],
    "nose_base": [98, 97, 2, 326, 327],
    "eyes": [33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380],
    "lips": [61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91, 78, 81, 13, 311, 308, 402, 14,
             178],
}
INNER51 = np.arange(17, 68)


def _resample(poly: np.ndarray, n: int) -> np.ndarray:
    """``n`` points equally spaced along the polyline ``poly`` (k x 2), ends included."""
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, poly[:, 0]), np.interp(t, s, poly[:, 1])], axis=1)


def mesh_to_ibug68(points: np.ndarray) -> np.ndarray:
    """``478 x 2`` FaceMesh landmarks -> ``68 x 2`` in the iBUG 300-W order (mapping above)."""
    p = np.asarray(points, np.float64)
    jaw = _resample(p[JAW_OVAL], 17)
    bridge = _resample(p[NOSE_BRIDGE], 4)
    return np.concatenate([jaw, p[IBUG68["brows"]], bridge, p[IBUG68["nose_base"]],
                           p[IBUG68["eyes"]], p[IBUG68["lips"]]], axis=0)


# -- reference data -----------------------------------------------------------------------------

def read_ibug_xml(path: Path):
    """``[(image file, box (x0, y0, x1, y1), 68 x 2 points)]`` from a dlib imglab XML file."""
    out = []
    for img in ET.parse(path).getroot().iter("image"):
        for box in img.iter("box"):
            parts = {int(pt.get("name")): (float(pt.get("x")), float(pt.get("y")))
                     for pt in box.iter("part")}
            if len(parts) != 68:
                continue
            x, y = float(box.get("left")), float(box.get("top"))
            b = (x, y, x + float(box.get("width")), y + float(box.get("height")))
            out.append((img.get("file"), b, np.array([parts[i] for i in range(68)])))
    return out


def read_swift_landmarks(path: Path) -> np.ndarray:
    """The ``static let results`` landmarks of FaceLandmarkerTests.swift: ``478 x 2``
    normalised (x, y)."""
    text = path.read_text()
    start = text.index("= [[", text.index("static let results"))
    end = text.index("]]", start)
    pts = re.findall(r"NormalizedLandmark\(x: ([-\d.e]+), y: ([-\d.e]+)", text[start:end])
    return np.array(pts, np.float64)


def nme(pred: np.ndarray, ref: np.ndarray, d: float, idx=None) -> float:
    if idx is not None:
        pred, ref = pred[idx], ref[idx]
    return float(np.linalg.norm(pred - ref, axis=1).mean() / d)


# -- 1. 68-point error ---------------------------------------------------------------------------

def eval_ibug(tracker) -> dict:
    folder = REAL / "images" / "dlib_68pt"
    sets = {}
    for split in ("training", "testing"):
        sets[split] = read_ibug_xml(folder / f"{split}_with_face_landmarks.xml")
    cache = {}

    def tracked(name):
        if name not in cache:
            img = cv2.imread(str(folder / name))
            cache[name] = [f.landmarks.astype(np.float64) for f in tracker.track(img)]
        return cache[name]

    def match(split):
        """[(reference 68, our 478 or None, inter-ocular distance)]"""
        rows = []
        for name, (x0, y0, x1, y1), ref in sets[split]:
            d = float(np.linalg.norm(ref[36] - ref[45]))
            best, best_dist = None, None
            for pts in tracked(name):
                c = mesh_to_ibug68(pts)[INNER51].mean(axis=0)
                dist = np.linalg.norm(c - ref[INNER51].mean(axis=0))
                if dist < 0.5 * max(x1 - x0, y1 - y0) and (best is None or dist < best_dist):
                    best, best_dist = pts, dist
            rows.append((ref, best, d, name))
        return rows

    res = {}
    for split in ("training", "testing"):
        rows = match(split)
        found = [(ref, pts, d) for ref, pts, d, _ in rows if pts is not None]
        e68 = [nme(mesh_to_ibug68(p), r, d) for r, p, d in found]
        e51 = [nme(mesh_to_ibug68(p), r, d, INNER51) for r, p, d in found]
        per_group = {}
        for g, idx in (("jaw", np.arange(0, 17)), ("brows", np.arange(17, 27)),
                       ("nose", np.arange(27, 36)), ("eyes", np.arange(36, 48)),
                       ("lips", np.arange(48, 68))):
            per_group[g] = float(np.mean([nme(mesh_to_ibug68(p), r, d, idx) for r, p, d in found]))
        res[split] = dict(faces=len(rows), found=len(found),
                          inter_ocular_px_median=float(np.median([d for _, _, d, _ in rows])),
                          found_inter_ocular_px_median=float(np.median([d for _, _, d in found]))
                          if found else None,
                          nme68_mean=float(np.mean(e68)), nme68_median=float(np.median(e68)),
                          nme51_mean=float(np.mean(e51)), nme51_median=float(np.median(e51)),
                          failure_rate_nme68_over_0_1=float(np.mean(np.array(e68) > 0.1)),
                          nme_by_group=per_group)
        res[split + "_rows"] = rows
    # Check of the mapping: the nearest mesh vertex per iBUG point, fitted on training faces.
    train = [(r, p, d) for r, p, d, _ in res["training_rows"] if p is not None]
    test = [(r, p, d) for r, p, d, _ in res["testing_rows"] if p is not None]
    if train and test:
        err = np.zeros((68, 478))
        for r, p, d in train:
            err += np.linalg.norm(p[None, :, :] - r[:, None, :], axis=2) / d
        fitted = err.argmin(axis=1)
        res["fitted_mapping"] = fitted.tolist()
        res["testing_fitted"] = dict(
            nme68_mean=float(np.mean([nme(p[fitted], r, d) for r, p, d in test])),
            nme51_mean=float(np.mean([nme(p[fitted], r, d, INNER51) for r, p, d in test])))
    for split in ("training", "testing"):
        del res[split + "_rows"]
    return res


# -- 2. 478-point error against mediapipe's own test ---------------------------------------------

def eval_mediapipe(tracker) -> dict:
    folder = REAL / "images" / "mediapipe"
    img = cv2.imread(str(folder / "business-person.png"))
    ref = read_swift_landmarks(folder / "FaceLandmarkerTests.swift")
    h, w = img.shape[:2]
    ref_px = ref * [w, h] - 0.5  # normalised [0, 1] edges -> pixel centres at integers
    faces = tracker.track(img)
    if not faces or ref.shape[0] != 478:
        return dict(found=len(faces), reference_points=int(ref.shape[0]))
    p = faces[0].landmarks.astype(np.float64)
    d = float(np.linalg.norm(ref_px[33] - ref_px[263]))
    mesh, iris = np.arange(468), np.arange(468, 478)
    off = (p - ref_px)[mesh].mean(axis=0)
    return dict(found=len(faces), inter_ocular_px=d,
                nme_mesh=nme(p, ref_px, d, mesh), nme_iris=nme(p, ref_px, d, iris),
                nme_all=nme(p, ref_px, d), mean_px_error=float(np.linalg.norm(p - ref_px,
                                                                             axis=1).mean()),
                mean_offset_px=off.tolist(),
                note="reference: FaceLandmarker task model; ours: legacy FaceMesh "
                     "(refine_landmarks) - different model versions")


# -- 3. jitter -----------------------------------------------------------------------------------

FACE_RIGID = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
              377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
              109, 1, 4, 5, 195, 197, 6]


def _track_sequence(images, smooth: bool, fps: float = 30.0):
    from warpcam.realtime.tracker import FaceTracker

    out = []
    with FaceTracker(smooth=smooth) as tr:
        for i, img in enumerate(images):
            f = tr.track(img, i / fps)
            out.append(f[0].landmarks.astype(np.float64) if f else None)
    return out


def _jitter(seq, skip: int, idx, remove_translation: bool = False) -> float:
    a = np.stack([s for s in seq[skip:] if s is not None])[:, idx]
    if remove_translation:
        a = a - a.mean(axis=1, keepdims=True)
    return float(np.sqrt((a.std(axis=0) ** 2).sum(axis=1).mean()))


def _accel(seq, skip: int, idx) -> float:
    """RMS second difference over frames (px / frame^2): frame-to-frame jitter, blind to slow
    steady motion of a real head."""
    a = np.stack([s for s in seq[skip:] if s is not None])[:, idx]
    return float(np.sqrt((np.diff(a, n=2, axis=0) ** 2).sum(axis=2).mean()))


def eval_jitter() -> dict:
    from skimage import data

    astro = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(0)
    still = [np.clip(astro + rng.normal(0, 3.0, astro.shape), 0, 255).astype(np.uint8)
             for _ in range(90)]
    res = {}
    mesh, iris = np.arange(468), np.arange(468, 478)
    for smooth in (False, True):
        seq = _track_sequence(still, smooth)
        d = float(np.linalg.norm(seq[0][33] - seq[0][263]))
        key = "one_euro" if smooth else "raw"
        res.setdefault("synthetic_still", {})[key] = dict(
            mesh_px=_jitter(seq, 10, mesh), iris_px=_jitter(seq, 10, iris),
            mesh_pct_iod=100 * _jitter(seq, 10, mesh) / d,
            iris_pct_iod=100 * _jitter(seq, 10, iris) / d)
        res["synthetic_still"]["inter_ocular_px"] = d
    clip = REAL / "videos" / "eyes_left_right_wink_512.mp4"
    if clip.exists():
        from warpcam.realtime.io import VideoFileSource

        with VideoFileSource(clip) as src:
            frames = [f.image for f, _ in zip(src, range(25))]
        for smooth in (False, True):
            seq = _track_sequence(frames, smooth)
            d = float(np.linalg.norm(seq[0][33] - seq[0][263]))
            key = "one_euro" if smooth else "raw"
            j = _jitter(seq, 5, FACE_RIGID, remove_translation=True)
            acc = _accel(seq, 5, FACE_RIGID)
            res.setdefault("real_still_head", {})[key] = dict(
                rigid_px=j, rigid_pct_iod=100 * j / d, rigid_accel_px=acc,
                rigid_accel_pct_iod=100 * acc / d)
            res["real_still_head"]["inter_ocular_px"] = d
    return res


# -- 4. lag --------------------------------------------------------------------------------------

def eval_lag() -> dict:
    from skimage import data

    astro = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    # The head, 1.5x (face ~138 px wide), on a 768 x 384 canvas: the face stays ~18 % of the
    # frame width, where the short-range face detector finds it reliably.
    head = cv2.resize(astro[0:256, 96:352], None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)
    H, W = 384, 768

    def canvas(x):
        c = np.full((H, W, 3), 120, np.uint8)
        xi = int(round(x))
        c[:, xi:xi + head.shape[1]] = head
        return c

    res = {}
    for speed in (4, 12, 24):
        n = (W - head.shape[1]) // speed
        xs = speed * np.arange(n)
        images = [canvas(x) for x in xs]
        row = {}
        for smooth in (False, True):
            seq = _track_sequence(images, smooth)
            cx = np.array([s[:468, 0].mean() if s is not None else np.nan for s in seq])
            true = cx[0] + (xs - xs[0])  # the picture moves rigidly by xs
            lag = (true - cx)[8:]
            row["one_euro" if smooth else "raw"] = dict(
                lag_px=float(np.nanmean(lag)), lag_ms=float(np.nanmean(lag) / speed * 1000 / 30))
        res[f"{speed}px_per_frame"] = row
    # a jump of 60 px after 15 still frames
    xs = np.array([100.0] * 15 + [160.0] * 20)
    images = [canvas(x) for x in xs]
    for smooth in (False, True):
        seq = _track_sequence(images, smooth)
        cx = np.array([s[:468, 0].mean() for s in seq])
        target = cx[14] + 60
        after = np.abs(cx[15:] - target)
        settle = int(np.argmax(after < 1.0)) if (after < 1.0).any() else None
        res.setdefault("jump_60px", {})["one_euro" if smooth else "raw"] = dict(
            frames_to_1px=settle, first_frame_error_px=float(after[0]))
    return res


def table(res: dict) -> str:
    lines = ["| measurement | raw | One Euro (as tracked) |", "| --- | --- | --- |"]
    j = res.get("jitter", {})
    if "synthetic_still" in j:
        s = j["synthetic_still"]
        lines.append(f"| jitter, still photo + noise, mesh (px / % IOD) | "
                     f"{s['raw']['mesh_px']:.3f} / {s['raw']['mesh_pct_iod']:.2f} | "
                     f"{s['one_euro']['mesh_px']:.3f} / {s['one_euro']['mesh_pct_iod']:.2f} |")
        lines.append(f"| jitter, still photo + noise, irises (px / % IOD) | "
                     f"{s['raw']['iris_px']:.3f} / {s['raw']['iris_pct_iod']:.2f} | "
                     f"{s['one_euro']['iris_px']:.3f} / {s['one_euro']['iris_pct_iod']:.2f} |")
    if "real_still_head" in j:
        s = j["real_still_head"]
        lines.append(f"| spread, real still head, rigid points, std (px / % IOD) | "
                     f"{s['raw']['rigid_px']:.3f} / {s['raw']['rigid_pct_iod']:.2f} | "
                     f"{s['one_euro']['rigid_px']:.3f} / {s['one_euro']['rigid_pct_iod']:.2f} |")
        lines.append(f"| jitter, real still head, rigid points, RMS 2nd difference (px / % IOD) | "
                     f"{s['raw']['rigid_accel_px']:.3f} / {s['raw']['rigid_accel_pct_iod']:.2f} | "
                     f"{s['one_euro']['rigid_accel_px']:.3f} / "
                     f"{s['one_euro']['rigid_accel_pct_iod']:.2f} |")
    for k, v in res.get("lag", {}).items():
        if k.endswith("per_frame"):
            lines.append(f"| lag at {k.replace('_', ' ')} (px / ms) | {v['raw']['lag_px']:.2f} / "
                         f"{v['raw']['lag_ms']:.1f} | {v['one_euro']['lag_px']:.2f} / "
                         f"{v['one_euro']['lag_ms']:.1f} |")
    if "jump_60px" in res.get("lag", {}):
        v = res["lag"]["jump_60px"]
        lines.append(f"| 60 px jump: frames to within 1 px | {v['raw']['frames_to_1px']} | "
                     f"{v['one_euro']['frames_to_1px']} |")
    out = "\n".join(lines)
    ib = res.get("ibug68", {})
    if ib:
        rows = ["", "", "| set | faces | found | NME 68 mean / median | NME 51 mean / median | "
                "jaw | brows | nose | eyes | lips |", "| --- " * 10 + "|"]
        for split in ("training", "testing"):
            r = ib[split]
            g = r["nme_by_group"]
            rows.append(f"| dlib_68pt {split} | {r['faces']} | {r['found']} | "
                        f"{r['nme68_mean']:.3f} / {r['nme68_median']:.3f} | "
                        f"{r['nme51_mean']:.3f} / {r['nme51_median']:.3f} | {g['jaw']:.3f} | "
                        f"{g['brows']:.3f} | {g['nose']:.3f} | {g['eyes']:.3f} | "
                        f"{g['lips']:.3f} |")
        if "testing_fitted" in ib:
            t = ib["testing_fitted"]
            rows.append(f"| testing, nearest-vertex mapping fitted on training | | | "
                        f"{t['nme68_mean']:.3f} | {t['nme51_mean']:.3f} | | | | | |")
        out += "\n".join(rows)
    mp_ = res.get("mediapipe", {})
    if "nme_mesh" in mp_:
        out += (f"\n\nbusiness-person.png vs FaceLandmarker's expected landmarks: NME mesh "
                f"{mp_['nme_mesh']:.4f}, irises {mp_['nme_iris']:.4f} (inter-ocular "
                f"{mp_['inter_ocular_px']:.0f} px, mean error {mp_['mean_px_error']:.2f} px)")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default="benchmarks/results/tracker_accuracy.json")
    ap.add_argument("--skip", default="", help="comma-separated: ibug68,mediapipe,jitter,lag")
    a = ap.parse_args(argv)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    from warpcam.realtime.tracker import FaceTracker

    res = dict(mapping=dict(jaw_oval=JAW_OVAL, nose_bridge=NOSE_BRIDGE, **IBUG68))
    with FaceTracker(static_images=True, max_faces=10) as tr:
        if "ibug68" not in skip and (REAL / "images" / "dlib_68pt").exists():
            res["ibug68"] = eval_ibug(tr)
        if "mediapipe" not in skip and (REAL / "images" / "mediapipe").exists():
            res["mediapipe"] = eval_mediapipe(tr)
    if "jitter" not in skip:
        res["jitter"] = eval_jitter()
    if "lag" not in skip:
        res["lag"] = eval_lag()
    print(table(res))
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
