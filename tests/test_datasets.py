"""Face datasets (training/data): the restricted unpickler, the alignment and mouth rules, the
builder end to end on a tiny made-up set (photos with labels, an AU pickle, an OpenFace CSV, a
short video), splits, pairs, the torch loaders, and a smoke run on the shared sets."""
from __future__ import annotations

import csv
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import realdata
from warpcam.training.data import align, index, labels
from warpcam.training.data.safe_pickle import UnsafePickleError, safe_load, safe_loads

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SEED_PICKLES = (SHARED / "real" / "images" / "fine_grained" / "aus_dataset.pkl",
                SHARED / "real" / "images" / "ganimation" / "aus_openface.pkl")


# ---------------------------------------------------------------------------- unpickler
class _RunsCode:
    """Unpickling this calls ``os.system`` (in an unrestricted unpickler)."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Evals:
    def __init__(self, src):
        self.src = src

    def __reduce__(self):
        return (eval, (self.src,))


class _Opens:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_restricted_unpickler_refuses_code_and_the_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = [
        pickle.dumps(_RunsCode(f"touch {marker}")),
        pickle.dumps({"aus": [1.0, _RunsCode(f"touch {marker}")]}, protocol=2),
        pickle.dumps([{"path": "x.jpg", "aus": np.zeros(11)}, _Opens(str(marker))]),
        pickle.dumps((np.ones(3), _Evals(f"open({str(marker)!r}, 'w')")), protocol=0),
    ]
    for data in evil:
        with pytest.raises(UnsafePickleError) as e:
            safe_loads(data)
        msg = str(e.value)
        assert "\n" not in msg and "refused" in msg
        assert not marker.exists()
    # the same bytes would run code under pickle.loads: check that this test's pickle is real
    pickle.loads(evil[0])
    assert marker.exists()


def test_restricted_unpickler_refuses_object_arrays_and_other_numpy_classes():
    for obj in (np.array([1, "a", None], dtype=object), np.ma.masked_array([1, 2], mask=[0, 1]),
                np.zeros(2, dtype=[("a", "f4"), ("b", "i2")]), {1, 2j}):
        data = pickle.dumps(obj, protocol=2)
        with pytest.raises(UnsafePickleError):
            safe_loads(data)
    # a file named in the error
    with pytest.raises(UnsafePickleError, match="refused"):
        safe_loads(pickle.dumps(print))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickler_round_trips_arrays_and_plain_data(protocol):
    objs = [np.arange(6, dtype=">i4").reshape(2, 3).T, np.array(3.5), np.zeros((0, 3)),
            np.array(["ab", "cde"]), np.array([True, False]), np.float32(1.5), np.int64(-7),
            np.arange(10.0)[::3]]
    data = {"list": [1, 2.5, "s", None, True, b"by"], "tuple": (1, (2,)), "arrays": objs}
    back = safe_loads(pickle.dumps(data, protocol=protocol))
    assert back["list"] == data["list"] and back["tuple"] == data["tuple"]
    for a, b in zip(objs, back["arrays"]):
        assert type(a) is type(b) and a.dtype == b.dtype and np.array_equal(a, b)


def test_restricted_unpickler_loads_both_shared_seed_pickles():
    for p in SEED_PICKLES:
        if not p.exists():
            pytest.skip(f"{p} not present (shared/data is beside the checkout)")
    fine = safe_load(SEED_PICKLES[0])
    assert isinstance(fine, list) and len(fine) == 3
    assert all(set(d) == {"path", "aus"} and d["aus"].shape == (11,) for d in fine)
    gan = safe_load(SEED_PICKLES[1])  # a Python 2 pickle
    assert isinstance(gan, dict) and len(gan) == 4
    assert all(v.shape == (17,) and v.dtype == np.float64 for v in gan.values())
    for d in (np.stack([d["aus"] for d in fine]), np.stack(list(gan.values()))):
        assert np.all((d >= 0) & (d <= 5))
    t = labels.load_au_pickle(SEED_PICKLES[0])
    assert set(t["imgs/0000001.jpg"]) == {labels.au_column(a) for a in labels.SEED002_AUS}
    g = labels.load_au_pickle(SEED_PICKLES[1])
    assert set(g["N_0000000356_00190"]) == {labels.au_column(a) for a in labels.OPENFACE_AUS}


# ---------------------------------------------------------------------------- geometry
def test_mouth_box_is_keepsmiling_rule():
    pts = np.zeros((478, 2))
    pts[1] = (50, 40)          # nose tip
    pts[61] = (40, 60)         # subject's right mouth corner (image left)
    pts[291] = (60, 60)
    box, clamped = align.mouth_box(pts)
    a = math.sqrt(10 ** 2 + 20 ** 2)
    assert np.allclose(box, [50 - a, 40, 50 + a, 80]) and not clamped
    box, clamped = align.mouth_box(pts, image_shape=(70, 200))
    assert clamped and box[3] == pytest.approx(69.5)


def test_alignment_maps_eyes_and_mouth_to_the_template(astronaut_face):
    pts = astronaut_face.landmarks.astype(np.float64)
    for size in (64, 128, 256):
        frame_to_crop = np.linalg.inv(np.vstack([align.align_affine(pts, size), [0, 0, 1]]))[:2]
        got = align.apply_affine(frame_to_crop, align.face_points(pts))
        eye = size * (align.TEMPLATE["left_eye"][0] - align.TEMPLATE["right_eye"][0])
        assert np.abs(got - align.template_points(size)).max() < 0.1 * eye
    assert align.align_residual(pts) < 0.1
    # a similarity of the image moves the crop with it: same crop geometry
    th, s, t = 0.3, 1.7, np.array([40.0, -25.0])
    rot = s * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    a1 = align.align_affine(pts, 64)
    a2 = align.align_affine(pts @ rot.T + t, 64)
    assert np.allclose(a2[:, :2], rot @ a1[:, :2], atol=1e-9)
    assert np.allclose(a2[:, 2], rot @ a1[:, 2] + t, atol=1e-6)


def test_aligned_crop_puts_the_eyes_where_the_tracker_sees_them(astronaut, astronaut_face,
                                                                static_tracker):
    crop = align.aligned_face(np.ascontiguousarray(astronaut), astronaut_face.landmarks, 256)
    faces = static_tracker.track(crop)
    assert len(faces) == 1
    got = align.face_points(faces[0].landmarks)
    assert np.abs(got - align.template_points(256)).max() < 6.0  # px of 256


def test_prepare_for_tracking_round_trips_points():
    img = np.zeros((64, 48, 3), np.uint8)
    prep, scale, pad = align.prepare_for_tracking(img)
    assert max(prep.shape[:2]) == pytest.approx(256 + 2 * pad, abs=1) and pad == 64
    p = np.array([[0.0, 0.0], [47.0, 63.0]])
    q = (p + 0.5) * scale - 0.5 + pad
    assert np.allclose(align.to_input(q, scale, pad), p)


def test_split_is_by_group_and_fixed_by_the_seed():
    groups = [f"person:p{i}" for i in range(400)]
    s0 = [index.split_of(g, 0) for g in groups]
    assert s0 == [index.split_of(g, 0) for g in groups]
    assert s0 != [index.split_of(g, 1) for g in groups]
    share = {k: s0.count(k) / len(s0) for k in ("train", "val", "test")}
    assert 0.72 < share["train"] < 0.88 and 0.05 < share["val"] < 0.15


# ---------------------------------------------------------------------------- builder
def _write_video(path: Path, frames, fps=10):
    import av

    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=fps)
        st.height, st.width = frames[0].shape[:2]
        st.pix_fmt = "yuv420p"
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny data set: 4 photos (2 of one person, a 64 x 64 grey crop, a blank), labels CSV,
    an AU pickle for one photo, an OpenFace CSV for another, and a 12-frame video."""
    from warpcam.training.data import build

    src = tmp_path_factory.mktemp("src")
    face = realdata.astronaut_bgr()[20:276, 120:376]  # 256 x 256 around the face
    (src / "photos" / "images").mkdir(parents=True)
    cv2.imwrite(str(src / "photos/images/a_0001.png"), face)
    cv2.imwrite(str(src / "photos/images/a_0002.png"), cv2.flip(face, 1))
    small = cv2.cvtColor(cv2.resize(face[40:220, 38:218], (64, 64), interpolation=cv2.INTER_AREA),
                         cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(src / "photos/images/small.png"), small)
    cv2.imwrite(str(src / "photos/images/blank.png"), np.full((80, 80, 3), 128, np.uint8))
    with open(src / "photos/labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "person", "emotion", "smile", "split"])
        w.writerow(["a_0001.png", "eileen", "happiness", "1", "x"])
        w.writerow(["a_0002.png", "eileen", "neutral", "0", "x"])
        w.writerow(["small.png", "", "", "1", "x"])
        w.writerow(["blank.png", "", "", "0", "x"])
    with open(src / "photos/aus.pkl", "wb") as f:
        pickle.dump([{"path": "images/a_0001.png", "aus": np.linspace(0, 5, 11)}], f)
    with open(src / "a_0002.csv", "w") as f:  # FaceLandmarkImg style, OpenFace's spacing
        f.write("face, confidence, AU01_r, AU12_r\n0, 0.98, 0.5, 4.25\n")
    frames = []
    big = realdata.astronaut_bgr()
    for i in range(12):
        m = np.float32([[1, 0, 2 * i - 10], [0, 1, 0]])
        frames.append(cv2.warpAffine(big, m, (512, 512), borderMode=cv2.BORDER_REPLICATE)[::2, ::2])
    _write_video(src / "clip.mp4", frames)
    out = tmp_path_factory.mktemp("built")
    m = build.build(out, [("photos", src / "photos")], [src / "clip.mp4"], sizes=(64, 128),
                    au_pickles=[src / "photos/aus.pkl"], openface=[src / "a_0002.csv"],
                    every=3, min_au_diff=0.0, progress=False)
    return out, m


def test_builder_counts_crops_labels_and_manifest(built):
    out, m = built
    rows = index.read_index(out)
    photos = [r for r in rows if r["set"] == "photos"]
    by_src = {r["source"]: r for r in photos}
    assert set(by_src) == {"a_0001.png", "a_0002.png", "small.png", "blank.png"}
    assert by_src["blank.png"]["found"] == "0" and by_src["blank.png"]["face_64"] == ""
    for s in ("a_0001.png", "a_0002.png", "small.png"):
        r = by_src[s]
        assert r["found"] == "1", s
        for col, size in (("face_64", 64), ("face_128", 128), ("mouth_64", 64)):
            img = cv2.imread(str(out / r[col]))
            assert img is not None and img.shape == (size, size, 3)
    assert by_src["small.png"]["grey"] == "1"
    assert float(by_src["small.png"]["width"]) == 64
    # labels: CSV columns (a clashing name is prefixed), the pickle, OpenFace, the estimator
    assert by_src["a_0001.png"]["emotion"] == "happiness" and by_src["a_0001.png"]["smile"] == "1"
    assert by_src["a_0001.png"]["label_split"] == "x"
    assert by_src["a_0001.png"]["au_source"] == "pkl"
    assert float(by_src["a_0001.png"]["AU26_r"]) == pytest.approx(5.0)
    assert by_src["a_0001.png"]["AU07_r"] == ""  # not among the seed's 11 AUs
    assert by_src["a_0002.png"]["au_source"] == "openface"
    assert float(by_src["a_0002.png"]["AU12_r"]) == pytest.approx(4.25)
    est_ok = m["labels"]["au_estimator"]["used"]
    assert by_src["small.png"]["au_source"] == ("estimator" if est_ok else "")
    # splits by person; eye positions in the input's pixels
    assert by_src["a_0001.png"]["split"] == by_src["a_0002.png"]["split"]
    assert by_src["a_0001.png"]["group"] == "person:eileen"
    assert 60 < float(by_src["a_0001.png"]["eye_r_x"]) < float(by_src["a_0001.png"]["eye_l_x"])
    # video: every 3rd of 12 frames, timestamps, one group
    vid = [r for r in rows if r["set"] == "videos"]
    assert [int(r["frame"]) for r in vid] == [0, 3, 6, 9]
    assert all(r["found"] == "1" and r["group"] == "video:clip" for r in vid)
    assert [float(r["timestamp"]) for r in vid] == pytest.approx([0.0, 0.3, 0.6, 0.9])
    c = m["counts"]
    assert c["photos"]["items"] == 4 and c["photos"]["found"] == 3
    assert c["photos"]["share_found"] == pytest.approx(0.75)
    assert c["videos"]["items"] == 4 and c["videos"]["share_found"] == 1.0
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"] == json.loads(json.dumps(c)) and man["seed"] == 0
    assert man["inputs"][0]["label_files"][0]["sha256"]
    assert not list(out.rglob("*.pkl"))  # never pickles


def test_builder_pairs_are_same_person(built):
    out, _ = built
    pairs = index.read_pairs(out)
    kinds = {p["kind"] for p in pairs}
    assert "person" in kinds
    rows = {r["id"]: r for r in index.read_index(out)}
    for p in pairs:
        a, b = rows[p["a"]], rows[p["b"]]
        assert a["group"] == b["group"] == p["group"] and a["id"] != b["id"]
        if p["kind"] == "video":
            assert a["face_index"] == b["face_index"] and int(p["frame_gap"]) > 0


def test_make_pairs_needs_different_aus():
    rows = [dict(id=f"v/{i}", kind="video", group="video:v", face_index=0, frame=i, found=1,
                 split="train", AU12_r=v) for i, v in enumerate([0.0, 0.2, 3.0])]
    pairs = index.make_pairs(rows, min_au_diff=1.0)
    assert {(p["a"], p["b"]) for p in pairs} == {("v/0", "v/2"), ("v/1", "v/2")}
    lfw = [dict(id=f"l/{i}", kind="image", group="person:x", found=1, split="val", emotion=e)
           for i, e in enumerate(["neutral", "happiness", "neutral"])]
    assert len(index.make_pairs(lfw)) == 2  # no AUs: emotions differ


def test_torch_loaders_read_the_built_set(built):
    torch = pytest.importorskip("torch")
    from warpcam.training.data.loaders import FaceCrops, FacePairs

    out, _ = built
    ds = FaceCrops(out, split=None, crop="face_128", columns=("smile", "AU12_r"))
    assert len(ds) == 7
    item = ds[0]
    assert item["image"].shape == (3, 128, 128) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["labels"].shape == (2,) and item["mask"].dtype == torch.bool
    assert len(FaceCrops(out, split=None, sets=["photos"], columns=("smile",), require=True)) == 3
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 128, 128)
    pairs = FacePairs(out, split=None, crop="mouth_64")
    assert len(pairs) >= 1
    p = pairs[0]
    assert p["a"].shape == p["b"].shape == (3, 64, 64) and p["labels_a"].shape == (17,)


def test_cli_help_and_refuses_output_inside_the_repository(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "warpcam.training.data.build", "--help"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0 and "--train-root" in r.stdout and "--size-256" in r.stdout
    r = subprocess.run([sys.executable, "-m", "warpcam.training.data.build", "--out",
                        str(ROOT / "build" / "faces_here"), "--images", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 2 and "inside the git work tree" in r.stderr
    assert not (ROOT / "build" / "faces_here").exists()
    # importing the package and the builder loads neither torch nor mediapipe
    code = ("import sys, warpcam.training.data.build, warpcam.training.data.safe_pickle; "
            "print(sorted(m for m in ('torch', 'mediapipe') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.stdout.strip() == "[]", r.stderr


def test_refused_pickle_is_a_one_line_cli_error(tmp_path):
    bad = tmp_path / "bad.pkl"
    marker = tmp_path / "ran"
    bad.write_bytes(pickle.dumps(_RunsCode(f"touch {marker}")))
    (tmp_path / "imgs").mkdir()
    r = subprocess.run([sys.executable, "-m", "warpcam.training.data.build", "--out",
                        str(tmp_path / "out"), "--images", str(tmp_path / "imgs"),
                        "--au-pickle", str(bad), "-q"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "refused to unpickle the global posix.system" in err[0]
    assert not marker.exists()


def test_builder_on_the_shared_sets(tmp_path):
    """Eight photos of each shared training set: most faces found, eyes on the template."""
    train = SHARED / "train"
    if not train.is_dir():
        pytest.skip(f"{train} not present (shared/data is beside the checkout)")
    from warpcam.training.data import build

    sets = [(None, p) for p in sorted(train.iterdir()) if (p / "images").is_dir()]
    m = build.build(tmp_path, sets, sizes=(64,), limit=8, estimator=False, progress=False)
    assert set(m["counts"]) == {"celeba", "genki4k", "lfw_expressions", "smilesmiled"}
    for name, c in m["counts"].items():
        assert c["items"] == 8 and c["found"] >= 6, (name, c)
    rows = [r for r in index.read_index(tmp_path) if r["found"] == "1"]
    assert max(float(r["align_rms"]) for r in rows) < 0.25
    assert {r["smile"] for r in rows if r["set"] == "celeba"} <= {"0", "1"}
    lfw = [r for r in rows if r["set"] == "lfw_expressions"]
    assert all(r["group"] == f"person:{r['person']}" and r["person"] for r in lfw)
