"""The keep_smiling effect (seed 003) with the bundled SplitGAN on a group photo of real
held-out faces: every non-smiling face is edited and its AU smile score rises, identity stays,
faces that smile already and every pixel outside the mouths keep their bytes; strength 0, the
video smoothing, bad model files and the command line."""
import dataclasses

import cv2
import numpy as np
import pytest

from tests.realdata import REAL
from warpcam.realtime.effects.keep_smiling import (KeepSmilingEffect, KeepSmilingSettings,
                                                    load_keepsmiling_model)
from warpcam.training.data.index import split_of

CELEBA = REAL.parent / "train" / "celeba" / "images"
#: CelebA photos of the face data set's test split (never trained on, not in the translation):
#: CelebA "Smiling" 0, AU smile score < 0.3, |yaw| < 10 deg (benchmarks.keepsmiling.heldout_rows)
NOT_SMILING = ("000005", "000026", "000123", "000212", "000234", "000248")
#: test split, CelebA "Smiling" 1, AU smile score > 0.8
SMILING = ("000018", "000063")


@pytest.fixture(scope="module")
def model():
    return load_keepsmiling_model()


@pytest.fixture(scope="module")
def group():
    from benchmarks.keepsmiling import heldout_group
    if not CELEBA.exists():
        pytest.skip(f"{CELEBA} not present (../shared/data/train is beside the checkout)")
    ids = NOT_SMILING + SMILING
    assert all(split_of(f"image:celeba/{i}") == "test" for i in ids)
    rows = [dict(id=f"celeba/{i}", source=f"{i}.jpg") for i in ids]
    img, tiles, _ = heldout_group(rows, len(rows), cols=3, celeba=CELEBA)
    return img, tiles


@pytest.fixture(scope="module")
def edited(group, model):
    from benchmarks.keepsmiling import edit_photo, mouth_support
    img, tiles = group
    out, jobs, eff, faces = edit_photo(img, model, 1.0)
    again, jobs2, eff2, _ = edit_photo(out, model, 1.0)
    return dict(out=out, jobs=jobs, faces=faces, eff=eff, support=mouth_support(img.shape, jobs),
                again=again, jobs2=jobs2, eff2=eff2)


def _tile_of(face, tiles):
    c = face.landmarks.mean(axis=0)
    return next(i for i, (x0, y0, x1, y1) in enumerate(tiles)
                if x0 <= c[0] < x1 and y0 <= c[1] < y1)


def test_every_non_smiling_face_is_edited_and_the_smiling_ones_are_not(group, edited):
    img, tiles = group
    assert len(edited["faces"]) == len(tiles)
    edited_tiles = sorted(_tile_of(edited["faces"][k], tiles)
                          for k, d in enumerate(edited["eff"].last) if d["edited"])
    assert edited_tiles == list(range(len(NOT_SMILING)))
    assert len(edited["jobs"]) == len(NOT_SMILING)


def test_pixels_outside_the_mouths_keep_their_bytes(group, edited):
    img, tiles = group
    changed = np.any(edited["out"] != img, axis=2)
    assert not (changed & ~edited["support"]).any()
    assert changed.sum() > 500 * len(NOT_SMILING)  # and the mouths did change
    for k in range(len(NOT_SMILING), len(tiles)):  # smiling faces: untouched
        x0, y0, x1, y1 = tiles[k]
        assert np.array_equal(edited["out"][y0:y1, x0:x1], img[y0:y1, x0:x1])


def test_smile_score_rises_for_every_edited_face(group, edited):
    from benchmarks.keepsmiling import tile_scores
    img, tiles = group
    before = tile_scores(img, tiles[:len(NOT_SMILING)])
    after = tile_scores(edited["out"], tiles[:len(NOT_SMILING)])
    rises = [(b["smile"], a["smile"]) for b, a in zip(before, after)]
    assert all(b < 0.5 for b, _ in rises)
    assert all(a > b for b, a in rises), rises


def test_identity_distance_stays_below_half(group, edited):
    from benchmarks.expression_eval import load_embedder
    from benchmarks.keepsmiling import tile_scores
    emb, why = load_embedder()
    if emb is None:
        pytest.skip(why)
    img, tiles = group
    before = tile_scores(img, tiles[:len(NOT_SMILING)], emb)
    after = tile_scores(edited["out"], tiles[:len(NOT_SMILING)], emb)
    d = [float(np.linalg.norm(b["embedding"] - a["embedding"])) for b, a in zip(before, after)]
    assert max(d) < 0.5, d


def test_a_second_run_changes_nothing_more(edited):
    """The gate: once the first run made a face smile (score >= 0.5) it is left alone."""
    smiles = [round(d["smile"], 3) for d in edited["eff2"].last]
    assert not edited["jobs2"], f"faces edited again, smile scores after the first run {smiles}"
    assert np.array_equal(edited["again"], edited["out"])


def test_lift_is_the_least_that_reads_as_a_smile(group, edited):
    """The corner lift of each face: the least factor on the grid for which the AU estimator,
    on the face's landmarks with the corners moved, reads threshold + margin; the score grows
    with the lift, and an unreachable threshold gets the largest lift."""
    from warpcam.realtime import au
    from warpcam.realtime.effects import keep_smiling as ks
    est = au.AUEstimator(calibrate=False)
    for face in edited["faces"][:3]:
        neutral = est.estimate(face).neutral
        k = ks.lift_needed(face, neutral, 0.5, 1.0)
        assert 0 < k <= ks.LIFT_MAX
        scores = [ks.predicted_smile(face, neutral, v) for v in (0.0, k - ks.LIFT_STEP, k)]
        assert scores[0] == pytest.approx(est.estimate(face).smile)
        assert scores[2] >= 0.5 + ks.LIFT_MARGIN or k == ks.LIFT_MAX
        assert k == ks.LIFT_STEP or scores[1] < 0.5 + ks.LIFT_MARGIN
        assert ks.lift_needed(face, neutral, 1.0, 1.0) == ks.LIFT_MAX
        # the AU12 measure is linear in the lift (what lift_needed relies on)
        a12 = [ks._moved_measures(face, v)["AU12"] for v in (0.0, 1.0, 2.5)]
        assert a12[2] - a12[0] == pytest.approx(2.5 * (a12[1] - a12[0]), rel=1e-6)
        assert a12[1] > a12[0]
    lifts = [d["lift"] for d in edited["eff"].last if d["edited"]]
    assert lifts and all(0 < v <= ks.LIFT_MAX for v in lifts)
    for j in edited["jobs"]:  # the warp moves nothing where the mask keeps the frame
        assert np.abs(j.flow[j.alpha == 0]).max() == 0 and np.abs(j.flow).max() > 1.0


def test_strength_zero_and_off_do_nothing(group, edited, model):
    img, _ = group
    faces = edited["faces"]
    assert KeepSmilingEffect(KeepSmilingSettings(enabled=True, strength=0.0), model).jobs(
        img, faces, 0.0) == []
    assert KeepSmilingEffect(KeepSmilingSettings(enabled=False), model).jobs(img, faces) == []


def test_negative_strength_edits_only_smiling_faces(group, edited, model):
    img, tiles = group
    eff = KeepSmilingEffect(KeepSmilingSettings(enabled=True, strength=-1.0), model)
    jobs = eff.jobs(img, edited["faces"], 0.0)
    hit = sorted(_tile_of(edited["faces"][k], tiles) for k, d in enumerate(eff.last)
                 if d["edited"])
    assert hit == list(range(len(NOT_SMILING), len(tiles))) and len(jobs) == len(SMILING)


def test_video_strength_is_smoothed_per_track(group, edited, model):
    img, _ = group
    face = edited["faces"][0]
    live = KeepSmilingEffect(KeepSmilingSettings(enabled=True, strength=1.0), model)
    live.jobs(img, [face], 0.0)
    assert live.last[0]["strength"] == 1.0            # a new track starts at its target
    lift0 = live.last[0]["lift"]
    live.settings.update(strength=0.0)
    live.jobs(img, [face], 1 / 30)
    s1 = live.last[0]["strength"]
    live.jobs(img, [face], 2 / 30)
    s2 = live.last[0]["strength"]
    assert 0.0 < s2 < s1 < 1.0                         # eases out over frames
    assert 0.0 < live.last[0]["lift"] < lift0          # the corner lift eases out with it
    other = dataclasses.replace(edited["faces"][1], track_id=face.track_id)  # another face
    live.settings.update(strength=1.0)
    live.jobs(img, [other], 3 / 30)
    assert live.last[0]["strength"] == 1.0            # under the same id: not smoothed


def test_bad_model_files_are_one_line_errors(tmp_path):
    from warpcam.realtime.effects.keep_smiling import KeepSmilingModelError
    from warpcam.realtime.effects.smile_model import DEFAULT_MODEL as SMILE
    bad = tmp_path / "x.pt2"
    bad.write_bytes(b"not a zip")
    for path in (bad, tmp_path / "missing.pt2", SMILE):
        with pytest.raises(KeepSmilingModelError) as e:
            load_keepsmiling_model(path)
        assert "\n" not in str(e.value)


def test_command_line_edits_the_photo(group, edited, tmp_path):
    from warpcam.realtime import cli
    img, _ = group
    src, dst = tmp_path / "group.png", tmp_path / "out.png"
    cv2.imwrite(str(src), img)
    assert cli.main(["--input", str(src), "--output", str(dst), "--keep-smiling",
                     "--strength", "1", "--quiet"]) == 0
    out = cv2.imread(str(dst))
    changed = np.any(out != img, axis=2)
    assert changed.any() and not (changed & ~edited["support"]).any()
    assert cli.main(["--input", str(src), "--output", str(tmp_path / "o2.png"),
                     "--keep-smiling", "--keep-smiling-model", str(tmp_path / "no.pt2"),
                     "--quiet"]) != 0


#: the benchmark's other two held-out groups (benchmarks.keepsmiling, test split)
MORE_NOT_SMILING = ("000285", "000337", "000550", "000594", "000615", "000679",
                    "000687", "000848", "000933", "000998", "001159", "001164")


@pytest.mark.xfail(strict=True, reason="missed on 2 of these 12 faces: 000848's AU12 measure rests "
                   "0.21 eye widths below the population neutral (score 0.020, the floor) and "
                   "does not move; 000550 rises (0.040 -> 0.075) but stays below 0.5, so a "
                   "second run edits both again; README 'KeepSmiling'")
def test_every_face_of_the_other_held_out_groups_rises_and_a_second_run_changes_nothing(model):
    from benchmarks.keepsmiling import edit_photo, heldout_group, tile_scores
    if not CELEBA.exists():
        pytest.skip(f"{CELEBA} not present (../shared/data/train is beside the checkout)")
    assert all(split_of(f"image:celeba/{i}") == "test" for i in MORE_NOT_SMILING)
    rises, again_edited = [], 0
    for g in range(2):
        ids = MORE_NOT_SMILING[6 * g:6 * g + 6]
        rows = [dict(id=f"celeba/{i}", source=f"{i}.jpg") for i in ids]
        img, tiles, _ = heldout_group(rows, len(rows), cols=3, celeba=CELEBA)
        out, jobs, _, faces = edit_photo(img, model, 1.0)
        assert len(jobs) == len(faces) == len(ids)
        rises += [(i, b["smile"], a["smile"]) for i, b, a in
                  zip(ids, tile_scores(img, tiles), tile_scores(out, tiles))]
        again_edited += len(edit_photo(out, model, 1.0)[1])
    assert all(a > b for _, b, a in rises), rises
    assert again_edited == 0
