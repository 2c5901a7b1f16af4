"""benchmarks/expression_eval.py: matching, identity distance (dlib, the optional [eval] extra),
AU columns, the CSVs, the sheet, and a clear message when the embedding packages are missing."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from benchmarks import expression_eval as ev
from tests import realdata

ROOT = Path(__file__).resolve().parents[1]
IDS = ROOT.parent / "shared" / "data" / "real" / "images" / "identities"


def _rows(p: Path):
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def test_match_folders_by_stem_then_longest_prefix():
    orig = [Path("a/emma.png"), Path("a/emma_b.png"), Path("a/zac.png")]
    edited = [Path("e/emma.png"), Path("e/emma_b_alpha0.30.png"), Path("e/zac_x.jpg"),
              Path("e/nobody.png")]
    got = [(o.name, e.name) for o, e in ev.match_folders(orig, edited)]
    assert got == [("emma.png", "emma.png"), ("emma_b.png", "emma_b_alpha0.30.png"),
                   ("zac.png", "zac_x.jpg")]


@pytest.fixture(scope="module")
def embedder():
    emb, why = ev.load_embedder()
    if emb is None:
        pytest.skip(why)
    return emb


def test_identity_distance_separates_people_and_writes_the_files(tmp_path, embedder):
    if not IDS.is_dir():
        pytest.skip(f"{IDS} not present (shared/data is beside the checkout)")
    edited = tmp_path / "edited"
    edited.mkdir()
    for name in ("id1_aligned/emma11_aligned.png", "id1_aligned/emma12_aligned.png",
                 "id2_aligned/obama10_aligned.png", "id2_aligned/obama11_aligned.png"):
        shutil.copy(IDS / name, edited / Path(name).name)
    res = ev.evaluate(IDS / "id1_aligned" / "emma10_aligned.png", edited, tmp_path / "out",
                      source_identity=IDS / "id2_aligned" / "obama10_aligned.png",
                      sheet=tmp_path / "out" / "sheet.png", embedder=embedder)
    like = {r["item"]: r for r in _rows(tmp_path / "out" / "likeliness.csv")}
    for k in ("emma11_aligned", "emma12_aligned"):
        assert float(like[k]["dist_original"]) < ev.SAME_PERSON and like[k]["same_person"] == "1"
    for k in ("obama10_aligned", "obama11_aligned"):
        assert float(like[k]["dist_original"]) > ev.SAME_PERSON and like[k]["same_person"] == "0"
        assert float(like[k]["dist_source_mean"]) < float(like[k]["dist_original"])
    qual = _rows(tmp_path / "out" / "quality.csv")
    assert len(qual) == 8 and {r["role"] for r in qual} == {"original", "edited"}
    assert {"AU01_r", "AU12_r", "AU45_r", "smile", "success"} <= set(qual[0])
    assert all(r["success"] == "1" for r in qual)
    summary = {r["measure"]: r for r in _rows(tmp_path / "out" / "summary.csv")}
    assert float(summary["same person as original (distance < 0.6)"]["value"]) == 0.5
    assert "| measure |" in (tmp_path / "out" / "summary.md").read_text()
    sheet = cv2.imread(str(tmp_path / "out" / "sheet.png"))
    assert sheet is not None and sheet.shape[1] == 2 * 128 + 6
    assert res["items"] == 4


def test_videos_are_compared_frame_by_frame(tmp_path, embedder):
    a = realdata.VIDEOS / "mead_w009_neutral_256.mp4"
    b = realdata.VIDEOS / "mead_w009_happy_256.mp4"
    if not (a.exists() and b.exists()):
        pytest.skip("MEAD videos not present (shared/data is beside the checkout)")
    res = ev.evaluate(a, b, tmp_path, max_items=3, embedder=embedder)
    like = _rows(tmp_path / "likeliness.csv")
    assert [r["item"] for r in like] == ["frame000000", "frame000001", "frame000002"]
    assert all(float(r["dist_original"]) < ev.SAME_PERSON for r in like)  # same actor
    assert res["items"] == 3


def test_missing_embedding_packages_are_said_clearly(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    face = realdata.astronaut_bgr()[20:276, 120:376]
    cv2.imwrite(str(folder / "a.png"), face)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.GaussianBlur(face, (5, 5), 0))
    code = ("import sys; sys.modules['dlib'] = None; "  # as if the [eval] extra were missing
            "from benchmarks.expression_eval import main; sys.exit(main(sys.argv[1:]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ["--original", str(tmp_path / "a.png"), "--edited", str(folder), "--out",
            str(tmp_path / "out")]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "identity distance not measured" in r.stderr and "warpcam[eval]" in r.stderr
    like = _rows(tmp_path / "out" / "likeliness.csv")
    assert like[0]["dist_original"] == "" and like[0]["found_edited"] == "1"
    assert "warpcam[eval]" in (tmp_path / "out" / "summary.md").read_text()
    r = subprocess.run([sys.executable, "-c", code, *args, "--require-identity"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 3
