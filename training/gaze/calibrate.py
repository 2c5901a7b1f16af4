"""Personal gaze model: record the user looking at points, mine pairs, fine-tune, export.

    warpcam calibrate [--input 0] [--seconds 60] [--out ~/.warpcam/gaze_personal.pt2]
    python run.py --calibrate ...            # the same
    python -m warpcam.training.gaze.calibrate ...    # the same

1. **Record**: a window shows a dot that visits a 3 x 3 grid of screen points (about
   ``seconds / 9`` each) with a small camera preview; the user follows the dot with their eyes
   and keeps the head still. Frames go to a temporary MJPEG file (a minute of 720p frames would
   not fit in memory). ``--input`` may also be a video file (no window: its frames are used as
   recorded; ``--no-window`` hides the window for a webcam too).
2. **Mine** pairs from the recording (:mod:`warpcam.training.gaze.mine`: same head pose and openness,
   different iris direction, angles from the iris landmarks).
3. **Fine-tune** the base model (default: the committed ``models/gaze_deepwarp.pt2``; its weights
   are read from the exported program, no pickles) on the personal pairs mixed with fresh
   synthetic renders (so it keeps what it knew), ``--steps`` Adam steps.
4. **Export** to ``--out`` with metadata naming the recording; use it with
   ``warpcam --gaze-model OUT``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

DEFAULT_OUT = os.path.expanduser("~/.warpcam/gaze_personal.pt2")


def record(source, seconds: float, path: Path, window: bool = True) -> int:
    """Write up to ``seconds`` of ``source`` (a realtime source) to an MJPEG file at ``path``,
    showing the calibration dot when ``window``. Returns the number of frames written."""
    writer = None
    n = 0
    t0 = time.perf_counter()
    grid = [(x, y) for y in (0.1, 0.5, 0.9) for x in (0.1, 0.5, 0.9)]
    fps = float(getattr(source, "fps", 30.0) or 30.0)
    max_frames = int(seconds * fps)
    try:
        for frame in source:
            img = frame.image
            if writer is None:
                h, w = img.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"cannot write the recording {path}")
            writer.write(img)
            n += 1
            elapsed = time.perf_counter() - t0 if source.is_live else n / fps
            if window:
                canvas = np.full((720, 1280, 3), 32, np.uint8)
                k = min(int(elapsed / max(seconds, 1e-3) * len(grid)), len(grid) - 1)
                gx, gy = grid[k]
                cv2.circle(canvas, (int(gx * 1279), int(gy * 719)), 18, (0, 200, 255), -1)
                cv2.putText(canvas, f"look at the dot, keep your head still  {seconds - elapsed:4.0f} s",
                            (40, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (220, 220, 220), 2)
                small = cv2.resize(img, (320, int(320 * img.shape[0] / img.shape[1])))
                canvas[-small.shape[0]:, -320:] = small
                cv2.imshow("warpcam calibrate", canvas)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            if n >= max_frames or (source.is_live and elapsed >= seconds):
                break
    finally:
        if writer is not None:
            writer.release()
        if window:
            cv2.destroyAllWindows()
    return n


def model_from_pt2(path) -> tuple:
    """``(DeepWarpGaze, metadata)`` with the weights of an exported gaze program."""
    from warpcam.realtime.gaze_model import load_gaze_model
    from warpcam.training.gaze.model import DeepWarpGaze, GazeNetConfig

    gm = load_gaze_model(path, device="cpu", threads=None)  # checks the file first
    ep = torch.export.load(str(path))
    net = DeepWarpGaze(GazeNetConfig(**gm.meta["config"]))
    sd = {k[len("net."):]: v for k, v in ep.state_dict.items() if k.startswith("net.")}
    net.load_state_dict(sd)
    return net, gm.meta


def fine_tune(net, pairs, steps: int, lr: float = 5e-4, batch: int = 32, seed: int = 0,
              progress: bool = True):
    """A few Adam steps on ``pairs`` (a pair dataset); returns the mean loss of the last 20."""
    from warpcam.training.gaze.data import collate
    from warpcam.training.gaze.model import anchor_points, gaze_loss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    losses = []
    it = range(steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="calibrate", unit="step")
    for _ in it:
        b = collate([pairs[int(i)] for i in rng.integers(0, len(pairs), batch)])
        anchors = anchor_points(b["landmarks"]) if net.cfg.anchors else None
        out = net(b["src"], b["angle"], anchors)
        loss, _ = gaze_loss(out, b["tgt"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    return float(np.mean(losses[-20:])) if losses else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="warpcam calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", default="0", help="webcam index or a video file (default 0)")
    ap.add_argument("--seconds", type=float, default=60.0, help="recording length")
    ap.add_argument("--out", default=DEFAULT_OUT, help="personal model (.pt2)")
    ap.add_argument("--base", default=None, help="model to start from (default: the committed one)")
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    ap.add_argument("--synthetic-eyes", type=int, default=300,
                    help="synthetic eyes rendered to mix in (0: personal pairs only)")
    ap.add_argument("--no-window", action="store_true", help="no calibration window")
    ap.add_argument("--keep-recording", default=None, metavar="FILE.avi",
                    help="keep the recording here (default: a temporary file, removed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    # The rest of warpcam's options may come along from `run.py --calibrate`; ignore them.
    a, _ = ap.parse_known_args(argv)

    from warpcam.realtime.gaze_model import DEFAULT_MODEL, GazeModelError
    from warpcam.realtime.sources import SourceError, open_source
    from warpcam.training.gaze.data import MixedPairs, StoredPairs, SyntheticPairs
    from warpcam.training.gaze.export import export
    from warpcam.training.gaze.mine import mine_video
    from warpcam.training.gaze.render import render_groups

    def fail(msg):
        print(f"warpcam: error: {msg}", flush=True, file=__import__("sys").stderr)
        return 2

    try:
        net, base_meta = model_from_pt2(a.base or DEFAULT_MODEL)
    except GazeModelError as exc:
        return fail(str(exc))
    tmpdir = tempfile.mkdtemp(prefix="warpcam_calib_")
    rec = Path(a.keep_recording) if a.keep_recording else Path(tmpdir) / "recording.avi"
    try:
        try:
            source = open_source(a.input)
        except SourceError as exc:
            return fail(str(exc))
        with source:
            n = record(source, a.seconds, rec, window=source.is_live and not a.no_window)
        if not a.quiet:
            print(f"calibrate: recorded {n} frames")
        pairs = mine_video(rec, np.random.default_rng(a.seed), max_faces=1, max_per_eye=4000)
    finally:
        if not a.keep_recording and rec.exists():
            rec.unlink()
        os.rmdir(tmpdir) if not any(Path(tmpdir).iterdir()) else None
    if len(pairs) < 8:
        return fail(f"only {len(pairs)} usable pairs in the recording: look at the dots with "
                    "your eyes (not your head), in steady light, eyes open")
    data = {k: np.stack([np.asarray(p[k]) for p in pairs]) for k in
            ("src", "tgt", "angle", "landmarks", "iris_d")}
    sets, weights = [StoredPairs(data, "calibration")], [1.0]
    if a.synthetic_eyes > 0:
        sets.append(SyntheticPairs(render_groups(a.synthetic_eyes, 4, seed=a.seed + 1)))
        weights.append(1.0)
    mix = MixedPairs(sets, weights, length=max(len(pairs), 1000), seed=a.seed)
    loss = fine_tune(net, mix, a.steps, seed=a.seed, progress=not a.quiet)
    meta = dict(base_meta)
    meta.update(training_data=list(base_meta.get("training_data", [])) + [
        f"calibration:{Path(str(a.input)).name} ({len(pairs)} pairs, {a.steps} steps)"],
        notes="personal model from `warpcam calibrate`", final_loss=loss)
    out = export(net, meta, a.out)
    if not a.quiet:
        print(f"calibrate: {len(pairs)} pairs, {a.steps} steps -> {out} "
              f"(use: warpcam --gaze-model {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
